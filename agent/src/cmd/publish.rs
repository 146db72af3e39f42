//! `gtc publish`: copy an object, as immutable verifiable files, to a
//! folder a web server serves (the `.dot/` layout of a portable key) or an
//! S3-compatible bucket, and print its ticket with that mirror added as a
//! hint (docs/mirrors.md).

use std::path::PathBuf;

use anyhow::{Context, bail};
use dot_store::{Hint, Ticket};

/// The flags of `gtc publish`.
#[derive(clap::Args)]
pub struct Args {
    /// The object's ticket (its OID alone publishes it, but no ticket
    /// can be printed).
    target: String,
    /// The folder to publish into (its `.dot/` is made if missing), or
    /// `s3://BUCKET/PREFIX` (credentials and endpoint from the AWS_*
    /// variables); only what it lacks is copied.
    dest: String,
    /// The URL at which DEST is served (`https://host/path/`; for a
    /// bucket, its HTTP(S) address with the prefix): the hint added to the
    /// ticket. Without it, a bucket's hint is `s3://BUCKET/PREFIX/`, read
    /// by receiving agents with their own credentials (a private bucket).
    #[arg(long)]
    url: Option<String>,
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
    let s3 = super::s3::parse(&args.dest);
    let mut url = match (&args.url, &s3) {
        (Some(url), _) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!(
                    "--url: give the http:// or https:// URL at which {} is served",
                    args.dest
                );
            }
            url.clone()
        }
        (None, Some(_)) => args.dest.clone(),
        (None, None) => bail!(
            "--url: give the http:// or https:// URL at which {} is served",
            args.dest
        ),
    };
    if !url.ends_with('/') {
        url.push('/');
    }
    let hint = Hint::new(&url)
        .with_context(|| format!("--url {url}"))?
        .with(args.priority, args.weight);
    // A bucket gets the files of a folder the agent exports to first.
    let staging = match s3 {
        Some(_) => Some(tempfile::tempdir().context("a staging folder")?),
        None => None,
    };
    let dir = match &staging {
        Some(t) => t.path().to_owned(),
        None => {
            std::path::absolute(&args.dest).with_context(|| format!("resolving {}", args.dest))?
        }
    };
    super::device::export_with_bar(args.socket.as_deref(), &args.target, &dir)?;
    if let Some((bucket, prefix)) = &s3 {
        let (files, bytes) = super::s3::upload(&dir, bucket, prefix)?;
        if !super::quiet() {
            eprintln!("uploaded {files} files, {bytes} bytes to {}", args.dest);
        }
    }
    let Ok(ticket) = args.target.trim().parse::<Ticket>() else {
        eprintln!(
            "published to {}; give its ticket to get one naming the mirror",
            args.dest
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
