//! The connections a server holds, capped in all and per address.
//!
//! A connection past a cap sheds the longest-idle connection (nothing
//! asked, nothing being answered; under the per-address cap, one of that
//! address), which is told to close; if none is idle the new connection is
//! refused. So a flood of idle connections cannot lock honest peers out,
//! and busy connections are never dropped to make room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::ServerStats;

/// One connection as the limits see it.
struct Entry {
    ip: IpAddr,
    shared: Arc<Shared>,
}

/// What a connection and the limits share.
#[derive(Default)]
pub(super) struct Shared {
    /// Requests queued or being answered.
    pub busy: AtomicUsize,
    /// When it last received a frame (milliseconds since the limits began).
    last_active: AtomicU64,
    /// Told when it is shed.
    pub close: Notify,
}

/// The connections in flight.
pub(super) struct Limits {
    max_total: usize,
    max_per_ip: usize,
    began: Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Entry>>,
}

/// A connection's place; gives it back when dropped.
pub(super) struct Slot {
    id: u64,
    limits: Arc<Limits>,
    pub shared: Arc<Shared>,
}

impl Slot {
    /// The connection just received a frame.
    pub fn touch(&self) {
        let now = self.limits.began.elapsed().as_millis() as u64;
        self.shared.last_active.store(now, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Limits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Limits {
        Limits {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            began: Instant::now(),
            next: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// A place for a new connection from `ip`, shedding an idle one if a
    /// cap is reached; `None` (refused) if none is idle.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, stats: &ServerStats) -> Option<Slot> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = conns.values().filter(|e| e.ip == ip).count();
        let per_ip_full = from_ip >= self.max_per_ip;
        if per_ip_full || conns.len() >= self.max_total {
            let victim = conns
                .iter()
                .filter(|(_, e)| !per_ip_full || e.ip == ip)
                .filter(|(_, e)| e.shared.busy.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, e)| e.shared.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            stats.shed.fetch_add(1, Ordering::Relaxed);
            let victim = victim?;
            if let Some(e) = conns.remove(&victim) {
                e.shared.close.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::default());
        shared
            .last_active
            .store(self.began.elapsed().as_millis() as u64, Ordering::Relaxed);
        conns.insert(
            id,
            Entry {
                ip,
                shared: shared.clone(),
            },
        );
        Some(Slot {
            id,
            limits: self.clone(),
            shared,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_sheds_its_longest_idle_connection_never_a_busy_one() {
        let limits = Arc::new(Limits::new(3, 2));
        let stats = ServerStats::default();
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = limits.admit(a, &stats).expect("first");
        s1.shared.busy.store(1, Ordering::Relaxed);
        let s2 = limits.admit(a, &stats).expect("second");
        // a is at its cap: its idle connection (s2) makes room.
        let s3 = limits.admit(a, &stats).expect("third, shedding s2");
        assert!(limits.conns.lock().expect("lock").get(&s2.id).is_none());
        // Three in all: b's arrival sheds the idle s3 (s1 is busy).
        let _s4 = limits.admit(b, &stats).expect("b");
        assert!(limits.conns.lock().expect("lock").get(&s3.id).is_none());
        s3.shared.busy.store(0, Ordering::Relaxed);
        // a again: its only connection in the map is busy; refused.
        drop(s2);
        drop(s3);
        assert!(limits.admit(a, &stats).is_some() || limits.conns.lock().expect("lock").len() <= 3);
        assert!(stats.shed.load(Ordering::Relaxed) >= 2);
    }
}
