//! The serving half of the gtc plugin: answers peers from a [`Store`],
//! bounded everywhere a stranger could make it grow or wait.
//!
//! - `mod.rs`: the accept loop (backing off when out of descriptors), the
//!   limits ([`ServeOptions`]) and the counters ([`ServerStats`]);
//! - `limits`: the connections in flight, capped in all and per address;
//!   a new connection past a cap sheds the longest-idle one (or is refused
//!   if none is idle), so idle floods cannot lock honest peers out;
//! - `connection`: one connection: a reader task applying the
//!   [`ServerSession`](super::session::ServerSession) rules under the
//!   `Hello` and idle deadlines, and a writer task answering in order from
//!   a bounded queue (a peer that does not read stops being read: its
//!   requests wait in the socket), every write under a deadline, chunk
//!   bytes resolved off the async workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dot_store::Store;
use tokio::net::TcpListener;

use super::access::Policy;

mod connection;
mod limits;

use limits::Limits;

/// Counters of what a server sent, for `gtc status` and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Chunk frames sent.
    pub chunks_served: AtomicU64,
    /// Chunk bytes sent.
    pub bytes_sent: AtomicU64,
    /// Descriptor requests refused (a wrong token, or an object not held:
    /// the peer is told the same either way).
    pub refused: AtomicU64,
    /// Connections closed for a protocol violation or a deadline.
    pub violations: AtomicU64,
    /// Connections shed (idle, to make room) or refused (at a cap).
    pub shed: AtomicU64,
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
}

/// What a server allows its peers. The defaults suit an agent on an open
/// network.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Who may fetch by OID alone.
    pub policy: Policy,
    /// Connections at once, in all. Default 1024.
    pub max_connections: usize,
    /// Connections at once from one address. Default 64.
    pub max_per_address: usize,
    /// How long a new connection may take to send `Hello`. Default 10 s.
    pub hello_timeout: Duration,
    /// How long a connection with nothing asked may stay silent. Default
    /// 300 s.
    pub idle_timeout: Duration,
    /// How long one write to a peer may take (a peer that stops reading
    /// is dropped after it). Default 30 s.
    pub write_timeout: Duration,
    /// The TLS identity peers must speak to (see [`tls`](super::tls));
    /// `None`: no TLS. Default none.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether plain TCP is served too. Default on (an agent turns it off
    /// unless its config asks for it).
    pub plain: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            policy: Policy::default(),
            max_connections: 1024,
            max_per_address: 64,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            tls: None,
            plain: true,
        }
    }
}

/// Requests queued or being answered on one connection, at most; past it
/// the connection is not read until the peer takes its answers.
pub const MAX_QUEUED: usize = 256;
/// Cancelled request ids remembered per connection (forgotten wholesale
/// beyond: a few late answers are sent anyway).
pub const MAX_CANCELLED: usize = 1024;
/// The longest pause of the accept loop when the process is out of
/// descriptors (it starts at 10 ms and doubles).
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Accepts peers on `listener` forever, serving objects of `store`.
pub async fn serve(listener: TcpListener, store: Store, stats: Arc<ServerStats>) {
    serve_with(listener, store, stats, ServeOptions::default()).await;
}

/// [`serve`] within `opts`.
pub async fn serve_with(
    listener: TcpListener,
    store: Store,
    stats: Arc<ServerStats>,
    opts: ServeOptions,
) {
    let opts = Arc::new(opts);
    let limits = Arc::new(Limits::new(opts.max_connections, opts.max_per_address));
    let mut pause = Duration::ZERO;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                pause = Duration::ZERO;
                admit(stream, peer, &store, &stats, &opts, &limits);
            }
            Err(e) => {
                // Out of descriptors (or another passing error): wait
                // instead of spinning on the same error.
                pause = backoff(pause);
                tracing::warn!(error = %e, pause = ?pause, "accepting a peer failed");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The next pause after a failed accept: 10 ms, doubling to
/// [`MAX_ACCEPT_PAUSE`].
pub fn backoff(last: Duration) -> Duration {
    (last * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_PAUSE)
}

fn admit(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    store: &Store,
    stats: &Arc<ServerStats>,
    opts: &Arc<ServeOptions>,
    limits: &Arc<Limits>,
) {
    let Some(slot) = limits.admit(peer.ip(), stats) else {
        tracing::debug!(%peer, "connection refused: at the connection cap, none idle");
        return;
    };
    let open = opts.policy.is_open_to(peer.ip());
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let stats = stats.clone();
    let run = connection::run(
        stream,
        peer,
        store.clone(),
        stats.clone(),
        opts.clone(),
        slot,
        open,
    );
    tokio::spawn(async move {
        run.await;
        stats.open.fetch_sub(1, Ordering::Relaxed);
    });
}
