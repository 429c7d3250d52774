//! Replicas on one database: per OTP instance, one replica at a time refreshes from
//! upstream. It holds the instance's refresh lease, a `refresh_lease` row
//! ([`crate::db::replicas`]); the others follow it ([`super::follow`]).
//!
//! The protocol, per instance, in each replica's scheduler ([`run`]):
//!
//! - The lease lasts [`ttl`] (half the `refresh_interval`, at least a second) on the
//!   database's clock. Every third of that, each replica asks for it in one statement:
//!   the holder renews it, another replica takes it only once it has expired (or was
//!   released). A refresh renews it while it runs, however long it takes.
//! - The holder refreshes every `refresh_interval` (±10 %), or at once when woken by a
//!   manual refresh, and stores each new version, which announces it to the others.
//!   After each refresh it tells them how it went (`NOTIFY gtfs_fetch_refreshed`), and
//!   they show it as theirs: every replica's `GET /instances` counts the instance's
//!   refreshes, whoever made them.
//! - A replica that does not hold the lease never asks upstream on its schedule: every
//!   `refresh_interval` it reads the store instead (a catch-up, in case an announcement
//!   was lost). A manual refresh asked of it is forwarded to the holder (`NOTIFY
//!   gtfs_fetch_refresh`), so it costs upstream one refresh, not one per replica.
//! - A holder that stops (killed, or cut off from the database) stops renewing: within
//!   [`ttl`] plus a third of it, another replica takes the lease, and refreshes at once,
//!   since the old holder may have died in the middle of a refresh. So the hand-over takes
//!   at most two thirds of a `refresh_interval`. A replica stopping cleanly releases its
//!   leases ([`release_all`]), and another takes over at its next look.
//! - A replica that cannot ask the database (down, not migrated yet) refreshes by itself
//!   ([`RefreshRole::Alone`]): with no database there is nothing to share, and serving
//!   fresh data matters more than sparing upstream. Once the database answers again the
//!   replicas sort themselves out at the next look.
//!
//! Replica ids must be unique: two replicas configured with one `replica_id` would both
//! take themselves for the holder. Replicas should have the same `[[instances]]`: leases
//! and notifications go by instance name.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::RefreshSummary;
use super::follow;
use crate::db::replicas::{
    self, MAX_PAYLOAD, REFRESH_CHANNEL, REFRESHED_CHANNEL, RefreshNotice, RefreshedFeed,
    RefreshedNotice,
};
use crate::otp::instance::{InstanceRuntime, RefreshRole};
use crate::state::AppState;

/// The shortest lease.
const MIN_TTL: Duration = Duration::from_secs(1);

/// The longest a look at the lease may take before the replica acts alone.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a lease lasts without renewal: half of `interval`, at least `MIN_TTL` (1 s).
pub fn ttl(interval: Duration) -> Duration {
    (interval / 2).max(MIN_TTL)
}

/// How often the lease is renewed, and looked at by the replicas that do not hold it.
pub fn look_every(interval: Duration) -> Duration {
    ttl(interval) / 3
}

/// What one look at the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    /// This replica holds it (taken or renewed).
    Holder,
    /// Another replica holds it; `None` when it was taken at that very moment.
    Follower(Option<String>),
    /// The database could not say.
    Alone,
}

/// Asks for the lease (takes, renews, or finds it held) and records what was found on the
/// instance (`GET /instances`).
async fn look(state: &AppState, instance: &InstanceRuntime) -> Look {
    if !state.db.is_prepared() {
        instance.set_lease(RefreshRole::Alone, None, None);
        return Look::Alone;
    }
    let ttl = ttl(instance.config.refresh_interval);
    let asked = replicas::acquire(&state.db, instance.name(), &state.replica_id, ttl);
    let answer = match tokio::time::timeout(QUERY_TIMEOUT, asked).await {
        Ok(Ok(row)) => Ok(row),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())),
    };
    match answer {
        Ok(Some(row)) if row.mine => {
            instance.set_lease(RefreshRole::Holder, Some(row.holder), Some(row.expires_at));
            Look::Holder
        }
        Ok(Some(row)) => {
            instance.set_lease(
                RefreshRole::Follower,
                Some(row.holder.clone()),
                Some(row.expires_at),
            );
            Look::Follower(Some(row.holder))
        }
        Ok(None) => {
            instance.set_lease(RefreshRole::Follower, None, None);
            Look::Follower(None)
        }
        Err(e) => {
            if instance.role() != Some(RefreshRole::Alone) {
                tracing::warn!(
                    instance = instance.name(),
                    "cannot ask the database for the refresh lease ({e}): refreshing alone until it answers"
                );
            }
            instance.set_lease(RefreshRole::Alone, None, None);
            Look::Alone
        }
    }
}

/// The scheduler of one instance after its warm start: runs until cancelled.
pub async fn run(state: &AppState, instance: &InstanceRuntime) {
    let interval = instance.config.refresh_interval;
    let every = look_every(interval);
    let jittered = || interval.mul_f64(rand::rng().random_range(0.9..1.1));
    // The first refresh (or catch-up) is due at once.
    let mut next = Instant::now();
    let mut last = None::<Look>;
    loop {
        let mut manual = false;
        let now = Instant::now();
        if next > now {
            tokio::select! {
                () = tokio::time::sleep_until(next.min(now + every)) => {}
                () = instance.woken() => manual = true,
            }
        }
        let due = manual || Instant::now() >= next;
        let seen = look(state, instance).await;
        match &seen {
            Look::Holder => {
                // Taken over from another replica, which may have died in the middle of
                // a refresh: refresh now rather than at this replica's next turn.
                let took_over = matches!(last, Some(Look::Follower(_)));
                if took_over {
                    tracing::info!(instance = instance.name(), "took the refresh lease over");
                }
                if due || took_over {
                    refresh_holding(state, instance).await;
                    next = Instant::now() + jittered();
                }
            }
            Look::Alone => {
                if due {
                    super::refresh_instance(state, instance, None).await;
                    next = Instant::now() + jittered();
                }
            }
            Look::Follower(holder) => {
                if manual {
                    forward_manual(state, instance, holder.as_deref()).await;
                }
                // Back from a spell without the database: versions may have been
                // stored meanwhile, announced to nobody here.
                let back = matches!(last, Some(Look::Alone));
                if due || back {
                    // One try: the next look comes soon enough, and the database may be away.
                    follow::catch_up_logged(state, instance, "catching up", 1).await;
                    next = Instant::now() + jittered();
                }
            }
        }
        last = Some(seen);
    }
}

/// A refresh by the lease holder, renewing the lease while it runs, then told to the
/// other replicas.
async fn refresh_holding(state: &AppState, instance: &InstanceRuntime) {
    let every = look_every(instance.config.refresh_interval);
    let refresh = super::refresh_instance(state, instance, None);
    tokio::pin!(refresh);
    loop {
        tokio::select! {
            summary = &mut refresh => {
                tell_refreshed(state, instance, &summary).await;
                return;
            }
            () = tokio::time::sleep(every) => {
                if look(state, instance).await != Look::Holder {
                    tracing::warn!(
                        instance = instance.name(),
                        "lost the refresh lease during a refresh (the database was slow or away); finishing it"
                    );
                }
            }
        }
    }
}

/// Longest error text per feed in a [`RefreshedNotice`].
const NOTICE_ERROR_CHARS: usize = 300;

/// Tells the other replicas how a refresh went (`GET /instances` on any of them, and the
/// `refresh` command asking any of them, then say it).
async fn tell_refreshed(state: &AppState, instance: &InstanceRuntime, summary: &RefreshSummary) {
    let status = instance.status();
    let (Some(started_at), Some(finished_at)) = (status.last_started_at, status.last_finished_at)
    else {
        return;
    };
    let mut notice = RefreshedNotice {
        instance: instance.name().to_owned(),
        replica: state.replica_id.clone(),
        started_at,
        finished_at,
        error: status
            .last_error
            .map(|e| replicas::shortened(&e, NOTICE_ERROR_CHARS)),
        feeds: summary
            .feeds
            .iter()
            .filter_map(|f| {
                Some(RefreshedFeed {
                    gtfs_id: f.gtfs_id.clone()?,
                    error: f
                        .error
                        .as_deref()
                        .map(|e| replicas::shortened(e, NOTICE_ERROR_CHARS)),
                })
            })
            .collect(),
    };
    let too_long = serde_json::to_string(&notice).map_or(true, |t| t.len() > MAX_PAYLOAD);
    if too_long {
        notice.feeds.clear();
    }
    if let Err(e) = replicas::notify(&state.db, REFRESHED_CHANNEL, &notice).await {
        tracing::debug!(
            instance = instance.name(),
            "cannot tell the other replicas: {e:#}"
        );
    }
}

/// Asks the lease holder to refresh (a manual refresh asked of this replica).
async fn forward_manual(state: &AppState, instance: &InstanceRuntime, holder: Option<&str>) {
    let notice = RefreshNotice {
        instance: instance.name().to_owned(),
        replica: state.replica_id.clone(),
    };
    match replicas::notify(&state.db, REFRESH_CHANNEL, &notice).await {
        Ok(()) => tracing::info!(
            instance = instance.name(),
            holder,
            "manual refresh forwarded to the replica holding the refresh lease"
        ),
        Err(e) => tracing::warn!(
            instance = instance.name(),
            "cannot forward a manual refresh to the lease holder: {e:#}"
        ),
    }
}

/// Gives up the leases this replica holds, so that others take over at their next look
/// rather than when the leases expire (a clean stop; a killed replica's expire).
pub async fn release_all(state: &AppState) {
    for instance in &state.instances {
        if instance.role() != Some(RefreshRole::Holder) {
            continue;
        }
        let released = replicas::release(&state.db, instance.name(), &state.replica_id);
        match tokio::time::timeout(Duration::from_secs(1), released).await {
            Ok(Ok(true)) => {
                tracing::info!(instance = instance.name(), "refresh lease released");
                instance.set_lease(RefreshRole::Follower, None, None);
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(
                instance = instance.name(),
                "cannot release the refresh lease (it expires by itself): {e}"
            ),
            Err(_) => tracing::warn!(
                instance = instance.name(),
                "cannot release the refresh lease in time (it expires by itself)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lasts_half_an_interval_and_hand_over_fits_in_one() {
        assert_eq!(ttl(Duration::from_secs(900)), Duration::from_secs(450));
        assert_eq!(ttl(Duration::from_millis(500)), MIN_TTL);
        for secs in [2.0, 5.0, 60.0, 900.0] {
            let interval = Duration::from_secs_f64(secs);
            assert!(ttl(interval) + look_every(interval) <= interval, "{secs}");
        }
    }
}
