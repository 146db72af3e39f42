//! `export`: copies an object to a portable key, with progress.

use std::path::PathBuf;

use anyhow::Context;
use dot_plugins::portable::Device;
use tokio::sync::mpsc;

use super::Agent;
use super::clients::Conn;
use crate::api::{self, Response};
use crate::fetch::Target;

/// Copies an object to a device's store, streaming progress (at most
/// every 1% of the object) to the client. The outer error is the client's
/// connection; the inner one is the answer.
pub(super) async fn export(
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
