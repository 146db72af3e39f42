//! The client's side of the local API, without I/O: decoding an answer,
//! the answer each request expects, and how any other answer becomes an
//! error. The blocking and the async client both use these, so a request
//! means the same on either.

use std::io;
use std::path::Path;

use crate::api::{
    ApiError, GetMode, Listed, Message, PutResult, Request, Response, Status, Verified,
};

use super::{ClientError, Result};

/// The error for an answer the request did not expect: the agent's own
/// error, or a protocol error naming what came.
pub(super) fn unexpected(r: &Response) -> ClientError {
    match r {
        Response::Error { message, kind } => ClientError::Agent {
            message: message.clone(),
            kind: *kind,
        },
        other => ClientError::Protocol(format!("{other:?}")),
    }
}

/// Decodes a message that must be a JSON answer.
pub(super) fn parse_response(msg: Option<Message>) -> Result<Response> {
    match msg {
        Some(Message::Json(body)) => Ok(serde_json::from_slice(&body).map_err(ApiError::from)?),
        Some(Message::Data(_)) => Err(ClientError::Protocol("data where an answer belongs".into())),
        None => Err(ClientError::Protocol(
            "the agent closed the connection".into(),
        )),
    }
}

/// The error when nothing answers on the socket at `path`.
pub(super) fn no_agent(path: &Path, source: io::Error) -> ClientError {
    ClientError::NoAgent {
        path: path.display().to_string(),
        source,
    }
}

/// Checks who serves the socket `fd` (connected to `path`): this user or
/// root, or the agent is not trusted (someone else may have made the
/// socket first, to receive the files and data of this user's puts).
pub(super) fn check_agent(path: &Path, fd: std::os::fd::RawFd) -> Result<()> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(ClientError::Io(io::Error::last_os_error()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if cred.uid == me || cred.uid == 0 {
        return Ok(());
    }
    Err(ClientError::UntrustedAgent {
        path: path.display().to_string(),
        uid: cred.uid,
    })
}

/// The request that starts a get.
pub(super) fn get_request(ticket: &str, hints: &[String], mode: GetMode) -> Request {
    Request::Get {
        ticket: ticket.to_owned(),
        hints: hints.to_vec(),
        mode,
    }
}

/// The answer to [`Request::Status`].
pub(super) fn list(r: Response) -> Result<(Vec<Listed>, Option<String>)> {
    match r {
        Response::List { objects, next } => Ok((objects, next)),
        other => Err(unexpected(&other)),
    }
}

pub(super) fn verified(r: Response) -> Result<Verified> {
    match r {
        Response::Verified(v) => Ok(v),
        other => Err(unexpected(&other)),
    }
}

pub(super) fn status(r: Response) -> Result<Status> {
    match r {
        Response::Status(s) => Ok(*s),
        other => Err(unexpected(&other)),
    }
}

/// The answer to a put (by descriptor, or a stream put's commit).
pub(super) fn put(r: Response) -> Result<PutResult> {
    match r {
        Response::Put(r) => Ok(r),
        other => Err(unexpected(&other)),
    }
}

/// The answer to a request that has no other ([`Request::Done`]).
pub(super) fn ok(r: Response) -> Result<()> {
    match r {
        Response::Ok => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// The object a get names, as its first answer announces it.
pub(super) struct Announced {
    /// The OID.
    pub(super) oid: String,
    /// Size in bytes.
    pub(super) size: u64,
    /// Whether the agent's file descriptor follows.
    pub(super) via_fd: bool,
}

/// The first answer to [`Request::Get`].
pub(super) fn object(r: Response) -> Result<Announced> {
    match r {
        Response::Object { oid, size, via_fd } => Ok(Announced { oid, size, via_fd }),
        other => Err(unexpected(&other)),
    }
}
