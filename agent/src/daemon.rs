//! The agent daemon: the store, the peer server and the local API, until
//! SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use dot_plugins::gtc::server::{ServerStats, serve};
use dot_store::{Store, StoreOptions};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use std::os::fd::AsRawFd;

use dot_store::descriptor::list_digest;
use dot_store::{Hint, Ticket, Token};
use tokio::io::Interest;

use crate::api::{self, PeerCounters, PutResult, Request, Response, Status};
use crate::config::Config;
use crate::fdpass;
use crate::fetch::{self, Target};

/// What request handlers share.
struct Agent {
    store: Store,
    config: Config,
    listen: std::net::SocketAddr,
    hints: Vec<String>,
    stats: Arc<ServerStats>,
}

/// Runs the agent until a shutdown signal. Prints one line
/// `gtc agent: ready peer=ADDR socket=PATH` on stdout once it accepts
/// clients and peers.
///
/// # Errors
/// If the store, the peer port or the socket cannot be opened.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let opts = StoreOptions {
        chunker: config.chunker,
        budget: config.cache_bytes,
        durable: true,
    };
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, opts))
        .await?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let peers = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let listen = peers.local_addr()?;
    let hints = if config.advertise.is_empty() {
        let ip = if listen.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            listen.ip()
        };
        vec![std::net::SocketAddr::new(ip, listen.port()).to_string()]
    } else {
        config.advertise.clone()
    };
    let stats = Arc::new(ServerStats::default());
    tokio::spawn(serve(peers, store.clone(), stats.clone()));
    let clients = bind_socket(&config.socket).await?;
    let socket = config.socket.clone();
    let agent = Arc::new(Agent {
        store,
        config,
        listen,
        hints,
        stats,
    });
    println!("gtc agent: ready peer={listen} socket={}", socket.display());
    tracing::info!(peer = %listen, socket = %socket.display(), "agent ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = clients.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(client_task(agent.clone(), stream));
                }
                Err(e) => tracing::warn!(error = %e, "accepting a client failed"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(&socket);
    let store = agent.store.clone();
    tokio::task::spawn_blocking(move || store.flush()).await??;
    Ok(())
}

/// Binds the local API socket, replacing a stale one left by a killed
/// agent, refusing if a live agent answers on it.
async fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another agent is running on {}", path.display());
        }
        tracing::info!(socket = %path.display(), "removing a stale socket");
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))
}

async fn client_task(agent: Arc<Agent>, stream: UnixStream) {
    if let Err(e) = client_impl(&agent, stream).await {
        tracing::debug!(error = %e, "client connection ended");
    }
}

async fn client_impl(agent: &Agent, mut stream: UnixStream) -> Result<(), api::ApiError> {
    while let Some(req) = api::read_json::<_, Request>(&mut stream).await? {
        let resp = match req {
            Request::Status => match status(agent).await {
                Ok(s) => Response::Status(s),
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            },
            Request::PutFile { path } => {
                let fd = loop {
                    stream.readable().await?;
                    let raw = stream.as_raw_fd();
                    match stream.try_io(Interest::READABLE, || fdpass::recv_fd(raw)) {
                        Ok(fd) => break fd,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                match put_file(agent, fd, path).await {
                    Ok(r) => Response::Put(r),
                    Err(e) => Response::Error {
                        message: format!("{e:#}"),
                    },
                }
            }
            Request::Get { ticket, hints } => {
                let fetched = match Target::parse(&ticket, &hints) {
                    Ok(target) => fetch::fetch(&agent.store, &target).await,
                    Err(e) => Err(e),
                };
                match fetched {
                    Ok(f) => {
                        send_object(&agent.store, &mut stream, f).await?;
                        continue;
                    }
                    Err(e) => Response::Error {
                        message: format!("{e:#}"),
                    },
                }
            }
        };
        api::write_json(&mut stream, &resp).await?;
    }
    Ok(())
}

/// Streams a complete object to the client: `Object`, data, `End`.
async fn send_object(
    store: &Store,
    stream: &mut UnixStream,
    f: fetch::Fetched,
) -> Result<(), api::ApiError> {
    api::write_json(
        stream,
        &Response::Object {
            oid: f.oid.to_string(),
            size: f.size,
        },
    )
    .await?;
    const PIECE: usize = 1 << 20;
    let mut at = 0u64;
    while at < f.size {
        let len = PIECE.min((f.size - at) as usize);
        let s = store.clone();
        let oid = f.oid;
        let data = match tokio::task::spawn_blocking(move || s.read_at(oid, at, len)).await {
            Ok(Ok(d)) if !d.is_empty() => d,
            Ok(Err(e)) => {
                let message = format!("reading {oid}: {e}");
                return api::write_json(stream, &Response::Error { message }).await;
            }
            _ => {
                return api::write_json(
                    stream,
                    &Response::Error {
                        message: "reading the object failed".into(),
                    },
                )
                .await;
            }
        };
        api::write_data(stream, &data).await?;
        at += data.len() as u64;
    }
    api::write_json(
        stream,
        &Response::End {
            from_peers: f.from_peers,
            local: f.local,
        },
    )
    .await
}

async fn put_file(
    agent: &Agent,
    fd: std::os::fd::OwnedFd,
    path: String,
) -> anyhow::Result<PutResult> {
    let path = std::path::PathBuf::from(path);
    if !path.is_absolute() {
        bail!("put: {} is not an absolute path", path.display());
    }
    let store = agent.store.clone();
    let file = std::fs::File::from(fd);
    let (out, token, descs) = tokio::task::spawn_blocking(move || {
        let out = store.put_file(&file, &path)?;
        let token =
            store.ensure_token(out.oid, Token::random().map_err(dot_store::Error::Input)?)?;
        let descs = store.descriptors(out.oid)?;
        Ok::<_, dot_store::Error>((out, token, descs))
    })
    .await??;
    let hints: Vec<Hint> = agent
        .hints
        .iter()
        .filter_map(|h| Hint::new(&format!("gtc://{h}")).ok())
        .collect();
    let ticket = Ticket::new(out.oid, Some(token), Some(list_digest(&descs)), hints);
    tracing::info!(oid = %out.oid, size = out.size, hashed = out.hashed, "put");
    Ok(PutResult {
        oid: out.oid.to_string(),
        ticket: ticket.to_string(),
        size: out.size,
        chunks: out.chunks,
        hints: ticket.hints().iter().map(|h| h.to_string()).collect(),
        hashed: out.hashed,
    })
}

async fn status(agent: &Agent) -> anyhow::Result<Status> {
    let store = agent.store.clone();
    let (list, stored) = tokio::task::spawn_blocking(move || {
        Ok::<_, dot_store::Error>((store.list()?, store.stored_bytes()?))
    })
    .await??;
    let s = &agent.stats;
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        data_dir: agent.config.data_dir.display().to_string(),
        listen: agent.listen.to_string(),
        hints: agent.hints.iter().map(|h| format!("gtc://{h}")).collect(),
        objects: list.len() as u64,
        complete: list.iter().filter(|o| o.complete).count() as u64,
        pinned: list.iter().filter(|o| o.pins > 0).count() as u64,
        stored_bytes: stored,
        peers: PeerCounters {
            chunks_served: s.chunks_served.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            violations: s.violations.load(Ordering::Relaxed),
        },
    })
}
