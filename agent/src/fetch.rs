//! Getting objects: one [`Fetch`] per object in flight, shared by every
//! client that asks for it.
//!
//! A fetch learns the object's descriptors from the first source (in hint
//! order, RFC 2782) that answers, fills what the store already holds, then
//! asks the sources for the missing chunks, falling back to the next source
//! when one fails or lies. Every chunk is verified by the store as it is
//! written; readers are told of each arrival.
//!
//! When may a reader see a chunk before the whole object hashed to its OID?
//! Only when its own ticket carries the digest of the descriptor list the
//! fetch uses: verified chunks plus a list the ticket vouches for are the
//! object the ticket names. Readers without that (a bare OID, or a ticket
//! whose list differs) wait until the store has checked the whole OID.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use dot_plugins::gtc::client::{DEFAULT_WINDOW, GtcSource};
use dot_plugins::{ChunkEvent, Transfer};
use dot_store::descriptor::list_digest;
use dot_store::hint::order_hints;
use dot_store::{Descriptor, Hint, Oid, Store, Ticket, Token};
use tokio::sync::{broadcast, watch};

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
    /// Bytes the store held when the fetch started.
    pub local: AtomicU64,
    source: Mutex<String>,
    started: Instant,
}

impl Fetch {
    fn new(oid: Oid, size: u64, descs: Arc<[Descriptor]>, state: FetchState) -> Fetch {
        Fetch {
            oid,
            size,
            digest: list_digest(&descs),
            descs,
            state: watch::Sender::new(state),
            arrived: broadcast::Sender::new(1024),
            from_peers: AtomicU64::new(0),
            local: AtomicU64::new(0),
            source: Mutex::new(String::new()),
            started: Instant::now(),
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
}

/// A source that answered with the object's descriptors.
struct Source {
    hint: Hint,
    plugin: GtcSource,
}

impl Fetches {
    /// No fetches yet.
    pub fn new(store: Store) -> Fetches {
        Fetches {
            store,
            running: Arc::new(Mutex::new(HashMap::new())),
        }
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
    pub async fn start(&self, target: &Target) -> anyhow::Result<Arc<Fetch>> {
        let oid = target.oid;
        if let Some(f) = self.local(oid).await? {
            return Ok(f);
        }
        if let Some(f) = self.lock().get(&oid) {
            return Ok(f.clone());
        }
        let order = ordered(&target.hints);
        let (at, source, size, descs, mut failures) = describe(target, &order).await?;
        let rest = order[at + 1..].to_vec();
        let descs: Arc<[Descriptor]> = descs.into();
        let fetch = {
            let mut running = self.lock();
            if let Some(f) = running.get(&oid) {
                return Ok(f.clone());
            }
            let f = Arc::new(Fetch::new(oid, size, descs, FetchState::Running));
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
            let result = this.run(&f, &target, source, rest, &mut failures).await;
            let state = match result {
                Ok(()) => FetchState::Complete,
                Err(e) => {
                    tracing::warn!(oid = %f.oid, error = %format!("{e:#}"), "get failed");
                    FetchState::Failed(format!("{e:#}"))
                }
            };
            this.lock().remove(&f.oid);
            f.state.send_replace(state);
            this.store.unpin(f.oid);
        });
        Ok(fetch)
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

    /// Brings every chunk in (first source, then the others in order), then
    /// checks the whole object.
    async fn run(
        &self,
        fetch: &Fetch,
        target: &Target,
        first: Source,
        rest: Vec<Hint>,
        failures: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut next = Some(first);
        let mut others = rest.into_iter();
        loop {
            let Some(source) = next.take() else {
                match others.next() {
                    Some(hint) => {
                        match connect(&hint, target, fetch).await {
                            Ok(s) => next = Some(s),
                            Err(e) => failures.push(format!("{hint}: {e:#}")),
                        }
                        continue;
                    }
                    None => bail!("could not get {}: {}", fetch.oid, failures.join("; ")),
                }
            };
            match self.pull(fetch, &source).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(oid = %fetch.oid, source = %source.hint, error = %format!("{e:#}"), "source failed; trying the next");
                    failures.push(format!("{}: {e:#}", source.hint));
                }
            }
        }
        fetch.state.send_replace(FetchState::Verifying);
        let s = self.store.clone();
        let oid = fetch.oid;
        tokio::task::spawn_blocking(move || s.finish(oid))
            .await?
            .context("checking the whole object")?;
        Ok(())
    }

    /// Fetches the chunks still missing from one source.
    async fn pull(&self, fetch: &Fetch, source: &Source) -> anyhow::Result<()> {
        let oid = fetch.oid;
        *fetch.source.lock().unwrap_or_else(|p| p.into_inner()) = source.hint.to_string();
        let s = self.store.clone();
        let missing = tokio::task::spawn_blocking(move || s.missing(oid)).await??;
        let wanted: Vec<_> = missing
            .iter()
            .map(|&i| (i, fetch.descs[i as usize]))
            .collect();
        let count = wanted.len();
        let mut events = source.plugin.get_chunks(oid, wanted);
        let mut got = 0;
        while got < count {
            match events.recv().await {
                Some(ChunkEvent::Chunk { index, data }) => {
                    self.store
                        .write_chunk(oid, index, &data)
                        .with_context(|| format!("from {}", source.plugin.name()))?;
                    fetch
                        .from_peers
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    let _ = fetch.arrived.send(index);
                    got += 1;
                }
                Some(ChunkEvent::Failed { index, error }) => bail!("chunk {index}: {error}"),
                Some(ChunkEvent::SourceFailed(e)) => return Err(e.into()),
                None => bail!("{} stopped answering", source.plugin.name()),
            }
        }
        Ok(())
    }
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

/// Asks the sources in order for the object's descriptors; returns the
/// first that answers (with the list the ticket vouches for, if it gives a
/// digest), and the failures of those before it.
/// The first element is the position of that source in `order`.
async fn describe(
    target: &Target,
    order: &[Hint],
) -> anyhow::Result<(usize, Source, u64, Vec<Descriptor>, Vec<String>)> {
    let oid = target.oid;
    let mut failures = Vec::new();
    for (at, hint) in order.iter().enumerate() {
        let hint = hint.clone();
        let Some(plugin) = plugin_for(&hint, &mut failures).await else {
            continue;
        };
        match plugin.get_descriptors(oid, target.token).await {
            Ok(d) => {
                if target
                    .list_digest
                    .is_some_and(|want| list_digest(&d.descriptors) != want)
                {
                    failures.push(format!("{hint}: descriptor list does not match the ticket"));
                    continue;
                }
                return Ok((at, Source { hint, plugin }, d.size, d.descriptors, failures));
            }
            Err(e) => failures.push(format!("{hint}: {e}")),
        }
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
    Ok(Source {
        hint: hint.clone(),
        plugin,
    })
}

async fn plugin_for(hint: &Hint, failures: &mut Vec<String>) -> Option<GtcSource> {
    let Some(authority) = hint.gtc_authority() else {
        failures.push(format!("{hint}: unsupported method"));
        return None;
    };
    match tokio::net::lookup_host(authority)
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(addr)) => Some(GtcSource::new(addr, DEFAULT_WINDOW)),
        Ok(None) | Err(_) => {
            failures.push(format!("{hint}: cannot resolve"));
            None
        }
    }
}
