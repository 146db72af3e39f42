//! The whole-object SHA-256, taken while an object fills.
//!
//! Chunks mostly arrive in order. Each time the chunk at the front of the
//! unhashed part lands, the writer feeds it to the object's running SHA-256
//! from the bytes it just wrote, then any chunks already present after it
//! (read from the mapping of the store's file: no copy). So when the last
//! chunk lands the OID check has little or nothing left to read, and the
//! object is not read back from disk. Catching up over chunks that arrived
//! earlier is bounded per write ([`CATCH_UP`]); what is left is hashed by
//! `finish`.

use sha2::Digest;

use super::handle::Handle;
use crate::error::{Error, Result};
use crate::oid::Oid;

/// Most bytes of earlier chunks hashed after one write.
const CATCH_UP: u64 = 8 << 20;

/// SHA-256 of an object's first `next` chunks.
pub(crate) struct WholeHash {
    hasher: sha2::Sha256,
    /// Chunks hashed so far.
    next: usize,
}

impl WholeHash {
    pub(crate) fn new() -> WholeHash {
        WholeHash {
            hasher: sha2::Sha256::new(),
            next: 0,
        }
    }
}

impl Handle {
    /// Advances the running hash after chunk `index` was written and marked
    /// present with `data`: over it if it is next, then over the present
    /// chunks after it, up to [`CATCH_UP`] bytes of them.
    pub(super) fn advance_whole_hash(&self, index: u32, data: &[u8]) -> Result<()> {
        let mut whole = super::lock(&self.whole);
        let Some(w) = whole.as_mut() else {
            return Ok(());
        };
        if w.next == index as usize {
            w.hasher.update(data);
            w.next += 1;
        }
        self.hash_present(w, CATCH_UP)
    }

    /// Feeds the present chunks after the hashed prefix, in order, to `w`,
    /// until a missing chunk or `budget` bytes.
    fn hash_present(&self, w: &mut WholeHash, budget: u64) -> Result<()> {
        let mut spent = 0u64;
        while w.next < self.descs.len() && spent < budget {
            if !self.is_present(w.next as u32) {
                break;
            }
            let d = self.descs[w.next];
            match self.mapped(d.offset, d.end()) {
                Some(bytes) => w.hasher.update(&bytes),
                None => w.hasher.update(self.read_raw(d.offset, d.len as usize)?),
            }
            spent += u64::from(d.len);
            w.next += 1;
        }
        Ok(())
    }

    /// The object's SHA-256 once every chunk is present: what the running
    /// hash has, plus the rest read from the file.
    pub(super) fn whole_hash(&self) -> Result<Oid> {
        let mut whole = super::lock(&self.whole);
        let w = whole.get_or_insert_with(WholeHash::new);
        self.hash_present(w, u64::MAX)?;
        if w.next < self.descs.len() {
            return Err(Error::ChunkMissing {
                oid: self.oid,
                index: w.next as u32,
            });
        }
        let done = std::mem::replace(w, WholeHash::new());
        Ok(Oid(done.hasher.finalize().into()))
    }
}
