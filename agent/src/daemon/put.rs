//! Puts: a file by descriptor (hashed in place, not copied), or a stream
//! of data messages until `put-commit`.

use std::os::fd::OwnedFd;

use anyhow::{Context, bail};
use dot_store::chunker::Cuts;
use dot_store::{Oid, PutOutcome, tree};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::Agent;
use crate::api::{self, Message, PutResult, Request};

/// The ticket and answer for a put (a tree's ticket for a tree's
/// manifest).
fn put_result(agent: &Agent, out: &PutOutcome, tree: bool) -> anyhow::Result<PutResult> {
    let mut ticket = agent.issuer.ticket(&agent.store, out.oid)?;
    if tree {
        ticket = ticket.as_tree();
    }
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
    Ok((out.oid, put_result(agent, &out, false)?))
}

/// Checks that the object put is a tree's manifest whose every file is
/// here, whole: a tree's ticket must open all it names.
fn check_tree(store: &dot_store::Store, oid: Oid) -> anyhow::Result<()> {
    let info = store
        .info(oid)?
        .with_context(|| format!("{oid} left the store"))?;
    if info.size > tree::MAX_MANIFEST {
        bail!("a tree's manifest is at most {} bytes", tree::MAX_MANIFEST);
    }
    let bytes = store.read_bytes(oid, 0, info.size as usize)?;
    let manifest = tree::Manifest::decode(&bytes)?;
    let pack = manifest
        .pack
        .map(|p| ("its pack".to_owned(), p.size, p.oid));
    let files = manifest
        .files()
        .map(|(e, size, oid)| (String::from_utf8_lossy(&e.path).into_owned(), size, oid));
    for (what, size, file) in files.chain(pack) {
        let whole = store
            .info(file)?
            .is_some_and(|i| i.complete && i.size == size);
        if !whole {
            bail!("the tree lists {what} ({file}), which this agent does not hold whole");
        }
    }
    Ok(())
}

/// A stream put: data messages until `put-commit`. The outer error ends
/// the connection (socket trouble, a protocol violation); the inner one is
/// the put's failure, answered to the client.
pub(super) async fn stream_put(
    agent: &Agent,
    stream: &mut UnixStream,
    chunker: Option<String>,
    tree: bool,
    segments: bool,
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
    let mut tx = Some(tx);
    let cuts = segments.then(Cuts::default);
    let mut cut_error = None;
    let store = agent.store.clone();
    let writer_cuts = cuts.clone();
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let chunker = chunker.map_err(|e| anyhow::anyhow!("put: {e}"))?;
        let mut w = store.put_writer_cut(chunker, writer_cuts);
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
                let Some(sender) = &tx else { continue };
                if !writer_gone && sender.send(Piece::Data(d)).await.is_err() {
                    // The writer failed; keep reading to the commit, then
                    // report its error.
                    writer_gone = true;
                }
            }
            Message::Json(body) => match serde_json::from_slice::<Request>(&body)? {
                Request::PutCommit => {
                    if let Some(sender) = &tx {
                        let _ = sender.send(Piece::Commit).await;
                    }
                    break;
                }
                Request::PutCuts { ends } => {
                    let Some(cuts) = &cuts else {
                        bail!("put-cuts in a put not started with segments");
                    };
                    if ends.len() > api::MAX_CUTS {
                        bail!("put-cuts with more than {} ends", api::MAX_CUTS);
                    }
                    if let Err(e) = ends.iter().try_for_each(|&end| cuts.push(end)) {
                        // The chunks may not fall where they must: the put
                        // is abandoned (dropping the sender) and fails.
                        cut_error.get_or_insert(e);
                        tx = None;
                    }
                }
                other => bail!("{other:?} in the middle of a put"),
            },
        }
    }
    drop(tx);
    let written = writer.await?;
    if let Some(e) = cut_error {
        return Ok(Err(anyhow::anyhow!("put: {e}")));
    }
    let out = match written {
        Ok(out) => out,
        Err(e) => return Ok(Err(e.context("put"))),
    };
    if tree {
        let (store, oid) = (agent.store.clone(), out.oid);
        if let Err(e) = tokio::task::spawn_blocking(move || check_tree(&store, oid)).await? {
            return Ok(Err(e.context("put of a tree")));
        }
    }
    Ok(put_result(agent, &out, tree).map(|r| (out.oid, r)))
}
