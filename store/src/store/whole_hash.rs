//! The whole-object SHA-256, taken while an object fills.
//!
//! A receiver runs [`Store::hash_while_filling`] on a thread of its own
//! (the agent: at idle priority until the transfer ends) beside the
//! transfer: it feeds the object's running SHA-256 the present chunks in
//! order, straight from the mapping of the store's file (no copy, no read
//! back from disk), and sleeps until the next chunk lands. When the transfer leaves a core idle
//! (a link slower than the CPU) the hash keeps up and the OID check is done
//! right after the last chunk; when the cores are busy it falls behind and
//! catches up afterwards, never slowing the transfer. `finish` hashes
//! whatever is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest;

use super::Store;
use super::handle::Handle;
use crate::error::{Error, Result};
use crate::oid::Oid;

/// Most bytes hashed under the lock at once (`finish` may be waiting).
const CATCH_UP: u64 = 8 << 20;
/// Bytes a hasher lets arrive before it wakes to hash them.
const STEP: u64 = 4 << 20;
/// How often a waiting hasher looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

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

impl Store {
    /// Takes `oid`'s whole-object hash as its chunks become present, in
    /// order, until every chunk is hashed or `stop` is set (the hash so far
    /// is kept for [`Store::finish`]). Blocks the calling thread.
    ///
    /// # Errors
    /// [`Error::UnknownObject`]; I/O errors reading the object's file.
    pub fn hash_while_filling(&self, oid: Oid, stop: &AtomicBool) -> Result<()> {
        let h = self.handle(oid)?;
        while !stop.load(Ordering::Relaxed) {
            let wait_for = {
                let mut whole = super::lock(&h.whole);
                let Some(w) = whole.as_mut() else {
                    return Ok(());
                };
                h.hash_present(w, CATCH_UP)?;
                if w.next == h.descs.len() {
                    return Ok(());
                }
                h.next_wait(w.next)
            };
            let Some(index) = wait_for else {
                continue;
            };
            match h.wait_present(index, Instant::now() + STOP_CHECK) {
                Ok(true) | Err(Error::Timeout { .. }) => {}
                Ok(false) => return Err(Error::UnknownObject(oid)),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Handle {
    /// The chunk a hasher at chunk `next` should sleep until: the last
    /// missing one of the next [`STEP`] bytes, so it wakes once per step
    /// rather than per chunk. `None` if none of them is missing.
    fn next_wait(&self, next: usize) -> Option<u32> {
        let from = self.descs[next].offset;
        let last = self
            .descs
            .partition_point(|d| d.offset < from.saturating_add(STEP))
            .clamp(next + 1, self.descs.len());
        let st = self.lock();
        (next..last)
            .rev()
            .find(|&i| !st.present[i])
            .map(|i| i as u32)
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
