//! The serving side's per-connection rules, without I/O.
//!
//! A connection starts with `Hello` both ways. A requester learns an
//! object's descriptors only by presenting the object's access token, and
//! is served chunks only of objects authorised that way on this same
//! connection: knowing a chunk hash or an OID is not enough. Anything a
//! requester should never send closes the connection with a reason.

use std::collections::HashSet;

use dot_store::{Oid, Token};

use super::proto::{ErrorCode, Frame, VERSION};

/// Most objects one connection may have authorised at once (bounds memory).
pub const MAX_AUTHORIZED: usize = 4096;

/// What the driver must do with a frame it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this frame back.
    Reply(Frame),
    /// Check `token` against `oid`'s token (or, with `via`, against the
    /// tree `via`'s token, and that the tree holds `oid`); if it matches
    /// call [`ServerSession::authorize`] and send descriptor page `first`,
    /// else reply `Unauthorized` (or `NotFound`).
    CheckToken {
        /// Request id.
        req: u32,
        /// The object.
        oid: Oid,
        /// Token presented.
        token: Token,
        /// First descriptor wanted.
        first: u32,
        /// The tree whose token it is, for a file of a tree.
        via: Option<Oid>,
    },
    /// Read and send chunk `index` of the (authorised) object.
    Serve {
        /// Request id.
        req: u32,
        /// The object.
        oid: Oid,
        /// Chunk index.
        index: u32,
    },
    /// Drop request `req` if it has not been answered.
    Cancel {
        /// Request id.
        req: u32,
    },
    /// Close the connection; log the reason.
    Close(String),
}

/// State of one serving connection.
#[derive(Debug, Default)]
pub struct ServerSession {
    greeted: bool,
    authorized: HashSet<Oid>,
}

impl ServerSession {
    /// A new connection.
    pub fn new() -> ServerSession {
        ServerSession::default()
    }

    /// Decides what to do with `frame`.
    pub fn handle(&mut self, frame: Frame) -> Action {
        if !self.greeted {
            return match frame {
                Frame::Hello { version } if version == VERSION => {
                    self.greeted = true;
                    Action::Reply(Frame::Hello { version: VERSION })
                }
                Frame::Hello { version } => Action::Close(format!(
                    "peer speaks protocol version {version}, we speak {VERSION}"
                )),
                _ => Action::Close("first frame was not Hello".into()),
            };
        }
        match frame {
            Frame::DescReq {
                req,
                oid,
                token,
                first,
                via,
            } => Action::CheckToken {
                req,
                oid,
                token,
                first,
                via,
            },
            Frame::ChunkReq { req, oid, index } if self.authorized.contains(&oid) => {
                Action::Serve { req, oid, index }
            }
            Frame::ChunkReq { req, .. } => Action::Reply(Frame::Error {
                req,
                code: ErrorCode::Unauthorized,
                message: "object not authorised on this connection".into(),
            }),
            Frame::Cancel { req } => Action::Cancel { req },
            Frame::Hello { .. } => Action::Close("second Hello".into()),
            Frame::Desc(_) | Frame::Chunk { .. } | Frame::Error { .. } => {
                Action::Close("requester sent a reply frame".into())
            }
        }
    }

    /// Records that the token for `oid` was checked. Returns false (and
    /// authorises nothing) when the connection already holds
    /// [`MAX_AUTHORIZED`] objects.
    pub fn authorize(&mut self, oid: Oid) -> bool {
        if self.authorized.len() >= MAX_AUTHORIZED && !self.authorized.contains(&oid) {
            return false;
        }
        self.authorized.insert(oid);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeted() -> ServerSession {
        let mut s = ServerSession::new();
        assert_eq!(
            s.handle(Frame::Hello { version: VERSION }),
            Action::Reply(Frame::Hello { version: VERSION })
        );
        s
    }

    #[test]
    fn hello_comes_first_and_versions_must_match() {
        let mut s = ServerSession::new();
        assert!(matches!(
            s.handle(Frame::Cancel { req: 1 }),
            Action::Close(_)
        ));
        let mut s = ServerSession::new();
        assert!(matches!(
            s.handle(Frame::Hello {
                version: VERSION + 1
            }),
            Action::Close(_)
        ));
        let mut s = greeted();
        assert!(matches!(
            s.handle(Frame::Hello { version: VERSION }),
            Action::Close(_)
        ));
    }

    #[test]
    fn chunks_only_of_objects_authorised_on_this_connection() {
        let oid = Oid::of(b"object");
        let mut s = greeted();
        let refused = s.handle(Frame::ChunkReq {
            req: 1,
            oid,
            index: 0,
        });
        assert!(matches!(
            refused,
            Action::Reply(Frame::Error {
                code: ErrorCode::Unauthorized,
                req: 1,
                ..
            })
        ));
        let token = Token([3; 16]);
        assert_eq!(
            s.handle(Frame::DescReq {
                req: 2,
                oid,
                token,
                first: 0,
                via: None,
            }),
            Action::CheckToken {
                req: 2,
                oid,
                token,
                first: 0,
                via: None,
            }
        );
        assert!(s.authorize(oid));
        assert_eq!(
            s.handle(Frame::ChunkReq {
                req: 3,
                oid,
                index: 5
            }),
            Action::Serve {
                req: 3,
                oid,
                index: 5
            }
        );
        // Another connection has authorised nothing.
        let mut other = greeted();
        assert!(matches!(
            other.handle(Frame::ChunkReq {
                req: 4,
                oid,
                index: 5
            }),
            Action::Reply(Frame::Error { .. })
        ));
    }

    #[test]
    fn reply_frames_from_a_requester_close_the_connection() {
        let mut s = greeted();
        assert!(matches!(
            s.handle(Frame::Chunk {
                req: 1,
                index: 0,
                data: vec![1].into()
            }),
            Action::Close(_)
        ));
    }

    #[test]
    fn authorised_set_is_bounded() {
        let mut s = greeted();
        for i in 0..MAX_AUTHORIZED as u32 {
            assert!(s.authorize(Oid::of(&i.to_be_bytes())));
        }
        assert!(!s.authorize(Oid::of(b"one too many")));
        assert!(
            s.authorize(Oid::of(&0u32.to_be_bytes())),
            "already authorised stays so"
        );
    }
}
