//! The service's own feed build alone: `FeedSnapshot::from_zip_bytes` of one zip, in a
//! process of its own (no HTTP, no database), to set beside `gtfs_parse` (gtfs-structures'
//! parse of the same zip). `benches/big_feed.sh` runs both on the same zips.
//!
//! ```sh
//! cargo build --release --example feed_build
//! target/release/examples/feed_build feed.zip
//! ```
//!
//! Prints one line of JSON: the build's seconds (the file is read into memory first, as
//! the service holds a download), the stop_times read, the peak RSS of the process
//! (`VmHWM`), the snapshot's estimated size and the build's allocation peak.

use std::time::Instant;

use gtfs_fetch::feed::snapshot::FeedSnapshot;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: feed_build FEED.zip"))?;
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let started = Instant::now();
    let snapshot = FeedSnapshot::from_zip_bytes("feed", "v", &path, &bytes)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"seconds\":{seconds:.4},\"stop_times\":{},\"peak_rss_bytes\":{},\"snapshot_bytes\":{},\"build_peak_bytes\":{}}}",
        snapshot.counts.stop_times,
        gtfs_fetch::memory::peak_rss_bytes(),
        snapshot.approx_bytes,
        snapshot.build_peak_bytes,
    );
    Ok(())
}
