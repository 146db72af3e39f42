//! Bytes read from the store: an owned buffer, or a range of an object's
//! file mapped into memory (no copy out of the page cache).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// Bytes of an object, read with [`Store::read_bytes`](crate::Store::read_bytes).
/// Cheap to hold while a reply is in flight: a mapped range keeps its
/// mapping alive, nothing else.
pub struct Bytes(Repr);

enum Repr {
    Owned(Vec<u8>),
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        end: usize,
    },
}

impl Bytes {
    /// `start..end` of `map`; the caller has checked the range.
    pub(crate) fn mapped(map: Arc<Mmap>, start: usize, end: usize) -> Bytes {
        debug_assert!(start <= end && end <= map.len());
        Bytes(Repr::Mapped { map, start, end })
    }

    /// The bytes as an owned buffer (a copy when mapped).
    pub fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped { map, start, end } => map[start..end].to_vec(),
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(Repr::Owned(v))
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped { map, start, end } => &map[*start..*end],
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Repr::Owned(_) => "owned",
            Repr::Mapped { .. } => "mapped",
        };
        write!(f, "Bytes({kind}, {} bytes)", self.len())
    }
}
