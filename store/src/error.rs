//! Errors of the store crate.

use std::path::PathBuf;

use crate::{ChunkHash, Oid};

/// A text form (OID, ticket, hint, chunker spec) that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseError {
    /// What was being parsed ("OID", "ticket", ...).
    pub what: &'static str,
    /// Why it was rejected.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        ParseError {
            what,
            reason: reason.into(),
        }
    }
}

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", ...).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error reading the input of a put.
    #[error("reading put input: {0}")]
    Input(#[source] std::io::Error),
    /// The SQLite index failed.
    #[error("index: {0}")]
    Db(#[from] rusqlite::Error),
    /// The index database is from a newer version of DOT.
    #[error("index schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// The object is not in the store.
    #[error("object {0} is not in the store")]
    UnknownObject(Oid),
    /// A chunk index past the object's last chunk.
    #[error("object {oid} has no chunk {index}")]
    NoSuchChunk {
        /// The object.
        oid: Oid,
        /// The chunk index asked for.
        index: u32,
    },
    /// Chunk bytes whose hash does not match the descriptor.
    #[error("chunk {index} of {oid}: bytes hash to {got}, descriptor says {want}")]
    ChunkMismatch {
        /// The object.
        oid: Oid,
        /// The chunk's index.
        index: u32,
        /// Expected hash.
        want: ChunkHash,
        /// Hash of the bytes offered.
        got: ChunkHash,
    },
    /// Chunk bytes of the wrong length.
    #[error("chunk {index} of {oid}: {got} bytes, descriptor says {want}")]
    ChunkLength {
        /// The object.
        oid: Oid,
        /// The chunk's index.
        index: u32,
        /// Expected length.
        want: u32,
        /// Length offered.
        got: usize,
    },
    /// A chunk that is not present yet was asked for.
    #[error("chunk {index} of {oid} is not present")]
    ChunkMissing {
        /// The object.
        oid: Oid,
        /// The chunk's index.
        index: u32,
    },
    /// All chunks verified, but the whole object does not hash to its OID.
    #[error("object {oid}: its bytes hash to {got}, not to its OID")]
    ObjectMismatch {
        /// The object.
        oid: Oid,
        /// What the bytes hash to.
        got: Oid,
    },
    /// A descriptor list that does not describe an object of the claimed size.
    #[error("bad descriptor list for {oid}: {reason}")]
    BadDescriptors {
        /// The object.
        oid: Oid,
        /// What is wrong with the list.
        reason: String,
    },
    /// A referenced file's bytes changed, or the file was moved or deleted,
    /// since it was put: the object is no longer served from it.
    #[error(
        "{path} {} since it was put as {oid}; put it again to serve it",
        if *.gone { "was moved or deleted" } else { "changed" }
    )]
    FileChanged {
        /// The object the file stood for.
        oid: Oid,
        /// The file.
        path: PathBuf,
        /// The file is no longer at `path` (rather than holding other bytes).
        gone: bool,
    },
    /// The input changed while it was being hashed.
    #[error("{path} changed while it was being put")]
    ChangedDuringPut {
        /// The file.
        path: PathBuf,
    },
    /// The object is larger than this store accepts.
    #[error("object of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// The object's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The store's worker thread is gone (the store is shutting down).
    #[error("the store is closed")]
    Closed,
    /// A wait for a chunk ran out of time.
    #[error("timed out waiting for chunk {index} of {oid}")]
    Timeout {
        /// The object.
        oid: Oid,
        /// The chunk.
        index: u32,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result type of the store crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
