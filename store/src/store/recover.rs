//! Opening and closing, and what they repair after a crash.
//!
//! At open the store empties `tmp/`, deletes object files the index does
//! not know, forgets complete objects whose file vanished, and marks
//! missing the chunks an owned file no longer wholly holds (a file cut
//! short by a power cut: `repair_short`). Nothing about one object's file
//! fails the open: the object is repaired (its lost chunks fetched again)
//! or dropped, with a log line. A partial object reopened finds chunks
//! written before a crash whose mark never reached the index
//! (`recover_written`).
//!
//! Each open starts a new *generation* (a counter in the index, not the
//! clock), and every object records the generation it was last written
//! in. The index also keeps the last generation whose writes are known to
//! be on disk: a clean [`Store::close`] sets it to its own, a durable store
//! to its own as it opens (it flushes everything it records). Finding it
//! behind the previous generation at open means an unclean stop of a store
//! that was not durable: the owned objects written since are re-verified.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::handle::Handle;
use super::{Store, fsync_dir};
use crate::error::{Error, Result};
use crate::index::{self, Generations, ObjectRow};
use crate::oid::{ChunkHash, Oid};

/// The marker file of the clock-based scheme this replaced: present while
/// a non-durable store was open. Found at open, every owned object is
/// re-verified once, then it is removed.
const LEGACY_UNCLEAN_MARKER: &str = "open.unclean";

/// Flushes the filesystem holding `dir` (object files and index alike).
fn syncfs(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        // SAFETY: syncfs on an open descriptor has no other preconditions.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
}

/// Errors about the store's filesystem or the process rather than one
/// object's file: they fail the operation instead of dropping the object.
pub(super) fn is_store_wide(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
                | libc::EINTR
                | libc::EAGAIN
                | libc::ENOSPC
                | libc::EDQUOT
                | libc::EROFS
        )
    )
}

impl Store {
    /// Closes cleanly: records every pending chunk, flushes the store's
    /// files to disk (a durable store has flushed each as it recorded it),
    /// and records this generation as on disk, so the next open
    /// re-verifies nothing.
    ///
    /// # Errors
    /// Index and I/O errors.
    pub fn close(&self) -> Result<()> {
        self.flush()?;
        // A durable store flushed every file it recorded (the flusher did
        // the last ones just now); flushing the whole filesystem would
        // wait for everyone else's writes too.
        if !self.inner.opts.durable {
            syncfs(&self.inner.dir);
        }
        let generation = self.inner.generation;
        self.inner
            .db
            .call(move |c| index::set_clean(c, generation))?;
        self.inner.db.sync()
    }

    /// Without `durable`, written chunks are not flushed before the index
    /// records them, so a machine crash could leave recorded chunks whose
    /// bytes never reached the disk. A clean [`Store::close`] flushes and
    /// records its generation as on disk; finding the last such generation
    /// behind the previous one at open means the last session did not close
    /// cleanly, and every owned object written since is re-verified (bad
    /// chunks are fetched again, bad objects removed), then the filesystem
    /// is flushed so what was checked is what is on disk. A killed process
    /// loses nothing (the page cache survives it), so this is cheap
    /// insurance: only recently written objects are read. Generations count
    /// opens, so a clock step cannot hide an object from the check.
    pub(super) fn check_after_unclean_stop(&self, gens: Generations) -> Result<()> {
        let dir = &self.inner.dir;
        let legacy = dir.join(LEGACY_UNCLEAN_MARKER);
        let legacy_found = legacy.exists();
        let since = if legacy_found {
            Some(-1)
        } else if gens.unclean() {
            Some(gens.clean)
        } else {
            None
        };
        if let Some(since) = since {
            let written: HashSet<Oid> = self
                .inner
                .db
                .call(move |c| index::owned_written_after(c, since))?
                .into_iter()
                .collect();
            tracing::info!(
                since_generation = since,
                objects = written.len(),
                "the store was not closed cleanly; re-verifying the objects written since"
            );
            let report = self.verify_where(|info| written.contains(&info.oid))?;
            tracing::info!(
                objects = report.objects,
                damaged = report.damaged_chunks.len(),
                removed = report.bad_objects.len(),
                "re-verified objects after an unclean stop"
            );
            self.flush()?;
            syncfs(dir);
            if legacy_found {
                match fs::remove_file(&legacy) {
                    Ok(()) => fsync_dir(dir)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", &legacy, e)),
                }
            }
        }
        // A durable session flushes everything it records: its own
        // generation is on disk as it goes.
        let clean = if self.inner.opts.durable {
            gens.current
        } else {
            gens.current - 1
        };
        if clean > gens.clean {
            self.inner.db.call(move |c| index::set_clean(c, clean))?;
            self.inner.db.sync()?;
        }
        Ok(())
    }

    /// Removes what a killed process left behind, and repairs what a power
    /// cut did to owned files.
    pub(super) fn clean_up(&self) -> Result<()> {
        let tmp = &self.inner.tmp_dir;
        for entry in fs::read_dir(tmp)
            .map_err(|e| Error::io("list", tmp, e))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        let owned = self.inner.db.call(index::owned_objects)?;
        let known: HashSet<String> = owned.iter().map(|(o, _, _)| o.hex()).collect();
        let objects = &self.inner.objects_dir;
        for fan in fs::read_dir(objects)
            .map_err(|e| Error::io("list", objects, e))?
            .flatten()
        {
            for entry in fs::read_dir(fan.path()).into_iter().flatten().flatten() {
                let name = entry.file_name();
                if !known.contains(name.to_string_lossy().as_ref()) {
                    tracing::info!(path = %entry.path().display(), "removing object file the index does not know");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        for (oid, size, complete) in owned {
            let path = self.object_path(&oid);
            match fs::metadata(&path) {
                Ok(m) if !m.is_file() => {
                    tracing::warn!(oid = %oid, path = %path.display(), "object file is not a regular file; dropping the object");
                    self.drop_object(oid)?;
                }
                Ok(m) if m.len() < size => self.repair_short_by_oid(oid, m.len())?,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && complete => {
                    tracing::warn!(oid = %oid, "object file is gone; forgetting the object");
                    self.drop_object(oid)?;
                }
                // A partial object's file is made again when it is next
                // used; the chunks recorded in it went with it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.repair_short_by_oid(oid, 0)?;
                }
                Err(e) => {
                    tracing::warn!(oid = %oid, path = %path.display(), error = %e, "cannot examine the object file; it is checked again when the object is used");
                }
            }
        }
        Ok(())
    }

    /// [`Store::repair_short`] for an object not open.
    fn repair_short_by_oid(&self, oid: Oid, len: u64) -> Result<()> {
        let row = self.inner.db.call(move |c| index::load_object(c, &oid))?;
        if let Some(mut row) = row {
            self.repair_short(oid, &mut row, len)?;
        }
        Ok(())
    }

    /// The owned file of `oid` holds only `len` bytes, fewer than the
    /// object's size (cut short by a power cut, or damaged). The chunks
    /// recorded present that the file does not wholly hold are marked
    /// missing and the object incomplete, in the index and in `row`, and
    /// that is on disk before this returns: only then may the file be grown
    /// back to the object's size, whose zeros must never pass for chunk
    /// bytes. A complete object left with no chunk is dropped (`None`);
    /// otherwise returns the chunks marked missing, to be fetched again.
    pub(super) fn repair_short(
        &self,
        oid: Oid,
        row: &mut ObjectRow,
        len: u64,
    ) -> Result<Option<Vec<u32>>> {
        let lost: Vec<u32> = row
            .chunks
            .iter()
            .enumerate()
            .filter(|(_, (d, present))| *present && d.end() > len)
            .map(|(i, _)| i as u32)
            .collect();
        let kept = row.chunks.iter().filter(|(_, p)| *p).count() - lost.len();
        if row.complete && kept == 0 {
            tracing::warn!(oid = %oid, file_len = len, size = row.size, "object file is short and holds no whole chunk; dropping the object");
            self.drop_object(oid)?;
            return Ok(None);
        }
        if lost.is_empty() {
            return Ok(Some(lost));
        }
        tracing::warn!(
            oid = %oid,
            file_len = len,
            size = row.size,
            missing = lost.len(),
            kept,
            "object file is shorter than the object; the chunks past its end are marked missing and will be fetched again"
        );
        let marked = lost.clone();
        self.inner
            .db
            .call(move |c| index::mark_damaged(c, &oid, &marked))?;
        self.inner.db.sync()?;
        for &i in &lost {
            row.chunks[i as usize].1 = false;
        }
        row.complete = false;
        Ok(Some(lost))
    }

    /// Forgets an object whose file is unusable: its index rows, then its
    /// file if it can (else the next open's clean-up removes it).
    pub(super) fn drop_object(&self, oid: Oid) -> Result<()> {
        self.forget_handle(oid);
        self.inner.db.call(move |c| index::delete_object(c, &oid))?;
        self.inner.db.sync()?;
        let path = self.object_path(&oid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(oid = %oid, path = %path.display(), error = %e, "cannot remove the dropped object's file");
            }
        }
        Ok(())
    }

    /// Chunks written before a crash whose mark never reached the index:
    /// where the sparse file holds data for an unmarked chunk, hash it, and
    /// mark it if it verifies. Saves fetching them again.
    pub(super) fn recover_written(&self, h: &Handle, present: &mut [bool]) -> Result<()> {
        let mut recovered = 0;
        for (i, d) in h.descs.iter().enumerate() {
            if present[i] || !has_data(&h.file, d.offset, d.end()) {
                continue;
            }
            let Ok(data) = h.read_raw(d.offset, d.len as usize) else {
                continue;
            };
            if ChunkHash::of(&data) == d.hash {
                present[i] = true;
                self.inner
                    .db
                    .mark_present(h.oid, i as u32, d.len, h.file.clone())?;
                recovered += 1;
            }
        }
        if recovered > 0 {
            tracing::info!(oid = %h.oid, recovered, "recovered chunks written before a restart");
        }
        Ok(())
    }
}

/// Whether `file` has any data (not a hole) in `start..end`.
fn has_data(file: &File, start: u64, end: u64) -> bool {
    let Ok(start_off) = libc::off_t::try_from(start) else {
        return false;
    };
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let at = unsafe { libc::lseek(file.as_raw_fd(), start_off, libc::SEEK_DATA) };
    at >= 0 && (at as u64) < end
}
