//! Getting objects: one [`Fetch`] per object in flight, shared by every
//! client that asks for it.
//!
//! A fetch learns the object's descriptors from the first source (in hint
//! order, RFC 2782) that answers, fills what the store already holds, then
//! asks the sources for the missing chunks, falling back to the next source
//! when one fails or lies. Every chunk is verified by the store as it is
//! written; readers are told of each arrival.
//!
//! When the first source's priority group holds several hints, or the
//! agent is told to fetch from several local addresses, the source is a
//! [`Multipath`] over every (hint, local address) pair of that group; the
//! other priorities stay fallbacks. One path is a plain gtc source, as
//! before.
//!
//! When may a reader see a chunk before the whole object hashed to its OID?
//! Only when its own ticket carries the digest of the descriptor list the
//! fetch uses: verified chunks plus a list the ticket vouches for are the
//! object the ticket names. Readers without that (a bare OID, or a ticket
//! whose list differs) wait until the store has checked the whole OID.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use dot_plugins::gtc::client::{DEFAULT_WINDOW, GtcSource};
use dot_plugins::multipath::{Multipath, PathStats};
use dot_plugins::portable::{Device, PortableSource};
use dot_plugins::{ChunkEvent, Transfer};
use dot_store::descriptor::list_digest;
use dot_store::hint::order_hints;
use dot_store::{Descriptor, Hint, Oid, Store, Ticket, Token};
use tokio::sync::{broadcast, mpsc, watch};

/// What a get names: a ticket, or a bare OID.
#[derive(Debug, Clone)]
pub struct Target {
    /// The object.
    pub oid: Oid,
    /// Its access token, from the ticket.
    pub token: Option<Token>,
    /// Digest of its descriptor list, from the ticket.
    pub list_digest: Option<[u8; 32]>,
    /// Where to fetch it.
    pub hints: Vec<Hint>,
}

impl Target {
    /// Parses a ticket or OID; `hints`, if not empty, replace the ticket's.
    ///
    /// # Errors
    /// A clear message for a malformed ticket, OID or hint.
    pub fn parse(text: &str, hints: &[String]) -> anyhow::Result<Target> {
        let text = text.trim();
        let mut t = if text.starts_with(dot_store::oid::OID_PREFIX) {
            Target {
                oid: text.parse()?,
                token: None,
                list_digest: None,
                hints: Vec::new(),
            }
        } else {
            let ticket: Ticket = text.parse()?;
            Target {
                oid: ticket.oid(),
                token: ticket.token(),
                list_digest: ticket.list_digest(),
                hints: ticket.hints().to_vec(),
            }
        };
        if !hints.is_empty() {
            t.hints = hints
                .iter()
                .map(|h| h.parse::<Hint>())
                .collect::<Result<_, _>>()?;
        }
        Ok(t)
    }
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
    Failed(String),
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
    pub local: AtomicU64,
    source: Mutex<String>,
    multipath: Mutex<Option<Arc<Multipath>>>,
    started: Instant,
    wants: Option<mpsc::UnboundedSender<Vec<u32>>>,
}

impl Fetch {
    fn new(oid: Oid, size: u64, descs: Arc<[Descriptor]>, state: FetchState) -> Fetch {
        Fetch {
            wants: None,
            oid,
            size,
            digest: list_digest(&descs),
            descs,
            state: watch::Sender::new(state),
            arrived: broadcast::Sender::new(1024),
            from_peers: AtomicU64::new(0),
            from_devices: AtomicU64::new(0),
            local: AtomicU64::new(0),
            source: Mutex::new(String::new()),
            multipath: Mutex::new(None),
            started: Instant::now(),
        }
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
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return 0..0;
        }
        let first = self.descs.partition_point(|d| d.end() <= offset);
        let last = self.descs.partition_point(|d| d.offset < end);
        first as u32..last as u32
    }

    /// Waits until chunk `index` may be handed to a reader (present, and
    /// either the reader's ticket vouches for the list or the whole object
    /// is checked).
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
            match self.state() {
                FetchState::Complete => return Ok(()),
                FetchState::Failed(why) => bail!("{why}"),
                _ if trusted && store.has_chunk(self.oid, index)? => return Ok(()),
                _ => {}
            }
            tokio::select! {
                r = arrivals.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = r {
                        bail!("the fetch of {} ended", self.oid);
                    }
                }
                r = state.changed() => {
                    if r.is_err() {
                        if trusted && store.has_chunk(self.oid, index)? {
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
        target.list_digest == Some(self.digest)
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
        self.multipath
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.stats())
            .unwrap_or_default()
    }

    /// The source chunks are coming from now.
    pub fn source(&self) -> String {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
                FetchState::Failed(why) => bail!("{why}"),
                _ => {}
            }
            if rx.changed().await.is_err() {
                bail!("the fetch of {} ended", self.oid);
            }
        }
    }
}

/// The agent's fetches in flight.
#[derive(Clone)]
pub struct Fetches {
    store: Store,
    running: Arc<Mutex<HashMap<Oid, Arc<Fetch>>>>,
    /// The last ticket seen for each object: how to fetch it again by OID.
    known: Arc<Mutex<HashMap<Oid, Target>>>,
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
}

/// A source that answered with the object's descriptors.
struct Source {
    /// The hint or device it reads.
    label: String,
    plugin: Arc<dyn Transfer>,
    /// The same plugin when it spreads over several paths.
    multipath: Option<Arc<Multipath>>,
    /// A portable device rather than a peer.
    device: bool,
}

impl Source {
    fn single(hint: Hint, plugin: GtcSource) -> Source {
        Source {
            label: hint.to_string(),
            plugin: Arc::new(plugin),
            multipath: None,
            device: false,
        }
    }

    fn name(&self) -> String {
        match &self.multipath {
            Some(m) => m.name(),
            None => self.label.clone(),
        }
    }
}

impl Fetches {
    /// No fetches yet.
    pub fn new(store: Store) -> Fetches {
        Fetches {
            store,
            running: Arc::new(Mutex::new(HashMap::new())),
            known: Arc::new(Mutex::new(HashMap::new())),
            binds: Arc::new([]),
            devices: Arc::new(Mutex::new(Vec::new())),
            attached: broadcast::Sender::new(16),
            outbox: false,
            peers: Arc::new([]),
        }
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

    /// A new local object: in outbox mode, copied in the background to
    /// every attached outbox key (a failure is logged; the put stands).
    pub fn put_done(&self, oid: Oid) {
        if !self.outbox {
            return;
        }
        for device in self.devices() {
            let mount = device.mount_point().to_owned();
            if !mount
                .join(dot_plugins::portable::DIR)
                .join(OUTBOX)
                .is_file()
            {
                continue;
            }
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                let done = Device::open(&mount)
                    .map_err(|e| e.to_string())
                    .and_then(|d| d.export(&store, oid, |_, _| {}).map_err(|e| e.to_string()));
                match done {
                    Ok(size) => {
                        tracing::info!(%oid, size, device = %mount.display(), "put copied to outbox")
                    }
                    Err(e) => {
                        tracing::warn!(%oid, device = %mount.display(), error = %e, "copy to outbox failed")
                    }
                }
            });
        }
    }

    /// A filesystem holding a DOT store was mounted at `mount`: every
    /// fetch in flight, and every new one, asks it for all its missing
    /// chunks at once.
    pub fn device_appeared(&self, mount: &Path) {
        let device = match Device::open(mount) {
            Ok(d) => Arc::new(PortableSource::new(d)),
            Err(e) => {
                tracing::info!(mount = %mount.display(), error = %e, "not a DOT device");
                return;
            }
        };
        tracing::info!(mount = %mount.display(), "device attached");
        {
            let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
            devices.retain(|d| d.mount_point() != mount);
            devices.push(device.clone());
        }
        let _ = self.attached.send(device);
    }

    /// The device at `mount` left: fetches go on without it (reads of a
    /// pulled device fail, and are fetched elsewhere).
    pub fn device_left(&self, mount: &Path) {
        tracing::info!(mount = %mount.display(), "device detached");
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|d| d.mount_point() != mount);
    }

    /// The devices attached now.
    pub fn devices(&self) -> Vec<Arc<PortableSource>> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The object's description from an attached device, if one holds it
    /// (and, with a ticket's list digest, the list the ticket vouches for).
    async fn describe_on_devices(&self, target: &Target) -> Option<(Source, u64, Vec<Descriptor>)> {
        for device in self.devices() {
            let Ok(d) = device.get_descriptors(target.oid, None).await else {
                continue;
            };
            if target
                .list_digest
                .is_some_and(|want| list_digest(&d.descriptors) != want)
            {
                tracing::warn!(oid = %target.oid, device = %device.name(), "descriptor list on the device does not match the ticket");
                continue;
            }
            let source = Source {
                label: device.name(),
                plugin: device,
                multipath: None,
                device: true,
            };
            return Some((source, d.size, d.descriptors));
        }
        None
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

    /// What the agent knows of where to get `oid`: the last ticket (with
    /// hints) it was given for it, else the configured peers (no token, no
    /// vouched-for list: readers wait for the whole-object check).
    pub fn known(&self, oid: Oid) -> Option<Target> {
        let seen = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&oid)
            .cloned();
        seen.or_else(|| {
            (!self.peers.is_empty()).then(|| Target {
                oid,
                token: None,
                list_digest: None,
                hints: self.peers.to_vec(),
            })
        })
    }

    /// `target` itself, or for a bare OID with no hints given, what the
    /// agent knows of it (see [`Fetches::known`]).
    pub fn fill_in(&self, target: Target) -> Target {
        if target.hints.is_empty() && target.token.is_none() {
            if let Some(known) = self.known(target.oid) {
                return known;
            }
        }
        target
    }

    /// The fetches in flight.
    pub fn in_flight(&self) -> Vec<Arc<Fetch>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Oid, Arc<Fetch>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
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

    /// A running fetch of `oid`, if any.
    pub fn running(&self, oid: Oid) -> Option<Arc<Fetch>> {
        self.lock().get(&oid).cloned()
    }

    async fn start_inner(&self, target: &Target) -> anyhow::Result<(Arc<Fetch>, bool)> {
        let oid = target.oid;
        if !target.hints.is_empty() {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if known.len() >= MAX_KNOWN {
                known.clear();
            }
            known.insert(oid, target.clone());
        }
        if let Some(f) = self.local(oid).await? {
            return Ok((f, false));
        }
        if let Some(f) = self.lock().get(&oid) {
            return Ok((f.clone(), false));
        }
        let order = ordered(&target.hints);
        // An attached device that holds the object describes it at once,
        // with no network at all; the hints stay fallbacks.
        let (source, rest, size, descs, failures) = match self.describe_on_devices(target).await {
            Some((source, size, descs)) => (source, order, size, descs, Vec::new()),
            None => {
                let (at, source, size, descs, failures) = describe(target, &order).await?;
                let (source, rest) = self
                    .paths(target, source, &order, at, descs.len() as u32)
                    .await;
                (source, rest, size, descs, failures)
            }
        };
        let descs: Arc<[Descriptor]> = descs.into();
        let (wants_tx, wants_rx) = mpsc::unbounded_channel();
        let fetch = {
            let mut running = self.lock();
            if let Some(f) = running.get(&oid) {
                return Ok((f.clone(), false));
            }
            let mut f = Fetch::new(oid, size, descs, FetchState::Running);
            f.wants = Some(wants_tx);
            let f = Arc::new(f);
            running.insert(oid, f.clone());
            f
        };
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
                self.lock().remove(&oid);
                return Err(e.context(format!("preparing to receive {oid}")));
            }
        };
        let missing_bytes: u64 = missing
            .iter()
            .map(|&i| u64::from(fetch.descs[i as usize].len))
            .sum();
        fetch.local.store(size - missing_bytes, Ordering::Relaxed);
        let this = self.clone();
        let f = fetch.clone();
        let target = target.clone();
        tokio::spawn(async move {
            let mut run = Run {
                missing: missing.into_iter().collect(),
                requested: std::collections::BTreeSet::new(),
                wants: wants_rx,
                failures,
            };
            let result = this.run(&f, &target, source, rest, &mut run).await;
            this.lock().remove(&f.oid);
            match result {
                Ok(true) => {
                    f.state.send_replace(FetchState::Complete);
                }
                // Idle: nobody wanted more for a while. Readers holding it
                // start a new fetch when they want more.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(oid = %f.oid, error = %format!("{e:#}"), "get failed");
                    f.state.send_replace(FetchState::Failed(format!("{e:#}")));
                }
            }
            this.store.unpin(f.oid);
        });
        Ok((fetch, true))
    }

    /// The source to fetch from, given the one that described the object
    /// (`order[at]`), and the hints left as fallbacks. The hints of its
    /// priority after it, each from every local address to bind, are paths
    /// of one [`Multipath`] source; a single path stays a plain source.
    async fn paths(
        &self,
        target: &Target,
        first: Source,
        order: &[Hint],
        at: usize,
        descs_len: u32,
    ) -> (Source, Vec<Hint>) {
        let (oid, token) = (target.oid, target.token);
        let chunks = descs_len;
        let prio = order[at].priority;
        let group_start = order[..at]
            .iter()
            .rposition(|h| h.priority != prio)
            .map_or(0, |p| p + 1);
        let group_end = at
            + order[at..]
                .iter()
                .take_while(|h| h.priority == prio)
                .count();
        let rest = order[group_end..].to_vec();
        // The hint that answered first, then the others of its priority.
        let mut group: Vec<&Hint> = vec![&order[at]];
        group.extend(
            (group_start..group_end)
                .filter(|&i| i != at)
                .map(|i| &order[i]),
        );
        if group.len() < 2 && self.binds.len() < 2 {
            if let [bind] = *self.binds
                && let Some(addr) = resolve(&order[at], &mut Vec::new()).await
            {
                let plugin = GtcSource::bound(addr, Some(bind), DEFAULT_WINDOW);
                plugin.grant(oid, token, chunks);
                return (
                    Source {
                        plugin: Arc::new(plugin),
                        ..first
                    },
                    rest,
                );
            }
            return (first, rest);
        }
        let binds: Vec<Option<IpAddr>> = if self.binds.is_empty() {
            vec![None]
        } else {
            self.binds.iter().copied().map(Some).collect()
        };
        let mut paths: Vec<Arc<dyn Transfer>> = Vec::new();
        for hint in group {
            let Some(addr) = resolve(hint, &mut Vec::new()).await else {
                continue;
            };
            for bind in &binds {
                // The source that answered already is the first path.
                if paths.is_empty() && bind.is_none() {
                    paths.push(first.plugin.clone());
                } else {
                    let path = GtcSource::bound(addr, *bind, DEFAULT_WINDOW);
                    path.grant(oid, token, chunks);
                    paths.push(Arc::new(path));
                }
            }
        }
        if paths.len() < 2 {
            return (first, rest);
        }
        let multipath = Arc::new(Multipath::new(paths));
        let source = Source {
            label: first.label,
            plugin: multipath.clone(),
            multipath: Some(multipath),
            device: false,
        };
        (source, rest)
    }

    /// A complete local object as a finished fetch.
    async fn local(&self, oid: Oid) -> anyhow::Result<Option<Arc<Fetch>>> {
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
        f.local.store(size, Ordering::Relaxed);
        Ok(Some(Arc::new(f)))
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
    ) -> anyhow::Result<bool> {
        let mut next = Some(first);
        let mut others = rest.into_iter();
        while !run.missing.is_empty() {
            let Some(source) = next.take() else {
                match others.next() {
                    Some(hint) => {
                        match connect(&hint, target, fetch).await {
                            Ok(s) => next = Some(s),
                            Err(e) => run.failures.push(format!("{hint}: {e:#}")),
                        }
                        continue;
                    }
                    None => bail!("could not get {}: {}", fetch.oid, run.failures.join("; ")),
                }
            };
            match self.pull(fetch, &source, run).await {
                Ok(true) => break,
                Ok(false) => return Ok(false),
                Err(e) => {
                    tracing::warn!(oid = %fetch.oid, source = %source.label, error = %format!("{e:#}"), "source failed; trying the next");
                    run.failures.push(format!("{}: {e:#}", source.label));
                }
            }
        }
        fetch.state.send_replace(FetchState::Verifying);
        let s = self.store.clone();
        let oid = fetch.oid;
        // Readers already have their verified chunks: the whole-object
        // pass only yields to them, on an idle-priority thread.
        tokio::task::spawn_blocking(move || at_idle_priority(|| s.finish(oid)))
            .await?
            .context("checking the whole object")?;
        Ok(true)
    }

    /// Fetches wanted chunks from one source until none is missing (true)
    /// or nothing was wanted for [`IDLE`] (false).
    async fn pull(&self, fetch: &Fetch, source: &Source, run: &mut Run) -> anyhow::Result<bool> {
        let oid = fetch.oid;
        *fetch.source.lock().unwrap_or_else(|p| p.into_inner()) = source.name();
        *fetch.multipath.lock().unwrap_or_else(|p| p.into_inner()) = source.multipath.clone();
        let (ev_tx, mut events) = mpsc::channel::<ChunkEvent>(1024);
        let mut outstanding: std::collections::HashSet<u32> = std::collections::HashSet::new();
        let submit = |batch: Vec<u32>, outstanding: &mut std::collections::HashSet<u32>| {
            if batch.is_empty() {
                return;
            }
            outstanding.extend(batch.iter().copied());
            let wanted = batch
                .into_iter()
                .map(|i| (i, fetch.descs[i as usize]))
                .collect();
            let mut rx = source.plugin.get_chunks(oid, wanted);
            let tx = ev_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if tx.send(e).await.is_err() {
                        break;
                    }
                }
            });
        };
        // Attached devices are asked for every missing chunk at once, now
        // and as they come; what they hold arrives beside the source's.
        let (dev_tx, mut from_devices) = mpsc::channel::<(String, ChunkEvent)>(1024);
        let mut attached = self.attached.subscribe();
        let attach = |device: Arc<PortableSource>, missing: &std::collections::HashSet<u32>| {
            if device.name() == source.label {
                return;
            }
            let mut all: Vec<u32> = missing.iter().copied().collect();
            all.sort_unstable();
            let wanted = all
                .into_iter()
                .map(|i| (i, fetch.descs[i as usize]))
                .collect();
            let mut rx = device.get_chunks(oid, wanted);
            let tx = dev_tx.clone();
            let name = device.name();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if tx.send((name.clone(), e)).await.is_err() {
                        break;
                    }
                }
            });
        };
        for device in self.devices() {
            attach(device, &run.missing);
        }
        // What earlier sources were asked for and did not deliver.
        let carried: Vec<u32> = run
            .requested
            .iter()
            .copied()
            .filter(|i| run.missing.contains(i))
            .collect();
        submit(carried, &mut outstanding);
        while !run.missing.is_empty() {
            tokio::select! {
                biased;
                ev = events.recv() => match ev {
                    Some(ChunkEvent::Chunk { index, data }) => {
                        outstanding.remove(&index);
                        if !run.missing.contains(&index) {
                            continue;
                        }
                        self.store
                            .write_chunk(oid, index, &data)
                            .with_context(|| format!("from {}", source.plugin.name()))?;
                        run.missing.remove(&index);
                        run.requested.remove(&index);
                        let counter = if source.device {
                            &fetch.from_devices
                        } else {
                            &fetch.from_peers
                        };
                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                        let _ = fetch.arrived.send(index);
                    }
                    Some(ChunkEvent::Failed { index, error }) => bail!("chunk {index}: {error}"),
                    Some(ChunkEvent::SourceFailed(e)) => return Err(e.into()),
                    None => bail!("{} stopped answering", source.plugin.name()),
                },
                Some((device, ev)) = from_devices.recv() => match ev {
                    ChunkEvent::Chunk { index, data } => {
                        if !run.missing.contains(&index) {
                            continue;
                        }
                        if let Err(e) = self.store.write_chunk(oid, index, &data) {
                            tracing::warn!(%oid, index, %device, error = %e, "chunk from the device refused; fetched elsewhere");
                            continue;
                        }
                        run.missing.remove(&index);
                        run.requested.remove(&index);
                        if outstanding.remove(&index) {
                            source.plugin.cancel_chunks(oid, &[index]);
                        }
                        fetch
                            .from_devices
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                        let _ = fetch.arrived.send(index);
                    }
                    // Not on the device: the source brings it.
                    ChunkEvent::Failed { .. } => {}
                    ChunkEvent::SourceFailed(e) => {
                        tracing::info!(%oid, %device, error = %e, "device stopped delivering");
                    }
                },
                device = attached.recv() => {
                    if let Ok(device) = device {
                        attach(device, &run.missing);
                    }
                }
                want = run.wants.recv() => {
                    let Some(want) = want else { return Ok(false) };
                    // Each chunk once: not present, not in flight, not
                    // twice in this want.
                    let batch: Vec<u32> = want
                        .into_iter()
                        .filter(|i| run.missing.contains(i) && outstanding.insert(*i))
                        .collect();
                    run.requested.extend(batch.iter().copied());
                    submit(batch, &mut outstanding);
                }
                () = tokio::time::sleep(IDLE), if outstanding.is_empty() => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// The file in a key's `.dot/` that marks it as an outbox.
pub const OUTBOX: &str = "outbox";

/// Tickets remembered for fetching by OID (forgotten wholesale beyond).
const MAX_KNOWN: usize = 100_000;

/// A fetch with nothing wanted and nothing in flight ends after this.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The state of a fetch's task.
struct Run {
    /// Chunks not present.
    missing: std::collections::HashSet<u32>,
    /// Chunks asked for and not yet delivered.
    requested: std::collections::BTreeSet<u32>,
    wants: mpsc::UnboundedReceiver<Vec<u32>>,
    failures: Vec<String>,
}

/// Runs `f` with the calling thread scheduled only when a CPU is
/// otherwise idle (SCHED_IDLE), then restores its policy.
fn at_idle_priority<T>(f: impl FnOnce() -> T) -> T {
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the parameter is valid for both
    // policies.
    let lowered = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } == 0;
    let out = f();
    if lowered {
        // SAFETY: as above.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &idle) };
    }
    out
}

/// The hints in the order to try them.
fn ordered(hints: &[Hint]) -> Vec<Hint> {
    let mut seed = Token::random()
        .map(|t| {
            u64::from_le_bytes([
                t.0[0], t.0[1], t.0[2], t.0[3], t.0[4], t.0[5], t.0[6], t.0[7],
            ])
        })
        .unwrap_or(1)
        | 1;
    order_hints(hints, || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    })
    .into_iter()
    .cloned()
    .collect()
}

/// Asks the sources for the object's descriptors, one priority group after
/// the other; within a group all at once (a slow path must not hold up the
/// start). Returns the first that answers with the list the ticket vouches
/// for (if it gives a digest), its position in `order`, and the failures
/// seen.
async fn describe(
    target: &Target,
    order: &[Hint],
) -> anyhow::Result<(usize, Source, u64, Vec<Descriptor>, Vec<String>)> {
    let oid = target.oid;
    let mut failures = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let prio = order[start].priority;
        let end = start
            + order[start..]
                .iter()
                .take_while(|h| h.priority == prio)
                .count();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (at, hint) in order.iter().enumerate().take(end).skip(start) {
            let (tx, hint, token) = (tx.clone(), hint.clone(), target.token);
            tokio::spawn(async move {
                let mut why = Vec::new();
                let answer = match plugin_for(&hint, &mut why).await {
                    Some(plugin) => Some(
                        plugin
                            .get_descriptors(oid, token)
                            .await
                            .map(|d| (plugin, d)),
                    ),
                    None => None,
                };
                let _ = tx.send((at, hint, answer, why));
            });
        }
        drop(tx);
        while let Some((at, hint, answer, mut why)) = rx.recv().await {
            failures.append(&mut why);
            match answer {
                Some(Ok((plugin, d))) => {
                    if target
                        .list_digest
                        .is_some_and(|want| list_digest(&d.descriptors) != want)
                    {
                        failures.push(format!("{hint}: descriptor list does not match the ticket"));
                        continue;
                    }
                    return Ok((
                        at,
                        Source::single(hint, plugin),
                        d.size,
                        d.descriptors,
                        failures,
                    ));
                }
                Some(Err(e)) => failures.push(format!("{hint}: {e}")),
                None => {}
            }
        }
        start = end;
    }
    if failures.is_empty() {
        bail!("{oid} is not here and no source is known for it (give a ticket or --hint)");
    }
    Err(anyhow!("could not get {oid}: {}", failures.join("; ")))
}

/// Connects to a further source and checks it describes the object as the
/// fetch does.
async fn connect(hint: &Hint, target: &Target, fetch: &Fetch) -> anyhow::Result<Source> {
    let mut failures = Vec::new();
    let Some(plugin) = plugin_for(hint, &mut failures).await else {
        bail!("{}", failures.join("; "));
    };
    let d = plugin.get_descriptors(fetch.oid, target.token).await?;
    if d.size != fetch.size || d.descriptors.as_slice() != &*fetch.descs {
        bail!("describes the object differently");
    }
    Ok(Source::single(hint.clone(), plugin))
}

async fn plugin_for(hint: &Hint, failures: &mut Vec<String>) -> Option<GtcSource> {
    let addr = resolve(hint, failures).await?;
    Some(GtcSource::new(addr, DEFAULT_WINDOW))
}

/// The address of a gtc hint.
async fn resolve(hint: &Hint, failures: &mut Vec<String>) -> Option<std::net::SocketAddr> {
    let Some(authority) = hint.gtc_authority() else {
        failures.push(format!("{hint}: unsupported method"));
        return None;
    };
    match tokio::net::lookup_host(authority)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => Some(addr),
        Ok(None) | Err(_) => {
            failures.push(format!("{hint}: cannot resolve"));
            None
        }
    }
}
