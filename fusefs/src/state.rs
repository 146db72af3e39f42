//! What one mount shares between its FUSE worker threads: [`Inner`] (the
//! agent's [`Objects`], the inode table, the open file handles, the
//! passthrough backing IDs and the condition put files settle on), the
//! bookkeeping of handles and backing IDs, and the poison-tolerant [`lock`].
//! The inode table's rules are in `nodes.rs`, those of `put/` in
//! `put_dir.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use dot_store::Oid;
use fuser::{BackingId, ReplyOpen};

use crate::access::Access;
use crate::nodes::Nodes;
use crate::{MountOptions, Objects, ReadStats};

/// An open file handle.
pub(crate) struct Handle {
    pub(crate) ino: u64,
    pub(crate) writable: bool,
}

/// The state of one mount.
pub(crate) struct Inner {
    pub(crate) objects: Arc<dyn Objects>,
    pub(crate) opts: MountOptions,
    pub(crate) nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    pub(crate) next_draft: AtomicU64,
    pub(crate) passthrough: AtomicBool,
    /// Backing IDs of passthrough opens, per inode, with their open count.
    backing: Mutex<HashMap<u64, (Arc<BackingId>, u32)>>,
    /// Signalled when a put file is released or put.
    pub(crate) settled: Condvar,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Who may see what (several users on one machine).
    pub(crate) access: Access,
    /// What its object reads took.
    pub(crate) reads: Arc<ReadStats>,
}

/// Locks `m`, going on with the data of a thread that panicked holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// A mount's state before anything is looked up, its files owned by
    /// `uid`:`gid`.
    pub(crate) fn new(objects: Arc<dyn Objects>, opts: MountOptions, uid: u32, gid: u32) -> Inner {
        Inner {
            objects,
            opts,
            nodes: Mutex::new(Nodes::default()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(0),
            next_draft: AtomicU64::new(0),
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(HashMap::new()),
            settled: Condvar::new(),
            uid,
            gid,
            access: Access::new(uid),
            reads: Arc::new(ReadStats::default()),
        }
    }

    /// A new file handle number (never 0).
    pub(crate) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records handle `fh` as open on `ino`.
    pub(crate) fn add_handle(&self, fh: u64, ino: u64, writable: bool) {
        lock(&self.handles).insert(fh, Handle { ino, writable });
    }

    /// Forgets handle `fh`, returning what it was open on.
    pub(crate) fn take_handle(&self, fh: u64) -> Option<Handle> {
        lock(&self.handles).remove(&fh)
    }

    /// The backing ID for passthrough reads of `ino`, shared by its opens.
    pub(crate) fn backing_id(
        &self,
        ino: u64,
        oid: Oid,
        reply: &ReplyOpen,
    ) -> Option<Arc<BackingId>> {
        let mut backing = lock(&self.backing);
        if let Some((id, opens)) = backing.get_mut(&ino) {
            *opens += 1;
            return Some(id.clone());
        }
        let file = self.objects.backing_file(oid)?;
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

    /// A handle on `ino` was released: its backing ID goes with its last
    /// open.
    pub(crate) fn release_backing(&self, ino: u64) {
        let mut backing = lock(&self.backing);
        if let Some((_, opens)) = backing.get_mut(&ino) {
            *opens -= 1;
            if *opens == 0 {
                backing.remove(&ino);
            }
        }
    }
}
