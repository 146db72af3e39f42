//! The local API between `gtc` clients and the agent, over a Unix socket.
//!
//! Each message is `len: u32 BE | kind: u8 | body`, with `len` counting the
//! kind byte and the body and bounded by [`MAX_MESSAGE`]. Kind 0 is a JSON
//! [`Request`] or [`Response`]; kind 1 carries object bytes: a stream
//! put's data, and a get's data when the agent does not pass a descriptor.
//! A get's descriptor, and a put's file descriptor, travel as SCM_RIGHTS
//! on a one-byte message right after the JSON message that announces them.

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

/// How a get hands out the object's bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GetMode {
    /// In order, each range as soon as it and everything before it is
    /// verified.
    #[default]
    Sequential,
    /// Each chunk as soon as it is verified, in whatever order chunks
    /// arrive.
    OutOfOrder,
    /// Nothing unasked: the client sends [`Request::Read`] for the ranges
    /// it wants.
    Random,
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
    /// re-validates the file before serving it. Answered by
    /// [`Response::Put`].
    PutFile {
        /// Absolute path of the file.
        path: String,
    },
    /// Start a put of bytes that follow as data messages, ended by
    /// [`Request::PutCommit`] (or abandoned by closing the connection).
    PutInit {
        /// How to cut this object into chunks (`cdc:MIN:AVG:MAX` or
        /// `fixed:SIZE`, as the `chunker` config key); the agent's own
        /// setting when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunker: Option<String>,
        /// The bytes are a tree's manifest (docs/trees.md): the agent
        /// checks it, and that it holds every file it lists, and answers
        /// with a tree's ticket.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tree: bool,
        /// The bytes are segments (a tree's pack: its files), each cut
        /// into chunks as if alone: [`Request::PutCuts`] messages give
        /// where segments end, each before the bytes it falls in.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        segments: bool,
    },
    /// During a put started with `segments`: where the next segments end,
    /// as offsets in the object, ascending (an end equal to the one before
    /// is an empty segment). At most [`MAX_CUTS`] a message; no answer.
    PutCuts {
        /// Segment ends.
        ends: Vec<u64>,
    },
    /// End of a stream put's data; answered by [`Response::Put`].
    PutCommit,
    /// Get an object: answered by [`Response::Object`] once its size is
    /// known, then, by `mode`, [`Response::Ready`] ranges and a closing
    /// [`Response::End`], or nothing until the client sends
    /// [`Request::Read`].
    Get {
        /// A ticket, or a bare OID.
        ticket: String,
        /// Sources to use instead of the ticket's hints.
        #[serde(default)]
        hints: Vec<String>,
        /// How to hand out the bytes.
        #[serde(default)]
        mode: GetMode,
    },
    /// Read a range of the object of this connection's last get; answered
    /// by one [`Response::Ready`] (possibly shorter at the object's end)
    /// once those bytes are verified, or an error.
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes wanted (at most [`MAX_READ`]).
        len: u64,
    },
    /// Copy an object (fetched first if it is not here) to the DOT store
    /// of the device mounted at `path` (made if missing): answered by
    /// [`Response::Progress`] messages, then [`Response::Ok`] once its
    /// descriptor file is written, or an error.
    Export {
        /// A ticket, or a bare OID.
        ticket: String,
        /// Where the device is mounted.
        path: String,
    },
    /// The objects the store holds, in OID order, at most [`LIST_PAGE`]
    /// after `after`: answered by [`Response::List`].
    List {
        /// Start after this OID (the previous page's `next`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Drop an object from the store (its file too if the store owns it;
    /// a file put by reference is left alone): [`Response::Ok`], or an
    /// error if a client holds it or a fetch of it runs.
    Remove {
        /// The OID.
        oid: String,
    },
    /// Re-read objects and check them against their hashes (all when
    /// `oids` is empty; objects being fetched are left out): damaged chunks
    /// are marked missing (fetched again when next wanted), objects whose
    /// whole hash is wrong and referenced files that changed are dropped.
    /// Answered by [`Response::Verified`].
    Verify {
        /// The OIDs.
        #[serde(default)]
        oids: Vec<String>,
    },
    /// The client is done with an object it put or got: the agent may
    /// evict it under its budget (objects are also released when the
    /// connection closes).
    Done {
        /// The OID.
        oid: String,
    },
}

/// Most objects one [`Response::List`] carries.
pub const LIST_PAGE: usize = 10_000;

/// Largest range one [`Request::Read`] may ask for.
pub const MAX_READ: u64 = 64 << 20;

/// The agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<Status>),
    /// Answer to a put.
    Put(PutResult),
    /// A get's object is known. With `via_fd`, a read-only descriptor of
    /// the file holding it follows (SCM_RIGHTS) and ranges announced by
    /// [`Response::Ready`] are read from it; otherwise each `Ready` is
    /// followed by its bytes as data messages.
    Object {
        /// The OID.
        oid: String,
        /// Size in bytes.
        size: u64,
        /// Whether the bytes are read from a passed descriptor.
        via_fd: bool,
    },
    /// Bytes `offset..offset + len` of the object are verified.
    Ready {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// End of a streamed get, with where the bytes came from.
    End {
        /// Chunk bytes fetched from peers for this get.
        from_peers: u64,
        /// Bytes the store already held.
        local: u64,
        /// Bytes taken from portable devices for this get.
        #[serde(default)]
        from_devices: u64,
    },
    /// Bytes of a long operation (an export) done so far.
    Progress {
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// A page of [`Request::List`].
    List {
        /// The objects.
        objects: Vec<Listed>,
        /// Where the next page starts, if there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// What [`Request::Verify`] found.
    Verified(Verified),
    /// A request without other answer succeeded.
    Ok,
    /// The request failed.
    Error {
        /// Why.
        message: String,
        /// What kind of failure, where the agent can tell (a script acts
        /// on it: `gtc` exits with a code per kind).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<ErrorKind>,
    },
}

/// Kinds of failure a caller may act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such object, or not authorised (one answer for both).
    NotFound,
    /// No source answered: connection failures, timeouts, not a gtc peer.
    Unreachable,
    /// Bytes that did not verify, or a put file that changed.
    Integrity,
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
    /// The file's permission bits (`gtc put FILE` adds them; `gtc cp`
    /// restores them). In JSON an octal string (`"0644"`), as `gtc get
    /// --mode` takes it; a number is read too.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "octal_mode::serialize",
        deserialize_with = "octal_mode::deserialize"
    )]
    pub mode: Option<u32>,
    /// The file's modification time, nanoseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i64>,
}

/// Segment ends in one [`Request::PutCuts`].
pub const MAX_CUTS: usize = 4096;

/// What a verify found, as `gtc verify --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Verified {
    /// Objects re-read.
    pub objects: u64,
    /// Chunks re-hashed.
    pub chunks: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Chunks whose bytes no longer matched, `OID` and index (now
    /// missing: fetched again when next wanted).
    pub damaged_chunks: Vec<(String, u32)>,
    /// Objects whose whole hash was wrong (dropped).
    pub bad_objects: Vec<String>,
    /// Objects put by reference whose file changed or went (dropped), and
    /// the file.
    pub changed_files: Vec<(String, String)>,
}

impl Verified {
    /// Adds what another verify found.
    pub fn add(&mut self, mut other: Verified) {
        self.objects += other.objects;
        self.chunks += other.chunks;
        self.bytes += other.bytes;
        self.damaged_chunks.append(&mut other.damaged_chunks);
        self.bad_objects.append(&mut other.bad_objects);
        self.changed_files.append(&mut other.changed_files);
    }

    /// True when nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.damaged_chunks.is_empty()
            && self.bad_objects.is_empty()
            && self.changed_files.is_empty()
    }
}

/// One object of the store, as `gtc ls --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listed {
    /// The OID.
    pub oid: String,
    /// Size in bytes.
    pub size: u64,
    /// `complete` (every byte here and checked) or `partial`.
    pub state: String,
    /// Chunks, and those held.
    pub chunks: u32,
    /// Chunks whose verified bytes are held.
    pub present: u32,
    /// For an object put by reference: the file it is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referenced: Option<String>,
    /// Clients holding it now (it is not evicted or removed meanwhile).
    pub pins: u32,
    /// Last use, unix seconds.
    pub last_use: i64,
}

/// The agent's state, as `gtc status --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Agent version.
    pub version: String,
    /// Store folder.
    pub data_dir: String,
    /// Peer address it listens on.
    pub listen: String,
    /// Its hints, each naming its peer key if its tickets do (what a
    /// peer's `peers` or `--hint` gives to reach it).
    pub hints: Vec<String>,
    /// Objects in the store.
    pub objects: u64,
    /// Of which complete.
    pub complete: u64,
    /// Objects pinned by clients.
    pub pinned: u64,
    /// Bytes the store holds itself.
    pub stored_bytes: u64,
    /// Its budget (`u64::MAX`: none).
    #[serde(default)]
    pub budget: u64,
    /// Free bytes its filesystem keeps (0: none).
    #[serde(default)]
    pub min_free_bytes: u64,
    /// Free bytes on its filesystem now.
    #[serde(default)]
    pub free_bytes: u64,
    /// Objects evicted since the agent started, and their bytes.
    #[serde(default)]
    pub evicted: u64,
    /// Bytes of the objects evicted.
    #[serde(default)]
    pub evicted_bytes: u64,
    /// What peers were served.
    pub peers: PeerCounters,
    /// Gets in flight.
    pub transfers: Vec<TransferStatus>,
    /// Local API clients connected (counting the one asking).
    pub clients: u64,
}

/// One get in flight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferStatus {
    /// The object.
    pub oid: String,
    /// Its size.
    pub size: u64,
    /// `running`, `verifying`, ...
    pub state: String,
    /// The peer chunks come from.
    pub source: String,
    /// Bytes taken from peers so far.
    pub from_peers: u64,
    /// Bytes held locally when it started.
    pub local: u64,
    /// Bytes taken from portable devices so far.
    #[serde(default)]
    pub from_devices: u64,
    /// Seconds since it started.
    pub seconds: f64,
    /// Each path, when chunks come over several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathStatus>,
}

/// One path of a transfer over several.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathStatus {
    /// The path (source, and local address if bound).
    pub name: String,
    /// Bytes it delivered first.
    pub bytes: u64,
    /// Chunks it delivered first.
    pub chunks: u64,
    /// Times it was dropped (failed, stalled, lied).
    pub drops: u64,
}

/// Counters of the peer server.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerCounters {
    /// Chunks sent to peers.
    pub chunks_served: u64,
    /// Chunk bytes sent to peers.
    pub bytes_sent: u64,
    /// Descriptor requests refused (a wrong token, or an object not held).
    pub refused: u64,
    /// Connections closed for a protocol violation or a missed deadline.
    pub violations: u64,
    /// Connections shed (idle, to make room) or refused at a cap.
    #[serde(default)]
    pub shed: u64,
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
    w.write_all(&encode_json(msg)?).await?;
    Ok(())
}

/// Writes object bytes as one data message (at most [`MAX_MESSAGE`] - 1).
///
/// # Errors
/// Socket errors.
pub async fn write_data<W: AsyncWriteExt + Unpin>(w: &mut W, data: &[u8]) -> Result<(), ApiError> {
    w.write_all(&data_head(data.len())?).await?;
    w.write_all(data).await?;
    Ok(())
}

/// Reads one message of either kind; `None` at a clean end of stream.
///
/// # Errors
/// Socket errors; oversized or unknown-kind messages.
pub async fn read_message<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Option<Message>, ApiError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let body_len = body_len(&head)?;
    r.read_exact(&mut head[4..]).await?;
    // Grown as the bytes arrive: a claim alone costs no memory.
    let mut body = Vec::with_capacity(body_len.min(FIRST_ALLOCATION));
    r.take(body_len as u64).read_to_end(&mut body).await?;
    whole(&body, body_len)?;
    message(head[4], body).map(Some)
}

/// What a message body's buffer starts at before its bytes arrive.
const FIRST_ALLOCATION: usize = 64 << 10;

/// Fails unless the body read is as long as its head said.
fn whole(body: &[u8], want: usize) -> Result<(), ApiError> {
    if body.len() != want {
        return Err(ApiError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("message ended after {} of {want} bytes", body.len()),
        )));
    }
    Ok(())
}

/// The body length a message head announces, bounded before anything is
/// allocated.
fn body_len(head: &[u8; 5]) -> Result<usize, ApiError> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(ApiError::Bad(format!("length {len}")));
    }
    Ok(len - 1)
}

fn message(kind: u8, body: Vec<u8>) -> Result<Message, ApiError> {
    match kind {
        KIND_JSON => Ok(Message::Json(body)),
        KIND_DATA => Ok(Message::Data(body)),
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

/// Encodes one JSON message.
///
/// # Errors
/// If `msg` cannot be serialised.
pub fn encode_json<T: Serialize>(msg: &T) -> Result<Vec<u8>, ApiError> {
    let body = serde_json::to_vec(msg)?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(KIND_JSON);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The 5-byte head of a data message carrying `len` bytes.
///
/// # Errors
/// `len` of [`MAX_MESSAGE`] or more.
pub fn data_head(len: usize) -> Result<[u8; 5], ApiError> {
    if len >= MAX_MESSAGE {
        return Err(ApiError::Bad(format!("data message of {len} bytes")));
    }
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&((len + 1) as u32).to_be_bytes());
    head[4] = KIND_DATA;
    Ok(head)
}

/// Blocking [`read_message`].
///
/// # Errors
/// As [`read_message`].
pub fn read_message_blocking<R: std::io::Read>(r: &mut R) -> Result<Option<Message>, ApiError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..4]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let body_len = body_len(&head)?;
    r.read_exact(&mut head[4..])?;
    let mut body = Vec::with_capacity(body_len.min(FIRST_ALLOCATION));
    std::io::Read::read_to_end(&mut std::io::Read::take(r, body_len as u64), &mut body)?;
    whole(&body, body_len)?;
    message(head[4], body).map(Some)
}

/// File modes in JSON as octal strings.
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(m) => s.serialize_str(&format!("{m:04o}")),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Octal(String),
        Number(u32),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let m = match Option::<Mode>::deserialize(d)? {
            None => return Ok(None),
            Some(Mode::Number(n)) => n,
            Some(Mode::Octal(s)) => u32::from_str_radix(&s, 8)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an octal mode")))?,
        };
        if m > 0o7777 {
            return Err(serde::de::Error::custom(format!("mode {m:o} out of range")));
        }
        Ok(Some(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head claiming the largest body, then three bytes and the end.
    fn short_message() -> Vec<u8> {
        let mut m = (MAX_MESSAGE as u32).to_be_bytes().to_vec();
        m.push(b'J');
        m.extend_from_slice(b"{}x");
        m
    }

    #[test]
    fn a_claimed_length_without_its_bytes_is_an_error_not_an_allocation() {
        let m = short_message();
        match read_message_blocking(&mut &m[..]) {
            Err(ApiError::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
                assert!(e.to_string().contains("after 3 of"), "{e}");
            }
            other => panic!("short message read as {other:?}"),
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let got = rt.block_on(read_message(&mut &m[..]));
        assert!(matches!(got, Err(ApiError::Io(_))), "{got:?}");
    }
}
