//! The DOT agent (the paper's GTC) and its client side.
//!
//! - [`config`]: the TOML file and flags, validated into `Config`, with
//!   defaults for root and for normal users.
//! - [`api`]: the local API's messages and framing over the Unix socket
//!   (`docs/local-api.md`).
//! - [`client`]: the client library (blocking and async) applications and
//!   the `gtc` commands use.
//! - [`fdpass`]: sending and receiving an open file descriptor
//!   (SCM_RIGHTS): puts by descriptor, gets read from the agent's file.
//! - [`fetch`]: one shared fetch per object in flight, from the ticket's
//!   sources in hint order, every chunk verified.
//! - [`daemon`]: `gtc agent`: the store, the peer server, the local API,
//!   retention, clean shutdown on SIGINT/SIGTERM.
//! - [`fuse`]: the agent behind the FUSE namespace.
//! - `tickets`: the tickets the agent hands out for its objects.

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod fdpass;
pub mod fetch;
pub mod fuse;
mod tickets;
