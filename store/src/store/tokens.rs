//! Access tokens: the secret a peer presents to learn an object's
//! descriptors (and so to fetch its chunks).
//!
//! No token is stored: each is derived from the object's OID and the
//! store's secret key (`token.key`, 32 random bytes made at the first open,
//! mode 0600), as the first 16 bytes of keyed BLAKE3 over the OID. Reading
//! the index (or a backup of it) yields no usable ticket; putting the same
//! object again gives the same ticket; replacing the key file revokes every
//! ticket handed out.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::Store;
use crate::error::{Error, Result};
use crate::oid::Oid;
use crate::ticket::Token;

/// The secret key file in the store folder.
const KEY_FILE: &str = "token.key";
/// What the key derivation is for (domain separation).
const CONTEXT: &[u8] = b"DOT access token v1";

/// The store's secret key: read from `dir/token.key`, or made there.
pub(super) fn load_or_make_key(dir: &Path) -> Result<[u8; 32]> {
    let path = dir.join(KEY_FILE);
    let made = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    match made {
        Ok(mut f) => {
            let mut key = [0u8; 32];
            key[..16].copy_from_slice(&Token::random().map_err(Error::Input)?.0);
            key[16..].copy_from_slice(&Token::random().map_err(Error::Input)?.0);
            f.write_all(&key)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io("write", &path, e))?;
            return Ok(key);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("create", &path, e)),
    }
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let meta = f.metadata().map_err(|e| Error::io("stat", &path, e))?;
    if !meta.is_file() || meta.len() != 32 {
        return Err(Error::io(
            "read",
            &path,
            io::Error::new(io::ErrorKind::InvalidData, "not a 32-byte key file"),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the token key was readable by others; made private (0600)");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("chmod", &path, e))?;
    }
    let mut key = [0u8; 32];
    f.read_exact(&mut key)
        .map_err(|e| Error::io("read", &path, e))?;
    Ok(key)
}

impl Store {
    /// The access token peers must present for `oid` (derived, never
    /// stored).
    ///
    /// # Errors
    /// [`Error::UnknownObject`] if the store does not hold `oid`; index
    /// errors.
    pub fn token(&self, oid: Oid) -> Result<Token> {
        if self.info(oid)?.is_none() {
            return Err(Error::UnknownObject(oid));
        }
        Ok(self.derive_token(oid))
    }

    fn derive_token(&self, oid: Oid) -> Token {
        let mut h = blake3::Hasher::new_keyed(&self.inner.token_key);
        h.update(CONTEXT);
        h.update(oid.as_bytes());
        let mut t = [0u8; 16];
        t.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Token(t)
    }

    /// Whether `token` is the access token of `oid`; `None` if the store
    /// does not hold `oid`. Compared in constant time.
    ///
    /// # Errors
    /// Index errors.
    pub fn check_token(&self, oid: Oid, token: Token) -> Result<Option<bool>> {
        if self.info(oid)?.is_none() {
            return Ok(None);
        }
        let want = self.derive_token(oid);
        Ok(Some(
            want.0
                .iter()
                .zip(token.0)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0,
        ))
    }
}
