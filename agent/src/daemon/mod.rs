//! The agent daemon: the store, the peer server, the local API and the
//! mount, until SIGINT or SIGTERM.
//!
//! - `mod.rs`: start-up and shut-down, and what request handlers share
//!   (`Agent`);
//! - `clients`: one task per local-API connection: its pins, its open get,
//!   dispatch of each request, descriptor passing;
//! - `put`: puts by descriptor and by stream;
//! - `get`: gets, streamed as verified ranges or read at an offset;
//! - `export`: copying an object to a portable key;
//! - `devices`: the device watcher feeding keys to the fetches;
//! - `local_access`: who may use the local API (socket folder and modes,
//!   peer credentials, the optional `socket-group`);
//! - `status`: what `gtc status` reports;
//! - `metrics`: what the metrics endpoint reports, and `metrics_http`, the
//!   endpoint (opt-in, config `metrics`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, bail};
use dot_plugins::gtc::server::{ServeOptions, ServerStats, serve_with};
use dot_plugins::gtc::tls;
use dot_store::{Store, StoreOptions};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::fetch::Fetches;
use crate::tickets::Issuer;

mod clients;
mod devices;
mod export;
mod get;
mod local_access;
mod metrics;
mod metrics_http;
mod notify;
mod objects;
mod put;
mod status;

/// What request handlers share.
struct Agent {
    store: Store,
    config: Config,
    listen: std::net::SocketAddr,
    /// What its tickets say of it.
    issuer: Issuer,
    stats: Arc<ServerStats>,
    fetches: Fetches,
    clients: AtomicU64,
    /// Local API connections refused.
    refused_clients: AtomicU64,
    /// Who may use the local API.
    access: local_access::LocalAccess,
}

/// Runs the agent until a shutdown signal. Prints one line
/// `gtc agent: ready peer=ADDR socket=PATH` on stdout once it accepts
/// clients and peers.
///
/// # Errors
/// If the store, the peer port or the socket cannot be opened.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let (budget, min_free) = config.store_limits();
    let opts = StoreOptions {
        chunker: config.chunker,
        budget,
        min_free,
        durable: config.durable,
    };
    let dir = config.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, opts))
        .await?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let peers = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let listen = peers.local_addr()?;
    let addrs = if config.advertise.is_empty() {
        let ip = if listen.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            listen.ip()
        };
        vec![std::net::SocketAddr::new(ip, listen.port()).to_string()]
    } else {
        config.advertise.clone()
    };
    let key_file = config.data_dir.join(tls::KEY_FILE);
    let identity = tokio::task::spawn_blocking(move || tls::Identity::load_or_create(&key_file))
        .await?
        .context("the agent's peer key")?;
    let issuer = Issuer::new(addrs, (!config.plain_peers).then(|| identity.key()));
    let serve = ServeOptions {
        tls: Some(identity.server_config()),
        plain: config.plain_peers,
        ..config.serve.clone()
    };
    let stats = Arc::new(ServerStats::default());
    tokio::spawn(serve_with(peers, store.clone(), stats.clone(), serve));
    let metrics = match config.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let access = local_access::LocalAccess::new(config.socket_group);
    let clients = bind_socket(&config.socket, &access).await?;
    let socket = config.socket.clone();
    let agent = Arc::new(Agent {
        fetches: Fetches::new(store.clone())
            .with_binds(config.bind.clone())
            .with_outbox(config.outbox)
            .with_peers(config.peers.clone()),
        store,
        config,
        listen,
        issuer,
        stats,
        clients: AtomicU64::new(0),
        refused_clients: AtomicU64::new(0),
        access,
    });
    let mount = match &agent.config.mount {
        Some(dir) => {
            let objects = crate::fuse::AgentObjects::new(
                tokio::runtime::Handle::current(),
                agent.fetches.clone(),
                agent.issuer.clone(),
                agent.config.read_timeout,
            );
            let drafts = agent.config.data_dir.join("drafts");
            let _ = std::fs::remove_dir_all(&drafts);
            let opts = dot_fusefs::MountOptions {
                drafts,
                passthrough: agent.config.passthrough,
                threads: 4,
                put_limit: agent.config.put_limit,
            };
            let dir = dir.clone();
            let m = tokio::task::spawn_blocking(move || dot_fusefs::mount(objects, &dir, opts))
                .await?
                .with_context(|| {
                    format!(
                        "mounting on {}",
                        agent
                            .config
                            .mount
                            .as_ref()
                            .map_or(String::new(), |d| d.display().to_string())
                    )
                })?;
            Some(m)
        }
        None => None,
    };
    let devices = if agent.config.devices {
        Some(devices::DeviceWatch::start(&agent)?)
    } else {
        None
    };
    let metrics_note = match metrics {
        Some(listener) => {
            let note = format!(" metrics={}", listener.local_addr()?);
            let reads = mount.as_ref().map(dot_fusefs::Mount::read_stats);
            tokio::spawn(metrics_http::serve(listener, agent.clone(), reads));
            note
        }
        None => String::new(),
    };
    let mount_note = mount
        .as_ref()
        .map(|m| format!(" mount={}", m.dir().display()))
        .unwrap_or_default();
    println!(
        "gtc agent: ready peer={listen} socket={}{mount_note}{metrics_note}",
        socket.display()
    );
    tracing::info!(peer = %listen, socket = %socket.display(), "agent ready");
    notify::notify(&format!("READY=1\nSTATUS=serving peers on {listen}"));

    let mut pause = std::time::Duration::ZERO;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = clients.accept() => match accepted {
                Ok((stream, _)) => {
                    pause = std::time::Duration::ZERO;
                    tokio::spawn(clients::client_task(agent.clone(), stream));
                }
                Err(e) => {
                    // Out of descriptors: wait instead of spinning.
                    pause = dot_plugins::gtc::server::backoff(pause);
                    tracing::warn!(error = %e, pause = ?pause, "accepting a client failed");
                    tokio::time::sleep(pause).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    notify::notify("STOPPING=1");
    if let Some(d) = devices {
        tokio::task::spawn_blocking(move || drop(d)).await?;
    }
    if let Some(m) = mount {
        tokio::task::spawn_blocking(move || drop(m)).await?;
    }
    let _ = std::fs::remove_file(&socket);
    let store = agent.store.clone();
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}

/// Binds the local API socket, replacing a stale one left by a killed
/// agent, refusing if a live agent answers on it.
async fn bind_socket(
    path: &Path,
    access: &local_access::LocalAccess,
) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        access.prepare_dir(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another agent is running on {}", path.display());
        }
        tracing::info!(socket = %path.display(), "removing a stale socket");
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    access.secure_socket(path)?;
    Ok(listener)
}

/// Raises the soft limit on open files to the hard one (at most 65536): an
/// agent holds a socket per peer and client and a file per open object,
/// more than the usual soft limit of 1024 on a busy host.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let want = lim.rlim_max.min(65536);
    if want > lim.rlim_cur {
        let old = lim.rlim_cur;
        lim.rlim_cur = want;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::debug!(from = old, to = want, "raised the open-file limit");
        }
    }
}
