//! The multipath plugin: one object's chunk requests spread over several
//! paths at once (the paper's multi-path plugin).
//!
//! A *path* is a sub-plugin: one source, reached from one local address.
//! Requests wait in one queue, in the order they were asked for, and go to
//! whichever path has room in its window. A path's window is sized from
//! what it measured: its delivery rate times its shortest request-to-chunk
//! time, in chunks, plus two (the paper fixed it at 10); a path that has
//! measured nothing yet gets [`INITIAL_WINDOW`].
//!
//! When the queue is empty, a path with room *borrows*: it takes the oldest
//! request of the path that would finish last, if it would deliver it
//! sooner. Both copies stay in flight; the first to arrive wins and the
//! other is cancelled. This keeps a very slow path from holding back the end
//! of a transfer.
//!
//! Every path checks each chunk against its descriptor before delivering
//! it; a path that reports a corrupt chunk is dropped for good. Paths
//! deliver into the scheduler's one channel, and the scheduler hands each
//! chunk to the sinks that asked for it (no task relays in between). A path
//! that fails or stalls
//! is dropped: its requests go back to the front of the queue, and it is
//! tried again after a pause (1 s, doubling to 30 s), first with a single
//! request. When every path has been down for [`ALL_DOWN`], or all are
//! dropped for good, the waiting requests fail.
//!
//! - `mod.rs`: the plugin ([`Multipath`]), its limits and statistics;
//! - `path`: one path's health and measures (rate, latency, window, when
//!   its requests should arrive);
//! - `scheduler`: the task per object that queues, dispatches, borrows,
//!   and drops and revives paths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dot_store::{Access, Descriptor, Oid};
use tokio::sync::mpsc;

use crate::error::TransferError;
use crate::transfer::{BoxFuture, ChunkSink, Described, Transfer};

/// Requests in flight on a path before it has measured anything.
pub const INITIAL_WINDOW: usize = 4;
/// The largest window of one path.
pub const MAX_WINDOW: usize = 256;
/// Arrivals a path's rate is measured over.
const RATE_SAMPLES: usize = 16;
/// The first pause before a dropped path is tried again.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause before a dropped path is tried again.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// A path with requests in flight that delivers nothing for this long (or
/// for eight of its chunk times, if longer) has stalled.
const MIN_STALL: Duration = Duration::from_secs(10);
/// When every path has been down this long, the waiting requests fail.
pub const ALL_DOWN: Duration = Duration::from_secs(30);
/// How often stalls and pauses are checked.
const TICK: Duration = Duration::from_millis(100);
/// Events the paths may have queued for the scheduler.
const EVENTS: usize = 1024;

/// What one path delivered (shared with the scheduler).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    bytes: AtomicU64,
    chunks: AtomicU64,
    drops: AtomicU64,
}

/// What one path of a [`Multipath`] has done so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStats {
    /// The sub-plugin's name.
    pub name: String,
    /// Bytes of chunks it delivered first (duplicates not counted).
    pub bytes: u64,
    /// Chunks it delivered first.
    pub chunks: u64,
    /// Times it was dropped (failed, stalled or lied).
    pub drops: u64,
}

pub(crate) enum Cmd {
    Get(Vec<(u32, Descriptor)>, ChunkSink),
    Cancel(Vec<u32>),
}

/// Several paths to one object as one [`Transfer`].
pub struct Multipath {
    name: String,
    paths: Vec<Arc<dyn Transfer>>,
    counters: Arc<[Counters]>,
    schedulers: Mutex<HashMap<Oid, mpsc::UnboundedSender<Cmd>>>,
}

impl Multipath {
    /// Spreads requests over `paths` (tried for descriptors in this order).
    pub fn new(paths: Vec<Arc<dyn Transfer>>) -> Multipath {
        let names: Vec<String> = paths.iter().map(|p| p.name()).collect();
        Multipath {
            name: format!("multipath[{}]", names.join(", ")),
            counters: paths.iter().map(|_| Counters::default()).collect(),
            paths,
            schedulers: Mutex::new(HashMap::new()),
        }
    }

    /// What each path delivered, in the order given to [`Multipath::new`].
    pub fn stats(&self) -> Vec<PathStats> {
        self.paths
            .iter()
            .zip(self.counters.iter())
            .map(|(p, c)| PathStats {
                name: p.name(),
                bytes: c.bytes.load(Ordering::Relaxed),
                chunks: c.chunks.load(Ordering::Relaxed),
                drops: c.drops.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn send(&self, oid: Oid, cmd: Cmd) {
        let mut schedulers = self.schedulers.lock().unwrap_or_else(|p| p.into_inner());
        let tx = schedulers.entry(oid).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let sched = Scheduler::new(oid, &self.paths, self.counters.clone());
            tokio::spawn(sched.run(rx));
            tx
        });
        // The scheduler lives as long as this plugin: sending cannot fail.
        let _ = tx.send(cmd);
    }
}

impl Transfer for Multipath {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn get_descriptors(
        &self,
        oid: Oid,
        access: Option<Access>,
    ) -> BoxFuture<'_, Result<Described, TransferError>> {
        Box::pin(async move {
            let mut last = None;
            for p in &self.paths {
                match p.get_descriptors(oid, access).await {
                    Ok(d) => return Ok(d),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| TransferError::Connection {
                peer: self.name.clone(),
                message: "no paths".into(),
            }))
        })
    }

    fn get_chunks(&self, oid: Oid, chunks: Vec<(u32, Descriptor)>, sink: ChunkSink) {
        if !chunks.is_empty() {
            self.send(oid, Cmd::Get(chunks, sink));
        }
    }

    fn cancel_chunks(&self, oid: Oid, indexes: &[u32]) {
        self.send(oid, Cmd::Cancel(indexes.to_vec()));
    }
}

mod path;
mod scheduler;

use scheduler::Scheduler;
