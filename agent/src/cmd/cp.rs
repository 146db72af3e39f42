//! `gtc cp`: copy a file (or with `-r` a folder) between machines, the
//! bytes going agent to agent: `gtc put --json` where SRC is and `gtc
//! get` where DST is, each run here or over `--rsh` on the remote side,
//! keeping modes and mtimes. A folder goes in segments (`segments.rs`):
//! each is fetched as soon as the sender has put it, the put's lines
//! piped to the get as they come.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

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

/// The command that runs `gtc ARGS` on `host` through `rsh`, and how it
/// reads.
fn remote_command(
    rsh: &str,
    host: &str,
    remote_gtc: &str,
    args: &[String],
) -> anyhow::Result<(Process, String)> {
    let mut words = rsh.split_whitespace();
    let program = words.next().context("--rsh is empty")?;
    let command = std::iter::once(remote_gtc.to_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut p = Process::new(program);
    p.args(words)
        .arg(host)
        .arg(&command)
        .stderr(Stdio::inherit());
    Ok((p, format!("{rsh} {host} {command}")))
}

/// Runs `gtc ARGS` on `host` through `rsh`; returns its stdout.
fn remote(rsh: &str, host: &str, remote_gtc: &str, args: &[String]) -> anyhow::Result<String> {
    let (mut p, shown) = remote_command(rsh, host, remote_gtc, args)?;
    let out = p.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!("{shown}: {}", out.status);
    }
    String::from_utf8(out.stdout).context("remote output is not UTF-8")
}

/// What makes a folder's segment lines.
enum Maker {
    /// A remote `gtc put --segments --json`, as shown.
    Remote(std::process::Child, String),
    /// A put run here.
    Local(std::thread::JoinHandle<anyhow::Result<()>>),
}

impl Maker {
    /// Waits for it; its failure.
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Maker::Remote(mut child, shown) => {
                let status = child
                    .wait()
                    .with_context(|| format!("waiting for {shown}"))?;
                if !status.success() {
                    bail!("{shown}: {status}");
                }
                Ok(())
            }
            Maker::Local(put) => put
                .join()
                .map_err(|_| anyhow::anyhow!("the folder's put panicked"))?,
        }
    }
}

/// What the source of a recursive copy turned out to be.
enum Source {
    /// A folder: its segment lines as they come, and what makes them.
    Tree(Box<dyn BufRead + Send>, Maker),
    /// A file, put.
    File(PutResult),
}

/// Starts the put of SRC for `gtc cp -r`: a folder's in segments.
fn open_source(
    rsh: &str,
    remote_gtc: &str,
    socket: Option<&Path>,
    host: Option<&str>,
    path: &str,
) -> anyhow::Result<Source> {
    let Some(host) = host else {
        if !Path::new(path).is_dir() {
            return Ok(Source::File(put(socket, Path::new(path))?));
        }
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (reader, mut writer) = (std::fs::File::from(reader), std::fs::File::from(writer));
        let (socket, dir) = (socket.map(Path::to_path_buf), PathBuf::from(path));
        let maker = std::thread::spawn(move || {
            super::segments::put_lines(socket.as_deref(), &dir, None, |line| {
                writeln!(writer, "{line}").context("handing on a segment")
            })
            .map(drop)
        });
        return Ok(Source::Tree(
            Box::new(BufReader::new(reader)),
            Maker::Local(maker),
        ));
    };
    let args = ["put", "--json", "--segments", path].map(str::to_owned);
    let (mut p, shown) = remote_command(rsh, host, remote_gtc, &args)?;
    let mut child = p
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut first = String::new();
    out.read_line(&mut first)
        .with_context(|| format!("reading {shown}"))?;
    let v: serde_json::Value = match serde_json::from_str(&first) {
        Ok(v) => v,
        Err(_) => {
            Maker::Remote(child, shown.clone()).finish()?;
            bail!("{shown} printed no answer");
        }
    };
    if v.get("segment").is_some() || v.get("segments").is_some() {
        let lines = std::io::Read::chain(std::io::Cursor::new(first.into_bytes()), out);
        return Ok(Source::Tree(Box::new(lines), Maker::Remote(child, shown)));
    }
    Maker::Remote(child, shown.clone()).finish()?;
    Ok(Source::File(
        serde_json::from_value(v).context("reading the remote put's answer")?,
    ))
}

/// Copies a folder whose segment lines `lines` reads (made by `maker`)
/// to `dest` here, or on `host` through `rsh`.
fn copy_tree(
    lines: Box<dyn BufRead + Send>,
    maker: Maker,
    socket: Option<&Path>,
    (rsh, remote_gtc): (&str, &str),
    host: Option<&str>,
    dest: &str,
) -> anyhow::Result<()> {
    let copied = (|| -> anyhow::Result<()> {
        let Some(host) = host else {
            let done = dot_agent::trees::Progress::default();
            super::segments::get_lines(socket, lines, Path::new(dest), &done)?;
            return Ok(());
        };
        let args = ["get", "--segments", "-o", dest].map(str::to_owned);
        let (mut p, shown) = remote_command(rsh, host, remote_gtc, &args)?;
        let mut child = p
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {shown}"))?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let mut lines = lines;
        let sent = std::io::copy(&mut lines, &mut stdin);
        drop(stdin);
        let status = child
            .wait()
            .with_context(|| format!("waiting for {shown}"))?;
        if !status.success() {
            bail!("{shown}: {status}");
        }
        sent.with_context(|| format!("handing the segments to {shown}"))?;
        Ok(())
    })();
    // A get that stopped reading stops the put (its next line meets a
    // closed pipe).
    let made = maker.finish();
    match (copied, made) {
        (Ok(()), made) => made,
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(m)) => bail!("{e:#} (the put: {m:#})"),
    }
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
    let dest = |local: bool| {
        let mut path = PathBuf::from(dst_path);
        if dst_path.is_empty() || dst_path.ends_with('/') || (local && path.is_dir()) {
            path.push(&name);
        }
        path.to_string_lossy().into_owned()
    };
    let put: PutResult = match src_host {
        _ if recursive => match open_source(&rsh, &remote_gtc, socket, src_host, src_path)? {
            Source::Tree(lines, maker) => {
                let to = dest(dst_host.is_none());
                let via = (rsh.as_str(), remote_gtc.as_str());
                return copy_tree(lines, maker, socket, via, dst_host, &to);
            }
            Source::File(put) => put,
        },
        None if Path::new(src_path).is_dir() => {
            bail!("{src_path} is a folder: give -r to copy it and all it holds");
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
    if put
        .ticket
        .parse::<dot_store::Ticket>()
        .is_ok_and(|t| t.is_tree())
    {
        bail!("{src} is a folder: give -r to copy it and all it holds");
    }
    match dst_host {
        None => {
            let path = PathBuf::from(dest(true));
            get(socket, &put.ticket, &[], Some(&path))?;
            set_attrs(&path, put.mode, put.mtime_ns)?;
        }
        Some(host) => {
            let mut args = vec!["get".to_owned(), put.ticket.clone(), "-o".to_owned()];
            args.push(dest(false));
            if let Some(m) = put.mode {
                args.push(format!("--mode={m:o}"));
            }
            if let Some(t) = put.mtime_ns {
                args.push(format!("--mtime-ns={t}"));
            }
            remote(&rsh, host, &remote_gtc, &args)?;
        }
    }
    Ok(())
}
