//! `gtc`: the DOT agent and its command line.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dot_agent::api::PutResult;
use dot_agent::client::{Client, GetStats};
use dot_agent::config::RawConfig;

/// DOT: data-oriented transfer.
#[derive(Parser)]
#[command(name = "gtc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    Agent {
        /// TOML configuration file; flags override its keys.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Store folder.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Local API socket.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Address:port to serve peers on (default 0.0.0.0:7420).
        #[arg(long)]
        listen: Option<String>,
        /// host:port to put into hints; repeat for several.
        #[arg(long)]
        advertise: Vec<String>,
        /// Mount the content-addressed namespace here (default for root:
        /// /mnt/dot).
        #[arg(long, conflicts_with = "no_mount")]
        mount: Option<PathBuf>,
        /// Do not mount the namespace.
        #[arg(long)]
        no_mount: bool,
        /// Seconds a read through the mount may wait before EIO.
        #[arg(long)]
        read_timeout: Option<u64>,
        /// host:port of a peer to ask for objects known by OID alone;
        /// repeat for several (config key `peers`).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Address or prefix (10.0.0.0/8) that may fetch by OID alone,
        /// without a ticket's token; repeat for several (config `open-to`).
        #[arg(long)]
        open_to: Vec<String>,
    },
    /// Put a file (by reference: the agent does not copy it) or standard
    /// input (`-`); prints the ticket as the last line.
    Put {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// Print one JSON object (oid, ticket, size, chunks, hints, ...).
        #[arg(long)]
        json: bool,
        /// Local API socket (default: $GTC_SOCKET, else the agent's default).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Get an object by ticket (or OID) and write it to FILE or stdout.
    Get {
        /// The ticket `gtc put` printed, or an OID the agent can find.
        target: String,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Source to use instead of the ticket's hints; repeat for several.
        #[arg(long = "hint")]
        hints: Vec<String>,
        /// Report on stderr the bytes taken from peers and already held.
        #[arg(long)]
        stats: bool,
        /// Like --stats, as one JSON object on stderr.
        #[arg(long)]
        json: bool,
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
    },
    /// Show what the agent holds, serves and fetches.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Local API socket (default: $GTC_SOCKET, else the agent's default).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Portable storage: copy objects to a mounted key.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Copy a file between machines, the bytes going agent to agent: runs
    /// `gtc put --json` where SRC is and `gtc get` where DST is, over
    /// `--rsh` for a remote side. Keeps mode and mtime.
    Cp {
        /// `[[user@]host:]path` of the file to copy.
        src: String,
        /// `[[user@]host:]path` to write (a folder, or ending in `/`: keep
        /// the name).
        dst: String,
        /// How to run commands on a remote side.
        #[arg(long, default_value = "ssh")]
        rsh: String,
        /// The `gtc` to run on a remote side.
        #[arg(long, default_value = "gtc")]
        remote_gtc: String,
        /// Local API socket for a local side.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
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

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent {
            config,
            data_dir,
            socket,
            listen,
            advertise,
            mount,
            no_mount,
            read_timeout,
            peers,
            open_to,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            let mut raw = match config {
                Some(path) => RawConfig::load(&path)?,
                None => RawConfig::default(),
            };
            raw.data_dir = data_dir.or(raw.data_dir);
            raw.socket = socket.or(raw.socket);
            raw.listen = listen.or(raw.listen);
            if !advertise.is_empty() {
                raw.advertise = Some(advertise);
            }
            raw.mount = if no_mount {
                Some(PathBuf::new())
            } else {
                mount.or(raw.mount)
            };
            raw.read_timeout_secs = read_timeout.or(raw.read_timeout_secs);
            if !peers.is_empty() {
                raw.peers = Some(peers);
            }
            if !open_to.is_empty() {
                raw.open_to = Some(open_to);
            }
            let config = raw.validate()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(dot_agent::daemon::run(config))
        }
        Command::Put { file, json, socket } => {
            let r = put(socket.as_deref(), &file)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                eprintln!("{} ({} bytes, {} chunks)", r.oid, r.size, r.chunks);
                println!("{}", r.ticket);
            }
            Ok(())
        }
        Command::Get {
            target,
            output,
            hints,
            stats,
            json,
            mode,
            mtime_ns,
            socket,
        } => {
            let (size, got) = get(socket.as_deref(), &target, &hints, output.as_deref())?;
            if let Some(path) = &output {
                set_attrs(path, mode, mtime_ns)?;
            }
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({ "size": size, "from_peers": got.from_peers, "from_devices": got.from_devices, "local": got.local })
                );
            } else if stats {
                eprintln!(
                    "{size} bytes: {} from peers, {} from devices, {} already held",
                    got.from_peers, got.from_devices, got.local
                );
            }
            Ok(())
        }
        Command::Device {
            command:
                DeviceCommand::Export {
                    target,
                    path,
                    socket,
                },
        } => {
            let path = std::path::absolute(&path)
                .with_context(|| format!("resolving {}", path.display()))?;
            let mut bar = None;
            Client::connect(socket.as_deref())?.export(&target, &path, |done, total| {
                bar.get_or_insert_with(|| progress_bar(total))
                    .as_ref()
                    .inspect(|b| b.set_position(done));
            })?;
            if let Some(Some(b)) = bar {
                b.finish_and_clear();
            }
            eprintln!("exported to {}", path.display());
            Ok(())
        }
        Command::Status { json, socket } => {
            let st = Client::connect(socket.as_deref())?.status()?;
            if json {
                println!("{}", serde_json::to_string(&st)?);
                return Ok(());
            }
            println!(
                "agent {} serving peers on {} ({}), {} clients",
                st.version,
                st.listen,
                st.hints.join(", "),
                st.clients
            );
            println!(
                "store {}: {} objects ({} complete, {} pinned), {} bytes held",
                st.data_dir, st.objects, st.complete, st.pinned, st.stored_bytes
            );
            println!(
                "peers: {} chunks / {} bytes served, {} refused, {} violations",
                st.peers.chunks_served, st.peers.bytes_sent, st.peers.refused, st.peers.violations
            );
            println!("transfers in flight: {}", st.transfers.len());
            for t in &st.transfers {
                println!(
                    "  {} {}: {} of {} bytes ({} local, {} from devices) from {}, {:.1} s",
                    t.oid,
                    t.state,
                    t.from_peers + t.local + t.from_devices,
                    t.size,
                    t.local,
                    t.from_devices,
                    t.source,
                    t.seconds
                );
                for p in &t.paths {
                    println!(
                        "    path {}: {} bytes in {} chunks, dropped {} times",
                        p.name, p.bytes, p.chunks, p.drops
                    );
                }
            }
            Ok(())
        }
        Command::Cp {
            src,
            dst,
            rsh,
            remote_gtc,
            socket,
        } => cp(&src, &dst, &rsh, &remote_gtc, socket.as_deref()),
    }
}

/// `gtc put`: by descriptor for a file, streamed for `-`.
fn put(socket: Option<&Path>, file: &Path) -> anyhow::Result<PutResult> {
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

/// A progress bar on stderr when it is a terminal.
fn progress_bar(size: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// `gtc get`: writes the object to `output` (at offsets, as chunks arrive)
/// or to stdout (in order). A failed get leaves no output file.
fn get(
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
            let result = (|| {
                let out = std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut get = client.get_unordered(target, hints)?;
                let size = get.size();
                out.set_len(size)
                    .with_context(|| format!("sizing {}", path.display()))?;
                let bar = progress_bar(size);
                let stats = get.copy_to_file(&out, |done| {
                    if let Some(b) = &bar {
                        b.set_position(done);
                    }
                })?;
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                Ok::<_, anyhow::Error>((size, stats))
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(path);
            }
            result
        }
        None => {
            let mut get = client.get(target, hints)?;
            let size = get.size();
            let bar = progress_bar(size);
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

/// Sets permission bits and modification time of a written file.
fn set_attrs(path: &Path, mode: Option<u32>, mtime_ns: Option<i64>) -> anyhow::Result<()> {
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

/// `gtc cp`: put where SRC is, get where DST is.
fn cp(
    src: &str,
    dst: &str,
    rsh: &str,
    remote_gtc: &str,
    socket: Option<&Path>,
) -> anyhow::Result<()> {
    let (src_host, src_path) = split_remote(src);
    let (dst_host, dst_path) = split_remote(dst);
    let name = Path::new(src_path)
        .file_name()
        .context("the source names no file")?
        .to_string_lossy()
        .into_owned();
    let put: PutResult = match src_host {
        None => put(socket, Path::new(src_path))?,
        Some(host) => {
            let args = vec!["put".into(), "--json".into(), src_path.to_owned()];
            let out = remote(rsh, host, remote_gtc, &args)?;
            let line = out
                .lines()
                .last()
                .context("the remote put printed nothing")?;
            serde_json::from_str(line).context("reading the remote put's answer")?
        }
    };
    let mut args = vec![put.ticket.clone(), "-o".to_owned()];
    match dst_host {
        None => {
            let mut path = PathBuf::from(dst_path);
            if path.is_dir() || dst_path.ends_with('/') {
                path.push(&name);
            }
            get(socket, &put.ticket, &[], Some(&path))?;
            set_attrs(&path, put.mode, put.mtime_ns)?;
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
            remote(rsh, host, remote_gtc, &full)?;
        }
    }
    Ok(())
}
