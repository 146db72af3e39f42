//! Descriptor files on a key: the magic `DOTDESC1`, the object's size
//! (u64 LE), its chunk count (u32 LE), then per chunk its hash (32 bytes)
//! and length (u32 LE). Read bounded by what was checked first.

use std::io::{self, BufReader, Read};
use std::path::Path;

use dot_store::descriptor::{MAX_OBJECT_SIZE, check_descriptors};
use dot_store::{ChunkHash, Descriptor, MAX_CHUNK_LEN};

use super::*;

pub(super) const MAGIC: &[u8; 8] = b"DOTDESC1";
/// Bytes of a descriptor file's header (magic, size, count).
pub(super) const HEAD: u64 = 20;
/// Bytes of one chunk's record in a descriptor file (hash, length).
pub(super) const RECORD: u64 = 36;

/// Reads and checks a descriptor file of `len` bytes (its fstat length).
/// Nothing is allocated for what the file cannot back: its header's count
/// must fit its size (at least `ceil(size / MAX_CHUNK_LEN)`, at most
/// `size`, at most [`MAX_CHUNKS`]) and its length exactly, before a record
/// is read; records are then checked as they are read, so a file that
/// backs its claim only with holes (a sparse file of zeros) fails at its
/// first record.
pub(super) fn read_descriptor_file(
    f: impl Read,
    len: u64,
    shown: &Path,
) -> io::Result<(u64, Vec<Descriptor>)> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", shown.display()),
        )
    };
    if !(HEAD..=HEAD + RECORD * u64::from(MAX_CHUNKS)).contains(&len) {
        return Err(bad(format!("{len} bytes: not a descriptor file")));
    }
    let mut r = BufReader::with_capacity(64 << 10, f);
    let mut head = [0u8; HEAD as usize];
    read_all(&mut r, &mut head, shown)?;
    if &head[..8] != MAGIC {
        return Err(bad("not a descriptor file".into()));
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&head[8..16]);
    let size = u64::from_le_bytes(size);
    let mut count = [0u8; 4];
    count.copy_from_slice(&head[16..20]);
    let count = u32::from_le_bytes(count);
    if size > MAX_OBJECT_SIZE {
        return Err(bad(format!("size {size} exceeds the limit")));
    }
    let fewest = size.div_ceil(u64::from(MAX_CHUNK_LEN));
    if count > MAX_CHUNKS || u64::from(count) > size || u64::from(count) < fewest {
        return Err(bad(format!("{count} chunks cannot make {size} bytes")));
    }
    let want = HEAD + RECORD * u64::from(count);
    if len != want {
        return Err(bad(format!(
            "{len} bytes, where its {count} chunks take {want}"
        )));
    }
    let mut descs = Vec::with_capacity(count.min(1 << 12) as usize);
    let mut offset = 0u64;
    let mut rec = [0u8; RECORD as usize];
    for i in 0..count {
        read_all(&mut r, &mut rec, shown)?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&rec[..32]);
        let mut n = [0u8; 4];
        n.copy_from_slice(&rec[32..]);
        let n = u32::from_le_bytes(n);
        if n == 0 || n > MAX_CHUNK_LEN || offset + u64::from(n) > size {
            return Err(bad(format!(
                "chunk {i} of {n} bytes at {offset} does not fit {size} bytes"
            )));
        }
        descs.push(Descriptor {
            hash: ChunkHash(hash),
            offset,
            len: n,
        });
        offset += u64::from(n);
    }
    check_descriptors(size, &descs).map_err(bad)?;
    Ok((size, descs))
}

/// The bytes of a descriptor file for an object of `size` bytes cut as
/// `descs` (what [`read_descriptor_file`] reads back).
pub(super) fn encode_descriptor_file(size: u64, descs: &[Descriptor]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEAD as usize + descs.len() * RECORD as usize);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&size.to_le_bytes());
    buf.extend_from_slice(&(descs.len() as u32).to_le_bytes());
    for d in descs {
        buf.extend_from_slice(&d.hash.0);
        buf.extend_from_slice(&d.len.to_le_bytes());
    }
    buf
}
