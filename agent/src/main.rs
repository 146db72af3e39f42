//! `gtc`: the DOT agent and its command line.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dot_agent::api::{self, Request, Response};
use dot_agent::config::{self, RawConfig};

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
    },
    /// Put a file by reference (the agent does not copy it); prints the
    /// ticket as the last line.
    Put {
        /// The file.
        file: PathBuf,
        /// Print one JSON object (oid, ticket, size, chunks, hints).
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
        /// Local API socket (default: $GTC_SOCKET, else the agent's default).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Show what the agent holds and serves.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Local API socket (default: $GTC_SOCKET, else the agent's default).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
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
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
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
            let config = raw.validate()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(dot_agent::daemon::run(config))
        }
        Command::Put { file, json, socket } => {
            if file.as_os_str() == "-" {
                bail!("put: standard input is not supported yet; give a file");
            }
            let opened = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let path = std::fs::canonicalize(&file)
                .with_context(|| format!("resolving {}", file.display()))?;
            let request = Request::PutFile {
                path: path.to_string_lossy().into_owned(),
            };
            match call(socket.as_deref(), request, Some(&opened))? {
                Response::Put(r) if json => println!("{}", serde_json::to_string(&r)?),
                Response::Put(r) => {
                    eprintln!("{} ({} bytes, {} chunks)", r.oid, r.size, r.chunks);
                    println!("{}", r.ticket);
                }
                Response::Error { message } => bail!("agent: {message}"),
                other => bail!("agent gave an unexpected answer: {other:?}"),
            }
            Ok(())
        }
        Command::Get {
            target,
            output,
            hints,
            stats,
            json,
            socket,
        } => get(
            socket.as_deref(),
            target,
            hints,
            output.as_deref(),
            stats,
            json,
        ),
        Command::Status { json, socket } => {
            let resp = call(socket.as_deref(), Request::Status, None)?;
            match resp {
                Response::Status(st) if json => println!("{}", serde_json::to_string(&st)?),
                Response::Status(st) => {
                    println!(
                        "agent {} serving peers on {} ({})",
                        st.version,
                        st.listen,
                        st.hints.join(", ")
                    );
                    println!(
                        "store {}: {} objects ({} complete, {} pinned), {} bytes held",
                        st.data_dir, st.objects, st.complete, st.pinned, st.stored_bytes
                    );
                    println!(
                        "peers: {} chunks / {} bytes served, {} refused, {} violations",
                        st.peers.chunks_served,
                        st.peers.bytes_sent,
                        st.peers.refused,
                        st.peers.violations
                    );
                }
                Response::Error { message } => bail!("agent: {message}"),
                other => bail!("agent gave an unexpected answer: {other:?}"),
            }
            Ok(())
        }
    }
}

/// Sends one request to the agent (with `fd` passed after it, if given)
/// and returns its answer.
fn call(
    socket: Option<&std::path::Path>,
    request: Request,
    fd: Option<&std::fs::File>,
) -> anyhow::Result<Response> {
    use std::os::fd::AsRawFd;
    let socket = config::client_socket(socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut s = tokio::net::UnixStream::connect(&socket)
            .await
            .with_context(|| {
                format!(
                    "no agent at {} (start one with `gtc agent`)",
                    socket.display()
                )
            })?;
        api::write_json(&mut s, &request).await?;
        if let Some(f) = fd {
            dot_agent::fdpass::send_fd(s.as_raw_fd(), f.as_raw_fd())
                .context("passing the file to the agent")?;
        }
        api::read_json::<_, Response>(&mut s)
            .await?
            .context("the agent closed the connection")
    })
}

/// `gtc get`: asks the agent for the object and writes the bytes it streams.
fn get(
    socket: Option<&std::path::Path>,
    target: String,
    hints: Vec<String>,
    output: Option<&std::path::Path>,
    stats: bool,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let socket = config::client_socket(socket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut s = tokio::net::UnixStream::connect(&socket)
            .await
            .with_context(|| format!("no agent at {} (start one with `gtc agent`)", socket.display()))?;
        api::write_json(&mut s, &Request::Get { ticket: target, hints }).await?;
        let mut out: Option<Box<dyn Write>> = None;
        let (mut expected, mut written) = (0u64, 0u64);
        loop {
            let msg = api::read_message(&mut s).await?.context("the agent closed the connection")?;
            match msg {
                api::Message::Data(bytes) => {
                    let w = out.as_mut().context("data before the object's header")?;
                    w.write_all(&bytes).context("writing the object")?;
                    written += bytes.len() as u64;
                }
                api::Message::Json(body) => match serde_json::from_slice::<Response>(&body)? {
                    Response::Object { size, .. } => {
                        expected = size;
                        out = Some(match output {
                            Some(p) => Box::new(std::io::BufWriter::new(
                                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
                            )),
                            None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                        });
                    }
                    Response::End { from_peers, local } => {
                        if let Some(mut w) = out.take() {
                            w.flush().context("writing the object")?;
                        }
                        if written != expected {
                            bail!("the agent sent {written} of {expected} bytes");
                        }
                        if json {
                            eprintln!("{}", serde_json::json!({ "size": expected, "from_peers": from_peers, "local": local }));
                        } else if stats {
                            eprintln!("{expected} bytes: {from_peers} from peers, {local} already held");
                        }
                        return Ok(());
                    }
                    Response::Error { message } => bail!("agent: {message}"),
                    other => bail!("agent gave an unexpected answer: {other:?}"),
                },
            }
        }
    });
    if result.is_err() {
        if let Some(p) = output {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}
