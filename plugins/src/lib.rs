//! Transfer plugins for DOT.
//!
//! - [`transfer`]: the [`Transfer`] trait (the paper's transfer plugin):
//!   describe an object, stream its chunks, cancel requests.
//! - [`gtc`]: the agent-to-agent peer protocol over TCP: the sans-IO codec
//!   and session rules, the serving driver and the fetching source.
//! - [`error`]: the errors of a transfer, [`TransferError`].
//!
//! Multipath and portable storage arrive with their issues.

#![warn(missing_docs)]

pub mod error;
pub mod gtc;
pub mod transfer;

pub use error::TransferError;
pub use transfer::{ChunkEvent, Described, Transfer};
