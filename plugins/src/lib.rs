//! Transfer plugins for DOT.
//!
//! - [`transfer`]: the [`Transfer`] trait (the paper's transfer plugin):
//!   describe an object, deliver its checked chunks into the caller's
//!   [`ChunkSink`], cancel requests.
//! - [`gtc`]: the agent-to-agent peer protocol over TCP: the sans-IO codec
//!   and session rules, the one frame reader and writer, the serving driver,
//!   the fetching source, and a misbehaving peer for tests.
//! - [`multipath`]: one object's requests spread over several paths, with
//!   windows sized per path and request borrowing (plugin, path measures,
//!   scheduler).
//! - [`portable`]: a DOT store on a removable device (its layout, export)
//!   and the source that reads objects from it.
//! - [`mirror`]: a mirror, any store of files in that layout, described
//!   by its descriptor file, its chunks the chunk files.
//! - [`http`]: a mirror's files over HTTP(S) (a web server, CDN or cache);
//!   [`http::source`] picks it or [`http_range`].
//! - [`http_range`]: a plain URL of an object's bytes, read by `Range`
//!   requests beside a source that gave the list.
//! - [`requests`]: one file server's requests in flight and withdrawn,
//!   shared by the mirror sources.
//! - [`error`]: the errors of a transfer, [`TransferError`].

#![warn(missing_docs)]

pub mod error;
pub mod gtc;
pub mod http;
pub mod http_range;
pub mod mirror;
pub mod multipath;
pub mod portable;
pub mod requests;
pub mod transfer;

pub use error::TransferError;
pub use transfer::{ChunkEvent, ChunkSink, Described, Transfer};
