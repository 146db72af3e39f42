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
const KIND_DATA: u8 = 1;

/// One message of the local API.
#[derive(Debug)]
pub enum Message {
    /// A JSON request or response.
    Json(Vec<u8>),
    /// Object bytes.
    Data(Vec<u8>),
}

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
    /// Fetch an object (from the store, else from the ticket's sources)
    /// and stream it back: an [`Response::Object`], data messages in
    /// order, then [`Response::End`].
    Get {
        /// A ticket, or a bare OID for an object the agent holds.
        ticket: String,
        /// Sources to use instead of the ticket's hints.
        #[serde(default)]
        hints: Vec<String>,
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
    /// A get's object is available; its bytes follow as data messages.
    Object {
        /// The OID.
        oid: String,
        /// Size in bytes.
        size: u64,
    },
    /// End of a get's data, with where the bytes came from.
    End {
        /// Chunk bytes fetched from peers for this get.
        from_peers: u64,
        /// Bytes the store already held.
        local: u64,
    },
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

/// Writes object bytes as one data message (at most [`MAX_MESSAGE`] - 1).
///
/// # Errors
/// Socket errors.
pub async fn write_data<W: AsyncWriteExt + Unpin>(w: &mut W, data: &[u8]) -> Result<(), ApiError> {
    if data.len() >= MAX_MESSAGE {
        return Err(ApiError::Bad(format!(
            "data message of {} bytes",
            data.len()
        )));
    }
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    head[4] = KIND_DATA;
    w.write_all(&head).await?;
    w.write_all(data).await?;
    Ok(())
}

/// Reads one message of either kind; `None` at a clean end of stream.
///
/// # Errors
/// Socket errors; oversized or unknown-kind messages.
pub async fn read_message<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Option<Message>, ApiError> {
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
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await?;
    let mut body = vec![0u8; len - 1];
    r.read_exact(&mut body).await?;
    match kind[0] {
        KIND_JSON => Ok(Some(Message::Json(body))),
        KIND_DATA => Ok(Some(Message::Data(body))),
        k => Err(ApiError::Bad(format!("kind {k}"))),
    }
}

/// Reads one JSON message; `None` at a clean end of stream.
///
/// # Errors
/// Socket errors; oversized, unknown-kind or malformed messages.
pub async fn read_json<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<Option<T>, ApiError> {
    match read_message(r).await? {
        None => Ok(None),
        Some(Message::Json(body)) => Ok(Some(serde_json::from_slice(&body)?)),
        Some(Message::Data(_)) => Err(ApiError::Bad(
            "data where a request or answer was expected".into(),
        )),
    }
}
