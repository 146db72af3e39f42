//! Object and chunk identifiers.
//!
//! An [`Oid`] names a whole object: SHA-256 over all of its bytes, written
//! `dot1-sha256-<64 lowercase hex>` (protocol version, algorithm, digest), a
//! form that is safe as a file name and a shell word. A [`ChunkHash`] names
//! one chunk: BLAKE3 over the chunk's bytes. The two are distinct types so
//! that one can never be passed for the other.
//!
//! Why two algorithms: the OID keeps the paper's whole-data semantics and a
//! widely known hash, while chunk hashes are computed and checked for every
//! chunk on both ends of a transfer, where BLAKE3 runs at about 1.6x the
//! speed of SHA-256 with SHA-NI on the machines we measure (docs/architecture.md).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// The text prefix of an OID: protocol version 1, whole-object SHA-256.
pub const OID_PREFIX: &str = "dot1-sha256-";

/// Length of an OID's text form.
pub const OID_TEXT_LEN: usize = OID_PREFIX.len() + 64;

/// Identifier of a whole object: SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(pub [u8; 32]);

/// Identifier of a chunk: BLAKE3 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl Oid {
    /// The OID of `data`.
    pub fn of(data: &[u8]) -> Oid {
        use sha2::Digest;
        Oid(sha2::Sha256::digest(data).into())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, for logs.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }

    /// The digest alone in lowercase hex (used in file names).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl ChunkHash {
    /// The hash of `data`.
    pub fn of(data: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest in lowercase hex (chunk file names on portable storage).
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 12 hex digits, for logs.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(OID_PREFIX)?;
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.short())
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", self.short())
    }
}

impl FromStr for Oid {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Oid, ParseError> {
        let err = |reason: &str| ParseError::new("OID", format!("{reason}: {:?}", clip(s)));
        let Some(digest) = s.strip_prefix(OID_PREFIX) else {
            if s.starts_with("dot") && s.split('-').count() >= 3 {
                return Err(err("unsupported version or hash algorithm"));
            }
            return Err(err("expected dot1-sha256-<64 hex digits>"));
        };
        parse_hex32(digest)
            .map(Oid)
            .ok_or_else(|| err("expected 64 lowercase hex digits"))
    }
}

impl FromStr for ChunkHash {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<ChunkHash, ParseError> {
        parse_hex32(s).map(ChunkHash).ok_or_else(|| {
            ParseError::new(
                "chunk hash",
                format!("expected 64 lowercase hex digits: {:?}", clip(s)),
            )
        })
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Parses exactly 64 lowercase hex digits.
fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// At most 80 characters of untrusted text, for error messages.
pub(crate) fn clip(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_of_empty_object_is_the_sha256_of_nothing() {
        let oid = Oid::of(b"");
        assert_eq!(
            oid.to_string(),
            "dot1-sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(oid.to_string().len(), OID_TEXT_LEN);
        assert_eq!(oid.to_string().parse::<Oid>(), Ok(oid));
    }

    #[test]
    fn oid_parser_rejects_garbage() {
        for bad in [
            "",
            "dot1-sha256-",
            "dot1-sha256-E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "dot1-sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "dot1-sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "dot1-sha256-g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "dot2-sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "dot1-sha1-da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "../etc/passwd",
        ] {
            let err = bad.parse::<Oid>().expect_err(bad);
            assert_eq!(err.what, "OID");
        }
        let err = "dot2-sha256-00".parse::<Oid>().expect_err("version");
        assert!(err.reason.contains("unsupported"), "{err}");
    }

    #[test]
    fn chunk_hash_is_blake3_and_round_trips() {
        let h = ChunkHash::of(b"abc");
        assert_eq!(
            h.to_string(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(h.to_string().parse::<ChunkHash>(), Ok(h));
        assert!("xyz".parse::<ChunkHash>().is_err());
    }
}
