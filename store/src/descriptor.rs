//! Descriptors: where each chunk of an object lies.
//!
//! An object is the ordered list of its descriptors; chunk `i` covers bytes
//! `offset .. offset + len`. Lists read from outside (a peer, a device) are
//! checked with [`check_descriptors`] before anything is allocated for them.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::error::ParseError;
use crate::oid::{ChunkHash, clip};

/// The largest chunk any chunker may produce and any peer may send. Bounds
/// every chunk allocation made for data read from outside.
pub const MAX_CHUNK_LEN: u32 = 4 << 20;

/// The largest object the store accepts (1 PiB); bounds descriptor counts.
pub const MAX_OBJECT_SIZE: u64 = 1 << 50;

/// One chunk of an object: its hash, where it starts, how long it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// BLAKE3 of the chunk's bytes.
    pub hash: ChunkHash,
    /// Offset of the chunk's first byte in the object.
    pub offset: u64,
    /// Length in bytes, 1 ..= [`MAX_CHUNK_LEN`].
    pub len: u32,
}

impl Descriptor {
    /// One past the chunk's last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Descriptor({}@{}+{})",
            self.hash.short(),
            self.offset,
            self.len
        )
    }
}

/// Text form `<chunk hash hex>@<offset>+<len>`.
impl fmt::Display for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}+{}", self.hash, self.offset, self.len)
    }
}

impl FromStr for Descriptor {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Descriptor, ParseError> {
        let err = || {
            ParseError::new(
                "descriptor",
                format!("expected <hash>@<offset>+<len>: {:?}", clip(s)),
            )
        };
        let (hash, rest) = s.split_once('@').ok_or_else(err)?;
        let (offset, len) = rest.split_once('+').ok_or_else(err)?;
        let hash = hash
            .parse::<ChunkHash>()
            .map_err(|e| ParseError::new("descriptor", e.reason))?;
        let offset = parse_decimal(offset).ok_or_else(err)?;
        let len = parse_decimal(len)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or_else(err)?;
        if len == 0 || len > MAX_CHUNK_LEN {
            return Err(ParseError::new(
                "descriptor",
                format!("chunk length {len} out of range"),
            ));
        }
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > MAX_OBJECT_SIZE)
        {
            return Err(ParseError::new(
                "descriptor",
                "chunk ends past the largest object",
            ));
        }
        Ok(Descriptor { hash, offset, len })
    }
}

/// Canonical decimal: digits only, no sign, no leading zeros.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty()
        || s.len() > 20
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// Indexes of the chunks of `descs` (a list that tiles its object) holding
/// any byte of `offset..offset + len`; empty past the object's end. The one
/// place a byte range becomes chunk indexes.
pub fn chunks_covering(descs: &[Descriptor], offset: u64, len: u64) -> Range<usize> {
    if len == 0 {
        return 0..0;
    }
    let end = offset.saturating_add(len);
    let first = descs.partition_point(|d| d.end() <= offset);
    let last = descs.partition_point(|d| d.offset < end);
    first..last.max(first)
}

/// Checks that `descs` tile an object of `size` bytes exactly: in order, from
/// offset 0, no gaps, no overlaps, each length in 1 ..= [`MAX_CHUNK_LEN`].
///
/// # Errors
/// A description of the first problem found.
pub fn check_descriptors(size: u64, descs: &[Descriptor]) -> Result<(), String> {
    if size > MAX_OBJECT_SIZE {
        return Err(format!("size {size} exceeds the limit {MAX_OBJECT_SIZE}"));
    }
    let mut at = 0u64;
    for (i, d) in descs.iter().enumerate() {
        if d.len == 0 || d.len > MAX_CHUNK_LEN {
            return Err(format!("chunk {i} has length {}", d.len));
        }
        if d.offset != at {
            return Err(format!("chunk {i} starts at {}, expected {at}", d.offset));
        }
        at = d.end();
        if at > size {
            return Err(format!(
                "chunk {i} ends at {at}, past the object's {size} bytes"
            ));
        }
    }
    if at != size {
        return Err(format!("chunks cover {at} of {size} bytes"));
    }
    Ok(())
}

/// Most chunks an object of `size` bytes can have with chunks of at least
/// `min_len` bytes; used to bound descriptor counts read from outside.
pub fn max_chunk_count(size: u64, min_len: u32) -> u64 {
    size.div_ceil(u64::from(min_len.max(1)))
}

/// A digest that commits to a whole descriptor list (BLAKE3 over every
/// descriptor's length and hash, in order). A receiver that trusts this
/// digest and has verified every chunk has the object without a second
/// whole-object pass.
pub fn list_digest(descs: &[Descriptor]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"dot1-descriptor-list");
    h.update(&(descs.len() as u64).to_le_bytes());
    for d in descs {
        h.update(&d.len.to_le_bytes());
        h.update(d.hash.as_bytes());
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(offset: u64, len: u32) -> Descriptor {
        Descriptor {
            hash: ChunkHash::of(&offset.to_le_bytes()),
            offset,
            len,
        }
    }

    #[test]
    fn text_form_round_trips() {
        let x = d(65536, 4096);
        assert_eq!(x.to_string().parse::<Descriptor>(), Ok(x));
    }

    #[test]
    fn parser_rejects_garbage() {
        let h = ChunkHash::of(b"x");
        for bad in [
            String::new(),
            format!("{h}@0"),
            format!("{h}@0+0"),
            format!("{h}@-1+5"),
            format!("{h}@01+5"),
            format!("{h}@0+{}", MAX_CHUNK_LEN + 1),
            format!("{h}@18446744073709551615+5"),
            "zz@0+5".to_string(),
        ] {
            assert!(bad.parse::<Descriptor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn check_finds_gaps_overlaps_and_short_lists() {
        assert!(check_descriptors(0, &[]).is_ok());
        assert!(check_descriptors(10, &[d(0, 4), d(4, 6)]).is_ok());
        assert!(check_descriptors(10, &[d(0, 4), d(5, 5)]).is_err());
        assert!(check_descriptors(10, &[d(0, 4), d(3, 7)]).is_err());
        assert!(check_descriptors(10, &[d(0, 4)]).is_err());
        assert!(check_descriptors(3, &[d(0, 4)]).is_err());
        assert!(check_descriptors(5, &[d(0, 0), d(0, 5)]).is_err());
    }

    #[test]
    fn list_digest_depends_on_every_descriptor() {
        let a = [d(0, 4), d(4, 6)];
        let b = [d(0, 4), d(4, 5)];
        assert_ne!(list_digest(&a), list_digest(&b));
        assert_ne!(list_digest(&a), list_digest(&a[..1]));
    }

    #[test]
    fn byte_ranges_map_to_the_chunks_holding_them() {
        let list = [d(0, 4), d(4, 6), d(10, 5)];
        assert_eq!(chunks_covering(&list, 0, 1), 0..1);
        assert_eq!(chunks_covering(&list, 3, 2), 0..2);
        assert_eq!(chunks_covering(&list, 4, 6), 1..2);
        assert_eq!(chunks_covering(&list, 9, 100), 1..3);
        assert_eq!(chunks_covering(&list, 15, 10), 3..3);
        assert_eq!(chunks_covering(&list, 2, 0), 0..0);
        assert_eq!(chunks_covering(&list, u64::MAX, u64::MAX), 3..3);
    }
}
