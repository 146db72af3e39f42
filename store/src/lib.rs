//! Content addressing and local storage for DOT.
//!
//! This crate owns the types every other DOT crate speaks in, and the store
//! that holds objects on disk. It depends on no other DOT crate.
//!
//! - [`oid`]: [`Oid`] (SHA-256 of a whole object) and [`ChunkHash`] (BLAKE3
//!   of a chunk), with text forms and strict parsers.
//! - [`descriptor`]: [`Descriptor`] (chunk hash, offset, length), the checks
//!   a descriptor list read from outside must pass, and the list digest.
//! - [`hint`]: [`Hint`] (method URI, SRV-style priority and weight) and the
//!   order in which a receiver tries them.
//! - [`ticket`]: [`Ticket`] (OID + hints + access token in one shell-safe
//!   word of at most 255 bytes) and [`Token`].
//! - [`chunker`]: the [`Chunker`] trait, fixed-size and FastCDC chunkers, and
//!   [`ChunkerSpec`] to configure them.
//! - `ingest` (private): the one-pass put pipeline, hashing chunks and the
//!   whole object on separate threads.
//! - `db` (private) and `schema.sql`: the SQLite index and the thread that
//!   owns its connection.
//! - [`store`]: the [`Store`]: puts (copied or by reference), the OID cache
//!   of unchanged files, chunk-by-chunk filling for receivers, the chunk
//!   location index, pins and LRU eviction, crash recovery and `verify`.
//! - [`error`]: the crate's error types.

#![warn(missing_docs)]

mod bytes;
pub mod chunker;
mod db;
pub mod descriptor;
pub mod error;
pub mod hint;
mod ingest;
pub mod oid;
pub mod store;
pub mod ticket;

pub use bytes::Bytes;
pub use chunker::{Chunker, ChunkerSpec};
pub use descriptor::{Descriptor, MAX_CHUNK_LEN};
pub use error::{Error, ParseError, Result};
pub use hint::Hint;
pub use oid::{ChunkHash, Oid};
pub use store::{ObjectInfo, PutOutcome, PutWriter, Store, StoreOptions, VerifyReport};
pub use ticket::{Ticket, Token};
