//! [`PeerKey`]: the name of an agent's long-term TLS key, as tickets and
//! hints carry it.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;
use crate::oid::{clip, hex};

/// What names an agent's long-term peer key: the first 16 bytes of BLAKE3
/// over its public key (DER SubjectPublicKeyInfo). A ticket or hint
/// carrying one makes its receiver speak TLS and refuse any server that
/// cannot prove that key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey(pub [u8; 16]);

impl PeerKey {
    /// The name of the public key `spki` (DER SubjectPublicKeyInfo).
    pub fn of_spki(spki: &[u8]) -> PeerKey {
        let mut h = blake3::Hasher::new();
        h.update(b"DOT peer key v1");
        h.update(spki);
        let mut k = [0u8; 16];
        k.copy_from_slice(&h.finalize().as_bytes()[..16]);
        PeerKey(k)
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({self})")
    }
}

/// 32 lowercase hex digits.
impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl FromStr for PeerKey {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<PeerKey, ParseError> {
        let err = || ParseError::new("peer key", format!("expected 32 hex digits: {:?}", clip(s)));
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut k = [0u8; 16];
        for (i, byte) in k.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(PeerKey(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_as_text_and_junk_is_refused() {
        let key = PeerKey::of_spki(b"some public key");
        assert_eq!(key.to_string().len(), 32);
        assert_eq!(key.to_string().parse::<PeerKey>(), Ok(key));
        for bad in [
            "xyz",
            "",
            &"g".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
            "+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(bad.parse::<PeerKey>().is_err(), "{bad:?}");
        }
    }
}
