//! Mounting and unmounting: [`mount()`] (with the replacement of a stale
//! mount a killed agent left, and the raise of the kernel's readahead for
//! the mount), [`MountOptions`], and [`Mount`], which detaches the mount
//! when dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Objects;
use crate::fs::Fs;
use crate::state::Inner;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Where drafts of `put/` files are kept until they are put.
    pub drafts: PathBuf,
    /// Open complete objects with FUSE passthrough when the kernel can.
    pub passthrough: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Bytes of drafts under `put/` one user (other than the owner and
    /// root) may hold at once; writes past it fail with EDQUOT.
    pub put_limit: u64,
}

/// A mounted namespace; lazily unmounted on drop.
pub struct Mount {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
    /// Puts the drafts whose last writer closed, until it reads [`STOP`].
    committer: Option<std::thread::JoinHandle<()>>,
    /// The committer's queue (the session holds another sender).
    commits: std::sync::mpsc::Sender<u64>,
    reads: Arc<crate::ReadStats>,
}

/// Ends the committer (no inode has this number).
const STOP: u64 = u64::MAX;

impl Mount {
    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What its object reads took (for metrics).
    pub fn read_stats(&self) -> Arc<crate::ReadStats> {
        self.reads.clone()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Detach even with files open: their readers get errors, the store
        // is untouched. The session thread ends when the kernel lets go.
        detach(&self.dir);
        drop(self.session.take());
        // Drafts closed before the unmount are still put; the session may
        // outlive this (files still open), so the committer is told to end.
        let _ = self.commits.send(STOP);
        if let Some(c) = self.committer.take() {
            let _ = c.join();
        }
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

/// Whether `e` is the answer of a dead FUSE mount: ENOTCONN, to whatever
/// reaches its server.
fn is_dead_mount(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTCONN)
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
        if !is_dead_mount(&e) && e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    if is_mount_point(&dir) {
        // A dead FUSE server's mount answers ENOTCONN to whatever reaches
        // the server (a stat may be answered from the kernel's cache).
        match std::fs::read_dir(&dir) {
            Err(e) if is_dead_mount(&e) => {
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
    let inner = Arc::new(Inner::new(objects, opts, uid, gid));
    let (commits, queue) = std::sync::mpsc::channel::<u64>();
    let committer = {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name("dot-fuse-put".into())
            .spawn(move || {
                while let Ok(ino) = queue.recv() {
                    if ino == STOP {
                        break;
                    }
                    inner.commit(ino);
                }
            })?
    };
    let reads = inner.reads.clone();
    let fs = Fs {
        inner,
        commits: commits.clone(),
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
        committer: Some(committer),
        commits,
        reads,
    })
}
