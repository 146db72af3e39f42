//! Peer doubles: processes-in-a-thread that speak the gtc peer protocol
//! from their own store, and misbehave on purpose: corrupt one chunk, or
//! send each chunk slowly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dot_plugins::gtc::proto::{self, DescPage, ErrorCode, Frame};
use dot_store::{Oid, Store, StoreOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Counters, PeerCounters};

/// How a double misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Flip a bit of this chunk index of every object.
    pub corrupt: Option<u32>,
    /// Wait this long before sending each chunk.
    pub delay: Duration,
}

/// A gtc peer double serving the objects it was given. Stops on drop.
pub struct PeerDouble {
    /// Its address.
    pub addr: SocketAddr,
    /// What it sent.
    pub counters: Counters,
    /// The OIDs of the objects it holds, in the order given.
    pub oids: Vec<Oid>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl PeerDouble {
    /// Puts `objects` into a fresh store (the agent's default chunker, so
    /// descriptors match an agent's) and serves them with `behaviour`.
    /// Any token is accepted.
    pub fn start(objects: &[&[u8]], behaviour: Behaviour) -> PeerDouble {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            StoreOptions {
                durable: false,
                ..StoreOptions::default()
            },
        )
        .expect("double's store");
        let oids = objects
            .iter()
            .map(|o| store.put_reader(&mut &o[..]).expect("put").oid)
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let counters = Arc::new(PeerCounters::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let c = counters.clone();
        rt.spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, store.clone(), behaviour, c.clone()));
            }
        });
        PeerDouble {
            addr,
            counters,
            oids,
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// Its hint, `gtc://ADDR`.
    pub fn hint(&self) -> String {
        format!("gtc://{}", self.addr)
    }
}

impl Drop for PeerDouble {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(mut s: tokio::net::TcpStream, store: Store, b: Behaviour, counters: Counters) {
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 64 << 10];
    loop {
        while let Ok(Some((frame, used))) = proto::decode(&buf) {
            buf.drain(..used);
            let reply = match frame {
                Frame::Hello { version } => Frame::Hello { version },
                Frame::DescReq {
                    req, oid, first, ..
                } => match store.descriptors(oid) {
                    Ok(descs) => {
                        let first = first.min(descs.len() as u32);
                        let page: Vec<_> = descs
                            .iter()
                            .skip(first as usize)
                            .take(proto::MAX_DESC_PAGE as usize)
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
                    match store.read_chunk(oid, index) {
                        Ok(mut data) => {
                            if b.corrupt == Some(index) {
                                if let Some(x) = data.first_mut() {
                                    *x ^= 1;
                                }
                            }
                            counters.chunks.fetch_add(1, Ordering::Relaxed);
                            counters
                                .bytes
                                .fetch_add(data.len() as u64, Ordering::Relaxed);
                            Frame::Chunk { req, index, data }
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
            let mut out = Vec::new();
            reply.encode(&mut out);
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}
