//! The DOT agent (the paper's GTC) and its client side.
//!
//! - [`config`]: the TOML file and flags, validated into `Config`, with
//!   defaults for root and for normal users.
//! - [`api`]: the local API's messages and framing over the Unix socket.
//! - [`fdpass`]: sending and receiving an open file descriptor
//!   (SCM_RIGHTS) for puts by descriptor.
//! - [`fetch`]: getting an object from the store or the ticket's sources.
//! - [`daemon`]: `gtc agent`: the store, the peer server, the local API,
//!   clean shutdown on SIGINT/SIGTERM.
//!
//! `gtc put FILE` (by descriptor) works; stream puts, get, the client library and `gtc cp` are the next steps of the
//! agent issue.

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod fdpass;
pub mod fetch;
