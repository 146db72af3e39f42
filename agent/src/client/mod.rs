//! The client library (the paper's stub library): talk to the local agent
//! over its Unix socket.
//!
//! Blocking: [`Client`] puts through [`Put`] (`std::io::Write`) or by file
//! descriptor, and gets through [`Get`] (`std::io::Read`, in order),
//! [`Pieces`] (an iterator of `(offset, bytes)` in arrival order) or
//! [`RandomGet`] (reads at an offset). Async: [`AsyncClient`], on tokio.
//!
//! A put, then a get of the ticket (here from the same agent):
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use dot_agent::client::Client;
//!
//! # fn main() -> Result<(), dot_agent::client::ClientError> {
//! let mut client = Client::connect(None)?; // $GTC_SOCKET or the default
//! let mut put = client.put()?;
//! put.write_all(b"hello, world")?;
//! let ticket = put.commit()?.ticket;
//!
//! let mut bytes = Vec::new();
//! client.get(&ticket, &[])?.read_to_end(&mut bytes)?;
//! assert_eq!(bytes, b"hello, world");
//! # Ok(()) }
//! ```
//!
//! The same with the async client:
//!
//! ```no_run
//! use dot_agent::client::AsyncClient;
//!
//! # async fn demo() -> Result<(), dot_agent::client::ClientError> {
//! let mut client = AsyncClient::connect(None).await?;
//! let mut put = client.put().await?;
//! put.write(b"hello, world").await?;
//! let ticket = put.commit().await?.ticket;
//!
//! let mut get = client.get(&ticket, &[], Default::default()).await?;
//! while let Some((offset, bytes)) = get.next_piece().await? {
//!     println!("{} bytes at {offset}", bytes.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Inside, one job per file: `blocking` holds [`Client`] and its put and
//! get types, `async_client` holds [`AsyncClient`] and its; both drive the
//! same I/O-free rules, `answers` (which answer each request expects) and
//! `get_state` (a get's announced ranges, its next event, its next piece,
//! a read at an offset), with a thin blocking or async loop that only
//! moves messages.

use std::io;

use crate::api::ApiError;

mod answers;
mod async_client;
mod blocking;
mod get_state;

pub use async_client::{AsyncClient, AsyncGet, AsyncPut};
pub use blocking::{Client, Get, Pieces, Put, RandomGet};

/// Largest piece [`Pieces`] and [`AsyncGet::next_piece`] hand out.
pub const PIECE: u64 = 4 << 20;
/// Data message size for stream puts.
const PUT_MESSAGE: usize = 1 << 20;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answers on the socket.
    #[error("no agent at {path} (start one with `gtc agent`): {source}")]
    NoAgent {
        /// The socket tried.
        path: String,
        /// Why the connection failed.
        source: io::Error,
    },
    /// What answers on the socket runs as another user than this one or
    /// root: not an agent to hand files or data to.
    #[error("{path} is served by user {uid}, neither this user nor root: not trusted")]
    UntrustedAgent {
        /// The socket.
        path: String,
        /// Who serves it.
        uid: u32,
    },
    /// The agent refused or failed the request.
    #[error("{message}")]
    Agent {
        /// Why, as the agent says it.
        message: String,
        /// The kind of failure, where the agent could tell.
        kind: Option<crate::api::ErrorKind>,
    },
    /// The agent answered something this client does not expect.
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
    /// Socket or file I/O.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Framing or JSON.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<ClientError> for io::Error {
    fn from(e: ClientError) -> io::Error {
        match e {
            ClientError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// What a finished get reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetStats {
    /// Chunk bytes fetched from peers.
    pub from_peers: u64,
    /// Bytes the agent already held.
    pub local: u64,
    /// Chunk bytes taken from portable devices.
    pub from_devices: u64,
}
