//! Transfer plugins for DOT.
//!
//! - [`gtc`]: the agent-to-agent peer protocol over TCP. Today its sans-IO
//!   core: [`gtc::proto`] (frames, limits, encoding and decoding, no I/O)
//!   and [`gtc::session`] (the server's per-connection rules: handshake,
//!   tokens, which chunks may be served). The tokio drivers, the `Transfer`
//!   trait, multipath and portable storage arrive with their issues.

#![warn(missing_docs)]

pub mod gtc;
