//! The object store: objects, their chunks, and where their bytes live.
//!
//! Every object has one row in the index and its chunk rows (descriptor +
//! a `present` flag). Its bytes live in exactly one place:
//!
//! - **owned**: one contiguous file `objects/<2 hex>/<64 hex>` in the store,
//!   written whole by a put, or sparse and filled chunk by chunk by a
//!   receiver;
//! - **referenced**: a user's file, put by descriptor without copying. The
//!   store remembers its device, inode, size and mtime and checks them (and
//!   each chunk's hash) before serving any of its bytes.
//!
//! In memory, an object in use has a [`Handle`] with its descriptors, an open
//! file and a presence bitmap; writers of chunks wake waiters through it.
//!
//! The invariant that crash safety rests on: a chunk is marked present in the
//! index only after its bytes were verified and written (and, in durable
//! mode, flushed). An object is complete only after its whole-object hash
//! matched its OID.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sha2::Digest;

use crate::bytes::Bytes;
use crate::chunker::ChunkerSpec;
use crate::db::{Db, object_exists, oid_col};
use crate::descriptor::{Descriptor, MAX_CHUNK_LEN, check_descriptors};
use crate::error::{Error, Result};
use crate::ingest::{IngestError, ingest};
use crate::oid::{ChunkHash, Oid};
use crate::ticket::Token;

/// How a store behaves. The defaults suit an agent's cache.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How new objects are cut into chunks. Default: FastCDC 16/64/256 KiB.
    pub chunker: ChunkerSpec,
    /// Bytes of owned object data to keep; unpinned objects beyond it are
    /// evicted, least recently used first. Default: no limit.
    pub budget: u64,
    /// Flush object files before the index records their chunks, and the
    /// index with `synchronous=FULL`, so a power cut loses nothing the index
    /// claims. Without it a killed process still loses nothing, and after a
    /// machine crash the next open re-verifies the objects used since the
    /// last clean [`Store::close`]. Default: on.
    pub durable: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            chunker: ChunkerSpec::default(),
            budget: u64::MAX,
            durable: true,
        }
    }
}

/// What a put produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The object's OID.
    pub oid: Oid,
    /// Its size in bytes.
    pub size: u64,
    /// How many chunks it has.
    pub chunks: u32,
    /// False when the OID came from the cache of unchanged files and no
    /// byte was hashed.
    pub hashed: bool,
}

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object.
    pub oid: Oid,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks.
    pub chunks: u32,
    /// Chunks whose verified bytes are held.
    pub present: u32,
    /// The whole-object hash was checked: every byte is here and right.
    pub complete: bool,
    /// The user's file the bytes are read from, for objects put by reference.
    pub referenced: Option<PathBuf>,
    /// Clients holding it (it is not evicted while this is above zero).
    pub pins: u32,
    /// Last use, unix seconds.
    pub last_use: i64,
}

/// What [`Store::verify`] found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Objects examined.
    pub objects: u64,
    /// Present chunks re-hashed.
    pub chunks: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Chunks whose bytes no longer match (now marked missing).
    pub damaged_chunks: Vec<(Oid, u32)>,
    /// Objects whose chunks all matched but whose whole hash did not (removed).
    pub bad_objects: Vec<Oid>,
    /// Objects whose referenced file changed or vanished (removed).
    pub changed_files: Vec<(Oid, PathBuf)>,
}

impl VerifyReport {
    /// True when nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged_chunks.is_empty()
            && self.bad_objects.is_empty()
            && self.changed_files.is_empty()
    }
}

/// The content-addressed store. Cheap to clone; all clones share one index
/// thread and one set of open objects.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    opts: StoreOptions,
    db: Db,
    handles: Mutex<HashMap<Oid, Arc<Handle>>>,
    /// Lookups so far, to order the open objects by last use.
    ticks: std::sync::atomic::AtomicU64,
    pins: Mutex<HashMap<Oid, u32>>,
}

/// Where an object's bytes are read from.
enum Backing {
    Owned { path: PathBuf },
    Referenced { path: PathBuf, stamp: FileStamp },
}

/// Identity and version of a referenced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
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

/// Objects the store keeps open (file, mapping, descriptors) before it
/// closes the least recently used idle complete ones: an agent touches far
/// more objects than it may hold files open.
const MAX_OPEN_OBJECTS: usize = 128;

/// Closes idle complete objects, least recently used first, until a
/// quarter of [`MAX_OPEN_OBJECTS`] is free. Idle: nobody holds the handle
/// but the map (handles are only cloned under the map's lock, so this
/// cannot race). Partial objects stay open: their presence lives in the
/// handle while chunks arrive.
fn close_idle(map: &mut HashMap<Oid, Arc<Handle>>) {
    let mut idle: Vec<(u64, Oid)> = map
        .iter()
        .filter(|(_, h)| Arc::strong_count(h) == 1 && h.lock().complete)
        .map(|(oid, h)| (h.used.load(std::sync::atomic::Ordering::Relaxed), *oid))
        .collect();
    idle.sort_unstable();
    let excess = map.len().saturating_sub(MAX_OPEN_OBJECTS * 3 / 4);
    for (_, oid) in idle.into_iter().take(excess) {
        map.remove(&oid);
    }
}

/// An object in use: descriptors, open file, presence.
struct Handle {
    oid: Oid,
    size: u64,
    descs: Arc<[Descriptor]>,
    backing: Backing,
    file: Arc<File>,
    /// The store's own file mapped whole, made at the first mapped read.
    map: OnceLock<Option<Arc<memmap2::Mmap>>>,
    /// When it was last looked up (the store's tick count).
    used: std::sync::atomic::AtomicU64,
    state: Mutex<HandleState>,
    cv: Condvar,
    notify: tokio::sync::Notify,
}

struct HandleState {
    present: Vec<bool>,
    missing: usize,
    complete: bool,
    /// Removed from the store; waiters must look again.
    gone: bool,
}

impl Handle {
    fn lock(&self) -> MutexGuard<'_, HandleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn desc(&self, index: u32) -> Result<Descriptor> {
        self.descs
            .get(index as usize)
            .copied()
            .ok_or(Error::NoSuchChunk {
                oid: self.oid,
                index,
            })
    }

    fn path(&self) -> &Path {
        match &self.backing {
            Backing::Owned { path } | Backing::Referenced { path, .. } => path,
        }
    }

    /// Fails with the first chunk of `chunks` not present.
    fn require_present(&self, chunks: std::ops::Range<usize>) -> Result<()> {
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
        if !matches!(self.backing, Backing::Owned { .. }) || self.size == 0 {
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

    /// Reads `len` bytes at `offset` from the backing file. For a referenced
    /// file, first checks that it is unchanged.
    fn read_raw(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if let Backing::Referenced { path, stamp } = &self.backing {
            let now = self
                .file
                .metadata()
                .map_err(|e| Error::io("stat", path, e))?;
            if FileStamp::of(&now) != *stamp {
                return Err(Error::FileChanged {
                    oid: self.oid,
                    path: path.clone(),
                });
            }
        }
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof
                    if matches!(self.backing, Backing::Referenced { .. }) =>
                {
                    Error::FileChanged {
                        oid: self.oid,
                        path: self.path().to_owned(),
                    }
                }
                _ => Error::io("read", self.path(), e),
            })?;
        Ok(buf)
    }

    /// Reads a present chunk. Bytes of referenced files are re-hashed, since
    /// a file can change without its mtime moving.
    fn read_chunk(&self, index: u32) -> Result<Vec<u8>> {
        let d = self.desc(index)?;
        if !self.lock().present[index as usize] {
            return Err(Error::ChunkMissing {
                oid: self.oid,
                index,
            });
        }
        let data = self.read_raw(d.offset, d.len as usize)?;
        if let Backing::Referenced { path, .. } = &self.backing {
            if ChunkHash::of(&data) != d.hash {
                return Err(Error::FileChanged {
                    oid: self.oid,
                    path: path.clone(),
                });
            }
        }
        Ok(data)
    }

    fn wake(&self) {
        self.cv.notify_all();
        self.notify.notify_waiters();
    }
}

/// Present while a non-durable store is open (see `check_after_unclean_stop`).
const UNCLEAN_MARKER: &str = "open.unclean";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync folder", dir, e))
}

impl Store {
    /// Opens the store in `dir`, creating it if needed. Cleans up what a
    /// killed process left: temporary files, object files the index does not
    /// know, and index rows whose owned file is gone.
    ///
    /// # Errors
    /// If the folder or index cannot be created or opened, or the index is
    /// from a newer version.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        opts.chunker
            .validate()
            .map_err(|e| Error::io("configure", dir, io::Error::other(e)))?;
        let objects_dir = dir.join("objects");
        let tmp_dir = dir.join("tmp");
        for d in [dir, &objects_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let db = Db::open(&dir.join("index.sqlite"), opts.durable)?;
        let store = Store {
            inner: Arc::new(Inner {
                objects_dir,
                tmp_dir,
                opts,
                db,
                handles: Mutex::new(HashMap::new()),
                ticks: std::sync::atomic::AtomicU64::new(0),
                pins: Mutex::new(HashMap::new()),
            }),
        };
        store.clean_up()?;
        if !store.inner.opts.durable {
            store.check_after_unclean_stop(dir)?;
        }
        Ok(store)
    }

    /// Without `durable`, written chunks are not flushed before the index
    /// records them, so a machine crash could leave recorded chunks whose
    /// bytes never reached the disk. A marker file lives while the store is
    /// open and goes at [`Store::close`]; finding it at open means the last
    /// session did not close cleanly, and every owned object used since it
    /// opened is re-verified (bad chunks are fetched again, bad objects
    /// removed). A killed process loses nothing (the page cache survives
    /// it), so this is cheap insurance: only recently used objects are read.
    fn check_after_unclean_stop(&self, dir: &Path) -> Result<()> {
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

    /// Closes cleanly: records every pending chunk, flushes the store's
    /// files to disk, and (without `durable`) removes the marker that makes
    /// the next open re-verify recently used objects.
    ///
    /// # Errors
    /// Index and I/O errors.
    pub fn close(&self) -> Result<()> {
        self.flush()?;
        let dir = self
            .inner
            .objects_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if let Ok(d) = File::open(&dir) {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs on an open descriptor has no other preconditions.
            unsafe { libc::syncfs(d.as_raw_fd()) };
        }
        if !self.inner.opts.durable {
            let marker = dir.join(UNCLEAN_MARKER);
            match fs::remove_file(&marker) {
                Ok(()) => fsync_dir(&dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &marker, e)),
            }
        }
        Ok(())
    }

    fn clean_up(&self) -> Result<()> {
        let tmp = &self.inner.tmp_dir;
        for entry in fs::read_dir(tmp)
            .map_err(|e| Error::io("list", tmp, e))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        let owned: Vec<(Oid, bool)> = self.inner.db.call(|c| {
            let mut st = c.prepare("SELECT oid, complete FROM objects WHERE backing IS NULL")?;
            let rows = st.query_map([], |r| Ok((oid_col(r, 0)?, r.get::<_, bool>(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let known: std::collections::HashSet<String> = owned.iter().map(|(o, _)| o.hex()).collect();
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

    fn object_path(&self, oid: &Oid) -> PathBuf {
        let hex = oid.hex();
        self.inner.objects_dir.join(&hex[..2]).join(hex)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    // ----- puts -----

    /// Puts the bytes of `input`, copying them into the store.
    ///
    /// # Errors
    /// [`Error::Input`] if reading fails; I/O and index errors of the store.
    pub fn put_reader(&self, input: &mut (dyn Read + Send)) -> Result<PutOutcome> {
        let chunker = self
            .inner
            .opts
            .chunker
            .build()
            .map_err(|e| Error::Input(io::Error::other(e)))?;
        let tmp_path = self.inner.tmp_dir.join(format!(
            "put-{}",
            crate::ticket::Token::random().map_err(Error::Input)?
        ));
        let mut tmp = File::create(&tmp_path).map_err(|e| Error::io("create", &tmp_path, e))?;
        let result = ingest(chunker.as_ref(), &mut |buf| input.read(buf), Some(&mut tmp));
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(match e {
                    IngestError::Input(e) => Error::Input(e),
                    IngestError::Sink(e) => Error::io("write", &tmp_path, e),
                });
            }
        };
        let outcome = hashed_outcome(&out);
        if self.is_complete(out.oid)? {
            let _ = fs::remove_file(&tmp_path);
            self.touch(out.oid)?;
            return Ok(outcome);
        }
        if self.inner.opts.durable {
            tmp.sync_all()
                .map_err(|e| Error::io("sync", &tmp_path, e))?;
        }
        drop(tmp);
        self.forget_handle(out.oid);
        let path = self.object_path(&out.oid);
        let fan = path.parent().unwrap_or(&self.inner.objects_dir).to_owned();
        fs::create_dir_all(&fan).map_err(|e| Error::io("create", &fan, e))?;
        fs::rename(&tmp_path, &path).map_err(|e| Error::io("rename into", &path, e))?;
        if self.inner.opts.durable {
            fsync_dir(&fan)?;
        }
        self.insert_complete(out.oid, out.size, out.descriptors, None)?;
        self.evict()?;
        Ok(outcome)
    }

    /// A writer whose bytes become an object when [`PutWriter::finish`] is
    /// called; hashing runs on other threads while the caller writes.
    pub fn put_writer(&self) -> PutWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<Vec<u8>>>(8);
        let store = self.clone();
        let worker = std::thread::spawn(move || {
            let mut reader = ChannelReader {
                rx,
                cur: Vec::new(),
                at: 0,
                ended: false,
            };
            store.put_reader(&mut reader)
        });
        PutWriter {
            tx: Some(tx),
            pending: Vec::with_capacity(WRITER_BATCH),
            worker: Some(worker),
        }
    }

    /// Puts the open file `file`, found at `path`, by reference: its bytes
    /// are hashed but not copied. If the same file (device, inode, size,
    /// mtime) was put before, its OID comes from the cache and nothing is
    /// hashed.
    ///
    /// # Errors
    /// [`Error::ChangedDuringPut`] if the file changes while it is hashed;
    /// read errors as [`Error::Input`]; store I/O and index errors.
    pub fn put_file(&self, file: &File, path: &Path) -> Result<PutOutcome> {
        let path = if path.is_absolute() {
            path.to_owned()
        } else {
            std::env::current_dir().map_err(Error::Input)?.join(path)
        };
        let before = FileStamp::of(&file.metadata().map_err(|e| Error::io("stat", &path, e))?);
        if let Some(outcome) = self.cached_put(before)? {
            self.touch(outcome.oid)?;
            return Ok(outcome);
        }
        let chunker = self
            .inner
            .opts
            .chunker
            .build()
            .map_err(|e| Error::Input(io::Error::other(e)))?;
        advise_sequential(file);
        let mut offset = 0u64;
        let mut fill = |buf: &mut [u8]| {
            let n = file.read_at(buf, offset)?;
            offset += n as u64;
            Ok(n)
        };
        let out = ingest(chunker.as_ref(), &mut fill, None).map_err(|e| match e {
            IngestError::Input(e) | IngestError::Sink(e) => Error::Input(e),
        })?;
        let after = FileStamp::of(&file.metadata().map_err(|e| Error::io("stat", &path, e))?);
        if after != before || out.size != before.size {
            return Err(Error::ChangedDuringPut { path });
        }
        let outcome = hashed_outcome(&out);
        if self.exists_servable(out.oid)? {
            self.remember_file(before, out.oid)?;
        } else {
            self.forget_handle(out.oid);
            self.insert_complete(out.oid, out.size, out.descriptors, Some((path, before)))?;
        }
        self.touch(out.oid)?;
        Ok(outcome)
    }

    /// Opens `path` and puts it by reference ([`Store::put_file`]).
    ///
    /// # Errors
    /// As [`Store::put_file`], plus failure to open the file.
    pub fn put_path(&self, path: &Path) -> Result<PutOutcome> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        self.put_file(&file, path)
    }

    fn cached_put(&self, stamp: FileStamp) -> Result<Option<PutOutcome>> {
        self.inner.db.call(move |c| {
            let row = c
                .query_row(
                    "SELECT f.oid, o.size, o.chunk_count FROM files f JOIN objects o ON o.oid = f.oid
                     WHERE f.dev = ?1 AND f.ino = ?2 AND f.size = ?3 AND f.mtime_ns = ?4 AND o.complete = 1",
                    params![stamp.dev as i64, stamp.ino as i64, stamp.size as i64, stamp.mtime_ns],
                    |r| Ok((oid_col(r, 0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()?;
            Ok(row.map(|(oid, size, chunks)| PutOutcome { oid, size: size as u64, chunks: chunks as u32, hashed: false }))
        })
    }

    fn remember_file(&self, stamp: FileStamp, oid: Oid) -> Result<()> {
        self.inner.db.call(move |c| upsert_file(c, stamp, &oid))
    }

    /// Records a complete object (replacing any partial one of that OID).
    fn insert_complete(
        &self,
        oid: Oid,
        size: u64,
        descs: Vec<Descriptor>,
        referenced: Option<(PathBuf, FileStamp)>,
    ) -> Result<()> {
        self.inner.db.call(move |c| {
            delete_rows(c, &oid)?;
            let (path, stamp) = match &referenced {
                Some((p, s)) => (Some(p.to_string_lossy().into_owned()), Some(*s)),
                None => (None, None),
            };
            c.execute(
                "INSERT INTO objects (oid, size, chunk_count, complete, backing, b_dev, b_ino, b_size, b_mtime_ns, last_use)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    oid.as_bytes(),
                    size as i64,
                    descs.len() as i64,
                    path,
                    stamp.map(|s| s.dev as i64),
                    stamp.map(|s| s.ino as i64),
                    stamp.map(|s| s.size as i64),
                    stamp.map(|s| s.mtime_ns),
                    now_secs()
                ],
            )?;
            insert_chunks(c, &oid, &descs, true)?;
            if let Some(s) = stamp {
                upsert_file(c, s, &oid)?;
            }
            Ok(())
        })
    }

    // ----- queries -----

    fn is_complete(&self, oid: Oid) -> Result<bool> {
        self.inner.db.call(move |c| {
            Ok(c.query_row(
                "SELECT complete FROM objects WHERE oid = ?1",
                [oid.as_bytes()],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(false))
        })
    }

    /// Complete and, if referenced, its file unchanged.
    fn exists_servable(&self, oid: Oid) -> Result<bool> {
        if !self.is_complete(oid)? {
            return Ok(false);
        }
        match self.handle(oid) {
            Ok(_) => Ok(true),
            Err(Error::FileChanged { .. } | Error::UnknownObject(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What the store knows of `oid`, or `None`.
    ///
    /// # Errors
    /// Index errors.
    pub fn info(&self, oid: Oid) -> Result<Option<ObjectInfo>> {
        let pins = self.pins(oid);
        let mut rows = self.query_info(Some(oid))?;
        Ok(rows.pop().map(|mut i| {
            i.pins = pins;
            i
        }))
    }

    /// Every object in the store, oldest use first.
    ///
    /// # Errors
    /// Index errors.
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut rows = self.query_info(None)?;
        let pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
        for r in &mut rows {
            r.pins = pins.get(&r.oid).copied().unwrap_or(0);
        }
        Ok(rows)
    }

    fn query_info(&self, oid: Option<Oid>) -> Result<Vec<ObjectInfo>> {
        self.inner.db.call(move |c| {
            let sql = "SELECT o.oid, o.size, o.chunk_count, o.complete, o.backing, o.last_use,
                              (SELECT count(*) FROM chunks c WHERE c.oid = o.oid AND c.present = 1)
                       FROM objects o WHERE (?1 IS NULL OR o.oid = ?1) ORDER BY o.last_use, o.oid";
            let mut st = c.prepare_cached(sql)?;
            let rows = st.query_map([oid.map(|o| o.0.to_vec())], |r| {
                Ok(ObjectInfo {
                    oid: oid_col(r, 0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    chunks: r.get::<_, i64>(2)? as u32,
                    complete: r.get(3)?,
                    referenced: r.get::<_, Option<String>>(4)?.map(PathBuf::from),
                    last_use: r.get(5)?,
                    present: r.get::<_, i64>(6)? as u32,
                    pins: 0,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
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
        self.handle(oid)?.read_chunk(index)
    }

    /// The bytes of chunk `index` of `oid` for a peer, which verifies every
    /// chunk it receives: a referenced file is checked against its stamp
    /// (identity, size, mtime) but not re-hashed, so serving costs no hash
    /// pass. Local readers use [`Store::read_chunk`].
    ///
    /// # Errors
    /// As [`Store::read_chunk`].
    pub fn read_chunk_for_peer(&self, oid: Oid, index: u32) -> Result<Vec<u8>> {
        let h = self.handle(oid)?;
        let d = h.desc(index)?;
        if !h.lock().present[index as usize] {
            return Err(Error::ChunkMissing { oid, index });
        }
        h.read_raw(d.offset, d.len as usize)
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
        let first = h.descs.partition_point(|d| d.end() <= offset);
        let last = h.descs.partition_point(|d| d.offset < end);
        if !matches!(h.backing, Backing::Referenced { .. }) {
            // The store's own file holds only verified chunks: one read of
            // the whole range once every chunk under it is there.
            h.require_present(first..last)?;
            return h.read_raw(offset, (end - offset) as usize);
        }
        // A referenced file may have changed: each chunk is re-checked.
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (i, d) in h.descs.iter().enumerate().take(last).skip(first) {
            let from = offset.max(d.offset);
            let to = end.min(d.end());
            let chunk = h.read_chunk(i as u32)?;
            out.extend_from_slice(&chunk[(from - d.offset) as usize..(to - d.offset) as usize]);
        }
        Ok(out)
    }

    /// As [`Store::read_at`], without copying where it can: a range of the
    /// store's own file comes as a view of the file mapped into memory.
    ///
    /// # Errors
    /// As [`Store::read_chunk`].
    pub fn read_bytes(&self, oid: Oid, offset: u64, len: usize) -> Result<Bytes> {
        let h = self.handle(oid)?;
        let end = offset.saturating_add(len as u64).min(h.size);
        let Some(map) = h.mapping().filter(|_| offset < end) else {
            return self.read_at(oid, offset, len).map(Bytes::from);
        };
        let first = h.descs.partition_point(|d| d.end() <= offset);
        let last = h.descs.partition_point(|d| d.offset < end);
        h.require_present(first..last)?;
        // Both ends are at most the object's size, which is the mapping's
        // length and fits in usize.
        Ok(Bytes::mapped(map.clone(), offset as usize, end as usize))
    }

    /// Path of the file holding `oid`'s bytes (the store's own file, or the
    /// referenced file), for serving a complete object by passthrough.
    ///
    /// # Errors
    /// As [`Store::descriptors`].
    pub fn backing_path(&self, oid: Oid) -> Result<PathBuf> {
        Ok(self.handle(oid)?.path().to_owned())
    }

    // ----- filling (the receiving side) -----

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
        if size > self.inner.opts.budget {
            return Err(Error::TooLarge {
                size,
                limit: self.inner.opts.budget,
            });
        }
        let known = self.info(oid)?;
        if let Some(info) = &known {
            let same = info.complete || self.descriptors(oid).is_ok_and(|d| d.as_ref() == descs);
            if same {
                return self.missing(oid);
            }
            tracing::info!(oid = %oid, "replacing a partial object's descriptor list");
            self.remove(oid)?;
        }
        let descs = descs.to_vec();
        self.inner.db.call(move |c| {
            c.execute(
                "INSERT INTO objects (oid, size, chunk_count, complete, last_use) VALUES (?1, ?2, ?3, 0, ?4)",
                params![oid.as_bytes(), size as i64, descs.len() as i64, now_secs()],
            )?;
            insert_chunks(c, &oid, &descs, false)?;
            Ok(())
        })?;
        self.evict()?;
        self.missing(oid)
    }

    /// Writes chunk `index` of `oid` after checking its length and hash.
    /// Returns false if the chunk was already present.
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
        if h.lock().present[index as usize] {
            return Ok(false);
        }
        let got = ChunkHash::of(data);
        if got != d.hash {
            return Err(Error::ChunkMismatch {
                oid,
                index,
                want: d.hash,
                got,
            });
        }
        self.store_verified(&h, index, data)
    }

    /// Writes bytes already verified against descriptor `index` of `h`.
    fn store_verified(&self, h: &Handle, index: u32, data: &[u8]) -> Result<bool> {
        let d = h.desc(index)?;
        if !matches!(h.backing, Backing::Owned { .. }) {
            return Ok(false);
        }
        h.file
            .write_all_at(data, d.offset)
            .map_err(|e| Error::io("write", h.path(), e))?;
        {
            let mut st = h.lock();
            if st.present[index as usize] {
                return Ok(false);
            }
            st.present[index as usize] = true;
            st.missing -= 1;
        }
        self.inner.db.mark_present(h.oid, index, h.file.clone())?;
        h.wake();
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
        Ok(h.lock().present[index as usize])
    }

    /// Copies into `oid` every missing chunk that some object in the store
    /// already holds (the cross-application cache), verifying each. Returns
    /// how many chunks were filled.
    ///
    /// # Errors
    /// As [`Store::missing`].
    pub fn fill_from_local(&self, oid: Oid) -> Result<u32> {
        let h = self.handle(oid)?;
        let wanted: Vec<(u32, ChunkHash)> = {
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
        let sources: Vec<(u32, Oid, u32)> = self.inner.db.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT oid, idx FROM chunks WHERE hash = ?1 AND present = 1 LIMIT 1",
            )?;
            let mut out = Vec::new();
            for (index, hash) in wanted {
                if let Some((src, src_idx)) = st
                    .query_row([hash.as_bytes()], |r| {
                        Ok((oid_col(r, 0)?, r.get::<_, u32>(1)?))
                    })
                    .optional()?
                {
                    out.push((index, src, src_idx));
                }
            }
            Ok(out)
        })?;
        let mut filled = 0;
        for (index, src, src_idx) in sources {
            let data = match self.handle(src).and_then(|s| s.read_chunk(src_idx)) {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(oid = %src, error = %e, "local copy of a chunk unusable");
                    continue;
                }
            };
            match self.write_chunk(oid, index, &data) {
                Ok(true) => filled += 1,
                Ok(false) => {}
                Err(e @ (Error::ChunkMismatch { .. } | Error::ChunkLength { .. })) => {
                    tracing::warn!(error = %e, "a stored chunk no longer matches its hash");
                }
                Err(e) => return Err(e),
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
            let mut st = h.lock();
            loop {
                if st.present[index as usize] {
                    return Ok(());
                }
                if st.gone {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout { oid, index });
                }
                st =
                    h.cv.wait_timeout(st, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
            }
        }
    }

    /// Waits (async) until chunk `index` of `oid` is present. Put a deadline
    /// around it with `tokio::time::timeout`.
    ///
    /// # Errors
    /// [`Error::UnknownObject`] if the object is removed.
    pub async fn wait_chunk_async(&self, oid: Oid, index: u32) -> Result<()> {
        loop {
            let h = self.handle(oid)?;
            h.desc(index)?;
            loop {
                let notified = h.notify.notified();
                {
                    let st = h.lock();
                    if st.present[index as usize] {
                        return Ok(());
                    }
                    if st.gone {
                        break;
                    }
                }
                notified.await;
            }
        }
    }

    /// Completes a filled object: checks that every chunk is present, then
    /// hashes the whole object against its OID. On a mismatch the object is
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
        let got = hash_file(&h.file, h.size).map_err(|e| Error::io("read", h.path(), e))?;
        if got != oid {
            tracing::warn!(oid = %oid, "filled object does not hash to its OID; removing it");
            self.remove(oid)?;
            return Err(Error::ObjectMismatch { oid, got });
        }
        self.inner.db.call(move |c| {
            c.execute(
                "UPDATE objects SET complete = 1, last_use = ?2 WHERE oid = ?1",
                params![oid.as_bytes(), now_secs()],
            )?;
            Ok(())
        })?;
        h.lock().complete = true;
        self.evict()?;
        Ok(())
    }

    /// Sets the access token peers must present for `oid` if it has none,
    /// and returns the token in force.
    ///
    /// # Errors
    /// [`Error::UnknownObject`]; index errors.
    pub fn ensure_token(&self, oid: Oid, token: Token) -> Result<Token> {
        self.inner.db.call(move |c| {
            c.execute(
                "UPDATE objects SET token = ?2 WHERE oid = ?1 AND token IS NULL",
                params![oid.as_bytes(), token.0],
            )?;
            match stored_token(c, &oid)?.and_then(|t| <[u8; 16]>::try_from(t).ok()) {
                Some(t) => Ok(Token(t)),
                None => Err(Error::UnknownObject(oid)),
            }
        })
    }

    /// Whether `token` is the access token of `oid`. `None` if the object is
    /// unknown or has no token. Compared in constant time.
    ///
    /// # Errors
    /// Index errors.
    pub fn check_token(&self, oid: Oid, token: Token) -> Result<Option<bool>> {
        self.inner.db.call(move |c| {
            Ok(stored_token(c, &oid)?.map(|t| {
                t.len() == 16 && t.iter().zip(token.0).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }))
        })
    }

    // ----- retention -----

    /// Holds `oid` in the store until a matching [`Store::unpin`].
    pub fn pin(&self, oid: Oid) {
        *self
            .inner
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(oid)
            .or_insert(0) += 1;
        let _ = self.touch(oid);
    }

    /// Releases one pin of `oid`; the object becomes evictable cache when the
    /// last pin goes.
    pub fn unpin(&self, oid: Oid) {
        let mut pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&oid) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&oid);
            }
        }
    }

    fn pins(&self, oid: Oid) -> u32 {
        self.inner
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&oid)
            .copied()
            .unwrap_or(0)
    }

    fn touch(&self, oid: Oid) -> Result<()> {
        self.inner.db.call(move |c| {
            c.execute(
                "UPDATE objects SET last_use = ?2 WHERE oid = ?1",
                params![oid.as_bytes(), now_secs()],
            )?;
            Ok(())
        })
    }

    /// Bytes of object data the store itself holds (referenced files do not
    /// count).
    ///
    /// # Errors
    /// Index errors.
    pub fn stored_bytes(&self) -> Result<u64> {
        self.inner.db.call(|c| {
            Ok(c.query_row(
                "SELECT coalesce(sum(size), 0) FROM objects WHERE backing IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Evicts unpinned objects, least recently used first, until the owned
    /// bytes fit the budget. Returns the evicted OIDs.
    ///
    /// # Errors
    /// I/O and index errors.
    pub fn evict(&self) -> Result<Vec<Oid>> {
        let budget = self.inner.opts.budget;
        if budget == u64::MAX {
            return Ok(Vec::new());
        }
        let mut used = self.stored_bytes()?;
        let mut evicted = Vec::new();
        if used <= budget {
            return Ok(evicted);
        }
        let candidates: Vec<(Oid, u64)> = self.inner.db.call(|c| {
            let mut st = c.prepare(
                "SELECT oid, size FROM objects WHERE backing IS NULL ORDER BY last_use, oid",
            )?;
            let rows = st.query_map([], |r| Ok((oid_col(r, 0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        for (oid, size) in candidates {
            if used <= budget {
                break;
            }
            if self.pins(oid) > 0 || self.in_use(oid) {
                continue;
            }
            tracing::info!(oid = %oid, size, "evicting");
            self.remove(oid)?;
            used = used.saturating_sub(size);
            evicted.push(oid);
        }
        Ok(evicted)
    }

    /// Someone outside the store holds the object's handle (a read or fill
    /// in progress).
    fn in_use(&self, oid: Oid) -> bool {
        self.inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&oid)
            .is_some_and(|h| Arc::strong_count(h) > 1)
    }

    /// Removes `oid`: its index rows, and its file if the store owns it.
    ///
    /// # Errors
    /// I/O and index errors.
    pub fn remove(&self, oid: Oid) -> Result<()> {
        self.forget_handle(oid);
        self.inner.db.call(move |c| delete_rows(c, &oid))?;
        let path = self.object_path(&oid);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    fn forget_handle(&self, oid: Oid) {
        let h = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&oid);
        if let Some(h) = h {
            h.lock().gone = true;
            h.wake();
        }
    }

    /// Waits until every chunk mark written so far is in the index.
    ///
    /// # Errors
    /// [`Error::Closed`] if the index thread is gone.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()
    }

    // ----- verification -----

    /// Re-hashes every present chunk and every complete object. Damaged
    /// chunks are marked missing (so they are fetched again), objects whose
    /// whole hash is wrong and referenced files that changed are removed.
    ///
    /// # Errors
    /// Index errors; I/O errors other than on the damaged data itself.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_where(|_| true)
    }

    /// [`Store::verify`] for the objects `pick` selects.
    fn verify_where(&self, pick: impl Fn(&ObjectInfo) -> bool) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for info in self.list()?.into_iter().filter(|i| pick(i)) {
            report.objects += 1;
            let h = match self.handle(info.oid) {
                Ok(h) => h,
                Err(Error::FileChanged { oid, path }) => {
                    report.changed_files.push((oid, path));
                    continue;
                }
                Err(Error::UnknownObject(_)) => continue,
                Err(e) => return Err(e),
            };
            let mut whole = sha2::Sha256::new();
            let mut damaged = Vec::new();
            for (i, d) in h.descs.iter().enumerate() {
                if !h.lock().present[i] {
                    continue;
                }
                let data = match h.read_raw(d.offset, d.len as usize) {
                    Ok(data) => data,
                    Err(Error::FileChanged { oid, path }) => {
                        report.changed_files.push((oid, path));
                        self.remove(oid)?;
                        damaged.clear();
                        break;
                    }
                    Err(e) => return Err(e),
                };
                report.chunks += 1;
                report.bytes += data.len() as u64;
                if ChunkHash::of(&data) != d.hash {
                    damaged.push(i as u32);
                }
                whole.update(&data);
            }
            if report
                .changed_files
                .last()
                .is_some_and(|(o, _)| *o == info.oid)
            {
                continue;
            }
            if let Backing::Referenced { path, .. } = &h.backing {
                if !damaged.is_empty() {
                    report.changed_files.push((info.oid, path.clone()));
                    self.remove(info.oid)?;
                    continue;
                }
            }
            if !damaged.is_empty() {
                tracing::warn!(oid = %info.oid, chunks = damaged.len(), "damaged chunks marked missing");
                self.mark_damaged(&h, &damaged)?;
                report
                    .damaged_chunks
                    .extend(damaged.iter().map(|&i| (info.oid, i)));
            } else if info.complete && Oid(whole.finalize().into()) != info.oid {
                tracing::warn!(oid = %info.oid, "object does not hash to its OID; removing it");
                self.remove(info.oid)?;
                report.bad_objects.push(info.oid);
            }
        }
        Ok(report)
    }

    /// Marks chunks missing and the object incomplete; the next use reopens
    /// it for writing, so the chunks can be fetched again.
    fn mark_damaged(&self, h: &Handle, damaged: &[u32]) -> Result<()> {
        let oid = h.oid;
        let damaged = damaged.to_vec();
        self.inner.db.call(move |c| {
            let mut st =
                c.prepare_cached("UPDATE chunks SET present = 0 WHERE oid = ?1 AND idx = ?2")?;
            for i in damaged {
                st.execute(params![oid.as_bytes(), i])?;
            }
            c.execute(
                "UPDATE objects SET complete = 0 WHERE oid = ?1",
                [oid.as_bytes()],
            )?;
            Ok(())
        })?;
        self.forget_handle(oid);
        Ok(())
    }

    // ----- handles -----

    fn handle(&self, oid: Oid) -> Result<Arc<Handle>> {
        let tick = self
            .inner
            .ticks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self
            .inner
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&oid)
        {
            h.used.store(tick, std::sync::atomic::Ordering::Relaxed);
            return Ok(h.clone());
        }
        let h = Arc::new(self.load_handle(oid)?);
        h.used.store(tick, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.inner.handles.lock().unwrap_or_else(|p| p.into_inner());
        let h = map.entry(oid).or_insert(h).clone();
        if map.len() > MAX_OPEN_OBJECTS {
            close_idle(&mut map);
        }
        Ok(h)
    }

    fn load_handle(&self, oid: Oid) -> Result<Handle> {
        type Row = (
            u64,
            bool,
            Option<String>,
            Option<FileStamp>,
            Vec<(Descriptor, bool)>,
        );
        let row: Option<Row> = self.inner.db.call(move |c| {
            let obj = c
                .query_row(
                    "SELECT size, complete, backing, b_dev, b_ino, b_size, b_mtime_ns FROM objects WHERE oid = ?1",
                    [oid.as_bytes()],
                    |r| {
                        let backing: Option<String> = r.get(2)?;
                        let stamp = match backing {
                            Some(_) => Some(FileStamp {
                                dev: r.get::<_, i64>(3)? as u64,
                                ino: r.get::<_, i64>(4)? as u64,
                                size: r.get::<_, i64>(5)? as u64,
                                mtime_ns: r.get(6)?,
                            }),
                            None => None,
                        };
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, bool>(1)?, backing, stamp))
                    },
                )
                .optional()?;
            let Some((size, complete, backing, stamp)) = obj else { return Ok(None) };
            let mut st = c.prepare_cached("SELECT hash, offset, len, present FROM chunks WHERE oid = ?1 ORDER BY idx")?;
            let chunks = st
                .query_map([oid.as_bytes()], |r| {
                    let hash: Vec<u8> = r.get(0)?;
                    let hash: [u8; 32] = hash.try_into().map_err(|_| {
                        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "chunk hash is not 32 bytes".into())
                    })?;
                    Ok((
                        Descriptor { hash: ChunkHash(hash), offset: r.get::<_, i64>(1)? as u64, len: r.get::<_, i64>(2)? as u32 },
                        r.get::<_, bool>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((size, complete, backing, stamp, chunks)))
        })?;
        let Some((size, complete, backing, stamp, chunks)) = row else {
            return Err(Error::UnknownObject(oid));
        };
        let descs: Arc<[Descriptor]> = chunks.iter().map(|(d, _)| *d).collect();
        if let Err(reason) = check_descriptors(size, &descs) {
            return Err(Error::BadDescriptors { oid, reason });
        }
        let mut present: Vec<bool> = chunks.iter().map(|(_, p)| *p).collect();
        let (backing, file) = match (backing, stamp) {
            (Some(path), Some(stamp)) => {
                let path = PathBuf::from(path);
                let opened = File::open(&path).and_then(|f| f.metadata().map(|m| (f, m)));
                match opened {
                    Ok((f, m)) if FileStamp::of(&m) == stamp => {
                        (Backing::Referenced { path, stamp }, f)
                    }
                    _ => {
                        tracing::warn!(oid = %oid, path = %path.display(), "referenced file changed or vanished; forgetting the object");
                        self.remove(oid)?;
                        return Err(Error::FileChanged { oid, path });
                    }
                }
            }
            _ => {
                let path = self.object_path(&oid);
                let file = if complete {
                    File::open(&path)
                } else {
                    if let Some(fan) = path.parent() {
                        fs::create_dir_all(fan).map_err(|e| Error::io("create", fan, e))?;
                    }
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                };
                let file = match file {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::warn!(oid = %oid, "object file is gone; forgetting the object");
                        self.remove(oid)?;
                        return Err(Error::UnknownObject(oid));
                    }
                    Err(e) => return Err(Error::io("open", &path, e)),
                };
                if !complete {
                    let len = file
                        .metadata()
                        .map_err(|e| Error::io("stat", &path, e))?
                        .len();
                    if len != size {
                        file.set_len(size)
                            .map_err(|e| Error::io("size", &path, e))?;
                    }
                }
                (Backing::Owned { path }, file)
            }
        };
        let handle = Handle {
            oid,
            size,
            descs,
            backing,
            file: Arc::new(file),
            map: OnceLock::new(),
            used: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::new(HandleState {
                present: Vec::new(),
                missing: 0,
                complete,
                gone: false,
            }),
            cv: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        };
        if !complete {
            self.recover_written(&handle, &mut present)?;
        }
        {
            let mut st = handle.lock();
            st.missing = present.iter().filter(|p| !**p).count();
            st.present = present;
        }
        Ok(handle)
    }

    /// Chunks written before a crash whose mark never reached the index:
    /// where the sparse file holds data for an unmarked chunk, hash it, and
    /// mark it if it verifies. Saves fetching them again.
    fn recover_written(&self, h: &Handle, present: &mut [bool]) -> Result<()> {
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

fn advise_sequential(file: &File) {
    // SAFETY: posix_fadvise only advises the kernel about a valid descriptor.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// SHA-256 of the first `size` bytes of `file`.
fn hash_file(file: &File, size: u64) -> io::Result<Oid> {
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    while at < size {
        let want = buf.len().min((size - at) as usize);
        file.read_exact_at(&mut buf[..want], at)?;
        h.update(&buf[..want]);
        at += want as u64;
    }
    Ok(Oid(h.finalize().into()))
}

/// The raw token column of `oid`; `None` if the object is unknown or has none.
fn stored_token(c: &Connection, oid: &Oid) -> Result<Option<Vec<u8>>> {
    let t: Option<Option<Vec<u8>>> = c
        .query_row(
            "SELECT token FROM objects WHERE oid = ?1",
            [oid.as_bytes()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(t.flatten())
}

fn insert_chunks(c: &Connection, oid: &Oid, descs: &[Descriptor], present: bool) -> Result<()> {
    let mut st = c.prepare_cached(
        "INSERT INTO chunks (oid, idx, hash, offset, len, present) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (i, d) in descs.iter().enumerate() {
        debug_assert!(d.len <= MAX_CHUNK_LEN);
        st.execute(params![
            oid.as_bytes(),
            i as i64,
            d.hash.as_bytes(),
            d.offset as i64,
            d.len,
            present
        ])?;
    }
    Ok(())
}

fn delete_rows(c: &Connection, oid: &Oid) -> Result<()> {
    if !object_exists(c, oid)? {
        return Ok(());
    }
    c.execute("DELETE FROM chunks WHERE oid = ?1", [oid.as_bytes()])?;
    c.execute("DELETE FROM files WHERE oid = ?1", [oid.as_bytes()])?;
    c.execute("DELETE FROM objects WHERE oid = ?1", [oid.as_bytes()])?;
    Ok(())
}

/// The outcome of a put that hashed its input.
fn hashed_outcome(out: &crate::ingest::Ingested) -> PutOutcome {
    PutOutcome {
        oid: out.oid,
        size: out.size,
        chunks: out.descriptors.len() as u32,
        hashed: true,
    }
}

/// Records `stamp` as a file holding `oid` (the OID cache).
fn upsert_file(c: &Connection, stamp: FileStamp, oid: &Oid) -> Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO files (dev, ino, size, mtime_ns, oid) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            stamp.dev as i64,
            stamp.ino as i64,
            stamp.size as i64,
            stamp.mtime_ns,
            oid.as_bytes()
        ],
    )?;
    Ok(())
}

/// Bytes handed to a [`Store::put_writer`] worker; `None` ends the object.
/// A channel closed without `None` means the put was abandoned.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Option<Vec<u8>>>,
    cur: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Some(v)) => {
                    self.cur = v;
                    self.at = 0;
                }
                Ok(None) => self.ended = true,
                Err(_) => return Err(io::Error::other("put abandoned before it was finished")),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes collected before they are handed to the hashing worker.
const WRITER_BATCH: usize = 1 << 20;

/// Writes an object into the store as a stream ([`Store::put_writer`]).
/// Dropping it without [`PutWriter::finish`] abandons the put: nothing is
/// stored.
pub struct PutWriter {
    tx: Option<std::sync::mpsc::SyncSender<Option<Vec<u8>>>>,
    pending: Vec<u8>,
    worker: Option<std::thread::JoinHandle<Result<PutOutcome>>>,
}

impl PutWriter {
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("put already finished"))?;
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(WRITER_BATCH));
        tx.send(Some(batch))
            .map_err(|_| io::Error::other("the put failed; finish() returns its error"))
    }

    /// Ends the object and waits for it to be stored.
    ///
    /// # Errors
    /// Whatever the put failed with.
    pub fn finish(mut self) -> Result<PutOutcome> {
        let sent = self.send_pending();
        if let Some(tx) = self.tx.take() {
            if sent.is_ok() {
                let _ = tx.send(None);
            }
        }
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(result)) => result,
            _ => Err(Error::Closed),
        }
    }
}

impl Write for PutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() + buf.len() > WRITER_BATCH {
            self.send_pending()?;
        }
        if buf.len() >= WRITER_BATCH {
            let tx = self
                .tx
                .as_ref()
                .ok_or_else(|| io::Error::other("put already finished"))?;
            tx.send(Some(buf.to_vec()))
                .map_err(|_| io::Error::other("the put failed; finish() returns its error"))?;
        } else {
            self.pending.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PutWriter {
    fn drop(&mut self) {
        // Closing the channel without the end marker makes the worker fail
        // and discard its temporary file.
        drop(self.tx.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
