//! What every fetch has brought in since the agent started, by kind of
//! source (peers, portable devices, the store itself) and by peer: the
//! counters behind the agent's metrics.
//!
//! Chunks from a single peer are counted as they land. A multipath source
//! counts per path itself ([`Multipath::stats`]); while it runs its counts
//! are read live, and when its pull ends they are settled into the totals
//! (both under one lock, so a reading never counts them twice).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dot_plugins::multipath::Multipath;

use super::lock;

/// Peers counted by name, at most: past it, peers are counted as
/// [`OTHER_PEERS`] (names come from tickets, which strangers write).
pub const MAX_PEERS: usize = 256;
/// The name that stands for every peer past [`MAX_PEERS`].
pub const OTHER_PEERS: &str = "other";
/// Longest peer name kept, in bytes (longer ones are cut).
const MAX_PEER_NAME: usize = 200;

/// Where a fetch's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Other agents over the network.
    Peer,
    /// Portable devices (keys).
    Device,
    /// The store already held them when the fetch started.
    Cache,
}

impl Kind {
    /// Every kind, in the order [`Snapshot::by_kind`] lists them.
    pub const ALL: [Kind; 3] = [Kind::Peer, Kind::Device, Kind::Cache];

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Peer => "peer",
            Kind::Device => "device",
            Kind::Cache => "cache",
        }
    }
}

/// Bytes and chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Chunk bytes.
    pub bytes: u64,
    /// Chunks.
    pub chunks: u64,
}

impl Count {
    fn add(&mut self, bytes: u64, chunks: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.chunks = self.chunks.saturating_add(chunks);
    }
}

#[derive(Default)]
struct Peers {
    settled: BTreeMap<String, Count>,
    /// Multipath sources pulling now, by address of their allocation.
    live: HashMap<usize, Arc<Multipath>>,
}

/// The totals, shared by every fetch.
#[derive(Default)]
pub struct Totals {
    kinds: [(AtomicU64, AtomicU64); 3],
    peers: Mutex<Peers>,
    fetches: AtomicU64,
}

/// A copy of [`Totals`] at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Per [`Kind::ALL`].
    pub by_kind: [Count; 3],
    /// Per peer name (at most [`MAX_PEERS`] and [`OTHER_PEERS`]).
    pub by_peer: BTreeMap<String, Count>,
    /// Fetches started.
    pub fetches: u64,
}

impl Totals {
    /// Counts `bytes` in `chunks` chunks from a source of `kind`.
    pub fn add(&self, kind: Kind, bytes: u64, chunks: u64) {
        let (b, c) = &self.kinds[kind as usize];
        b.fetch_add(bytes, Ordering::Relaxed);
        c.fetch_add(chunks, Ordering::Relaxed);
    }

    /// Counts one chunk of `bytes` from peer `name` (a kind of
    /// [`Kind::Peer`] too).
    pub fn add_from_peer(&self, name: &str, bytes: u64) {
        self.add(Kind::Peer, bytes, 1);
        settle_one(&mut lock(&self.peers).settled, name, bytes, 1);
    }

    /// Counts a fetch started.
    pub fn fetch_started(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `m`'s paths live until the guard drops, then settles them.
    pub fn track(self: &Arc<Self>, m: &Arc<Multipath>) -> Tracked {
        let key = Arc::as_ptr(m) as usize;
        lock(&self.peers).live.insert(key, m.clone());
        Tracked {
            totals: self.clone(),
            key,
        }
    }

    /// The totals now.
    pub fn snapshot(&self) -> Snapshot {
        let mut by_kind = [Count::default(); 3];
        for (k, (b, c)) in by_kind.iter_mut().zip(&self.kinds) {
            k.add(b.load(Ordering::Relaxed), c.load(Ordering::Relaxed));
        }
        let peers = lock(&self.peers);
        let mut by_peer = peers.settled.clone();
        for m in peers.live.values() {
            for p in m.stats() {
                settle_one(&mut by_peer, &p.name, p.bytes, p.chunks);
                by_kind[Kind::Peer as usize].add(p.bytes, p.chunks);
            }
        }
        Snapshot {
            by_kind,
            by_peer,
            fetches: self.fetches.load(Ordering::Relaxed),
        }
    }
}

/// A multipath source being read live; dropped when its pull ends.
pub struct Tracked {
    totals: Arc<Totals>,
    key: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut peers = lock(&self.totals.peers);
        if let Some(m) = peers.live.remove(&self.key) {
            for p in m.stats() {
                settle_one(&mut peers.settled, &p.name, p.bytes, p.chunks);
                self.totals.add(Kind::Peer, p.bytes, p.chunks);
            }
        }
    }
}

/// Adds to `name`'s count, or to [`OTHER_PEERS`]'s once `MAX_PEERS`
/// names are kept.
fn settle_one(into: &mut BTreeMap<String, Count>, name: &str, bytes: u64, chunks: u64) {
    let name = cut(name);
    let key = if into.contains_key(name) || into.len() < MAX_PEERS {
        name
    } else {
        OTHER_PEERS
    };
    into.entry(key.to_owned()).or_default().add(bytes, chunks);
}

/// `name` cut to at most [`MAX_PEER_NAME`] bytes, on a character boundary.
fn cut(name: &str) -> &str {
    let mut end = name.len().min(MAX_PEER_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_past_the_cap_are_counted_together() {
        let t = Totals::default();
        for i in 0..MAX_PEERS + 10 {
            t.add_from_peer(&format!("10.0.0.{i}:7420"), 100);
        }
        t.add_from_peer("10.0.0.0:7420", 1);
        let s = t.snapshot();
        assert_eq!(s.by_peer.len(), MAX_PEERS + 1);
        assert_eq!(s.by_peer[OTHER_PEERS].chunks, 10);
        assert_eq!(s.by_peer["10.0.0.0:7420"].bytes, 101);
        let peer = s.by_kind[Kind::Peer as usize];
        assert_eq!(peer.chunks, MAX_PEERS as u64 + 11);
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(150);
        assert_eq!(cut(&long).len(), MAX_PEER_NAME);
        assert_eq!(cut("short"), "short");
    }
}
