//! Content addressing and local storage for DOT.
//!
//! This crate owns the types every other DOT crate speaks in, and the store
//! that holds objects on disk. It depends on no other DOT crate.
//!
//! - [`oid`]: [`Oid`] (SHA-256 of a whole object) and [`ChunkHash`] (BLAKE3
//!   of a chunk), with text forms and strict parsers.
//! - [`descriptor`]: [`Descriptor`] (chunk hash, offset, length), the checks
//!   a descriptor list read from outside must pass, the list digest, and
//!   the one mapping of a byte range to chunk indexes.
//! - [`chunk`]: [`VerifiedChunk`], chunk bytes that were hashed against
//!   their descriptor (only a check makes one; the store writes it without
//!   hashing again).
//! - [`hint`]: [`Hint`] (method URI, SRV-style priority and weight) and the
//!   order in which a receiver tries them.
//! - [`peer_key`]: [`PeerKey`], the name of an agent's TLS key that its
//!   tickets and hints carry.
//! - [`ticket`]: [`Ticket`] (OID + hints + access token in one shell-safe
//!   word of at most 255 bytes) and [`Token`].
//! - [`tree`]: a folder as one object: the [`Manifest`](tree::Manifest)
//!   (every entry's path, kind, mode, mtime, and each file's OID), its
//!   bounded, checked encoding.
//! - [`chunker`]: the [`Chunker`] trait, fixed-size and FastCDC chunkers, and
//!   [`ChunkerSpec`] to configure them.
//! - `ingest` (private): the one-pass put pipeline, hashing chunks and the
//!   whole object on separate threads.
//! - `db` (private): the thread that owns the SQLite connection; `index`
//!   (private) and `schema.sql`: every SQL statement and the schema;
//!   `flusher` (private): the thread that flushes written chunks to disk
//!   before their presence marks reach the index.
//! - [`store`]: the [`Store`], one job per file (open objects, puts, reads,
//!   filling, the running whole-object hash, retention, tokens, verify,
//!   crash recovery); its module page lists them.
//! - [`error`]: the crate's error types.
//!
//! Bytes are [`bytes::Bytes`] (re-exported as [`Bytes`]): a chunk received
//! from the network, or a view of an object's mapped file, moves without a
//! copy.

#![warn(missing_docs)]

pub mod chunk;
pub mod chunker;
mod db;
pub mod descriptor;
pub mod error;
mod flusher;
pub mod hint;
mod index;
mod ingest;
pub mod oid;
pub mod peer_key;
pub mod store;
pub mod ticket;
pub mod tree;

pub use bytes::Bytes;
pub use chunk::{ChunkError, VerifiedChunk};
pub use chunker::{Chunker, ChunkerSpec};
pub use descriptor::{Descriptor, MAX_CHUNK_LEN};
pub use error::{Error, ParseError, Result};
pub use hint::Hint;
pub use oid::{ChunkHash, Oid};
pub use peer_key::PeerKey;
pub use store::{ObjectInfo, PutOutcome, PutWriter, Store, StoreOptions, VerifyReport};
pub use ticket::{Access, Ticket, Token};
