//! Descriptor lists a tree's manifest gives: a tree's pack is listed chunk
//! by chunk in its manifest (docs/trees.md), so a receiver holding the
//! manifest fetches no list for it, only the chunks.

use std::sync::Arc;

use dot_plugins::Described;
use dot_store::Store;
use dot_store::tree::{MAX_MANIFEST, Manifest};

use super::Target;

/// The descriptor list of `target` when it is a tree's pack named through
/// its tree (the ticket's `via`), the store holds that tree's manifest
/// whole, and the manifest names it as its pack with the list digest the
/// target vouches for (decoding checks the list against that digest).
pub(super) async fn pack_list(store: &Store, target: &Target) -> Option<Arc<Described>> {
    let tree = target.access?.via?;
    let want = target.list_digest?;
    let (store, oid) = (store.clone(), target.oid);
    tokio::task::spawn_blocking(move || {
        let info = store.info(tree).ok()??;
        if !info.complete || info.size > MAX_MANIFEST {
            return None;
        }
        // Complete: the store checked these bytes against the tree's OID.
        let bytes = store.read_bytes(tree, 0, info.size as usize).ok()?;
        let manifest = Manifest::decode(&bytes).ok()?;
        let pack = manifest.pack?;
        (pack.oid == oid && pack.list_digest == want).then(|| {
            Arc::new(Described {
                size: pack.size,
                descriptors: manifest.pack_descriptors().to_vec(),
            })
        })
    })
    .await
    .ok()?
}
