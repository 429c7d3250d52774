//! Following the replica that holds an instance's refresh lease (`super::lease`): a
//! replica that does not refresh an instance from upstream loads each new version the
//! holder stored, from the database's feed store.
//!
//! - [`listen`] (one task per replica) `LISTEN`s on a connection of its own. A
//!   `gtfs_fetch_feed_version` notification, sent by the transaction that stored a
//!   version, starts a [`catch_up`] of that instance at once, so replicas serve a new
//!   version within about a second of each other. A `gtfs_fetch_refresh` notification (a
//!   manual refresh asked of another replica) wakes this replica's scheduler if it holds
//!   that instance's lease.
//! - A `gtfs_fetch_route_read` notification (a route detail another replica read through
//!   on demand and stored) puts that detail in this replica's route cache
//!   (`super::reads`).
//! - A `gtfs_fetch_refreshed` notification (the holder finished a refresh) is shown as
//!   this replica's own refresh: `GET /instances` (`status`) and each feed's last attempt
//!   and error say the same on every replica, and `gtfs-fetch refresh` asking any replica
//!   sees the refresh finish.
//! - When the connection is lost (the database restarted, a network cut) notifications
//!   sent meanwhile are lost: the task connects again, with backoff, and catches up every
//!   instance once `LISTEN` is back. Until then the replica serves what it has.
//! - The scheduler also catches up every `refresh_interval` (a notification may be lost
//!   without the connection noticing).
//!
//! A [`catch_up`] reads the instance's current stored versions and loads, with the warm
//! start's code (`super::warm`), each one that is not the version served and was fetched
//! later than it (never an older one). It also takes the time of the holder's last
//! successful fetch of each feed from `feed_fetch`, so that `GET /feeds` and the
//! freshness metrics say the same on every replica.

use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use sqlx::postgres::{PgListener, PgPoolOptions};

use super::{reads, warm};
use crate::db::feed_store;
use crate::db::replicas::{
    self, REFRESH_CHANNEL, REFRESHED_CHANNEL, ROUTE_READ_CHANNEL, RefreshNotice, RefreshedNotice,
    RouteReadNotice, VERSION_CHANNEL, VersionNotice,
};
use crate::feed::store::WarmStart;
use crate::otp::instance::{InstanceRuntime, RefreshRole};
use crate::state::AppState;

/// Backoff between attempts to connect the listener again: from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_LAST: Duration = Duration::from_secs(10);

/// Loads the versions of `instance` stored since the ones served; how many were loaded.
pub async fn catch_up(state: &AppState, instance: &InstanceRuntime) -> anyhow::Result<usize> {
    let _one = instance.follow_lock().await;
    let stored = feed_store::current_versions(&state.db, instance.name())
        .await
        .context("cannot read the current versions")?;
    let mut report = WarmStart {
        finished_at: Timestamp::now(),
        loaded: Vec::new(),
        errors: Vec::new(),
    };
    for version in stored {
        let served = state.feeds.get(&version.gtfs_id).and_then(|e| e.current());
        let newer = served
            .as_ref()
            .is_none_or(|c| c.version != version.version && c.fetched_at < version.fetched_at);
        if newer {
            warm::load_one(state, instance, version, &mut report, "following").await;
        }
    }
    // The holder's last successful fetch of each feed is this replica's too.
    let successes = replicas::last_successes(&state.db, instance.name())
        .await
        .context("cannot read the last fetches")?;
    for (gtfs_id, at) in successes {
        if let Some(entry) = state
            .feeds
            .get(&gtfs_id)
            .filter(|e| e.instance == instance.name())
        {
            entry.update_status(|s| {
                if s.last_success_at.is_none_or(|was| was < at) {
                    s.last_success_at = Some(at);
                }
            });
        }
    }
    instance.set_caught_up(Timestamp::now());
    if let Some(why) = report.errors.first() {
        anyhow::bail!("{why}");
    }
    Ok(report.loaded.len())
}

/// [`catch_up`], logged rather than returned, tried up to `tries` times: right after the
/// database comes back the pool may still hold connections that died with it, and each
/// failure drops one (a connection is checked when it is given back).
pub async fn catch_up_logged(state: &AppState, instance: &InstanceRuntime, why: &str, tries: u32) {
    for attempt in 1..=tries {
        match catch_up(state, instance).await {
            Ok(0) => return,
            Ok(n) => {
                tracing::info!(
                    instance = instance.name(),
                    loaded = n,
                    "{why}: loaded the versions the lease holder stored"
                );
                return;
            }
            Err(e) if attempt < tries => {
                tracing::debug!(instance = instance.name(), attempt, "{why}: {e:#}");
                tokio::time::sleep(CATCH_UP_RETRY).await;
            }
            Err(e) => tracing::warn!(
                instance = instance.name(),
                "{why}: cannot load from the feed store: {e:#}"
            ),
        }
    }
}

/// The pause between two tries of a catch-up.
const CATCH_UP_RETRY: Duration = Duration::from_millis(200);

/// Tries of the catch-up after the listener connected again: the database has just come
/// back, and the pool may hold several dead connections.
const RECONNECTED_TRIES: u32 = 20;

/// Tries of the catch-up a notification starts (the database has just answered).
const NOTIFIED_TRIES: u32 = 3;

/// The listener task: runs until cancelled (`crate::app::App::stop`).
pub async fn listen(state: AppState) {
    state.db.wait_prepared().await;
    // A pool of one connection of its own: the listener holds it for good, and must
    // neither take one from the requests' pool nor be closed with it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(state.config.db_acquire_timeout)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*state.db.pool.connect_options()).clone());
    let mut delay = RECONNECT_FIRST;
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                tracing::info!("listening for new feed versions of the other replicas");
                delay = RECONNECT_FIRST;
                // Versions stored before LISTEN took effect were announced to nobody here.
                for instance in &state.instances {
                    // Before the scheduler's first look the warm start loads; the holder
                    // has the newest data.
                    if matches!(
                        instance.role(),
                        Some(RefreshRole::Follower | RefreshRole::Alone)
                    ) {
                        catch_up_logged(&state, instance, "listening again", RECONNECTED_TRIES)
                            .await;
                    }
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => on_notification(&state, n.channel(), n.payload()).await,
                        Ok(None) => {
                            tracing::warn!(
                                "the notification connection was lost; connecting again"
                            );
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("notifications: {e}; connecting again");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(
                retry_in_s = delay.as_secs_f64(),
                "cannot listen for the other replicas' feed versions: {e:#}"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RECONNECT_LAST);
    }
}

/// A listener on every channel.
async fn subscribe(pool: &sqlx::PgPool) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool)
        .await
        .context("cannot connect")?;
    // A lost connection is noticed here (`Ok(None)`), and the reconnection is ours, so
    // that the catch-up runs after it.
    listener.eager_reconnect(false);
    listener
        .listen_all([
            VERSION_CHANNEL,
            REFRESH_CHANNEL,
            REFRESHED_CHANNEL,
            ROUTE_READ_CHANNEL,
        ])
        .await
        .context("cannot LISTEN")?;
    Ok(listener)
}

async fn on_notification(state: &AppState, channel: &str, payload: &str) {
    match channel {
        VERSION_CHANNEL => {
            let Ok(notice) = serde_json::from_str::<VersionNotice>(payload) else {
                tracing::warn!(
                    payload,
                    "a feed version notification this build cannot read"
                );
                return;
            };
            if notice.replica == state.replica_id {
                return; // stored by this replica: served already
            }
            // Only while following: the holder (and a replica refreshing alone) has
            // newer data, and before the scheduler's first look the warm start loads.
            let Some(instance) = state
                .instance(&notice.instance)
                .filter(|i| i.role() == Some(RefreshRole::Follower))
            else {
                return;
            };
            let served = state
                .feeds
                .get(&notice.gtfs_id)
                .and_then(|e| e.current())
                .is_some_and(|c| c.version == notice.version);
            if !served {
                tracing::debug!(
                    instance = notice.instance,
                    gtfs_id = notice.gtfs_id,
                    version = notice.version,
                    from = notice.replica,
                    "new version announced"
                );
                catch_up_logged(state, instance, "new version announced", NOTIFIED_TRIES).await;
            }
        }
        REFRESHED_CHANNEL => {
            let Ok(notice) = serde_json::from_str::<RefreshedNotice>(payload) else {
                tracing::warn!(payload, "a refresh report this build cannot read");
                return;
            };
            if notice.replica == state.replica_id {
                return;
            }
            if let Some(instance) = state
                .instance(&notice.instance)
                .filter(|i| i.role() != Some(RefreshRole::Holder))
            {
                mirror_refresh(state, instance, &notice);
            }
        }
        ROUTE_READ_CHANNEL => {
            let Ok(notice) = serde_json::from_str::<RouteReadNotice>(payload) else {
                tracing::warn!(
                    payload,
                    "a route detail notification this build cannot read"
                );
                return;
            };
            reads::on_notice(state, notice).await;
        }
        REFRESH_CHANNEL => {
            let Ok(notice) = serde_json::from_str::<RefreshNotice>(payload) else {
                tracing::warn!(payload, "a refresh notification this build cannot read");
                return;
            };
            if let Some(instance) = state.instance(&notice.instance)
                && instance.role() == Some(RefreshRole::Holder)
            {
                tracing::info!(
                    instance = notice.instance,
                    asked_of = notice.replica,
                    "manual refresh asked of another replica: refreshing"
                );
                instance.trigger();
            }
        }
        _ => {}
    }
}

/// Shows the holder's refresh as this replica's: the instance's refresh status, and each
/// feed's last attempt and error. Its new versions are loaded already: PostgreSQL
/// delivers notifications in commit order, and they were stored before this was sent.
fn mirror_refresh(state: &AppState, instance: &InstanceRuntime, notice: &RefreshedNotice) {
    for feed in &notice.feeds {
        let Some(entry) = state
            .feeds
            .get(&feed.gtfs_id)
            .filter(|e| e.instance == instance.name())
        else {
            continue;
        };
        entry.update_status(|s| {
            s.last_attempt_at = Some(notice.started_at);
            match &feed.error {
                Some(e) => {
                    s.last_error = Some(e.clone());
                    s.last_error_at = Some(notice.finished_at);
                }
                None => {
                    s.last_error = None;
                    s.last_success_at = Some(notice.finished_at);
                }
            }
        });
    }
    instance.update(|s| {
        s.refreshes += 1;
        s.last_started_at = Some(notice.started_at);
        s.last_finished_at = Some(notice.finished_at);
        match &notice.error {
            Some(e) => s.last_error = Some(e.clone()),
            None => {
                s.last_success_at = Some(notice.finished_at);
                s.last_error = None;
            }
        }
    });
}
