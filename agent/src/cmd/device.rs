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
    export_with_bar(socket.as_deref(), target, &path)?;
    eprintln!("exported to {}", path.display());
    Ok(())
}

/// Has the agent at `socket` export `target` to the `.dot/` store at
/// `path`, with a progress bar on a terminal (also `gtc publish`'s copy).
///
/// # Errors
/// The agent's (fetching the object, writing the files).
pub fn export_with_bar(
    socket: Option<&std::path::Path>,
    target: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut bar = None;
    Client::connect(socket)?.export(target, path, |done, total| {
        bar.get_or_insert_with(|| progress::bar(total))
            .as_ref()
            .inspect(|b| b.set_position(done));
    })?;
    if let Some(Some(b)) = bar {
        b.finish_and_clear();
    }
    Ok(())
}
