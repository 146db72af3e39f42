//! USB keys for the portable-storage tests: a filesystem image on a loop
//! device, mounted and pulled as a test needs.
//!
//! ```text
//! Key::new(Fs::Ext4, 64)     image file, mkfs, losetup -f --show
//! key.mount(&at)             mount -t ext4 /dev/loopN AT (AT made if missing)
//! key.unmount()              umount AT (a clean removal)
//! key.unmount_lazy()         umount -l AT
//! key.yank()                 umount -l, then losetup -d: a pulled key
//! drop(key)                  all of the above that is still to undo
//! ```
//!
//! The image, and mount points made by [`Key::mount_point`], live in the
//! key's own temporary folder. Agents watch the mount table of the root
//! mount namespace (agents in the test bed's network namespaces share it:
//! `nsenter --net`), so every agent of the test process sees a mounted key
//! holding `.dot/` within about a second; [`wait_attached`] waits for that.
//!
//! The on-device layout (plugins/src/portable.rs, docs/portable.md) is
//! `.dot/chunks/abc/<64 hex>` (one file per chunk, named by its BLAKE3
//! hash), `.dot/objects/<oid>` (descriptor file), `.dot/tmp/`. The helpers
//! [`chunk_files`], [`corrupt_chunk`] and [`thin_out`] change a key's
//! chunks behind the agents' backs.
//!
//! Hostile keys (docs/security.md, "Keys") are built from [`old_file`],
//! [`mkfifo`], [`mknod_null`] and symbolic links to folders off the key;
//! [`snapshot`] and [`Untouched`] show that nothing off the key was
//! changed, or even opened.
//!
//! Tests that make keys first call [`crate::require_loop`].

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::{Agent, find_tool};

/// How long one `mkfs`/`losetup`/`mount` may take.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// How long [`Key::unmount`] tries again while the key is busy.
const BUSY_LIMIT: Duration = Duration::from_secs(5);

/// The filesystem of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    /// ext4 (`mkfs.ext4`).
    Ext4,
    /// FAT32 with long names, what keys are sold with (`mkfs.vfat`, from
    /// dosfstools; the kernel needs `vfat`).
    Vfat,
}

impl Fs {
    /// The kernel's name of the filesystem (`mount -t`).
    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Vfat => "vfat",
        }
    }

    fn mkfs(self) -> &'static str {
        match self {
            Fs::Ext4 => "mkfs.ext4",
            Fs::Vfat => "mkfs.vfat",
        }
    }

    /// Why keys of this filesystem cannot be made here, if they cannot:
    /// its mkfs is missing, or the running kernel does not list it in
    /// `/proc/filesystems` (nothing here can load a module).
    pub fn unsupported(self) -> Option<String> {
        if find_tool(self.mkfs()).is_none() {
            return Some(format!("{} not found", self.mkfs()));
        }
        let listed = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let known = listed
            .lines()
            .any(|l| l.split_whitespace().last() == Some(self.name()));
        if !known {
            return Some(format!(
                "the kernel ({}) has no {} filesystem (not in /proc/filesystems)",
                kernel_release(),
                self.name()
            ));
        }
        None
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A filesystem image attached to a loop device: a USB key. Every mount
/// and the loop device are undone when it drops, also while a failing test
/// unwinds.
pub struct Key {
    fs: Fs,
    /// The loop device (`/dev/loopN`), until detached.
    dev: Mutex<Option<String>>,
    /// Where it is mounted now (normally one place).
    mounts: Mutex<Vec<PathBuf>>,
    dir: tempfile::TempDir,
}

impl Key {
    /// A new key of `size_mb` MiB: an image file made with `fs`'s mkfs,
    /// attached to a free loop device. Not mounted.
    pub fn new(fs: Fs, size_mb: u64) -> Key {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("key.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size_mb << 20))
            .expect("key image");
        let img = img.to_str().expect("utf-8 path").to_owned();
        match fs {
            Fs::Ext4 => tool(&["mkfs.ext4", "-q", "-F", "-L", "DOTKEY", &img]),
            // FAT32 like a bought key (mkfs picks FAT16 for small images).
            Fs::Vfat => tool(&["mkfs.vfat", "-F", "32", "-n", "DOTKEY", &img]),
        };
        let dev = tool(&["losetup", "-f", "--show", &img]).trim().to_owned();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Key {
            fs,
            dev: Mutex::new(Some(dev)),
            mounts: Mutex::new(Vec::new()),
            dir,
        }
    }

    /// The key's filesystem.
    pub fn fs(&self) -> Fs {
        self.fs
    }

    /// The loop device (panics once yanked).
    pub fn device(&self) -> String {
        lock(&self.dev).clone().expect("the key was yanked")
    }

    /// A folder `name` in the key's temporary folder, to mount it on
    /// (made by [`Key::mount`]).
    pub fn mount_point(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Mounts the key at `at` (made if missing), read-write.
    pub fn mount(&self, at: &Path) {
        std::fs::create_dir_all(at).expect("mount point");
        let dev = self.device();
        let at_s = at.to_str().expect("utf-8 path");
        tool(&["mount", "-t", self.fs.name(), &dev, at_s]);
        lock(&self.mounts).push(at.to_owned());
    }

    /// Where the key is mounted now (the last mount), if anywhere.
    pub fn mounted_at(&self) -> Option<PathBuf> {
        lock(&self.mounts).last().cloned()
    }

    /// Unmounts the key cleanly (as a user ejecting it): everything
    /// written is on the image afterwards. Fails if something keeps files
    /// open on it for [`BUSY_LIMIT`]: every agent of the test process sees
    /// every key, and each look at one (a describe, an outbox check) holds
    /// a handle on its `.dot` for a moment, so a busy key is tried again.
    pub fn unmount(&self) {
        let at = self.mounted_at().expect("the key is not mounted");
        let at = at.to_str().expect("utf-8 path");
        let t0 = Instant::now();
        loop {
            match try_tool(&["umount", at]) {
                Ok(_) => break,
                Err(e) if e.contains("busy") && t0.elapsed() < BUSY_LIMIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("key: {e}"),
            }
        }
        lock(&self.mounts).pop();
    }

    /// Lazily unmounts the key (`umount -l`): it leaves the mount table at
    /// once; files open on it stay readable until closed.
    pub fn unmount_lazy(&self) {
        let at = lock(&self.mounts).pop().expect("the key is not mounted");
        crate::detach(&at);
    }

    /// Pulls the key: lazy unmount of every mount, then `losetup -d` (the
    /// loop device goes as soon as nothing holds the filesystem).
    pub fn yank(&self) {
        for at in std::mem::take(&mut *lock(&self.mounts)) {
            crate::detach(&at);
        }
        if let Some(dev) = lock(&self.dev).take() {
            tool(&["losetup", "-d", &dev]);
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        for at in std::mem::take(&mut *lock(&self.mounts)) {
            crate::detach(&at);
        }
        if let Some(dev) = lock(&self.dev).take()
            && let Err(e) = try_tool(&["losetup", "-d", &dev])
        {
            eprintln!("key: could not detach {dev}: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The chunk files on the key mounted at `mount`, sorted by name.
pub fn chunk_files(mount: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let chunks = mount.join(".dot").join("chunks");
    for fan in std::fs::read_dir(&chunks)
        .expect("read .dot/chunks")
        .flatten()
    {
        for f in std::fs::read_dir(fan.path())
            .expect("read a fan-out folder")
            .flatten()
        {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// Flips one byte in the middle of the chunk file `file` (its name, and so
/// the hash it must have, stay).
pub fn corrupt_file(file: &Path) {
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(file)
        .expect("open a chunk file");
    let len = f.metadata().expect("stat").len();
    assert!(len > 0, "empty chunk file {}", file.display());
    let at = len / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0x5a;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&b).expect("write");
    f.sync_all().expect("sync");
}

/// Corrupts one chunk file of the key mounted at `mount` (the middle one by
/// name); returns it and its length.
pub fn corrupt_chunk(mount: &Path) -> (PathBuf, u64) {
    let files = chunk_files(mount);
    assert!(!files.is_empty(), "no chunk files on {}", mount.display());
    let file = files[files.len() / 2].clone();
    corrupt_file(&file);
    let len = std::fs::metadata(&file).expect("stat").len();
    (file, len)
}

/// Removes chunk files from the key mounted at `mount` so that only every
/// `keep_one_in`-th (by name: a spread over the object) is left; returns the
/// bytes of the chunk files left.
pub fn thin_out(mount: &Path, keep_one_in: usize) -> u64 {
    assert!(keep_one_in > 0);
    let mut kept = 0;
    for (i, f) in chunk_files(mount).into_iter().enumerate() {
        if i % keep_one_in == 0 {
            kept += std::fs::metadata(&f).expect("stat").len();
        } else {
            std::fs::remove_file(&f).expect("remove a chunk file");
        }
    }
    kept
}

/// Everything under `dir`, without following links: path -> (kind, bytes
/// or link target, mtime). Two equal snapshots: nothing there changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let t = m.file_type();
            let (kind, content) = if t.is_symlink() {
                let to = std::fs::read_link(&p).expect("readlink");
                ("link", to.into_os_string().into_encoded_bytes())
            } else if t.is_dir() {
                todo.push(p.clone());
                ("dir", Vec::new())
            } else if t.is_file() {
                ("file", std::fs::read(&p).expect("read"))
            } else {
                ("special", Vec::new())
            };
            let mtime = m.modified().expect("mtime");
            out.insert(p, (kind.to_owned(), content, mtime));
        }
    }
    out
}

/// A file of `data` at `path`, its mtime two hours back (what a stale-tmp
/// cleanup deletes).
pub fn old_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("set mtime");
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// A FIFO at `path` (an open for reading waits for a writer).
pub fn mkfifo(path: &Path) {
    let c = c_path(path);
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A character device like /dev/null (1:3) at `path` (needs root, and a
/// filesystem mounted without `nodev` to be opened).
pub fn mknod_null(path: &Path) {
    let c = c_path(path);
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// inotify on every folder under a root (links not followed): what was
/// opened, read, written, made, deleted or moved there since. Stat calls
/// do not show (they change nothing and read no content).
pub struct Untouched {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
}

impl Untouched {
    /// Watches `root` and every folder under it.
    pub fn watch(root: &Path) -> Untouched {
        // SAFETY: plain syscall; the fd is checked and owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            raw >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::IN_ACCESS
            | libc::IN_MODIFY
            | libc::IN_ATTRIB
            | libc::IN_OPEN
            | libc::IN_CLOSE_WRITE
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_DELETE_SELF
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_MOVE_SELF
            | libc::IN_DONT_FOLLOW;
        let mut dirs = HashMap::new();
        let mut todo = vec![root.to_owned()];
        while let Some(d) = todo.pop() {
            let c = c_path(&d);
            // SAFETY: a valid fd and NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
            assert!(wd >= 0, "inotify_add_watch {}", d.display());
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
            dirs.insert(wd, d);
        }
        // Listing the folders above opened them: not the agents' doing.
        let mut w = Untouched { fd, dirs };
        w.events();
        w
    }

    /// The events since the last call, as "WHAT path" lines.
    pub fn events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: `buf` is valid for its length; the fd is non-blocking.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            let mut at = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while at + head <= n as usize {
                // SAFETY: the kernel wrote whole events; read unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name = &buf[at + head..at + head + ev.len as usize];
                let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or(&[]))
                    .into_owned();
                let dir = self
                    .dirs
                    .get(&ev.wd)
                    .map_or_else(|| "?".into(), |d| d.display().to_string());
                out.push(format!("{:#x} {dir}/{name}", ev.mask));
                at += head + ev.len as usize;
            }
        }
    }
}

/// Log lines of `agent` that say it refused the key mounted at `mount`.
pub fn refused_count(agent: &Agent, mount: &Path) -> usize {
    log_count(agent, "device refused", mount)
}

/// Waits until `agent` has logged that it refused the key mounted at
/// `mount` (panics after `limit`).
pub fn wait_refused(agent: &Agent, mount: &Path, limit: Duration) {
    let t0 = Instant::now();
    while refused_count(agent, mount) == 0 {
        assert!(
            t0.elapsed() < limit,
            "agent {} did not refuse the key at {} within {limit:?}",
            agent.peer,
            mount.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Log lines of `agent` that say it attached the key mounted at `mount`.
pub fn attached_count(agent: &Agent, mount: &Path) -> usize {
    log_count(agent, "device attached", mount)
}

/// Log lines of `agent` that say the key mounted at `mount` left.
pub fn detached_count(agent: &Agent, mount: &Path) -> usize {
    log_count(agent, "device detached", mount)
}

fn log_count(agent: &Agent, what: &str, mount: &Path) -> usize {
    let want = format!("mount={}", mount.display());
    std::fs::read_to_string(agent.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what) && l.split_whitespace().any(|w| w == want))
        .count()
}

/// Waits until `agent` has logged more than `before` attachments of the
/// key mounted at `mount` (panics after `limit`); returns how long it took.
pub fn wait_attached(agent: &Agent, mount: &Path, before: usize, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if attached_count(agent, mount) > before {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "agent {} did not attach the key at {} within {limit:?}",
            agent.peer,
            mount.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `agent` has logged more than `before` departures of the key
/// mounted at `mount` (panics after `limit`).
pub fn wait_detached(agent: &Agent, mount: &Path, before: usize, limit: Duration) {
    let t0 = Instant::now();
    while detached_count(agent, mount) <= before {
        assert!(
            t0.elapsed() < limit,
            "agent {} did not see the key at {} leave within {limit:?}",
            agent.peer,
            mount.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`crate::try_tool`] within this module's limit.
fn try_tool(args: &[&str]) -> Result<String, String> {
    crate::try_tool(args, TOOL_LIMIT)
}

/// [`try_tool`], panicking on failure.
fn tool(args: &[&str]) -> String {
    try_tool(args).unwrap_or_else(|e| panic!("key: {e}"))
}
