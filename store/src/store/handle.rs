//! An object in use, and the cache of open objects.
//!
//! A [`Handle`] holds an object's descriptors, its open file (the store's
//! own, or the user's referenced file), a read-only mapping of the store's
//! own file made at the first mapped read, and while it fills, the presence
//! bitmap and the running whole-object hash. At most [`MAX_OPEN_OBJECTS`]
//! handles stay open: past that the least recently used complete ones
//! nobody holds are closed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use super::whole_hash::WholeHash;
use super::{Store, lock};
use crate::descriptor::{Descriptor, check_descriptors};
use crate::error::{Error, Result};
use crate::index;
use crate::oid::{ChunkHash, Oid};

/// Objects the store keeps open (file, mapping, descriptors) before it
/// closes the least recently used idle complete ones: an agent touches far
/// more objects than it may hold files open.
const MAX_OPEN_OBJECTS: usize = 128;

/// Where an object's bytes are read from.
pub(super) enum Backing {
    Owned { path: PathBuf },
    Referenced { path: PathBuf, stamp: FileStamp },
}

/// Identity and version of a referenced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    pub(crate) fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
        }
    }
}

/// An object in use: descriptors, open file, presence.
pub(super) struct Handle {
    pub oid: Oid,
    pub size: u64,
    pub descs: Arc<[Descriptor]>,
    pub backing: Backing,
    pub file: Arc<File>,
    /// The store's own file mapped whole, made at the first mapped read.
    map: OnceLock<Option<Arc<memmap2::Mmap>>>,
    /// When it was last looked up (the store's tick count).
    used: AtomicU64,
    state: Mutex<HandleState>,
    cv: Condvar,
    /// While it fills: SHA-256 of the verified prefix.
    pub whole: Mutex<Option<WholeHash>>,
    /// Chunks marked missing when it was opened because its file was too
    /// short to hold them; taken by the next `verify` for its report.
    pub lost_at_open: Mutex<Vec<u32>>,
    /// A referenced file whose stamp no longer matches: every byte read
    /// from it is hashed before it is served (`referenced.rs`).
    pub stale: AtomicBool,
    /// A re-validation of the stale file was started.
    pub revalidating: AtomicBool,
}

pub(super) struct HandleState {
    pub present: Vec<bool>,
    pub missing: usize,
    pub complete: bool,
    /// Removed from the store; waiters must look again.
    pub gone: bool,
    /// The chunks blocked waiters wait for: a writer wakes them only when
    /// it writes one of these (no wake-up per chunk for nobody).
    pub awaited: Vec<u32>,
}

impl HandleState {
    /// Records chunk `index` present; true if someone waits for it.
    pub fn set_present(&mut self, index: u32) -> bool {
        self.present[index as usize] = true;
        self.missing -= 1;
        self.awaited.contains(&index)
    }
}

/// A range of a mapped file, owned by the [`Bytes`] made from it.
struct MappedRange {
    map: Arc<memmap2::Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MappedRange {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

impl Handle {
    pub fn lock(&self) -> MutexGuard<'_, HandleState> {
        lock(&self.state)
    }

    pub fn desc(&self, index: u32) -> Result<Descriptor> {
        self.descs
            .get(index as usize)
            .copied()
            .ok_or(Error::NoSuchChunk {
                oid: self.oid,
                index,
            })
    }

    pub fn path(&self) -> &Path {
        match &self.backing {
            Backing::Owned { path } | Backing::Referenced { path, .. } => path,
        }
    }

    pub fn is_owned(&self) -> bool {
        matches!(self.backing, Backing::Owned { .. })
    }

    pub fn is_present(&self, index: u32) -> bool {
        self.lock()
            .present
            .get(index as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Fails with the first chunk of `chunks` not present.
    pub fn require_present(&self, chunks: std::ops::Range<usize>) -> Result<()> {
        let st = self.lock();
        match chunks.into_iter().find(|&i| !st.present[i]) {
            Some(i) => Err(Error::ChunkMissing {
                oid: self.oid,
                index: i as u32,
            }),
            None => Ok(()),
        }
    }

    /// The store's own file mapped whole (`None` for a referenced file, an
    /// empty object, or where mapping fails: reads then use `pread`).
    fn mapping(&self) -> Option<&Arc<memmap2::Mmap>> {
        if !self.is_owned() || self.size == 0 {
            return None;
        }
        self.map
            .get_or_init(|| {
                let len = usize::try_from(self.size).ok()?;
                if self.file.metadata().ok()?.len() < self.size {
                    return None;
                }
                // SAFETY: the store never shortens its own file while it
                // holds it (opening only grows a partial file to the
                // object's size, checked above), so every mapped page stays
                // backed; readers look only at chunks marked present, whose
                // bytes were verified and written before the mark.
                let map = unsafe { memmap2::MmapOptions::new().len(len).map(&*self.file) };
                match map {
                    Ok(m) => Some(Arc::new(m)),
                    Err(e) => {
                        tracing::debug!(oid = %self.oid, error = %e, "cannot map; reading with pread");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// `offset..end` of the store's own file as a view of its mapping, no
    /// copy; `None` where there is no mapping. The caller checked that the
    /// chunks under the range are present.
    pub fn mapped(&self, offset: u64, end: u64) -> Option<Bytes> {
        let map = self.mapping()?.clone();
        // Both ends are at most the object's size, which is the mapping's
        // length and fits in usize.
        let (start, end) = (offset as usize, end.min(self.size) as usize);
        (start <= end).then(|| Bytes::from_owner(MappedRange { map, start, end }))
    }

    /// Reads `len` bytes at `offset` from the backing file. For a referenced
    /// file, first compares the stamp of what its path names now: no file
    /// there, or one of another size, no longer holds the object; another
    /// mtime or identity makes the handle [`Handle::is_stale`], and the
    /// caller must hash what it read.
    pub fn read_raw(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Backing::Referenced { path, stamp } = &self.backing {
            let now = match fs::metadata(path) {
                Ok(m) => FileStamp::of(&m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::FileChanged {
                        oid: self.oid,
                        path: path.clone(),
                        gone: true,
                    });
                }
                Err(e) => return Err(Error::io("stat", path, e)),
            };
            if now.size != self.size {
                return Err(self.changed());
            }
            if now != *stamp {
                self.stale.store(true, Ordering::Relaxed);
            }
        }
        read_exact_at(&self.file, len, offset).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof if !self.is_owned() => self.changed(),
            _ => Error::io("read", self.path(), e),
        })
    }

    /// The error for a referenced file that no longer holds the object.
    pub fn changed(&self) -> Error {
        Error::FileChanged {
            oid: self.oid,
            path: self.path().to_owned(),
            gone: false,
        }
    }

    /// This object's referenced file is `path`, recorded with a stamp other
    /// than `stamp`.
    pub fn is_older_stamp_of(&self, path: &Path, stamp: FileStamp) -> bool {
        matches!(&self.backing, Backing::Referenced { path: p, stamp: s } if p == path && *s != stamp)
    }

    /// A referenced file whose stamp changed since it was put (or last
    /// re-validated): its bytes are hashed on every read until the
    /// re-validation refreshes the stamp.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Reads a present chunk. Bytes of referenced files are re-hashed, since
    /// a file can change without its mtime moving.
    pub fn read_chunk(&self, index: u32) -> Result<Vec<u8>> {
        let d = self.desc(index)?;
        if !self.is_present(index) {
            return Err(Error::ChunkMissing {
                oid: self.oid,
                index,
            });
        }
        let data = self.read_raw(d.offset, d.len as usize)?;
        if !self.is_owned() && ChunkHash::of(&data) != d.hash {
            return Err(self.changed());
        }
        Ok(data)
    }

    /// Blocks until chunk `index` is present (true), the handle is gone
    /// (false), or `deadline` passes (error).
    pub fn wait_present(&self, index: u32, deadline: std::time::Instant) -> Result<bool> {
        let mut st = self.lock();
        st.awaited.push(index);
        let outcome = loop {
            if st.present[index as usize] {
                break Ok(true);
            }
            if st.gone {
                break Ok(false);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break Err(Error::Timeout {
                    oid: self.oid,
                    index,
                });
            }
            st = self
                .cv
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        };
        if let Some(at) = st.awaited.iter().position(|&i| i == index) {
            st.awaited.swap_remove(at);
        }
        outcome
    }

    pub fn wake(&self) {
        self.cv.notify_all();
    }
}

/// Closes idle complete objects, least recently used first, until a
/// quarter of [`MAX_OPEN_OBJECTS`] is free. Idle: nobody holds the handle
/// but the map (handles are only cloned under the map's lock, so this
/// cannot race). Partial objects stay open: their presence lives in the
/// handle while chunks arrive.
fn close_idle(map: &mut HashMap<Oid, Arc<Handle>>) {
    let mut idle: Vec<(u64, Oid)> = map
        .iter()
        .filter(|(_, h)| Arc::strong_count(h) == 1 && h.lock().complete)
        .map(|(oid, h)| (h.used.load(Ordering::Relaxed), *oid))
        .collect();
    idle.sort_unstable();
    let excess = map.len().saturating_sub(MAX_OPEN_OBJECTS * 3 / 4);
    for (_, oid) in idle.into_iter().take(excess) {
        map.remove(&oid);
    }
}

impl Store {
    /// The open object `oid`, opening it if needed.
    pub(super) fn handle(&self, oid: Oid) -> Result<Arc<Handle>> {
        let tick = self.inner.ticks.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = lock(&self.inner.handles).get(&oid) {
            h.used.store(tick, Ordering::Relaxed);
            return Ok(h.clone());
        }
        let h = Arc::new(self.load_handle(oid)?);
        h.used.store(tick, Ordering::Relaxed);
        let mut map = lock(&self.inner.handles);
        let h = map.entry(oid).or_insert(h).clone();
        if map.len() > MAX_OPEN_OBJECTS {
            close_idle(&mut map);
        }
        Ok(h)
    }

    /// Someone outside the store holds the object's handle (a read or fill
    /// in progress).
    pub(super) fn in_use(&self, oid: Oid) -> bool {
        lock(&self.inner.handles)
            .get(&oid)
            .is_some_and(|h| Arc::strong_count(h) > 1)
    }

    /// For an open object: whether it is complete and how many chunks are
    /// present, as its handle knows now (the index follows behind).
    pub(super) fn open_state(&self, oid: Oid) -> Option<(bool, u32)> {
        let h = lock(&self.inner.handles).get(&oid)?.clone();
        let st = h.lock();
        Some((st.complete, (st.present.len() - st.missing) as u32))
    }

    /// Drops the open object; whoever still holds it sees it gone.
    pub(super) fn forget_handle(&self, oid: Oid) {
        let h = lock(&self.inner.handles).remove(&oid);
        if let Some(h) = h {
            h.lock().gone = true;
            h.wake();
        }
    }

    fn load_handle(&self, oid: Oid) -> Result<Handle> {
        let mut row = self
            .inner
            .db
            .call(move |c| index::load_object(c, &oid))?
            .ok_or_else(|| {
                self.forgotten_as_changed(oid)
                    .unwrap_or(Error::UnknownObject(oid))
            })?;
        let descs: Arc<[Descriptor]> = row.chunks.iter().map(|(d, _)| *d).collect();
        if let Err(reason) = check_descriptors(row.size, &descs) {
            return Err(Error::BadDescriptors { oid, reason });
        }
        let mut lost = Vec::new();
        let mut stale = false;
        let (backing, file) = match row.referenced.take() {
            Some((path, stamp)) => {
                let path = PathBuf::from(path);
                let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
                match opened {
                    // Another stamp of the right size: served while each
                    // read verifies, until re-validated (`referenced.rs`).
                    Ok((f, m)) if m.is_file() && m.len() == row.size => {
                        stale = FileStamp::of(&m) != stamp;
                        (Backing::Referenced { path, stamp }, f)
                    }
                    opened => {
                        let e = Error::FileChanged {
                            oid,
                            gone: opened.is_err(),
                            path,
                        };
                        tracing::warn!(oid = %oid, "{e}");
                        self.remove(oid)?;
                        return Err(e);
                    }
                }
            }
            None => {
                let path = self.object_path(&oid);
                let Some(file) = self.open_owned(oid, &path, &mut row, &mut lost)? else {
                    return Err(Error::UnknownObject(oid));
                };
                (Backing::Owned { path }, file)
            }
        };
        let mut present: Vec<bool> = row.chunks.iter().map(|(_, p)| *p).collect();
        let handle = Handle {
            oid,
            size: row.size,
            descs,
            backing,
            file: Arc::new(file),
            map: OnceLock::new(),
            used: AtomicU64::new(0),
            state: Mutex::new(HandleState {
                present: Vec::new(),
                missing: 0,
                complete: row.complete,
                gone: false,
                awaited: Vec::new(),
            }),
            cv: Condvar::new(),
            whole: Mutex::new((!row.complete).then(WholeHash::new)),
            lost_at_open: Mutex::new(lost),
            stale: AtomicBool::new(stale),
            revalidating: AtomicBool::new(false),
        };
        if !row.complete {
            self.recover_written(&handle, &mut present)?;
        }
        let mut st = handle.lock();
        st.missing = present.iter().filter(|p| !**p).count();
        st.present = present;
        drop(st);
        Ok(handle)
    }

    /// Opens the store's own file of an object: read-only once complete;
    /// while it fills, read-write and grown to the object's size (sparse).
    /// A file shorter than the object first has the chunks it does not
    /// hold marked missing (`repair_short`, which makes the object
    /// incomplete; they are listed in `lost`), so growing it never makes
    /// zeros pass for chunks. A file that cannot be opened, or a complete
    /// object left with nothing, drops the object (`None`) with a log line
    /// rather than failing whoever asked; only errors of the store as a
    /// whole (no descriptors, no space, ...) are returned.
    fn open_owned(
        &self,
        oid: Oid,
        path: &Path,
        row: &mut index::ObjectRow,
        lost: &mut Vec<u32>,
    ) -> Result<Option<File>> {
        let unusable = |e: io::Error, what: &str| -> Result<Option<File>> {
            if super::recover::is_store_wide(&e) {
                return Err(Error::io("open", path, e));
            }
            if e.kind() == io::ErrorKind::NotFound {
                tracing::warn!(oid = %oid, "object file is gone; forgetting the object");
            } else {
                tracing::warn!(oid = %oid, path = %path.display(), error = %e, "cannot {what} the object file; dropping the object");
            }
            self.drop_object(oid)?;
            Ok(None)
        };
        let mut file = match open_file(path, row.complete) {
            Ok(f) => f,
            Err(e) => return unusable(e, "open"),
        };
        let len = match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return unusable(io::Error::other("not a regular file"), "use"),
            Err(e) => return unusable(e, "examine"),
        };
        if len < row.size {
            let was_complete = row.complete;
            match self.repair_short(oid, row, len)? {
                Some(l) => *lost = l,
                None => return Ok(None),
            }
            if was_complete {
                // Opened read-only as complete; it fills again now.
                file = match open_file(path, false) {
                    Ok(f) => f,
                    Err(e) => return unusable(e, "reopen"),
                };
            }
        }
        if !row.complete
            && len != row.size
            && let Err(e) = file.set_len(row.size)
        {
            // Reads then use pread, and writes extend the file.
            tracing::warn!(oid = %oid, path = %path.display(), error = %e, "cannot size the object file; it grows as chunks arrive");
        }
        Ok(Some(file))
    }
}

/// An object's file: read-only once complete; read-write (created if
/// missing, in its fan-out folder) while it fills.
fn open_file(path: &Path, complete: bool) -> io::Result<File> {
    if complete {
        return File::open(path);
    }
    if let Some(fan) = path.parent() {
        fs::create_dir_all(fan)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// `len` bytes of `file` at `offset`, read into a new buffer without
/// zeroing it first (a peer's chunk is read this way: the zeroing cost as
/// much as a tenth of a sending agent's CPU).
pub(super) fn read_exact_at(file: &std::fs::File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        let spare = buf.spare_capacity_mut();
        // SAFETY: pread writes at most `spare.len()` bytes into the spare
        // capacity, which is valid for writes of that many bytes.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                at as libc::off_t,
            )
        };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // SAFETY: pread initialised the next `n` bytes (n <= spare).
            n => unsafe { buf.set_len(buf.len() + n as usize) },
        }
    }
    Ok(buf)
}
