//! One peer connection: a reader task applying the [`ServerSession`] rules
//! and a writer task answering requests in order.
//!
//! Bounds: at most [`MAX_QUEUED`] requests wait or are being answered (the
//! reader stops reading while the queue is full, so a peer that does not
//! take its answers stops being read); at most [`MAX_CANCELLED`] cancels
//! are remembered; `Hello` must come within the hello deadline, a
//! connection with nothing asked may stay silent only the idle deadline,
//! every write must finish within the write deadline. Chunk bytes are
//! resolved, and their pages brought in, on the blocking pool, a batch at
//! a time, so a read from disk never stalls the async workers. A
//! malformed frame, a rule violation or a missed deadline closes that
//! connection (logged), and nothing else.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dot_store::{Bytes, Oid, Store};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::limits::Slot;
use super::{MAX_CANCELLED, MAX_QUEUED, ServeOptions, ServerStats};
use crate::gtc::framed::{FrameReader, FrameWriter};
use crate::gtc::link::{self, Writer};
use crate::gtc::proto::{DescPage, ErrorCode, Frame, MAX_DESC_PAGE};
use crate::gtc::session::{Action, ServerSession};

/// Chunk reads resolved per trip to the blocking pool.
const READ_BATCH: usize = 32;

enum Out {
    Frame(Frame),
    Chunk { req: u32, oid: Oid, index: u32 },
}

/// The one answer to "no such object" and "wrong token": a probe cannot
/// tell which objects the agent holds.
const REFUSED: &str = "no such object here, or a wrong access token";
/// What a peer hears when the file an object was put from changed.
const FILE_CHANGED: &str =
    "the sender's file of this object changed, moved or was deleted since it was put";

/// Serves one connection until it ends; logs why.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    store: Store,
    stats: Arc<ServerStats>,
    opts: Arc<ServeOptions>,
    slot: Slot,
    open: bool,
) {
    match serve(stream, &store, &stats, &opts, &slot, open).await {
        Ok(()) => tracing::debug!(%peer, "peer disconnected"),
        Err(reason) => tracing::warn!(%peer, %reason, "closing peer connection"),
    }
}

async fn serve(
    stream: TcpStream,
    store: &Store,
    stats: &Arc<ServerStats>,
    opts: &ServeOptions,
    slot: &Slot,
    open: bool,
) -> Result<(), String> {
    let (rd, wr) = link::accept(stream, opts.tls.as_ref(), opts.plain, opts.hello_timeout).await?;
    let (out_tx, out_rx) = mpsc::channel::<Out>(MAX_QUEUED);
    let cancelled = Arc::new(Mutex::new(HashSet::new()));
    let mut writer = tokio::spawn(writer_task(
        wr,
        out_rx,
        store.clone(),
        stats.clone(),
        cancelled.clone(),
        slot.shared.clone(),
        opts.write_timeout,
    ));
    let mut session = ServerSession::new();
    let mut frames = FrameReader::new(rd);
    let mut greeted = false;
    let result = loop {
        let deadline = if !greeted {
            opts.hello_timeout
        } else if slot.shared.busy.load(Ordering::Relaxed) == 0 {
            opts.idle_timeout
        } else {
            // Answers are going out: the peer may be silent meanwhile; the
            // writer's deadline bounds a peer that does not read them.
            Duration::MAX
        };
        let next = tokio::select! {
            next = tokio::time::timeout(deadline, frames.next()) => next,
            () = slot.shared.close.notified() => break Err("shed to make room".into()),
            _ = &mut writer => break Err("a write missed its deadline or failed".into()),
        };
        let frame = match next {
            Err(_) if !greeted => break Err("no Hello in time".into()),
            Err(_) => break Ok(()),
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e.to_string()),
        };
        greeted = true;
        slot.touch();
        let out = match session.handle(frame) {
            Action::Reply(f) => Out::Frame(f),
            Action::CheckToken {
                req,
                oid,
                token,
                first,
                via,
            } => {
                let asked = Asked {
                    req,
                    oid,
                    token,
                    first,
                    via,
                };
                Out::Frame(describe(store, &mut session, stats, asked, open).await)
            }
            Action::Serve { req, oid, index } => Out::Chunk { req, oid, index },
            Action::Cancel { req } => {
                let mut c = cancelled.lock().unwrap_or_else(|p| p.into_inner());
                if c.len() >= MAX_CANCELLED {
                    c.clear();
                }
                c.insert(req);
                continue;
            }
            Action::Close(reason) => break Err(reason),
        };
        slot.shared.busy.fetch_add(1, Ordering::Relaxed);
        // Waits while the queue is full: the peer is not taking answers,
        // so it is not read either.
        if out_tx.send(out).await.is_err() {
            break Err("a write missed its deadline or failed".into());
        }
    };
    // Counted before the peer sees the connection close.
    if result.is_err() {
        stats.violations.fetch_add(1, Ordering::Relaxed);
    }
    drop(out_tx);
    if !writer.is_finished() {
        let _ = writer.await;
    }
    result
}

/// A descriptor request, as a peer sent it.
struct Asked {
    req: u32,
    oid: Oid,
    token: dot_store::Token,
    first: u32,
    via: Option<Oid>,
}

/// Checks the token (unless the connection is `open`: its peer may fetch
/// by OID alone) and answers one descriptor page. A tree's token opens the
/// tree's files: with `via`, the token must be the tree's and the tree,
/// complete here, must list the object.
async fn describe(
    store: &Store,
    session: &mut ServerSession,
    stats: &ServerStats,
    asked: Asked,
    open: bool,
) -> Frame {
    let Asked {
        req,
        oid,
        token,
        first,
        via,
    } = asked;
    let err = |code, message: &str| Frame::Error {
        req,
        code,
        message: message.to_owned(),
    };
    let s = store.clone();
    let looked = tokio::task::spawn_blocking(move || {
        let ok = if open {
            s.info(oid)?.map(|_| true)
        } else if let Some(tree) = via {
            match s.check_token(tree, token)? {
                Some(true) if s.tree_holds(tree, oid)? => s.info(oid)?.map(|_| true),
                _ => None,
            }
        } else {
            s.check_token(oid, token)?
        };
        if ok != Some(true) {
            return Ok(None);
        }
        let info = s.info(oid)?;
        let descs = s.descriptors(oid)?;
        Ok::<_, dot_store::Error>(info.map(|i| (i.size, descs)))
    })
    .await;
    match looked {
        Ok(Ok(Some((size, descs)))) => {
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
        Ok(Ok(None)) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            err(ErrorCode::Unauthorized, REFUSED)
        }
        Ok(Err(dot_store::Error::FileChanged { .. })) => err(ErrorCode::Unavailable, FILE_CHANGED),
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
    wr: Writer,
    mut rx: mpsc::Receiver<Out>,
    store: Store,
    stats: Arc<ServerStats>,
    cancelled: Arc<Mutex<HashSet<u32>>>,
    shared: Arc<super::limits::Shared>,
    write_timeout: Duration,
) {
    let mut wr = FrameWriter::new(wr);
    let mut batch: Vec<Out> = Vec::with_capacity(READ_BATCH);
    if rx.recv_many(&mut batch, READ_BATCH).await == 0 {
        let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
        return;
    }
    let mut resolving = resolve(&store, &cancelled, std::mem::take(&mut batch));
    loop {
        let answers = resolving.await;
        // The next batch is read from disk while this one goes out.
        while batch.len() < READ_BATCH {
            match rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        let next =
            (!batch.is_empty()).then(|| resolve(&store, &cancelled, std::mem::take(&mut batch)));
        for answer in answers {
            let written = match answer {
                Answer::Frame(f) => tokio::time::timeout(write_timeout, wr.frame(&f)).await,
                Answer::Chunk { req, index, data } => {
                    let len = data.len() as u64;
                    let w = tokio::time::timeout(write_timeout, wr.chunk(req, index, data)).await;
                    if matches!(w, Ok(Ok(()))) {
                        stats.chunks_served.fetch_add(1, Ordering::Relaxed);
                        stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                    }
                    w
                }
                Answer::Skip => Ok(Ok(())),
            };
            shared.busy.fetch_sub(1, Ordering::Relaxed);
            if !matches!(written, Ok(Ok(()))) {
                return;
            }
        }
        resolving = match next {
            Some(next) => next,
            None => {
                if rx.is_empty()
                    && !matches!(
                        tokio::time::timeout(write_timeout, wr.flush()).await,
                        Ok(Ok(()))
                    )
                {
                    return;
                }
                if rx.recv_many(&mut batch, READ_BATCH).await == 0 {
                    break;
                }
                resolve(&store, &cancelled, std::mem::take(&mut batch))
            }
        };
    }
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
}

/// What goes out for one queued request.
enum Answer {
    Frame(Frame),
    Chunk {
        req: u32,
        index: u32,
        data: Bytes,
    },
    /// Cancelled before its turn.
    Skip,
}

/// Resolves a batch of queued requests on the blocking pool, starting
/// now: chunk bytes read (a view of the store's mapping, its pages brought
/// into memory) or the error frame to send instead.
fn resolve(
    store: &Store,
    cancelled: &Arc<Mutex<HashSet<u32>>>,
    batch: Vec<Out>,
) -> impl Future<Output = Vec<Answer>> + use<> {
    let (store, cancelled) = (store.clone(), cancelled.clone());
    let n = batch.len();
    let reading = tokio::task::spawn_blocking(move || {
        batch
            .into_iter()
            .map(|out| match out {
                Out::Frame(f) => Answer::Frame(f),
                Out::Chunk { req, oid, index } => {
                    if cancelled
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&req)
                    {
                        return Answer::Skip;
                    }
                    match store.read_for_peer(oid, index) {
                        Ok(data) => {
                            prefault(&data);
                            Answer::Chunk { req, index, data }
                        }
                        Err(e) => Answer::Frame(chunk_error(req, oid, index, e)),
                    }
                }
            })
            .collect()
    });
    async move {
        reading
            .await
            .unwrap_or_else(|_| (0..n).map(|_| Answer::Skip).collect())
    }
}

/// Touches one byte per page of `data`, so a view of a mapped file is in
/// memory before the write that sends it (which would otherwise fault the
/// pages in from disk on an async worker).
fn prefault(data: &[u8]) {
    let mut sum = 0u8;
    for b in data.iter().step_by(4096) {
        sum = sum.wrapping_add(*b);
    }
    std::hint::black_box(sum);
}

/// The error frame for a chunk that cannot be served.
fn chunk_error(req: u32, oid: Oid, index: u32, e: dot_store::Error) -> Frame {
    let (code, message) = match e {
        dot_store::Error::NoSuchChunk { .. } => (ErrorCode::BadRequest, e.to_string()),
        dot_store::Error::ChunkMissing { .. } => (ErrorCode::Unavailable, e.to_string()),
        // As for descriptors: not held and not authorised look the same.
        dot_store::Error::UnknownObject(_) => (ErrorCode::Unauthorized, REFUSED.to_owned()),
        // Said without the sender's path.
        dot_store::Error::FileChanged { .. } => (ErrorCode::Unavailable, FILE_CHANGED.to_owned()),
        _ => (ErrorCode::Internal, e.to_string()),
    };
    tracing::debug!(oid = %oid, index, error = %message, "cannot serve chunk");
    Frame::Error { req, code, message }
}
