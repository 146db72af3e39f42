//! `gtc smtp`: mail through DOT without patching the mail server. A
//! gateway sits beside an unmodified MTA on each side (`docs/mail.md`):
//! the sender's MTA relays to an *outbound* gateway, which puts each
//! message's body into the local agent and sends the next hop a ticket
//! (`X-DOT-DATA`) where it offers that, plain `DATA` otherwise; an
//! *inbound* gateway listens in front of the receiver's MTA, fetches each
//! ticket's message through its local agent and hands the MTA plain
//! `DATA`, answering 250 only once the MTA took it and 4xx when the fetch
//! fails. The gateway uses the agent only through the client library, as
//! any application would.
//!
//! - [`wire`]: lines, replies and message data on the wire, bounded.
//! - [`command`]: the commands taken from a client, parsed.
//! - [`next_hop`]: the gateway's own SMTP client to the next hop.
//! - [`dot`]: the DOT side: put, fetch, header/body split, attempts.
//! - `session`: one client served.

pub mod command;
pub mod dot;
pub mod next_hop;
mod session;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use next_hop::Deadlines;

/// Which side of the DOT link a gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In front of the receiver's MTA: offers `X-DOT-DATA`, fetches.
    Inbound,
    /// Behind the sender's MTA: sends tickets where the next hop takes
    /// them.
    Outbound,
}

/// A gateway's settings (`gtc smtp --help`, `docs/mail.md`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Its side.
    pub role: Role,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where it relays to: the MTA (inbound) or the next hop (outbound).
    pub next_hop: SocketAddr,
    /// The name it greets and says EHLO with.
    pub name: String,
    /// Largest message taken, in bytes.
    pub max_size: u64,
    /// Outbound: objects (bodies) smaller than this go by `DATA`.
    pub dot_above: usize,
    /// Outbound: failed ticket sends of one message before it goes by
    /// `DATA`.
    pub dot_attempts: u32,
    /// Outbound: the whole message is the object (else headers inline,
    /// the body the object).
    pub whole: bool,
    /// Inbound: fetch from every hint a ticket names, not only from the
    /// client's own address.
    pub any_hints: bool,
    /// The chunker mail objects are put with.
    pub chunker: String,
    /// The local agent's socket (else the default).
    pub socket: Option<PathBuf>,
    /// Clients served at once, at most.
    pub max_connections: usize,
    /// How long a client may be silent between commands.
    pub idle: Duration,
    /// How long fetching one message may take.
    pub fetch_deadline: Duration,
}

/// The chunker mail is put with: small chunks, so that what recurs across
/// messages (an attachment, a quoted thread, a campaign's body) is found.
pub const MAIL_CHUNKER: &str = "cdc:1024:4096:32768";

/// A running gateway's shared state.
pub struct Gateway {
    settings: Settings,
    agent: dot::LocalAgent,
    attempts: dot::Attempts,
}

impl Gateway {
    fn deadlines(&self) -> Deadlines {
        Deadlines {
            data: self.settings.fetch_deadline.max(Deadlines::default().data),
            ..Deadlines::default()
        }
    }
}

/// Runs a gateway until SIGINT or SIGTERM.
///
/// # Errors
/// When it cannot listen.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
    tracing::info!(
        role = ?settings.role,
        listen = %listener.local_addr()?,
        next_hop = %settings.next_hop,
        "smtp gateway ready"
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections.max(1)));
    let gw = Arc::new(Gateway {
        agent: dot::LocalAgent::new(settings.socket.clone(), settings.chunker.clone()),
        attempts: dot::Attempts::default(),
        settings,
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                    .await;
            });
            continue;
        };
        let gw = gw.clone();
        tokio::spawn(async move {
            session::serve(&gw, stream, peer).await;
            drop(slot);
        });
    }
    tracing::info!("smtp gateway stopped");
    Ok(())
}
