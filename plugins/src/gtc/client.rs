//! The fetching half of the gtc plugin: a [`Transfer`] over one TCP
//! connection to another agent.
//!
//! One writer task sends request frames (batched into few writes); one
//! reader task decodes answers, checks each chunk against its descriptor
//! (the one hash a received chunk gets) and routes it to the sink of whoever
//! asked for that request id. Chunk requests are pipelined: up to `window`
//! are in flight, and each answer frees a slot for the next. A peer that
//! sends a chunk that does not verify has its connection closed and every
//! waiter told it is corrupt.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dot_store::{Access, Descriptor, Oid, PeerKey, Token, VerifiedChunk};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::desc_list::DescList;
use super::framed::{FrameReader, FrameWriter};
use super::link::{self, Reader, Writer};
use super::proto::{DescPage, Frame, VERSION};
use super::session::MAX_AUTHORIZED;
use crate::error::TransferError;
use crate::transfer::{BoxFuture, ChunkEvent, ChunkSink, Described, Transfer};

/// How long a source has to open the link (TLS handshake) and say `Hello`:
/// what accepts but never answers (or answers in another protocol) is no
/// gtc peer.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Chunk requests in flight per connection unless configured otherwise.
pub const DEFAULT_WINDOW: usize = 256;
/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a peer may take to answer for a page of descriptors.
pub const DESCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most chunks a described object may have (as for a key's
/// descriptor file): bounds what a peer can make the list cost.
pub const MAX_CHUNKS: u32 = 1 << 24;
/// Most chunk requests sent together (see `Inner::group`).
const REQUEST_GROUP: usize = 16;

enum Waiter {
    Desc(oneshot::Sender<Result<DescPage, TransferError>>),
    Chunk {
        oid: Oid,
        index: u32,
        desc: Descriptor,
        sink: ChunkSink,
        _slot: OwnedSemaphorePermit,
    },
}

struct Conn {
    out: mpsc::UnboundedSender<Frame>,
    waiters: Arc<Mutex<HashMap<u32, Waiter>>>,
    /// The reader ended (the peer closed, or broke the protocol): set under
    /// the waiters' lock, so no request waits on a connection that will
    /// never answer, and the next use opens another.
    dead: Arc<AtomicBool>,
    /// Objects whose token this connection presented.
    authorized: Mutex<HashSet<Oid>>,
    /// Objects this connection was asked to authorise, ever: a server
    /// holds at most [`MAX_AUTHORIZED`] per connection, so past
    /// [`RETIRE_AT`] the next request opens a new connection (this one
    /// serves its fetches in flight, then closes).
    admitted: AtomicUsize,
}

/// Objects authorised on a connection before the next ones go on a new
/// connection, leaving room for those being authorised at once.
const RETIRE_AT: usize = MAX_AUTHORIZED - 1024;

/// Tokens remembered per source, and objects authorised per connection,
/// beyond which both are forgotten wholesale.
const MAX_TOKENS: usize = 4096;
/// What is shown for an object when a ticket gave no token (a peer that is
/// open to this host answers anyway).
const NO_TOKEN: Access = Access {
    token: Token([0; 16]),
    via: None,
};

/// A gtc peer as a transfer source. Clones share one connection.
#[derive(Clone)]
pub struct GtcSource {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    bind: Option<IpAddr>,
    name: String,
    window: Arc<Semaphore>,
    /// Requests sent at once, at most: slots are taken in groups, so one
    /// write (and one wake-up of each side) carries several requests.
    group: usize,
    next_req: AtomicU32,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Each object's token, and its chunk count (asking for the page
    /// past the last descriptor authorises a connection for a few bytes).
    tokens: Mutex<HashMap<Oid, (Access, u32)>>,
    /// The peer key a TLS connection must prove; `None`: plain TCP.
    key: Option<PeerKey>,
}

impl GtcSource {
    /// A source at `addr` keeping up to `window` chunk requests in flight.
    /// Connects on first use, and again after the connection was lost.
    pub fn new(addr: SocketAddr, window: usize) -> GtcSource {
        GtcSource::bound(addr, None, window)
    }

    /// As [`GtcSource::new`], connecting from local address `bind` (one
    /// interface of a multi-homed host) when given.
    pub fn bound(addr: SocketAddr, bind: Option<IpAddr>, window: usize) -> GtcSource {
        let name = match bind {
            Some(ip) => format!("gtc://{addr} from {ip}"),
            None => format!("gtc://{addr}"),
        };
        GtcSource {
            inner: Arc::new(Inner {
                addr,
                bind,
                name,
                window: Arc::new(Semaphore::new(window.max(1))),
                group: window.clamp(1, REQUEST_GROUP),
                next_req: AtomicU32::new(1),
                conn: tokio::sync::Mutex::new(None),
                tokens: Mutex::new(HashMap::new()),
                key: None,
            }),
        }
    }

    /// This source speaking TLS and accepting only a server that proves
    /// `key` (the key a ticket names); `None` keeps plain TCP. Call before
    /// first use.
    #[must_use]
    pub fn secured(mut self, key: Option<PeerKey>) -> GtcSource {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.key = key;
        }
        self
    }
}

impl GtcSource {
    /// Gives this source `oid`'s token, and its chunk count, without
    /// asking for descriptors: each connection presents the token before
    /// asking for chunks (one more path to an object another source
    /// described).
    pub fn grant(&self, oid: Oid, access: Option<Access>, chunks: u32) {
        self.inner.remember(oid, access.unwrap_or(NO_TOKEN), chunks);
    }
}

impl Inner {
    fn err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connection {
            peer: self.name.clone(),
            message: message.into(),
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let Some(ip) = self.bind else {
            return TcpStream::connect(self.addr).await;
        };
        let socket = if ip.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(ip, 0))?;
        socket.connect(self.addr).await
    }

    async fn conn(&self) -> Result<Arc<Conn>, TransferError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| {
            !c.out.is_closed()
                && !c.dead.load(Ordering::Acquire)
                && c.admitted.load(Ordering::Relaxed) < RETIRE_AT
        }) {
            return Ok(c.clone());
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.err(format!("connect: {e}"))),
            Err(_) => {
                return Err(self.err(format!(
                    "connect: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        let link::Opened {
            rd,
            mut wr,
            low_water_fd,
        } = link::connect(stream, self.key, HELLO_TIMEOUT)
            .await
            .map_err(|e| self.err(e))?;
        let mut hello = Vec::new();
        Frame::Hello { version: VERSION }.encode(&mut hello);
        wr.write_all(&hello)
            .await
            .map_err(|e| self.err(format!("send: {e}")))?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let waiters = Arc::new(Mutex::new(HashMap::new()));
        let dead = Arc::new(AtomicBool::new(false));
        tokio::spawn(write_task(wr, out_rx));
        tokio::spawn(read_task(
            rd,
            low_water_fd,
            (waiters.clone(), dead.clone()),
            self.name.clone(),
        ));
        let conn = Arc::new(Conn {
            out: out_tx,
            waiters,
            dead,
            authorized: Mutex::new(HashSet::new()),
            admitted: AtomicUsize::new(0),
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn req_id(&self) -> u32 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks `conn` for descriptor page `first` of `oid`, which also
    /// authorises the object's chunks on that connection.
    async fn desc_page(
        &self,
        conn: &Conn,
        oid: Oid,
        access: Access,
        first: u32,
    ) -> Result<DescPage, TransferError> {
        let req = self.req_id();
        let (tx, rx) = oneshot::channel();
        if !conn
            .authorized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&oid)
        {
            conn.admitted.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut waiters = conn.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if conn.dead.load(Ordering::Acquire) {
                return Err(self.err("connection closed"));
            }
            waiters.insert(req, Waiter::Desc(tx));
        }
        conn.out
            .send(Frame::DescReq {
                req,
                oid,
                token: access.token,
                first,
                via: access.via,
            })
            .map_err(|_| self.err("connection closed"))?;
        let page = match tokio::time::timeout(DESCRIBE_TIMEOUT, rx).await {
            Ok(answer) => answer.map_err(|_| self.err("connection closed"))??,
            Err(_) => {
                conn.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&req);
                return Err(self.err(format!(
                    "no descriptors within {} s (not a gtc peer, or a stalled one)",
                    DESCRIBE_TIMEOUT.as_secs()
                )));
            }
        };
        let mut authorized = conn.authorized.lock().unwrap_or_else(|p| p.into_inner());
        if authorized.len() >= MAX_TOKENS {
            authorized.clear();
        }
        authorized.insert(oid);
        Ok(page)
    }

    /// Remembers `oid`'s token for the connections to come.
    fn remember(&self, oid: Oid, access: Access, chunks: u32) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_TOKENS {
            tokens.clear();
        }
        tokens.insert(oid, (access, chunks));
    }

    /// A connection on which `oid`'s chunks may be asked for: a new
    /// connection first presents the token this source was given.
    async fn conn_for(&self, oid: Oid) -> Result<Arc<Conn>, TransferError> {
        let conn = self.conn().await?;
        let known = conn
            .authorized
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&oid);
        let token = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&oid)
            .copied();
        if let (false, Some((access, chunks))) = (known, token) {
            self.desc_page(&conn, oid, access, chunks).await?;
        }
        Ok(conn)
    }

    async fn describe(&self, oid: Oid, access: Option<Access>) -> Result<Described, TransferError> {
        let conn = self.conn().await?;
        let access = access.unwrap_or(NO_TOKEN);
        let mut list = DescList::new();
        loop {
            let page = self
                .desc_page(&conn, oid, access, list.next_first())
                .await?;
            // A token the peer accepted, for the connections to come.
            self.remember(oid, access, page.total);
            let whole = list
                .add(page)
                .map_err(|reason| TransferError::BadDescriptors {
                    peer: self.name.clone(),
                    reason: reason.into(),
                })?;
            if whole {
                break;
            }
        }
        let (size, descriptors) =
            list.finish()
                .map_err(|reason| TransferError::BadDescriptors {
                    peer: self.name.clone(),
                    reason,
                })?;
        Ok(Described { size, descriptors })
    }

    /// [`Transfer::confirm`]: one descriptor request for the page past the
    /// last chunk, which the peer answers empty (with the size and count)
    /// when the token opens the object.
    async fn confirm(
        &self,
        oid: Oid,
        access: Option<Access>,
        size: u64,
        count: u32,
    ) -> Result<(), TransferError> {
        let conn = self.conn().await?;
        let access = access.unwrap_or(NO_TOKEN);
        let page = self.desc_page(&conn, oid, access, count).await?;
        if page.size != size || page.total != count || !page.descs.is_empty() {
            return Err(TransferError::BadDescriptors {
                peer: self.name.clone(),
                reason: format!(
                    "it holds {} bytes in {} chunks where the list held says {size} in {count}",
                    page.size, page.total
                ),
            });
        }
        self.remember(oid, access, page.total);
        Ok(())
    }
}

impl Transfer for GtcSource {
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn get_descriptors(
        &self,
        oid: Oid,
        access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        Box::pin(self.inner.describe(oid, access))
    }

    fn confirm(
        &self,
        oid: Oid,
        access: Option<Access>,
        size: u64,
        count: u32,
    ) -> BoxFuture<'_, Result<(), TransferError>> {
        Box::pin(self.inner.confirm(oid, access, size, count))
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        let inner = self.inner.clone();
        let first_req = inner
            .next_req
            .fetch_add(chunks.len() as u32, Ordering::Relaxed);
        tokio::spawn(async move {
            let conn = match inner.conn_for(oid).await {
                Ok(c) => c,
                Err(e) => {
                    sink.send(ChunkEvent::SourceFailed(e)).await;
                    return;
                }
            };
            let mut chunks = chunks.into_iter().enumerate().peekable();
            while chunks.peek().is_some() {
                let want = chunks.len().min(inner.group) as u32;
                let Ok(mut slots) = inner.window.clone().acquire_many_owned(want).await else {
                    return;
                };
                let mut waiters = conn.waiters.lock().unwrap_or_else(|p| p.into_inner());
                if conn.dead.load(Ordering::Acquire) {
                    drop(waiters);
                    sink.send(ChunkEvent::SourceFailed(inner.err("connection closed")))
                        .await;
                    return;
                }
                let mut frames = Vec::with_capacity(want as usize);
                for (i, (index, desc)) in chunks.by_ref().take(want as usize) {
                    let Some(slot) = slots.split(1) else {
                        break;
                    };
                    let req = first_req.wrapping_add(i as u32);
                    waiters.insert(
                        req,
                        Waiter::Chunk {
                            oid,
                            index,
                            desc,
                            sink: sink.clone(),
                            _slot: slot,
                        },
                    );
                    frames.push(Frame::ChunkReq { req, oid, index });
                }
                drop(waiters);
                for frame in frames {
                    if conn.out.send(frame).is_err() {
                        return;
                    }
                }
            }
        });
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        let Some(conn) = self.inner.conn.try_lock().ok().and_then(|c| c.clone()) else {
            return;
        };
        let mut waiters = conn.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let reqs: Vec<u32> = waiters
            .iter()
            .filter(|(_, w)| matches!(w, Waiter::Chunk { oid: o, index, .. } if *o == oid && indexes.contains(index)))
            .map(|(r, _)| *r)
            .collect();
        for req in reqs {
            waiters.remove(&req);
            let _ = conn.out.send(Frame::Cancel { req });
        }
    }
}

/// Sends the requests of one connection. When every handle on the
/// connection is gone (its source dropped, no request in flight), says
/// goodbye (close_notify, FIN): the peer closes, and the reader ends.
async fn write_task(wr: Writer, mut rx: mpsc::UnboundedReceiver<Frame>) {
    let mut wr = FrameWriter::new(wr);
    if send_frames(&mut wr, &mut rx).await.is_ok() {
        let _ = tokio::time::timeout(HELLO_TIMEOUT, wr.shutdown()).await;
    }
}

async fn send_frames(
    wr: &mut FrameWriter<Writer>,
    rx: &mut mpsc::UnboundedReceiver<Frame>,
) -> std::io::Result<()> {
    while let Some(f) = rx.recv().await {
        wr.frame(&f).await?;
        while let Ok(f) = rx.try_recv() {
            wr.frame(&f).await?;
        }
        wr.flush().await?;
    }
    Ok(())
}

async fn read_task(
    rd: Reader,
    fd: Option<std::os::fd::RawFd>,
    (waiters, dead): (Arc<Mutex<HashMap<u32, Waiter>>>, Arc<AtomicBool>),
    peer: String,
) {
    let frames = match fd {
        Some(fd) => FrameReader::with_low_water(rd, fd),
        None => FrameReader::new(rd),
    };
    let failure = read_loop(frames, &waiters, &peer).await;
    tracing::debug!(%peer, error = %failure, "peer connection ended");
    // Tell everyone still waiting.
    let pending: Vec<Waiter> = {
        let mut waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
        dead.store(true, Ordering::Release);
        waiters.drain().map(|(_, w)| w).collect()
    };
    for w in pending {
        match w {
            Waiter::Desc(tx) => {
                let _ = tx.send(Err(failure.clone()));
            }
            Waiter::Chunk { sink, .. } => {
                sink.try_send(ChunkEvent::SourceFailed(failure.clone()));
            }
        }
    }
}

async fn read_loop(
    mut frames: FrameReader<Reader>,
    waiters: &Mutex<HashMap<u32, Waiter>>,
    peer: &str,
) -> TransferError {
    let conn_err = |message: String| TransferError::Connection {
        peer: peer.to_owned(),
        message,
    };
    let mut greeted = false;
    loop {
        let next = if greeted {
            frames.next().await
        } else {
            match tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await {
                Ok(r) => r,
                Err(_) => {
                    return conn_err(format!(
                        "no answer: no gtc Hello within {} s (not a gtc peer?)",
                        HELLO_TIMEOUT.as_secs()
                    ));
                }
            }
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) if !greeted => {
                return conn_err("not a gtc peer: it closed the connection without a Hello".into());
            }
            Ok(None) => return conn_err("connection closed".into()),
            Err(super::framed::ReadError::Proto(_)) if !greeted => {
                return conn_err("not a gtc peer: what it sent is not a gtc Hello".into());
            }
            Err(super::framed::ReadError::Proto(source)) => {
                return TransferError::Protocol {
                    peer: peer.to_owned(),
                    source,
                };
            }
            Err(e) => return conn_err(e.to_string()),
        };
        if !greeted {
            match frame {
                Frame::Hello { version } if version == VERSION => {
                    greeted = true;
                    continue;
                }
                Frame::Hello { version } => {
                    return conn_err(format!(
                        "the peer speaks protocol version {version}, this agent {VERSION}"
                    ));
                }
                Frame::Error { message, .. } => {
                    return conn_err(format!("the peer refused the connection: {message}"));
                }
                _ => return conn_err("peer did not answer Hello".into()),
            }
        }
        let req = match &frame {
            Frame::Desc(p) => p.req,
            Frame::Chunk { req, .. } | Frame::Error { req, .. } => *req,
            _ => return conn_err("peer sent a request frame".into()),
        };
        let Some(waiter) = waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req)
        else {
            continue; // cancelled or unknown: drop it
        };
        match (waiter, frame) {
            (Waiter::Desc(tx), Frame::Desc(page)) => {
                let _ = tx.send(Ok(page));
            }
            (Waiter::Desc(tx), Frame::Error { code, message, .. }) => {
                let _ = tx.send(Err(TransferError::Refused {
                    peer: peer.to_owned(),
                    code,
                    message,
                }));
            }
            (
                Waiter::Chunk {
                    index, desc, sink, ..
                },
                Frame::Chunk {
                    index: got, data, ..
                },
            ) => {
                if got != index {
                    return conn_err(format!(
                        "answered chunk {got} for a request of chunk {index}"
                    ));
                }
                match VerifiedChunk::verify(index, desc, data) {
                    Ok(chunk) => {
                        sink.send(ChunkEvent::Chunk(chunk)).await;
                    }
                    Err(source) => {
                        let error = TransferError::Corrupt {
                            peer: peer.to_owned(),
                            source,
                        };
                        sink.try_send(ChunkEvent::SourceFailed(error.clone()));
                        return error;
                    }
                }
            }
            (Waiter::Chunk { index, sink, .. }, Frame::Error { code, message, .. }) => {
                let error = TransferError::Refused {
                    peer: peer.to_owned(),
                    code,
                    message,
                };
                sink.send(ChunkEvent::Failed { index, error }).await;
            }
            _ => return conn_err("answer does not match its request".into()),
        }
    }
}
