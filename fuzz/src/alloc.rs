//! The counting global allocator the fuzz binaries install: it keeps the
//! live and peak heap bytes, and aborts the process (a crash to AFL++ and
//! to the supervisor alike) when an allocation would take the live heap
//! past [`LIMIT`], before the memory is asked for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Most live heap bytes a case may hold.
pub const LIMIT: usize = 256 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Where to note "over the limit" for the supervisor (the case file's
/// status word), if anywhere.
static OVER_FLAG: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// Status word value for "an allocation went past [`LIMIT`]".
pub const OVER_LIMIT: u64 = 1;

/// The allocator: `System`, counted.
pub struct CountingAlloc;

/// The highest live heap seen, in bytes.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Starts a new peak measure from the live heap now.
pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// Has the allocator store [`OVER_LIMIT`] into `flag` before it aborts.
pub fn report_to(flag: &'static AtomicU64) {
    OVER_FLAG.store(std::ptr::from_ref(flag).cast_mut(), Ordering::Relaxed);
}

fn reserve(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed).saturating_add(n);
    if live > LIMIT {
        over_limit();
    }
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn release(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

#[cold]
fn over_limit() -> ! {
    let flag = OVER_FLAG.load(Ordering::Relaxed);
    // SAFETY: a non-null flag came from `report_to`, a 'static reference.
    if let Some(flag) = unsafe { flag.as_ref() } {
        flag.store(OVER_LIMIT, Ordering::SeqCst);
    }
    const MSG: &[u8] = b"dot-fuzz: an allocation would take the live heap past 256 MiB\n";
    // SAFETY: writes a static buffer to stderr, then aborts; nothing here
    // allocates.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::abort()
    }
}

// SAFETY: every call is passed on to `System` with its layout unchanged;
// the counting touches only atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        // SAFETY: the caller's layout contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size());
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old {
            reserve(new_size - old);
        }
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                release(new_size - old);
            }
        } else if new_size < old {
            release(old - new_size);
        }
        p
    }
}
