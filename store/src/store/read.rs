//! Reading: what the store knows of objects, and their verified bytes.
//!
//! Bytes of the store's own file are verified before they are marked
//! present, so a read of present chunks is one read (or one view of the
//! file's mapping, no copy). Bytes of a referenced file are checked again
//! as they are read: the file's stamp always, each chunk's hash for local
//! readers (peers hash every chunk they receive themselves).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{FileStamp, ObjectInfo, Store, lock};
use crate::descriptor::{Descriptor, chunks_covering};
use crate::error::{Error, Result};
use crate::index;
use crate::oid::{ChunkHash, Oid};

impl Store {
    /// What the store knows of `oid`, or `None`.
    ///
    /// # Errors
    /// Index errors.
    pub fn info(&self, oid: Oid) -> Result<Option<ObjectInfo>> {
        Ok(self.query_info(Some(oid))?.pop())
    }

    /// Every object in the store, oldest use first.
    ///
    /// # Errors
    /// Index errors.
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        self.query_info(None)
    }

    fn query_info(&self, oid: Option<Oid>) -> Result<Vec<ObjectInfo>> {
        let rows = self.inner.db.call(move |c| index::infos(c, oid))?;
        let pins = lock(&self.inner.pins).clone();
        Ok(rows
            .into_iter()
            .map(|r| {
                // An open object's handle is ahead of the index by the
                // marks still being flushed.
                let (complete, present) = self
                    .open_state(r.oid)
                    .map_or((r.complete, r.present), |(c, p)| {
                        (c || r.complete, p.max(r.present))
                    });
                ObjectInfo {
                    pins: pins.get(&r.oid).copied().unwrap_or(0),
                    oid: r.oid,
                    size: r.size,
                    chunks: r.chunks,
                    present,
                    complete,
                    referenced: r.referenced.map(PathBuf::from),
                    last_use: r.last_use,
                }
            })
            .collect())
    }

    /// Whether `oid` is held whole: one row looked up, no chunk counted
    /// (what a reader asks before every read).
    ///
    /// # Errors
    /// Index failures.
    pub fn is_complete(&self, oid: Oid) -> Result<bool> {
        if self.open_state(oid).is_some_and(|(complete, _)| complete) {
            return Ok(true);
        }
        self.inner.db.call(move |c| index::is_complete(c, &oid))
    }

    /// Complete and, if referenced, its file unchanged: a put of the file
    /// (the file at `path` with stamp `stamp`, whose bytes were just hashed
    /// to `oid`) need not record it again. A referenced copy that is stale,
    /// or is this same file under an older stamp, is replaced by it.
    pub(super) fn exists_servable(&self, oid: Oid, path: &Path, stamp: FileStamp) -> Result<bool> {
        if !self.is_complete(oid)? {
            return Ok(false);
        }
        match self.handle(oid) {
            Ok(h) => Ok(!h.is_stale() && !h.is_older_stamp_of(path, stamp)),
            Err(Error::FileChanged { .. } | Error::UnknownObject(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The descriptors of `oid`.
    ///
    /// # Errors
    /// [`Error::UnknownObject`]; [`Error::FileChanged`] for a referenced file
    /// that changed; I/O and index errors.
    pub fn descriptors(&self, oid: Oid) -> Result<Arc<[Descriptor]>> {
        Ok(self.handle(oid)?.descs.clone())
    }

    /// The verified bytes of chunk `index` of `oid`.
    ///
    /// # Errors
    /// [`Error::ChunkMissing`] if it is not present; [`Error::FileChanged`]
    /// if a referenced file changed; I/O errors.
    pub fn read_chunk(&self, oid: Oid, index: u32) -> Result<Vec<u8>> {
        let h = self.handle(oid)?;
        let read = h.read_chunk(index);
        self.after_read(&h, read)
    }

    /// The bytes of chunk `index` of `oid` for a peer, which verifies every
    /// chunk it receives: from the store's own file a view of its mapping
    /// (no copy); from a referenced file a read checked against the file's
    /// stamp (identity, size, mtime) but not re-hashed, so serving costs no
    /// hash pass, unless the stamp moved (then hashed, so the peer hears
    /// that the file changed rather than gets bytes it would reject).
    /// Local readers use [`Store::read_chunk`].
    ///
    /// # Errors
    /// As [`Store::read_chunk`].
    pub fn read_for_peer(&self, oid: Oid, index: u32) -> Result<Bytes> {
        let h = self.handle(oid)?;
        let d = h.desc(index)?;
        if !h.is_present(index) {
            return Err(Error::ChunkMissing { oid, index });
        }
        if let Some(bytes) = h.mapped(d.offset, d.end()) {
            return Ok(bytes);
        }
        let read = h.read_raw(d.offset, d.len as usize).and_then(|data| {
            if h.is_stale() && ChunkHash::of(&data) != d.hash {
                return Err(h.changed());
            }
            Ok(Bytes::from(data))
        });
        self.after_read(&h, read)
    }

    /// Reads up to `len` bytes at `offset` of `oid`; every chunk the range
    /// touches must be present. Returns fewer bytes only at the object's end.
    ///
    /// # Errors
    /// As [`Store::read_chunk`].
    pub fn read_at(&self, oid: Oid, offset: u64, len: usize) -> Result<Vec<u8>> {
        let h = self.handle(oid)?;
        let end = offset.saturating_add(len as u64).min(h.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let chunks = chunks_covering(&h.descs, offset, end - offset);
        if h.is_owned() {
            // The store's own file holds only verified chunks: one read of
            // the whole range once every chunk under it is there.
            h.require_present(chunks)?;
            return h.read_raw(offset, (end - offset) as usize);
        }
        // A referenced file may have changed: each chunk is re-checked.
        let read = (|| {
            let mut out = Vec::with_capacity((end - offset) as usize);
            for i in chunks {
                let d = h.descs[i];
                let from = offset.max(d.offset);
                let to = end.min(d.end());
                let chunk = h.read_chunk(i as u32)?;
                out.extend_from_slice(&chunk[(from - d.offset) as usize..(to - d.offset) as usize]);
            }
            Ok(out)
        })();
        self.after_read(&h, read)
    }

    /// As [`Store::read_at`], without copying where it can: a range of the
    /// store's own file comes as a view of the file mapped into memory.
    ///
    /// # Errors
    /// As [`Store::read_chunk`].
    pub fn read_bytes(&self, oid: Oid, offset: u64, len: usize) -> Result<Bytes> {
        let h = self.handle(oid)?;
        let end = offset.saturating_add(len as u64).min(h.size);
        if offset < end && h.is_owned() {
            h.require_present(chunks_covering(&h.descs, offset, end - offset))?;
            if let Some(bytes) = h.mapped(offset, end) {
                return Ok(bytes);
            }
        }
        self.read_at(oid, offset, len).map(Bytes::from)
    }

    /// Path of the file holding `oid`'s bytes (the store's own file, or the
    /// referenced file), for serving a complete object by passthrough.
    ///
    /// # Errors
    /// As [`Store::descriptors`].
    pub fn backing_path(&self, oid: Oid) -> Result<PathBuf> {
        Ok(self.handle(oid)?.path().to_owned())
    }
}
