//! The filesystem as fuser drives it: [`Fs`] implements
//! [`fuser::Filesystem`], answering each kernel request from the inode
//! table (`nodes.rs`), the rules of `put/` (`put_dir.rs`) and the agent's
//! [`Objects`](crate::Objects), replying at once or from the callback of a
//! call that waits.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, WriteFlags,
};

use crate::nodes::{PUT_DIR, PUT_NAME, PutState, ROOT};
use crate::put_dir::valid_put_name;
use crate::state::{Inner, lock};
use crate::tree_dir::Tree;
use crate::{KERNEL_READAHEAD_KB, Name};

/// The filesystem, as fuser drives it.
pub(crate) struct Fs {
    pub(crate) inner: Arc<Inner>,
    /// Drafts whose last writer closed, for the committer thread (see
    /// `mount.rs`): a put never runs on a FUSE thread.
    pub(crate) commits: std::sync::mpsc::Sender<u64>,
}

impl fuser::Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_readahead((KERNEL_READAHEAD_KB << 10) as u32);
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

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = &self.inner;
        let uid = req.uid();
        match parent.0 {
            ROOT => {
                if name == PUT_NAME {
                    if let Some((a, ttl)) = inner.getattr(PUT_DIR) {
                        reply.entry(&ttl, &a, Generation(0));
                    }
                    return;
                }
                let Some(parsed) = name.to_str().and_then(Name::parse) else {
                    reply.error(Errno::ENOENT);
                    return;
                };
                // Object names are not cached by the kernel (TTL 0): every
                // user's lookup comes here, to the access rule.
                if let Name::Oid(oid) = &parsed {
                    if !inner.access.may_read(uid, *oid) {
                        reply.error(Errno::ENOENT);
                        return;
                    }
                    // A known OID needs no round trip.
                    let known = lock(&inner.nodes).by_name.get(&(*oid, None)).copied();
                    if let Some((a, _)) = known.and_then(|ino| inner.getattr(ino)) {
                        reply.entry(&Duration::ZERO, &a, Generation(0));
                        return;
                    }
                }
                if let Name::Ticket(t) = &parsed
                    && t.is_tree()
                {
                    let ticket = (**t).clone();
                    self.lookup_tree(uid, ticket, reply);
                    return;
                }
                let inner2 = self.inner.clone();
                inner.objects.resolve(
                    parsed,
                    Box::new(move |r| match r {
                        Ok(meta) => {
                            // Who looks a ticket up holds it.
                            inner2.access.grant(uid, meta.oid);
                            let ino = lock(&inner2.nodes).object(meta);
                            match inner2.getattr(ino) {
                                Some((a, _)) => reply.entry(&Duration::ZERO, &a, Generation(0)),
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
            other => match inner.tree_item(other) {
                Some(dir) if inner.access.may_read(uid, dir.tree.ticket.oid()) => {
                    let found = lock(&inner.nodes).tree_lookup(&dir, name.as_bytes());
                    let Some(ino) = found else {
                        reply.error(Errno::ENOENT);
                        return;
                    };
                    if let Some((oid, _)) = inner.tree_item(ino).and_then(|i| i.member()) {
                        // Who may enter the tree may read its files.
                        inner.access.grant(uid, oid);
                    }
                    match inner.getattr(ino) {
                        Some((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                        None => reply.error(Errno::EIO),
                    }
                }
                Some(_) => reply.error(Errno::EACCES),
                None => reply.error(Errno::ENOTDIR),
            },
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .inner
            .tree_item(ino.0)
            .as_ref()
            .and_then(|i| i.link_target())
        {
            Some(target) => reply.data(target),
            None => reply.error(Errno::EINVAL),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(ino, reply);
    }

    fn setattr(
        &self,
        req: &Request,
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
            match self.inner.draft_file(ino.0) {
                Some(f) => {
                    if let Err(e) = self.inner.resize_draft(ino.0, req.uid(), size) {
                        reply.error(e);
                        return;
                    }
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
        self.reply_attr(ino, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let inner = &self.inner;
        let writing = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let fh = inner.next_fh();
        let object = lock(&inner.nodes).objects.get(&ino.0).copied();
        if let Some(meta) = object {
            if writing || !inner.access.may_read(req.uid(), meta.oid) {
                reply.error(Errno::EACCES);
                return;
            }
            match inner.tree_item(ino.0).and_then(|i| i.member()) {
                // A tree's file is fetched by its own ticket: resolved
                // (described by a source) before its first read, unless
                // its object is here whole.
                Some((oid, ticket)) if !inner.objects.known_whole(oid) => {
                    let inner2 = self.inner.clone();
                    inner.objects.resolve(
                        Name::Ticket(Box::new(ticket)),
                        Box::new(move |r| match r {
                            Ok(_) => open_object(&inner2, ino.0, meta.oid, fh, reply),
                            Err(e) => reply.error(e.errno()),
                        }),
                    );
                }
                _ => open_object(inner, ino.0, meta.oid, fh, reply),
            }
            return;
        }
        let truncate = flags.0 & libc::O_TRUNC != 0;
        if let Err(e) = inner.open_put(ino.0, req.uid(), writing, truncate) {
            reply.error(e);
            return;
        }
        inner.add_handle(fh, ino.0, writing);
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
        let (mut offset, mut size) = (offset, size);
        let target = {
            let nodes = lock(&inner.nodes);
            if let Some(m) = nodes.objects.get(&ino.0) {
                // A range of its object: read within the range.
                if let Some(&base) = nodes.slices.get(&ino.0) {
                    let left = m.size.saturating_sub(offset);
                    size = size.min(u32::try_from(left).unwrap_or(u32::MAX));
                    if size == 0 {
                        reply.data(&[]);
                        return;
                    }
                    offset += base;
                }
                Ok((m.oid, m.vouched))
            } else {
                match nodes.put.get(&ino.0).map(|p| &p.state) {
                    Some(PutState::Committed { oid, .. }) => Ok((*oid, None)),
                    Some(PutState::Draft { file, .. }) => Err(Some(file.clone())),
                    None => Err(None),
                }
            }
        };
        let began = std::time::Instant::now();
        match target {
            Ok((oid, vouched)) => {
                if let Some(data) = inner.objects.read_now(oid, vouched, offset, size) {
                    inner.reads.record(began.elapsed(), Some(data.len()));
                    reply.data(&data);
                    return;
                }
                let reads = inner.reads.clone();
                inner.objects.read(
                    oid,
                    vouched,
                    offset,
                    size,
                    Box::new(move |r| match r {
                        Ok(data) => {
                            reads.record(began.elapsed(), Some(data.len()));
                            reply.data(&data);
                        }
                        Err(e) => {
                            reads.record(began.elapsed(), None);
                            reply.error(e.errno());
                        }
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
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(f) = self.inner.draft_file(ino.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let end = offset.saturating_add(data.len() as u64);
        if let Err(e) = self.inner.grow_draft(ino.0, req.uid(), end) {
            reply.error(e);
            return;
        }
        match f.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(Errno::from(e)),
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
        if let Some(h) = self.inner.take_handle(fh.0) {
            if h.writable && self.inner.release_writer(h.ino) {
                let _ = self.commits.send(h.ino);
            }
            self.inner.release_backing(ino.0);
        }
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
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
        let ino = match inner.create_put(name, (req.uid(), req.gid())) {
            Ok(ino) => ino,
            Err(e) => {
                reply.error(e);
                return;
            }
        };
        let fh = inner.next_fh();
        inner.add_handle(fh, ino, true);
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

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if parent.0 != PUT_DIR {
            reply.error(Errno::EROFS);
            return;
        }
        match name.to_str().and_then(|n| self.inner.put_child(n)) {
            Some(ino) => match self.inner.may_change(ino, req.uid()) {
                Ok(()) => {
                    self.inner.remove_put(ino);
                    reply.ok();
                }
                Err(e) => reply.error(e),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn rename(
        &self,
        req: &Request,
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
        for ino in [from, to]
            .into_iter()
            .filter_map(|n| self.inner.put_child(n))
        {
            if let Err(e) = self.inner.may_change(ino, req.uid()) {
                reply.error(e);
                return;
            }
        }
        match self.inner.rename_put(from, to) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = &self.inner;
        let mut entries: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ROOT, FileType::Directory, "..".into()),
        ];
        match ino.0 {
            ROOT => {
                entries.push((PUT_DIR, FileType::Directory, PUT_NAME.into()));
                // Trees met, by their tickets (the names they were found by).
                for item in lock(&inner.nodes)
                    .tree_items
                    .values()
                    .filter(|i| i.entry.is_none())
                {
                    if inner.access.may_read(req.uid(), item.tree.ticket.oid()) {
                        entries.push((
                            item.root,
                            FileType::Directory,
                            item.tree.ticket.to_string().into(),
                        ));
                    }
                }
                let uid = req.uid();
                let listed = inner.objects.list();
                let mut nodes = lock(&inner.nodes);
                for meta in listed
                    .into_iter()
                    .filter(|m| inner.access.may_read(uid, m.oid))
                {
                    let ino = nodes.object(meta);
                    entries.push((ino, FileType::RegularFile, meta.oid.to_string().into()));
                }
            }
            PUT_DIR => {
                let nodes = lock(&inner.nodes);
                for (name, &ino) in &nodes.put_names {
                    entries.push((ino, FileType::RegularFile, name.into()));
                }
            }
            other => match inner.tree_item(other) {
                Some(dir) if inner.access.may_read(req.uid(), dir.tree.ticket.oid()) => {
                    let listed = lock(&inner.nodes).tree_list(&dir);
                    for (ino, kind, name) in listed {
                        entries.push((ino, kind, OsStr::from_bytes(&name).to_owned()));
                    }
                }
                Some(_) => {
                    reply.error(Errno::EACCES);
                    return;
                }
                None => {
                    reply.error(Errno::ENOTDIR);
                    return;
                }
            },
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.inner.xattr(ino.0, req.uid(), name.to_str()) {
            Some(value) => xattr_reply(reply, value.as_bytes(), size),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, &self.inner.xattr_names(ino.0), size);
    }
}

/// Opens object `ino` for reading: by passthrough when its file is
/// complete here, else through the agent.
fn open_object(inner: &Inner, ino: u64, oid: dot_store::Oid, fh: u64, reply: ReplyOpen) {
    inner.add_handle(fh, ino, false);
    // A range of an object cannot be its backing file.
    let whole = !lock(&inner.nodes).slices.contains_key(&ino);
    if whole
        && inner.passthrough.load(Ordering::Relaxed)
        && let Some(id) = inner.backing_id(ino, oid, &reply)
    {
        inner.reads.passthrough_open();
        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
        return;
    }
    reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
}

impl Fs {
    /// Looks up a tree's ticket in the root: its manifest is fetched whole
    /// and checked, and the tree becomes a folder.
    fn lookup_tree(&self, uid: u32, ticket: dot_store::Ticket, reply: ReplyEntry) {
        let met = lock(&self.inner.nodes)
            .tree_roots
            .get(&(ticket.oid(), ticket.list_digest()))
            .copied();
        if let Some((a, _)) = met.and_then(|ino| self.inner.getattr(ino)) {
            self.inner.access.grant(uid, ticket.oid());
            reply.entry(&Duration::ZERO, &a, Generation(0));
            return;
        }
        let inner = self.inner.clone();
        let t = ticket.clone();
        self.inner.objects.tree(
            ticket,
            Box::new(move |r| match r {
                Ok((meta, manifest)) => {
                    inner.access.grant(uid, meta.oid);
                    let ino = lock(&inner.nodes).tree_root(
                        meta.oid,
                        meta.vouched,
                        Tree::new(t, manifest),
                    );
                    match inner.getattr(ino) {
                        Some((a, _)) => reply.entry(&Duration::ZERO, &a, Generation(0)),
                        None => reply.error(Errno::EIO),
                    }
                }
                Err(e) => reply.error(e.errno()),
            }),
        );
    }

    /// Answers with the attributes of `ino`, or ENOENT.
    fn reply_attr(&self, ino: INodeNo, reply: ReplyAttr) {
        match self.inner.getattr(ino.0) {
            Some((a, ttl)) => reply.attr(&ttl, &a),
            None => reply.error(Errno::ENOENT),
        }
    }
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
