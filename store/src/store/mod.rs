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
//!   each chunk's hash) before serving any of its bytes; a file touched but
//!   unchanged is re-checked and served again (`referenced`).
//!
//! The invariant that crash safety rests on: a chunk is marked present in the
//! index only after its bytes were verified and written (and, in durable
//! mode, flushed). An object is complete only after its whole-object hash
//! matched its OID.
//!
//! One job per file, each an `impl Store` block or the type it needs:
//!
//! - `handle`: an object in use (descriptors, open file, mapping, presence
//!   bitmap) and the cache of open objects;
//! - `put`: puts, copied or by reference, and the OID cache of unchanged
//!   files;
//! - `read`: verified bytes out (chunks, ranges, mapped views, for peers);
//! - `referenced`: files put by reference that change afterwards (stale
//!   stamps, re-validation, forgetting a changed file);
//! - `fill`: the receiving side, chunk by chunk, up to the whole-object
//!   check;
//! - `whole_hash`: the object's SHA-256 taken over its filled prefix while
//!   chunks arrive, so the check at the end has little left to read;
//! - `retention`: pins, last use, the budget and LRU eviction, removal;
//! - `tokens`: the access tokens peers must present, derived from a secret
//!   key and the OID (none is stored);
//! - `trees`: which files a tree holds, for peers that present the tree's
//!   token;
//! - `verify`: re-hashing what is held, and marking damage;
//! - `recover`: what opening does after a crash or an unclean stop.
//!
//! The SQL is in `crate::index`, run on the index thread (`crate::db`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::chunker::ChunkerSpec;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::oid::Oid;

mod fill;
mod handle;
mod put;
mod read;
mod recover;
mod referenced;
mod retention;
mod tokens;
mod trees;
mod verify;
mod whole_hash;

pub(crate) use handle::FileStamp;
pub use put::PutWriter;
pub use verify::VerifyReport;

use handle::Handle;

/// How a store behaves. The defaults suit an agent's cache.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How new objects are cut into chunks. Default: FastCDC 16/64/256 KiB.
    pub chunker: ChunkerSpec,
    /// Bytes of owned object data to keep; unpinned objects beyond it are
    /// evicted, least recently used first. Default: no limit.
    pub budget: u64,
    /// Bytes to keep free on the store's filesystem: unpinned objects are
    /// evicted, least recently used first, to keep them (checked when an
    /// object is begun, for its size, and when one is finished or put).
    /// Default: none.
    pub min_free: u64,
    /// Flush object files before the index records their chunks, and the
    /// index with `synchronous=FULL`, so a power cut loses nothing the index
    /// claims. Without it a killed process still loses nothing, and after a
    /// machine crash the next open re-verifies the objects written since the
    /// last clean [`Store::close`] (counted in generations, one per open, not
    /// by the clock). Default: on.
    pub durable: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            chunker: ChunkerSpec::default(),
            budget: u64::MAX,
            min_free: 0,
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

/// The content-addressed store. Cheap to clone; all clones share one index
/// thread and one set of open objects.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    opts: StoreOptions,
    db: Db,
    handles: Mutex<HashMap<Oid, Arc<Handle>>>,
    /// Lookups so far, to order the open objects by last use.
    ticks: AtomicU64,
    /// Objects evicted since the store opened, and their bytes.
    evicted: [AtomicU64; 2],
    pins: Mutex<HashMap<Oid, u32>>,
    /// Objects forgotten because their referenced file changed, and how:
    /// their readers are told that rather than "unknown" (`referenced.rs`).
    changed: Mutex<HashMap<Oid, (PathBuf, bool)>>,
    /// The secret access tokens are derived from (`tokens.rs`).
    token_key: [u8; 32],
    /// The generation this open started (see `recover`).
    generation: i64,
    /// Trees recently asked about (`trees.rs`).
    trees: Mutex<trees::TreeCache>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes the store folder if missing, private (0700): the index, the
/// token key and the objects are the agent's alone. An existing folder
/// with wider permissions is narrowed, with a warning.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create", dir, e))?;
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), "the store folder was open to other users; made private (0700)");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod", dir, e))?;
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync folder", dir, e))
}

impl Store {
    /// Opens the store in `dir`, creating it if needed. Cleans up what a
    /// killed process or a power cut left: temporary files, object files the
    /// index does not know, index rows whose owned file is gone, and chunks
    /// an owned file no longer holds (marked missing, to be fetched again).
    /// After an unclean stop, re-verifies the objects written since the last
    /// clean close. A damaged object never fails the open: it is repaired or
    /// dropped, with a log line.
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
        make_private_dir(dir)?;
        for d in [&objects_dir, &tmp_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let token_key = tokens::load_or_make_key(dir)?;
        let (db, generations) = Db::open(&dir.join("index.sqlite"), opts.durable)?;
        // Tokens are derived now; none written by an older version stays.
        db.call(crate::index::forget_stored_tokens)?;
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                objects_dir,
                tmp_dir,
                opts,
                db,
                handles: Mutex::new(HashMap::new()),
                ticks: AtomicU64::new(0),
                evicted: [AtomicU64::new(0), AtomicU64::new(0)],
                pins: Mutex::new(HashMap::new()),
                changed: Mutex::new(HashMap::new()),
                token_key,
                generation: generations.current,
                trees: Mutex::default(),
            }),
        };
        store.clean_up()?;
        store.check_after_unclean_stop(generations)?;
        Ok(store)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// Waits until every chunk mark written so far is in the index.
    ///
    /// # Errors
    /// [`Error::Closed`] if the index thread is gone.
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()
    }

    fn object_path(&self, oid: &Oid) -> PathBuf {
        let hex = oid.hex();
        self.inner.objects_dir.join(&hex[..2]).join(hex)
    }
}
