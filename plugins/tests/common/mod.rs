//! Helpers shared by the plugin tests.

#![allow(dead_code)]

use dot_store::{Store, StoreOptions};

/// `n` pseudo-random bytes (xorshift, seeded).
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A non-durable store in `dir`.
pub fn store(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            durable: false,
            ..StoreOptions::default()
        },
    )
    .expect("store")
}
