//! Which objects a tree holds, for peers that present a tree's token to
//! fetch one of its files. The tree's manifest is read from the store
//! (only a complete object: its bytes were checked against its OID) and
//! decoded with every bound `crate::tree` keeps; the last few trees asked
//! about stay decoded, so a receiver fetching a tree's thousands of files
//! costs one decode.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::{Store, lock};
use crate::error::Result;
use crate::oid::Oid;
use crate::tree::{MAX_MANIFEST, Manifest};

/// Trees kept decoded (each at most [`crate::tree::MAX_ENTRIES`] OIDs).
const CACHED_TREES: usize = 8;

/// The recently asked trees' file OIDs; `None` for an object that is not
/// a tree.
#[derive(Default)]
pub(super) struct TreeCache(VecDeque<(Oid, Option<Arc<HashSet<Oid>>>)>);

impl Store {
    /// Whether `tree` is a complete tree manifest here listing a file
    /// whose content is `member`.
    ///
    /// # Errors
    /// Index or read failures.
    pub fn tree_holds(&self, tree: Oid, member: Oid) -> Result<bool> {
        if let Some((_, files)) = lock(&self.inner.trees).0.iter().find(|(t, _)| *t == tree) {
            return Ok(files.as_ref().is_some_and(|f| f.contains(&member)));
        }
        // An object not (yet) complete here is asked about again later.
        let Some(files) = self.tree_files(tree)? else {
            return Ok(false);
        };
        let holds = files.as_ref().is_some_and(|f| f.contains(&member));
        let mut cache = lock(&self.inner.trees);
        if cache.0.len() >= CACHED_TREES {
            cache.0.pop_front();
        }
        cache.0.push_back((tree, files));
        Ok(holds)
    }

    /// `None` for an object not complete here; else its files, or `None`
    /// inside for an object that is no tree manifest.
    #[allow(clippy::type_complexity)]
    fn tree_files(&self, tree: Oid) -> Result<Option<Option<Arc<HashSet<Oid>>>>> {
        let Some(info) = self.info(tree)?.filter(|i| i.complete) else {
            return Ok(None);
        };
        if info.size > MAX_MANIFEST {
            return Ok(Some(None));
        }
        let bytes = self.read_bytes(tree, 0, info.size as usize)?;
        Ok(Some(
            Manifest::decode(&bytes)
                .ok()
                .map(|m| Arc::new(m.members().collect())),
        ))
    }
}
