//! One target's loop, in a child process of the supervisor. Each case is
//! copied into a memory-mapped case file before it runs and the case count
//! bumped there, so the supervisor sees progress without a syscall per
//! case, and the case that killed the process (a panic, an abort past the
//! heap limit, a stack overflow) or hangs in it is still in the file.
//!
//! The case file: eight u64 words (cases started, the current case's
//! length, a status word the allocator sets, the peak live heap), then up
//! to [`MAX_INPUT`] bytes of the current case.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::mutate::Generator;
use crate::{Target, alloc};

/// Longest case the case file holds.
pub const MAX_INPUT: usize = 1 << 20;
const HEAD: usize = 64;
const W_CASES: usize = 0;
const W_LEN: usize = 1;
const W_STATUS: usize = 2;
const W_PEAK: usize = 3;

/// The case file, mapped.
pub struct CaseFile {
    map: MmapMut,
}

impl CaseFile {
    /// Makes (or empties) the case file at `path` and maps it.
    ///
    /// # Errors
    /// If it cannot be made or mapped.
    pub fn create(path: &Path) -> io::Result<CaseFile> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.set_len((HEAD + MAX_INPUT) as u64)?;
        CaseFile::map(&f)
    }

    /// Maps the existing case file at `path`.
    ///
    /// # Errors
    /// If it cannot be opened or mapped, or is too short.
    pub fn open(path: &Path) -> io::Result<CaseFile> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        if f.metadata()?.len() < (HEAD + MAX_INPUT) as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short case file",
            ));
        }
        CaseFile::map(&f)
    }

    fn map(f: &std::fs::File) -> io::Result<CaseFile> {
        // SAFETY: the file is ours (made by the supervisor for this run);
        // both processes touch its header only through atomics and its
        // case bytes only while the worker is stopped or through raw
        // copies.
        let map = unsafe { MmapMut::map_mut(f)? };
        Ok(CaseFile { map })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < HEAD / 8);
        // SAFETY: the map is page-aligned and at least HEAD bytes long, so
        // word `i` is an aligned u64 inside it, and every access to it
        // goes through this atomic.
        unsafe { &*self.map.as_ptr().add(8 * i).cast::<AtomicU64>() }
    }

    /// Cases started so far.
    pub fn cases(&self) -> u64 {
        self.word(W_CASES).load(Ordering::Acquire)
    }

    /// The status word ([`alloc::OVER_LIMIT`] after an allocation past
    /// the limit).
    pub fn status(&self) -> u64 {
        self.word(W_STATUS).load(Ordering::Acquire)
    }

    /// Peak live heap bytes the worker reported at its end.
    pub fn peak(&self) -> u64 {
        self.word(W_PEAK).load(Ordering::Acquire)
    }

    /// The case last started (read once the worker is stopped).
    pub fn input(&self) -> Vec<u8> {
        let len = (self.word(W_LEN).load(Ordering::Acquire) as usize).min(MAX_INPUT);
        self.map[HEAD..HEAD + len].to_vec()
    }

    fn record(&self, input: &[u8]) {
        let len = input.len().min(MAX_INPUT);
        // SAFETY: the case bytes lie past the header, inside the map, and
        // nothing holds a reference to them while the worker runs.
        unsafe {
            std::ptr::copy_nonoverlapping(
                input.as_ptr(),
                self.map.as_ptr().add(HEAD).cast_mut(),
                len,
            );
        }
        self.word(W_LEN).store(len as u64, Ordering::Release);
        self.word(W_CASES).fetch_add(1, Ordering::Release);
    }
}

/// When a run stops, and where its cases start.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Seconds of running.
    pub secs: f64,
    /// Cases at most.
    pub cases: u64,
    /// Seed of the generator.
    pub seed: u64,
}

/// Runs `target` until `limits`, each case recorded in the case file at
/// `path` first.
///
/// # Errors
/// If the case file cannot be mapped.
pub fn run(target: &Target, path: &Path, limits: Limits) -> io::Result<()> {
    let file: &'static CaseFile = Box::leak(Box::new(CaseFile::open(path)?));
    alloc::report_to(file.word(W_STATUS));
    let max_len = target.max_len.min(MAX_INPUT);
    let mut generator = Generator::new(limits.seed, (target.seeds)(), target.dict, max_len);
    let deadline = Duration::from_secs_f64(limits.secs.max(0.0));
    let start = Instant::now();
    let mut buf = Vec::with_capacity(max_len);
    alloc::reset_peak();
    let mut n = 0u64;
    while n < limits.cases {
        if n % 1024 == 0 && start.elapsed() >= deadline {
            break;
        }
        generator.next_case(&mut buf);
        file.record(&buf);
        if (target.run)(&buf) {
            generator.accepted(&buf);
        }
        n += 1;
    }
    file.word(W_PEAK)
        .store(alloc::peak() as u64, Ordering::Release);
    Ok(())
}
