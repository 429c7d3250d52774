//! The `feed_fetch` table: one row per feed per refresh, what was fetched and how it went.
//! Rows are kept `feed_fetch_retention_days` ([`retention`] deletes older ones);
//! `GET /feeds/{gtfs_id}/fetches` pages through them with [`list`].

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::Db;

/// What a refresh did to one feed (one `feed_fetch` row).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = FeedFetch)]
pub struct FeedOutcome {
    pub instance: String,
    /// `None` when the instance's feed list could not be read.
    pub gtfs_id: Option<String>,
    pub outcome: Outcome,
    /// The HTTP status of the zip download, when there was one.
    pub http_status: Option<u16>,
    /// sha256 of the zip (or of a directory's files), or a hash of the route index for
    /// OTP APIs.
    pub version: Option<String>,
    /// Bytes downloaded.
    pub bytes: Option<u64>,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

impl FeedOutcome {
    /// A refresh of `gtfs_id` (`None`: the instance's feed list) of `instance` started at
    /// `started_at`, failed until told otherwise, with nothing known yet.
    pub fn started(instance: &str, gtfs_id: Option<String>, started_at: Timestamp) -> Self {
        FeedOutcome {
            instance: instance.to_owned(),
            gtfs_id,
            outcome: Outcome::Failed,
            http_status: None,
            version: None,
            bytes: None,
            error: None,
            started_at,
            finished_at: started_at,
        }
    }
}

/// `updated` (a new version loaded), `unchanged` (304 or the same sha256), `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = FetchOutcome)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Updated,
    Unchanged,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
        }
    }
}

/// How long a fetch made before the database was ready waits for it to be recorded.
const RECORD_WAIT: Duration = Duration::from_secs(600);

/// Records a refresh's fetches in `feed_fetch`, in order. The database being down must
/// not stop refreshes, and the first refresh at start-up usually finishes before the
/// migrations have run: fetches made then are written by a task that waits for the
/// database (at most [`RECORD_WAIT`]) instead of being lost. A write that fails is logged.
pub async fn record(db: &Arc<Db>, fetches: &[FeedOutcome]) {
    if db.is_prepared() {
        for f in fetches {
            insert(db, f).await;
        }
        return;
    }
    let (db, fetches) = (db.clone(), fetches.to_vec());
    tokio::spawn(async move {
        if tokio::time::timeout(RECORD_WAIT, db.wait_prepared())
            .await
            .is_ok()
        {
            for f in &fetches {
                insert(&db, f).await;
            }
        } else {
            tracing::warn!(
                fetches = fetches.len(),
                "fetches not recorded in feed_fetch: the database was not ready within {} s",
                RECORD_WAIT.as_secs()
            );
        }
    });
}

/// Writes one `feed_fetch` row.
async fn insert(db: &Db, f: &FeedOutcome) {
    let insert = sqlx::query(
        "INSERT INTO feed_fetch (instance, gtfs_id, started_at, finished_at, outcome, http_status, version, bytes, error)
         VALUES ($1, $2, $3::timestamptz, $4::timestamptz, $5, $6, $7, $8, $9)",
    )
    .bind(&f.instance)
    .bind(&f.gtfs_id)
    .bind(f.started_at.to_string())
    .bind(f.finished_at.to_string())
    .bind(f.outcome.as_str())
    .bind(f.http_status.map(|s| s as i16))
    .bind(&f.version)
    .bind(f.bytes.map(|b| b as i64))
    .bind(&f.error)
    .execute(&db.pool);
    match tokio::time::timeout(Duration::from_secs(5), insert).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(instance = %f.instance, "cannot record the fetch in feed_fetch: {e}")
        }
        Err(_) => {
            tracing::warn!(instance = %f.instance, "cannot record the fetch in feed_fetch: database timeout")
        }
    }
}

/// One feed's fetches, newest first: at most `limit`, older than the row `before` when
/// given. Each comes with its row id, the position for the next page.
pub async fn list(
    db: &Db,
    gtfs_id: &str,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<(i64, FeedOutcome)>> {
    let rows = sqlx::query_as::<_, FetchRow>(
        "SELECT id, instance, gtfs_id, outcome, http_status, version, bytes, error, started_at, finished_at
         FROM feed_fetch
         WHERE gtfs_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC
         LIMIT $3",
    )
    .bind(gtfs_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(FetchRow::into_outcome).collect())
}

#[derive(sqlx::FromRow)]
struct FetchRow {
    id: i64,
    instance: String,
    gtfs_id: Option<String>,
    outcome: String,
    http_status: Option<i16>,
    version: Option<String>,
    bytes: Option<i64>,
    error: Option<String>,
    started_at: time::OffsetDateTime,
    finished_at: Option<time::OffsetDateTime>,
}

impl FetchRow {
    fn into_outcome(self) -> (i64, FeedOutcome) {
        let outcome = match self.outcome.as_str() {
            "updated" => Outcome::Updated,
            "unchanged" => Outcome::Unchanged,
            // The table's CHECK allows nothing else.
            _ => Outcome::Failed,
        };
        let started_at = super::waybills::from_db(self.started_at);
        let fetch = FeedOutcome {
            instance: self.instance,
            gtfs_id: self.gtfs_id,
            outcome,
            http_status: self.http_status.map(|s| s as u16),
            version: self.version,
            bytes: self.bytes.map(|b| b as u64),
            error: self.error,
            started_at,
            finished_at: self
                .finished_at
                .map_or(started_at, super::waybills::from_db),
        };
        (self.id, fetch)
    }
}

/// Rows deleted per statement, so that a long backlog never holds one long transaction.
const EXPIRE_BATCH: i64 = 10_000;

/// Deletes the fetches that started more than `days` days ago; the count deleted.
pub async fn expire(db: &Db, days: u32) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM feed_fetch WHERE id IN (
                 SELECT id FROM feed_fetch
                 WHERE started_at < now() - make_interval(days => $1)
                 LIMIT $2)",
        )
        .bind(days as i32)
        .bind(EXPIRE_BATCH)
        .execute(&db.pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < EXPIRE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Applies the retention once the database is ready, then hourly; runs until dropped
/// (the application's background task, stopped by its cancellation token).
pub async fn retention(db: Arc<Db>, days: u32) {
    db.wait_prepared().await;
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match expire(&db, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "expired old feed_fetch rows"),
            Err(e) => tracing::warn!("cannot expire old feed_fetch rows: {e}"),
        }
    }
}
