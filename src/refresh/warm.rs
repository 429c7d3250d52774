//! The warm start: before an instance's first refresh, the current version of each of its
//! feeds is loaded from the database's feed store ([`crate::db::feed_store`]), so that a
//! restarted service serves its last good data (routes, route details, trips, waybill
//! checks) even while OTP is down.
//!
//! - A zip version: the stored zip is read back (into a temporary file when large, as a
//!   download is: [`crate::feed::spool`]), checked against its sha256 and parsed
//!   by the same code as a download ([`FeedSnapshot::from_zip_within`]); its ETag and
//!   Last-Modified go with it, so the first refresh asks upstream "has it changed?".
//! - An OTP index version: the stored route index and route details, as a refresh would
//!   have built them; the details read through on demand before (`super::reads`) go into
//!   the route cache as stale answers, served while OTP is asked again (or is down).
//!
//! Only versions of feeds configured the same way now are loaded (a feed that became a
//! zip feed, or an instance that changed its `api`, starts from upstream). A stored
//! version that cannot be used because it is corrupt (a chunk missing or changed, JSON or
//! a zip that does not parse) is logged and deleted, and the feed is fetched from
//! upstream as if there were none. Nothing here panics on what the database holds.
//!
//! `/readyz` counts a feed loaded here as served, so the service is ready as soon as the
//! warm start is done even when OTP is down; `/feeds` says `loaded_from: "store"` and
//! `/instances` lists what was loaded (`warm_start`).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::cache::{CachedRoute, RouteKey};
use crate::config::Api;
use crate::db::feed_store::{self, Details, Kind, ReadError, StoredIndex, StoredVersion};
use crate::feed::error::FeedError;
use crate::feed::model::RouteDetail;
use crate::feed::snapshot::FeedSnapshot;
use crate::feed::store::{FeedData, Loaded, RouteIndex, WarmFeed, WarmStart};
use crate::memory;
use crate::otp::instance::InstanceRuntime;
use crate::state::AppState;

/// How long the warm start waits for the database (its migrations) before giving up and
/// letting the first refresh go to upstream: a database that is down must not keep
/// fresh data from being served.
pub const DB_WAIT: Duration = Duration::from_secs(10);

/// Loads the current stored version of each of `instance`'s feeds and records what was
/// loaded on the instance (`GET /instances`).
pub async fn warm_start(state: &AppState, instance: &InstanceRuntime) {
    let mut report = WarmStart {
        finished_at: Timestamp::now(),
        loaded: Vec::new(),
        errors: Vec::new(),
    };
    if tokio::time::timeout(DB_WAIT, state.db.wait_prepared())
        .await
        .is_err()
    {
        let why = format!(
            "the database was not ready within {} s: nothing loaded from the feed store",
            DB_WAIT.as_secs()
        );
        tracing::warn!(instance = instance.name(), "warm start: {why}");
        report.errors.push(why);
        report.finished_at = Timestamp::now();
        instance.set_warm_start(report);
        return;
    }
    match feed_store::current_versions(&state.db, instance.name()).await {
        Ok(stored) => {
            for version in stored {
                load_one(state, instance, version, &mut report, "warm start").await;
            }
        }
        Err(e) => {
            let why = format!("cannot read the feed store: {e}");
            tracing::warn!(instance = instance.name(), "warm start: {why}");
            report.errors.push(why);
        }
    }
    tracing::info!(
        instance = instance.name(),
        loaded = report.loaded.len(),
        errors = report.errors.len(),
        "warm start finished"
    );
    report.finished_at = Timestamp::now();
    instance.set_warm_start(report);
}

/// Loads one stored version, if the feed is still configured as it was stored, and
/// swaps it in; `what` names the caller in log lines (the warm start, or a replica
/// following the lease holder: `super::follow`).
pub(super) async fn load_one(
    state: &AppState,
    instance: &InstanceRuntime,
    stored: StoredVersion,
    report: &mut WarmStart,
    what: &str,
) {
    let zips: HashMap<&str, &str> = instance
        .config
        .feeds
        .iter()
        .map(|f| (f.gtfs_id.as_str(), f.zip_url.as_str()))
        .collect();
    // What this feed is now: the kind and source a refresh would give it.
    let (kind, source) = match zips.get(stored.gtfs_id.as_str()) {
        Some(zip_url) => (Kind::Zip, *zip_url),
        None if matches!(instance.config.api, Api::Otp2 | Api::Otp1) => {
            (Kind::OtpIndex, instance.api_name())
        }
        None => {
            tracing::info!(instance = instance.name(), gtfs_id = %stored.gtfs_id,
                "{what}: stored feed is no longer configured; not loaded");
            return;
        }
    };
    if stored.kind != Some(kind) {
        tracing::info!(instance = instance.name(), gtfs_id = %stored.gtfs_id,
            "{what}: stored feed was configured otherwise; fetched from upstream instead");
        return;
    }
    let loaded = match read_version(state, &stored, source).await {
        Ok(loaded) => loaded,
        Err(e) => {
            let why = format!(
                "feed {} version {}: {e}",
                stored.gtfs_id,
                short(&stored.version)
            );
            if let ReadError::Corrupt { blob, .. } = &e {
                tracing::warn!(
                    instance = instance.name(),
                    "{what}: {why}; deleting it, the feed is fetched from upstream"
                );
                if let Err(e) =
                    feed_store::drop_corrupt(&state.db, stored.id, blob.as_deref()).await
                {
                    tracing::warn!(
                        instance = instance.name(),
                        "{what}: cannot delete the corrupt version: {e}"
                    );
                }
                report.errors.push(format!("{why} (deleted)"));
            } else {
                tracing::warn!(instance = instance.name(), "{what}: {why}");
                report.errors.push(why);
            }
            return;
        }
    };
    let entry = match state.feeds.entry(&stored.gtfs_id, instance.name(), source) {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(instance = instance.name(), "{what}: {e}");
            report.errors.push(e);
            return;
        }
    };
    if kind == Kind::OtpIndex {
        cache_reads(state, instance, &stored, what).await;
    }
    entry.install_stored(loaded, stored.etag, stored.last_modified);
    tracing::info!(instance = instance.name(), gtfs_id = %stored.gtfs_id,
        version = %stored.version, fetched_at = %stored.fetched_at, "{what}: feed loaded from the store");
    report.loaded.push(WarmFeed {
        gtfs_id: stored.gtfs_id,
        version: stored.version,
        fetched_at: stored.fetched_at,
    });
}

/// Puts the route details read through on demand at `stored` (by this replica or
/// another, before) in the route cache, stale: the first request for one is answered
/// from it (`X-Cache: STALE`) while OTP is asked again in the background, and while OTP
/// is down it stays served. Nothing is dropped when one cannot be read: OTP is asked.
async fn cache_reads(
    state: &AppState,
    instance: &InstanceRuntime,
    stored: &StoredVersion,
    what: &str,
) {
    let reads = match feed_store::read_route_blobs(&state.db, stored.id, Details::Read).await {
        Ok(reads) => reads,
        Err(e) => {
            tracing::warn!(instance = instance.name(), gtfs_id = %stored.gtfs_id,
                "{what}: cannot read the route details read through before: {e}");
            return;
        }
    };
    for (route_id, json) in reads {
        let key = RouteKey::new(&stored.gtfs_id, &route_id, &stored.version);
        let entry = CachedRoute::new(json.into(), Some(Duration::ZERO), Duration::ZERO, true);
        state.cache.put(key, entry).await;
    }
}

/// The first 12 hex digits of a version, for messages.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// Reads a stored version back into the data a refresh would have built.
async fn read_version(
    state: &AppState,
    stored: &StoredVersion,
    source: &str,
) -> Result<Loaded, ReadError> {
    let data = match stored.kind {
        Some(Kind::Zip) => {
            // A zip's version is its sha256, its blob's address; a directory's version is
            // a hash over its files, and its blob the zip packed from them. Either way the
            // blob's bytes are checked against its address as they are read.
            let zip =
                feed_store::read_blob(&state.db, &stored.blob, state.config.max_feed_bytes).await?;
            let (gtfs_id, version, source) = (
                stored.gtfs_id.clone(),
                stored.version.clone(),
                source.to_owned(),
            );
            let max_build_bytes = state.config.max_build_bytes;
            let snapshot = tokio::task::spawn_blocking(move || {
                FeedSnapshot::from_zip_within(
                    &gtfs_id,
                    &version,
                    &source,
                    zip.bytes(),
                    max_build_bytes,
                )
            })
            .await
            .map_err(|e| ReadError::Unusable(format!("the feed parser stopped: {e}")))?
            .map_err(|e| match e {
                // Too large for this process's budget, not broken: kept for another.
                e @ FeedError::OverBudget { .. } => ReadError::Unusable(e.to_string()),
                e => ReadError::corrupt(format!("the stored zip is not a usable GTFS feed: {e}")),
            })?;
            // As after a refresh: the build's raw tables go back to the system now.
            let _ = tokio::task::spawn_blocking(memory::purge).await;
            FeedData::Snapshot(Box::new(snapshot))
        }
        Some(Kind::OtpIndex) => {
            // The JSON of an index is small next to a zip: max_feed_bytes bounds it too.
            let index =
                feed_store::read_blob(&state.db, &stored.blob, state.config.max_feed_bytes).await?;
            let StoredIndex { routes, agencies } = serde_json::from_reader(index.bytes().reader())
                .map_err(|e| ReadError::corrupt(format!("the stored route index: {e}")))?;
            let mut details = HashMap::new();
            for (route_id, json) in
                feed_store::read_route_blobs(&state.db, stored.id, Details::Crawled).await?
            {
                let detail: RouteDetail = serde_json::from_slice(&json).map_err(|e| {
                    ReadError::corrupt(format!("the stored detail of route {route_id}: {e}"))
                })?;
                details.insert(route_id, detail);
            }
            FeedData::Index(RouteIndex {
                routes,
                details,
                agencies,
            })
        }
        None => {
            return Err(ReadError::Unusable(
                "a kind of version this build does not know".into(),
            ));
        }
    };
    Ok(Loaded {
        version: stored.version.clone(),
        fetched_at: stored.fetched_at,
        data,
    })
}
