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
//! from the lengths. Everything read from a key is bounded and checked: a
//! descriptor file must tile the size exactly, and a chunk file must hash
//! to its name before a byte of it is handed on.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dot_store::descriptor::check_descriptors;
use dot_store::{ChunkHash, Descriptor, MAX_CHUNK_LEN, Oid, Store, Token, VerifiedChunk};

use crate::error::TransferError;
use crate::transfer::{BoxFuture, ChunkEvent, ChunkSink, Described, Transfer};

/// The folder at the filesystem's root that holds the store.
pub const DIR: &str = ".dot";
const MAGIC: &[u8; 8] = b"DOTDESC1";
/// Chunks one descriptor file may list (an object of 64 TiB in 4 MiB...
/// or 256 GiB in 16 KiB chunks); bounds the allocation before reading.
pub const MAX_CHUNKS: u32 = 1 << 24;

/// A DOT store on a mounted device.
#[derive(Debug, Clone)]
pub struct Device {
    /// The `.dot` folder.
    root: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Device {
    /// The store on the filesystem mounted at `mount`.
    ///
    /// # Errors
    /// When `mount` holds no `.dot` folder.
    pub fn open(mount: &Path) -> io::Result<Device> {
        let root = mount.join(DIR);
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} holds no DOT store", mount.display()),
            ));
        }
        Ok(Device { root })
    }

    /// The store on `mount`, made if missing.
    ///
    /// # Errors
    /// When the folders cannot be made (read-only or full device).
    pub fn create(mount: &Path) -> io::Result<Device> {
        let root = mount.join(DIR);
        for sub in ["chunks", "objects", "tmp"] {
            fs::create_dir_all(root.join(sub))?;
        }
        // Files left in tmp/ by a write the key was pulled from (an hour
        // old: not a write going on now).
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(3600));
                if stale {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(Device { root })
    }

    /// Where the device is mounted.
    pub fn mount_point(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    /// The file that holds (or would hold) the chunk with `hash`.
    pub fn chunk_path(&self, hash: &ChunkHash) -> PathBuf {
        let name = hex(&hash.0);
        self.root.join("chunks").join(&name[..3]).join(name)
    }

    fn object_path(&self, oid: Oid) -> PathBuf {
        self.root.join("objects").join(oid.to_string())
    }

    /// Writes `data` to `dest` through a temporary file and a rename.
    fn write_file(&self, dest: &Path, data: &[u8]) -> io::Result<()> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp_dir = self.root.join("tmp");
        fs::create_dir_all(&tmp_dir)?;
        let tmp = tempfile_in(&tmp_dir)?;
        let mut f = File::create(&tmp)?;
        let written = f.write_all(data).and_then(|()| f.sync_data());
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, dest)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Whether the device holds the chunk with `hash` (by name only).
    pub fn has_chunk(&self, hash: &ChunkHash) -> bool {
        self.chunk_path(hash).is_file()
    }

    /// Stores a chunk (replacing a file of that name).
    ///
    /// # Errors
    /// I/O errors of the device.
    pub fn write_chunk(&self, hash: &ChunkHash, data: &[u8]) -> io::Result<()> {
        self.write_file(&self.chunk_path(hash), data)
    }

    /// Stores `oid`'s descriptor file.
    ///
    /// # Errors
    /// I/O errors of the device.
    pub fn write_descriptors(&self, oid: Oid, size: u64, descs: &[Descriptor]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(20 + descs.len() * 36);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(&(descs.len() as u32).to_le_bytes());
        for d in descs {
            buf.extend_from_slice(&d.hash.0);
            buf.extend_from_slice(&d.len.to_le_bytes());
        }
        self.write_file(&self.object_path(oid), &buf)
    }

    /// The objects whose descriptor files the device holds.
    pub fn objects(&self) -> Vec<Oid> {
        fs::read_dir(self.root.join("objects"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `oid`'s size and descriptors, checked.
    ///
    /// # Errors
    /// `NotFound` when the device lacks the object; `InvalidData` when its
    /// descriptor file is malformed.
    pub fn read_descriptors(&self, oid: Oid) -> io::Result<(u64, Vec<Descriptor>)> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let mut f = File::open(self.object_path(oid))?;
        let mut head = [0u8; 20];
        f.read_exact(&mut head)
            .map_err(|_| bad("descriptor file too short"))?;
        if &head[..8] != MAGIC {
            return Err(bad("not a descriptor file"));
        }
        let size = u64::from_le_bytes(head[8..16].try_into().map_err(|_| bad("size"))?);
        let count = u32::from_le_bytes(head[16..20].try_into().map_err(|_| bad("count"))?);
        if count > MAX_CHUNKS || u64::from(count) > size.max(1) {
            return Err(bad("too many chunks"));
        }
        let want = u64::from(count) * 36;
        if f.metadata()?.len() != 20 + want {
            return Err(bad("descriptor file length does not match its count"));
        }
        let mut body = vec![0u8; want as usize];
        f.read_exact(&mut body)?;
        let mut descs = Vec::with_capacity(count as usize);
        let mut offset = 0u64;
        for rec in body.chunks_exact(36) {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&rec[..32]);
            let len = u32::from_le_bytes(rec[32..36].try_into().map_err(|_| bad("length"))?);
            descs.push(Descriptor {
                hash: ChunkHash(hash),
                offset,
                len,
            });
            offset = offset.saturating_add(u64::from(len));
        }
        check_descriptors(size, &descs).map_err(|why| bad(&why))?;
        Ok((size, descs))
    }

    /// The chunk `desc` names (chunk `index` of its object), verified;
    /// `Ok(None)` if the device lacks it.
    ///
    /// # Errors
    /// `InvalidData` for a chunk file of the wrong length or hash (corrupt);
    /// other I/O errors of the device (yanked: `EIO`, `ENOTCONN`...).
    pub fn read_chunk(&self, index: u32, desc: &Descriptor) -> io::Result<Option<VerifiedChunk>> {
        let path = self.chunk_path(&desc.hash);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = desc.len.min(MAX_CHUNK_LEN) as usize;
        let mut data = Vec::with_capacity(len + 1);
        // One byte more than wanted tells a too-long file.
        (&mut f).take(len as u64 + 1).read_to_end(&mut data)?;
        VerifiedChunk::verify(index, *desc, data.into())
            .map(Some)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is corrupt: {e}", path.display()),
                )
            })
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
        let mut done = 0u64;
        for (i, d) in descs.iter().enumerate() {
            // A chunk file already there is kept only if it verifies: an
            // export again repairs a damaged key.
            if !matches!(self.read_chunk(i as u32, d), Ok(Some(_))) {
                let data = store.read_chunk(oid, i as u32)?;
                self.write_chunk(&d.hash, &data)?;
            }
            done += u64::from(d.len);
            progress(done, info.size);
        }
        self.write_descriptors(oid, info.size, &descs)?;
        Ok(info.size)
    }
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
    /// Writing the device failed (full, read-only, pulled).
    #[error("writing the device: {0}")]
    Device(#[from] io::Error),
}

/// A new file name in `dir` (not created).
fn tempfile_in(dir: &Path) -> io::Result<PathBuf> {
    let token = Token::random().map_err(|e| io::Error::other(e.to_string()))?;
    Ok(dir.join(format!("w-{}", hex(&token.0))))
}

/// A device as a transfer source: hands out the chunks it holds, each
/// verified; a missing or corrupt chunk file is a failed chunk (fetched
/// elsewhere), never a wrong byte.
pub struct PortableSource {
    device: Arc<Device>,
    name: String,
    cancelled: Arc<Mutex<HashSet<(Oid, u32)>>>,
}

impl PortableSource {
    /// A source reading `device`.
    pub fn new(device: Device) -> PortableSource {
        PortableSource {
            name: format!("portable://{}", device.mount_point().display()),
            device: Arc::new(device),
            cancelled: Arc::new(Mutex::new(HashSet::new())),
        }
    }
}

impl PortableSource {
    /// Where the device is mounted.
    pub fn mount_point(&self) -> &Path {
        self.device.mount_point()
    }
}

impl Transfer for PortableSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn get_descriptors(
        &self,
        oid: Oid,
        _token: Option<Token>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        let device = self.device.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let read = tokio::task::spawn_blocking(move || device.read_descriptors(oid)).await;
            match read {
                Ok(Ok((size, descriptors))) => Ok(Described { size, descriptors }),
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    Err(TransferError::BadDescriptors {
                        peer: name,
                        reason: e.to_string(),
                    })
                }
                Ok(Err(e)) => Err(TransferError::Connection {
                    peer: name,
                    message: e.to_string(),
                }),
                Err(e) => Err(TransferError::Connection {
                    peer: name,
                    message: e.to_string(),
                }),
            }
        })
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        let device = self.device.clone();
        let name = self.name.clone();
        let cancelled = self.cancelled.clone();
        tokio::task::spawn_blocking(move || {
            for (index, desc) in chunks {
                if cancelled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(oid, index))
                {
                    continue;
                }
                let ev = match device.read_chunk(index, &desc) {
                    Ok(Some(chunk)) => ChunkEvent::Chunk(chunk),
                    Ok(None) => ChunkEvent::Failed {
                        index,
                        error: TransferError::Connection {
                            peer: name.clone(),
                            message: "chunk not on the device".into(),
                        },
                    },
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        tracing::warn!(device = %name, index, error = %e, "corrupt chunk file ignored");
                        ChunkEvent::Failed {
                            index,
                            error: TransferError::Connection {
                                peer: name.clone(),
                                message: e.to_string(),
                            },
                        }
                    }
                    Err(e) => {
                        // The device itself failed (pulled): nothing more
                        // will come from it.
                        sink.blocking_send(ChunkEvent::SourceFailed(TransferError::Connection {
                            peer: name.clone(),
                            message: e.to_string(),
                        }));
                        return;
                    }
                };
                if !sink.blocking_send(ev) {
                    return;
                }
            }
        });
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() > 1 << 20 {
            c.clear();
        }
        c.extend(indexes.iter().map(|i| (oid, *i)));
    }
}
