//! The `feed_fetch` table: one row per feed per refresh, what was fetched and how it went.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::Db;

/// What a refresh did to one feed (one `feed_fetch` row).
#[derive(Debug, Clone, Serialize)]
pub struct FeedOutcome {
    pub instance: String,
    /// `None` when the instance's feed list could not be read.
    pub gtfs_id: Option<String>,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub version: Option<String>,
    pub bytes: Option<u64>,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
