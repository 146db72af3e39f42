//! `gtc cp`: copy a file (or with `-r` a folder, as a tree) between
//! machines, the bytes going agent to agent: `gtc put --json` where SRC
//! is and `gtc get` where DST is, each run here or over `--rsh` on the
//! remote side, keeping modes and mtimes.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, bail};
use dot_agent::api::PutResult;

use super::get::{get, set_attrs};
use super::put::put;

/// The flags of `gtc cp`.
#[derive(clap::Args)]
pub struct Args {
    /// `[[user@]host:]path` of the file (or with -r, folder) to copy.
    src: String,
    /// `[[user@]host:]path` to write (a folder, or ending in `/`: keep
    /// the name).
    dst: String,
    /// Copy a folder and all it holds (as one tree: files already at the
    /// destination's agent are not sent again).
    #[arg(short, long)]
    recursive: bool,
    /// How to run commands on a remote side.
    #[arg(long, default_value = "ssh")]
    rsh: String,
    /// The `gtc` to run on a remote side.
    #[arg(long, default_value = "gtc")]
    remote_gtc: String,
    /// Local API socket for a local side.
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// One side of `gtc cp`: `Some(host)` for `[user@]host:path`.
fn split_remote(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once(':') {
        Some((host, path)) if !host.is_empty() && !host.contains('/') => (Some(host), path),
        _ => (None, spec),
    }
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `gtc ARGS` on `host` through `rsh`; returns its stdout.
fn remote(rsh: &str, host: &str, remote_gtc: &str, args: &[String]) -> anyhow::Result<String> {
    let mut words = rsh.split_whitespace();
    let program = words.next().context("--rsh is empty")?;
    let command = std::iter::once(remote_gtc.to_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Process::new(program)
        .args(words)
        .arg(host)
        .arg(&command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{rsh} {host} {command}: {}", out.status);
    }
    String::from_utf8(out.stdout).context("remote output is not UTF-8")
}

/// Runs `gtc cp`: put where SRC is, get where DST is.
pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        src,
        dst,
        recursive,
        rsh,
        remote_gtc,
        socket,
    } = args;
    let socket = socket.as_deref();
    let (src_host, src_path) = split_remote(&src);
    let (dst_host, dst_path) = split_remote(&dst);
    let name = Path::new(src_path)
        .file_name()
        .context("the source names no file")?
        .to_string_lossy()
        .into_owned();
    let put: PutResult = match src_host {
        None if Path::new(src_path).is_dir() => {
            if !recursive {
                bail!("{src_path} is a folder: give -r to copy it and all it holds");
            }
            dot_agent::trees::put_tree(socket, Path::new(src_path), |_, _| {})?.result
        }
        None => put(socket, Path::new(src_path))?,
        Some(host) => {
            let args = vec!["put".into(), "--json".into(), src_path.to_owned()];
            let out = remote(&rsh, host, &remote_gtc, &args)?;
            let line = out
                .lines()
                .last()
                .context("the remote put printed nothing")?;
            serde_json::from_str(line).context("reading the remote put's answer")?
        }
    };
    let tree = put
        .ticket
        .parse::<dot_store::Ticket>()
        .is_ok_and(|t| t.is_tree());
    if tree && !recursive {
        bail!("{src} is a folder: give -r to copy it and all it holds");
    }
    let mut args = vec![put.ticket.clone(), "-o".to_owned()];
    match dst_host {
        None => {
            let mut path = PathBuf::from(dst_path);
            if path.is_dir() || dst_path.ends_with('/') {
                path.push(&name);
            }
            if tree {
                let ticket: dot_store::Ticket = put.ticket.parse()?;
                let done = dot_agent::trees::Progress::default();
                dot_agent::trees::get_tree(socket, &ticket, &[], &path, &done, |_| {})?;
            } else {
                get(socket, &put.ticket, &[], Some(&path))?;
                set_attrs(&path, put.mode, put.mtime_ns)?;
            }
        }
        Some(host) => {
            let mut path = dst_path.to_owned();
            if path.is_empty() || path.ends_with('/') {
                path.push_str(&name);
            }
            args.push(path);
            if let Some(m) = put.mode {
                args.push(format!("--mode={m:o}"));
            }
            if let Some(t) = put.mtime_ns {
                args.push(format!("--mtime-ns={t}"));
            }
            let mut full = vec!["get".to_owned()];
            full.extend(args);
            remote(&rsh, host, &remote_gtc, &full)?;
        }
    }
    Ok(())
}
