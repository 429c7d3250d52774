//! The service's own feed build alone: `FeedSnapshot::from_zip_within` of one zip, in a
//! process of its own (no HTTP, no database), to set beside `gtfs_parse` (gtfs-structures'
//! parse of the same zip). `benches/big_feed.sh` runs both on the same zips.
//!
//! ```sh
//! cargo build --release --example feed_build
//! target/release/examples/feed_build feed.zip            # spooled, as the service does
//! target/release/examples/feed_build feed.zip memory     # the zip held in memory
//! ```
//!
//! Prints one line of JSON: the build's seconds (the file is first read as the service
//! reads a download: into a spool, a temporary file once large; with `memory`, into
//! memory), the stop_times read, the peak RSS of the process (`VmHWM`), the snapshot's
//! estimated size and the build's allocation peak.

use std::time::Instant;

use gtfs_fetch::feed::snapshot::FeedSnapshot;
use gtfs_fetch::feed::spool::Spool;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: feed_build FEED.zip [memory]"))?;
    let in_memory = args.next().as_deref() == Some("memory");
    let read = |e: std::io::Error| anyhow::anyhow!("{path}: {e}");
    let zip = if in_memory {
        Spool::from_bytes(std::fs::read(&path).map_err(read)?.into())
    } else {
        Spool::from_reader(std::fs::File::open(&path).map_err(read)?).map_err(read)?
    };
    let started = Instant::now();
    let snapshot = FeedSnapshot::from_zip_within("feed", "v", &path, zip.bytes(), u64::MAX)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"seconds\":{seconds:.4},\"stop_times\":{},\"peak_rss_bytes\":{},\"snapshot_bytes\":{},\"build_peak_bytes\":{},\"spooled\":{}}}",
        snapshot.counts.stop_times,
        gtfs_fetch::memory::peak_rss_bytes(),
        snapshot.approx_bytes,
        snapshot.build_peak_bytes,
        zip.in_file(),
    );
    Ok(())
}
