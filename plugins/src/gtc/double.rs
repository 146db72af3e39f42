//! A gtc peer that misbehaves on purpose, for tests: it serves a store's
//! objects to anyone (any token), and can corrupt one chunk index of every
//! object or wait before each chunk. Used by this crate's tests and by the
//! end-to-end tests; agents never start one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dot_store::Store;
use tokio::net::{TcpListener, TcpStream};

use super::framed::{FrameReader, FrameWriter};
use super::link;
use super::proto::{DescPage, ErrorCode, Frame, MAX_DESC_PAGE};

/// How the double misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Flip a bit of this chunk index of every object.
    pub corrupt: Option<u32>,
    /// Wait this long before sending each chunk.
    pub delay: Duration,
    /// Answer for the first OID with the object of the second: a forger
    /// serving its own bytes (and their true descriptors) under another
    /// object's name.
    pub alias: Option<(dot_store::Oid, dot_store::Oid)>,
}

/// What the double sent.
#[derive(Debug, Default)]
pub struct Sent {
    /// Chunks sent.
    pub chunks: AtomicU64,
    /// Chunk bytes sent.
    pub bytes: AtomicU64,
}

impl Sent {
    /// Chunks sent so far.
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }
}

/// Serves every connection to `listener` from `store` with `behaviour`,
/// counting into `sent`, until the runtime stops: over TLS with `tls` (a
/// key of its own, as a mirror has), and over plain TCP.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    behaviour: Behaviour,
    sent: Arc<Sent>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    while let Ok((s, _)) = listener.accept().await {
        tokio::spawn(connection(
            s,
            store.clone(),
            behaviour,
            sent.clone(),
            tls.clone(),
        ));
    }
}

async fn connection(
    s: TcpStream,
    store: Store,
    b: Behaviour,
    sent: Arc<Sent>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let Ok((rd, wr)) = link::accept(s, tls.as_ref(), true, Duration::from_secs(10)).await else {
        return;
    };
    let (mut frames, mut out) = (FrameReader::new(rd), FrameWriter::new(wr));
    let real = |oid| match b.alias {
        Some((from, to)) if oid == from => to,
        _ => oid,
    };
    while let Ok(Some(frame)) = frames.next().await {
        let reply = match frame {
            Frame::Hello { version } => Frame::Hello { version },
            Frame::DescReq {
                req, oid, first, ..
            } => match store.descriptors(real(oid)) {
                Ok(descs) => {
                    let first = first.min(descs.len() as u32);
                    let page: Vec<_> = descs
                        .iter()
                        .skip(first as usize)
                        .take(MAX_DESC_PAGE as usize)
                        .copied()
                        .collect();
                    Frame::Desc(DescPage {
                        req,
                        size: descs.last().map_or(0, |d| d.end()),
                        total: descs.len() as u32,
                        first,
                        descs: page,
                    })
                }
                Err(e) => Frame::Error {
                    req,
                    code: ErrorCode::NotFound,
                    message: e.to_string(),
                },
            },
            Frame::ChunkReq { req, oid, index } => {
                if !b.delay.is_zero() {
                    tokio::time::sleep(b.delay).await;
                }
                match store.read_chunk(real(oid), index) {
                    Ok(mut data) => {
                        if b.corrupt == Some(index)
                            && let Some(x) = data.first_mut()
                        {
                            *x ^= 1;
                        }
                        sent.chunks.fetch_add(1, Ordering::Relaxed);
                        sent.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        Frame::Chunk {
                            req,
                            index,
                            data: data.into(),
                        }
                    }
                    Err(e) => Frame::Error {
                        req,
                        code: ErrorCode::Unavailable,
                        message: e.to_string(),
                    },
                }
            }
            Frame::Cancel { .. } => continue,
            _ => return,
        };
        if out.frame(&reply).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}
