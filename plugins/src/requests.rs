//! Requests to one server of files (an HTTP mirror, a plain URL, a
//! bucket): at most a window of them in flight, and the ones the fetch
//! withdrew skipped before they are sent. Each source says how to fetch a
//! run of chunks; this module owns the window and the withdrawals.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use dot_store::{Descriptor, Oid, VerifiedChunk};
use tokio::sync::Semaphore;

use crate::error::TransferError;
use crate::transfer::{ChunkEvent, ChunkSink};

/// Most withdrawals remembered (one for a chunk already fetched is never
/// taken out): past it, they are forgotten.
const MAX_WITHDRAWN: usize = 1 << 16;

/// One server's requests.
pub struct Requests {
    window: Arc<Semaphore>,
    withdrawn: Mutex<HashSet<(Oid, u32)>>,
}

impl Requests {
    /// At most `in_flight` requests at once.
    pub fn new(in_flight: usize) -> Arc<Requests> {
        Arc::new(Requests {
            window: Arc::new(Semaphore::new(in_flight)),
            withdrawn: Mutex::new(HashSet::new()),
        })
    }

    /// Withdraws the requests for `indexes` of `oid` not yet sent.
    pub fn withdraw(&self, oid: Oid, indexes: &[u32]) {
        let mut withdrawn = self.withdrawn.lock().unwrap_or_else(|p| p.into_inner());
        if withdrawn.len() > MAX_WITHDRAWN {
            withdrawn.clear();
        }
        withdrawn.extend(indexes.iter().map(|&i| (oid, i)));
    }

    /// Fetches each run of chunks of `oid` with `fetch` (one request a
    /// run, at most the window at once, in order), leaving out the chunks
    /// withdrawn by then; every event goes to `sink`.
    pub fn spawn<F, Fut>(
        self: &Arc<Self>,
        oid: Oid,
        runs: Vec<Vec<(u32, Descriptor)>>,
        sink: ChunkSink,
        fetch: F,
    ) where
        F: Fn(Vec<(u32, Descriptor)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<ChunkEvent>> + Send + 'static,
    {
        let me = self.clone();
        let fetch = Arc::new(fetch);
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            for run in runs {
                let Ok(slot) = me.window.clone().acquire_owned().await else {
                    return;
                };
                let run: Vec<(u32, Descriptor)> = {
                    let mut withdrawn = me.withdrawn.lock().unwrap_or_else(|p| p.into_inner());
                    run.into_iter()
                        .filter(|(i, _)| !withdrawn.remove(&(oid, *i)))
                        .collect()
                };
                if run.is_empty() {
                    continue;
                }
                let (fetch, sink) = (fetch.clone(), sink.clone());
                running.spawn(async move {
                    let events = fetch(run).await;
                    drop(slot);
                    for event in events {
                        sink.send(event).await;
                    }
                });
                // Reap the finished ones as we go.
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
    }

    /// [`Requests::spawn`] with one request a chunk, fetched and checked
    /// by `fetch`.
    pub fn spawn_each<F, Fut>(
        self: &Arc<Self>,
        oid: Oid,
        chunks: Vec<(u32, Descriptor)>,
        sink: ChunkSink,
        fetch: F,
    ) where
        F: Fn(u32, Descriptor) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<VerifiedChunk, TransferError>> + Send + 'static,
    {
        let fetch = Arc::new(fetch);
        let runs = chunks.into_iter().map(|c| vec![c]).collect();
        self.spawn(oid, runs, sink, move |run| {
            let fetch = fetch.clone();
            async move {
                let mut events = Vec::with_capacity(run.len());
                for (index, desc) in run {
                    events.push(match fetch(index, desc).await {
                        Ok(chunk) => ChunkEvent::Chunk(chunk),
                        Err(error) => ChunkEvent::Failed { index, error },
                    });
                }
                events
            }
        });
    }
}
