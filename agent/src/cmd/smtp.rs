//! `gtc smtp`: an SMTP gateway beside a mail server, inbound (in front of
//! the MTA, taking tickets) or outbound (the MTA's relay, sending tickets).
//! The flags become [`Settings`]; the gateway itself is
//! `dot_agent::smtp`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use dot_agent::smtp::{self, Role, Settings};

/// Which side the gateway serves.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Side {
    /// In front of the receiving MTA: offers X-DOT-DATA, fetches tickets,
    /// relays plain DATA to the MTA.
    Inbound,
    /// The sending MTA's relay: sends a ticket where the next hop offers
    /// X-DOT-DATA, DATA otherwise.
    Outbound,
}

/// `gtc smtp` flags.
#[derive(clap::Args)]
pub struct Args {
    /// inbound or outbound.
    #[arg(value_enum)]
    side: Side,
    /// Where to listen for SMTP (host:port).
    #[arg(long)]
    listen: String,
    /// Where to relay: the local MTA (inbound) or the next hop (outbound),
    /// host:port.
    #[arg(long)]
    to: String,
    /// The name to greet and say EHLO with.
    #[arg(long, default_value = "gtc-smtp.localdomain")]
    name: String,
    /// Largest message taken, in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    max_size: u64,
    /// Outbound: bodies smaller than this many bytes go by DATA.
    #[arg(long, default_value_t = 8192)]
    dot_above: usize,
    /// Outbound: failed ticket sends of one message before it goes by DATA.
    #[arg(long, default_value_t = 3)]
    dot_attempts: u32,
    /// Outbound: send the whole message as the object (default: headers
    /// inline, the body as the object).
    #[arg(long)]
    whole: bool,
    /// Inbound: fetch from every source a ticket names (default: only from
    /// the sending client's own address).
    #[arg(long)]
    any_hints: bool,
    /// The chunker mail objects are put with (as the `chunker` config key).
    #[arg(long, default_value = smtp::MAIL_CHUNKER)]
    chunker: String,
    /// The local agent's socket (default: $GTC_SOCKET, then the agent's
    /// default path).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Clients served at once, at most.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Seconds a client may be silent between commands.
    #[arg(long, default_value_t = 300)]
    idle_secs: u64,
    /// Seconds fetching one message may take.
    #[arg(long, default_value_t = 120)]
    fetch_secs: u64,
}

fn address(s: &str, what: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("{what} {s:?}: not host:port"))?
        .next()
        .with_context(|| format!("{what} {s:?}: no address"))
}

/// Runs the gateway in the foreground.
pub fn run(args: Args) -> anyhow::Result<()> {
    super::init_logging();
    args.chunker
        .parse::<dot_store::ChunkerSpec>()
        .context("--chunker")?;
    let settings = Settings {
        role: match args.side {
            Side::Inbound => Role::Inbound,
            Side::Outbound => Role::Outbound,
        },
        listen: address(&args.listen, "--listen")?,
        next_hop: address(&args.to, "--to")?,
        name: args.name,
        max_size: args.max_size,
        dot_above: args.dot_above,
        dot_attempts: args.dot_attempts,
        whole: args.whole,
        any_hints: args.any_hints,
        chunker: args.chunker,
        socket: args.socket,
        max_connections: args.max_connections,
        idle: Duration::from_secs(args.idle_secs),
        fetch_deadline: Duration::from_secs(args.fetch_secs),
    };
    // One thread: a gateway relays lines and waits on sockets; a second
    // worker cost it a third more CPU in cross-thread wake-ups
    // (bench/mail.sh: 1.71 against 1.23 CPU-s per gateway for the corpus).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(smtp::run(settings))
}
