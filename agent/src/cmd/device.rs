//! `gtc device`: portable storage. `export` has the agent copy an object
//! to the DOT store of a mounted key, with a progress bar.

use std::path::PathBuf;

use anyhow::Context;
use dot_agent::client::Client;

use super::progress;

/// The subcommands of `gtc device`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy an object's chunks and descriptors to the DOT store of the
    /// device mounted at PATH (made if missing), fetching it first if it
    /// is not here. Another agent can then read it from the key alone.
    Export {
        /// A ticket or an OID.
        target: String,
        /// Where the device is mounted.
        path: PathBuf,
        /// Local API socket (default: $GTC_SOCKET, else the agent's default).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

/// Runs a `gtc device` subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Export {
            target,
            path,
            socket,
        } => export(&target, path, socket),
    }
}

/// `gtc device export`.
fn export(target: &str, path: PathBuf, socket: Option<PathBuf>) -> anyhow::Result<()> {
    let path =
        std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))?;
    let mut bar = None;
    Client::connect(socket.as_deref())?.export(target, &path, |done, total| {
        bar.get_or_insert_with(|| progress::bar(total))
            .as_ref()
            .inspect(|b| b.set_position(done));
    })?;
    if let Some(Some(b)) = bar {
        b.finish_and_clear();
    }
    eprintln!("exported to {}", path.display());
    Ok(())
}
