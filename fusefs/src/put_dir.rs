//! The rules of `put/`: which names it takes, drafts (created, truncated,
//! rewritten from a put object, renamed, removed), the put of a draft when
//! its last writer is released, and the extended attributes `user.dot.oid`
//! and `user.dot.ticket` (which, for a put file, wait for its put).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dot_store::Oid;
use fuser::Errno;

use crate::nodes::{PutNode, PutState};
use crate::state::{Inner, lock};
use crate::{Meta, Objects};

const XATTR_OID: &str = "user.dot.oid";
const XATTR_TICKET: &str = "user.dot.ticket";
/// How long reading a put file's attributes waits for its last writer's
/// release.
const SETTLE: Duration = Duration::from_secs(5);

/// `name` if a file under `put/` may be called that.
pub(crate) fn valid_put_name(name: &OsStr) -> Option<&str> {
    let s = name.to_str()?;
    (!s.is_empty() && s != "." && s != ".." && !s.contains('/') && s.len() <= 255).then_some(s)
}

/// Copies the first `size` bytes of a local object into `file`.
fn copy_object(objects: &dyn Objects, oid: Oid, size: u64, file: &File) -> io::Result<()> {
    const PIECE: u64 = 4 << 20;
    let mut at = 0;
    while at < size {
        let want = PIECE.min(size - at) as u32;
        let data = objects
            .read_now(oid, None, at, want)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| io::Error::other(format!("{oid} is not held here to rewrite")))?;
        file.write_all_at(&data, at)?;
        at += data.len() as u64;
    }
    Ok(())
}

impl Inner {
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

    /// Creates the draft `name` under `put/` for `owner` (uid, gid), open
    /// for one writer, and returns its inode.
    pub(crate) fn create_put(&self, name: &str, owner: (u32, u32)) -> Result<u64, Errno> {
        // Creating over an existing name replaces it, if it is the
        // creator's (put/ is sticky).
        if let Some(old) = self.put_child(name) {
            self.may_change(old, owner.0)?;
        }
        let (path, file) = self.new_draft().map_err(Errno::from)?;
        let mut nodes = lock(&self.nodes);
        if let Some(old) = nodes.put_names.get(name).copied() {
            drop(nodes);
            self.remove_put(old);
            nodes = lock(&self.nodes);
        }
        let ino = nodes.alloc();
        nodes.put.insert(
            ino,
            PutNode {
                name: name.to_owned(),
                state: PutState::Draft { path, file },
                owner,
                size: 0,
                writers: 1,
                committing: false,
            },
        );
        nodes.put_names.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Whether `uid` may remove, rename, replace, open or read the ticket
    /// of the put file `ino`: its owner, the mount's owner and root.
    pub(crate) fn may_change(&self, ino: u64, uid: u32) -> Result<(), Errno> {
        let owner = lock(&self.nodes).put.get(&ino).map(|p| p.owner.0);
        match owner {
            None => Err(Errno::ENOENT),
            Some(o) if o == uid || self.access.privileged(uid) => Ok(()),
            Some(_) => Err(Errno::EPERM),
        }
    }

    /// Opens the put file `ino` for `uid`, for writing or not.
    pub(crate) fn open_put(
        &self,
        ino: u64,
        uid: u32,
        writing: bool,
        truncate: bool,
    ) -> Result<(), Errno> {
        self.may_change(ino, uid).map_err(|_| Errno::EACCES)?;
        let mut nodes = lock(&self.nodes);
        let Some(node) = nodes.put.get_mut(&ino) else {
            return Err(Errno::ENOENT);
        };
        if writing {
            if let PutState::Committed { oid, size, .. } = node.state {
                // Writing a put file again starts a new version: empty with
                // O_TRUNC, else a copy of the object to change or append to.
                let copy = if truncate { 0 } else { size };
                match self.new_draft().and_then(|(path, file)| {
                    copy_object(self.objects.as_ref(), oid, copy, &file)?;
                    Ok((path, file))
                }) {
                    Ok((path, file)) => {
                        node.state = PutState::Draft { path, file };
                        node.size = copy;
                    }
                    Err(e) => return Err(Errno::from(e)),
                }
            }
            node.writers += 1;
        }
        Ok(())
    }

    /// The file of `ino` if it is a draft (the only files that take
    /// writes and truncation).
    pub(crate) fn draft_file(&self, ino: u64) -> Option<Arc<File>> {
        let nodes = lock(&self.nodes);
        match nodes.put.get(&ino).map(|p| &p.state) {
            Some(PutState::Draft { file, .. }) => Some(file.clone()),
            _ => None,
        }
    }

    /// A handle open for writing on `ino` was released. True when it was
    /// the last: the draft is then to be put ([`Inner::commit`], off the
    /// FUSE threads: putting a large file takes a while).
    pub(crate) fn release_writer(&self, ino: u64) -> bool {
        let now_idle = {
            let mut nodes = lock(&self.nodes);
            match nodes.put.get_mut(&ino) {
                Some(p) => {
                    p.writers = p.writers.saturating_sub(1);
                    if p.writers == 0 && matches!(p.state, PutState::Draft { .. }) {
                        // Settling: readers of its attributes wait for it.
                        p.committing = true;
                        true
                    } else {
                        false
                    }
                }
                None => false,
            }
        };
        self.settled.notify_all();
        now_idle
    }

    /// Grows `uid`'s draft `ino` to `end` bytes if it is shorter, within
    /// the per-user limit (EDQUOT past it).
    pub(crate) fn grow_draft(&self, ino: u64, uid: u32, end: u64) -> Result<(), Errno> {
        let mut nodes = lock(&self.nodes);
        let held = nodes.draft_bytes(uid);
        let Some(p) = nodes.put.get_mut(&ino) else {
            return Err(Errno::EBADF);
        };
        if end <= p.size {
            return Ok(());
        }
        if !self.access.privileged(uid) && held - p.size + end > self.opts.put_limit {
            return Err(Errno::from_i32(libc::EDQUOT));
        }
        p.size = end;
        Ok(())
    }

    /// Sets `uid`'s draft `ino` to `size` bytes, within the per-user limit.
    pub(crate) fn resize_draft(&self, ino: u64, uid: u32, size: u64) -> Result<(), Errno> {
        self.grow_draft(ino, uid, size)?;
        if let Some(p) = lock(&self.nodes).put.get_mut(&ino) {
            p.size = size;
        }
        Ok(())
    }

    /// Puts the draft of `ino` if it is one; on success it becomes the
    /// committed object, granted to its owner.
    pub(crate) fn commit(&self, ino: u64) {
        let path = {
            let mut nodes = lock(&self.nodes);
            let Some(p) = nodes.put.get_mut(&ino) else {
                return;
            };
            match &p.state {
                PutState::Draft { path, .. } if p.writers == 0 => {
                    p.committing = true;
                    path.clone()
                }
                _ => {
                    p.committing = false;
                    return;
                }
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
                    vouched: None,
                });
                if let Some(p) = nodes.put.get_mut(&ino) {
                    p.state = PutState::Committed {
                        oid: put.oid,
                        size: put.size,
                        ticket: put.ticket,
                    };
                    self.access.grant(p.owner.0, put.oid);
                }
                drop(nodes);
                let _ = std::fs::remove_file(path);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "put of a written file failed")
            }
        }
    }

    /// The inode of `name` under `put/`.
    pub(crate) fn put_child(&self, name: &str) -> Option<u64> {
        lock(&self.nodes).put_names.get(name).copied()
    }

    /// Removes the put file `ino`, and its draft if it is one.
    pub(crate) fn remove_put(&self, ino: u64) {
        let mut nodes = lock(&self.nodes);
        if let Some(p) = nodes.put.remove(&ino) {
            nodes.put_names.remove(&p.name);
            if let PutState::Draft { path, .. } = p.state {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Renames `from` to `to` under `put/`, replacing a file called `to`.
    pub(crate) fn rename_put(&self, from: &str, to: &str) -> Result<(), Errno> {
        let Some(ino) = self.put_child(from) else {
            return Err(Errno::ENOENT);
        };
        if let Some(old) = self.put_child(to).filter(|&o| o != ino) {
            self.remove_put(old);
        }
        let mut nodes = lock(&self.nodes);
        nodes.put_names.remove(from);
        nodes.put_names.insert(to.to_owned(), ino);
        if let Some(p) = nodes.put.get_mut(&ino) {
            p.name = to.to_owned();
        }
        Ok(())
    }

    /// The OID and ticket behind `ino`, for the extended attributes. A
    /// draft is put when its last writer's release arrives, which the
    /// kernel sends after close(2) returns: wait a little for it.
    fn identity(&self, ino: u64) -> Option<(Oid, Option<String>)> {
        let deadline = std::time::Instant::now() + SETTLE;
        let mut nodes = lock(&self.nodes);
        loop {
            if nodes.slices.contains_key(&ino) {
                // A packed file has no object, hence no OID, of its own.
                return None;
            }
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

    /// The value of the extended attribute `name` of `ino` for `uid`;
    /// `None` when it has none of that name. A ticket is the right to its
    /// object: only a put file's owner reads its ticket (and the mount's
    /// owner and root, any object's).
    pub(crate) fn xattr(&self, ino: u64, uid: u32, name: Option<&str>) -> Option<String> {
        // Only our names wait for a draft to settle: the kernel asks for
        // others (security.capability) on every truncate and write.
        let name = name.filter(|n| [XATTR_OID, XATTR_TICKET].contains(n))?;
        let (oid, ticket) = self.identity(ino)?;
        match name {
            XATTR_OID => Some(oid.to_string()),
            XATTR_TICKET => {
                if self.access.privileged(uid) {
                    ticket.or_else(|| self.objects.ticket(oid))
                } else {
                    self.may_change(ino, uid).ok().and(ticket)
                }
            }
            _ => None,
        }
    }

    /// The names of the extended attributes of `ino`, each NUL-terminated.
    pub(crate) fn xattr_names(&self, ino: u64) -> Vec<u8> {
        if self.identity(ino).is_some() {
            [XATTR_OID, XATTR_TICKET]
                .iter()
                .flat_map(|n| n.bytes().chain([0]))
                .collect()
        } else {
            Vec::new()
        }
    }
}
