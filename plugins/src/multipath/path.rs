//! One path of a multipath source: its health, and what it measured
//! (delivery rate, shortest request-to-chunk time), from which come its
//! window and when its requests should arrive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{INITIAL_WINDOW, MAX_WINDOW};
use crate::transfer::Transfer;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Health {
    Up,
    /// Back after a pause: one request at a time until one arrives.
    Probing {
        pause: Duration,
    },
    /// Dropped until `until`.
    Down {
        until: Instant,
        pause: Duration,
    },
    /// Delivered a wrong chunk: never used again.
    Dead,
}

pub(super) struct Path {
    pub plugin: Arc<dyn Transfer>,
    pub health: Health,
    /// Requests on this path, oldest first, with when they were sent.
    pub in_flight: VecDeque<(u32, Instant)>,
    /// Recent arrivals: when, and how many bytes.
    pub arrivals: VecDeque<(Instant, u64)>,
    /// The shortest time from request to chunk seen.
    pub min_latency: Option<Duration>,
    /// When it last delivered a chunk.
    pub last_arrival: Option<Instant>,
    /// Bumped on each drop, so late events of an old round are told apart.
    pub epoch: u64,
}

impl Path {
    pub fn busy_since(&self) -> Option<Instant> {
        let oldest = self.in_flight.front()?.1;
        Some(self.last_arrival.map_or(oldest, |l| l.max(oldest)))
    }

    /// Bytes per second over the recent arrivals.
    pub fn rate(&self) -> Option<f64> {
        let (first, _) = *self.arrivals.front()?;
        let (last, _) = *self.arrivals.back()?;
        let span = last.duration_since(first).as_secs_f64();
        let bytes: u64 = self.arrivals.iter().skip(1).map(|a| a.1).sum();
        (self.arrivals.len() >= 2 && span > 0.0).then(|| bytes as f64 / span)
    }

    /// Seconds to deliver one chunk of `chunk` bytes: from the rate, or
    /// from the one chunk it delivered so far.
    pub fn chunk_time(&self, chunk: f64) -> Option<f64> {
        self.rate()
            .map(|r| chunk / r)
            .or_else(|| self.min_latency.map(|l| l.as_secs_f64()))
    }

    pub fn window(&self, chunk: f64) -> usize {
        match self.health {
            Health::Up => match (self.rate(), self.min_latency) {
                (Some(rate), Some(lat)) => {
                    let in_flight = (rate * lat.as_secs_f64() / chunk).ceil();
                    (in_flight as usize).saturating_add(2).clamp(2, MAX_WINDOW)
                }
                _ => INITIAL_WINDOW,
            },
            Health::Probing { .. } => 1,
            Health::Down { .. } | Health::Dead => 0,
        }
    }

    pub fn usable(&self) -> bool {
        matches!(self.health, Health::Up | Health::Probing { .. })
    }

    /// Seconds from `now` until the request at position `k` of this path
    /// should arrive: infinite if the path looks stalled or has no
    /// measure yet and is late.
    pub fn expected(&self, k: usize, chunk: f64, now: Instant) -> f64 {
        let Some(since) = self.busy_since() else {
            return 0.0;
        };
        let waited = now.duration_since(since).as_secs_f64();
        match self.chunk_time(chunk) {
            Some(ct) => {
                let head = ct - waited;
                if head < -2.0 * ct - 0.1 {
                    f64::INFINITY
                } else {
                    head.max(0.0) + k as f64 * ct
                }
            }
            None if waited > 0.5 => f64::INFINITY,
            None => (k + 1) as f64 * 0.5,
        }
    }
}
