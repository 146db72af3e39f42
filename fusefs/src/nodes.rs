//! The inode table: the fixed inodes (the root and `put/`), one inode per
//! object met ([`Nodes`]), the files under `put/` ([`PutNode`], draft or
//! put), the inodes of trees (their rules in `tree_dir.rs`), and the
//! attributes and cache lifetimes the kernel is given for each.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dot_store::Oid;
use fuser::{FileAttr, FileType, INodeNo};

use crate::state::{Inner, lock};
use crate::tree_dir::{TREE_TTL, TreeItem};
use crate::{Meta, Vouched};

pub(crate) const ROOT: u64 = 1;
pub(crate) const PUT_DIR: u64 = 2;
/// The name of [`PUT_DIR`] in the root.
pub(crate) const PUT_NAME: &str = "put";
const FIRST_INO: u64 = 16;
/// Objects never change: the kernel may cache their attributes. (Not
/// their names: each user's lookup must reach the access rule; see
/// `access.rs`.)
const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
const DIR_TTL: Duration = Duration::from_secs(1);

/// A file under `put/`.
pub(crate) struct PutNode {
    pub(crate) name: String,
    pub(crate) state: PutState,
    /// Who created it: only they (and root) read, write, remove, rename
    /// or replace it.
    pub(crate) owner: (u32, u32),
    /// Its size as written so far (a draft's, for the per-user limit).
    pub(crate) size: u64,
    /// Handles open for writing.
    pub(crate) writers: u32,
    /// Being put right now.
    pub(crate) committing: bool,
}

pub(crate) enum PutState {
    Draft { path: PathBuf, file: Arc<File> },
    Committed { oid: Oid, size: u64, ticket: String },
}

#[derive(Default)]
pub(crate) struct Nodes {
    next: u64,
    /// Object files by what names them: the OID and the list its name
    /// vouches for.
    pub(crate) by_name: HashMap<(Oid, Vouched), u64>,
    pub(crate) objects: HashMap<u64, Meta>,
    /// Files that are a range of their object (a tree's packed files):
    /// where the range starts. Their `Meta` gives the range's size.
    pub(crate) slices: HashMap<u64, u64>,
    pub(crate) put: HashMap<u64, PutNode>,
    pub(crate) put_names: BTreeMap<String, u64>,
    /// Trees met, by their manifest's OID and vouched list: the root's
    /// inode (`tree_dir.rs`).
    pub(crate) tree_roots: HashMap<(Oid, Vouched), u64>,
    /// Every inode inside a tree (its root, folders, files, links).
    pub(crate) tree_items: HashMap<u64, TreeItem>,
    /// Entries' inodes by (their tree's root inode, entry index).
    pub(crate) tree_inos: HashMap<(u64, usize), u64>,
}

impl Nodes {
    /// Bytes of drafts `uid` holds under `put/`.
    pub(crate) fn draft_bytes(&self, uid: u32) -> u64 {
        self.put
            .values()
            .filter(|p| p.owner.0 == uid && matches!(p.state, PutState::Draft { .. }))
            .map(|p| p.size)
            .sum()
    }

    pub(crate) fn alloc(&mut self) -> u64 {
        if self.next < FIRST_INO {
            self.next = FIRST_INO;
        }
        self.next += 1;
        self.next
    }

    pub(crate) fn object(&mut self, meta: Meta) -> u64 {
        if let Some(&ino) = self.by_name.get(&(meta.oid, meta.vouched)) {
            return ino;
        }
        let ino = self.alloc();
        self.by_name.insert((meta.oid, meta.vouched), ino);
        self.objects.insert(ino, meta);
        ino
    }
}

impl Inner {
    fn attr(&self, ino: u64, kind: FileType, size: u64, perm: u16) -> FileAttr {
        self.attr_at(ino, kind, size, perm, UNIX_EPOCH)
    }

    /// Attributes of an inode the mount's owner owns, all its times `t`.
    pub(crate) fn attr_at(
        &self,
        ino: u64,
        kind: FileType,
        size: u64,
        perm: u16,
        t: std::time::SystemTime,
    ) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
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
    pub(crate) fn getattr(&self, ino: u64) -> Option<(FileAttr, Duration)> {
        match ino {
            ROOT => Some((self.attr(ROOT, FileType::Directory, 0, 0o555), DIR_TTL)),
            PUT_DIR => Some((
                self.attr(PUT_DIR, FileType::Directory, 0, 0o1777),
                Duration::ZERO,
            )),
            _ => {
                let nodes = lock(&self.nodes);
                if let Some(item) = nodes.tree_items.get(&ino) {
                    return Some((self.tree_attr(ino, item), TREE_TTL));
                }
                if let Some(m) = nodes.objects.get(&ino) {
                    return Some((
                        self.attr(ino, FileType::RegularFile, m.size, 0o444),
                        IMMUTABLE_TTL,
                    ));
                }
                let p = nodes.put.get(&ino)?;
                let (size, perm) = match &p.state {
                    PutState::Draft { file, .. } => {
                        (file.metadata().map(|m| m.len()).unwrap_or(0), 0o600)
                    }
                    PutState::Committed { size, .. } => (*size, 0o600),
                };
                let mut a = self.attr(ino, FileType::RegularFile, size, perm);
                (a.uid, a.gid) = p.owner;
                a.mtime = SystemTime::now();
                Some((a, Duration::ZERO))
            }
        }
    }
}
