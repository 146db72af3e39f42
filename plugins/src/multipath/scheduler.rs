//! The scheduler: one task per object, holding the queue of requests in
//! the order they were asked for and every path's state; it dispatches to
//! paths with room, borrows for idle paths, hands chunks to the sinks that
//! asked, and drops, pauses and revives paths.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dot_store::{Descriptor, Oid};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::path::{Health, Path};
use super::{
    ALL_DOWN, Cmd, Counters, EVENTS, FIRST_PAUSE, MAX_PAUSE, MIN_STALL, RATE_SAMPLES, TICK,
};
use crate::error::TransferError;
use crate::transfer::{ChunkEvent, ChunkSink, Transfer};

/// A requested chunk not yet delivered.
struct Want {
    desc: Descriptor,
    to: Vec<ChunkSink>,
    /// Paths it is in flight on.
    on: Vec<usize>,
    /// Paths that said they cannot deliver it.
    refused: Vec<usize>,
}

/// The requests of one object over the paths.
pub(super) struct Scheduler {
    oid: Oid,
    paths: Vec<Path>,
    counters: Arc<[Counters]>,
    wants: HashMap<u32, Want>,
    queue: VecDeque<u32>,
    /// Where paths deliver, each event tagged with its path and that path's
    /// epoch when asked (see `tag`).
    events: mpsc::Sender<(usize, ChunkEvent)>,
    events_rx: Option<mpsc::Receiver<(usize, ChunkEvent)>>,
    /// Events for the callers, handed on after each step.
    outbox: Vec<(ChunkSink, ChunkEvent)>,
    /// Mean length of the chunks asked for.
    chunk: f64,
    asked: u64,
    all_down_since: Option<Instant>,
}

impl Scheduler {
    pub(super) fn new(
        oid: Oid,
        plugins: &[Arc<dyn Transfer>],
        counters: Arc<[Counters]>,
    ) -> Scheduler {
        let (events, events_rx) = mpsc::channel(EVENTS);
        Scheduler {
            oid,
            paths: plugins
                .iter()
                .map(|p| Path {
                    plugin: p.clone(),
                    health: Health::Up,
                    in_flight: VecDeque::new(),
                    arrivals: VecDeque::new(),
                    min_latency: None,
                    last_arrival: None,
                    epoch: 0,
                })
                .collect(),
            counters,
            wants: HashMap::new(),
            queue: VecDeque::new(),
            events,
            events_rx: Some(events_rx),
            outbox: Vec::new(),
            chunk: 64.0 * 1024.0,
            asked: 0,
            all_down_since: None,
        }
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let Some(mut events) = self.events_rx.take() else {
            return;
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Get(chunks, to)) => self.get(chunks, to),
                    Some(Cmd::Cancel(indexes)) => self.cancel(&indexes),
                    None => return,
                },
                Some((tag, ev)) = events.recv() => {
                    let n = self.paths.len();
                    self.event(tag % n, (tag / n) as u64, ev);
                }
                _ = tick.tick(), if !self.wants.is_empty() => self.check(Instant::now()),
            }
            self.dispatch(Instant::now());
            // Waiting on a slow caller holds the paths back too.
            for (to, ev) in self.outbox.drain(..) {
                to.send(ev).await;
            }
        }
    }

    /// The sink tag of path `p` in its current epoch.
    fn tag(&self, p: usize) -> usize {
        (self.paths[p].epoch as usize)
            .saturating_mul(self.paths.len())
            .saturating_add(p)
    }

    fn get(&mut self, chunks: Vec<(u32, Descriptor)>, to: ChunkSink) {
        for (index, desc) in chunks {
            if let Some(w) = self.wants.get_mut(&index) {
                w.to.push(to.clone());
                continue;
            }
            self.asked += 1;
            self.chunk += (f64::from(desc.len.max(1)) - self.chunk) / self.asked as f64;
            self.wants.insert(
                index,
                Want {
                    desc,
                    to: vec![to.clone()],
                    on: Vec::new(),
                    refused: Vec::new(),
                },
            );
            self.queue.push_back(index);
        }
    }

    fn cancel(&mut self, indexes: &[u32]) {
        for index in indexes {
            if let Some(w) = self.wants.remove(index) {
                for p in w.on {
                    self.forget(p, *index);
                }
            }
        }
    }

    /// Takes `index` off path `p` and withdraws the request there.
    fn forget(&mut self, p: usize, index: u32) {
        let path = &mut self.paths[p];
        if let Some(at) = path.in_flight.iter().position(|(i, _)| *i == index) {
            path.in_flight.remove(at);
            path.plugin.cancel_chunks(self.oid, &[index]);
        }
    }

    fn event(&mut self, p: usize, epoch: u64, ev: ChunkEvent) {
        let now = Instant::now();
        let current = self.paths[p].epoch == epoch;
        match ev {
            ChunkEvent::Chunk(chunk) => {
                let index = chunk.index();
                let len = chunk.len() as u64;
                if current {
                    self.arrived(p, index, len, now);
                }
                // Gone if already delivered by another path, or cancelled.
                let Some(want) = self.wants.remove(&index) else {
                    return;
                };
                for q in want.on.iter().copied().filter(|&q| q != p) {
                    self.forget(q, index);
                }
                let c = &self.counters[p];
                c.bytes.fetch_add(len, Ordering::Relaxed);
                c.chunks.fetch_add(1, Ordering::Relaxed);
                for to in want.to {
                    self.outbox.push((to, ChunkEvent::Chunk(chunk.clone())));
                }
            }
            ChunkEvent::Failed { index, error } => {
                if current
                    && let Some(at) = self.paths[p]
                        .in_flight
                        .iter()
                        .position(|(i, _)| *i == index)
                {
                    self.paths[p].in_flight.remove(at);
                }
                let Some(want) = self.wants.get_mut(&index) else {
                    return;
                };
                want.on.retain(|&q| q != p);
                if !want.refused.contains(&p) {
                    want.refused.push(p);
                }
                if !want.on.is_empty() {
                    return;
                }
                let others = (0..self.paths.len())
                    .any(|q| !want.refused.contains(&q) && self.paths[q].health != Health::Dead);
                if others {
                    self.queue.push_front(index);
                } else if let Some(want) = self.wants.remove(&index) {
                    for to in want.to {
                        let error = error.clone();
                        self.outbox.push((to, ChunkEvent::Failed { index, error }));
                    }
                }
            }
            ChunkEvent::SourceFailed(e @ TransferError::Corrupt { .. }) => {
                if self.paths[p].health != Health::Dead {
                    tracing::warn!(oid = %self.oid, path = %self.paths[p].plugin.name(), error = %e, "wrong chunk: path dropped for good");
                    self.drop_path(p, now, true);
                }
            }
            ChunkEvent::SourceFailed(e) => {
                if current {
                    tracing::info!(oid = %self.oid, path = %self.paths[p].plugin.name(), error = %e, "path failed");
                    self.drop_path(p, now, false);
                }
            }
        }
    }

    /// Path `p` delivered `index` (`bytes` long): measure it.
    fn arrived(&mut self, p: usize, index: u32, bytes: u64, now: Instant) {
        let path = &mut self.paths[p];
        if let Some(at) = path.in_flight.iter().position(|(i, _)| *i == index) {
            let (_, sent) = path.in_flight.remove(at).expect("position is in range");
            let latency = now.duration_since(sent);
            path.min_latency = Some(path.min_latency.map_or(latency, |m| m.min(latency)));
        }
        path.arrivals.push_back((now, bytes));
        if path.arrivals.len() > RATE_SAMPLES {
            path.arrivals.pop_front();
        }
        path.last_arrival = Some(now);
        if let Health::Probing { .. } = path.health {
            path.health = Health::Up;
        }
    }

    /// Drops path `p`: its requests go back to the queue; it is tried
    /// again after a pause, or never if `for_good`.
    fn drop_path(&mut self, p: usize, now: Instant, for_good: bool) {
        self.counters[p].drops.fetch_add(1, Ordering::Relaxed);
        let path = &mut self.paths[p];
        path.epoch += 1;
        path.health = if for_good {
            Health::Dead
        } else {
            let pause = match path.health {
                Health::Probing { pause } | Health::Down { pause, .. } => {
                    (pause * 2).min(MAX_PAUSE)
                }
                Health::Up | Health::Dead => FIRST_PAUSE,
            };
            Health::Down {
                until: now + pause,
                pause,
            }
        };
        path.arrivals.clear();
        let lost: Vec<u32> = path.in_flight.drain(..).map(|(i, _)| i).collect();
        path.plugin.cancel_chunks(self.oid, &lost);
        for index in lost.into_iter().rev() {
            if let Some(w) = self.wants.get_mut(&index) {
                w.on.retain(|&q| q != p);
                if w.on.is_empty() {
                    self.queue.push_front(index);
                }
            }
        }
    }

    /// Drops stalled paths, brings paused ones back, fails everything
    /// when no path is left.
    fn check(&mut self, now: Instant) {
        for p in 0..self.paths.len() {
            let path = &self.paths[p];
            match path.health {
                Health::Down { until, pause } if now >= until => {
                    self.paths[p].health = Health::Probing { pause };
                }
                Health::Up | Health::Probing { .. } => {
                    let limit = path.chunk_time(self.chunk).map_or(MIN_STALL, |ct| {
                        MIN_STALL.max(Duration::from_secs_f64(8.0 * ct))
                    });
                    if path
                        .busy_since()
                        .is_some_and(|since| now.duration_since(since) > limit)
                    {
                        tracing::info!(oid = %self.oid, path = %path.plugin.name(), "path stalled");
                        self.drop_path(p, now, false);
                    }
                }
                _ => {}
            }
        }
        // A path on probation has not come back yet.
        let any_up = self.paths.iter().any(|p| p.health == Health::Up);
        let all_dead = self.paths.iter().all(|p| p.health == Health::Dead);
        self.all_down_since = if any_up {
            None
        } else {
            Some(self.all_down_since.unwrap_or(now))
        };
        let give_up = all_dead
            || self
                .all_down_since
                .is_some_and(|since| now.duration_since(since) >= ALL_DOWN);
        if give_up {
            let error = TransferError::Connection {
                peer: self
                    .paths
                    .iter()
                    .map(|p| p.plugin.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                message: "every path is down".into(),
            };
            self.queue.clear();
            for (_, want) in self.wants.drain() {
                for to in want.to {
                    self.outbox
                        .push((to, ChunkEvent::SourceFailed(error.clone())));
                }
            }
        }
    }

    /// Paths, fastest first (those not measured yet count as fast, so they
    /// get measured).
    fn by_speed(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.paths.len())
            .filter(|&p| self.paths[p].usable())
            .collect();
        order.sort_by(|&a, &b| {
            let ra = self.paths[a].rate().unwrap_or(f64::INFINITY);
            let rb = self.paths[b].rate().unwrap_or(f64::INFINITY);
            rb.total_cmp(&ra)
        });
        order
    }

    fn dispatch(&mut self, now: Instant) {
        if self.wants.is_empty() {
            self.queue.clear();
            return;
        }
        for p in self.by_speed() {
            let room = self.paths[p]
                .window(self.chunk)
                .saturating_sub(self.paths[p].in_flight.len());
            if room == 0 {
                continue;
            }
            let mut batch = Vec::new();
            let mut skipped = Vec::new();
            while batch.len() < room {
                let Some(index) = self.queue.pop_front() else {
                    break;
                };
                match self.wants.get(&index) {
                    // Delivered, cancelled, or already on a path.
                    None => {}
                    Some(w) if !w.on.is_empty() => {}
                    Some(w) if w.refused.contains(&p) => skipped.push(index),
                    Some(_) => batch.push(index),
                }
            }
            for index in skipped.into_iter().rev() {
                self.queue.push_front(index);
            }
            self.send(p, batch, now);
        }
        if self.queue.is_empty() {
            self.borrow(now);
        }
    }

    /// Idle paths take the oldest request of the path that would finish
    /// last which they would deliver sooner (by a margin, so that equal
    /// paths do not trade their last requests back and forth).
    fn borrow(&mut self, now: Instant) {
        for p in self.by_speed() {
            if self.paths[p].health != Health::Up {
                continue;
            }
            let Some(ct) = self.paths[p].chunk_time(self.chunk) else {
                continue;
            };
            let rtt = self.paths[p]
                .min_latency
                .map_or(0.0, |l| (l.as_secs_f64() - ct).max(0.0));
            while self.paths[p].in_flight.len() < self.paths[p].window(self.chunk) {
                let mine = ct * (self.paths[p].in_flight.len() + 1) as f64 + rtt;
                let worth = mine * 1.2 + 0.02;
                // (when the path would finish, its oldest request worth
                // taking)
                let mut best: Option<(f64, u32)> = None;
                for (q, path) in self.paths.iter().enumerate() {
                    if q == p {
                        continue;
                    }
                    let mut oldest = None;
                    let mut last = 0.0f64;
                    for (k, (i, _)) in path.in_flight.iter().enumerate() {
                        let arrives = path.expected(k, self.chunk, now);
                        last = last.max(arrives);
                        if oldest.is_none()
                            && arrives > worth
                            && self
                                .wants
                                .get(i)
                                .is_some_and(|w| w.on.len() == 1 && !w.refused.contains(&p))
                        {
                            oldest = Some(*i);
                        }
                    }
                    if let Some(i) = oldest
                        && best.is_none_or(|(l, _)| last > l)
                    {
                        best = Some((last, i));
                    }
                }
                let Some((_, index)) = best else {
                    break;
                };
                self.send(p, vec![index], now);
            }
        }
    }

    /// Sends `batch` on path `p`.
    fn send(&mut self, p: usize, batch: Vec<u32>, now: Instant) {
        if batch.is_empty() {
            return;
        }
        let mut chunks = Vec::with_capacity(batch.len());
        for index in batch {
            let Some(w) = self.wants.get_mut(&index) else {
                continue;
            };
            w.on.push(p);
            chunks.push((index, w.desc));
            self.paths[p].in_flight.push_back((index, now));
        }
        let sink = ChunkSink::new(self.events.clone(), self.tag(p));
        self.paths[p].plugin.get_chunks(self.oid, chunks, sink);
    }
}
