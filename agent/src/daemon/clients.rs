//! One task per local-API connection: the objects it holds (released by
//! `done` or when it closes), the object of its last get, and the dispatch
//! of each request to its handler.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::bail;
use dot_store::{Oid, Store};
use tokio::io::Interest;
use tokio::net::UnixStream;

use super::Agent;
use crate::api::{self, Message, Request, Response};
use crate::fdpass;
use crate::fetch::{Fetch, Target};

/// One client connection: the objects it holds (released by `done` or when
/// it closes) and the object of its last get.
pub(super) struct Conn {
    pub stream: UnixStream,
    pinned: HashMap<Oid, u32>,
    pub get: Option<OpenGet>,
}

/// A get whose bytes the client reads by range.
pub(super) struct OpenGet {
    pub fetch: Arc<Fetch>,
    pub target: Target,
    pub trusted: bool,
    pub via_fd: bool,
}

impl Conn {
    pub fn pin(&mut self, store: &Store, oid: Oid) {
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

pub(super) async fn client_task(agent: Arc<Agent>, mut stream: UnixStream) {
    if let Err(why) = agent.access.check(&stream) {
        tracing::warn!(%why, "local API connection refused");
        agent.refused_clients.fetch_add(1, Ordering::Relaxed);
        let _ = api::write_json(&mut stream, &error(&why)).await;
        // Take the client's first request (briefly) before closing, so its
        // write does not meet a closed socket before it reads why.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            api::read_message(&mut stream),
        )
        .await;
        return;
    }
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

pub(super) fn error(e: impl std::fmt::Display) -> Response {
    Response::Error {
        message: e.to_string(),
        kind: None,
    }
}

/// The error answer for `e`, with its kind where the chain shows one.
pub(super) fn error_of(e: &anyhow::Error) -> Response {
    Response::Error {
        message: format!("{e:#}"),
        kind: crate::fetch::failures::kind_of(e),
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
            Request::Status => match super::status::status(agent).await {
                Ok(s) => Response::Status(Box::new(s)),
                Err(e) => error(format!("{e:#}")),
            },
            Request::PutFile { path } => {
                let fd = recv_fd(&conn.stream).await?;
                match super::put::put_file(agent, fd, path).await {
                    Ok(r) => {
                        conn.pin(&agent.store, r.0);
                        Response::Put(r.1)
                    }
                    Err(e) => error(format!("{e:#}")),
                }
            }
            Request::PutInit {
                chunker,
                tree,
                segments,
            } => {
                let put = super::put::stream_put(agent, &mut conn.stream, chunker, tree, segments);
                match put.await? {
                    Ok(r) => {
                        conn.pin(&agent.store, r.0);
                        Response::Put(r.1)
                    }
                    Err(e) => error(format!("{e:#}")),
                }
            }
            Request::PutCommit | Request::PutCuts { .. } => {
                error("put-commit or put-cuts without put-init")
            }
            Request::Get {
                ticket,
                hints,
                mode,
            } => {
                super::get::get(agent, conn, &ticket, &hints, mode).await?;
                continue;
            }
            Request::Read { offset, len } => {
                super::get::read_range(agent, conn, offset, len).await?;
                continue;
            }
            Request::Export { ticket, path } => {
                match super::export::export(agent, conn, &ticket, &path).await? {
                    Ok(()) => Response::Ok,
                    Err(e) => error(format!("{e:#}")),
                }
            }
            Request::List { after } => match super::objects::list(agent, after).await {
                Ok(r) => r,
                Err(e) => error(format!("{e:#}")),
            },
            Request::Verify { oids } => match super::objects::verify(agent, &oids).await {
                Ok(v) => Response::Verified(v),
                Err(e) => error_of(&e),
            },
            Request::Remove { oid } => match super::objects::remove(agent, &oid).await {
                Ok(()) => Response::Ok,
                Err(e) => error_of(&e),
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
pub(super) async fn recv_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
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
pub(super) async fn send_fd(stream: &UnixStream, fd: &std::fs::File) -> std::io::Result<()> {
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
