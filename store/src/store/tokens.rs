//! Access tokens: the secret a peer presents to learn an object's
//! descriptors (and so to fetch its chunks). One per object, made at its
//! first ticket and kept in the index.

use super::Store;
use crate::error::{Error, Result};
use crate::index;
use crate::oid::Oid;
use crate::ticket::Token;

impl Store {
    /// Sets the access token peers must present for `oid` if it has none,
    /// and returns the token in force.
    ///
    /// # Errors
    /// [`Error::UnknownObject`]; index errors.
    pub fn ensure_token(&self, oid: Oid, token: Token) -> Result<Token> {
        self.inner.db.call(move |c| {
            index::set_token_if_none(c, &oid, token.0)?;
            match index::token(c, &oid)?.and_then(|t| <[u8; 16]>::try_from(t).ok()) {
                Some(t) => Ok(Token(t)),
                None => Err(Error::UnknownObject(oid)),
            }
        })
    }

    /// Whether `token` is the access token of `oid`. `None` if the object is
    /// unknown or has no token. Compared in constant time.
    ///
    /// # Errors
    /// Index errors.
    pub fn check_token(&self, oid: Oid, token: Token) -> Result<Option<bool>> {
        self.inner.db.call(move |c| {
            Ok(index::token(c, &oid)?.map(|t| {
                t.len() == 16 && t.iter().zip(token.0).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }))
        })
    }
}
