//! `gtc get`: an object into a file (each range written at its offset as
//! it is verified) or to stdout (in order), then the file's mode and
//! mtime if asked and where the bytes came from. [`get`] and
//! [`set_attrs`] are also the local side of `gtc cp`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dot_agent::client::{Client, GetStats};

use super::progress;

/// The flags of `gtc get`.
#[derive(clap::Args)]
pub struct Args {
    /// The ticket `gtc put` printed, or an OID the agent can find.
    #[arg(required_unless_present = "segments", conflicts_with = "segments")]
    target: Option<String>,
    /// Read a folder's segments from standard input (the lines of `gtc
    /// put --segments --json`) and write them, as they come, into the
    /// folder -o names (what `gtc cp -r` runs on the receiving side).
    #[arg(long, requires = "output")]
    segments: bool,
    /// Write here (`-` for stdout; without `-o` the object goes to stdout
    /// unless that is a terminal). For a tree's ticket: the folder to make
    /// (or an empty one) to write the tree into.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Source to use instead of the ticket's hints; repeat for several.
    #[arg(long = "hint")]
    hints: Vec<String>,
    /// Report on stderr the bytes taken from peers and already held.
    #[arg(long)]
    stats: bool,
    /// Like --stats, as one JSON object (on stdout with -o FILE, else on
    /// stderr).
    #[arg(long)]
    pub json: bool,
    /// Set the output file's permission bits (octal), as `gtc cp` does.
    #[arg(long, value_parser = parse_octal, requires = "output")]
    mode: Option<u32>,
    /// Set the output file's modification time (nanoseconds since the
    /// epoch), as `gtc cp` does.
    #[arg(long, requires = "output", allow_negative_numbers = true)]
    mtime_ns: Option<i64>,
    /// Local API socket (default: $GTC_SOCKET, else the agent's default).
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode"))
}

/// Runs `gtc get`.
pub fn run(args: Args) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if args.segments {
        return get_segments(&args);
    }
    let Some(target) = args.target.as_deref() else {
        bail!("give a ticket, or --segments");
    };
    if let Ok(ticket) = target.trim().parse::<dot_store::Ticket>()
        && ticket.is_tree()
    {
        return get_tree(&args, &ticket);
    }
    // `-o -` is stdout, asked for in so many words.
    let output = args.output.as_deref().filter(|p| p.as_os_str() != "-");
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "not writing an object to a terminal: give -o FILE, or -o - to write it to stdout anyway"
        );
    }
    if output.is_none() && (args.mode.is_some() || args.mtime_ns.is_some()) {
        bail!("--mode and --mtime-ns set a file's attributes: give -o FILE");
    }
    let (size, got) = get(args.socket.as_deref(), target, &args.hints, output)?;
    if let Some(path) = output {
        set_attrs(path, args.mode, args.mtime_ns)?;
    }
    if args.json {
        let report = serde_json::json!({ "size": size, "from_peers": got.from_peers, "from_devices": got.from_devices, "local": got.local });
        // Machine output on stdout, unless the object went there.
        if output.is_some() {
            println!("{report}");
        } else {
            eprintln!("{report}");
        }
    } else if args.stats {
        eprintln!(
            "{}: {} from peers, {} from devices, {} already held",
            super::count(size, "byte"),
            got.from_peers,
            got.from_devices,
            got.local
        );
    }
    Ok(())
}

/// `gtc get --segments -o DIR`: a folder's segments, their lines read
/// from standard input, written into a new (or empty) folder.
fn get_segments(args: &Args) -> anyhow::Result<()> {
    let Some(dest) = args.output.as_deref().filter(|p| p.as_os_str() != "-") else {
        bail!("--segments writes a folder: give -o DIR, a folder to make");
    };
    if args.mode.is_some() || args.mtime_ns.is_some() || !args.hints.is_empty() {
        bail!("--mode, --mtime-ns and --hint are not for --segments");
    }
    let done = dot_agent::trees::Progress::default();
    let got =
        super::segments::get_lines(args.socket.as_deref(), std::io::stdin().lock(), dest, &done)?;
    report_tree(args, &got);
    Ok(())
}

/// `gtc get TREE -o DIR`: the tree written into a new (or empty) folder.
fn get_tree(args: &Args, ticket: &dot_store::Ticket) -> anyhow::Result<()> {
    let Some(dest) = args.output.as_deref().filter(|p| p.as_os_str() != "-") else {
        bail!("the ticket is a folder's (a tree): give -o DIR, a folder to make");
    };
    if args.mode.is_some() || args.mtime_ns.is_some() {
        bail!("--mode and --mtime-ns are a file's: a tree keeps each entry's own");
    }
    let done = dot_agent::trees::Progress::default();
    let bar = progress::files_bar();
    let got = std::thread::scope(|s| {
        let watching = s.spawn(|| {
            while let Some(b) = &bar {
                if b.is_finished() {
                    break;
                }
                b.set_position(done.files.load(std::sync::atomic::Ordering::Relaxed) as u64);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let got = dot_agent::trees::get_tree(
            args.socket.as_deref(),
            ticket,
            &args.hints,
            dest,
            &done,
            |m| {
                if let Some(b) = &bar {
                    b.set_length(m.all_files().count() as u64);
                    b.set_message(super::count(m.file_bytes(), "byte"));
                }
            },
        );
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let _ = watching.join();
        got
    })?;
    report_tree(args, &got);
    Ok(())
}

/// What a tree's get reports with --json or --stats.
fn report_tree(args: &Args, got: &dot_agent::trees::TreeGot) {
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "entries": got.entries, "files": got.files, "size": got.bytes,
                "from_peers": got.stats.from_peers, "from_devices": got.stats.from_devices, "local": got.stats.local })
        );
    } else if args.stats {
        eprintln!(
            "{} in {}: {} from peers, {} from devices, {} already held",
            super::count(got.bytes, "byte"),
            super::count(got.files as u64, "file"),
            got.stats.from_peers,
            got.stats.from_devices,
            got.stats.local
        );
    }
}

/// Writes the object to `output` (at offsets, as chunks arrive) or to
/// stdout (in order); returns its size and where its bytes came from. A
/// failed get leaves no output file.
pub fn get(
    socket: Option<&Path>,
    target: &str,
    hints: &[String],
    output: Option<&Path>,
) -> anyhow::Result<(u64, GetStats)> {
    let mut client = Client::connect(socket)?;
    match output {
        Some(path) => {
            if path.is_dir() {
                bail!("{} is a folder", path.display());
            }
            // Written under a temporary name beside it, renamed into place
            // once whole: a failed get leaves no partial file, and an
            // existing one is replaced only by a complete object.
            let tmp = temporary_beside(path)?;
            let out = tmp.as_file();
            let mut get = client.get_unordered(target, hints)?;
            let size = get.size();
            out.set_len(size)
                .with_context(|| format!("sizing {}", path.display()))?;
            let bar = progress::bar(size);
            let stats = get.copy_to_file(out, |done| {
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            })?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            // Dropped unpersisted on any error above: removed.
            tmp.persist(path)
                .with_context(|| format!("renaming into {}", path.display()))?;
            Ok((size, stats))
        }
        None => {
            let mut get = client.get(target, hints)?;
            let size = get.size();
            let bar = progress::bar(size);
            let mut out = std::io::stdout().lock();
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0u64;
            loop {
                let n = get.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).context("writing the object")?;
                done += n as u64;
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            }
            out.flush().context("writing the object")?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let stats = get.stats().context("the get did not finish")?;
            Ok((size, stats))
        }
    }
}

/// A new file beside `path` (same folder, so the rename is atomic) under a
/// hidden temporary name, removed unless persisted; its mode is what a
/// plain create would give (0666 less the umask).
fn temporary_beside(path: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(&format!(".{}.gtc-", name.to_string_lossy()))
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file beside {}", path.display()))
}

/// Sets permission bits and modification time of a written file.
pub fn set_attrs(path: &Path, mode: Option<u32>, mtime_ns: Option<i64>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(m) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    if let Some(ns) = mtime_ns {
        let t = if ns >= 0 {
            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)
        } else {
            std::time::UNIX_EPOCH - std::time::Duration::from_nanos(ns.unsigned_abs())
        };
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .with_context(|| format!("setting the mtime of {}", path.display()))?;
    }
    Ok(())
}
