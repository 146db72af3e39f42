//! The content-addressed FUSE namespace: `MOUNT/<ticket>` and `MOUNT/<oid>`
//! are read-only files whose bytes are fetched as they are read;
//! `MOUNT/put/` takes new files, put when closed.
//!
//! The filesystem knows nothing of the network: it asks an [`Objects`]
//! implementation (the agent) to resolve names, read verified bytes, hand
//! over the file of a complete object (for FUSE passthrough) and put
//! finished files. Calls that may wait on the network take a callback and
//! return at once, so FUSE worker threads never block on a peer; the
//! callback replies to the kernel from whatever thread completes it.
//!
//! Rules for `put/` (see `docs/fuse.md`): a file created there is a draft
//! until its last writer closes it; then it is put, and its OID and ticket
//! are readable as the extended attributes `user.dot.oid` and
//! `user.dot.ticket`; the object also appears as `MOUNT/<oid>`.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dot_store::{Bytes, Oid, Ticket};
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, WriteFlags,
};

/// What a name under the mount names.
#[derive(Debug, Clone)]
pub enum Name {
    /// `dot1-sha256-...`
    Oid(Oid),
    /// `dot1.<base64url>`
    Ticket(Box<Ticket>),
}

impl Name {
    /// Parses a directory entry name; `None` for anything else (answered
    /// with ENOENT at once, no network).
    pub fn parse(name: &str) -> Option<Name> {
        if name.starts_with(dot_store::oid::OID_PREFIX) {
            name.parse().ok().map(Name::Oid)
        } else if name.starts_with("dot1.") {
            name.parse().ok().map(|t| Name::Ticket(Box::new(t)))
        } else {
            None
        }
    }
}

/// An object's identity and size.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The OID.
    pub oid: Oid,
    /// Size in bytes.
    pub size: u64,
}

/// A finished put.
#[derive(Debug, Clone)]
pub struct Put {
    /// The OID.
    pub oid: Oid,
    /// Size in bytes.
    pub size: u64,
    /// The ticket.
    pub ticket: String,
}

/// Why an object operation failed.
#[derive(Debug, Clone)]
pub enum ObjError {
    /// No such object, or nobody to ask.
    NotFound,
    /// No source delivered in time.
    TimedOut,
    /// Anything else (logged by the implementation).
    Failed(String),
}

impl ObjError {
    fn errno(&self) -> Errno {
        match self {
            ObjError::NotFound => Errno::ENOENT,
            ObjError::TimedOut | ObjError::Failed(_) => Errno::EIO,
        }
    }
}

/// A callback completing an operation, from any thread.
pub type Done<T> = Box<dyn FnOnce(Result<T, ObjError>) + Send>;

/// What the filesystem needs from the agent.
pub trait Objects: Send + Sync + 'static {
    /// Resolves a ticket or OID to the object's size (which may mean asking
    /// a peer for its descriptors).
    fn resolve(&self, name: Name, done: Done<Meta>);
    /// Reads up to `len` verified bytes of `oid` at `offset` (fewer only at
    /// the end), fetching what is missing; fails after the agent's timeout.
    fn read(&self, oid: Oid, offset: u64, len: u32, done: Done<Bytes>);
    /// The same bytes if they can be had at once from local, verified
    /// chunks (no waiting); `None` sends the read the slow way.
    fn read_now(&self, oid: Oid, offset: u64, len: u32) -> Option<Bytes>;
    /// The store's own file of a complete object, for passthrough; `None`
    /// when the object is not complete or is a referenced file.
    fn backing_file(&self, oid: Oid) -> Option<File>;
    /// The complete objects held locally.
    fn list(&self) -> Vec<Meta>;
    /// Puts the finished file at `path` (local work, may block briefly).
    ///
    /// # Errors
    /// Why the put failed.
    fn put(&self, path: &Path) -> Result<Put, String>;
    /// A ticket for a local object.
    fn ticket(&self, oid: Oid) -> Option<String>;
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Where drafts of `put/` files are kept until they are put.
    pub drafts: PathBuf,
    /// Open complete objects with FUSE passthrough when the kernel can.
    pub passthrough: bool,
    /// FUSE worker threads.
    pub threads: usize,
}

const ROOT: u64 = 1;
const PUT_DIR: u64 = 2;
const FIRST_INO: u64 = 16;
/// Objects never change: the kernel may cache their entries and attributes.
const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
const DIR_TTL: Duration = Duration::from_secs(1);
const XATTR_OID: &str = "user.dot.oid";
const XATTR_TICKET: &str = "user.dot.ticket";
/// How long reading a put file's attributes waits for its last writer's
/// release.
const SETTLE: Duration = Duration::from_secs(5);

/// A file under `put/`.
struct PutNode {
    name: String,
    state: PutState,
    /// Handles open for writing.
    writers: u32,
    /// Being put right now.
    committing: bool,
}

enum PutState {
    Draft { path: PathBuf, file: Arc<File> },
    Committed { oid: Oid, size: u64, ticket: String },
}

#[derive(Default)]
struct Nodes {
    next: u64,
    by_oid: HashMap<Oid, u64>,
    objects: HashMap<u64, Meta>,
    put: HashMap<u64, PutNode>,
    put_names: BTreeMap<String, u64>,
}

impl Nodes {
    fn alloc(&mut self) -> u64 {
        if self.next < FIRST_INO {
            self.next = FIRST_INO;
        }
        self.next += 1;
        self.next
    }

    fn object(&mut self, meta: Meta) -> u64 {
        if let Some(&ino) = self.by_oid.get(&meta.oid) {
            return ino;
        }
        let ino = self.alloc();
        self.by_oid.insert(meta.oid, ino);
        self.objects.insert(ino, meta);
        ino
    }
}

/// An open file handle.
struct Handle {
    ino: u64,
    writable: bool,
}

struct Inner {
    objects: Arc<dyn Objects>,
    opts: MountOptions,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    next_draft: AtomicU64,
    passthrough: AtomicBool,
    /// Backing IDs of passthrough opens, per inode, with their open count.
    backing: Mutex<HashMap<u64, (Arc<BackingId>, u32)>>,
    /// Signalled when a put file is released or put.
    settled: std::sync::Condvar,
    uid: u32,
    gid: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn attr(&self, ino: u64, kind: FileType, size: u64, perm: u16) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 64 << 10,
            flags: 0,
        }
    }

    /// Attributes and TTL of `ino`.
    fn getattr(&self, ino: u64) -> Option<(FileAttr, Duration)> {
        match ino {
            ROOT => Some((self.attr(ROOT, FileType::Directory, 0, 0o555), DIR_TTL)),
            PUT_DIR => Some((
                self.attr(PUT_DIR, FileType::Directory, 0, 0o777),
                Duration::ZERO,
            )),
            _ => {
                let nodes = lock(&self.nodes);
                if let Some(m) = nodes.objects.get(&ino) {
                    return Some((
                        self.attr(ino, FileType::RegularFile, m.size, 0o444),
                        IMMUTABLE_TTL,
                    ));
                }
                let p = nodes.put.get(&ino)?;
                let (size, perm) = match &p.state {
                    PutState::Draft { file, .. } => {
                        (file.metadata().map(|m| m.len()).unwrap_or(0), 0o644)
                    }
                    PutState::Committed { size, .. } => (*size, 0o444),
                };
                let mut a = self.attr(ino, FileType::RegularFile, size, perm);
                a.mtime = SystemTime::now();
                Some((a, Duration::ZERO))
            }
        }
    }

    fn new_draft(&self) -> io::Result<(PathBuf, Arc<File>)> {
        std::fs::create_dir_all(&self.opts.drafts)?;
        let n = self.next_draft.fetch_add(1, Ordering::Relaxed);
        let path = self
            .opts
            .drafts
            .join(format!("{}-{n}.part", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok((path, Arc::new(file)))
    }

    /// Puts the draft of `ino` if it is one; on success it becomes the
    /// committed object.
    fn commit(&self, ino: u64) {
        let path = {
            let mut nodes = lock(&self.nodes);
            let Some(p) = nodes.put.get_mut(&ino) else {
                return;
            };
            match &p.state {
                PutState::Draft { path, .. } => {
                    p.committing = true;
                    path.clone()
                }
                PutState::Committed { .. } => return,
            }
        };
        self.commit_path(ino, &path);
        if let Some(p) = lock(&self.nodes).put.get_mut(&ino) {
            p.committing = false;
        }
        self.settled.notify_all();
    }

    fn commit_path(&self, ino: u64, path: &Path) {
        match self.objects.put(path) {
            Ok(put) => {
                let mut nodes = lock(&self.nodes);
                nodes.object(Meta {
                    oid: put.oid,
                    size: put.size,
                });
                if let Some(p) = nodes.put.get_mut(&ino) {
                    p.state = PutState::Committed {
                        oid: put.oid,
                        size: put.size,
                        ticket: put.ticket,
                    };
                }
                drop(nodes);
                let _ = std::fs::remove_file(path);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "put of a written file failed")
            }
        }
    }

    fn put_child(&self, name: &str) -> Option<u64> {
        lock(&self.nodes).put_names.get(name).copied()
    }

    fn remove_put(&self, ino: u64) {
        let mut nodes = lock(&self.nodes);
        if let Some(p) = nodes.put.remove(&ino) {
            nodes.put_names.remove(&p.name);
            if let PutState::Draft { path, .. } = p.state {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The OID and ticket behind `ino`, for the extended attributes. A
    /// draft is put when its last writer's release arrives, which the
    /// kernel sends after close(2) returns: wait a little for it.
    fn identity(&self, ino: u64) -> Option<(Oid, Option<String>)> {
        let deadline = std::time::Instant::now() + SETTLE;
        let mut nodes = lock(&self.nodes);
        loop {
            if let Some(m) = nodes.objects.get(&ino) {
                return Some((m.oid, None));
            }
            let p = nodes.put.get(&ino)?;
            match &p.state {
                PutState::Committed { oid, ticket, .. } => {
                    return Some((*oid, Some(ticket.clone())));
                }
                PutState::Draft { .. } if p.writers == 0 && !p.committing => return None,
                PutState::Draft { .. } => {}
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            nodes = self
                .settled
                .wait_timeout(nodes, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// The filesystem, as fuser drives it.
struct Fs {
    inner: Arc<Inner>,
}

fn valid_put_name(name: &OsStr) -> Option<&str> {
    let s = name.to_str()?;
    (!s.is_empty() && s != "." && s != ".." && !s.contains('/') && s.len() <= 255).then_some(s)
}

impl fuser::Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_readahead(8 << 20);
        let _ = config.set_max_background(64);
        if self.inner.opts.passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.inner.passthrough.store(true, Ordering::Relaxed);
        } else {
            tracing::info!(
                "FUSE passthrough unavailable; complete objects are read through the agent"
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = &self.inner;
        match parent.0 {
            ROOT => {
                if name == "put" {
                    if let Some((a, ttl)) = inner.getattr(PUT_DIR) {
                        reply.entry(&ttl, &a, Generation(0));
                    }
                    return;
                }
                let Some(parsed) = name.to_str().and_then(Name::parse) else {
                    reply.error(Errno::ENOENT);
                    return;
                };
                // A known OID needs no round trip.
                if let Name::Oid(oid) = &parsed {
                    let known = lock(&inner.nodes).by_oid.get(oid).copied();
                    if let Some((a, ttl)) = known.and_then(|ino| inner.getattr(ino)) {
                        reply.entry(&ttl, &a, Generation(0));
                        return;
                    }
                }
                let inner2 = self.inner.clone();
                inner.objects.resolve(
                    parsed,
                    Box::new(move |r| match r {
                        Ok(meta) => {
                            let ino = lock(&inner2.nodes).object(meta);
                            match inner2.getattr(ino) {
                                Some((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                                None => reply.error(Errno::EIO),
                            }
                        }
                        Err(e) => reply.error(e.errno()),
                    }),
                );
            }
            PUT_DIR => match name
                .to_str()
                .and_then(|n| inner.put_child(n))
                .and_then(|ino| inner.getattr(ino))
            {
                Some((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            _ => reply.error(Errno::ENOTDIR),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.getattr(ino.0) {
            Some((a, ttl)) => reply.attr(&ttl, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Modes and times are not kept (objects are bytes); a size change
        // is a truncate, allowed on drafts only.
        if let Some(size) = size {
            let file = {
                let nodes = lock(&self.inner.nodes);
                match nodes.put.get(&ino.0).map(|p| &p.state) {
                    Some(PutState::Draft { file, .. }) => Some(file.clone()),
                    _ => None,
                }
            };
            match file {
                Some(f) => {
                    if let Err(e) = f.set_len(size) {
                        reply.error(Errno::from(e));
                        return;
                    }
                }
                None => {
                    reply.error(Errno::EROFS);
                    return;
                }
            }
        }
        match self.inner.getattr(ino.0) {
            Some((a, ttl)) => reply.attr(&ttl, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let inner = &self.inner;
        let writing = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let fh = inner.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        let object = lock(&inner.nodes).objects.get(&ino.0).copied();
        if let Some(meta) = object {
            if writing {
                reply.error(Errno::EACCES);
                return;
            }
            lock(&inner.handles).insert(
                fh,
                Handle {
                    ino: ino.0,
                    writable: false,
                },
            );
            if inner.passthrough.load(Ordering::Relaxed) {
                if let Some(id) = self.backing_id(ino.0, meta.oid, &reply) {
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                    return;
                }
            }
            reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            return;
        }
        let mut nodes = lock(&inner.nodes);
        let Some(node) = nodes.put.get_mut(&ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        if writing {
            if let PutState::Committed { oid, size, .. } = node.state {
                // Writing a put file again starts a new version: empty with
                // O_TRUNC, else a copy of the object to change or append to.
                let copy = if flags.0 & libc::O_TRUNC == 0 {
                    size
                } else {
                    0
                };
                match inner.new_draft().and_then(|(path, file)| {
                    copy_object(inner.objects.as_ref(), oid, copy, &file)?;
                    Ok((path, file))
                }) {
                    Ok((path, file)) => node.state = PutState::Draft { path, file },
                    Err(e) => {
                        reply.error(Errno::from(e));
                        return;
                    }
                }
            }
            node.writers += 1;
        }
        drop(nodes);
        lock(&inner.handles).insert(
            fh,
            Handle {
                ino: ino.0,
                writable: writing,
            },
        );
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let inner = &self.inner;
        let target = {
            let nodes = lock(&inner.nodes);
            if let Some(m) = nodes.objects.get(&ino.0) {
                Ok(m.oid)
            } else {
                match nodes.put.get(&ino.0).map(|p| &p.state) {
                    Some(PutState::Committed { oid, .. }) => Ok(*oid),
                    Some(PutState::Draft { file, .. }) => Err(Some(file.clone())),
                    None => Err(None),
                }
            }
        };
        match target {
            Ok(oid) => {
                if let Some(data) = inner.objects.read_now(oid, offset, size) {
                    reply.data(&data);
                    return;
                }
                inner.objects.read(
                    oid,
                    offset,
                    size,
                    Box::new(move |r| match r {
                        Ok(data) => reply.data(&data),
                        Err(e) => reply.error(e.errno()),
                    }),
                );
            }
            Err(Some(file)) => {
                let mut buf = vec![0u8; size as usize];
                match read_full_at(&file, &mut buf, offset) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => reply.error(Errno::from(e)),
                }
            }
            Err(None) => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let file = {
            let nodes = lock(&self.inner.nodes);
            match nodes.put.get(&ino.0).map(|p| &p.state) {
                Some(PutState::Draft { file, .. }) => Some(file.clone()),
                _ => None,
            }
        };
        match file {
            Some(f) => match f.write_all_at(data, offset) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(Errno::from(e)),
            },
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let handle = lock(&self.inner.handles).remove(&fh.0);
        if let Some(h) = handle {
            if h.writable {
                let now_idle = {
                    let mut nodes = lock(&self.inner.nodes);
                    match nodes.put.get_mut(&h.ino) {
                        Some(p) => {
                            p.writers = p.writers.saturating_sub(1);
                            p.writers == 0
                        }
                        None => false,
                    }
                };
                if now_idle {
                    self.inner.commit(h.ino);
                }
                self.inner.settled.notify_all();
            }
            let mut backing = lock(&self.inner.backing);
            if let Some((_, opens)) = backing.get_mut(&ino.0) {
                *opens -= 1;
                if *opens == 0 {
                    backing.remove(&ino.0);
                }
            }
        }
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let inner = &self.inner;
        if parent.0 != PUT_DIR {
            reply.error(Errno::EROFS);
            return;
        }
        let Some(name) = valid_put_name(name) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let (path, file) = match inner.new_draft() {
            Ok(d) => d,
            Err(e) => {
                reply.error(Errno::from(e));
                return;
            }
        };
        let ino = {
            let mut nodes = lock(&inner.nodes);
            // Creating over an existing name replaces it.
            if let Some(old) = nodes.put_names.get(name).copied() {
                drop(nodes);
                inner.remove_put(old);
                nodes = lock(&inner.nodes);
            }
            let ino = nodes.alloc();
            nodes.put.insert(
                ino,
                PutNode {
                    name: name.to_owned(),
                    state: PutState::Draft { path, file },
                    writers: 1,
                    committing: false,
                },
            );
            nodes.put_names.insert(name.to_owned(), ino);
            ino
        };
        let fh = inner.next_fh.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&inner.handles).insert(
            fh,
            Handle {
                ino,
                writable: true,
            },
        );
        match inner.getattr(ino) {
            Some((a, ttl)) => reply.created(
                &ttl,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            None => reply.error(Errno::EIO),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if parent.0 != PUT_DIR {
            reply.error(Errno::EROFS);
            return;
        }
        match name.to_str().and_then(|n| self.inner.put_child(n)) {
            Some(ino) => {
                self.inner.remove_put(ino);
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if parent.0 != PUT_DIR || newparent.0 != PUT_DIR {
            reply.error(Errno::EXDEV);
            return;
        }
        let (Some(from), Some(to)) = (name.to_str(), valid_put_name(newname)) else {
            reply.error(Errno::EINVAL);
            return;
        };
        let Some(ino) = self.inner.put_child(from) else {
            reply.error(Errno::ENOENT);
            return;
        };
        if let Some(old) = self.inner.put_child(to).filter(|&o| o != ino) {
            self.inner.remove_put(old);
        }
        let mut nodes = lock(&self.inner.nodes);
        nodes.put_names.remove(from);
        nodes.put_names.insert(to.to_owned(), ino);
        if let Some(p) = nodes.put.get_mut(&ino) {
            p.name = to.to_owned();
        }
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = &self.inner;
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ROOT, FileType::Directory, "..".into()),
        ];
        match ino.0 {
            ROOT => {
                entries.push((PUT_DIR, FileType::Directory, "put".into()));
                let listed = inner.objects.list();
                let mut nodes = lock(&inner.nodes);
                for meta in listed {
                    let ino = nodes.object(meta);
                    entries.push((ino, FileType::RegularFile, meta.oid.to_string()));
                }
            }
            PUT_DIR => {
                let nodes = lock(&inner.nodes);
                for (name, &ino) in &nodes.put_names {
                    entries.push((ino, FileType::RegularFile, name.clone()));
                }
            }
            _ => {
                reply.error(Errno::ENOTDIR);
                return;
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some((oid, ticket)) = self.inner.identity(ino.0) else {
            reply.error(Errno::NO_XATTR);
            return;
        };
        let value = match name.to_str() {
            Some(XATTR_OID) => oid.to_string(),
            Some(XATTR_TICKET) => match ticket.or_else(|| self.inner.objects.ticket(oid)) {
                Some(t) => t,
                None => {
                    reply.error(Errno::NO_XATTR);
                    return;
                }
            },
            _ => {
                reply.error(Errno::NO_XATTR);
                return;
            }
        };
        xattr_reply(reply, value.as_bytes(), size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names: &[u8] = if self.inner.identity(ino.0).is_some() {
            b"user.dot.oid\0user.dot.ticket\0"
        } else {
            b""
        };
        xattr_reply(reply, names, size);
    }
}

impl Fs {
    /// The backing ID for passthrough reads of `ino`, shared by its opens.
    fn backing_id(&self, ino: u64, oid: Oid, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        let mut backing = lock(&self.inner.backing);
        if let Some((id, opens)) = backing.get_mut(&ino) {
            *opens += 1;
            return Some(id.clone());
        }
        let file = self.inner.objects.backing_file(oid)?;
        match reply.open_backing(&file) {
            Ok(id) => {
                let id = Arc::new(id);
                backing.insert(ino, (id.clone(), 1));
                Some(id)
            }
            Err(e) => {
                tracing::info!(error = %e, "passthrough refused; reading through the agent");
                None
            }
        }
    }
}

/// Copies the first `size` bytes of a local object into `file`.
fn copy_object(objects: &dyn Objects, oid: Oid, size: u64, file: &File) -> io::Result<()> {
    const PIECE: u64 = 4 << 20;
    let mut at = 0;
    while at < size {
        let want = PIECE.min(size - at) as u32;
        let data = objects
            .read_now(oid, at, want)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| io::Error::other(format!("{oid} is not held here to rewrite")))?;
        file.write_all_at(&data, at)?;
        at += data.len() as u64;
    }
    Ok(())
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A mounted namespace; lazily unmounted on drop.
pub struct Mount {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Detach even with files open: their readers get errors, the store
        // is untouched. The session thread ends when the kernel lets go.
        detach(&self.dir);
        drop(self.session.take());
    }
}

fn detach(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// The kernel reads ahead on a FUSE mount only as far as its backing-device
/// setting allows (128 KiB by default), whatever the filesystem asks for at
/// init; raise it so sequential readers keep more reads in flight. (Two
/// hand-timed pairs of cold 1 GiB `cat`s went 4.41 -> 3.35 s and
/// 3.49 -> 2.56 s; `bench/fuse.sh` right after showed no gain beyond its
/// noise: 0.66x vs 0.69x of `gtc get`.) Needs root; a failure only leaves
/// the default.
fn raise_readahead(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, (KERNEL_READAHEAD_KB).to_string()) {
        tracing::debug!(knob, error = %e, "cannot raise the mount's readahead");
    }
}

/// Readahead asked of the kernel for the mount, in KiB.
pub const KERNEL_READAHEAD_KB: u64 = 8 << 10;

/// Whether `dir` is a mount point in the mount table (mountinfo escapes
/// spaces and friends as octal).
fn is_mount_point(dir: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy().replace(' ', "\\040");
    table
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == want))
}

/// Mounts the namespace at `dir` (created if missing), replacing a stale
/// mount a killed agent left there.
///
/// # Errors
/// If `dir` cannot be created or the mount fails (no /dev/fuse, no
/// permission).
pub fn mount(objects: Arc<dyn Objects>, dir: &Path, opts: MountOptions) -> io::Result<Mount> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        // A dead FUSE mount answers ENOTCONN to everything.
        if e.raw_os_error() != Some(libc::ENOTCONN) && e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    if is_mount_point(&dir) {
        // A dead FUSE server's mount answers ENOTCONN to whatever reaches
        // the server (a stat may be answered from the kernel's cache).
        match std::fs::read_dir(&dir) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                tracing::info!(dir = %dir.display(), "replacing a stale mount");
                detach(&dir);
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "something live is mounted on {} (another agent?)",
                        dir.display()
                    ),
                ));
            }
        }
    }
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let threads = opts.threads.max(1);
    let fs = Fs {
        inner: Arc::new(Inner {
            objects,
            opts,
            nodes: Mutex::new(Nodes::default()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(0),
            next_draft: AtomicU64::new(0),
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(HashMap::new()),
            settled: std::sync::Condvar::new(),
            uid,
            gid,
        }),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("dot".into()),
        fuser::MountOption::Subtype("dot".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    if uid == 0 {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(threads);
    config.clone_fd = true;
    let session = fuser::spawn_mount2(fs, &dir, &config)?;
    raise_readahead(&dir);
    Ok(Mount {
        dir,
        session: Some(session),
    })
}
