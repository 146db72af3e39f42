//! Chunk bytes, and the proof that they were checked.
//!
//! Bytes from a source are unverified until hashed against their
//! descriptor. [`VerifiedChunk::verify`] is the only way to make a
//! [`VerifiedChunk`], so a value of that type proves the hash was checked,
//! and the store writes it without hashing again (compare rustls's
//! `ServerCertVerified`). Every chunk is hashed exactly once on its way from
//! a source to the store, so this is also where the process counts the
//! chunks it checked and refused ([`checked`]).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::descriptor::Descriptor;
use crate::oid::ChunkHash;

/// Why bytes are not the chunk their descriptor names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Wrong length.
    #[error("chunk {index}: {got} bytes where the descriptor says {want}")]
    Length {
        /// Chunk index.
        index: u32,
        /// The descriptor's length.
        want: u32,
        /// Bytes received.
        got: usize,
    },
    /// Right length, wrong bytes.
    #[error("chunk {index}: hash {got} where the descriptor says {want}")]
    Mismatch {
        /// Chunk index.
        index: u32,
        /// The descriptor's hash.
        want: ChunkHash,
        /// The hash of the bytes received.
        got: ChunkHash,
    },
}

static VERIFIED: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);

/// Chunks this process has checked with [`VerifiedChunk::verify`] so far:
/// (verified, rejected).
pub fn checked() -> (u64, u64) {
    (
        VERIFIED.load(Ordering::Relaxed),
        REJECTED.load(Ordering::Relaxed),
    )
}

/// Chunk `index` of some object, whose bytes hash to its descriptor.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedChunk {
    index: u32,
    desc: Descriptor,
    data: Bytes,
}

impl VerifiedChunk {
    /// Checks `data` against `desc` (length, then BLAKE3).
    ///
    /// # Errors
    /// [`ChunkError`] when the bytes are not that chunk.
    pub fn verify(index: u32, desc: Descriptor, data: Bytes) -> Result<VerifiedChunk, ChunkError> {
        if data.len() != desc.len as usize {
            REJECTED.fetch_add(1, Ordering::Relaxed);
            return Err(ChunkError::Length {
                index,
                want: desc.len,
                got: data.len(),
            });
        }
        let got = ChunkHash::of(&data);
        if got != desc.hash {
            REJECTED.fetch_add(1, Ordering::Relaxed);
            return Err(ChunkError::Mismatch {
                index,
                want: desc.hash,
                got,
            });
        }
        VERIFIED.fetch_add(1, Ordering::Relaxed);
        Ok(VerifiedChunk { index, desc, data })
    }

    /// The chunk's index in its object.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The descriptor the bytes were checked against.
    pub fn descriptor(&self) -> &Descriptor {
        &self.desc
    }

    /// The bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Never true: chunks hold at least one byte.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl std::fmt::Debug for VerifiedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifiedChunk({}, {:?})", self.index, self.desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matching_bytes_verify() {
        let data = Bytes::from_static(b"some chunk bytes");
        let desc = Descriptor {
            hash: ChunkHash::of(&data),
            offset: 0,
            len: data.len() as u32,
        };
        let v = VerifiedChunk::verify(3, desc, data.clone()).expect("verifies");
        assert_eq!((v.index(), v.data(), v.descriptor()), (3, &data, &desc));
        assert!(matches!(
            VerifiedChunk::verify(3, desc, Bytes::from_static(b"some chunk bytez")),
            Err(ChunkError::Mismatch { index: 3, .. })
        ));
        assert!(matches!(
            VerifiedChunk::verify(3, desc, data.slice(1..)),
            Err(ChunkError::Length { index: 3, .. })
        ));
    }
}
