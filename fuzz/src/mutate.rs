//! The generator of cases: a deterministic PRNG, a corpus (the target's
//! seeds, then inputs the decoder accepted), and mutations stacked on a
//! corpus entry the way AFL's havoc stage does: bit flips, random and
//! edge-value bytes, inserts, deletes, duplicated ranges, splices with
//! another entry, 16/32/64-bit fields set to edge values in either byte
//! order (length prefixes), dictionary words, truncation. One case in
//! sixteen is random bytes, one in thirty-two a string of dictionary words.

/// A small fast PRNG (SplitMix64): the same seed gives the same cases.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A length in `0..=max`, short ones more likely.
    pub fn len(&mut self, max: usize) -> usize {
        let cap = match self.below(4) {
            0 => 8,
            1 => 64,
            2 => 512,
            _ => max,
        };
        self.below(cap.min(max) + 1)
    }
}

/// Bytes worth trying in any field.
const EDGE_BYTES: &[u8] = &[
    0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, b'0', b'1', b'9', b'a', b'f', b'g', b'F', b'/', b':', b'@',
    b'.', b'=', b'+', b'-', b'?', b'&', b'[', b']', b'\\', b' ', b'\n', b'"',
];

/// 32-bit values worth trying in length and count fields.
const EDGE_U32: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    4 << 20,
    (4 << 20) + 1,
    (4 << 20) + 64,
    (4 << 20) + 65,
    8 << 20,
    (8 << 20) + 1,
    1 << 24,
    (1 << 24) + 1,
    8192,
    8193,
];

/// Where cases come from for one target.
pub struct Generator {
    rng: Rng,
    corpus: Vec<Vec<u8>>,
    seeds: usize,
    dict: &'static [&'static [u8]],
    max_len: usize,
}

/// Most entries the corpus keeps beyond the seeds.
const MAX_FOUND: usize = 4096;

impl Generator {
    /// A generator over `seeds` (at least one: an empty input is added if
    /// none is given), with the format's `dict`, making cases of at most
    /// `max_len` bytes.
    pub fn new(
        seed: u64,
        mut seeds: Vec<Vec<u8>>,
        dict: &'static [&'static [u8]],
        max_len: usize,
    ) -> Generator {
        seeds.retain(|s| s.len() <= max_len);
        if seeds.is_empty() {
            seeds.push(Vec::new());
        }
        Generator {
            rng: Rng::new(seed),
            seeds: seeds.len(),
            corpus: seeds,
            dict,
            max_len,
        }
    }

    /// Entries in the corpus (seeds and kept finds).
    pub fn corpus_len(&self) -> usize {
        self.corpus.len()
    }

    /// Writes the next case into `out`.
    pub fn next_case(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if self.rng.one_in(16) {
            let n = self.rng.len(self.max_len);
            out.extend((0..n).map(|_| self.rng.next_u64() as u8));
            return;
        }
        if !self.dict.is_empty() && self.rng.one_in(32) {
            for _ in 0..=self.rng.below(8) {
                let w = self.dict[self.rng.below(self.dict.len())];
                out.extend_from_slice(w);
            }
            out.truncate(self.max_len);
            return;
        }
        let base = self.rng.below(self.corpus.len());
        out.extend_from_slice(&self.corpus[base]);
        let most = if self.rng.one_in(2) { 2 } else { 8 };
        let rounds = 1 + self.rng.below(most);
        for _ in 0..rounds {
            self.mutate(out);
        }
        out.truncate(self.max_len);
    }

    /// Keeps `input`, which the decoder accepted, now and then (a cheap
    /// stand-in for coverage feedback: accepted inputs lead to deeper
    /// states than random ones).
    pub fn accepted(&mut self, input: &[u8]) {
        if !self.rng.one_in(64) {
            return;
        }
        if self.corpus.len() < self.seeds + MAX_FOUND {
            self.corpus.push(input.to_vec());
        } else {
            let i = self.seeds + self.rng.below(MAX_FOUND);
            self.corpus[i] = input.to_vec();
        }
    }

    fn mutate(&mut self, b: &mut Vec<u8>) {
        let r = &mut self.rng;
        let len = b.len();
        match r.below(14) {
            0 if len > 0 => {
                let i = r.below(len);
                b[i] ^= 1 << r.below(8);
            }
            1 if len > 0 => {
                let i = r.below(len);
                b[i] = r.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = r.below(len);
                b[i] = EDGE_BYTES[r.below(EDGE_BYTES.len())];
            }
            3 if len > 0 => {
                let i = r.below(len);
                b[i] = b[i].wrapping_add((r.below(71) as u8).wrapping_sub(35));
            }
            4 => {
                let at = r.below(len + 1);
                let n = 1 + r.below(4);
                for _ in 0..n {
                    let v = if r.one_in(2) {
                        r.next_u64() as u8
                    } else {
                        EDGE_BYTES[r.below(EDGE_BYTES.len())]
                    };
                    b.insert(at, v);
                }
            }
            5 if len > 0 => {
                let at = r.below(len);
                let n = 1 + r.below((len - at).min(16));
                b.drain(at..at + n);
            }
            6 if len > 0 => {
                let from = r.below(len);
                let n = 1 + r.below((len - from).min(64));
                let piece = b[from..from + n].to_vec();
                let at = r.below(len + 1);
                b.splice(at..at, piece);
            }
            7 => {
                let other = &self.corpus[r.below(self.corpus.len())];
                let cut = r.below(len + 1);
                let from = r.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            8 if len >= 2 => {
                let at = r.below(len - 1);
                let v = EDGE_U32[r.below(EDGE_U32.len())] as u16;
                let v = if r.one_in(2) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                b[at..at + 2].copy_from_slice(&v);
            }
            9 if len >= 4 => {
                let at = r.below(len - 3);
                let v = EDGE_U32[r.below(EDGE_U32.len())];
                let v = match r.below(4) {
                    0 => v.to_be_bytes(),
                    1 => v.to_le_bytes(),
                    2 => (len as u32)
                        .wrapping_add(v % 3)
                        .wrapping_sub(1)
                        .to_be_bytes(),
                    _ => (u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
                        .wrapping_add((r.below(33) as u32).wrapping_sub(16)))
                    .to_be_bytes(),
                };
                b[at..at + 4].copy_from_slice(&v);
            }
            10 if len >= 8 => {
                let at = r.below(len - 7);
                let v = match r.below(5) {
                    0 => u64::MAX,
                    1 => 1 << 50,
                    2 => (1 << 50) + 1,
                    3 => u64::from(EDGE_U32[r.below(EDGE_U32.len())]),
                    _ => 0,
                };
                let v = if r.one_in(2) {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                b[at..at + 8].copy_from_slice(&v);
            }
            11 if !self.dict.is_empty() => {
                let w = self.dict[r.below(self.dict.len())];
                let at = r.below(len + 1);
                if r.one_in(2) || at + w.len() > len {
                    b.splice(at..at, w.iter().copied());
                } else {
                    b[at..at + w.len()].copy_from_slice(w);
                }
            }
            12 if len > 0 => b.truncate(r.below(len)),
            _ => {
                // Repeat a range many times (long runs, deep nesting).
                if len > 0 {
                    let from = r.below(len);
                    let n = 1 + r.below((len - from).min(8));
                    let piece = b[from..from + n].to_vec();
                    let times = 1 + r.below(256);
                    let at = r.below(len + 1);
                    let run: Vec<u8> = piece.iter().copied().cycle().take(n * times).collect();
                    b.splice(at..at, run);
                }
            }
        }
        if b.len() > self.max_len {
            b.truncate(self.max_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cases_within_the_length_bound() {
        let make = || Generator::new(7, vec![b"hello".to_vec()], &[b"@", b"+"], 40);
        let (mut a, mut b) = (make(), make());
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            a.next_case(&mut x);
            b.next_case(&mut y);
            assert_eq!(x, y);
            assert!(x.len() <= 40);
        }
    }
}
