//! Portable storage: a DOT store on a removable filesystem (a USB key),
//! and the transfer plugin that reads objects from it.
//!
//! The on-device layout (docs/portable.md), under the filesystem's root:
//!
//! ```text
//! .dot/chunks/abc/abc0123...ef      one file per chunk, named by the
//!                                   lowercase hex of its BLAKE3 hash, in
//!                                   4096 fan-out folders (its first three
//!                                   hex digits)
//! .dot/objects/dot1-sha256-...      one descriptor file per object
//! .dot/tmp/                         files being written
//! ```
//!
//! Names use only `[0-9a-z-]`, so the layout is safe on vfat and exFAT.
//! Every file is written under `tmp/` and renamed into place, so a key
//! pulled mid-write holds whole files or none. A descriptor file is the
//! magic `DOTDESC1`, the object's size (u64 LE), its chunk count (u32 LE),
//! then per chunk its hash (32 bytes) and length (u32 LE); offsets follow
//! from the lengths.
//!
//! A key is someone else's filesystem, and the agent runs as root
//! (docs/security.md, "Keys"). So nothing on it is reached by path: `.dot`
//! is opened once per operation relative to the mount point, refused if it
//! is a symbolic link, and every other file and folder is reached from
//! that directory handle with `openat2` and `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV` (no symbolic link anywhere, not
//! even the last component; nothing off the key's filesystem), and made,
//! renamed and deleted with `mkdirat`, `renameat` and `unlinkat` relative
//! to directory handles. A file is opened for reading only once an `O_PATH`
//! look at it shows a regular file (so no FIFO is waited on and no device
//! driver called), and only the file looked at. A kernel without `openat2`
//! (before Linux 5.6) is refused, not worked around. Everything read is
//! bounded by what was checked first: a descriptor file's length and count
//! must agree with each other and with its size before a record is read,
//! and records are checked as they are read; a chunk file's length must be
//! its descriptor's before a byte is read, and it must hash to its name
//! before a byte is handed on.
//!
//! One job per file: `mod.rs` is the [`Device`] (the layout, reading and
//! writing it, export); `beneath` holds the primitives that reach files on
//! a key without following links or leaving it; `descriptor_file` reads
//! and checks descriptor files; `source` is the [`PortableSource`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dot_store::{ChunkHash, Descriptor, MAX_CHUNK_LEN, Oid, Store, Token, VerifiedChunk};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

mod beneath;
mod descriptor_file;
mod source;

use beneath::*;
use descriptor_file::*;
pub use source::PortableSource;

/// The folder at the filesystem's root that holds the store.
pub const DIR: &str = ".dot";
/// The file in `.dot/` that marks a key as an outbox (docs/portable.md).
pub const OUTBOX: &str = "outbox";
/// Chunks one descriptor file may list (an object of 64 TiB in 4 MiB...
/// or 256 GiB in 16 KiB chunks); bounds the allocation before reading.
pub const MAX_CHUNKS: u32 = 1 << 24;
/// How long a key may take to describe an object before it counts as a
/// failed source (the read goes on in its blocking thread, unwaited for).
pub const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// Reads a descriptor file held in memory, as [`Device`] reads one it
/// opened on a key: for the fuzz targets of `fuzz/`.
///
/// # Errors
/// `InvalidData` for bytes that are not a valid descriptor file.
#[doc(hidden)]
pub fn parse_descriptor_file(bytes: &[u8]) -> io::Result<(u64, Vec<Descriptor>)> {
    read_descriptor_file(bytes, bytes.len() as u64, Path::new("descriptor file"))
}

/// The bytes [`Device::write_descriptors`] writes for `size` and `descs`.
#[doc(hidden)]
pub fn descriptor_file_bytes(size: u64, descs: &[Descriptor]) -> Vec<u8> {
    encode_descriptor_file(size, descs)
}

/// A DOT store on a mounted device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Where the device is mounted.
    mount: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The folders of a key's store, open for writing (made if missing).
struct Writable {
    dot: OwnedFd,
    chunks: OwnedFd,
    objects: OwnedFd,
    tmp: OwnedFd,
}

impl Device {
    /// The store on the filesystem mounted at `mount`.
    ///
    /// # Errors
    /// `NotFound` when `mount` holds no `.dot` folder; `InvalidData` when
    /// its `.dot` is a symbolic link or on another filesystem;
    /// `Unsupported` when the kernel lacks `openat2`.
    pub fn open(mount: &Path) -> io::Result<Device> {
        let device = Device {
            mount: mount.to_owned(),
        };
        device.dot()?;
        Ok(device)
    }

    /// The store on `mount`, made if missing; files a pulled write left in
    /// its `tmp/` an hour ago or more are deleted.
    ///
    /// # Errors
    /// As [`Device::open`]; when the folders cannot be made (read-only or
    /// full device).
    pub fn create(mount: &Path) -> io::Result<Device> {
        let device = Device {
            mount: mount.to_owned(),
        };
        match rfs::mkdirat(device.mount_fd()?, DIR, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(refused(&mount.join(DIR), e)),
        }
        let w = device.writable()?;
        clean_tmp(w.tmp.as_fd());
        Ok(device)
    }

    /// Where the device is mounted.
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// `rel` under the device's `.dot`, for messages.
    fn shown(&self, rel: &str) -> PathBuf {
        self.mount.join(DIR).join(rel)
    }

    /// The mount point: the agent's own path (its mount table, its
    /// config, its client's command), the one path resolved as usual.
    fn mount_fd(&self) -> io::Result<OwnedFd> {
        rfs::open(
            &self.mount,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("{}: {e}", self.mount.display()))
        })
    }

    /// The device's `.dot`, opened relative to the mount point: a real
    /// folder on the mounted filesystem, never a symbolic link. Opened per
    /// operation, not held, so that the key can be ejected.
    fn dot(&self) -> io::Result<OwnedFd> {
        let mount = self.mount_fd()?;
        rfs::openat2(&mount, DIR, DIR_FLAGS, Mode::empty(), RESOLVE).map_err(|e| {
            match link_or(mount.as_fd(), DIR, e) {
                Errno::NOENT => io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} holds no DOT store", self.mount.display()),
                ),
                e => refused(&self.mount.join(DIR), e),
            }
        })
    }

    fn writable(&self) -> io::Result<Writable> {
        let dot = self.dot()?;
        let sub = |name: &str| make_dir(dot.as_fd(), name, &self.shown(name));
        Ok(Writable {
            chunks: sub("chunks")?,
            objects: sub("objects")?,
            tmp: sub("tmp")?,
            dot,
        })
    }

    /// The file that holds (or would hold) the chunk with `hash`, for
    /// messages and tests: the device itself never opens a key's path.
    pub fn chunk_path(&self, hash: &ChunkHash) -> PathBuf {
        self.shown(&chunk_rel(hash))
    }

    /// Writes `data` to `name` in the folder `parent` through a new file in
    /// `tmp/`, `fdatasync`ed, and a rename (which replaces whatever entry
    /// had the name, a symbolic link itself and not what it points to).
    fn write_file(
        w: &Writable,
        parent: BorrowedFd<'_>,
        name: &str,
        data: &[u8],
        shown: &Path,
    ) -> io::Result<()> {
        let token = Token::random().map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = format!("w-{}", hex(&token.0));
        let fd = rfs::openat2(
            &w.tmp,
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
            RESOLVE,
        )
        .map_err(|e| refused(shown, e))?;
        let mut f = File::from(fd);
        let done = f
            .write_all(data)
            .and_then(|()| f.sync_data())
            .and_then(|()| {
                rfs::renameat(&w.tmp, &tmp, parent, name).map_err(|e| refused(shown, e))
            });
        if done.is_err() {
            let _ = rfs::unlinkat(&w.tmp, &tmp, AtFlags::empty());
        }
        done
    }

    /// Whether the device holds a chunk file for `hash` (a regular file of
    /// that name; not read).
    pub fn has_chunk(&self, hash: &ChunkHash) -> bool {
        self.dot()
            .is_ok_and(|dot| is_regular(dot.as_fd(), &chunk_rel(hash)))
    }

    /// Whether the device's `.dot/outbox` marks it as an outbox (a regular
    /// file).
    pub fn is_outbox(&self) -> bool {
        self.dot().is_ok_and(|dot| is_regular(dot.as_fd(), OUTBOX))
    }

    /// Stores a chunk (replacing a file of that name).
    ///
    /// # Errors
    /// I/O errors of the device.
    pub fn write_chunk(&self, hash: &ChunkHash, data: &[u8]) -> io::Result<()> {
        self.write_chunk_in(&self.writable()?, hash, data)
    }

    fn write_chunk_in(&self, w: &Writable, hash: &ChunkHash, data: &[u8]) -> io::Result<()> {
        let name = hex(&hash.0);
        let fan = make_dir(
            w.chunks.as_fd(),
            &name[..3],
            &self.shown(&format!("chunks/{}", &name[..3])),
        )?;
        Self::write_file(w, fan.as_fd(), &name, data, &self.chunk_path(hash))
    }

    /// Stores `oid`'s descriptor file.
    ///
    /// # Errors
    /// I/O errors of the device.
    pub fn write_descriptors(&self, oid: Oid, size: u64, descs: &[Descriptor]) -> io::Result<()> {
        self.write_descriptors_in(&self.writable()?, oid, size, descs)
    }

    fn write_descriptors_in(
        &self,
        w: &Writable,
        oid: Oid,
        size: u64,
        descs: &[Descriptor],
    ) -> io::Result<()> {
        let buf = encode_descriptor_file(size, descs);
        let name = oid.to_string();
        let shown = self.shown(&format!("objects/{name}"));
        Self::write_file(w, w.objects.as_fd(), &name, &buf, &shown)
    }

    /// The objects whose descriptor files the device holds (by name).
    pub fn objects(&self) -> Vec<Oid> {
        let Ok(dot) = self.dot() else {
            return Vec::new();
        };
        let Ok(dir) = open_dir(dot.as_fd(), "objects", &self.shown("objects")) else {
            return Vec::new();
        };
        let Ok(mut entries) = rfs::Dir::new(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(Ok(e)) = entries.read() {
            if let Some(oid) = e.file_name().to_str().ok().and_then(|n| n.parse().ok()) {
                out.push(oid);
            }
        }
        out
    }

    /// `oid`'s size and descriptors, checked.
    ///
    /// # Errors
    /// `NotFound` when the device lacks the object; `InvalidData` when its
    /// descriptor file is malformed, or not a regular file on the key.
    pub fn read_descriptors(&self, oid: Oid) -> io::Result<(u64, Vec<Descriptor>)> {
        let dot = self.dot()?;
        let rel = format!("objects/{oid}");
        let shown = self.shown(&rel);
        let (f, len) = open_regular(dot.as_fd(), &rel, &shown)?;
        read_descriptor_file(f, len, &shown)
    }

    /// The chunk `desc` names (chunk `index` of its object), verified;
    /// `Ok(None)` if the device lacks it.
    ///
    /// # Errors
    /// `InvalidData` for a chunk file of the wrong length or hash (corrupt)
    /// or one that is not a regular file on the key (refused); other I/O
    /// errors of the device (yanked: `EIO`, `ENOTCONN`...).
    pub fn read_chunk(&self, index: u32, desc: &Descriptor) -> io::Result<Option<VerifiedChunk>> {
        let dot = match self.dot() {
            Ok(dot) => dot,
            // Unmounted: the store is no longer there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        self.read_chunk_at(dot.as_fd(), index, desc)
    }

    fn read_chunk_at(
        &self,
        dot: BorrowedFd<'_>,
        index: u32,
        desc: &Descriptor,
    ) -> io::Result<Option<VerifiedChunk>> {
        let rel = chunk_rel(&desc.hash);
        let shown = self.shown(&rel);
        let (f, len) = match open_regular(dot, &rel, &shown) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let corrupt = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is corrupt: {why}", shown.display()),
            )
        };
        if desc.len > MAX_CHUNK_LEN || len != u64::from(desc.len) {
            return Err(corrupt(format!(
                "{len} bytes, where its chunk has {}",
                desc.len
            )));
        }
        let mut data = Vec::with_capacity(desc.len as usize);
        f.take(len).read_to_end(&mut data)?;
        if data.len() as u64 != len {
            return Err(corrupt(format!("ends at {} of {len} bytes", data.len())));
        }
        VerifiedChunk::verify(index, *desc, data.into())
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Copies the complete local object `oid` from `store` to the device:
    /// its chunks (those not there yet), then its descriptor file, so an
    /// object is listed only once all of it is there. `progress` is told
    /// the bytes done after each chunk.
    ///
    /// # Errors
    /// Store errors (the object is not complete here), device I/O errors.
    pub fn export(
        &self,
        store: &Store,
        oid: Oid,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, ExportError> {
        let info = store.info(oid)?.ok_or(ExportError::NotHere(oid))?;
        if !info.complete {
            return Err(ExportError::NotHere(oid));
        }
        let descs = store.descriptors(oid)?;
        let w = self.writable()?;
        let mut done = 0u64;
        for (i, d) in descs.iter().enumerate() {
            // A chunk file already there is kept only if it verifies: an
            // export again repairs a damaged key.
            if !matches!(self.read_chunk_at(w.dot.as_fd(), i as u32, d), Ok(Some(_))) {
                let data = store.read_chunk(oid, i as u32)?;
                self.write_chunk_in(&w, &d.hash, &data)?;
            }
            done += u64::from(d.len);
            progress(done, info.size);
        }
        self.write_descriptors_in(&w, oid, info.size, &descs)?;
        Ok(info.size)
    }
}

/// Where the chunk file for `hash` is, under `.dot`.
fn chunk_rel(hash: &ChunkHash) -> String {
    let name = hex(&hash.0);
    format!("chunks/{}/{name}", &name[..3])
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The object is not complete in the local store.
    #[error("{0} is not complete here")]
    NotHere(Oid),
    /// Reading the local store failed.
    #[error(transparent)]
    Store(#[from] dot_store::Error),
    /// Writing the device failed (full, read-only, pulled, refused).
    #[error("writing the device: {0}")]
    Device(#[from] io::Error),
}
