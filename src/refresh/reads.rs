//! Route details read through on demand, shared by the replicas on one database: a detail
//! one replica asked OTP for is not asked for again by the others (crawled details are
//! shared with their version, `super::follow`).
//!
//! - [`share`]: after a read-through fetch (`crate::api::routes`), off the request path,
//!   the detail's JSON is stored as a route row of the feed version it was read at, its
//!   `read_at` set (`crate::db::feed_store::store_route_read`), and announced (`NOTIFY
//!   gtfs_fetch_route_read`, delivered when it commits). At most [`ROUTE_READ_STORES`]
//!   stores run at once; a read beyond them is not shared, and the others fetch it
//!   themselves when asked.
//! - [`on_notice`] (called by `super::follow`'s listener): a replica serving that version
//!   reads the blob and puts it in its route cache, fresh for `cache_ttl` from then,
//!   replacing its own entry. So a background revalidation on one replica refreshes the
//!   entry on all of them, and OTP is asked about once per `cache_ttl` in all.
//! - Nothing reads the database on a request's path: a request that comes before the
//!   announcement arrives (or while the listener is cut off) asks OTP, as a lone replica
//!   would.
//! - A warm start (or a follower loading a version) puts these details in its route cache
//!   as stale answers (`super::warm`): served at once, even while OTP is down, and asked
//!   of OTP again in the background. They go with their version when the retention
//!   deletes it.

use std::time::Duration;

use bytes::Bytes;

use crate::cache::{CachedRoute, RouteKey};
use crate::db::feed_store::{self, RouteRead};
use crate::db::replicas::RouteReadNotice;
use crate::state::{AppState, ROUTE_READ_STORES};

/// Stores and announces `json`, the detail of `route_id` that this replica just read
/// from OTP for version `version` of feed `gtfs_id` of `instance`, in a task of its own.
pub fn share(
    state: &AppState,
    instance: &str,
    gtfs_id: &str,
    version: &str,
    route_id: &str,
    json: Bytes,
) {
    let Ok(permit) = state.route_reads.clone().try_acquire_owned() else {
        tracing::debug!(
            gtfs_id,
            route_id,
            "{ROUTE_READ_STORES} route details being stored already: not sharing this one"
        );
        return;
    };
    let state = state.clone();
    let (instance, gtfs_id, version, route_id) = (
        instance.to_owned(),
        gtfs_id.to_owned(),
        version.to_owned(),
        route_id.to_owned(),
    );
    tokio::spawn(async move {
        let read = RouteRead {
            instance: &instance,
            gtfs_id: &gtfs_id,
            version: &version,
            route_id: &route_id,
            json: &json,
            replica: &state.replica_id,
        };
        match feed_store::store_route_read(&state.db, &read).await {
            Ok(true) => tracing::debug!(gtfs_id, route_id, "route detail shared"),
            Ok(false) => tracing::debug!(
                gtfs_id,
                route_id,
                version,
                "route detail not shared: its version is not stored, or it was crawled"
            ),
            // The database is away: the other replicas ask OTP themselves meanwhile.
            Err(e) => tracing::debug!(gtfs_id, route_id, "cannot share a route detail: {e:#}"),
        }
        drop(permit);
    });
}

/// Another replica stored a detail it read: cache it, if this replica serves that version.
pub async fn on_notice(state: &AppState, notice: RouteReadNotice) {
    if notice.replica == state.replica_id {
        return;
    }
    let served = state
        .feeds
        .get(&notice.gtfs_id)
        .filter(|e| e.instance == notice.instance)
        .and_then(|e| e.current())
        .is_some_and(|c| c.version == notice.version);
    if !served {
        return;
    }
    let json = match read_json(state, &notice.blob).await {
        Ok(json) => json,
        Err(e) => {
            tracing::warn!(
                blob = notice.blob,
                "cannot read a shared route detail: {e:#}"
            );
            return;
        }
    };
    let key = RouteKey::new(&notice.gtfs_id, &notice.route_id, &notice.version);
    let entry = CachedRoute::new(
        json.into(),
        Some(state.config.cache_ttl),
        Duration::ZERO,
        true,
    );
    state.cache.put(key, entry).await;
    tracing::debug!(
        gtfs_id = notice.gtfs_id,
        route_id = notice.route_id,
        from = notice.replica,
        "route detail read by another replica cached"
    );
}

/// Blob `blob`, checked against its sha256, in memory.
async fn read_json(state: &AppState, blob: &str) -> anyhow::Result<Vec<u8>> {
    let spool = feed_store::read_blob(&state.db, blob, state.config.max_feed_bytes).await?;
    Ok(spool.to_vec()?)
}
