//! The device watcher: reports, as a stream of events, "a filesystem
//! holding a DOT store appeared at PATH" and "it left".
//!
//! A store on a device is a folder named [`MARKER`] (`.dot`) at the root of
//! a filesystem. The watcher looks for it
//!
//! - at every mount point of a block device (the mount table of this
//!   process's mount namespace, `/proc/self/mountinfo`, which the kernel
//!   signals with `POLLPRI` on each change),
//! - in every folder directly under the folders it is given (a desktop
//!   automounter's `/media/USER` or `/run/media/USER`, watched with
//!   `notify`),
//!
//! and rescans on each kernel uevent for a block device (the netlink
//! socket; there may be no udevd), on each mount-table change, on each
//! change in a watched folder, and once a second regardless. One thread does
//! the waiting; the caller reads events from a channel and never blocks on
//! it. Optionally (see [`Options::mount_into`]) it mounts an inserted block
//! device read-only itself when nothing else mounts it within a moment.
//!
//! Layout: this file holds the watcher (its thread, its state, the
//! folder watch and the mounting); `mountinfo.rs` parses the mount table,
//! `uevent.rs` opens the uevent socket and parses its datagrams.

#![warn(missing_docs)]

mod mountinfo;
mod uevent;

use mountinfo::{Mount, read_mounts};
use uevent::{Uevent, uevent_socket};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The folder at a filesystem's root that holds a DOT store.
pub const MARKER: &str = ".dot";

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A filesystem holding a DOT store is mounted at this path.
    Appeared(PathBuf),
    /// The store at this path is gone (unmounted, removed or yanked).
    Left(PathBuf),
}

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Folders whose sub-folders may be mount points of keys (an
    /// automounter's `/media/USER`); watched with `notify`.
    pub folders: Vec<PathBuf>,
    /// If set, a block device that appears with a filesystem and is not
    /// mounted by anyone within two seconds is mounted read-only at
    /// `DIR/<device name>` (and unmounted when it goes away).
    pub mount_into: Option<PathBuf>,
}

/// A running watcher; dropping it stops the thread.
pub struct Watcher {
    events: mpsc::Receiver<DeviceEvent>,
    stop: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    thread: Option<thread::JoinHandle<()>>,
    // Kept alive for its callbacks.
    _notify: Option<notify::RecommendedWatcher>,
}

impl Watcher {
    /// Starts watching. The stores present now are reported first, as
    /// `Appeared` events.
    ///
    /// # Errors
    /// When the mount table cannot be read or the wake-up pipe not made.
    /// A netlink socket or folder watch that cannot be had only logs: the
    /// watcher then relies on its other sources and the periodic rescan.
    pub fn start(options: Options) -> io::Result<Watcher> {
        let mountinfo = File::open("/proc/self/mountinfo")?;
        let (wake_rd, wake_wr) = pipe()?;
        let wake_wr = Arc::new(wake_wr);
        let uevents = match uevent_socket() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no kernel uevents; watching the mount table only");
                None
            }
        };
        let notify = watch_folders(&options.folders, wake_wr.clone());
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut state = State {
            options,
            present: BTreeSet::new(),
            mounted_by_us: BTreeMap::new(),
            pending_mounts: BTreeMap::new(),
            tx,
        };
        let stop2 = stop.clone();
        let thread = thread::Builder::new()
            .name("dot-udev".into())
            .spawn(move || {
                state.rescan();
                run(&mut state, &mountinfo, uevents.as_ref(), &wake_rd, &stop2);
                state.unmount_ours();
            })?;
        Ok(Watcher {
            events,
            stop,
            wake: wake_wr,
            thread: Some(thread),
            _notify: notify,
        })
    }

    /// The events, in order.
    pub fn events(&self) -> &mpsc::Receiver<DeviceEvent> {
        &self.events
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        poke(&self.wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    options: Options,
    present: BTreeSet<PathBuf>,
    /// Devices this watcher mounted: device path -> mount point.
    mounted_by_us: BTreeMap<PathBuf, PathBuf>,
    /// Block devices seen added and not mounted yet: device -> when seen.
    pending_mounts: BTreeMap<PathBuf, Instant>,
    tx: mpsc::Sender<DeviceEvent>,
}

impl State {
    /// Looks for stores again and reports what changed.
    fn rescan(&mut self) {
        let mounts = read_mounts();
        let mut now: BTreeSet<PathBuf> = BTreeSet::new();
        for m in &mounts {
            if m.source.starts_with("/dev/") && holds_store(&m.point) {
                now.insert(m.point.clone());
            }
        }
        for folder in &self.options.folders {
            let Ok(entries) = std::fs::read_dir(folder) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if holds_store(&p) {
                    now.insert(p);
                }
            }
        }
        for gone in self.present.difference(&now) {
            let _ = self.tx.send(DeviceEvent::Left(gone.clone()));
        }
        for new in now.difference(&self.present) {
            let _ = self.tx.send(DeviceEvent::Appeared(new.clone()));
        }
        self.present = now;
        self.mount_pending(&mounts);
    }

    /// Mounts devices nobody mounted within two seconds, if asked to;
    /// forgets mount points of devices that went away.
    fn mount_pending(&mut self, mounts: &[Mount]) {
        let Some(dir) = self.options.mount_into.clone() else {
            return;
        };
        let mounted: BTreeSet<&str> = mounts.iter().map(|m| m.source.as_str()).collect();
        let due: Vec<PathBuf> = self
            .pending_mounts
            .iter()
            .filter(|(_, seen)| seen.elapsed() >= Duration::from_secs(2))
            .map(|(d, _)| d.clone())
            .collect();
        for dev in due {
            self.pending_mounts.remove(&dev);
            if mounted.contains(dev.to_string_lossy().as_ref()) || !dev.exists() {
                continue;
            }
            let Some(name) = dev.file_name() else {
                continue;
            };
            let point = dir.join(name);
            match mount_read_only(&dev, &point) {
                Ok(()) => {
                    tracing::info!(device = %dev.display(), at = %point.display(), "mounted read-only");
                    self.mounted_by_us.insert(dev, point);
                }
                Err(e) => {
                    tracing::debug!(device = %dev.display(), error = %e, "not mountable");
                    let _ = std::fs::remove_dir(&point);
                }
            }
        }
    }

    fn uevent(&mut self, ev: &Uevent) {
        if ev.subsystem != "block" {
            return;
        }
        if ev.devname.is_empty() {
            return;
        }
        let dev = PathBuf::from("/dev").join(&ev.devname);
        // A device with no media left (a USB key pulled, a loop device
        // detached: the kernel says "remove" for the one, "change" for the
        // other) has size 0 or no entry in /sys.
        let gone = ev.action == "remove"
            || std::fs::read_to_string(
                Path::new("/sys/class/block").join(&ev.devname).join("size"),
            )
            .map_or(true, |s| s.trim() == "0");
        if gone {
            self.pending_mounts.remove(&dev);
            if let Some(point) = self.mounted_by_us.remove(&dev) {
                tracing::info!(device = %dev.display(), at = %point.display(), "device gone: unmounted");
                unmount_lazily(&point);
            }
        } else if matches!(ev.action.as_str(), "add" | "change")
            && self.options.mount_into.is_some()
            && !self.mounted_by_us.contains_key(&dev)
        {
            self.pending_mounts.insert(dev, Instant::now());
        }
    }

    fn unmount_ours(&mut self) {
        for (_, point) in std::mem::take(&mut self.mounted_by_us) {
            unmount_lazily(&point);
        }
    }
}

/// The waiting loop: wakes on the mount table, uevents, the wake-up pipe,
/// or after a second, and rescans.
fn run(
    state: &mut State,
    mountinfo: &File,
    uevents: Option<&OwnedFd>,
    wake: &OwnedFd,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = vec![
            libc::pollfd {
                fd: mountinfo.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Some(u) = uevents {
            fds.push(libc::pollfd {
                fd: u.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "device watcher: poll failed");
                thread::sleep(Duration::from_millis(200));
            }
            continue;
        }
        if fds[1].revents != 0 {
            drain(wake.as_raw_fd(), &mut buf);
        }
        if let Some(u) = uevents
            && fds.get(2).is_some_and(|f| f.revents != 0)
        {
            loop {
                // SAFETY: `buf` is valid for its length; the socket is
                // non-blocking.
                let got =
                    unsafe { libc::recv(u.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(len) = usize::try_from(got) else {
                    break;
                };
                if let Some(ev) = Uevent::parse(&buf[..len]) {
                    state.uevent(&ev);
                }
            }
        }
        // Any wake-up (or the second's timeout) rescans: cheap, and it
        // also catches what no signal announced.
        state.rescan();
    }
}

/// Whether `place` holds a [`MARKER`] folder, looked at without following
/// a link: a `.dot` that is a symbolic link is reported too, for the agent
/// to refuse it loudly (it reaches nothing on a key through a link), but
/// nothing is looked up through it here.
fn holds_store(place: &Path) -> bool {
    std::fs::symlink_metadata(place.join(MARKER))
        .is_ok_and(|m| m.is_dir() || m.file_type().is_symlink())
}

/// The parsers of what the kernel hands this crate (uevent datagrams, the
/// mount table), reachable by the fuzz targets of `fuzz/` and nothing else.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::PathBuf;

    /// A uevent datagram as `(action, subsystem, devname)`, or `None` for
    /// one that is not a kernel uevent.
    pub fn uevent(msg: &[u8]) -> Option<(String, String, String)> {
        super::uevent::Uevent::parse(msg).map(|e| (e.action, e.subsystem, e.devname))
    }

    /// A mount table as `(mount point, source)` per entry.
    pub fn mountinfo(text: &str) -> Vec<(PathBuf, String)> {
        super::mountinfo::parse_mountinfo(text)
            .into_iter()
            .map(|m| (m.point, m.source))
            .collect()
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn poke(fd: &OwnedFd) {
    // SAFETY: writes one byte from a valid buffer; a full pipe is fine.
    unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
}

fn drain(fd: RawFd, buf: &mut [u8]) {
    // SAFETY: `buf` is valid for its length; the pipe is non-blocking.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Watches `folders` for entries coming and going; each change pokes the
/// loop awake. Folders that do not exist (yet) are skipped with a log line
/// (the periodic rescan still looks at them).
fn watch_folders(folders: &[PathBuf], wake: Arc<OwnedFd>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    if folders.is_empty() {
        return None;
    }
    let mut w = match notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        poke(&wake);
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch folders; rescanning them every second");
            return None;
        }
    };
    for f in folders {
        if let Err(e) = w.watch(f, notify::RecursiveMode::NonRecursive) {
            tracing::info!(folder = %f.display(), error = %e, "not watching this folder (rescanned every second)");
        }
    }
    Some(w)
}

/// Mounts `dev` at `point` read-only, `nosuid`, `nodev`, `noexec` and
/// `nosymfollow` (Linux 5.10+: the kernel follows no symbolic link on the
/// key, whoever asks), trying the filesystems keys come with. A kernel that
/// refuses `nosymfollow` (`EINVAL`) gets the mount without it, logged: the
/// agent's own key I/O follows no link either way (plugins/src/portable.rs).
fn mount_read_only(dev: &Path, point: &Path) -> io::Result<()> {
    std::fs::create_dir_all(point)?;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (src, dst) = (c(dev)?, c(point)?);
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no filesystem type fits");
    for fstype in ["ext4", "vfat", "exfat", "ext2", "ext3", "btrfs", "xfs"] {
        let ty = CString::new(fstype).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mount = |flags: libc::c_ulong| {
            // SAFETY: all pointers are valid NUL-terminated strings; no data.
            let r = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    ty.as_ptr(),
                    flags,
                    std::ptr::null(),
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        match mount(flags | libc::MS_NOSYMFOLLOW) {
            Ok(()) => return Ok(()),
            // Also what a wrong filesystem type gives: the retry without
            // nosymfollow tells the two apart.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => match mount(flags) {
                Ok(()) => {
                    tracing::warn!(device = %dev.display(), fstype, "the kernel refused nosymfollow (before Linux 5.10?): mounted without it");
                    return Ok(());
                }
                Err(e) => last = e,
            },
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn unmount_lazily(point: &Path) {
    if let Ok(c) = CString::new(point.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir(point);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_folder_in_a_watched_folder_appears_and_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Watcher::start(Options {
            folders: vec![dir.path().to_owned()],
            mount_into: None,
        })
        .expect("watcher");
        // Made aside, then moved in at once, as a mount would appear.
        let aside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(aside.path().join("KEY").join(MARKER)).expect("mkdir");
        let key = dir.path().join("KEY");
        let start = Instant::now();
        std::fs::rename(aside.path().join("KEY"), &key).expect("move in");
        let ev = w
            .events()
            .recv_timeout(Duration::from_secs(5))
            .expect("an event");
        assert_eq!(ev, DeviceEvent::Appeared(key.clone()));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        std::fs::remove_dir_all(&key).expect("rm");
        let ev = w
            .events()
            .recv_timeout(Duration::from_secs(5))
            .expect("an event");
        assert_eq!(ev, DeviceEvent::Left(key));
    }
}
