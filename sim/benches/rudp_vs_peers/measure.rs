//! Allocation counting, the thread CPU clock, and the origin of virtual time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Counts without a locked read-modify-write: the bench is single-threaded, and an atomic
/// `fetch_add` per allocation would charge the contenders that allocate more a few percent
/// of extra CPU that is the harness's, not their own.
fn count_alloc() {
    ALLOCS.store(ALLOCS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

pub(crate) fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// CPU time this thread has used (not wall time: the machine is shared and noisy).
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a libc constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pierce's `Connection` takes `std::time::Instant`s; every instant in this bench is this
/// epoch plus a virtual `Duration`, so nothing depends on the wall clock but CPU timing.
#[allow(clippy::disallowed_methods)] // the one clock read: an origin for virtual time
pub(crate) fn epoch() -> Instant {
    Instant::now()
}

/// Wall time of the whole run, for the report only.
#[allow(clippy::disallowed_methods)] // wall time of the bench itself, not of a contender
pub(crate) fn wall() -> Instant {
    Instant::now()
}
