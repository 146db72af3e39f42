//! The DOT agent (the paper's GTC) and its client side.
//!
//! - [`config`]: the TOML file and flags, validated into `Config`, with
//!   defaults for root and for normal users.
//! - [`api`]: the local API's messages and framing over the Unix socket
//!   (`docs/local-api.md`).
//! - [`client`]: the client library (blocking and async) applications and
//!   the `gtc` commands use.
//! - [`daemon`]: `gtc agent`: the store, the peer server, the local API,
//!   retention, clean shutdown on SIGINT/SIGTERM (one file per job under
//!   `daemon/`).
//! - `fetch` (internal): one shared fetch per object in flight, from the
//!   ticket's sources in hint order, every chunk verified once (one file
//!   per job under `fetch/`).
//! - `fuse` (internal): the agent behind the FUSE namespace.
//! - `fdpass` (internal): sending and receiving an open file descriptor
//!   (SCM_RIGHTS): puts by descriptor, gets read from the agent's file.
//! - `exposition` (internal): the Prometheus text format the metrics
//!   endpoint speaks.
//! - `tickets` (internal): the tickets the agent hands out for its objects.
//! - [`trees`]: folders as objects, the client side: a folder put as a
//!   tree, a tree written beneath a destination folder.
//! - [`s3`]: `s3://` hints, mirrors in buckets that want the agent's
//!   credentials, and the `s3://BUCKET/PREFIX` form `gtc publish` takes.
//! - [`smtp`]: `gtc smtp`, the mail gateway, an application of the client
//!   library (it uses nothing else of the agent).
//!
//! The `gtc` command's own code (argument parsing, one file per command)
//! is the binary's, under `cmd/`.

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
mod exposition;
pub(crate) mod fdpass;
pub(crate) mod fetch;
pub(crate) mod fuse;
pub mod s3;
pub mod smtp;
mod tickets;
pub mod trees;
