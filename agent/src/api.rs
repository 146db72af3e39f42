//! The local API between `gtc` clients and the agent, over a Unix socket.
//!
//! Each message is `len: u32 BE | kind: u8 | body`, with `len` counting the
//! kind byte and the body and bounded by [`MAX_MESSAGE`]. Kind 0 is a JSON
//! [`Request`] or [`Response`]; kind 1 (raw bytes, for object data) is
//! reserved for put and get.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest message body.
pub const MAX_MESSAGE: usize = 8 << 20;
const KIND_JSON: u8 = 0;

/// A client's request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// What the agent holds and serves.
    Status,
    /// Put the file whose descriptor follows this message (one byte sent
    /// with the descriptor attached as SCM_RIGHTS), by reference: the agent
    /// does not copy it. `path` is where the client opened it; the agent
    /// re-validates the file before serving it.
    PutFile {
        /// Absolute path of the file.
        path: String,
    },
}

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Status),
    /// Answer to a put.
    Put(PutResult),
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// What a put produced, as `gtc put --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PutResult {
    /// The object's OID.
    pub oid: String,
    /// The ticket: OID, hints and access token in one word.
    pub ticket: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of chunks.
    pub chunks: u32,
    /// Hints in the ticket.
    pub hints: Vec<String>,
    /// False when the OID came from the cache of unchanged files.
    pub hashed: bool,
}

/// The agent's state, as `gtc status --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Agent version.
    pub version: String,
    /// Store folder.
    pub data_dir: String,
    /// Peer address it listens on.
    pub listen: String,
    /// Hints it puts in tickets.
    pub hints: Vec<String>,
    /// Objects in the store.
    pub objects: u64,
    /// Of which complete.
    pub complete: u64,
    /// Objects pinned by clients.
    pub pinned: u64,
    /// Bytes the store holds itself.
    pub stored_bytes: u64,
    /// What peers were served.
    pub peers: PeerCounters,
}

/// Counters of the peer server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerCounters {
    /// Chunks sent to peers.
    pub chunks_served: u64,
    /// Chunk bytes sent to peers.
    pub bytes_sent: u64,
    /// Descriptor requests refused for a wrong token.
    pub refused: u64,
    /// Connections closed for protocol violations.
    pub violations: u64,
}

/// Errors of the local API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Socket I/O failed.
    #[error("local API: {0}")]
    Io(#[from] std::io::Error),
    /// A message over the size limit or of an unknown kind.
    #[error("local API: bad message: {0}")]
    Bad(String),
    /// JSON that does not match the API.
    #[error("local API: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes one JSON message.
///
/// # Errors
/// Socket errors.
pub async fn write_json<W: AsyncWriteExt + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), ApiError> {
    let body = serde_json::to_vec(msg)?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(KIND_JSON);
    out.extend_from_slice(&body);
    w.write_all(&out).await?;
    Ok(())
}

/// Reads one JSON message; `None` at a clean end of stream.
///
/// # Errors
/// Socket errors; oversized, unknown-kind or malformed messages.
pub async fn read_json<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<Option<T>, ApiError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(ApiError::Bad(format!("length {len}")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if body[0] != KIND_JSON {
        return Err(ApiError::Bad(format!("kind {}", body[0])));
    }
    Ok(Some(serde_json::from_slice(&body[1..])?))
}
