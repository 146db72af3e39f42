//! The agent behind the FUSE namespace: resolves names through the store
//! and the fetches, reads verified bytes (demand first, then readahead for
//! sequential readers), puts files written under `put/`.
//!
//! FUSE threads call in and return at once; the work runs on the agent's
//! tokio runtime and every wait is bounded by the read timeout.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dot_fusefs::{Done, Meta, Name, ObjError, Objects, Put, Vouched};
use dot_store::tree::{MAX_MANIFEST, Manifest};
use dot_store::{Bytes, Oid, Store, Ticket};

use crate::fetch::{Fetch, Fetches, Target};
use crate::tickets::Issuer;

/// Readahead starts at this many bytes past a sequential read and doubles
/// with each further sequential read up to [`MAX_AHEAD`].
const FIRST_AHEAD: u64 = 4 << 20;
const MAX_AHEAD: u64 = 64 << 20;
/// Bytes read in sequence before readahead starts.
const SEQUENTIAL_AFTER: u64 = 1 << 20;
/// The readahead the mount asks the kernel for.
const KERNEL_READAHEAD: u64 = dot_fusefs::KERNEL_READAHEAD_KB << 10;

/// Where a sequential reader of an object is.
#[derive(Clone, Copy)]
struct Stream {
    /// Where the next sequential read starts.
    next: u64,
    /// Bytes asked for ahead of it.
    ahead: u64,
    /// End of what was asked for already.
    wanted_to: u64,
    /// Bytes read in this run of sequential reads.
    run: u64,
}

/// The agent's [`Objects`] (cheap to clone: the state is shared).
#[derive(Clone)]
pub struct AgentObjects {
    rt: tokio::runtime::Handle,
    fetches: Fetches,
    issuer: Issuer,
    timeout: Duration,
    streams: Arc<Mutex<HashMap<Oid, Stream>>>,
    /// Objects seen complete (so a read needs no index query).
    complete: Arc<Mutex<std::collections::HashSet<Oid>>>,
}

impl AgentObjects {
    /// Objects served from `fetches`, reads bounded by `timeout`.
    pub fn new(
        rt: tokio::runtime::Handle,
        fetches: Fetches,
        issuer: Issuer,
        timeout: Duration,
    ) -> Arc<AgentObjects> {
        Arc::new(AgentObjects {
            rt,
            fetches,
            issuer,
            timeout,
            streams: Arc::new(Mutex::new(HashMap::new())),
            complete: Arc::new(Mutex::new(std::collections::HashSet::new())),
        })
    }

    fn store(&self) -> &Store {
        self.fetches.store()
    }

    async fn resolve_async(&self, name: Name) -> Result<Meta, ObjError> {
        let target = match name {
            Name::Ticket(t) => Target::from(&*t),
            Name::Oid(oid) => self.fetches.fill_in(Target::bare(oid)),
        };
        let fetch = self.fetches.start(&target, false).await.map_err(|e| {
            tracing::info!(oid = %target.oid, error = %format!("{e:#}"), "cannot resolve");
            // A bare OID that neither the store, a key nor a configured
            // peer has is not there; a ticket's sources failing is an error.
            if target.access.is_none() {
                ObjError::NotFound
            } else {
                ObjError::Failed(format!("{e:#}"))
            }
        })?;
        Ok(Meta {
            oid: fetch.oid,
            size: fetch.size,
            vouched: target.list_digest,
        })
    }

    /// The fetch to read `oid` through for a name vouching for
    /// `vouched`, and the target it stands for: the ticket seen for that
    /// list, or for a bare OID what the agent knows of it (hints only:
    /// such reads wait for the whole-object check).
    async fn fetch_for(
        &self,
        oid: Oid,
        vouched: Vouched,
    ) -> Result<(Arc<Fetch>, Target), ObjError> {
        let target = match vouched {
            Some(d) => self.fetches.known_vouched(oid, d).ok_or_else(|| {
                ObjError::Failed(format!("no ticket seen for this list of {oid}"))
            })?,
            None => self.fetches.fill_in(Target::bare(oid)),
        };
        if let Some(f) = self
            .fetches
            .running(oid)
            .filter(|f| vouched.is_none() || f.vouched_by(vouched))
        {
            return Ok((f, target));
        }
        let f = self
            .fetches
            .start(&target, false)
            .await
            .map_err(|e| ObjError::Failed(format!("{e:#}")))?;
        Ok((f, target))
    }

    /// Asks for the chunks of `offset..offset+len`, plus readahead when the
    /// reader is sequential. The kernel sends a sequential reader's reads
    /// several at a time and not quite in order, so "sequential" means
    /// "inside the region read or asked for so far"; a read elsewhere
    /// starts over.
    fn want(&self, fetch: &Fetch, offset: u64, len: u64) -> bool {
        let mut wanted: Vec<u32> = fetch.chunks_of(offset, len).collect();
        let end = offset + len;
        {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            if streams.len() > 4096 {
                streams.clear();
            }
            let s = streams.entry(fetch.oid).or_insert(Stream {
                next: u64::MAX,
                ahead: 0,
                wanted_to: 0,
                run: 0,
            });
            // The kernel's own readahead window: how far apart the reads
            // of one sequential reader may arrive.
            let slack = KERNEL_READAHEAD;
            let inside = s.next != u64::MAX
                && offset.saturating_add(slack) >= s.next
                && offset <= s.next.saturating_add(slack);
            if inside {
                s.run += len;
                s.next = s.next.max(end);
            } else {
                s.run = len;
                s.ahead = 0;
                s.next = end;
                s.wanted_to = end;
            }
            // A random read (and the kernel's small readahead after it)
            // fetches just what it covers; a run of reads ramps up.
            let streaming = s.run >= SEQUENTIAL_AFTER;
            if streaming {
                s.ahead = (s.ahead * 2).clamp(FIRST_AHEAD, MAX_AHEAD);
            }
            let to = s.next.saturating_add(s.ahead).min(fetch.size);
            let from = s.wanted_to.max(end);
            if streaming && to > from {
                wanted.extend(fetch.chunks_of(from, to - from));
                s.wanted_to = to;
            }
        }
        fetch.want(wanted)
    }

    /// Whether `oid` was seen complete before.
    fn known_complete(&self, oid: Oid) -> bool {
        self.complete
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&oid)
    }

    async fn read_async(
        &self,
        oid: Oid,
        vouched: Vouched,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, ObjError> {
        let store = self.store().clone();
        let complete = self.fetches.running(oid).is_none()
            && (self.known_complete(oid) || {
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.is_complete(oid))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false)
            });
        if !complete {
            let (mut fetch, target) = self.fetch_for(oid, vouched).await?;
            if !self.want(&fetch, offset, u64::from(len)) {
                // It went idle in between: start again.
                fetch = self
                    .fetches
                    .start(&target, false)
                    .await
                    .map_err(|e| ObjError::Failed(format!("{e:#}")))?;
                self.want(&fetch, offset, u64::from(len));
            }
            let trusted = fetch.trusts(&target);
            if !trusted {
                // This reader waits for the whole-object check: the whole
                // object must come, not just what it reads.
                fetch.want_all();
            }
            for i in fetch.chunks_of(offset, u64::from(len)) {
                fetch
                    .wait_readable(&store, i, trusted)
                    .await
                    .map_err(|e| ObjError::Failed(format!("{e:#}")))?;
            }
        }
        tokio::task::spawn_blocking(move || store.read_bytes(oid, offset, len as usize))
            .await
            .map_err(|e| ObjError::Failed(e.to_string()))?
            .map_err(|e| ObjError::Failed(e.to_string()))
    }
}

impl Objects for AgentObjects {
    fn tree(&self, ticket: Ticket, done: Done<(Meta, Manifest)>) {
        let this = self.clone();
        let timeout = self.timeout;
        self.rt.spawn(async move {
            let fetch = async {
                let meta = this.resolve_async(Name::Ticket(Box::new(ticket))).await?;
                if meta.size > MAX_MANIFEST {
                    return Err(ObjError::Failed(format!("a tree's manifest of {} bytes", meta.size)));
                }
                let bytes = this.read_async(meta.oid, meta.vouched, 0, meta.size as u32).await?;
                let manifest = Manifest::decode(&bytes).map_err(|e| {
                    tracing::warn!(oid = %meta.oid, error = %e, "a tree's ticket names no good manifest");
                    ObjError::Failed(e.to_string())
                })?;
                Ok((meta, manifest))
            };
            done(match tokio::time::timeout(timeout, fetch).await {
                Ok(r) => r,
                Err(_) => Err(ObjError::TimedOut),
            });
        });
    }

    fn resolve(&self, name: Name, done: Done<Meta>) {
        let this = self.clone();
        let timeout = self.timeout;
        self.rt.spawn(async move {
            let r = match tokio::time::timeout(timeout, this.resolve_async(name)).await {
                Ok(r) => r,
                Err(_) => Err(ObjError::TimedOut),
            };
            done(r);
        });
    }

    fn read(&self, oid: Oid, vouched: Vouched, offset: u64, len: u32, done: Done<Bytes>) {
        let this = self.clone();
        let timeout = self.timeout;
        self.rt.spawn(async move {
            let read = this.read_async(oid, vouched, offset, len);
            let r = match tokio::time::timeout(timeout, read).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(oid = %oid, offset, len, "read timed out");
                    Err(ObjError::TimedOut)
                }
            };
            if let Err(e) = &r {
                tracing::warn!(oid = %oid, offset, error = ?e, "read failed");
            }
            done(r);
        });
    }

    fn read_now(&self, oid: Oid, vouched: Vouched, offset: u64, len: u32) -> Option<Bytes> {
        let store = self.store();
        match self.fetches.running(oid) {
            Some(fetch) => {
                // Only what the list this name vouches for makes readable,
                // and keep the readahead going.
                let trusted = fetch.vouched_by(vouched);
                if !trusted || !self.want(&fetch, offset, u64::from(len)) {
                    return None;
                }
                for i in fetch.chunks_of(offset, u64::from(len)) {
                    if !fetch.readable(store, i, trusted).ok()? {
                        return None;
                    }
                }
                store.read_bytes(oid, offset, len as usize).ok()
            }
            None => {
                if !self.known_complete(oid) {
                    if !store.is_complete(oid).ok()? {
                        return None;
                    }
                    let mut known = self.complete.lock().unwrap_or_else(|p| p.into_inner());
                    if known.len() > 100_000 {
                        known.clear();
                    }
                    known.insert(oid);
                }
                store.read_bytes(oid, offset, len as usize).ok()
            }
        }
    }

    fn known_whole(&self, oid: Oid) -> bool {
        self.fetches.running(oid).is_none() && self.known_complete(oid)
    }

    fn backing_file(&self, oid: Oid) -> Option<File> {
        let info = self.store().info(oid).ok().flatten()?;
        if !info.complete || info.referenced.is_some() {
            return None;
        }
        File::open(self.store().backing_path(oid).ok()?).ok()
    }

    fn list(&self) -> Vec<Meta> {
        self.store()
            .list()
            .map(|l| {
                l.into_iter()
                    .filter(|o| o.complete)
                    .map(|o| Meta {
                        oid: o.oid,
                        size: o.size,
                        vouched: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn put(&self, path: &Path) -> Result<Put, String> {
        let mut file = File::open(path).map_err(|e| e.to_string())?;
        let out = self
            .store()
            .put_reader(&mut file)
            .map_err(|e| e.to_string())?;
        let ticket = self
            .issuer
            .ticket(self.store(), out.oid)
            .map_err(|e| format!("{e:#}"))?;
        tracing::info!(oid = %out.oid, size = out.size, "put through the mount");
        let _guard = self.rt.enter();
        self.fetches.put_done(out.oid);
        Ok(Put {
            oid: out.oid,
            size: out.size,
            ticket: ticket.to_string(),
        })
    }

    fn ticket(&self, oid: Oid) -> Option<String> {
        self.issuer
            .ticket(self.store(), oid)
            .ok()
            .map(|t| t.to_string())
    }
}
