//! `gtc put`: a file by descriptor (the agent does not copy it), or
//! standard input streamed; prints the ticket, or the whole answer as
//! JSON. [`put`] is also the local side of `gtc cp`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dot_agent::api::PutResult;
use dot_agent::client::Client;

use super::progress;

/// The flags of `gtc put`.
#[derive(clap::Args)]
pub struct Args {
    /// The file, a folder (put as a tree: one ticket for all of it), or
    /// `-` for standard input.
    file: PathBuf,
    /// Print one JSON object (oid, ticket, size, chunks, hints, ...).
    #[arg(long)]
    pub json: bool,
    /// A folder in segments, each a tree printed as a JSON line as soon
    /// as it is put, then an end line (what `gtc cp -r` reads to fetch
    /// while the put goes on). A file is put as without it.
    #[arg(long, requires = "json")]
    segments: bool,
    /// With --segments: most bytes of files in one segment.
    #[arg(long, hide = true, requires = "segments")]
    segment_bytes: Option<u64>,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Runs `gtc put`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.file.as_os_str() != "-" && args.file.is_dir() {
        if args.segments {
            let done = super::segments::put_lines(
                args.socket.as_deref(),
                &args.file,
                args.segment_bytes,
                |line| {
                    println!("{line}");
                    Ok(())
                },
            )?;
            for s in &done.skipped {
                eprintln!("gtc put: left out {s}: not a file, folder or link");
            }
            return Ok(());
        }
        return put_tree(&args);
    }
    let r = put(args.socket.as_deref(), &args.file)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        if !super::quiet() {
            eprintln!(
                "{} ({}, {})",
                r.oid,
                super::count(r.size, "byte"),
                super::count(u64::from(r.chunks), "chunk")
            );
        }
        println!("{}", r.ticket);
    }
    Ok(())
}

/// `gtc put DIR`: the folder as a tree; prints its ticket.
fn put_tree(args: &Args) -> anyhow::Result<()> {
    let bar = progress::files_bar();
    let t = dot_agent::trees::put_tree(args.socket.as_deref(), &args.file, |done, all| {
        if let Some(b) = &bar {
            b.set_length(all as u64);
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for s in &t.skipped {
        eprintln!("gtc put: left out {s}: not a file, folder or link");
    }
    if args.json {
        let mut v = serde_json::to_value(&t.result)?;
        v["tree"] = serde_json::json!({ "entries": t.entries, "files": t.files, "bytes": t.bytes, "skipped": t.skipped });
        println!("{v}");
    } else {
        if !super::quiet() {
            eprintln!(
                "tree {} ({} in all: {}, {})",
                t.result.oid,
                t.entries,
                super::count(t.files as u64, "file"),
                super::count(t.bytes, "byte")
            );
        }
        println!("{}", t.result.ticket);
    }
    Ok(())
}

/// Puts `file`: by descriptor for a file, streamed for `-`. A file's
/// answer carries its mode and mtime.
pub fn put(socket: Option<&Path>, file: &Path) -> anyhow::Result<PutResult> {
    let mut client = Client::connect(socket)?;
    if file.as_os_str() == "-" {
        let mut put = client.put()?;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading standard input"),
            };
            put.write_all(&buf[..n]).context("sending to the agent")?;
        }
        return Ok(put.commit()?);
    }
    let opened =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let meta = opened.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", file.display());
    }
    let mut r = client.put_file(&opened, file)?;
    {
        use std::os::unix::fs::MetadataExt;
        r.mode = Some(meta.mode() & 0o7777);
        r.mtime_ns = Some(
            meta.mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
        );
    }
    Ok(r)
}
