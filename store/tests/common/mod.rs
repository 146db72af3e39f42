//! Helpers shared by the store's integration tests.

use dot_store::{ChunkerSpec, Descriptor};

/// `n` pseudo-random bytes, the same for the same seed.
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

/// Descriptors of `data` under the default chunker, as a sender would list them.
pub fn describe(data: &[u8]) -> Vec<Descriptor> {
    let chunker = ChunkerSpec::default().build().expect("chunker");
    dot_store::chunker::describe(chunker.as_ref(), data)
}
