//! The receiving side: an object filled chunk by chunk, then checked whole.
//!
//! `begin_fill` records the descriptor list (checked to tile the object)
//! with every chunk absent and creates the sparse file. Chunks arrive as
//! [`VerifiedChunk`]s, already hashed by whoever received them, and are
//! written at their offsets without hashing again; the presence bitmap and
//! the index mark follow the write. `finish` compares the whole-object
//! SHA-256 (taken while the chunks arrive where the receiver runs
//! `hash_while_filling`, `whole_hash.rs`) with the OID: a list that lied
//! removes the object.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Store;
use super::handle::Handle;
use crate::chunk::{ChunkError, VerifiedChunk};
use crate::descriptor::{Descriptor, check_descriptors};
use crate::error::{Error, Result};
use crate::index;
use crate::oid::Oid;

impl Store {
    /// Prepares to receive `oid` chunk by chunk: records its descriptors
    /// (checked to tile `size` bytes) and creates its sparse file. If the
    /// object is already known, keeps what is there. Returns the indexes of
    /// the chunks still missing.
    ///
    /// # Errors
    /// [`Error::BadDescriptors`] for a list that does not describe `size`
    /// bytes; [`Error::TooLarge`] above the store's budget; I/O and index
    /// errors.
    pub fn begin_fill(&self, oid: Oid, size: u64, descs: &[Descriptor]) -> Result<Vec<u32>> {
        check_descriptors(size, descs).map_err(|reason| Error::BadDescriptors { oid, reason })?;
        self.known_again(oid);
        if size > self.inner.opts.budget {
            return Err(Error::TooLarge {
                size,
                limit: self.inner.opts.budget,
            });
        }
        if let Some(info) = self.info(oid)? {
            let same = info.complete || self.descriptors(oid).is_ok_and(|d| d.as_ref() == descs);
            if same {
                return self.missing(oid);
            }
            tracing::info!(oid = %oid, "replacing a partial object's descriptor list");
            self.remove(oid)?;
        }
        let descs = descs.to_vec();
        self.inner
            .db
            .call(move |c| index::insert_partial(c, &oid, size, &descs))?;
        self.evict_for(size, Some(oid))?;
        self.missing(oid)
    }

    /// Writes a chunk checked against its descriptor. No hashing: the
    /// [`VerifiedChunk`] proves that was done; its descriptor must be the
    /// one this object has at that index. Returns false if the chunk was
    /// already present.
    ///
    /// # Errors
    /// [`Error::NoSuchChunk`]; [`Error::ChunkMismatch`] if the chunk was
    /// verified against another descriptor; I/O errors.
    pub fn write_verified(&self, oid: Oid, chunk: &VerifiedChunk) -> Result<bool> {
        let h = self.handle(oid)?;
        let index = chunk.index();
        let d = h.desc(index)?;
        if *chunk.descriptor() != d {
            return Err(Error::ChunkMismatch {
                oid,
                index,
                want: d.hash,
                got: chunk.descriptor().hash,
            });
        }
        self.store_verified(&h, index, chunk.data())
    }

    /// Checks `data` against descriptor `index` of `oid` and writes it
    /// ([`VerifiedChunk::verify`], then [`Store::write_verified`]). Returns
    /// false if the chunk was already present.
    ///
    /// # Errors
    /// [`Error::ChunkMismatch`] / [`Error::ChunkLength`] for wrong bytes
    /// (nothing is written); I/O errors.
    pub fn write_chunk(&self, oid: Oid, index: u32, data: &[u8]) -> Result<bool> {
        let h = self.handle(oid)?;
        let d = h.desc(index)?;
        if data.len() != d.len as usize {
            return Err(Error::ChunkLength {
                oid,
                index,
                want: d.len,
                got: data.len(),
            });
        }
        if h.is_present(index) {
            return Ok(false);
        }
        let chunk = VerifiedChunk::verify(index, d, Bytes::copy_from_slice(data))
            .map_err(|e| chunk_error(oid, e))?;
        self.store_verified(&h, index, chunk.data())
    }

    /// Writes bytes already verified against descriptor `index` of `h`.
    fn store_verified(&self, h: &Handle, index: u32, data: &[u8]) -> Result<bool> {
        let d = h.desc(index)?;
        if !h.is_owned() || h.is_present(index) {
            return Ok(false);
        }
        h.file
            .write_all_at(data, d.offset)
            .map_err(|e| Error::io("write", h.path(), e))?;
        let awaited = {
            let mut st = h.lock();
            if st.gone {
                return Err(Error::UnknownObject(h.oid));
            }
            if st.present[index as usize] {
                return Ok(false);
            }
            st.set_present(index)
        };
        self.inner
            .db
            .mark_present(h.oid, index, d.len, h.file.clone())?;
        if awaited {
            h.wake();
        }
        Ok(true)
    }

    /// Indexes of the chunks of `oid` not yet present.
    ///
    /// # Errors
    /// [`Error::UnknownObject`]; I/O and index errors.
    pub fn missing(&self, oid: Oid) -> Result<Vec<u32>> {
        let h = self.handle(oid)?;
        let st = h.lock();
        Ok(st
            .present
            .iter()
            .enumerate()
            .filter(|(_, p)| !**p)
            .map(|(i, _)| i as u32)
            .collect())
    }

    /// Whether chunk `index` of `oid` is present.
    ///
    /// # Errors
    /// As [`Store::missing`].
    pub fn has_chunk(&self, oid: Oid, index: u32) -> Result<bool> {
        let h = self.handle(oid)?;
        h.desc(index)?;
        Ok(h.is_present(index))
    }

    /// Copies into `oid` every missing chunk that some object in the store
    /// already holds (the cross-application cache), verifying each once.
    /// Returns how many chunks were filled.
    ///
    /// # Errors
    /// As [`Store::missing`].
    pub fn fill_from_local(&self, oid: Oid) -> Result<u32> {
        let h = self.handle(oid)?;
        let wanted: Vec<(u32, crate::ChunkHash)> = {
            let st = h.lock();
            st.present
                .iter()
                .enumerate()
                .filter(|(_, p)| !**p)
                .map(|(i, _)| (i as u32, h.descs[i].hash))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(0);
        }
        let sources = self
            .inner
            .db
            .call(move |c| index::find_present(c, &wanted))?;
        let mut filled = 0;
        for (index, src, src_idx) in sources {
            // The raw bytes, checked once here against the wanted
            // descriptor (which names the same hash as the source's).
            let raw = self.handle(src).and_then(|s| {
                let sd = s.desc(src_idx)?;
                s.read_raw(sd.offset, sd.len as usize)
            });
            let data = match raw {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(oid = %src, error = %e, "local copy of a chunk unusable");
                    continue;
                }
            };
            match VerifiedChunk::verify(index, h.desc(index)?, data.into()) {
                Ok(chunk) => {
                    if self.store_verified(&h, index, chunk.data())? {
                        filled += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(oid = %src, error = %e, "a stored chunk no longer matches its hash");
                }
            }
        }
        Ok(filled)
    }

    /// Blocks until chunk `index` of `oid` is present, or `timeout` passes.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::UnknownObject`] if the object is removed.
    pub fn wait_chunk(&self, oid: Oid, index: u32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let h = self.handle(oid)?;
            h.desc(index)?;
            if h.wait_present(index, deadline)? {
                return Ok(());
            }
        }
    }

    /// Completes a filled object: checks that every chunk is present, then
    /// that the whole object hashes to its OID. On a mismatch the object is
    /// removed (its descriptor list lied).
    ///
    /// # Errors
    /// [`Error::ChunkMissing`] for the first missing chunk;
    /// [`Error::ObjectMismatch`]; I/O errors.
    pub fn finish(&self, oid: Oid) -> Result<()> {
        let h = self.handle(oid)?;
        {
            let st = h.lock();
            if st.complete {
                return Ok(());
            }
            if let Some(index) = st.present.iter().position(|p| !p) {
                return Err(Error::ChunkMissing {
                    oid,
                    index: index as u32,
                });
            }
        }
        let got = h.whole_hash()?;
        if got != oid {
            tracing::warn!(oid = %oid, "filled object does not hash to its OID; removing it");
            self.remove(oid)?;
            return Err(Error::ObjectMismatch { oid, got });
        }
        // Complete for readers now; in the index once every chunk's bytes
        // are on disk (the flusher's order), which no reader waits for.
        self.inner
            .db
            .after_marks("marking an object complete", move |c| {
                index::mark_complete(c, &oid)
            })?;
        h.lock().complete = true;
        *super::lock(&h.whole) = None;
        self.evict()?;
        Ok(())
    }
}

/// A chunk check's failure as a store error about `oid`.
pub(crate) fn chunk_error(oid: Oid, e: ChunkError) -> Error {
    match e {
        ChunkError::Length { index, want, got } => Error::ChunkLength {
            oid,
            index,
            want,
            got,
        },
        ChunkError::Mismatch { index, want, got } => Error::ChunkMismatch {
            oid,
            index,
            want,
            got,
        },
    }
}
