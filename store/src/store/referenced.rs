//! Referenced files that change after their put.
//!
//! A file put by reference is served while its bytes are the object's. Its
//! stamp (device, inode, size, mtime) is only the fast check: a file whose
//! stamp moved (`touch`, an editor saving the same bytes, a copy put back)
//! makes its handle stale, every read from it is then hashed before it is
//! served, and one re-validation hashes the whole file at low priority:
//! if every chunk still matches, the new stamp is recorded (in the object
//! and the OID cache) and the file is served as before; if one does not,
//! or the file is gone, the object is forgotten with a warning, every
//! reader gets [`Error::FileChanged`] saying so, and a later get fetches
//! it again from any other copy (chunks held by other objects, peers). A
//! put of the file repairs it at once.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::handle::{FileStamp, Handle, read_exact_at};
use super::{Store, lock};
use crate::descriptor::Descriptor;
use crate::error::{Error, Result};
use crate::index;
use crate::oid::{ChunkHash, Oid};

/// Objects remembered as forgotten for a changed file.
const MAX_REMEMBERED: usize = 1024;

impl Store {
    /// Passes on what a read of `h` returned, acting on what it showed of a
    /// referenced file: forgets an object whose file changed, and starts
    /// the re-validation of a stale one (once per handle).
    pub(super) fn after_read<T>(&self, h: &Handle, read: Result<T>) -> Result<T> {
        match &read {
            Err(e @ Error::FileChanged { .. }) => self.forget_changed(h.oid, e),
            Ok(_) if h.is_stale() && !h.revalidating.swap(true, Ordering::Relaxed) => {
                self.start_revalidation(h);
            }
            _ => {}
        }
        read
    }

    /// Forgets `oid` after its referenced file was found changed (logged
    /// by the first reader to find it).
    fn forget_changed(&self, oid: Oid, e: &Error) {
        if lock(&self.inner.handles).contains_key(&oid) {
            tracing::warn!(oid = %oid, "{e}");
        }
        {
            let mut changed = lock(&self.inner.changed);
            if changed.len() >= MAX_REMEMBERED
                && let Some(old) = changed.keys().next().copied()
            {
                changed.remove(&old);
            }
            if let Error::FileChanged { path, gone, .. } = e {
                changed.insert(oid, (path.clone(), *gone));
            }
        }
        if let Err(e) = self.remove(oid) {
            tracing::error!(oid = %oid, error = %e, "forgetting an object whose file changed failed");
        }
    }

    /// Why `oid` is unknown, if it was forgotten because its file changed.
    pub(super) fn forgotten_as_changed(&self, oid: Oid) -> Option<Error> {
        let (path, gone) = lock(&self.inner.changed).get(&oid).cloned()?;
        Some(Error::FileChanged { oid, path, gone })
    }

    /// `oid` is known again (put or fetched): its change is history.
    pub(super) fn known_again(&self, oid: Oid) {
        lock(&self.inner.changed).remove(&oid);
    }

    fn start_revalidation(&self, h: &Handle) {
        let (store, oid, path, descs) = (self.clone(), h.oid, h.path().to_owned(), h.descs.clone());
        let size = h.size;
        let started = std::thread::Builder::new()
            .name("dot-store-recheck".into())
            .spawn(move || {
                lower_priority();
                match store.revalidate(oid, path, size, &descs) {
                    Ok(()) => {}
                    Err(e @ Error::FileChanged { .. }) => store.forget_changed(oid, &e),
                    Err(e) => {
                        tracing::warn!(oid = %oid, error = %e, "re-checking a referenced file failed; its reads stay hashed");
                    }
                }
            });
        if let Err(e) = started {
            tracing::warn!(oid = %oid, error = %e, "cannot start re-checking a referenced file");
            h.revalidating.store(false, Ordering::Relaxed);
        }
    }

    /// Hashes every chunk of the file at `path` against `descs`; if all
    /// match, records the file's new stamp and reopens the object from it.
    ///
    /// # Errors
    /// [`Error::FileChanged`] if the file is gone or holds other bytes; I/O
    /// and index errors.
    fn revalidate(
        &self,
        oid: Oid,
        path: PathBuf,
        size: u64,
        descs: &Arc<[Descriptor]>,
    ) -> Result<()> {
        let changed = |gone| Error::FileChanged {
            oid,
            path: path.clone(),
            gone,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed(true)),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let stamp = |f: &File| -> Result<FileStamp> {
            Ok(FileStamp::of(
                &f.metadata().map_err(|e| Error::io("stat", &path, e))?,
            ))
        };
        let before = stamp(&file)?;
        if before.size != size {
            return Err(changed(false));
        }
        for d in descs.iter() {
            let data =
                read_exact_at(&file, d.len as usize, d.offset).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => changed(false),
                    _ => Error::io("read", &path, e),
                })?;
            if ChunkHash::of(&data) != d.hash {
                return Err(changed(false));
            }
        }
        if stamp(&file)? != before {
            // Changing as it was read: the next read starts another check.
            if let Some(h) = lock(&self.inner.handles).get(&oid) {
                h.revalidating.store(false, Ordering::Relaxed);
            }
            return Ok(());
        }
        let p = path.to_string_lossy().into_owned();
        self.inner
            .db
            .call(move |c| index::restamp_file(c, &oid, &p, before))?;
        // The next use opens the file again, with its new stamp; readers
        // holding the stale handle go on hashing what they read.
        lock(&self.inner.handles).remove(&oid);
        tracing::info!(oid = %oid, path = %path.display(), "a referenced file was touched but holds the same bytes; served from it again");
        Ok(())
    }
}

/// Lowers the calling thread's CPU priority (nice 19): re-checking yields
/// to transfers.
fn lower_priority() {
    // SAFETY: setpriority on the calling thread (PRIO_PROCESS with id 0 is
    // the calling thread on Linux); no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}
