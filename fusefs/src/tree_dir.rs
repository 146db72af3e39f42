//! Trees under the mount: `MOUNT/<tree ticket>/` is a read-only folder
//! holding the tree's entries, listed from its manifest alone (fetched
//! whole and checked once, at the first lookup of the ticket); each file's
//! bytes are fetched only when it is opened and read, as the file's own
//! ticket (the tree's token, naming the tree) with the tree's hints, and
//! verified as any object's. A packed file is its range of the tree's
//! pack, read through the pack's ticket (and never passed through).
//!
//! Entries show their recorded permission bits without write bits, their
//! recorded mtimes, and belong to the mount's owner. A user other than the
//! owner and root enters a tree only after looking its ticket up (holding
//! it is the right to it), and reads its files as their recorded bits
//! allow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use dot_store::tree::{Kind, Manifest, Mtime};
use dot_store::{Oid, Ticket};
use fuser::{FileAttr, FileType};

use crate::nodes::Nodes;
use crate::state::{Inner, lock};
use crate::{Meta, Vouched};

/// A tree never changes: the kernel may cache its entries and attributes.
pub(crate) const TREE_TTL: Duration = Duration::from_secs(24 * 3600);

/// A tree met under the mount: its ticket, manifest, and each folder's
/// entries.
pub(crate) struct Tree {
    pub(crate) ticket: Ticket,
    pub(crate) manifest: Manifest,
    /// Entry indexes by the path of the folder holding them (`b""`: the
    /// tree's root).
    children: HashMap<Vec<u8>, Vec<usize>>,
}

impl Tree {
    pub(crate) fn new(ticket: Ticket, manifest: Manifest) -> Tree {
        let mut children: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (i, e) in manifest.entries().iter().enumerate() {
            children.entry(e.parent().to_vec()).or_default().push(i);
        }
        Tree {
            ticket,
            manifest,
            children,
        }
    }

    fn path(&self, entry: Option<usize>) -> &[u8] {
        entry.map_or(&[], |i| &self.manifest.entries()[i].path)
    }
}

/// An inode inside a tree: its root (`entry` none) or one of its entries.
#[derive(Clone)]
pub(crate) struct TreeItem {
    pub(crate) tree: Arc<Tree>,
    pub(crate) root: u64,
    pub(crate) entry: Option<usize>,
}

impl TreeItem {
    /// For a file: the OID of the object holding it (its own, or the
    /// pack) and the ticket a reader fetches that by.
    pub(crate) fn member(&self) -> Option<(Oid, Ticket)> {
        let e = &self.tree.manifest.entries()[self.entry?];
        let (oid, list_digest) = match e.kind {
            Kind::File {
                oid, list_digest, ..
            } => (oid, list_digest),
            Kind::Packed { .. } => {
                let p = self.tree.manifest.pack?;
                (p.oid, p.list_digest)
            }
            _ => return None,
        };
        Some((oid, self.tree.ticket.member(oid, list_digest)))
    }

    /// The link's target, for a link.
    pub(crate) fn link_target(&self) -> Option<&[u8]> {
        match &self.tree.manifest.entries()[self.entry?].kind {
            Kind::Symlink { target } => Some(target),
            _ => None,
        }
    }
}

impl Nodes {
    /// The inode of the tree `oid` (found by a name vouching for
    /// `vouched`), made from `tree` when first met.
    pub(crate) fn tree_root(&mut self, oid: Oid, vouched: Vouched, tree: Tree) -> u64 {
        if let Some(&ino) = self.tree_roots.get(&(oid, vouched)) {
            return ino;
        }
        let ino = self.alloc();
        self.tree_roots.insert((oid, vouched), ino);
        self.tree_items.insert(
            ino,
            TreeItem {
                tree: Arc::new(tree),
                root: ino,
                entry: None,
            },
        );
        ino
    }

    /// The inode of entry `entry` of the tree at `parent`'s root.
    fn tree_entry(&mut self, parent: &TreeItem, entry: usize) -> u64 {
        if let Some(&ino) = self.tree_inos.get(&(parent.root, entry)) {
            return ino;
        }
        let ino = self.alloc();
        self.tree_inos.insert((parent.root, entry), ino);
        let e = &parent.tree.manifest.entries()[entry];
        // Read as any object found by a ticket vouching for its list.
        match (e.kind.clone(), parent.tree.manifest.pack) {
            (
                Kind::File {
                    size,
                    oid,
                    list_digest,
                },
                _,
            ) => {
                let vouched = Some(list_digest);
                self.objects.insert(ino, Meta { oid, size, vouched });
            }
            (Kind::Packed { size, offset }, Some(pack)) => {
                let vouched = Some(pack.list_digest);
                let oid = pack.oid;
                self.objects.insert(ino, Meta { oid, size, vouched });
                self.slices.insert(ino, offset);
            }
            _ => {}
        }
        self.tree_items.insert(
            ino,
            TreeItem {
                tree: parent.tree.clone(),
                root: parent.root,
                entry: Some(entry),
            },
        );
        ino
    }

    /// The child called `name` of the tree folder `dir`.
    pub(crate) fn tree_lookup(&mut self, dir: &TreeItem, name: &[u8]) -> Option<u64> {
        let here = dir.tree.path(dir.entry);
        // Siblings are in path order, which is their names' order.
        let kids = dir.tree.children.get(here)?;
        let at = kids
            .binary_search_by(|&i| dir.tree.manifest.entries()[i].name().cmp(name))
            .ok()?;
        Some(self.tree_entry(dir, kids[at]))
    }

    /// The children of the tree folder `dir`: inode, kind, name.
    pub(crate) fn tree_list(&mut self, dir: &TreeItem) -> Vec<(u64, FileType, Vec<u8>)> {
        let here = dir.tree.path(dir.entry).to_vec();
        let kids = dir.tree.children.get(&here).cloned().unwrap_or_default();
        kids.into_iter()
            .map(|i| {
                let ino = self.tree_entry(dir, i);
                let e = &dir.tree.manifest.entries()[i];
                (ino, file_type(&e.kind), e.name().to_vec())
            })
            .collect()
    }
}

fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File { .. } | Kind::Packed { .. } => FileType::RegularFile,
        Kind::Symlink { .. } => FileType::Symlink,
    }
}

fn time(t: Mtime) -> std::time::SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nanos))
    }
}

impl Inner {
    /// Attributes of a tree's inode.
    pub(crate) fn tree_attr(&self, ino: u64, item: &TreeItem) -> FileAttr {
        let m = &item.tree.manifest;
        let (kind, size, mode, mtime) = match item.entry {
            None => (FileType::Directory, 0, m.root_mode, m.root_mtime),
            Some(i) => {
                let e = &m.entries()[i];
                let size = match &e.kind {
                    Kind::File { size, .. } | Kind::Packed { size, .. } => *size,
                    Kind::Symlink { target } => target.len() as u64,
                    Kind::Dir => 0,
                };
                (file_type(&e.kind), size, e.mode, e.mtime)
            }
        };
        let perm = if kind == FileType::Symlink {
            0o777
        } else {
            mode & 0o555
        };
        self.attr_at(ino, kind, size, perm, time(mtime))
    }

    /// The tree item of `ino`, if it is one.
    pub(crate) fn tree_item(&self, ino: u64) -> Option<TreeItem> {
        lock(&self.nodes).tree_items.get(&ino).cloned()
    }
}
