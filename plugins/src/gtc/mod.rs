//! The gtc peer protocol: one agent fetching descriptors and chunks from
//! another over TCP. See `docs/protocol.md` for goals and byte layouts.
//!
//! - [`access`]: who may fetch by OID alone (no token).
//! - [`proto`]: frames, limits, encoding and decoding (sans-IO).
//! - [`framed`]: frames over a byte stream, the one read loop and the one
//!   vectored write path every driver and test double shares.
//! - [`session`]: the serving side's rules per connection (sans-IO).
//! - [`server`]: the tokio driver that serves peers from a store.
//! - [`client`]: [`client::GtcSource`], the tokio driver that fetches.
//! - [`double`]: a peer that misbehaves on purpose, for tests.

pub mod access;
pub mod client;
pub mod double;
pub mod framed;
pub mod proto;
pub mod server;
pub mod session;
