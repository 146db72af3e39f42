//! What `gtc status` reports: the store, the peer counters, the clients
//! and each transfer in flight with its paths.

use std::sync::atomic::Ordering;

use super::Agent;
use crate::api::{PathStatus, PeerCounters, Status, TransferStatus};
use crate::fetch::FetchState;

pub(super) async fn status(agent: &Agent) -> anyhow::Result<Status> {
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
            local: f.held_at_start.load(Ordering::Relaxed),
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
        hints: agent.issuer.hints().iter().map(|h| h.to_string()).collect(),
        objects: list.len() as u64,
        complete: list.iter().filter(|o| o.complete).count() as u64,
        pinned: list.iter().filter(|o| o.pins > 0).count() as u64,
        stored_bytes: stored,
        budget: agent.store.limits().0,
        min_free_bytes: agent.store.limits().1,
        free_bytes: agent.store.free_bytes().unwrap_or(0),
        evicted: agent.store.evictions().0,
        evicted_bytes: agent.store.evictions().1,
        peers: PeerCounters {
            chunks_served: s.chunks_served.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            violations: s.violations.load(Ordering::Relaxed),
            shed: s.shed.load(Ordering::Relaxed),
        },
        transfers,
        clients: agent.clients.load(Ordering::Relaxed),
    })
}
