//! Transfer plugins for DOT.
//!
//! - [`transfer`]: the [`Transfer`] trait (the paper's transfer plugin):
//!   describe an object, stream its chunks, cancel requests.
//! - [`gtc`]: the agent-to-agent peer protocol over TCP: the sans-IO codec
//!   and session rules, the serving driver and the fetching source.
//! - [`multipath`]: one object's requests spread over several paths, with
//!   windows sized per path and request borrowing.
//! - [`portable`]: a DOT store on a removable device (its layout, export)
//!   and the source that reads objects from it.
//! - [`error`]: the errors of a transfer, [`TransferError`].

#![warn(missing_docs)]

pub mod error;
pub mod gtc;
pub mod multipath;
pub mod portable;
pub mod transfer;

pub use error::TransferError;
pub use transfer::{ChunkEvent, Described, Transfer};
