//! Tickets this agent hands out for its objects.

use dot_store::descriptor::list_digest;
use dot_store::{Hint, Oid, Store, Ticket};

/// A ticket for a local object: its access token (derived from the
/// store's secret key),
/// the digest of its descriptor list and this agent's hints.
pub(crate) fn make_ticket(store: &Store, hints: &[String], oid: Oid) -> anyhow::Result<Ticket> {
    let token = store.token(oid)?;
    let descs = store.descriptors(oid)?;
    let hints: Vec<Hint> = hints
        .iter()
        .filter_map(|h| Hint::new(&format!("gtc://{h}")).ok())
        .collect();
    Ok(Ticket::new(
        oid,
        Some(token),
        Some(list_digest(&descs)),
        hints,
    ))
}
