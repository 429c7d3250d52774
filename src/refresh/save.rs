//! Writing each new version a refresh swapped in to the database's feed store
//! ([`crate::db::feed_store`]), so that a restart serves it while OTP is down.
//!
//! A version is served first and stored second: storing never delays or breaks serving.
//! A failure (the database down, a timeout) is logged and counted
//! (`gtfs_fetch_feed_store_writes_total{outcome="failed"}`), the store keeps the
//! version before it as current, and the feed is marked unstored
//! ([`crate::feed::store::FeedStatus::unstored`]): its next refresh stores it again, even
//! when upstream has not changed it, so the other replicas and the next start get it.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::db::feed_store::{self, NewVersion, RouteBlobs, StoredIndex, Written};
use crate::feed::spool::Spool;
use crate::feed::store::{FeedData, FeedEntry, Loaded};
use crate::state::AppState;

/// Where a new version comes from, for its `feed_version` row.
pub(super) struct Origin<'a> {
    pub instance: &'a str,
    pub gtfs_id: &'a str,
    /// `otp2`, `otp1`, or the zip's URL or path.
    pub source: &'a str,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// This replica's id.
    pub replica: &'a str,
}

/// Stores a zip version of `entry`'s feed: `zip` is the bytes the snapshot was parsed
/// from (the fetcher's one copy, shared, not copied: read a chunk at a time when spooled
/// to a file). The feed is marked unstored if it could not be.
pub(super) async fn save_zip(
    state: &AppState,
    entry: &FeedEntry,
    origin: Origin<'_>,
    loaded: &Loaded,
    zip: &Spool,
) {
    let started = Instant::now();
    let result = async {
        ready(state)?;
        let version = new_version(&origin, loaded)?;
        feed_store::store_zip(&state.db, &version, zip).await
    }
    .await;
    finish(state, entry, &origin, loaded, started, result);
}

/// Stores an OTP index version of `entry`'s feed: the route index and every crawled route
/// detail, as JSON. The feed is marked unstored if it could not be.
pub(super) async fn save_index(
    state: &AppState,
    entry: &FeedEntry,
    origin: Origin<'_>,
    loaded: Arc<Loaded>,
) {
    let started = Instant::now();
    let result = async {
        ready(state)?;
        let version = new_version(&origin, &loaded)?;
        // Serializing every route detail is CPU work: off the async runtime.
        let serialized = loaded.clone();
        let (index, details) = tokio::task::spawn_blocking(move || serialize_index(&serialized))
            .await
            .context("the serializer stopped")??;
        feed_store::store_index(&state.db, &version, &index, &details).await
    }
    .await;
    finish(state, entry, &origin, &loaded, started, result);
}

/// The database must have its schema before anything is stored.
fn ready(state: &AppState) -> anyhow::Result<()> {
    if state.db.is_prepared() {
        Ok(())
    } else {
        anyhow::bail!("the database is not ready")
    }
}

fn new_version<'a>(origin: &Origin<'a>, loaded: &'a Loaded) -> anyhow::Result<NewVersion<'a>> {
    Ok(NewVersion {
        instance: origin.instance,
        gtfs_id: origin.gtfs_id,
        version: &loaded.version,
        source: origin.source,
        fetched_at: loaded.fetched_at,
        etag: origin.etag,
        last_modified: origin.last_modified,
        counts: serde_json::to_value(loaded.counts()).context("cannot write the counts")?,
        replica: origin.replica,
    })
}

/// The index blob and each route detail's blob (by route id, sorted) of an OTP version.
fn serialize_index(loaded: &Loaded) -> anyhow::Result<(Vec<u8>, RouteBlobs)> {
    let FeedData::Index(index) = &loaded.data else {
        anyhow::bail!("not an OTP index version");
    };
    let stored = StoredIndex {
        routes: index.routes.clone(),
        agencies: index.agencies.clone(),
    };
    let index_json = serde_json::to_vec(&stored).context("cannot write the route index")?;
    let mut details = index
        .details
        .iter()
        .map(|(id, detail)| {
            serde_json::to_vec(detail)
                .map(|json| (id.clone(), json))
                .with_context(|| format!("cannot write the detail of route {id}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    details.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((index_json, details))
}

/// Logs and counts how the store went, and marks the feed unstored or stored.
fn finish(
    state: &AppState,
    entry: &FeedEntry,
    origin: &Origin<'_>,
    loaded: &Loaded,
    started: Instant,
    result: anyhow::Result<Written>,
) {
    let stored = match result {
        Ok(written) => {
            state.metrics.observe_feed_store("stored");
            tracing::info!(
                instance = origin.instance,
                gtfs_id = origin.gtfs_id,
                version = %loaded.version,
                new_blobs = written.new_blobs,
                new_bytes = written.new_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "feed version stored"
            );
            // Older versions may go now.
            state.store_retention.notify_one();
            true
        }
        Err(e) => {
            state.metrics.observe_feed_store("failed");
            tracing::warn!(
                instance = origin.instance,
                gtfs_id = origin.gtfs_id,
                version = %loaded.version,
                "feed version served but not stored in the database (the next refresh stores it): {e:#}"
            );
            false
        }
    };
    entry.update_status(|s| s.unstored = !stored);
}
