//! The task that brings one object's chunks in and checks the object.
//!
//! Sources and attached devices deliver checked chunks into the fetch's
//! one channel ([`ChunkSink`], tagged by who sent them); the task writes
//! each to the store (no second hash: the chunk proves its check), counts
//! it, and tells readers. What is present is the store's to say; the task
//! keeps only what it asked for and has not received. When the source
//! fails, the next hint continues with what is still missing; once nothing
//! is, the whole object is checked against its OID.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use dot_plugins::portable::PortableSource;
use dot_plugins::transfer::ChunkSink;
use dot_plugins::{ChunkEvent, Transfer};
use dot_store::Hint;
use tokio::sync::mpsc;

use super::failures::{self, Failures};
use super::sources::{self, Source};
use super::{Fetch, FetchState, Fetches, Target, lock, totals};

/// A fetch with nothing wanted and nothing in flight ends after this.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// A source with chunks asked of it that delivers nothing for this long
/// has failed (the next one takes over).
pub const STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// Chunk events a fetch's sources may have queued (each holds a chunk).
const EVENTS: usize = 512;
/// Events handled per wake-up.
const BATCH: usize = 64;
/// The sink tag of the fetch's source; devices are tagged from 1.
const SOURCE: usize = 0;

/// The state of a fetch's task.
pub(super) struct Run {
    /// Chunks asked of the current source and not yet delivered.
    in_flight: HashSet<u32>,
    /// Chunks not present yet.
    left: usize,
    wants: mpsc::UnboundedReceiver<Vec<u32>>,
    failures: Failures,
}

impl Run {
    pub fn new(left: usize, wants: mpsc::UnboundedReceiver<Vec<u32>>, failures: Failures) -> Run {
        Run {
            in_flight: HashSet::new(),
            left,
            wants,
            failures,
        }
    }
}

impl Fetches {
    /// Runs the fetch to its end and records how it ended.
    pub(super) async fn run_task(
        self,
        fetch: Arc<Fetch>,
        target: Target,
        source: Source,
        rest: Vec<Hint>,
        mut run: Run,
    ) {
        // The whole-object hash follows the chunks as they land, on a core
        // the transfer leaves idle.
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let idle = Arc::new(IdleWhileFilling::default());
        let hasher = {
            let (store, oid, stop) = (self.store.clone(), fetch.oid, stop.0.clone());
            let lowered = idle.clone();
            let task = tokio::task::spawn_blocking(move || {
                lowered.run(|| store.hash_while_filling(oid, &stop))
            });
            (task, idle)
        };
        let result = self
            .run(&fetch, &target, source, rest, &mut run, hasher)
            .await;
        drop(stop);
        self.forget_fetch(&fetch);
        match result {
            Ok(true) => {
                fetch.state.send_replace(FetchState::Complete);
            }
            // Idle: nobody wanted more for a while. Readers holding it
            // start a new fetch when they want more.
            Ok(false) => {}
            Err(e) => {
                let why = if fetch.superseded.load(Ordering::Relaxed) {
                    format!(
                        "{e:#} (a ticket vouching for another descriptor list of this object took over its fetch)"
                    )
                } else {
                    format!("{e:#}")
                };
                tracing::warn!(oid = %fetch.oid, error = %why, "get failed");
                let kind = failures::kind_of(&e);
                fetch
                    .state
                    .send_replace(FetchState::Failed(failures::Failure { why, kind }));
            }
        }
        self.store.unpin(fetch.oid);
    }

    /// Brings in the chunks readers want (first source, then the others in
    /// order); once every chunk is present, checks the whole object.
    /// Returns false if it went idle before the object was complete.
    async fn run(
        &self,
        fetch: &Fetch,
        target: &Target,
        first: Source,
        rest: Vec<Hint>,
        run: &mut Run,
        hasher: (
            tokio::task::JoinHandle<dot_store::Result<()>>,
            Arc<IdleWhileFilling>,
        ),
    ) -> anyhow::Result<bool> {
        let mut next = Some(first);
        let mut others = rest.into_iter();
        while run.left > 0 {
            let Some(source) = next.take() else {
                match others.next() {
                    Some(hint) => {
                        match sources::connect(&self.pool, &hint, target, fetch.size, &fetch.descs)
                            .await
                        {
                            Ok(s) => next = Some(s),
                            Err(e) => run.failures.push(&hint.to_string(), &e),
                        }
                        continue;
                    }
                    None => {
                        return Err(std::mem::take(&mut run.failures)
                            .into_error(fetch.oid)
                            .into());
                    }
                }
            };
            match self.pull(fetch, &source, run).await {
                Ok(true) => break,
                Ok(false) => return Ok(false),
                Err(e) => {
                    tracing::warn!(oid = %fetch.oid, source = %source.label, error = %format!("{e:#}"), "source failed; trying the next");
                    run.failures.push(&source.label, &e);
                }
            }
        }
        fetch.state.send_replace(FetchState::Verifying);
        // The transfer is over: what the hash has left is the fetch's last
        // step, and the object stays pinned until it is done.
        let (task, idle) = hasher;
        idle.raise();
        if let Err(e) = task.await? {
            tracing::debug!(oid = %fetch.oid, error = %e, "hashing while filling stopped");
        }
        let s = self.store.clone();
        let oid = fetch.oid;
        tokio::task::spawn_blocking(move || s.finish(oid))
            .await?
            .context("checking the whole object")?;
        Ok(true)
    }

    /// Fetches wanted chunks from one source until none is missing (true)
    /// or nothing was wanted for [`IDLE`] (false).
    async fn pull(&self, fetch: &Fetch, source: &Source, run: &mut Run) -> anyhow::Result<bool> {
        let oid = fetch.oid;
        *lock(&fetch.source) = source.name();
        *lock(&fetch.multipath) = source.multipath.clone();
        let _tracked = source.multipath.as_ref().map(|m| self.totals.track(m));
        let (tx, mut events) = mpsc::channel(EVENTS);
        let store = &self.store;
        let submit = |batch: Vec<u32>| {
            if !batch.is_empty() {
                let wanted = batch
                    .into_iter()
                    .map(|i| (i, fetch.descs[i as usize]))
                    .collect();
                source
                    .plugin
                    .get_chunks(oid, wanted, ChunkSink::new(tx.clone(), SOURCE));
            }
        };
        // Attached devices are asked for every missing chunk at once, now
        // and as they come; what they hold arrives beside the source's.
        let mut devices: Vec<String> = Vec::new();
        let attach = |device: Arc<PortableSource>, devices: &mut Vec<String>| {
            if device.name() == source.label {
                return;
            }
            let Ok(missing) = store.missing(oid) else {
                return;
            };
            let wanted = missing
                .into_iter()
                .map(|i| (i, fetch.descs[i as usize]))
                .collect();
            devices.push(device.name());
            device.get_chunks(oid, wanted, ChunkSink::new(tx.clone(), devices.len()));
        };
        let mut attached = self.attached.subscribe();
        for device in self.devices() {
            attach(device, &mut devices);
        }
        // What an earlier source was asked for and did not deliver.
        let carried: Vec<u32> = run
            .in_flight
            .iter()
            .copied()
            .filter(|&i| !store.has_chunk(oid, i).unwrap_or(true))
            .collect();
        run.in_flight = carried.iter().copied().collect();
        submit(carried);
        let mut batch = Vec::with_capacity(BATCH);
        let mut progress = tokio::time::Instant::now();
        while run.left > 0 {
            tokio::select! {
                biased;
                _ = events.recv_many(&mut batch, BATCH) => {
                    progress = tokio::time::Instant::now();
                    for (from, ev) in batch.drain(..) {
                        let name = if from == SOURCE { None } else { devices.get(from - 1) };
                        self.take(fetch, source, run, name, ev)?;
                    }
                }
                device = attached.recv() => {
                    if let Ok(device) = device {
                        attach(device, &mut devices);
                    }
                }
                want = run.wants.recv() => {
                    let Some(want) = want else { return Ok(false) };
                    // Each chunk once: not present, not in flight, not
                    // twice in this want.
                    let batch: Vec<u32> = want
                        .into_iter()
                        .filter(|&i| {
                            !store.has_chunk(oid, i).unwrap_or(true) && run.in_flight.insert(i)
                        })
                        .collect();
                    submit(batch);
                }
                () = tokio::time::sleep(IDLE), if run.in_flight.is_empty() => return Ok(false),
                () = tokio::time::sleep_until(progress + STALL), if !run.in_flight.is_empty() => {
                    bail!("{} sent nothing for {} s", source.name(), STALL.as_secs());
                }
            }
        }
        Ok(true)
    }

    /// One event from the source (`device` is `None`) or a device.
    fn take(
        &self,
        fetch: &Fetch,
        source: &Source,
        run: &mut Run,
        device: Option<&String>,
        ev: ChunkEvent,
    ) -> anyhow::Result<()> {
        let oid = fetch.oid;
        match (ev, device) {
            (ChunkEvent::Chunk(chunk), _) => {
                let index = chunk.index();
                let asked = run.in_flight.remove(&index);
                // Counted before the store shows the chunk present: a
                // reader that sees the last chunk sees its bytes counted.
                let counter = if device.is_some() || source.device {
                    &fetch.from_devices
                } else {
                    &fetch.from_peers
                };
                let len = chunk.len() as u64;
                counter.fetch_add(len, Ordering::Relaxed);
                let written = self.store.write_verified(oid, &chunk);
                if !matches!(written, Ok(true)) {
                    counter.fetch_sub(len, Ordering::Relaxed);
                }
                match written {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(e) if device.is_none() => {
                        return Err(e).with_context(|| format!("from {}", source.plugin.name()));
                    }
                    Err(e) => {
                        tracing::warn!(%oid, index, device = %device.map_or("", |d| d), error = %e, "chunk from the device refused; fetched elsewhere");
                        if asked {
                            run.in_flight.insert(index);
                        }
                        return Ok(());
                    }
                }
                if device.is_some() || source.device {
                    self.totals.add(totals::Kind::Device, len, 1);
                } else if source.multipath.is_none() {
                    self.totals.add_from_peer(&source.label, len);
                }
                run.left -= 1;
                if device.is_some() && asked {
                    source.plugin.cancel_chunks(oid, &[index]);
                }
                let _ = fetch.arrived.send(index);
            }
            (ChunkEvent::Failed { index, error }, None) => bail!("chunk {index}: {error}"),
            (ChunkEvent::SourceFailed(e), None) => return Err(e.into()),
            // Not on the device: the source brings it.
            (ChunkEvent::Failed { .. }, Some(_)) => {}
            (ChunkEvent::SourceFailed(e), Some(device)) => {
                tracing::info!(%oid, %device, error = %e, "device stopped delivering");
            }
        }
        Ok(())
    }
}

/// Sets its flag when dropped: the hasher stops when the fetch ends, also
/// when its task is dropped (the runtime shutting down waits for blocking
/// threads).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The hasher's thread, scheduled only when a CPU is otherwise idle
/// (SCHED_IDLE) while the transfer runs, and raised back to the normal
/// policy once the transfer is over: a hash that fell behind on a busy
/// machine then finishes at a fair share instead of waiting, object pinned,
/// for the machine to go idle.
#[derive(Default)]
struct IdleWhileFilling(std::sync::Mutex<Option<libc::pid_t>>);

impl IdleWhileFilling {
    /// Runs `f` on the calling thread at idle priority until [`Self::raise`]
    /// or its end, then restores the normal policy.
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; the parameter is valid for
        // both policies.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            // SAFETY: gettid has no preconditions.
            *lock(&self.0) = Some(unsafe { libc::gettid() });
        }
        let out = f();
        if lock(&self.0).take().is_some() {
            // SAFETY: as above.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
        out
    }

    /// Puts the thread running [`Self::run`], if it still does, back on the
    /// normal policy. The lock keeps the thread from being handed another
    /// job meanwhile.
    fn raise(&self) {
        let running = lock(&self.0);
        if let Some(tid) = *running {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `tid` is a thread of this process, inside `run` while
            // the lock is held; the parameter is valid for the policy.
            unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) };
        }
    }
}
