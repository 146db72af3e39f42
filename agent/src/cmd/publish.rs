//! `gtc publish`: copy an object, as immutable verifiable files, to a
//! folder a web server serves (the `.dot/` layout of a portable key), and
//! print its ticket with that mirror added as a hint (docs/mirrors.md).

use std::path::PathBuf;

use anyhow::{Context, bail};
use dot_agent::client::Client;
use dot_store::{Hint, Ticket};

use super::progress;

/// The flags of `gtc publish`.
#[derive(clap::Args)]
pub struct Args {
    /// The object's ticket (its OID alone publishes it, but no ticket
    /// can be printed).
    target: String,
    /// The folder to publish into (its `.dot/` is made if missing); only
    /// what it lacks is copied.
    dir: PathBuf,
    /// The URL at which a web server serves DIR (`https://host/path/`):
    /// the hint added to the ticket.
    #[arg(long)]
    url: String,
    /// The hint's priority (lower is tried first; the agent's own hints
    /// have 10).
    #[arg(long, default_value_t = dot_store::hint::DEFAULT_PRIORITY)]
    priority: u16,
    /// The hint's weight among hints of its priority.
    #[arg(long, default_value_t = dot_store::hint::DEFAULT_WEIGHT)]
    weight: u16,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Runs `gtc publish`: prints the ticket with the mirror's hint.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        bail!(
            "--url: give the http:// or https:// URL at which {} is served",
            args.dir.display()
        );
    }
    let mut url = args.url.clone();
    if !url.ends_with('/') {
        url.push('/');
    }
    let hint = Hint::new(&url)
        .with_context(|| format!("--url {url}"))?
        .with(args.priority, args.weight);
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let mut bar = None;
    Client::connect(args.socket.as_deref())?.export(&args.target, &dir, |done, total| {
        bar.get_or_insert_with(|| progress::bar(total))
            .as_ref()
            .inspect(|b| b.set_position(done));
    })?;
    if let Some(Some(b)) = bar {
        b.finish_and_clear();
    }
    let Ok(ticket) = args.target.trim().parse::<Ticket>() else {
        eprintln!(
            "published to {}; give its ticket to get one naming the mirror",
            dir.display()
        );
        println!("{hint}");
        return Ok(());
    };
    let ticket = ticket
        .with_hint(hint)
        .context("the ticket has no room for another hint")?;
    println!("{ticket}");
    Ok(())
}
