//! Opening and closing, and what they repair after a crash.
//!
//! At open the store empties `tmp/`, deletes object files the index does
//! not know and forgets complete objects whose file vanished. A partial
//! object reopened finds chunks written before a crash whose mark never
//! reached the index (`recover_written`). Without `durable`, a marker file
//! lives while the store is open; finding it at open means the last session
//! did not close cleanly, and the objects it used are re-verified.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::io::AsRawFd;
use std::time::UNIX_EPOCH;

use super::handle::Handle;
use super::{Store, fsync_dir};
use crate::error::{Error, Result};
use crate::index;
use crate::oid::ChunkHash;

/// Present while a non-durable store is open (see `check_after_unclean_stop`).
const UNCLEAN_MARKER: &str = "open.unclean";

impl Store {
    /// Closes cleanly: records every pending chunk, flushes the store's
    /// files to disk, and (without `durable`) removes the marker that makes
    /// the next open re-verify recently used objects.
    ///
    /// # Errors
    /// Index and I/O errors.
    pub fn close(&self) -> Result<()> {
        self.flush()?;
        let dir = &self.inner.dir;
        if let Ok(d) = File::open(dir) {
            // SAFETY: syncfs on an open descriptor has no other preconditions.
            unsafe { libc::syncfs(d.as_raw_fd()) };
        }
        if !self.inner.opts.durable {
            let marker = dir.join(UNCLEAN_MARKER);
            match fs::remove_file(&marker) {
                Ok(()) => fsync_dir(dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &marker, e)),
            }
        }
        Ok(())
    }

    /// Without `durable`, written chunks are not flushed before the index
    /// records them, so a machine crash could leave recorded chunks whose
    /// bytes never reached the disk. A marker file lives while the store is
    /// open and goes at [`Store::close`]; finding it at open means the last
    /// session did not close cleanly, and every owned object used since it
    /// opened is re-verified (bad chunks are fetched again, bad objects
    /// removed). A killed process loses nothing (the page cache survives
    /// it), so this is cheap insurance: only recently used objects are read.
    pub(super) fn check_after_unclean_stop(&self) -> Result<()> {
        let dir = &self.inner.dir;
        let marker = dir.join(UNCLEAN_MARKER);
        if let Ok(meta) = fs::metadata(&marker) {
            let since = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64 - 1);
            let report =
                self.verify_where(|info| info.referenced.is_none() && info.last_use >= since)?;
            tracing::info!(
                objects = report.objects,
                damaged = report.damaged_chunks.len(),
                removed = report.bad_objects.len(),
                "re-verified objects after an unclean stop"
            );
        }
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("create", &marker, e))?;
        fsync_dir(dir)
    }

    /// Removes what a killed process left behind.
    pub(super) fn clean_up(&self) -> Result<()> {
        let tmp = &self.inner.tmp_dir;
        for entry in fs::read_dir(tmp)
            .map_err(|e| Error::io("list", tmp, e))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        let owned = self.inner.db.call(index::owned_objects)?;
        let known: HashSet<String> = owned.iter().map(|(o, _)| o.hex()).collect();
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
        for (oid, complete) in owned {
            if complete && !self.object_path(&oid).exists() {
                tracing::warn!(oid = %oid, "object file is gone; forgetting the object");
                self.remove(oid)?;
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
                    .mark_present(h.oid, i as u32, h.file.clone())?;
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
