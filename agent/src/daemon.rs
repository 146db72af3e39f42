//! The agent daemon: the store, the peer server and the local API, until
//! SIGINT or SIGTERM.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use dot_plugins::gtc::access::Policy;
use dot_plugins::gtc::server::{ServerStats, serve_with};
use dot_plugins::portable::Device;
use dot_store::{Oid, PutOutcome, Store, StoreOptions};
use tokio::io::Interest;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc};

use crate::api::{
    self, GetMode, MAX_READ, Message, PathStatus, PeerCounters, PutResult, Request, Response,
    Status, TransferStatus,
};
use crate::config::Config;
use crate::fdpass;
use crate::fetch::{Fetch, FetchState, Fetches, Target};
use crate::tickets::make_ticket;

/// What request handlers share.
struct Agent {
    store: Store,
    config: Config,
    listen: std::net::SocketAddr,
    hints: Vec<String>,
    stats: Arc<ServerStats>,
    fetches: Fetches,
    clients: AtomicU64,
}

/// Runs the agent until a shutdown signal. Prints one line
/// `gtc agent: ready peer=ADDR socket=PATH` on stdout once it accepts
/// clients and peers.
///
/// # Errors
/// If the store, the peer port or the socket cannot be opened.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let opts = StoreOptions {
        chunker: config.chunker,
        budget: config.cache_bytes,
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
    let policy = Policy {
        open_to: config.open_to.clone(),
    };
    tokio::spawn(serve_with(peers, store.clone(), stats.clone(), policy));
    let clients = bind_socket(&config.socket).await?;
    let socket = config.socket.clone();
    let agent = Arc::new(Agent {
        fetches: Fetches::new(store.clone())
            .with_binds(config.bind.clone())
            .with_outbox(config.outbox)
            .with_peers(config.peers.clone()),
        store,
        config,
        listen,
        hints,
        stats,
        clients: AtomicU64::new(0),
    });
    let mount = match &agent.config.mount {
        Some(dir) => {
            let objects = crate::fuse::AgentObjects::new(
                tokio::runtime::Handle::current(),
                agent.fetches.clone(),
                agent.hints.clone(),
                agent.config.read_timeout,
            );
            let drafts = agent.config.data_dir.join("drafts");
            let _ = std::fs::remove_dir_all(&drafts);
            let opts = dot_fusefs::MountOptions {
                drafts,
                passthrough: agent.config.passthrough,
                threads: 4,
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
        Some(DeviceWatch::start(&agent)?)
    } else {
        None
    };
    let mount_note = mount
        .as_ref()
        .map(|m| format!(" mount={}", m.dir().display()))
        .unwrap_or_default();
    println!(
        "gtc agent: ready peer={listen} socket={}{mount_note}",
        socket.display()
    );
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

/// One client connection: the objects it holds (released by `done` or when
/// it closes) and the object of its last get.
struct Conn {
    stream: UnixStream,
    pinned: HashMap<Oid, u32>,
    get: Option<OpenGet>,
}

/// A get whose bytes the client reads by range.
struct OpenGet {
    fetch: Arc<Fetch>,
    target: Target,
    trusted: bool,
    via_fd: bool,
}

impl Conn {
    fn pin(&mut self, store: &Store, oid: Oid) {
        store.pin(oid);
        *self.pinned.entry(oid).or_insert(0) += 1;
    }

    fn release(&mut self, store: &Store, oid: Oid) -> bool {
        match self.pinned.remove(&oid) {
            Some(n) => {
                for _ in 0..n {
                    store.unpin(oid);
                }
                true
            }
            None => false,
        }
    }
}

async fn client_task(agent: Arc<Agent>, stream: UnixStream) {
    agent.clients.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        stream,
        pinned: HashMap::new(),
        get: None,
    };
    if let Err(e) = client_impl(&agent, &mut conn).await {
        tracing::debug!(error = %format!("{e:#}"), "client connection ended");
    }
    for (oid, n) in conn.pinned.drain() {
        for _ in 0..n {
            agent.store.unpin(oid);
        }
    }
    agent.clients.fetch_sub(1, Ordering::Relaxed);
}

/// The device watcher, feeding attached devices to the fetches from its
/// own thread until dropped.
struct DeviceWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeviceWatch {
    fn start(agent: &Agent) -> anyhow::Result<DeviceWatch> {
        let watcher = dot_udev::Watcher::start(dot_udev::Options {
            folders: agent.config.device_folders.clone(),
            mount_into: agent.config.device_mount.clone(),
        })
        .context("starting the device watcher")?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetches = agent.fetches.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dot-devices".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match watcher
                        .events()
                        .recv_timeout(std::time::Duration::from_millis(200))
                    {
                        Ok(dot_udev::DeviceEvent::Appeared(p)) => fetches.device_appeared(&p),
                        Ok(dot_udev::DeviceEvent::Left(p)) => fetches.device_left(&p),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        Ok(DeviceWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for DeviceWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn error(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
    }
}

async fn client_impl(agent: &Agent, conn: &mut Conn) -> anyhow::Result<()> {
    while let Some(msg) = api::read_message(&mut conn.stream).await? {
        let req: Request = match msg {
            Message::Json(body) => serde_json::from_slice(&body)?,
            Message::Data(_) => {
                let resp = error("object data outside a put");
                api::write_json(&mut conn.stream, &resp).await?;
                bail!("client sent data outside a put");
            }
        };
        let resp = match req {
            Request::Status => match status(agent).await {
                Ok(s) => Response::Status(Box::new(s)),
                Err(e) => error(format!("{e:#}")),
            },
            Request::PutFile { path } => {
                let fd = recv_fd(&conn.stream).await?;
                match put_file(agent, fd, path).await {
                    Ok(r) => {
                        conn.pin(&agent.store, r.0);
                        Response::Put(r.1)
                    }
                    Err(e) => error(format!("{e:#}")),
                }
            }
            Request::PutInit => match stream_put(agent, &mut conn.stream).await? {
                Ok(r) => {
                    conn.pin(&agent.store, r.0);
                    Response::Put(r.1)
                }
                Err(e) => error(format!("{e:#}")),
            },
            Request::PutCommit => error("put-commit without put-init"),
            Request::Get {
                ticket,
                hints,
                mode,
            } => {
                get(agent, conn, &ticket, &hints, mode).await?;
                continue;
            }
            Request::Read { offset, len } => {
                read_range(agent, conn, offset, len).await?;
                continue;
            }
            Request::Export { ticket, path } => match export(agent, conn, &ticket, &path).await? {
                Ok(()) => Response::Ok,
                Err(e) => error(format!("{e:#}")),
            },
            Request::Done { oid } => match oid.parse::<Oid>() {
                Ok(oid) => {
                    if conn.get.as_ref().is_some_and(|g| g.fetch.oid == oid) {
                        conn.get = None;
                    }
                    if conn.release(&agent.store, oid) {
                        Response::Ok
                    } else {
                        error(format!("{oid} is not held by this connection"))
                    }
                }
                Err(e) => error(e),
            },
        };
        api::write_json(&mut conn.stream, &resp).await?;
    }
    Ok(())
}

/// Receives the descriptor a client sends after its request.
async fn recv_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    loop {
        stream.readable().await?;
        let raw = stream.as_raw_fd();
        match stream.try_io(Interest::READABLE, || fdpass::recv_fd(raw)) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sends a descriptor to the client.
async fn send_fd(stream: &UnixStream, fd: &std::fs::File) -> std::io::Result<()> {
    loop {
        stream.writable().await?;
        let raw = stream.as_raw_fd();
        match stream.try_io(Interest::WRITABLE, || fdpass::send_fd(raw, fd.as_raw_fd())) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The ticket and answer for a put.
fn put_result(agent: &Agent, out: &PutOutcome) -> anyhow::Result<PutResult> {
    let ticket = make_ticket(&agent.store, &agent.hints, out.oid)?;
    agent.fetches.put_done(out.oid);
    tracing::info!(oid = %out.oid, size = out.size, hashed = out.hashed, "put");
    Ok(PutResult {
        oid: out.oid.to_string(),
        ticket: ticket.to_string(),
        size: out.size,
        chunks: out.chunks,
        hints: ticket.hints().iter().map(|h| h.to_string()).collect(),
        hashed: out.hashed,
        mode: None,
        mtime_ns: None,
    })
}

async fn put_file(agent: &Agent, fd: OwnedFd, path: String) -> anyhow::Result<(Oid, PutResult)> {
    let path = std::path::PathBuf::from(path);
    if !path.is_absolute() {
        bail!("put: {} is not an absolute path", path.display());
    }
    let store = agent.store.clone();
    let file = std::fs::File::from(fd);
    let out = tokio::task::spawn_blocking(move || store.put_file(&file, &path)).await??;
    Ok((out.oid, put_result(agent, &out)?))
}

/// A stream put: data messages until `put-commit`. The outer error ends
/// the connection (socket trouble, a protocol violation); the inner one is
/// the put's failure, answered to the client.
async fn stream_put(
    agent: &Agent,
    stream: &mut UnixStream,
) -> anyhow::Result<anyhow::Result<(Oid, PutResult)>> {
    enum Piece {
        Data(Vec<u8>),
        Commit,
    }
    let (tx, mut rx) = mpsc::channel::<Piece>(8);
    let store = agent.store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut w = store.put_writer();
        loop {
            match rx.blocking_recv() {
                Some(Piece::Data(d)) => w.write_all(&d)?,
                Some(Piece::Commit) => return w.finish().map_err(anyhow::Error::from),
                // The client went away: dropping the writer abandons it.
                None => bail!("the client closed before committing"),
            }
        }
    });
    let mut writer_gone = false;
    loop {
        let Some(msg) = api::read_message(stream).await? else {
            bail!("client closed during a put");
        };
        match msg {
            Message::Data(d) => {
                if !writer_gone && tx.send(Piece::Data(d)).await.is_err() {
                    // The writer failed; keep reading to the commit, then
                    // report its error.
                    writer_gone = true;
                }
            }
            Message::Json(body) => match serde_json::from_slice::<Request>(&body)? {
                Request::PutCommit => {
                    let _ = tx.send(Piece::Commit).await;
                    break;
                }
                other => bail!("{other:?} in the middle of a put"),
            },
        }
    }
    drop(tx);
    let out = match writer.await? {
        Ok(out) => out,
        Err(e) => return Ok(Err(e.context("put"))),
    };
    Ok(put_result(agent, &out).map(|r| (out.oid, r)))
}

/// Opens the store's own file of `oid` to pass to the client, or `None`
/// when the object is a referenced file (its bytes are re-verified on each
/// read, so they travel as data).
fn open_backing(store: &Store, oid: Oid) -> anyhow::Result<Option<std::fs::File>> {
    let info = store.info(oid)?.context("the object left the store")?;
    if info.referenced.is_some() {
        return Ok(None);
    }
    let path = store.backing_path(oid)?;
    Ok(Some(
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
    ))
}

/// `get`: starts (or joins) the fetch, announces the object, then streams
/// it or waits for reads, by mode.
/// Copies an object to a device's store, streaming progress (at most
/// every 1% of the object) to the client. The outer error is the client's
/// connection; the inner one is the answer.
async fn export(
    agent: &Agent,
    conn: &mut Conn,
    ticket: &str,
    path: &str,
) -> anyhow::Result<anyhow::Result<()>> {
    let fetched = async {
        let target = agent.fetches.fill_in(Target::parse(ticket, &[])?);
        let fetch = agent.fetches.start(&target, true).await?;
        fetch.complete().await?;
        anyhow::Ok(fetch.oid)
    };
    let oid = match fetched.await {
        Ok(oid) => oid,
        Err(e) => return Ok(Err(e)),
    };
    conn.pin(&agent.store, oid);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let store = agent.store.clone();
    let mount = PathBuf::from(path);
    let job = tokio::task::spawn_blocking(move || {
        let device = Device::create(&mount)
            .with_context(|| format!("making a DOT store on {}", mount.display()))?;
        let mut sent = 0u64;
        device
            .export(&store, oid, |done, total| {
                if done == total || done - sent >= (total / 100).max(1 << 20) {
                    sent = done;
                    let _ = tx.send((done, total));
                }
            })
            .with_context(|| format!("exporting {oid} to {}", mount.display()))
    });
    while let Some((done, total)) = rx.recv().await {
        api::write_json(&mut conn.stream, &Response::Progress { done, total }).await?;
    }
    let size = job.await?;
    if let Ok(size) = &size {
        tracing::info!(%oid, size, device = path, "exported");
    }
    Ok(size.map(|_| ()))
}

async fn get(
    agent: &Agent,
    conn: &mut Conn,
    ticket: &str,
    hints: &[String],
    mode: GetMode,
) -> anyhow::Result<()> {
    let started = match Target::parse(ticket, hints).map(|t| agent.fetches.fill_in(t)) {
        Ok(target) => agent
            .fetches
            .start_counted(&target, mode != GetMode::Random)
            .await
            .map(|f| (target, f)),
        Err(e) => Err(e),
    };
    let (target, (fetch, peers_before)) = match started {
        Ok(x) => x,
        Err(e) => {
            api::write_json(&mut conn.stream, &error(format!("{e:#}"))).await?;
            return Ok(());
        }
    };
    let oid = fetch.oid;
    conn.pin(&agent.store, oid);
    let store = agent.store.clone();
    let file = match tokio::task::spawn_blocking(move || open_backing(&store, oid)).await? {
        Ok(f) => f,
        Err(e) => {
            api::write_json(&mut conn.stream, &error(format!("{e:#}"))).await?;
            return Ok(());
        }
    };
    api::write_json(
        &mut conn.stream,
        &Response::Object {
            oid: oid.to_string(),
            size: fetch.size,
            via_fd: file.is_some(),
        },
    )
    .await?;
    if let Some(f) = &file {
        send_fd(&conn.stream, f).await?;
    }
    let open = OpenGet {
        trusted: fetch.trusts(&target),
        target,
        via_fd: file.is_some(),
        fetch,
    };
    if mode == GetMode::Random {
        conn.get = Some(open);
        return Ok(());
    }
    let streamed = stream_object(agent, &mut conn.stream, &open, mode).await?;
    let resp = match streamed {
        Ok(()) => {
            // What this get waited for; the rest was here when it came.
            let from_peers = open
                .fetch
                .from_peers
                .load(Ordering::Relaxed)
                .saturating_sub(peers_before)
                .min(open.fetch.size);
            let from_devices = open
                .fetch
                .from_devices
                .load(Ordering::Relaxed)
                .min(open.fetch.size - from_peers);
            Response::End {
                from_peers,
                local: open.fetch.size - from_peers - from_devices,
                from_devices,
            }
        }
        Err(e) => error(format!("{e:#}")),
    };
    api::write_json(&mut conn.stream, &resp).await?;
    Ok(())
}

/// What woke a waiting reader.
enum Wake {
    /// Chunk `index` arrived.
    Arrived(u32),
    /// Arrivals were missed, or the fetch's state changed: look again.
    Rescan,
}

/// Waits for the fetch to move on; errors if it failed.
async fn wait_for(
    open: &OpenGet,
    arrivals: &mut broadcast::Receiver<u32>,
    state: &mut tokio::sync::watch::Receiver<FetchState>,
) -> anyhow::Result<Wake> {
    let wake = tokio::select! {
        r = arrivals.recv() => match r {
            Ok(i) => Wake::Arrived(i),
            Err(broadcast::error::RecvError::Lagged(_)) => Wake::Rescan,
            Err(broadcast::error::RecvError::Closed) => {
                bail!("the fetch of {} ended", open.fetch.oid)
            }
        },
        r = state.changed() => {
            if r.is_err() {
                bail!("the fetch of {} ended", open.fetch.oid);
            }
            Wake::Rescan
        }
    };
    if let FetchState::Failed(why) = &*state.borrow() {
        bail!("{why}");
    }
    Ok(wake)
}

/// Whether chunk `index` may be handed out now.
fn readable(store: &Store, open: &OpenGet, index: u32) -> anyhow::Result<bool> {
    match open.fetch.state() {
        FetchState::Complete => Ok(true),
        FetchState::Failed(why) => bail!("{why}"),
        _ if open.trusted => Ok(store.has_chunk(open.fetch.oid, index)?),
        _ => Ok(false),
    }
}

/// Streams the object as `Ready` ranges (with their bytes, if not via the
/// descriptor). The outer error ends the connection; the inner one is the
/// get's failure.
async fn stream_object(
    agent: &Agent,
    stream: &mut UnixStream,
    open: &OpenGet,
    mode: GetMode,
) -> anyhow::Result<anyhow::Result<()>> {
    let store = &agent.store;
    let fetch = &open.fetch;
    let n = fetch.descs.len();
    let mut arrivals = fetch.arrivals();
    let mut state = fetch.watch_state();
    let mut sent = vec![false; n];
    let mut left = n;
    // Sequential: everything before `next` is sent.
    let mut next = 0usize;
    let mut rescan = true;
    let mut woke: Vec<u32> = Vec::new();
    while left > 0 {
        // The readable ranges not yet sent, neighbours coalesced.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let take = |i: usize, ranges: &mut Vec<(u64, u64)>| {
            let d = fetch.descs[i];
            match ranges.last_mut() {
                Some((off, len)) if *off + *len == d.offset => *len += u64::from(d.len),
                _ => ranges.push((d.offset, u64::from(d.len))),
            }
        };
        let mut candidates: Vec<usize> = Vec::new();
        if mode == GetMode::Sequential {
            while next < n {
                match readable(store, open, next as u32) {
                    Ok(true) => {
                        take(next, &mut ranges);
                        next += 1;
                        left -= 1;
                    }
                    Ok(_) => break,
                    Err(e) => return Ok(Err(e)),
                }
            }
        } else {
            if rescan {
                candidates.extend((0..n).filter(|&i| !sent[i]));
                rescan = false;
            }
            candidates.extend(woke.drain(..).map(|i| i as usize));
            while let Ok(i) = arrivals.try_recv() {
                candidates.push(i as usize);
            }
            for i in candidates {
                if i >= n || sent[i] {
                    continue;
                }
                match readable(store, open, i as u32) {
                    Ok(true) => {
                        sent[i] = true;
                        left -= 1;
                        take(i, &mut ranges);
                    }
                    Ok(false) => {}
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        for (offset, len) in ranges {
            send_range(store, stream, open, offset, len).await?;
        }
        if left == 0 {
            break;
        }
        match wait_for(open, &mut arrivals, &mut state).await {
            Ok(Wake::Arrived(i)) => woke.push(i),
            Ok(Wake::Rescan) => rescan = true,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(()))
}

/// Announces `offset..offset+len` as ready. When the client does not read
/// through a descriptor, the range goes as pieces of at most 1 MiB, each
/// announced and followed by its bytes, so neither side buffers more.
async fn send_range(
    store: &Store,
    stream: &mut UnixStream,
    open: &OpenGet,
    offset: u64,
    len: u64,
) -> anyhow::Result<()> {
    if open.via_fd {
        api::write_json(stream, &Response::Ready { offset, len }).await?;
        return Ok(());
    }
    const PIECE: u64 = 1 << 20;
    let mut at = offset;
    while at < offset + len {
        let want = PIECE.min(offset + len - at) as usize;
        let s = store.clone();
        let oid = open.fetch.oid;
        let data = tokio::task::spawn_blocking(move || s.read_at(oid, at, want)).await??;
        if data.is_empty() {
            bail!("{oid} ended early at {at}");
        }
        let len = data.len() as u64;
        api::write_json(stream, &Response::Ready { offset: at, len }).await?;
        api::write_data(stream, &data).await?;
        at += len;
    }
    Ok(())
}

/// `read`: asks for the chunks covering the range (ahead of anything
/// queued later), waits until they may be read, then answers.
async fn read_range(agent: &Agent, conn: &mut Conn, offset: u64, len: u64) -> anyhow::Result<()> {
    let Some(open) = &mut conn.get else {
        api::write_json(&mut conn.stream, &error("read without a get")).await?;
        return Ok(());
    };
    if len > MAX_READ {
        let resp = error(format!("read of {len} bytes (at most {MAX_READ})"));
        api::write_json(&mut conn.stream, &resp).await?;
        return Ok(());
    }
    let range = open.fetch.chunks_of(offset, len);
    if range.is_empty() {
        api::write_json(&mut conn.stream, &Response::Ready { offset, len: 0 }).await?;
        return Ok(());
    }
    if !open.fetch.want(range.clone().collect()) {
        // The fetch went idle: start another for the rest.
        match agent.fetches.start(&open.target, false).await {
            Ok(f) => {
                f.want(range.clone().collect());
                open.fetch = f;
            }
            Err(e) => {
                api::write_json(&mut conn.stream, &error(format!("{e:#}"))).await?;
                return Ok(());
            }
        }
    }
    for i in range {
        if let Err(e) = open
            .fetch
            .wait_readable(&agent.store, i, open.trusted)
            .await
        {
            api::write_json(&mut conn.stream, &error(format!("{e:#}"))).await?;
            return Ok(());
        }
    }
    let end = offset.saturating_add(len).min(open.fetch.size);
    let open = conn.get.as_ref().context("the get went away")?;
    send_range(&agent.store, &mut conn.stream, open, offset, end - offset).await
}

async fn status(agent: &Agent) -> anyhow::Result<Status> {
    let store = agent.store.clone();
    let (list, stored) = tokio::task::spawn_blocking(move || {
        Ok::<_, dot_store::Error>((store.list()?, store.stored_bytes()?))
    })
    .await??;
    let s = &agent.stats;
    let transfers = agent
        .fetches
        .in_flight()
        .iter()
        .map(|f| TransferStatus {
            oid: f.oid.to_string(),
            size: f.size,
            state: match f.state() {
                FetchState::Running => "running".into(),
                FetchState::Verifying => "verifying".into(),
                FetchState::Complete => "complete".into(),
                FetchState::Failed(why) => format!("failed: {why}"),
            },
            source: f.source(),
            from_peers: f.from_peers.load(Ordering::Relaxed),
            local: f.local.load(Ordering::Relaxed),
            from_devices: f.from_devices.load(Ordering::Relaxed),
            seconds: f.age_secs(),
            paths: f
                .paths()
                .into_iter()
                .map(|p| PathStatus {
                    name: p.name,
                    bytes: p.bytes,
                    chunks: p.chunks,
                    drops: p.drops,
                })
                .collect(),
        })
        .collect();
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
        transfers,
        clients: agent.clients.load(Ordering::Relaxed),
    })
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
