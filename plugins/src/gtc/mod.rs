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
//! - [`desc_list`]: an object's descriptor list put together from the
//!   pages a peer sends (sans-IO).
//! - [`double`]: a peer that misbehaves on purpose, for tests.
//! - [`tls`]: the encrypted peer link's keys and TLS settings (TLS 1.3,
//!   raw public keys pinned by the ticket).
//! - [`link`]: opening a link over TCP, TLS or plain, at either end.

pub mod access;
pub mod client;
pub mod desc_list;
pub mod double;
pub mod framed;
pub mod link;
pub mod proto;
pub mod server;
pub mod session;
pub mod tls;
