//! Getting objects: one [`Fetch`] per object in flight, shared by every
//! client that asks for it.
//!
//! A fetch learns the object's descriptors from the first source (in hint
//! order, RFC 2782) that answers, fills what the store already holds, then
//! asks the sources for the missing chunks, falling back to the next source
//! when one fails or lies. Every source checks each chunk against its
//! descriptor; the store writes the checked chunk and records it present
//! (the one place presence is kept); readers are told of each arrival.
//!
//! - `target`: what a get names ([`Target`]: ticket or bare OID);
//! - `sources`: hint order, priority groups, describing, building the
//!   source (one gtc peer or a multipath over a group);
//! - `run`: the task that brings the chunks in and checks the object;
//! - `devices`: portable keys attached to every fetch, and the outbox;
//! - `totals`: what all fetches brought in, by kind of source and by peer;
//! - `tree_lists`: a tree's pack's list, from the tree's manifest.
//!
//! When may a reader see a chunk before the whole object hashed to its OID?
//! Only when its own ticket carries the digest of the descriptor list the
//! fetch uses: verified chunks plus a list the ticket vouches for are the
//! object the ticket names ([`Fetch::readable`], the one place this rule
//! is written). Readers without that (a bare OID, or a ticket whose list
//! differs) wait until the store has checked the whole OID.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::bail;
use dot_plugins::multipath::{Multipath, PathStats};
use dot_plugins::portable::PortableSource;
use dot_store::descriptor::{chunks_covering, list_digest};
use dot_store::{Descriptor, Hint, Oid, Store};
use tokio::sync::{broadcast, mpsc, watch};

mod devices;
pub(crate) mod failures;
mod run;
mod sources;
mod target;
pub mod totals;
mod tree_lists;

pub use target::Target;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a fetch is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchState {
    /// Chunks are coming in.
    Running,
    /// Every chunk is present; the whole object is being hashed.
    Verifying,
    /// The object is complete and hashed to its OID.
    Complete,
    /// The fetch gave up.
    Failed(failures::Failure),
}

/// One object being fetched (or already complete), as readers see it.
pub struct Fetch {
    /// The object.
    pub oid: Oid,
    /// Its size.
    pub size: u64,
    /// Its descriptors.
    pub descs: Arc<[Descriptor]>,
    digest: [u8; 32],
    state: watch::Sender<FetchState>,
    arrived: broadcast::Sender<u32>,
    /// Chunk bytes taken from peers so far.
    pub from_peers: AtomicU64,
    /// Chunk bytes taken from portable devices so far.
    pub from_devices: AtomicU64,
    /// Bytes the store held when the fetch started.
    pub held_at_start: AtomicU64,
    source: Mutex<String>,
    multipath: Mutex<Option<Arc<Multipath>>>,
    started: Instant,
    wants: Option<mpsc::UnboundedSender<Vec<u32>>>,
    /// A fetch of another descriptor list took this one's place.
    superseded: std::sync::atomic::AtomicBool,
    /// The store holds the (partial) object: set once the fetch has
    /// recorded it, or failed to. A reader that joins before then waits.
    prepared: watch::Sender<bool>,
}

impl Fetch {
    fn new(oid: Oid, size: u64, descs: Arc<[Descriptor]>, state: FetchState) -> Fetch {
        Fetch {
            wants: None,
            oid,
            size,
            digest: list_digest(&descs),
            descs,
            arrived: broadcast::Sender::new(1024),
            from_peers: AtomicU64::new(0),
            from_devices: AtomicU64::new(0),
            held_at_start: AtomicU64::new(0),
            source: Mutex::new(String::new()),
            multipath: Mutex::new(None),
            started: Instant::now(),
            superseded: std::sync::atomic::AtomicBool::new(false),
            prepared: watch::Sender::new(!matches!(state, FetchState::Running)),
            state: watch::Sender::new(state),
        }
    }

    /// Waits until the fetch has recorded its object in the store (a
    /// reader that joined a fetch just started would find no object yet).
    ///
    /// # Errors
    /// The fetch failed to prepare the store.
    async fn prepared(&self) -> anyhow::Result<()> {
        let mut ready = self.prepared.subscribe();
        // The sender lives as long as the fetch: no error to see here.
        let _ = ready.wait_for(|p| *p).await;
        if let FetchState::Failed(why) = &*self.state.borrow() {
            return Err(why.clone().into());
        }
        Ok(())
    }

    /// Asks for chunks `indexes` (those not present and not yet asked for
    /// are requested now, ahead of what is queued later). False if the fetch
    /// has ended (complete, failed or idle): start a new one to read more.
    pub fn want(&self, indexes: Vec<u32>) -> bool {
        match &self.wants {
            None => self.state() == FetchState::Complete,
            Some(tx) => tx.send(indexes).is_ok(),
        }
    }

    /// Asks for every chunk, in order.
    pub fn want_all(&self) -> bool {
        self.want((0..self.descs.len() as u32).collect())
    }

    /// The indexes of the chunks covering `offset..offset + len`.
    pub fn chunks_of(&self, offset: u64, len: u64) -> std::ops::Range<u32> {
        let r = chunks_covering(&self.descs, offset, len);
        r.start as u32..r.end as u32
    }

    /// Whether chunk `index` may be handed to a reader now: the object is
    /// complete, or the chunk is present and the reader's ticket vouches
    /// for this descriptor list (`trusted`).
    ///
    /// # Errors
    /// The fetch failed; store errors.
    pub fn readable(&self, store: &Store, index: u32, trusted: bool) -> anyhow::Result<bool> {
        match self.state() {
            FetchState::Complete => Ok(true),
            FetchState::Failed(why) => Err(why.clone().into()),
            _ if trusted => Ok(store.has_chunk(self.oid, index)?),
            _ => Ok(false),
        }
    }

    /// Waits until chunk `index` is [`Fetch::readable`].
    ///
    /// # Errors
    /// The fetch failed or ended without the chunk.
    pub async fn wait_readable(
        &self,
        store: &Store,
        index: u32,
        trusted: bool,
    ) -> anyhow::Result<()> {
        let mut arrivals = self.arrivals();
        let mut state = self.watch_state();
        loop {
            if self.readable(store, index, trusted)? {
                return Ok(());
            }
            tokio::select! {
                r = arrivals.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = r {
                        bail!("the fetch of {} ended", self.oid);
                    }
                }
                r = state.changed() => {
                    if r.is_err() {
                        if self.readable(store, index, trusted)? {
                            return Ok(());
                        }
                        bail!("the fetch of {} ended", self.oid);
                    }
                }
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> FetchState {
        self.state.borrow().clone()
    }

    /// Whether a reader holding `target` may read verified chunks before
    /// the whole object is checked: its ticket vouches for this list.
    pub fn trusts(&self, target: &Target) -> bool {
        self.vouched_by(target.list_digest)
    }

    /// Whether a name vouching for `vouched` vouches for this fetch's list.
    pub fn vouched_by(&self, vouched: Option<[u8; 32]>) -> bool {
        vouched == Some(self.digest)
    }

    /// Watches the state.
    pub fn watch_state(&self) -> watch::Receiver<FetchState> {
        self.state.subscribe()
    }

    /// Indexes of chunks as they arrive. Subscribe before looking at what
    /// is present, so no arrival falls between.
    pub fn arrivals(&self) -> broadcast::Receiver<u32> {
        self.arrived.subscribe()
    }

    /// What each path delivered, when the source spreads over several.
    pub fn paths(&self) -> Vec<PathStats> {
        lock(&self.multipath)
            .as_ref()
            .map(|m| m.stats())
            .unwrap_or_default()
    }

    /// The source chunks are coming from now.
    pub fn source(&self) -> String {
        lock(&self.source).clone()
    }

    /// Seconds since the fetch started.
    pub fn age_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits until the state is `Complete` (Ok) or `Failed` (Err).
    ///
    /// # Errors
    /// The fetch failed.
    pub async fn complete(&self) -> anyhow::Result<()> {
        let mut rx = self.watch_state();
        loop {
            match &*rx.borrow_and_update() {
                FetchState::Complete => return Ok(()),
                FetchState::Failed(why) => return Err(why.clone().into()),
                _ => {}
            }
            if rx.changed().await.is_err() {
                bail!("the fetch of {} ended", self.oid);
            }
        }
    }
}

/// Whether a reader of `target` may join the running fetch `f`.
fn may_join(f: &Fetch, target: &Target) -> bool {
    target.list_digest.is_none_or(|d| d == f.digest)
}

/// Objects whose tickets are remembered (forgotten wholesale beyond).
const MAX_KNOWN: usize = 100_000;
/// Tickets remembered per object (the oldest forgotten beyond).
const KNOWN_PER_OBJECT: usize = 4;

/// Complete objects kept as finished fetches.
const COMPLETE_KEPT: usize = 256;

/// The agent's fetches in flight.
#[derive(Clone)]
pub struct Fetches {
    store: Store,
    running: Arc<Mutex<HashMap<Oid, Arc<Fetch>>>>,
    /// Complete local objects as finished fetches, recently asked for (at
    /// most [`COMPLETE_KEPT`]): a large object's descriptors are loaded
    /// once, not at every open of a file of a tree's pack.
    complete: Arc<Mutex<HashMap<Oid, Arc<Fetch>>>>,
    /// The last tickets seen for each object (newest last, at most
    /// [`KNOWN_PER_OBJECT`]): where to fetch it by OID, and what a name
    /// vouching for a list reads through.
    known: Arc<Mutex<HashMap<Oid, Vec<Target>>>>,
    /// Local addresses to fetch from (empty: the system's choice).
    binds: Arc<[IpAddr]>,
    /// Portable devices attached now.
    devices: Arc<Mutex<Vec<Arc<PortableSource>>>>,
    /// Devices as they are attached, for the fetches in flight.
    attached: broadcast::Sender<Arc<PortableSource>>,
    /// Copy every new put to attached keys marked as outboxes.
    outbox: bool,
    /// Peers asked for objects known by OID alone.
    peers: Arc<[Hint]>,
    /// Gtc sources (and their connections) kept between fetches.
    pool: sources::Pool,
    totals: Arc<totals::Totals>,
}

impl Fetches {
    /// No fetches yet.
    pub fn new(store: Store) -> Fetches {
        Fetches {
            store,
            running: Arc::new(Mutex::new(HashMap::new())),
            complete: Arc::new(Mutex::new(HashMap::new())),
            known: Arc::new(Mutex::new(HashMap::new())),
            binds: Arc::new([]),
            devices: Arc::new(Mutex::new(Vec::new())),
            attached: broadcast::Sender::new(16),
            outbox: false,
            peers: Arc::new([]),
            pool: sources::Pool::default(),
            totals: Arc::default(),
        }
    }

    /// What every fetch has brought in so far.
    pub fn totals(&self) -> totals::Snapshot {
        self.totals.snapshot()
    }

    /// Asks `peers` for objects the agent knows by OID alone (they must be
    /// open to this host: no token goes with the request).
    #[must_use]
    pub fn with_peers(mut self, peers: Vec<Hint>) -> Fetches {
        self.peers = peers.into();
        self
    }

    /// Copies every new put to each attached key that holds the marker
    /// file `.dot/outbox` (the paper's register_push).
    #[must_use]
    pub fn with_outbox(mut self, outbox: bool) -> Fetches {
        self.outbox = outbox;
        self
    }

    /// Fetches from each of `binds` (local addresses): every pair of a
    /// hint and a local address is a path.
    #[must_use]
    pub fn with_binds(mut self, binds: Vec<IpAddr>) -> Fetches {
        self.binds = binds.into();
        self
    }

    /// The store the fetches fill.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where to get `oid` by OID alone: the hints (and token) of the last
    /// ticket seen for it, else the configured peers. Never the list a
    /// ticket vouched for: a bare OID's reader gets bytes only once the
    /// whole object is proven to be that OID.
    pub fn known(&self, oid: Oid) -> Option<Target> {
        let seen = lock(&self.known)
            .get(&oid)
            .and_then(|l| l.last())
            .map(|t| Target {
                list_digest: None,
                ..t.clone()
            });
        seen.or_else(|| {
            (!self.peers.is_empty()).then(|| Target {
                hints: self.peers.to_vec(),
                ..Target::bare(oid)
            })
        })
    }

    /// The ticket seen for `oid` that vouches for the list `digest`.
    pub fn known_vouched(&self, oid: Oid, digest: [u8; 32]) -> Option<Target> {
        lock(&self.known)
            .get(&oid)?
            .iter()
            .rev()
            .find(|t| t.list_digest == Some(digest))
            .cloned()
    }

    fn remember(&self, target: &Target) {
        let mut known = lock(&self.known);
        if known.len() >= MAX_KNOWN && !known.contains_key(&target.oid) {
            known.clear();
        }
        let list = known.entry(target.oid).or_default();
        list.retain(|t| t.list_digest != target.list_digest);
        if list.len() >= KNOWN_PER_OBJECT {
            list.remove(0);
        }
        list.push(target.clone());
    }

    /// `target` itself, or for a bare OID with no hints given, what the
    /// agent knows of it (see [`Fetches::known`]).
    pub fn fill_in(&self, target: Target) -> Target {
        if target.is_bare()
            && let Some(known) = self.known(target.oid)
        {
            return known;
        }
        target
    }

    /// The fetches in flight.
    pub fn in_flight(&self) -> Vec<Arc<Fetch>> {
        lock(&self.running).values().cloned().collect()
    }

    /// Forgets what is kept of `oid` as a finished fetch (it left the
    /// store).
    pub fn forget(&self, oid: Oid) {
        lock(&self.complete).remove(&oid);
    }

    /// A running fetch of `oid`, if any.
    pub fn running(&self, oid: Oid) -> Option<Arc<Fetch>> {
        lock(&self.running).get(&oid).cloned()
    }

    /// Starts getting `target`, or joins the fetch of it already running,
    /// or returns the complete local object. Returns once the object's size
    /// and descriptors are known; chunks keep coming in the background.
    ///
    /// # Errors
    /// When no source can describe the object; the message lists each
    /// source's failure.
    pub async fn start(&self, target: &Target, whole: bool) -> anyhow::Result<Arc<Fetch>> {
        Ok(self.start_counted(target, whole).await?.0)
    }

    /// [`Fetches::start`], also returning how many bytes the fetch had
    /// taken from peers before this caller joined it (0 for a new one), so
    /// a get reports only what it waited for.
    ///
    /// # Errors
    /// As [`Fetches::start`].
    pub async fn start_counted(
        &self,
        target: &Target,
        whole: bool,
    ) -> anyhow::Result<(Arc<Fetch>, u64)> {
        let (fetch, created) = self.start_inner(target).await?;
        let before = if created {
            0
        } else {
            fetch.from_peers.load(Ordering::Relaxed)
        };
        if whole {
            fetch.want_all();
        }
        Ok((fetch, before))
    }

    async fn start_inner(&self, target: &Target) -> anyhow::Result<(Arc<Fetch>, bool)> {
        let oid = target.oid;
        if !target.hints.is_empty() {
            self.remember(target);
        }
        if let Some(f) = self.complete_local(oid).await? {
            return Ok((f, false));
        }
        if let Some(f) = self.joinable(target) {
            f.prepared().await?;
            return Ok((f, false));
        }
        let order = sources::ordered(&target.hints);
        // An attached device that holds the object describes it at once,
        // with no network at all; the hints stay fallbacks.
        let (source, rest, size, descs, failures) = match self.describe_on_devices(target).await {
            Some((source, size, descs)) => (source, order, size, descs, Default::default()),
            None => {
                let known = tree_lists::pack_list(&self.store, target).await;
                let d = sources::describe(&self.pool, target, &order, known).await?;
                let chunks = d.descs.len() as u32;
                let (source, rest) = sources::paths(
                    &self.pool,
                    target,
                    d.source,
                    &order,
                    d.at,
                    chunks,
                    &self.binds,
                )
                .await;
                (source, rest, d.size, d.descs, d.failures)
            }
        };
        let (wants_tx, wants_rx) = mpsc::unbounded_channel();
        // Join a fetch of this list started meanwhile, or start one.
        let (fetch, created) = {
            let mut running = lock(&self.running);
            match running.get(&oid).filter(|f| may_join(f, target)) {
                Some(f) => (f.clone(), false),
                None => {
                    let mut f = Fetch::new(oid, size, descs.into(), FetchState::Running);
                    f.wants = Some(wants_tx);
                    let f = Arc::new(f);
                    // A fetch of another list this ticket does not vouch for
                    // gives way: its partial object is replaced (begin_fill)
                    // and it fails.
                    if let Some(old) = running.insert(oid, f.clone()) {
                        tracing::info!(%oid, "a ticket vouching for another descriptor list takes over the fetch");
                        old.superseded.store(true, Ordering::Relaxed);
                    }
                    (f, true)
                }
            }
        };
        if !created {
            fetch.prepared().await?;
            return Ok((fetch, false));
        }
        let s = self.store.clone();
        let d = fetch.descs.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            s.begin_fill(oid, size, &d)?;
            s.pin(oid);
            s.fill_from_local(oid)?;
            s.missing(oid)
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r.map_err(anyhow::Error::from));
        let missing = match prepared {
            Ok(m) => m,
            Err(e) => {
                let e = e.context(format!("preparing to receive {oid}"));
                fetch
                    .state
                    .send_replace(FetchState::Failed(failures::Failure {
                        why: format!("{e:#}"),
                        kind: None,
                    }));
                fetch.prepared.send_replace(true);
                self.forget_fetch(&fetch);
                return Err(e);
            }
        };
        fetch.prepared.send_replace(true);
        let missing_bytes: u64 = missing
            .iter()
            .map(|&i| u64::from(fetch.descs[i as usize].len))
            .sum();
        fetch
            .held_at_start
            .store(size - missing_bytes, Ordering::Relaxed);
        self.totals.fetch_started();
        let held = (fetch.descs.len() - missing.len()) as u64;
        (self.totals).add(totals::Kind::Cache, size - missing_bytes, held);
        let run = run::Run::new(missing.len(), wants_rx, failures);
        tokio::spawn(
            self.clone()
                .run_task(fetch.clone(), target.clone(), source, rest, run),
        );
        Ok((fetch, true))
    }

    /// The running fetch of `target`'s object that its reader may join:
    /// a bare OID joins any (it waits for the whole-object check); a
    /// ticket joins only a fetch of the list it vouches for.
    fn joinable(&self, target: &Target) -> Option<Arc<Fetch>> {
        self.running(target.oid).filter(|f| may_join(f, target))
    }

    /// Drops `fetch` from the running ones, unless another took its place.
    fn forget_fetch(&self, fetch: &Arc<Fetch>) {
        let mut running = lock(&self.running);
        if running
            .get(&fetch.oid)
            .is_some_and(|f| Arc::ptr_eq(f, fetch))
        {
            running.remove(&fetch.oid);
        }
    }

    /// A complete local object as a finished fetch.
    async fn complete_local(&self, oid: Oid) -> anyhow::Result<Option<Arc<Fetch>>> {
        let s = self.store.clone();
        let complete = tokio::task::spawn_blocking(move || s.is_complete(oid)).await?;
        if !complete.unwrap_or(false) {
            lock(&self.complete).remove(&oid);
            return Ok(None);
        }
        if let Some(f) = lock(&self.complete).get(&oid) {
            return Ok(Some(f.clone()));
        }
        let s = self.store.clone();
        let found =
            tokio::task::spawn_blocking(move || match s.info(oid)?.filter(|i| i.complete) {
                Some(info) => Ok::<_, dot_store::Error>(Some((info.size, s.descriptors(oid)?))),
                None => Ok(None),
            })
            .await?;
        let Ok(Some((size, descs))) = found else {
            return Ok(None);
        };
        let f = Fetch::new(oid, size, descs, FetchState::Complete);
        f.held_at_start.store(size, Ordering::Relaxed);
        let f = Arc::new(f);
        let mut kept = lock(&self.complete);
        if kept.len() >= COMPLETE_KEPT {
            kept.clear();
        }
        kept.insert(oid, f.clone());
        Ok(Some(f))
    }
}
