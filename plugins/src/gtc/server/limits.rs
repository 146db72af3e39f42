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
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let held = |slot: &Slot| limits.conns.lock().expect("lock").contains_key(&slot.id);
        let s1 = limits.admit(ip("10.0.0.1"), &stats).expect("first");
        s1.shared.busy.store(1, Ordering::Relaxed);
        let s2 = limits.admit(ip("10.0.0.1"), &stats).expect("second");
        // 10.0.0.1 is at its cap: its idle connection (s2) makes room.
        let s3 = limits
            .admit(ip("10.0.0.1"), &stats)
            .expect("third, shedding s2");
        assert!(!held(&s2) && held(&s1) && held(&s3));
        let s4 = limits
            .admit(ip("10.0.0.2"), &stats)
            .expect("room for another address");
        // Three in all: the next sheds the longest idle (s3; s1 is busy).
        s3.shared.last_active.store(10, Ordering::Relaxed);
        s4.shared.last_active.store(20, Ordering::Relaxed);
        let s5 = limits.admit(ip("10.0.0.3"), &stats).expect("shedding s3");
        assert!(!held(&s3) && held(&s4) && held(&s5) && held(&s1));
        // All busy: a newcomer is refused, no busy one is dropped.
        s4.shared.busy.store(1, Ordering::Relaxed);
        s5.shared.busy.store(1, Ordering::Relaxed);
        assert!(limits.admit(ip("10.0.0.4"), &stats).is_none());
        assert!(held(&s1) && held(&s4) && held(&s5));
        assert_eq!(stats.shed.load(Ordering::Relaxed), 3);
        // A slot given back makes room.
        drop(s5);
        assert!(limits.admit(ip("10.0.0.4"), &stats).is_some());
    }
}
