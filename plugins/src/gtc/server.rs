//! The serving half of the gtc plugin: answers peers from a [`Store`].
//!
//! Per connection, a reader task decodes frames and applies the
//! [`ServerSession`] rules, and a writer task answers requests in order,
//! sending each chunk from the store's mapping of the object's file with a
//! vectored write (no copy in user space). Requests cancelled before their
//! turn are skipped. A malformed frame or rule violation closes that
//! connection (logged), and nothing else.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dot_store::{Oid, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::access::Policy;
use super::framed::{FrameReader, FrameWriter};
use super::proto::{DescPage, ErrorCode, Frame, MAX_DESC_PAGE};
use super::session::{Action, ServerSession};

/// Counters of what a server sent, for `gtc status` and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Chunk frames sent.
    pub chunks_served: AtomicU64,
    /// Chunk bytes sent.
    pub bytes_sent: AtomicU64,
    /// Descriptor requests refused for a wrong token.
    pub refused: AtomicU64,
    /// Connections closed for a protocol violation.
    pub violations: AtomicU64,
}

enum Out {
    Frame(Frame),
    Chunk { req: u32, oid: Oid, index: u32 },
}

/// Accepts peers on `listener` forever, serving objects of `store`.
pub async fn serve(listener: TcpListener, store: Store, stats: Arc<ServerStats>) {
    serve_with(listener, store, stats, Policy::default()).await;
}

/// [`serve`] under `policy`: peers it opens the store to may fetch by OID
/// alone.
pub async fn serve_with(
    listener: TcpListener,
    store: Store,
    stats: Arc<ServerStats>,
    policy: Policy,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (store, stats) = (store.clone(), stats.clone());
                let open = policy.is_open_to(peer.ip());
                tokio::spawn(connection_task(stream, peer, store, stats, open));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection_task(
    stream: TcpStream,
    peer: SocketAddr,
    store: Store,
    stats: Arc<ServerStats>,
    open: bool,
) {
    match connection_impl(stream, &store, &stats, open).await {
        Ok(()) => tracing::debug!(%peer, "peer disconnected"),
        Err(reason) => tracing::warn!(%peer, %reason, "closing peer connection"),
    }
}

async fn connection_impl(
    stream: TcpStream,
    store: &Store,
    stats: &Arc<ServerStats>,
    open: bool,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
    let cancelled = Arc::new(Mutex::new(HashSet::new()));
    let writer = tokio::spawn(writer_task(
        wr,
        out_rx,
        store.clone(),
        stats.clone(),
        cancelled.clone(),
    ));
    let mut session = ServerSession::new();
    let mut frames = FrameReader::new(rd);
    let result = loop {
        let frame = match frames.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        match session.handle(frame) {
            Action::Reply(f) => {
                let _ = out_tx.send(Out::Frame(f));
            }
            Action::CheckToken {
                req,
                oid,
                token,
                first,
            } => {
                let reply =
                    describe(store, &mut session, stats, req, oid, token, first, open).await;
                let _ = out_tx.send(Out::Frame(reply));
            }
            Action::Serve { req, oid, index } => {
                let _ = out_tx.send(Out::Chunk { req, oid, index });
            }
            Action::Cancel { req } => {
                cancelled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(req);
            }
            Action::Close(reason) => break Err(reason),
        }
    };
    // Counted before the peer sees the connection close.
    if result.is_err() {
        stats.violations.fetch_add(1, Ordering::Relaxed);
    }
    drop(out_tx);
    let _ = writer.await;
    result
}

/// Checks the token (unless the connection is `open`: its peer may fetch
/// by OID alone) and answers one descriptor page.
#[allow(clippy::too_many_arguments)]
async fn describe(
    store: &Store,
    session: &mut ServerSession,
    stats: &ServerStats,
    req: u32,
    oid: Oid,
    token: dot_store::Token,
    first: u32,
    open: bool,
) -> Frame {
    let err = |code, message: &str| Frame::Error {
        req,
        code,
        message: message.to_owned(),
    };
    let s = store.clone();
    let looked = tokio::task::spawn_blocking(move || {
        let ok = if open {
            s.info(oid)?.map(|_| true)
        } else {
            s.check_token(oid, token)?
        };
        if ok != Some(true) {
            return Ok((ok, None));
        }
        let info = s.info(oid)?;
        let descs = s.descriptors(oid)?;
        Ok::<_, dot_store::Error>((ok, info.map(|i| (i.size, descs))))
    })
    .await;
    match looked {
        Ok(Ok((Some(true), Some((size, descs))))) => {
            if !session.authorize(oid) {
                return err(ErrorCode::Unavailable, "too many objects on one connection");
            }
            let total = descs.len() as u32;
            if first > total {
                return err(ErrorCode::BadRequest, "first descriptor past the end");
            }
            let end = (first as usize + MAX_DESC_PAGE as usize).min(descs.len());
            Frame::Desc(DescPage {
                req,
                size,
                total,
                first,
                descs: descs[first as usize..end].to_vec(),
            })
        }
        Ok(Ok((Some(_), _))) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            err(ErrorCode::Unauthorized, "wrong access token")
        }
        Ok(Ok((None, _))) => err(ErrorCode::NotFound, "no such object"),
        Ok(Err(e)) => {
            tracing::warn!(oid = %oid, error = %e, "describing an object failed");
            err(
                ErrorCode::Internal,
                "could not read the object's descriptors",
            )
        }
        Err(_) => err(ErrorCode::Internal, "internal error"),
    }
}

async fn writer_task(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    store: Store,
    stats: Arc<ServerStats>,
    cancelled: Arc<Mutex<HashSet<u32>>>,
) {
    let mut wr = FrameWriter::new(wr);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Answer everything queued, then flush once.
        while let Some(out) = next.take() {
            let result = match out {
                Out::Frame(f) => wr.frame(&f).await,
                Out::Chunk { req, oid, index } => {
                    if cancelled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&req)
                    {
                        Ok(())
                    } else {
                        write_chunk(&mut wr, &store, &stats, req, oid, index).await
                    }
                }
            };
            if result.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn write_chunk(
    wr: &mut FrameWriter<tokio::net::tcp::OwnedWriteHalf>,
    store: &Store,
    stats: &ServerStats,
    req: u32,
    oid: Oid,
    index: u32,
) -> std::io::Result<()> {
    match store.read_for_peer(oid, index) {
        Ok(data) => {
            let len = data.len() as u64;
            wr.chunk(req, index, data).await?;
            stats.chunks_served.fetch_add(1, Ordering::Relaxed);
            stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
        }
        Err(e) => {
            let code = match e {
                dot_store::Error::NoSuchChunk { .. } => ErrorCode::BadRequest,
                dot_store::Error::ChunkMissing { .. } => ErrorCode::Unavailable,
                dot_store::Error::UnknownObject(_) => ErrorCode::NotFound,
                _ => ErrorCode::Internal,
            };
            tracing::debug!(oid = %oid, index, error = %e, "cannot serve chunk");
            let error = Frame::Error {
                req,
                code,
                message: e.to_string(),
            };
            wr.frame(&error).await?;
        }
    }
    Ok(())
}
