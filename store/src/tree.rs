//! Trees: a folder as one object, its **manifest**, which names every
//! entry (folders, files, symbolic links) with its mode and mtime. A
//! large file's content is an object of its own, named by OID, so
//! identical large files anywhere are stored and fetched once. Small files
//! (at most [`PACK_LIMIT`] bytes) travel in the tree's **pack**: one object
//! holding their bytes back to back in entry order, so a tree of many
//! small files moves as one stream. The pack is cut at every file's start
//! and into small chunks within each file ([`PACK_CHUNKER`]), and each
//! packed file's entry lists its own chunks: the pack's descriptor list
//! is the manifest's (a receiver holding the manifest fetches no list),
//! and a second version costs each changed file's changed chunks and the
//! manifest chunks around its entry, nothing else. A tree's ticket opens
//! its members, the pack and the large files (a peer serves a member to
//! whoever holds the tree's token).
//!
//! The manifest is outside input (it comes from peers and keys): it is
//! decoded with a bound on every length and count, and a decoded
//! [`Manifest`] can only hold entries that are safe to create beneath a
//! destination folder: relative paths of 1 to 255-byte names, never `.`,
//! `..`, empty or holding NUL; in strictly ascending byte order (so no
//! duplicates); each entry's parent a folder listed before it (so nothing
//! is ever created through a link or a file, and there are no cycles).
//!
//! ```text
//! magic "DOT-TREE" | version u8 (3) | flags u8 (0)
//! root: mode u16 | mtime seconds i64 | nanoseconds u32
//! pack: size u64 | OID [32] | descriptor-list digest [32]   (all zero: none)
//! count u32
//! count x entry:
//!   kind u8 (1 folder, 2 file, 3 symbolic link, 4 packed file) | mode u16
//!   | mtime: seconds since the entry before's (the root's for the first),
//!     zigzag varint | nanoseconds varint
//!   | path: bytes shared with the entry before's path, varint | length of
//!     the rest, varint | the rest
//!   file: size varint | OID [32] | descriptor-list digest [32]
//!   packed file: size varint (its bytes: the pack's next `size` bytes)
//!     | chunk count varint | one chunk: BLAKE3 [32] (its length is the
//!     size) | more: count x (length varint | BLAKE3 [32])
//!   link: target length varint | target
//! ```
//!
//! Fixed-width integers are big-endian; varints are LEB128 (7 bits a
//! byte, least significant first, at most 10 bytes, no needless zero
//! byte); a path shares all the bytes it can with the one before (one
//! manifest has one encoding). Modes are permission bits (at most
//! `0o7777`); nanoseconds are below 10^9. The packed files' sizes add up
//! to the pack's exactly; each file's chunks add up to its size (an empty
//! file has none), and all of them in entry order are the pack's descriptor
//! list, whose digest the header gives. Nothing may follow the last entry.

use std::collections::HashSet;

use crate::descriptor::{
    Descriptor, MAX_CHUNK_LEN, MAX_OBJECT_SIZE, check_descriptors, list_digest,
};
use crate::error::ParseError;
use crate::oid::{ChunkHash, Oid};

/// The first bytes of every manifest.
pub const MAGIC: &[u8; 8] = b"DOT-TREE";
/// The manifest version this build writes and reads.
pub const VERSION: u8 = 3;
/// Most entries in one tree.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Largest manifest (a million entries of long paths fit).
pub const MAX_MANIFEST: u64 = 256 << 20;
/// Longest path of an entry, and longest link target.
pub const MAX_PATH: usize = 4096;
/// Longest name of one path component.
pub const MAX_NAME: usize = 255;

/// Largest file carried in a tree's pack; larger files are objects of
/// their own.
pub const PACK_LIMIT: u64 = 256 << 10;
/// How each file of a pack is cut into chunks (a chunk never crosses from
/// one file to the next): small, so a changed small file costs about its
/// own bytes in a second version.
pub const PACK_CHUNKER: &str = "cdc:1024:4096:32768";
/// Fewest bytes of one chunk of several in a packed file's entry (length
/// and hash).
const CHUNK_ENTRY: usize = 1 + 32;
/// How a manifest is cut into chunks: small, so a few changed entries
/// cost a few chunks in a second version.
pub const MANIFEST_CHUNKER: &str = "cdc:256:1024:8192";

/// Fewest bytes of an entry (kind, mode, mtime, shared and rest lengths,
/// a byte of path).
const ENTRY_MIN: usize = 1 + 2 + 1 + 1 + 1 + 1 + 1;
/// Bytes of the header (magic, version, flags, root mode and mtime, pack,
/// count).
const HEADER: usize = 8 + 1 + 1 + 2 + 8 + 4 + 72 + 4;

const KIND_DIR: u8 = 1;
const KIND_FILE: u8 = 2;
const KIND_LINK: u8 = 3;
const KIND_PACKED: u8 = 4;

/// A modification time: seconds since the epoch (negative before) and
/// nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mtime {
    /// Seconds since 1970-01-01 UTC.
    pub secs: i64,
    /// Nanoseconds, below 10^9.
    pub nanos: u32,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A folder (its entries follow it in the manifest).
    Dir,
    /// A regular file, its content an object.
    File {
        /// Size in bytes.
        size: u64,
        /// The content's OID.
        oid: Oid,
        /// Digest of the content's descriptor list (as a ticket's).
        list_digest: [u8; 32],
    },
    /// A small regular file whose bytes are in the tree's pack.
    Packed {
        /// Size in bytes.
        size: u64,
        /// Where its bytes start in the pack (the sizes of the packed
        /// files before it; set by [`Manifest::new`] and when decoding).
        offset: u64,
    },
    /// A symbolic link, recorded and recreated as a link, never followed.
    Symlink {
        /// Where it points, as written.
        target: Vec<u8>,
    },
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path from the tree's root, components separated by `/`.
    pub path: Vec<u8>,
    /// Permission bits (at most `0o7777`).
    pub mode: u16,
    /// Modification time.
    pub mtime: Mtime,
    /// What it is.
    pub kind: Kind,
}

impl Entry {
    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.path.split(|&b| b == b'/')
    }

    /// The path of the folder holding this entry (empty for the root).
    pub fn parent(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(at) => &self.path[..at],
            None => &[],
        }
    }

    /// The entry's own name (its last component).
    pub fn name(&self) -> &[u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(at) => &self.path[at + 1..],
            None => &self.path,
        }
    }
}

/// The object holding a tree's small files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pack {
    /// Size in bytes (at least 1).
    pub size: u64,
    /// The pack's OID.
    pub oid: Oid,
    /// Digest of its descriptor list (as a ticket's).
    pub list_digest: [u8; 32],
}

/// A whole tree: the root's attributes and every entry, in path order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The root folder's permission bits.
    pub root_mode: u16,
    /// The root folder's modification time.
    pub root_mtime: Mtime,
    /// The pack, if any file is packed.
    pub pack: Option<Pack>,
    entries: Vec<Entry>,
    /// The pack's descriptor list, from the packed files' entries.
    pack_chunks: Vec<Descriptor>,
}

fn bad(reason: impl Into<String>) -> ParseError {
    ParseError::new("tree manifest", reason)
}

/// Why `name` cannot be one path component, if it cannot.
fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("an empty name (a leading, trailing or doubled /)")
    } else if name == b"." || name == b".." {
        Some("a name . or ..")
    } else if name.len() > MAX_NAME {
        Some("a name longer than 255 bytes")
    } else if name.contains(&0) {
        Some("a name holding NUL")
    } else {
        None
    }
}

impl Manifest {
    /// A manifest of `entries` (in any order: they are sorted, see
    /// [`sort`]; packed files' offsets are set in that order) and the
    /// pack's descriptor list, checked as a decoded one is.
    ///
    /// # Errors
    /// What makes the entries unsafe or out of bounds; packed files that
    /// do not add up to the pack; a list that is not the pack's or has a
    /// chunk crossing from one file to the next.
    pub fn new(
        root_mode: u16,
        root_mtime: Mtime,
        pack: Option<Pack>,
        mut entries: Vec<Entry>,
        pack_chunks: Vec<Descriptor>,
    ) -> Result<Manifest, ParseError> {
        sort(&mut entries);
        let mut m = Manifest {
            root_mode,
            root_mtime,
            pack,
            entries,
            pack_chunks,
        };
        m.place_packed()?;
        m.check()?;
        Ok(m)
    }

    /// Sets each packed file's offset; checks the files fill the pack
    /// exactly, that its list tiles it with a cut at every file's end, and
    /// that the list is the one the header names.
    fn place_packed(&mut self) -> Result<(), ParseError> {
        let mut at = 0u64;
        let mut chunks = self.pack_chunks.iter();
        for e in &mut self.entries {
            if let Kind::Packed { size, offset } = &mut e.kind {
                *offset = at;
                at = at
                    .checked_add(*size)
                    .filter(|t| *t <= MAX_OBJECT_SIZE)
                    .ok_or_else(|| bad("packed files larger than an object may be"))?;
                let mut end = *offset;
                while end < at {
                    let c = chunks
                        .next()
                        .ok_or_else(|| bad("packed files longer than the pack's chunks"))?;
                    if c.offset != end {
                        return Err(bad("the pack's chunks do not follow each other"));
                    }
                    end += u64::from(c.len);
                }
                if end != at {
                    return Err(bad("a chunk of the pack crosses the end of a file"));
                }
            }
        }
        if chunks.next().is_some() {
            return Err(bad("chunks of the pack past its files"));
        }
        match self.pack {
            None if at == 0 && self.pack_chunks.is_empty() => {}
            Some(p) if p.size == at => {
                check_descriptors(p.size, &self.pack_chunks).map_err(bad)?;
                if list_digest(&self.pack_chunks) != p.list_digest {
                    return Err(bad("the packed files' chunks are not the pack's list"));
                }
            }
            _ => {
                return Err(bad(format!(
                    "packed files of {at} bytes in a pack of {}",
                    self.pack.map_or(0, |p| p.size)
                )));
            }
        }
        Ok(())
    }

    /// The pack's descriptor list (empty without a pack): every packed
    /// file's chunks, in entry order.
    pub fn pack_descriptors(&self) -> &[Descriptor] {
        &self.pack_chunks
    }

    /// The entries, in ascending path order (every folder before what it
    /// holds).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The files' total size (packed or not).
    pub fn file_bytes(&self) -> u64 {
        self.files().map(|(_, size, _)| size).sum::<u64>() + self.pack.map_or(0, |p| p.size)
    }

    /// Every regular file, packed or not.
    pub fn all_files(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, Kind::File { .. } | Kind::Packed { .. }))
    }

    /// Each file entry that is an object of its own, with its size and OID.
    pub fn files(&self) -> impl Iterator<Item = (&Entry, u64, Oid)> {
        self.entries.iter().filter_map(|e| match e.kind {
            Kind::File { size, oid, .. } => Some((e, size, oid)),
            _ => None,
        })
    }

    /// The objects a tree's token opens: its large files and its pack.
    pub fn members(&self) -> impl Iterator<Item = Oid> + '_ {
        self.files()
            .map(|(_, _, oid)| oid)
            .chain(self.pack.map(|p| p.oid))
    }

    /// Every rule a manifest must keep (see the module page).
    fn check(&self) -> Result<(), ParseError> {
        if self.entries.len() > MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        check_mode(self.root_mode)?;
        check_mtime(self.root_mtime)?;
        let mut dirs: HashSet<&[u8]> = HashSet::new();
        let mut total = 0u64;
        let mut last: Option<&[u8]> = None;
        for e in &self.entries {
            let shown = String::from_utf8_lossy(&e.path[..e.path.len().min(80)]).into_owned();
            if e.path.is_empty() || e.path.len() > MAX_PATH {
                return Err(bad(format!("a path of {} bytes", e.path.len())));
            }
            if let Some(p) = e.components().find_map(name_problem) {
                return Err(bad(format!("{shown:?}: {p}")));
            }
            if last.is_some_and(|l| l >= e.path.as_slice()) {
                return Err(bad(format!(
                    "{shown:?}: entries out of order or listed twice"
                )));
            }
            last = Some(&e.path);
            let parent = e.parent();
            if !parent.is_empty() && !dirs.contains(parent) {
                return Err(bad(format!(
                    "{shown:?}: its parent is not a folder listed before it"
                )));
            }
            check_mode(e.mode)?;
            check_mtime(e.mtime)?;
            match &e.kind {
                Kind::Dir => {
                    dirs.insert(&e.path);
                }
                Kind::File { size, .. } => {
                    total = total
                        .checked_add(*size)
                        .filter(|t| *t <= MAX_OBJECT_SIZE)
                        .ok_or_else(|| bad("files larger than an object may be"))?;
                }
                Kind::Packed { .. } => {}
                Kind::Symlink { target } => {
                    if target.is_empty() || target.len() > MAX_PATH || target.contains(&0) {
                        return Err(bad(format!(
                            "{shown:?}: a link target that is empty, too long or holds NUL"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The manifest's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.entries.len() * (ENTRY_MIN + 64));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&self.root_mode.to_be_bytes());
        out.extend_from_slice(&self.root_mtime.secs.to_be_bytes());
        out.extend_from_slice(&self.root_mtime.nanos.to_be_bytes());
        match &self.pack {
            Some(p) => {
                out.extend_from_slice(&p.size.to_be_bytes());
                out.extend_from_slice(p.oid.as_bytes());
                out.extend_from_slice(&p.list_digest);
            }
            None => out.extend_from_slice(&[0; 72]),
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        let mut chunks = self.pack_chunks.iter().peekable();
        let (mut secs, mut prev): (i64, &[u8]) = (self.root_mtime.secs, &[]);
        for e in &self.entries {
            out.push(match e.kind {
                Kind::Dir => KIND_DIR,
                Kind::File { .. } => KIND_FILE,
                Kind::Packed { .. } => KIND_PACKED,
                Kind::Symlink { .. } => KIND_LINK,
            });
            out.extend_from_slice(&e.mode.to_be_bytes());
            put_varint(&mut out, zigzag(e.mtime.secs.wrapping_sub(secs)));
            put_varint(&mut out, u64::from(e.mtime.nanos));
            secs = e.mtime.secs;
            let shared = prev.iter().zip(&e.path).take_while(|(a, b)| a == b).count();
            put_varint(&mut out, shared as u64);
            put_varint(&mut out, (e.path.len() - shared) as u64);
            out.extend_from_slice(&e.path[shared..]);
            prev = &e.path;
            match &e.kind {
                Kind::Dir => {}
                Kind::File {
                    size,
                    oid,
                    list_digest,
                } => {
                    put_varint(&mut out, *size);
                    out.extend_from_slice(oid.as_bytes());
                    out.extend_from_slice(list_digest);
                }
                Kind::Packed { size, offset } => {
                    put_varint(&mut out, *size);
                    // Its chunks (a checked manifest's end at its end).
                    let end = offset + size;
                    let mut mine = Vec::new();
                    while let Some(c) = chunks.next_if(|c| c.offset < end) {
                        mine.push(c);
                    }
                    put_varint(&mut out, mine.len() as u64);
                    let one = mine.len() == 1;
                    for c in mine {
                        if !one {
                            put_varint(&mut out, u64::from(c.len));
                        }
                        out.extend_from_slice(&c.hash.0);
                    }
                }
                Kind::Symlink { target } => {
                    put_varint(&mut out, target.len() as u64);
                    out.extend_from_slice(target);
                }
            }
        }
        out
    }

    /// Decodes and checks a manifest. Nothing is allocated for a count the
    /// bytes cannot back.
    ///
    /// # Errors
    /// A clear reason for bytes that are not a manifest this build reads,
    /// or one that breaks a rule.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ParseError> {
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(bad("larger than 256 MiB"));
        }
        let mut r = Reader(bytes);
        if r.take(8)? != MAGIC {
            return Err(bad("not a tree manifest (no DOT-TREE magic)"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(bad(format!(
                "version {version}; this build reads version {VERSION}"
            )));
        }
        if r.u8()? != 0 {
            return Err(bad("unknown flags"));
        }
        let root_mode = r.u16()?;
        let root_mtime = r.mtime()?;
        let pack = Pack {
            size: r.u64()?,
            oid: Oid(r.array()?),
            list_digest: r.array()?,
        };
        let pack = if pack.size == 0 {
            if pack.oid.as_bytes() != &[0; 32] || pack.list_digest != [0; 32] {
                return Err(bad("an empty pack with an OID"));
            }
            None
        } else {
            Some(pack)
        };
        let count = r.u32()? as usize;
        if count > MAX_ENTRIES || count > r.0.len() / ENTRY_MIN {
            return Err(bad(format!(
                "{count} entries claimed in {} bytes",
                bytes.len()
            )));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        let mut pack_chunks = Vec::new();
        let mut pack_at = 0u64;
        let mut secs = root_mtime.secs;
        for _ in 0..count {
            let kind = r.u8()?;
            let mode = r.u16()?;
            secs = secs.wrapping_add(unzigzag(r.varint()?));
            let nanos = u32::try_from(r.varint()?).map_err(|_| bad("nanoseconds past 32 bits"))?;
            let mtime = Mtime { secs, nanos };
            let prev: &[u8] = entries.last().map_or(&[], |e| &e.path);
            let shared = r.length(prev.len())?;
            let rest = r.length(MAX_PATH)?;
            let rest = r.take(rest)?;
            if rest.is_empty() || (shared < prev.len() && rest[0] == prev[shared]) {
                return Err(bad("a path not coded against the one before it"));
            }
            let mut path = Vec::with_capacity(shared + rest.len());
            path.extend_from_slice(&prev[..shared]);
            path.extend_from_slice(rest);
            let kind = match kind {
                KIND_DIR => Kind::Dir,
                KIND_FILE => {
                    let size = r.varint()?;
                    let oid = Oid(r.array()?);
                    Kind::File {
                        size,
                        oid,
                        list_digest: r.array()?,
                    }
                }
                KIND_PACKED => {
                    let size = r.varint()?;
                    let n = r.length(MAX_ENTRIES * 64)?;
                    // At least a byte a chunk, and bytes to back them.
                    let need = if n == 1 {
                        32
                    } else {
                        n.saturating_mul(CHUNK_ENTRY)
                    };
                    if n as u64 > size || need > r.0.len() {
                        return Err(bad(format!(
                            "{n} chunks claimed for a file of {size} bytes"
                        )));
                    }
                    pack_chunks.reserve(n);
                    for _ in 0..n {
                        let len = if n == 1 {
                            u32::try_from(size).unwrap_or(u32::MAX)
                        } else {
                            u32::try_from(r.varint()?).unwrap_or(u32::MAX)
                        };
                        if len == 0 || len > MAX_CHUNK_LEN {
                            return Err(bad(format!("a chunk of {len} bytes")));
                        }
                        pack_chunks.push(Descriptor {
                            hash: ChunkHash(r.array()?),
                            offset: pack_at,
                            len,
                        });
                        pack_at = pack_at.saturating_add(u64::from(len));
                    }
                    Kind::Packed { size, offset: 0 }
                }
                KIND_LINK => {
                    let len = r.length(MAX_PATH)?;
                    Kind::Symlink {
                        target: r.take(len)?.to_vec(),
                    }
                }
                k => return Err(bad(format!("unknown entry kind {k}"))),
            };
            entries.push(Entry {
                path,
                mode,
                mtime,
                kind,
            });
        }
        if !r.0.is_empty() {
            return Err(bad("bytes after the last entry"));
        }
        let mut m = Manifest {
            root_mode,
            root_mtime,
            pack,
            entries,
            pack_chunks,
        };
        m.check()?;
        m.place_packed()?;
        Ok(m)
    }
}

/// Puts entries in manifest order: ascending paths by bytes (so every
/// folder comes before what it holds). A pack holds its files in this
/// order.
pub fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
}

fn check_mode(mode: u16) -> Result<(), ParseError> {
    if mode > 0o7777 {
        return Err(bad(format!(
            "mode {mode:o} holds more than permission bits"
        )));
    }
    Ok(())
}

fn check_mtime(t: Mtime) -> Result<(), ParseError> {
    if t.nanos >= 1_000_000_000 {
        return Err(bad("nanoseconds of 10^9 or more"));
    }
    Ok(())
}

/// Appends `v` as a varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed number as an unsigned one, small for small magnitudes.
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    (u >> 1) as i64 ^ -((u & 1) as i64)
}

/// Bytes not yet decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if self.0.len() < n {
            return Err(bad("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A varint (LEB128): at most 10 bytes, no needless zero byte, within
    /// 64 bits.
    fn varint(&mut self) -> Result<u64, ParseError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(bad("a varint past 64 bits"));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(bad("a varint with a needless zero byte"));
                }
                return Ok(v);
            }
        }
        Err(bad("a varint longer than 10 bytes"))
    }

    /// A varint that counts at most `max`.
    fn length(&mut self, max: usize) -> Result<usize, ParseError> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| bad(format!("a length past {max}")))
    }

    fn mtime(&mut self) -> Result<Mtime, ParseError> {
        Ok(Mtime {
            secs: i64::from_be_bytes(self.array()?),
            nanos: self.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Mtime {
        Mtime { secs, nanos: 5 }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o755,
            mtime: at(1),
            kind: Kind::Dir,
        }
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o644,
            mtime: at(-2),
            kind: Kind::File {
                size: content.len() as u64,
                oid: Oid::of(content),
                list_digest: [7; 32],
            },
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o777,
            mtime: at(3),
            kind: Kind::Symlink {
                target: target.as_bytes().to_vec(),
            },
        }
    }

    fn sample() -> Manifest {
        Manifest::new(
            0o700,
            at(9),
            None,
            vec![
                file("a/x", b"x"),
                dir("a"),
                dir("a/empty"),
                link("l", "/etc/passwd"),
                file("a.b", b""),
                file("z", b"x"),
            ],
            Vec::new(),
        )
        .expect("a good tree")
    }

    #[test]
    fn a_manifest_round_trips_in_path_order() {
        let m = sample();
        let paths: Vec<&[u8]> = m.entries().iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [&b"a"[..], b"a.b", b"a/empty", b"a/x", b"l", b"z"]);
        assert_eq!(Manifest::decode(&m.encode()).expect("decodes"), m);
        assert_eq!(m.file_bytes(), 2);
        assert_eq!(m.entries()[3].parent(), b"a");
        assert_eq!(m.entries()[3].name(), b"x");
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for bad_path in ["", "/abs", "a/", "a//b", ".", "..", "a/../b", "./a", "x\0y"] {
            let e = Manifest::new(0o755, at(0), None, vec![file(bad_path, b"1")], Vec::new());
            assert!(e.is_err(), "{bad_path:?} accepted");
        }
        let long = "n".repeat(256);
        assert!(Manifest::new(0o755, at(0), None, vec![file(&long, b"1")], Vec::new()).is_err());
        let ok = "n".repeat(255);
        assert!(Manifest::new(0o755, at(0), None, vec![file(&ok, b"1")], Vec::new()).is_ok());
    }

    #[test]
    fn duplicates_orphans_and_entries_beneath_links_or_files_are_refused() {
        let twice = Manifest::new(
            0o755,
            at(0),
            None,
            vec![file("a", b"1"), file("a", b"2")],
            Vec::new(),
        );
        assert!(twice.is_err(), "a name twice");
        let orphan = Manifest::new(0o755, at(0), None, vec![file("d/x", b"1")], Vec::new());
        assert!(orphan.is_err(), "no folder d");
        let through_link = Manifest::new(
            0o755,
            at(0),
            None,
            vec![link("d", "/etc"), file("d/passwd", b"1")],
            Vec::new(),
        );
        assert!(through_link.is_err(), "a file beneath a link");
        let through_file = Manifest::new(
            0o755,
            at(0),
            None,
            vec![file("d", b"1"), file("d/x", b"1")],
            Vec::new(),
        );
        assert!(through_file.is_err(), "a file beneath a file");
    }

    #[test]
    fn decoding_refuses_out_of_order_bytes_and_bad_fields() {
        let good = Manifest::new(
            0o755,
            at(0),
            None,
            vec![file("a", b"1"), file("b", b"2")],
            Vec::new(),
        )
        .expect("ok");
        let mut bytes = good.encode();
        // Swap the two entries' single-byte names: out of order.
        let a = bytes.iter().position(|&b| b == b'a').expect("a");
        let b = bytes.iter().position(|&x| x == b'b').expect("b");
        bytes.swap(a, b);
        assert!(Manifest::decode(&bytes).is_err());
        let mut trailing = good.encode();
        trailing.push(0);
        assert!(Manifest::decode(&trailing).is_err());
        let mut version = good.encode();
        version[8] = 1;
        assert!(Manifest::decode(&version).is_err());
        let mut mode = good.encode();
        mode[10] = 0xff;
        assert!(Manifest::decode(&mode).is_err());
        assert!(Manifest::decode(b"DOT-TREX").is_err());
        for cut in 0..good.encode().len() {
            assert!(
                Manifest::decode(&good.encode()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_absurd_count_allocates_nothing() {
        let mut bytes = Manifest::default().encode();
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = Manifest::decode(&bytes).expect_err("refused");
        assert!(e.reason.contains("claimed"), "{e}");
    }

    #[test]
    fn sizes_past_an_object_are_refused() {
        let mut big = file("a", b"1");
        let mut huge = file("b", b"1");
        for e in [&mut big, &mut huge] {
            if let Kind::File { size, .. } = &mut e.kind {
                *size = MAX_OBJECT_SIZE;
            }
        }
        assert!(Manifest::new(0o755, at(0), None, vec![big.clone()], Vec::new()).is_ok());
        assert!(Manifest::new(0o755, at(0), None, vec![big, huge], Vec::new()).is_err());
    }

    fn packed(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o644,
            mtime: at(4),
            kind: Kind::Packed { size, offset: 0 },
        }
    }

    /// A pack whose chunks have these lengths (in order), and its list.
    fn pack_of(lens: &[u32]) -> (Option<Pack>, Vec<Descriptor>) {
        let mut at = 0u64;
        let chunks: Vec<Descriptor> = lens
            .iter()
            .map(|&len| {
                let d = Descriptor {
                    hash: ChunkHash::of(&at.to_be_bytes()),
                    offset: at,
                    len,
                };
                at += u64::from(len);
                d
            })
            .collect();
        let pack = Pack {
            size: at,
            oid: Oid::of(b"pack"),
            list_digest: list_digest(&chunks),
        };
        (Some(pack), chunks)
    }

    #[test]
    fn packed_files_take_their_places_in_the_pack_in_path_order() {
        let (pack, chunks) = pack_of(&[2, 3, 3, 2]);
        let m = Manifest::new(
            0o755,
            at(0),
            pack,
            vec![
                packed("b", 3),
                packed("a", 5),
                packed("c", 0),
                packed("d", 2),
            ],
            chunks.clone(),
        )
        .expect("a good tree");
        let places: Vec<(u64, u64)> = m
            .entries()
            .iter()
            .map(|e| match e.kind {
                Kind::Packed { size, offset } => (offset, size),
                _ => panic!("not packed"),
            })
            .collect();
        assert_eq!(places, [(0, 5), (5, 3), (8, 0), (8, 2)]);
        let decoded = Manifest::decode(&m.encode()).expect("decodes");
        assert_eq!(decoded, m);
        assert_eq!(decoded.pack_descriptors(), chunks.as_slice());
        assert_eq!(m.file_bytes(), 10);
        assert_eq!(m.members().collect::<Vec<_>>(), [Oid::of(b"pack")]);
    }

    #[test]
    fn packed_files_must_fill_the_pack_exactly() {
        let (pack10, chunks10) = pack_of(&[10]);
        let short = Manifest::new(0o755, at(0), pack10, vec![packed("a", 9)], chunks10.clone());
        assert!(short.is_err(), "a byte of the pack left over");
        let long = Manifest::new(
            0o755,
            at(0),
            pack10,
            vec![packed("a", 11)],
            chunks10.clone(),
        );
        assert!(long.is_err(), "past the pack's end");
        let none = Manifest::new(0o755, at(0), None, vec![packed("a", 1)], Vec::new());
        assert!(none.is_err(), "packed bytes without a pack");
        // On the wire: a pack of no bytes must name no object.
        let mut bytes = Manifest::new(0o755, at(0), None, vec![], Vec::new())
            .expect("ok")
            .encode();
        bytes[30] = 1;
        assert!(Manifest::decode(&bytes).is_err());
        let (huge_pack, huge_chunks) = pack_of(&[MAX_CHUNK_LEN]);
        let huge = Manifest::new(
            0o755,
            at(0),
            huge_pack.map(|p| Pack {
                size: MAX_OBJECT_SIZE,
                ..p
            }),
            vec![packed("a", MAX_OBJECT_SIZE), packed("b", 1)],
            huge_chunks,
        );
        assert!(huge.is_err(), "sizes past an object");
    }

    #[test]
    fn the_packs_chunks_must_end_at_every_file_and_be_the_headers_list() {
        let files = || vec![packed("a", 4), packed("b", 6)];
        let (pack, chunks) = pack_of(&[4, 3, 3]);
        assert!(Manifest::new(0o755, at(0), pack, files(), chunks).is_ok());
        let (pack, chunks) = pack_of(&[5, 5]);
        let crossing = Manifest::new(0o755, at(0), pack, files(), chunks);
        assert!(crossing.is_err(), "a chunk across a file's end");
        let (pack, mut chunks) = pack_of(&[4, 6]);
        chunks[1].hash = ChunkHash::of(b"another");
        let other = Manifest::new(0o755, at(0), pack, files(), chunks);
        assert!(other.is_err(), "a list the header does not name");
        // On the wire: a file claiming more chunks than bytes.
        let (pack, chunks) = pack_of(&[4, 6]);
        let m = Manifest::new(0o755, at(0), pack, files(), chunks).expect("ok");
        let mut bytes = m.encode();
        // The last entry (b) ends: count varint | one chunk's hash.
        let count_at = bytes.len() - 1 - 32;
        bytes[count_at] = 7;
        let e = Manifest::decode(&bytes).expect_err("refused");
        assert!(e.reason.contains("chunks claimed"), "{e}");
    }

    #[test]
    fn the_coding_has_one_form_and_keeps_extreme_times() {
        let mut a = dir("a");
        a.mtime = Mtime {
            secs: i64::MIN,
            nanos: 999_999_999,
        };
        let mut b = file("a/b", b"x");
        b.mtime = Mtime {
            secs: i64::MAX,
            nanos: 0,
        };
        let m = Manifest::new(0o755, at(-7), None, vec![a, b, dir("ab")], Vec::new()).expect("ok");
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).expect("decodes"), m);
        // "ab" shares "a" with "a/b": coded as shared 1, rest "b". Shared 0
        // with rest "ab" is the same path in another form: refused.
        assert_eq!(&bytes[bytes.len() - 3..], &[1, 1, b'b']);
        let mut other = bytes[..bytes.len() - 3].to_vec();
        other.extend_from_slice(&[0, 2, b'a', b'b']);
        let e = Manifest::decode(&other).expect_err("refused");
        assert!(e.reason.contains("coded against"), "{e}");
        // A varint with a needless zero byte is another form too.
        let mut padded = bytes[..bytes.len() - 3].to_vec();
        padded.extend_from_slice(&[0x81, 0x00, 1, b'b']);
        let e = Manifest::decode(&padded).expect_err("refused");
        assert!(e.reason.contains("needless zero"), "{e}");
        // Sharing more than the path before holds.
        let mut past = bytes[..bytes.len() - 3].to_vec();
        past.extend_from_slice(&[9, 1, b'b']);
        let e = Manifest::decode(&past).expect_err("refused");
        assert!(e.reason.contains("length past"), "{e}");
    }
}
