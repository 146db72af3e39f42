//! What the metrics endpoint reports: every family the agent exposes, with
//! its name and help, from what `gtc status` gathers plus the fetch
//! totals, the chunk checks and the mount's reads (docs/metrics.md lists
//! them).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dot_fusefs::{LATENCY_BOUNDS, ReadStats};

use super::Agent;
use crate::exposition::{Exposition, Type};
use crate::fetch::totals::Kind;

/// The metrics text of `agent` now; `reads` are its mount's, if it has one.
pub(super) async fn render(
    agent: &Agent,
    reads: Option<&Arc<ReadStats>>,
) -> anyhow::Result<String> {
    use Type::{Counter, Gauge};
    let st = super::status::status(agent).await?;
    let totals = agent.fetches.totals();
    let mut e = Exposition::default();
    e.family("dot_build_info", Gauge, "The agent's version (always 1).");
    e.sample(&[("version", &st.version)], 1);

    e.family(
        "dot_fetch_bytes_total",
        Counter,
        "Chunk bytes fetches took, by kind of source (peer; device; cache: held when the fetch began).",
    );
    for (k, c) in Kind::ALL.iter().zip(&totals.by_kind) {
        e.sample(&[("source", k.name())], c.bytes);
    }
    e.family(
        "dot_fetch_chunks_total",
        Counter,
        "Chunks fetches took, by kind of source.",
    );
    for (k, c) in Kind::ALL.iter().zip(&totals.by_kind) {
        e.sample(&[("source", k.name())], c.chunks);
    }
    e.family(
        "dot_peer_fetch_bytes_total",
        Counter,
        "Chunk bytes taken from each peer (each path of a multipath source by its own name).",
    );
    for (p, c) in &totals.by_peer {
        e.sample(&[("peer", p)], c.bytes);
    }
    e.family(
        "dot_peer_fetch_chunks_total",
        Counter,
        "Chunks taken from each peer.",
    );
    for (p, c) in &totals.by_peer {
        e.sample(&[("peer", p)], c.chunks);
    }
    e.single(
        "dot_fetches_started_total",
        Counter,
        "Fetches started (one per object however many readers it has).",
        totals.fetches,
    );
    e.single(
        "dot_fetches_in_flight",
        Gauge,
        "Fetches running now.",
        st.transfers.len() as u64,
    );
    let (verified, rejected) = dot_store::chunk::checked();
    e.single(
        "dot_chunks_verified_total",
        Counter,
        "Chunks whose bytes matched their descriptor, from any source.",
        verified,
    );
    e.single(
        "dot_chunks_rejected_total",
        Counter,
        "Chunks whose bytes did not match their descriptor (none of their bytes is kept).",
        rejected,
    );

    if let Some(reads) = reads {
        let r = reads.snapshot();
        e.single(
            "dot_fuse_reads_total",
            Counter,
            "Reads of object files through the mount answered with data.",
            r.reads,
        );
        e.single(
            "dot_fuse_read_bytes_total",
            Counter,
            "Bytes those reads returned.",
            r.bytes,
        );
        e.single(
            "dot_fuse_read_errors_total",
            Counter,
            "Reads of object files through the mount answered with an error.",
            r.errors,
        );
        e.single(
            "dot_fuse_passthrough_opens_total",
            Counter,
            "Opens of complete objects handed to the kernel (their reads never reach the agent).",
            r.passthrough_opens,
        );
        e.histogram(
            "dot_fuse_read_duration_seconds",
            "How long reads of object files through the mount took to answer.",
            &LATENCY_BOUNDS,
            &r.cumulative,
            r.seconds,
        );
    }

    e.single(
        "dot_store_bytes",
        Gauge,
        "Bytes the store holds.",
        st.stored_bytes,
    );
    e.family(
        "dot_store_objects",
        Gauge,
        "Objects in the store, by state.",
    );
    e.sample(&[("state", "complete")], st.complete);
    e.sample(
        &[("state", "partial")],
        st.objects.saturating_sub(st.complete),
    );
    e.single(
        "dot_store_pinned_objects",
        Gauge,
        "Objects pinned (never evicted).",
        st.pinned,
    );
    if st.budget != u64::MAX {
        e.single(
            "dot_store_budget_bytes",
            Gauge,
            "The store's budget: past it, unpinned objects are evicted.",
            st.budget,
        );
    }
    e.single(
        "dot_store_min_free_bytes",
        Gauge,
        "Free bytes the store keeps on its filesystem.",
        st.min_free_bytes,
    );
    e.single(
        "dot_store_free_bytes",
        Gauge,
        "Free bytes on the store's filesystem now.",
        st.free_bytes,
    );
    e.single(
        "dot_store_evictions_total",
        Counter,
        "Objects evicted to keep the budget or the free-space floor.",
        st.evicted,
    );
    e.single(
        "dot_store_evicted_bytes_total",
        Counter,
        "Bytes those evictions freed.",
        st.evicted_bytes,
    );

    let s = &agent.stats;
    e.single(
        "dot_serve_chunks_total",
        Counter,
        "Chunks sent to peers.",
        st.peers.chunks_served,
    );
    e.single(
        "dot_serve_bytes_total",
        Counter,
        "Chunk bytes sent to peers.",
        st.peers.bytes_sent,
    );
    e.single(
        "dot_serve_refused_total",
        Counter,
        "Descriptor requests refused (a wrong token, or an object not held).",
        st.peers.refused,
    );
    e.single(
        "dot_peer_connections_total",
        Counter,
        "Peer connections admitted.",
        s.accepted.load(Ordering::Relaxed),
    );
    e.single(
        "dot_peer_connections",
        Gauge,
        "Peer connections open now.",
        s.open.load(Ordering::Relaxed),
    );
    e.single(
        "dot_peer_connections_shed_total",
        Counter,
        "Peer connections shed (idle, to make room) or refused at a cap.",
        st.peers.shed,
    );
    e.single(
        "dot_peer_violations_total",
        Counter,
        "Peer connections closed for a protocol violation or a missed deadline.",
        st.peers.violations,
    );
    e.single(
        "dot_local_clients",
        Gauge,
        "Local API connections open now.",
        st.clients,
    );
    e.single(
        "dot_local_refused_total",
        Counter,
        "Local API connections refused (a user not allowed).",
        agent.refused_clients.load(Ordering::Relaxed),
    );
    Ok(e.finish())
}
