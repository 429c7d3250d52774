//! What replicas sharing one database say to each other (table in
//! `migrations/*_refresh_lease.sql`; the protocol is in `crate::refresh::lease` and
//! `crate::refresh::follow`):
//!
//! - the refresh lease per OTP instance: [`acquire`] takes or renews it in one statement,
//!   on the database's clock; [`release`] gives it up at shutdown;
//! - notifications: [`VERSION_CHANNEL`] carries a [`VersionNotice`] from the transaction
//!   that stores a new version (`crate::db::feed_store`), so it is sent only if that
//!   commits; [`REFRESH_CHANNEL`] carries a [`RefreshNotice`], a manual refresh asked of
//!   a replica that does not hold the lease, for the holder; [`REFRESHED_CHANNEL`]
//!   carries a [`RefreshedNotice`], how the holder's refresh went, for the others;
//!   [`ROUTE_READ_CHANNEL`] carries a [`RouteReadNotice`] from the transaction that
//!   stores a route detail read through on demand (`crate::refresh::reads`);
//! - [`last_successes`]: when the holder last fetched each feed successfully
//!   (`feed_fetch`), so that the other replicas report the same freshness.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::Db;
use super::waybills::from_db;

/// `NOTIFY` channel of new feed versions ([`VersionNotice`]).
pub const VERSION_CHANNEL: &str = "gtfs_fetch_feed_version";

/// `NOTIFY` channel of manual refreshes forwarded to the lease holder ([`RefreshNotice`]).
pub const REFRESH_CHANNEL: &str = "gtfs_fetch_refresh";

/// `NOTIFY` channel of refreshes finished by a lease holder ([`RefreshedNotice`]).
pub const REFRESHED_CHANNEL: &str = "gtfs_fetch_refreshed";

/// `NOTIFY` channel of route details read through on demand and stored
/// ([`RouteReadNotice`]).
pub const ROUTE_READ_CHANNEL: &str = "gtfs_fetch_route_read";

/// PostgreSQL refuses a `NOTIFY` payload of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7999;

/// A new version of a feed is stored and current: load it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionNotice {
    pub instance: String,
    pub gtfs_id: String,
    pub version: String,
    /// The replica that fetched and stored it.
    pub replica: String,
}

/// A route detail `replica` read from OTP on demand is stored as blob `blob`, a route of
/// version `version` of the feed: a replica serving that version caches it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteReadNotice {
    pub instance: String,
    pub gtfs_id: String,
    pub version: String,
    pub route_id: String,
    /// sha256 of the detail's JSON (`feed_blob`).
    pub blob: String,
    pub replica: String,
}

/// Refresh `instance` now (asked by hand of `replica`, which does not hold its lease).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshNotice {
    pub instance: String,
    pub replica: String,
}

/// The lease holder finished a refresh of `instance`: the other replicas show it as
/// theirs (`GET /instances`, each feed's last attempt and error), so that whichever
/// replica is asked tells how the instance's refreshes go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshedNotice {
    pub instance: String,
    pub replica: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The refresh's first error; `None`: it succeeded.
    pub error: Option<String>,
    /// Each feed it looked at, with its error if it failed (errors shortened, the list
    /// left empty when it would not fit in a notification).
    pub feeds: Vec<RefreshedFeed>,
}

/// One feed of a [`RefreshedNotice`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshedFeed {
    pub gtfs_id: String,
    pub error: Option<String>,
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// An instance's lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub expires_at: Timestamp,
    /// Whether the statement that read it gave it to the replica asking (taken or
    /// renewed).
    pub mine: bool,
}

/// Takes `instance`'s lease for `replica` for `ttl` when it is free, expired or already
/// `replica`'s (then renewed); otherwise leaves it alone. The lease as it is after the
/// statement; `None` when another replica took it at the same moment (ask again later).
pub async fn acquire(
    db: &Db,
    instance: &str,
    replica: &str,
    ttl: Duration,
) -> sqlx::Result<Option<LeaseRow>> {
    let row = sqlx::query(
        "WITH taken AS (
             INSERT INTO refresh_lease AS l (instance, holder, acquired_at, renewed_at, expires_at)
             VALUES ($1, $2, now(), now(), now() + make_interval(secs => $3))
             ON CONFLICT (instance) DO UPDATE SET
                 holder = EXCLUDED.holder,
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder
                                    THEN l.acquired_at ELSE now() END,
                 renewed_at = now(),
                 expires_at = EXCLUDED.expires_at
             WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
             RETURNING holder, expires_at
         )
         SELECT holder, expires_at, true AS mine FROM taken
         UNION ALL
         SELECT holder, expires_at, false FROM refresh_lease
         WHERE instance = $1 AND NOT EXISTS (SELECT 1 FROM taken)",
    )
    .bind(instance)
    .bind(replica)
    .bind(ttl.as_secs_f64())
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(LeaseRow {
            holder: row.try_get("holder")?,
            expires_at: from_db(row.try_get("expires_at")?),
            mine: row.try_get("mine")?,
        })
    })
    .transpose()
}

/// Gives up `instance`'s lease if `replica` holds it, so that another replica takes it
/// over at once rather than when it expires; whether it held it.
pub async fn release(db: &Db, instance: &str, replica: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM refresh_lease WHERE instance = $1 AND holder = $2")
        .bind(instance)
        .bind(replica)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sends `payload` (JSON) on `channel`; an error when it is too long for PostgreSQL
/// (nothing is sent).
pub async fn notify(db: &Db, channel: &str, payload: &impl Serialize) -> anyhow::Result<()> {
    use anyhow::Context;

    let text = serde_json::to_string(payload).context("cannot write the notification")?;
    if text.len() > MAX_PAYLOAD {
        anyhow::bail!("notification of {} bytes is too long to send", text.len());
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(&text)
        .execute(&db.pool)
        .await
        .with_context(|| format!("cannot notify {channel}"))?;
    Ok(())
}

/// When each stored feed of `instance` was last fetched without failure (updated or
/// confirmed unchanged), by whichever replica, by `gtfs_id`.
pub async fn last_successes(db: &Db, instance: &str) -> sqlx::Result<Vec<(String, Timestamp)>> {
    // Per current feed, the newest fetch that did not fail: a walk down the
    // (instance, gtfs_id, started_at DESC) index that stops at the first one.
    let rows = sqlx::query(
        "SELECT c.gtfs_id, f.finished_at AS at
         FROM feed_current c
         CROSS JOIN LATERAL (
             SELECT finished_at FROM feed_fetch
             WHERE instance = c.instance AND gtfs_id = c.gtfs_id
               AND outcome <> 'failed' AND finished_at IS NOT NULL
             ORDER BY started_at DESC
             LIMIT 1
         ) f
         WHERE c.instance = $1",
    )
    .bind(instance)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("gtfs_id")?, from_db(row.try_get("at")?))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_cuts_at_a_character() {
        assert_eq!(shortened("abc", 5), "abc");
        assert_eq!(shortened("àéîõü", 2), "àé…");
    }
}
