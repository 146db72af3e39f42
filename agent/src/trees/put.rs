//! A folder into a tree: walked beneath a handle of the root (no link is
//! followed, no other filesystem's special files read); the small files
//! streamed into the tree's pack in manifest order while each large file
//! is put by reference (the agent hashes it where it is); then the
//! manifest put as the tree's object.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use dot_store::chunker::describe;
use dot_store::tree::{
    Entry, Kind, MAX_ENTRIES, MAX_PATH, Manifest, Mtime, PACK_CHUNKER, PACK_LIMIT, Pack,
};
use dot_store::{ChunkerSpec, Descriptor, Ticket};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::api::PutResult;
use crate::client::Client;

/// Large files put at once (each on its own connection to the agent).
pub const PUT_WORKERS: usize = 4;

/// What a tree's put made.
#[derive(Debug)]
pub struct TreePut {
    /// The manifest's put: its OID and the tree's ticket.
    pub result: PutResult,
    /// Entries in the tree.
    pub entries: usize,
    /// Files in it, and their bytes.
    pub files: usize,
    /// Bytes of its files.
    pub bytes: u64,
    /// What was left out, and why (sockets, FIFOs, devices).
    pub skipped: Vec<String>,
}

/// A file's content as put: size, OID, descriptor-list digest.
type Content = (u64, dot_store::Oid, [u8; 32]);

/// An entry found, its file's content not yet put.
struct Found {
    entry: Entry,
    /// For a file: where it is, and its (device, inode) and size when
    /// walked.
    file: Option<(PathBuf, (u64, u64), u64)>,
}

/// A folder walked: its root's attributes and every entry, in manifest
/// order.
struct Walked {
    root_mode: u16,
    root_mtime: Mtime,
    found: Vec<Found>,
    skipped: Vec<String>,
    /// Files in it.
    files: usize,
}

/// Walks the folder `root` beneath a handle of it.
fn walk_root(root: &Path) -> anyhow::Result<Walked> {
    let root =
        std::fs::canonicalize(root).with_context(|| format!("reading {}", root.display()))?;
    let dir = rustix::fs::open(
        &root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", root.display()))?;
    let st = rustix::fs::fstat(&dir)?;
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    walk(&dir, &root, &[], &mut found, &mut skipped)?;
    // Manifest order, which is the pack's.
    found.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    Ok(Walked {
        root_mode: (st.st_mode & 0o7777) as u16,
        root_mtime: Mtime {
            secs: st.st_mtime,
            nanos: st.st_mtime_nsec as u32,
        },
        files: found.iter().filter(|f| f.file.is_some()).count(),
        found,
        skipped,
    })
}

/// Files put so far of all, for `progress(done, all)`.
struct Counted<'a, P> {
    done: AtomicUsize,
    all: usize,
    progress: &'a P,
}

impl<P: Fn(usize, usize) + Sync> Counted<'_, P> {
    fn one(&self) {
        (self.progress)(self.done.fetch_add(1, Ordering::Relaxed) + 1, self.all);
    }
}

/// Puts the folder `root` as a tree through the agent at `socket`;
/// `progress(files_done, files)` is called as files are put.
///
/// # Errors
/// A folder that cannot be read or is too large for a manifest; the
/// agent's errors.
pub fn put_tree(
    socket: Option<&Path>,
    root: &Path,
    progress: impl Fn(usize, usize) + Sync,
) -> anyhow::Result<TreePut> {
    let walked = walk_root(root)?;
    let counted = Counted {
        done: AtomicUsize::new(0),
        all: walked.files,
        progress: &progress,
    };
    let all: Vec<&Found> = walked.found.iter().collect();
    let mut put = put_entries(socket, &walked, &all, &counted)?;
    put.skipped = walked.skipped;
    Ok(put)
}

/// The first segment's bytes of files; each next one doubles, up to
/// [`SEGMENT_BYTES`].
const FIRST_SEGMENT_BYTES: u64 = 1 << 20;
/// Most bytes of files in one segment.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// The first segment's entries; each next one doubles, up to
/// [`SEGMENT_ENTRIES`].
const FIRST_SEGMENT_ENTRIES: usize = 512;
/// Most entries of one segment.
const SEGMENT_ENTRIES: usize = 16384;

/// What a put in segments made, besides each segment.
#[derive(Debug)]
pub struct Segmented {
    /// Segments put.
    pub segments: usize,
    /// Entries in the folder, files in it and their bytes.
    pub entries: usize,
    /// Files in it.
    pub files: usize,
    /// Bytes of its files.
    pub bytes: u64,
    /// What was left out, and why.
    pub skipped: Vec<String>,
}

/// Puts the folder `root` as a series of trees, its **segments**, and
/// hands each to `each` as soon as it is made, so a copy can fetch one
/// while the next is read: each holds a run of the folder's entries in
/// manifest order (the first small, each next one larger, up to
/// [`SEGMENT_BYTES`]) and the folders above them, and is a valid tree on
/// its own; together they hold every entry once (folders in every
/// segment below them). `segment_bytes`, if given, caps each segment's
/// bytes of files.
///
/// # Errors
/// As [`put_tree`]; `each`'s error stops the put.
pub fn put_tree_segments(
    socket: Option<&Path>,
    root: &Path,
    segment_bytes: Option<u64>,
    progress: impl Fn(usize, usize) + Sync,
    mut each: impl FnMut(TreePut) -> anyhow::Result<()>,
) -> anyhow::Result<Segmented> {
    let walked = walk_root(root)?;
    let counted = Counted {
        done: AtomicUsize::new(0),
        all: walked.files,
        progress: &progress,
    };
    let cap = segment_bytes.unwrap_or(SEGMENT_BYTES).max(1);
    let folders: std::collections::HashMap<&[u8], usize> = walked
        .found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.entry.kind == Kind::Dir)
        .map(|(i, f)| (f.entry.path.as_slice(), i))
        .collect();
    let mut out = Segmented {
        segments: 0,
        entries: walked.found.len(),
        files: walked.files,
        bytes: 0,
        skipped: walked.skipped.clone(),
    };
    let (mut start, mut k) = (0usize, 0u32);
    loop {
        let (max_bytes, max_entries) = (
            (FIRST_SEGMENT_BYTES << k.min(16)).min(cap),
            (FIRST_SEGMENT_ENTRIES << k.min(16)).min(SEGMENT_ENTRIES),
        );
        let (mut end, mut bytes) = (start, 0u64);
        while end < walked.found.len() && bytes < max_bytes && end - start < max_entries {
            bytes += walked.found[end].file.as_ref().map_or(0, |f| f.2);
            end += 1;
        }
        // The folders above the run that it does not hold.
        let mut above = std::collections::BTreeSet::new();
        for f in &walked.found[start..end] {
            let mut parent = f.entry.parent();
            while let Some(&i) = folders.get(parent) {
                if i >= start || !above.insert(i) {
                    break;
                }
                parent = walked.found[i].entry.parent();
            }
        }
        let segment: Vec<&Found> = above
            .into_iter()
            .map(|i| &walked.found[i])
            .chain(&walked.found[start..end])
            .collect();
        let put = put_entries(socket, &walked, &segment, &counted)?;
        out.bytes += put.bytes;
        out.segments += 1;
        each(put)?;
        if end == walked.found.len() {
            return Ok(out);
        }
        (start, k) = (end, k + 1);
    }
}

/// Puts `found` (entries of the folder `walked`, in manifest order, every
/// folder above them among them) as one tree.
fn put_entries<P: Fn(usize, usize) + Sync>(
    socket: Option<&Path>,
    walked: &Walked,
    found: &[&Found],
    counted: &Counted<'_, P>,
) -> anyhow::Result<TreePut> {
    let is_large = |f: &Found| {
        f.file
            .as_ref()
            .is_some_and(|(_, _, size)| *size > PACK_LIMIT)
    };
    let files: Vec<usize> = (0..found.len()).filter(|&i| is_large(found[i])).collect();
    let packed: Vec<&Found> = found
        .iter()
        .copied()
        .filter(|f| f.file.is_some() && !is_large(f))
        .collect();
    let all_files = files.len() + packed.len();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Content>>> = Mutex::new(vec![None; found.len()]);
    let workers = PUT_WORKERS.min(files.len());
    let pack = std::thread::scope(|s| -> anyhow::Result<Option<(Pack, Vec<Descriptor>)>> {
        let pack = s.spawn(|| put_pack(socket, &packed, || counted.one()));
        let mut handles = Vec::new();
        for _ in 0..workers {
            handles.push(s.spawn(|| -> anyhow::Result<()> {
                let mut client = Client::connect(socket)?;
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = files.get(at) else {
                        return Ok(());
                    };
                    let Some((path, id, _)) = &found[i].file else {
                        continue;
                    };
                    let put = put_one(&mut client, path, *id)?;
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(put);
                    counted.one();
                }
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a put worker panicked"))??;
        }
        pack.join()
            .map_err(|_| anyhow::anyhow!("the pack's put panicked"))?
    })?;
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let (pack, pack_chunks) = match pack {
        Some((pack, chunks)) => (Some(pack), chunks),
        None => (None, Vec::new()),
    };
    let mut bytes = pack.map_or(0, |p| p.size);
    let entries: Vec<Entry> = found
        .iter()
        .zip(results)
        .map(|(f, put)| {
            let mut entry = f.entry.clone();
            if let Some((size, oid, list_digest)) = put {
                bytes += size;
                entry.kind = Kind::File {
                    size,
                    oid,
                    list_digest,
                };
            }
            entry
        })
        .collect();
    let manifest = Manifest::new(
        walked.root_mode,
        walked.root_mtime,
        pack,
        entries,
        pack_chunks,
    )?;
    let mut client = Client::connect(socket)?;
    let result = client.put_tree(&manifest.encode())?;
    Ok(TreePut {
        result,
        entries: manifest.entries().len(),
        files: all_files,
        bytes,
        skipped: Vec::new(),
    })
}

/// Streams the small files `packed` (in manifest order) into one object,
/// the tree's pack, each file cut into chunks on its own; `None` when they
/// hold no byte. Each is checked to be the file walked, of the size
/// walked. Returns the pack and its descriptor list (each file's chunks,
/// described here as the agent cuts them, for the manifest).
fn put_pack(
    socket: Option<&Path>,
    packed: &[&Found],
    each: impl Fn(),
) -> anyhow::Result<Option<(Pack, Vec<Descriptor>)>> {
    use std::io::{Read, Write};
    let size: u64 = packed
        .iter()
        .filter_map(|f| f.file.as_ref())
        .map(|f| f.2)
        .sum();
    if size == 0 {
        packed.iter().for_each(|_| each());
        return Ok(None);
    }
    let spec: ChunkerSpec = PACK_CHUNKER.parse()?;
    let mut client = Client::connect(socket)?;
    let mut put = client.put_segments(PACK_CHUNKER)?;
    let mut chunks: Vec<Descriptor> = Vec::new();
    let mut at = 0u64;
    // Small files are mostly opening and path walks: read (and cut and
    // hash) several at once, written in order.
    let batches = batches(packed);
    read_in_order(
        &batches,
        |batch| {
            let chunker = spec.build()?;
            let mut bytes = Vec::new();
            let mut files = Vec::with_capacity(batch.len());
            for f in batch.iter() {
                let Some((path, id, size)) = &f.file else {
                    continue;
                };
                let start = bytes.len();
                open_walked(path, *id)?
                    .take(size + 1)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("reading {}", path.display()))?;
                if (bytes.len() - start) as u64 != *size {
                    bail!("{} changed while the tree was put", path.display());
                }
                files.push(describe(chunker.as_ref(), &bytes[start..]));
            }
            Ok((bytes, files))
        },
        |batch, (bytes, files)| {
            let mut ends = Vec::with_capacity(files.len());
            let mut end = at;
            for descs in files {
                for mut d in descs {
                    d.offset += end;
                    chunks.push(d);
                }
                end = chunks.last().map_or(end, |d| d.offset + u64::from(d.len));
                ends.push(end);
            }
            put.end_segments(&ends)?;
            put.write_all(&bytes)?;
            at += bytes.len() as u64;
            batch.iter().for_each(|_| each());
            Ok(())
        },
    )?;
    let r = put.commit()?;
    let ticket: Ticket = r.ticket.parse()?;
    if r.size != size {
        bail!("the agent made a pack of {} bytes of {size}", r.size);
    }
    let list_digest = ticket
        .list_digest()
        .context("the agent's ticket has no descriptor-list digest")?;
    if list_digest != dot_store::descriptor::list_digest(&chunks) {
        bail!("the agent cut the tree's pack otherwise than its files' ends");
    }
    Ok(Some((
        Pack {
            size,
            oid: ticket.oid(),
            list_digest,
        },
        chunks,
    )))
}

/// Files read at once into the pack.
const PACK_READERS: usize = 3;
/// Batches read ahead of the one being written.
const PACK_WINDOW: usize = 8;

/// Consecutive small files, at most 64 or 1 MiB a batch.
fn batches<'a, 'b>(packed: &'a [&'b Found]) -> Vec<&'a [&'b Found]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, f) in packed.iter().enumerate() {
        bytes += f.file.as_ref().map_or(0, |f| f.2);
        if i + 1 - start >= 64 || bytes >= 1 << 20 {
            out.push(&packed[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < packed.len() {
        out.push(&packed[start..]);
    }
    out
}

/// Reads `items` with `read` on [`PACK_READERS`] threads, at most
/// [`PACK_WINDOW`] ahead, and hands each result to `write` in order.
/// The first error stops both.
fn read_in_order<T: Sync, R: Send>(
    items: &[T],
    read: impl Fn(&T) -> anyhow::Result<R> + Sync,
    mut write: impl FnMut(&T, R) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    use std::sync::Condvar;
    struct State<R> {
        next: usize,
        written: usize,
        stop: bool,
        done: BTreeMap<usize, anyhow::Result<R>>,
    }
    let state = Mutex::new(State::<R> {
        next: 0,
        written: 0,
        stop: false,
        done: BTreeMap::new(),
    });
    let changed = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|s| {
        for _ in 0..PACK_READERS.min(items.len()) {
            s.spawn(|| {
                loop {
                    let mut st = lock();
                    while !st.stop && st.next < items.len() && st.next >= st.written + PACK_WINDOW {
                        st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    if st.stop || st.next >= items.len() {
                        return;
                    }
                    let at = st.next;
                    st.next += 1;
                    drop(st);
                    let got = read(&items[at]);
                    lock().done.insert(at, got);
                    changed.notify_all();
                }
            });
        }
        let result = (|| {
            for (i, item) in items.iter().enumerate() {
                let mut st = lock();
                let got = loop {
                    if let Some(got) = st.done.remove(&i) {
                        break got;
                    }
                    st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
                };
                st.written = i + 1;
                drop(st);
                changed.notify_all();
                write(item, got?)?;
            }
            Ok(())
        })();
        lock().stop = true;
        changed.notify_all();
        result
    })
}

/// `path` opened for reading, checked to be the regular file walked
/// (`id`: device and inode), never through a link.
fn open_walked(path: &Path, id: (u64, u64)) -> anyhow::Result<std::fs::File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", path.display()))?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || (st.st_dev, st.st_ino) != id
    {
        bail!("{} was replaced while the tree was put", path.display());
    }
    Ok(std::fs::File::from(fd))
}

/// Puts one file by reference, checking it is still the file walked.
fn put_one(client: &mut Client, path: &Path, id: (u64, u64)) -> anyhow::Result<Content> {
    let file = open_walked(path, id)?;
    let r = client
        .put_file(&file, path)
        .with_context(|| format!("putting {}", path.display()))?;
    let ticket: Ticket = r.ticket.parse()?;
    let digest = ticket
        .list_digest()
        .context("the agent's ticket has no descriptor-list digest")?;
    Ok((r.size, ticket.oid(), digest))
}

/// Walks the folder open as `dir` (at `abs`, path `rel` in the tree),
/// depth first.
fn walk(
    dir: &OwnedFd,
    abs: &Path,
    rel: &[u8],
    found: &mut Vec<Found>,
    skipped: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut list =
        rustix::fs::Dir::read_from(dir).with_context(|| format!("listing {}", abs.display()))?;
    for e in list.by_ref() {
        let e = e.with_context(|| format!("listing {}", abs.display()))?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    for name in names {
        let here = abs.join(OsStr::from_bytes(&name));
        let mut path = rel.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        if path.len() > MAX_PATH {
            bail!("{}: a path longer than {MAX_PATH} bytes", here.display());
        }
        if found.len() >= MAX_ENTRIES {
            bail!("{}: more than {MAX_ENTRIES} entries", abs.display());
        }
        let st = rustix::fs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("reading {}", here.display()))?;
        let entry = |kind| Entry {
            path: path.clone(),
            mode: (st.st_mode & 0o7777) as u16,
            mtime: Mtime {
                secs: st.st_mtime,
                nanos: st.st_mtime_nsec as u32,
            },
            kind,
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                found.push(Found {
                    entry: entry(Kind::Dir),
                    file: None,
                });
                let sub = rustix::fs::openat(
                    dir,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .with_context(|| format!("opening {}", here.display()))?;
                walk(&sub, &here, &path, found, skipped)?;
            }
            FileType::RegularFile => {
                let size = st.st_size as u64;
                found.push(Found {
                    // A large file's kind is filled in once it is put.
                    entry: entry(Kind::Packed { size, offset: 0 }),
                    file: Some((here, (st.st_dev, st.st_ino), size)),
                });
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir.as_fd(), name.as_slice(), Vec::new())
                    .with_context(|| format!("reading the link {}", here.display()))?;
                found.push(Found {
                    entry: entry(Kind::Symlink {
                        target: target.into_bytes(),
                    }),
                    file: None,
                });
            }
            other => skipped.push(format!("{} ({other:?})", here.display())),
        }
    }
    Ok(())
}
