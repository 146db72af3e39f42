//! The thread between chunk writes and the index: it collects presence
//! marks, flushes the object files they name (`fdatasync`, when the store
//! is durable) and only then hands them to the index thread, so the index
//! never claims bytes that a power cut could take back.
//!
//! Flushing here rather than on the index thread keeps queries (a status,
//! a lookup, a peer's request) from waiting behind a disk that writes
//! slower than the network delivers. Jobs that must follow every mark made
//! before them (an object marked complete, a caller waiting for all marks)
//! go through this thread too, in order.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::oid::Oid;

/// How long presence marks wait for company before they are recorded.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// The same, when recording them means flushing their files first.
const DURABLE_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// Most messages taken in one round.
const MAX_ROUND: usize = 8192;

/// Chunk `index` of `oid` was written (to `file`) and verified.
pub(crate) struct Mark {
    pub oid: Oid,
    pub index: u32,
    pub file: Arc<File>,
    /// The chunk's bytes, counted as unrecorded while the mark lives.
    pub _held: Unrecorded,
}

/// Bytes written and verified whose marks the index does not hold yet: a
/// mark counts its chunk from when it is made until it is dropped, which
/// the index thread does right after writing its row. Queries on that
/// thread add this count to the index's and so count each chunk once.
#[derive(Clone, Default)]
pub(crate) struct Pending(Arc<AtomicU64>);

impl Pending {
    /// Counts `len` bytes until the returned token drops.
    pub(crate) fn hold(&self, len: u64) -> Unrecorded {
        self.0.fetch_add(len, Ordering::SeqCst);
        Unrecorded {
            count: self.0.clone(),
            len,
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One mark's share of [`Pending`].
pub(crate) struct Unrecorded {
    count: Arc<AtomicU64>,
    len: u64,
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        self.count.fetch_sub(self.len, Ordering::SeqCst);
    }
}

/// Marks waiting for the next round.
pub(crate) type Marks = Arc<Mutex<Vec<Mark>>>;

pub(crate) fn take(marks: &Marks) -> Vec<Mark> {
    std::mem::take(&mut *marks.lock().unwrap_or_else(|p| p.into_inner()))
}

/// What the flusher is told.
pub(crate) enum Msg<J> {
    /// Take the marks collected so far.
    Marks,
    /// Pass this on once every mark made before it has been passed on.
    Then(J),
}

/// What the flusher hands on, in order.
pub(crate) enum Out<J> {
    /// These marks' bytes are on disk (or the store is not durable).
    Flushed(Vec<Mark>),
    Then(J),
}

/// Runs the flusher until every sender is gone: takes `pending` marks,
/// flushes their files once each if `durable`, and hands the marks whose
/// files flushed, then the jobs, to `out`. Returns when `out` refuses.
pub(crate) fn run<J>(
    rx: mpsc::Receiver<Msg<J>>,
    pending: Marks,
    durable: bool,
    mut out: impl FnMut(Out<J>) -> bool,
) {
    let linger = if durable { DURABLE_LINGER } else { LINGER };
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        // Marks alone wait a little for more (one flush and one index
        // transaction for many chunks); a job ends the wait.
        if matches!(round[0], Msg::Marks)
            && let Ok(m) = rx.recv_timeout(linger)
        {
            round.push(m);
        }
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(m) => round.push(m),
                Err(_) => break,
            }
        }
        // Every mark made before any message of this round is in the list.
        let mut marks = take(&pending);
        if durable {
            let mut flushed: HashMap<*const File, bool> = HashMap::new();
            marks.retain(|mark| {
                *flushed
                    .entry(Arc::as_ptr(&mark.file))
                    .or_insert_with(|| match mark.file.sync_data() {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(oid = %mark.oid, error = %e, "flushing an object file failed; its chunks stay unmarked");
                            false
                        }
                    })
            });
        }
        if !marks.is_empty() && !out(Out::Flushed(marks)) {
            return;
        }
        for m in round {
            if let Msg::Then(job) = m
                && !out(Out::Then(job))
            {
                return;
            }
        }
    }
}
