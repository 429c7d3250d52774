//! The allocator, asked directly: how much a piece of work held at its peak, and giving
//! freed memory back to the system after a feed build.
//!
//! A feed build allocates several times what the snapshot it makes keeps (the raw tables
//! of the zip), then frees it. jemalloc keeps freed pages to reuse them and hands them
//! back only lazily, as it allocates again over the next seconds; a service that then sits
//! idle keeps them resident. So a refresh that swapped in a new snapshot asks for them
//! back at once ([`purge`]), and `/memory-stats` shows each feed's build peak
//! ([`thread_peak`]) next to what the process holds.
//!
//! Both speak to jemalloc through `mallctl`; with another allocator they would be no-ops,
//! but the service's global allocator is always jemalloc (`lib.rs`).

use std::ffi::CStr;
use std::ptr;

/// Runs `work` and returns its result with the most bytes this thread held allocated
/// at any moment of it, beyond what it held before (jemalloc's `thread.peak`, sampled
/// every few tens of KiB of allocation, so a close approximation).
///
/// It counts this thread only: `work` must not hand its allocations to other threads
/// (a feed build runs whole on one blocking thread). 0 when the allocator cannot say.
pub fn thread_peak<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let reset = void_ctl(c"thread.peak.reset");
    let out = work();
    let peak = if reset { thread_peak_so_far() } else { 0 };
    (out, peak)
}

/// Inside [`thread_peak`]'s `work`: the most bytes this thread has held so far beyond
/// what it held when `work` started (the same sampled `thread.peak`). 0 when the
/// allocator cannot say. A read costs a `mallctl`: call it every so many rows, not per row.
pub fn thread_peak_so_far() -> u64 {
    // SAFETY: `thread.peak.read` is a NUL-terminated name whose value is a uint64_t.
    unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.peak.read\0") }.unwrap_or(0)
}

/// Returns every arena's unused dirty pages to the system now (`arena.<all>.purge`),
/// rather than over the next seconds of decay. Takes a few milliseconds after a large
/// build: call it off the async runtime. Returns whether jemalloc did it.
pub fn purge() -> bool {
    // MALLCTL_ARENAS_ALL: the pseudo-index that names every arena.
    void_ctl(c"arena.4096.purge")
}

/// The peak resident set of this process since it started (`VmHWM`), in bytes; 0 where
/// `/proc` is not there.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
            kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Calls a `mallctl` that takes and gives nothing (jemalloc refuses those called with
/// any pointer), returning whether it succeeded.
fn void_ctl(name: &CStr) -> bool {
    // SAFETY: `name` is NUL-terminated; the control reads and writes nothing, so null
    // old and new pointers with zero lengths are exactly what it expects.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_of_a_piece_of_work_is_what_it_held_at_most() {
        let ((), peak) = thread_peak(|| {
            let big = vec![1u8; 64 << 20];
            std::hint::black_box(&big);
            drop(big);
            let small = vec![1u8; 1 << 20];
            std::hint::black_box(&small);
        });
        // 64 MiB held at once, then freed: the peak is that, not the 1 MiB held last.
        assert!(peak >= 64 << 20, "peak {peak}");
        assert!(peak < 80 << 20, "peak {peak}");
    }

    #[test]
    fn the_peak_so_far_grows_inside_the_work() {
        let (seen, _) = thread_peak(|| {
            let before = thread_peak_so_far();
            let big = vec![1u8; 32 << 20];
            std::hint::black_box(&big);
            (before, thread_peak_so_far())
        });
        assert!(seen.0 < 1 << 20, "{seen:?}");
        assert!(seen.1 >= 32 << 20, "{seen:?}");
    }

    #[test]
    fn purge_gives_freed_pages_back() {
        let resident = || {
            let _ = tikv_jemalloc_ctl::epoch::advance();
            tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0)
        };
        // Many mid-size blocks (not one huge one, which jemalloc unmaps on free anyway).
        let blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![7u8; 16 << 10]).collect();
        std::hint::black_box(&blocks);
        drop(blocks);
        let before = resident();
        assert!(purge());
        let after = resident();
        assert!(
            after + (16 << 20) < before,
            "resident {before} -> {after} after purge"
        );
    }

    #[test]
    fn the_process_peak_is_at_least_what_it_holds() {
        let peak = peak_rss_bytes();
        let now = memory_stats::memory_stats().map_or(0, |m| m.physical_mem as u64);
        assert!(
            peak > 0 && peak + (1 << 20) >= now,
            "peak {peak}, now {now}"
        );
    }
}
