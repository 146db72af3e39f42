//! The gtc peer protocol: one agent fetching descriptors and chunks from
//! another over TCP. See `docs/protocol.md` for goals and byte layouts.

pub mod proto;
pub mod session;
