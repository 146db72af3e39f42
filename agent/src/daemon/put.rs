//! Puts: a file by descriptor (hashed in place, not copied), or a stream
//! of data messages until `put-commit`.

use std::os::fd::OwnedFd;

use anyhow::bail;
use dot_store::{Oid, PutOutcome};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::Agent;
use crate::api::{self, Message, PutResult, Request};

/// The ticket and answer for a put.
fn put_result(agent: &Agent, out: &PutOutcome) -> anyhow::Result<PutResult> {
    let ticket = agent.issuer.ticket(&agent.store, out.oid)?;
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

pub(super) async fn put_file(
    agent: &Agent,
    fd: OwnedFd,
    path: String,
) -> anyhow::Result<(Oid, PutResult)> {
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
pub(super) async fn stream_put(
    agent: &Agent,
    stream: &mut UnixStream,
    chunker: Option<String>,
) -> anyhow::Result<anyhow::Result<(Oid, PutResult)>> {
    // A bad chunker fails the put once its data is read (the client is
    // sending it already).
    let chunker = chunker
        .map(|c| c.parse::<dot_store::ChunkerSpec>())
        .transpose();
    enum Piece {
        Data(Vec<u8>),
        Commit,
    }
    let (tx, mut rx) = mpsc::channel::<Piece>(8);
    let store = agent.store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut w = store.put_writer_with(chunker.map_err(|e| anyhow::anyhow!("put: {e}"))?);
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
