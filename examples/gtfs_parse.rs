//! The reference for feed builds: gtfs-structures' own `Gtfs::from_reader` of one zip, in
//! a process of its own, with the service's allocator (jemalloc, linked through the
//! library). `benches/big_feed.sh` runs it beside the service on the same zips.
//!
//! ```sh
//! cargo build --release --example gtfs_parse
//! target/release/examples/gtfs_parse feed.zip
//! ```
//!
//! Prints one line of JSON: the parse's seconds (the file is read into memory first, as
//! the service holds a download), the stop_times parsed, the peak RSS of the process
//! (`VmHWM`) and what jemalloc holds allocated with the parsed feed still alive.

use std::time::Instant;

// Links the library, and with it the global allocator the service runs with.
use gtfs_fetch as _;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: gtfs_parse FEED.zip"))?;
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let started = Instant::now();
    let gtfs = gtfs_structures::Gtfs::from_reader(std::io::Cursor::new(&bytes))?;
    let seconds = started.elapsed().as_secs_f64();
    let stop_times: usize = gtfs.trips.values().map(|t| t.stop_times.len()).sum();
    let allocated = gtfs_fetch::telemetry::memory_sample().allocated_bytes;
    println!(
        "{{\"seconds\":{seconds:.4},\"stop_times\":{stop_times},\"peak_rss_bytes\":{},\"allocated_bytes\":{allocated}}}",
        peak_rss_kib() * 1024
    );
    drop(gtfs);
    Ok(())
}

/// `VmHWM` of this process, KiB (0 where /proc is not there).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
