//! What this agent's tickets say of it: its hints and its peer key.

use dot_store::descriptor::list_digest;
use dot_store::{Hint, Oid, PeerKey, Store, Ticket};

/// What this agent's tickets say of it: where it is, and the peer key its
/// TLS link proves (none when its tickets send receivers over plain TCP).
#[derive(Clone, Debug)]
pub(crate) struct Issuer {
    /// `host:port` of each hint.
    addrs: Vec<String>,
    /// The key a receiver must see proved.
    key: Option<PeerKey>,
}

impl Issuer {
    /// Tickets naming `addrs` (`host:port`) and `key`.
    pub fn new(addrs: Vec<String>, key: Option<PeerKey>) -> Issuer {
        Issuer { addrs, key }
    }

    /// This agent's hints, without the key (a ticket names it once).
    fn bare_hints(&self) -> impl Iterator<Item = Hint> + '_ {
        self.addrs
            .iter()
            .filter_map(|a| Hint::new(&format!("gtc://{a}")).ok())
    }

    /// This agent's hints as a peer writes them in its `peers` or `--hint`:
    /// each naming the key.
    pub fn hints(&self) -> Vec<Hint> {
        self.bare_hints().map(|h| h.with_key(self.key)).collect()
    }

    /// A ticket for a local object: its access token (derived from the
    /// store's secret key), the digest of its descriptor list, this
    /// agent's hints and peer key.
    pub fn ticket(&self, store: &Store, oid: Oid) -> anyhow::Result<Ticket> {
        let token = store.token(oid)?;
        let descs = store.descriptors(oid)?;
        let ticket = Ticket::new(
            oid,
            Some(token),
            Some(list_digest(&descs)),
            self.bare_hints().collect(),
        );
        Ok(match self.key {
            Some(key) => ticket.with_key(key),
            None => ticket,
        })
    }
}
