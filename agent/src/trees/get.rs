//! A tree onto disk: its manifest fetched and checked, then every entry
//! made beneath a handle of the destination folder. Each folder on the
//! way is opened with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, each entry
//! is created with `O_EXCL`/`O_NOFOLLOW` (never through a link or over an
//! existing file), so a manifest, whatever it says, writes nothing outside
//! the destination. Large files are fetched through the agent by their
//! own tickets (the tree's token, naming the tree), several at once; the
//! small files are written one after another as the tree's pack streams
//! in.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use dot_store::Ticket;
use dot_store::tree::{Entry, Kind, MAX_MANIFEST, Manifest, Mtime};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};

use crate::client::{Client, GetStats};

/// Files fetched at once (each on its own connection to the agent).
pub const GET_WORKERS: usize = 8;

/// Permission bits a get restores: set-user-ID, set-group-ID and sticky
/// bits from a manifest are not (a stranger's tree must not make a
/// set-user-ID program of whoever runs the get).
pub const RESTORED_MODE: u16 = 0o777;

/// What a tree's get did.
#[derive(Debug, Default)]
pub struct TreeGot {
    /// Entries made.
    pub entries: usize,
    /// Files written, and their bytes.
    pub files: usize,
    /// Bytes of the files.
    pub bytes: u64,
    /// Where the files' bytes came from.
    pub stats: GetStats,
}

/// Progress of a tree's get.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files written so far.
    pub files: AtomicUsize,
    /// Bytes written so far.
    pub bytes: AtomicU64,
}

/// Fetches the tree `ticket` names into `dest` (a folder that does not
/// exist yet, or an empty one). `hints`, if not empty, replace the
/// ticket's, for the manifest and every file.
///
/// # Errors
/// A ticket that is not a tree's, a manifest that breaks a rule, a
/// destination that exists and is not an empty folder, the agent's errors.
/// What was written before a failure stays.
pub fn get_tree(
    socket: Option<&Path>,
    ticket: &Ticket,
    hints: &[String],
    dest: &Path,
    progress: &Progress,
    on_manifest: impl FnOnce(&Manifest),
) -> anyhow::Result<TreeGot> {
    let manifest = fetch_tree(socket, ticket, hints)?;
    on_manifest(&manifest);
    let root = open_destination(dest)?;
    let got = write_tree(socket, ticket, hints, &root, &manifest, progress)?;
    set_attributes(
        &root,
        manifest.entries(),
        (manifest.root_mode, manifest.root_mtime),
        dest,
    )?;
    Ok(got)
}

/// Segments fetched at once by [`get_segments`].
pub const SEGMENT_GETS: usize = 2;

/// Fetches the segments of a folder (see
/// [`super::put_tree_segments`]) into `dest` (a folder that does not exist
/// yet, or an empty one) as `segments` yields their tickets, several at
/// once, then sets the folders' attributes. Segments may share folders
/// but no other entry: a second file of one path is refused, never
/// written over the first.
///
/// # Errors
/// As [`get_tree`]; the first error of `segments`.
pub fn get_segments(
    socket: Option<&Path>,
    segments: impl Iterator<Item = anyhow::Result<Ticket>>,
    dest: &Path,
    progress: &Progress,
) -> anyhow::Result<TreeGot> {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;
    // Made once the first manifest checked out.
    let opened: Mutex<Option<OwnedFd>> = Mutex::new(None);
    let root = || -> anyhow::Result<OwnedFd> {
        let mut opened = opened.lock().unwrap_or_else(|p| p.into_inner());
        if opened.is_none() {
            *opened = Some(open_destination(dest)?);
        }
        match &*opened {
            Some(fd) => Ok(rustix::io::dup(fd)?),
            None => bail!("{} is not open", dest.display()),
        }
    };
    // Folders and links of every segment, for their attributes at the
    // end; the root's, from any segment (all say the same).
    type Kept = (BTreeMap<Vec<u8>, Entry>, Option<(u16, Mtime)>);
    let kept: Mutex<Kept> = Mutex::new((BTreeMap::new(), None));
    let all = Mutex::new(TreeGot::default());
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Ticket>(SEGMENT_GETS);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for _ in 0..SEGMENT_GETS {
            workers.push(s.spawn(|| -> anyhow::Result<()> {
                let mut result = Ok(());
                // After a failure, what is queued is taken and dropped.
                loop {
                    // The lock only while waiting: a guard in the loop's
                    // head would hold it through each get.
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(ticket) = next else {
                        break;
                    };
                    if result.is_err() || failed.load(Ordering::Relaxed) {
                        continue;
                    }
                    let got = fetch_tree(socket, &ticket, &[]).and_then(|m| {
                        let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                        for e in m.entries() {
                            if matches!(e.kind, Kind::Dir | Kind::Symlink { .. }) {
                                k.0.entry(e.path.clone()).or_insert_with(|| e.clone());
                            }
                        }
                        k.1 = Some((m.root_mode, m.root_mtime));
                        drop(k);
                        write_tree(socket, &ticket, &[], &root()?, &m, progress)
                    });
                    match got {
                        Ok(got) => {
                            let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
                            all.files += got.files;
                            all.bytes += got.bytes;
                            all.stats.from_peers += got.stats.from_peers;
                            all.stats.local += got.stats.local;
                            all.stats.from_devices += got.stats.from_devices;
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            result = Err(e);
                        }
                    }
                }
                result
            }));
        }
        let mut fed = Ok(());
        for ticket in segments {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            match ticket {
                Ok(t) => {
                    if tx.send(t).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    fed = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a segment's get panicked"))??;
        }
        fed
    })?;
    let (entries, root_attrs) = kept.into_inner().unwrap_or_else(|p| p.into_inner());
    let root_attrs = root_attrs.context("no segment came")?;
    let root = root()?;
    let entries: Vec<Entry> = entries.into_values().collect();
    set_attributes(&root, &entries, root_attrs, dest)?;
    let mut got = all.into_inner().unwrap_or_else(|p| p.into_inner());
    got.entries = got.files + entries.len();
    Ok(got)
}

/// The manifest of the tree `ticket` names, fetched and checked.
fn fetch_tree(
    socket: Option<&Path>,
    ticket: &Ticket,
    hints: &[String],
) -> anyhow::Result<Manifest> {
    if !ticket.is_tree() {
        bail!("the ticket is not a tree's");
    }
    fetch_manifest(socket, ticket, hints)
}

/// Writes the tree `ticket` names (its checked `manifest`) beneath
/// `root`: new folders made, existing ones entered, every file and link
/// created new; folders' attributes are left to [`set_attributes`].
fn write_tree(
    socket: Option<&Path>,
    ticket: &Ticket,
    hints: &[String],
    root: &OwnedFd,
    manifest: &Manifest,
    progress: &Progress,
) -> anyhow::Result<TreeGot> {
    let mut got = TreeGot {
        entries: manifest.entries().len(),
        ..TreeGot::default()
    };
    for e in manifest.entries() {
        if matches!(e.kind, Kind::File { .. } | Kind::Packed { .. }) {
            continue;
        }
        let parent = open_parent(root, e)?;
        let name = OsStr::from_bytes(e.name());
        match &e.kind {
            // A folder another segment made is entered (opening it
            // beneath the root, links refused, checks it is one).
            Kind::Dir => match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Err(rustix::io::Errno::EXIST) => Ok(()),
                r => r,
            },
            Kind::Symlink { target } => {
                rustix::fs::symlinkat(OsStr::from_bytes(target), &parent, name)
            }
            Kind::File { .. } | Kind::Packed { .. } => continue,
        }
        .with_context(|| format!("creating {}", shown(e)))?;
    }
    let files: Vec<&Entry> = manifest
        .entries()
        .iter()
        .filter(|e| matches!(e.kind, Kind::File { .. }))
        .collect();
    got.files = manifest.all_files().count();
    got.bytes = manifest.file_bytes();
    let next = AtomicUsize::new(0);
    let stats = Mutex::new(GetStats::default());
    let workers = GET_WORKERS.min(files.len());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let pack = s.spawn(|| write_packed(socket, root, ticket, hints, manifest, progress));
        let mut handles = Vec::new();
        for _ in 0..workers {
            handles.push(s.spawn(|| -> anyhow::Result<()> {
                let mut client = None;
                while let Some(e) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let got = write_file(&mut client, socket, root, ticket, hints, e)?;
                    let mut all = stats.lock().unwrap_or_else(|p| p.into_inner());
                    all.from_peers += got.from_peers;
                    all.local += got.local;
                    all.from_devices += got.from_devices;
                    drop(all);
                    progress.files.fetch_add(1, Ordering::Relaxed);
                    if let Kind::File { size, .. } = e.kind {
                        progress.bytes.fetch_add(size, Ordering::Relaxed);
                    }
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a get worker panicked"))??;
        }
        let from_pack = pack
            .join()
            .map_err(|_| anyhow::anyhow!("the pack's get panicked"))??;
        let mut all = stats.lock().unwrap_or_else(|p| p.into_inner());
        all.from_peers += from_pack.from_peers;
        all.local += from_pack.local;
        all.from_devices += from_pack.from_devices;
        Ok(())
    })?;
    got.stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(got)
}

/// Sets the attributes of the links and folders among `entries` (in
/// manifest order) beneath `root`, and the root's (`attrs`: its mode and
/// time; `dest` names it): links' times, then folders' modes and times,
/// deepest first (making their entries changed their times; a read-only
/// folder is made so only once filled).
fn set_attributes(
    root: &OwnedFd,
    entries: &[Entry],
    (root_mode, root_mtime): (u16, Mtime),
    dest: &Path,
) -> anyhow::Result<()> {
    for e in entries.iter().rev() {
        let parent = open_parent(root, e)?;
        let name = OsStr::from_bytes(e.name());
        match e.kind {
            Kind::Symlink { .. } => {
                rustix::fs::utimensat(&parent, name, &times(e.mtime), AtFlags::SYMLINK_NOFOLLOW)
            }
            Kind::Dir => {
                let dir = open_beneath(&parent, name)?;
                rustix::fs::fchmod(&dir, mode(e.mode))
                    .and_then(|()| rustix::fs::futimens(&dir, &times(e.mtime)))
            }
            Kind::File { .. } | Kind::Packed { .. } => continue,
        }
        .with_context(|| format!("setting the attributes of {}", shown(e)))?;
    }
    rustix::fs::fchmod(root, mode(root_mode))
        .and_then(|()| rustix::fs::futimens(root, &times(root_mtime)))
        .with_context(|| format!("setting the attributes of {}", dest.display()))
}

/// The manifest's bytes, fetched and checked.
fn fetch_manifest(
    socket: Option<&Path>,
    ticket: &Ticket,
    hints: &[String],
) -> anyhow::Result<Manifest> {
    use std::io::Read;
    let mut client = Client::connect(socket)?;
    let mut get = client.get(&ticket.to_string(), hints)?;
    if get.size() > MAX_MANIFEST {
        bail!(
            "a tree's manifest of {} bytes (at most {MAX_MANIFEST})",
            get.size()
        );
    }
    let mut bytes = Vec::with_capacity(get.size() as usize);
    get.read_to_end(&mut bytes)
        .context("fetching the tree's manifest")?;
    Ok(Manifest::decode(&bytes)?)
}

/// The destination, made (0700 until it is filled) or found empty, open.
fn open_destination(dest: &Path) -> anyhow::Result<OwnedFd> {
    match std::fs::create_dir(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let empty = std::fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty || !std::fs::symlink_metadata(dest)?.is_dir() {
                bail!("{} exists and is not an empty folder", dest.display());
            }
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dest.display())),
    }
    let fd = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", dest.display()))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    Ok(fd)
}

/// The folder holding `e`, opened beneath the root.
fn open_parent(root: &OwnedFd, e: &Entry) -> anyhow::Result<OwnedFd> {
    let parent = e.parent();
    if parent.is_empty() {
        return Ok(rustix::io::dup(root)?);
    }
    open_beneath(root, OsStr::from_bytes(parent))
        .with_context(|| format!("opening the folder of {}", shown(e)))
}

/// `path` (relative) opened as a folder beneath `dir`, no link followed.
fn open_beneath(dir: impl AsFd, path: &OsStr) -> anyhow::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// One file: created new beneath its folder, filled through the agent
/// (or left empty), its mode and mtime set.
fn write_file(
    client: &mut Option<Client>,
    socket: Option<&Path>,
    root: &OwnedFd,
    tree: &Ticket,
    hints: &[String],
    e: &Entry,
) -> anyhow::Result<GetStats> {
    let Kind::File {
        size,
        oid,
        list_digest,
    } = e.kind
    else {
        return Ok(GetStats::default());
    };
    let parent = open_parent(root, e)?;
    let fd = rustix::fs::openat(
        &parent,
        OsStr::from_bytes(e.name()),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("creating {}", shown(e)))?;
    let out = File::from(fd);
    let mut stats = GetStats::default();
    if size > 0 {
        let c = match client {
            Some(c) => c,
            None => client.insert(Client::connect(socket)?),
        };
        let member = tree.member(oid, list_digest).to_string();
        let mut get = c.get_unordered(&member, hints)?;
        if get.size() != size {
            bail!(
                "{}: the tree says {size} bytes, its object has {}",
                shown(e),
                get.size()
            );
        }
        out.set_len(size)?;
        stats = get
            .copy_to_file(&out, |_| {})
            .with_context(|| format!("fetching {}", shown(e)))?;
        drop(get);
        c.done(&oid.to_string())?;
    }
    let fd: BorrowedFd<'_> = out.as_fd();
    rustix::fs::fchmod(fd, mode(e.mode))
        .and_then(|()| rustix::fs::futimens(fd, &times(e.mtime)))
        .with_context(|| format!("setting the attributes of {}", shown(e)))?;
    Ok(stats)
}

/// The small files: each created new beneath its folder and filled, in
/// manifest order, from the pack as it streams in (or left empty).
fn write_packed(
    socket: Option<&Path>,
    root: &OwnedFd,
    tree: &Ticket,
    hints: &[String],
    manifest: &Manifest,
    progress: &Progress,
) -> anyhow::Result<GetStats> {
    use std::io::{Read, Write};
    let mut client = match manifest.pack {
        Some(_) => Some(Client::connect(socket)?),
        None => None,
    };
    let mut pack = match (&mut client, manifest.pack) {
        (Some(c), Some(p)) => {
            let get = c.get(&tree.member(p.oid, p.list_digest).to_string(), hints)?;
            if get.size() != p.size {
                bail!(
                    "the tree's pack has {} bytes, the tree says {}",
                    get.size(),
                    p.size
                );
            }
            Some(get)
        }
        _ => None,
    };
    // Entries come in path order: most share the folder of the one before.
    let mut folder: Option<(Vec<u8>, OwnedFd)> = None;
    let mut buf = vec![0u8; 256 << 10];
    for e in manifest.entries() {
        let Kind::Packed { size, .. } = e.kind else {
            continue;
        };
        if folder
            .as_ref()
            .is_none_or(|(p, _)| p.as_slice() != e.parent())
        {
            folder = Some((e.parent().to_vec(), open_parent(root, e)?));
        }
        let Some((_, parent)) = &folder else {
            continue;
        };
        let fd = rustix::fs::openat(
            parent,
            OsStr::from_bytes(e.name()),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .with_context(|| format!("creating {}", shown(e)))?;
        let mut out = File::from(fd);
        let mut left = size;
        while left > 0 {
            let Some(get) = &mut pack else {
                bail!("{}: packed bytes without a pack", shown(e));
            };
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            get.read_exact(&mut buf[..n])
                .with_context(|| format!("fetching {}", shown(e)))?;
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", shown(e)))?;
            left -= n as u64;
        }
        let fd: BorrowedFd<'_> = out.as_fd();
        rustix::fs::fchmod(fd, mode(e.mode))
            .and_then(|()| rustix::fs::futimens(fd, &times(e.mtime)))
            .with_context(|| format!("setting the attributes of {}", shown(e)))?;
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(size, Ordering::Relaxed);
    }
    let Some(mut get) = pack else {
        return Ok(GetStats::default());
    };
    // The end: the agent's word that the whole pack checked out.
    let mut rest = Vec::new();
    get.read_to_end(&mut rest)
        .context("fetching the tree's pack")?;
    if !rest.is_empty() {
        bail!("the tree's pack is longer than its files");
    }
    let stats = get.stats().unwrap_or_default();
    drop(get);
    if let (Some(c), Some(p)) = (&mut client, manifest.pack) {
        c.done(&p.oid.to_string())?;
    }
    Ok(stats)
}

fn mode(m: u16) -> Mode {
    Mode::from_raw_mode(u32::from(m & RESTORED_MODE))
}

fn times(t: Mtime) -> Timestamps {
    let ts = Timespec {
        tv_sec: t.secs,
        tv_nsec: i64::from(t.nanos) as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

fn shown(e: &Entry) -> String {
    String::from_utf8_lossy(&e.path).into_owned()
}
