//! The durable feed store (tables in `migrations/*_feed_store.sql`): every fetched version
//! of every feed, so that a restarted service serves its last good data while OTP is down.
//!
//! - Content is addressed by sha256 ([`put_blobs`]): a `feed_blob` row and its 1 MiB
//!   `feed_blob_chunk`s hold a zip, or the JSON of a route index or of one route detail,
//!   once however many versions or instances have it.
//! - A `feed_version` names its blobs; `feed_current` names each feed's current version
//!   and moves in the same transaction as the version's insert ([`store_zip`],
//!   [`store_index`]), so it never names a version that is not fully stored.
//! - [`current_versions`], [`read_blob`] and [`read_route_blobs`] read them back for the
//!   warm start (`crate::refresh::warm`), checking every blob against its sha256: a
//!   mismatch is [`ReadError::Corrupt`], and the caller drops the version and the blob
//!   ([`drop_corrupt`]).
//! - [`prune`] keeps `feed_versions_kept` versions per feed (the current one always, and
//!   any a live waybill was checked against) and deletes blobs no version names;
//!   [`retention`] runs it after each new version and every 10 minutes.
//!
//! - [`store_route_read`] adds a route detail read through on demand to a stored version
//!   (`read_at` set), for the other replicas (`crate::refresh::reads`); a warm start
//!   loads crawled details only.
//!
//! Storing a version also announces it (`NOTIFY gtfs_fetch_feed_version`, delivered when
//! the transaction commits): the other replicas on the database load it
//! (`crate::refresh::follow`).
//!
//! Writers and the retention can run at once (several instances, later several
//! replicas): a writer locks the blobs it reuses (`FOR KEY SHARE`) and the retention skips
//! locked blobs (`FOR UPDATE SKIP LOCKED`), so a blob is never deleted under a version
//! being stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};
use tokio::sync::Notify;

use super::Db;
use super::replicas::{
    MAX_PAYLOAD, ROUTE_READ_CHANNEL, RouteReadNotice, VERSION_CHANNEL, VersionNotice,
};
use super::waybills::{from_db, to_db};
use crate::feed::spool::{Spool, SpoolWriter};

/// Bytes per `feed_blob_chunk` row (the last chunk of a blob is shorter).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Chunk bytes sent per `INSERT` statement: a few chunks at a time, so a large zip costs
/// few round trips but no statement carries more than this.
const INSERT_BATCH_BYTES: usize = 8 * CHUNK_BYTES;

/// How often the retention runs when no new version wakes it.
pub const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// What a version's blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The GTFS zip itself.
    Zip,
    /// The JSON route index of an otp2/otp1 feed ([`StoredIndex`]); each crawled route
    /// detail is a blob of its own in `feed_version_route`.
    OtpIndex,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Zip => "zip",
            Kind::OtpIndex => "otp-index",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        match text {
            "zip" => Some(Kind::Zip),
            "otp-index" => Some(Kind::OtpIndex),
            _ => None,
        }
    }
}

/// The route index blob of an otp-index version: what the refresh read besides the route
/// details.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StoredIndex {
    pub routes: Vec<crate::feed::model::RouteSummary>,
    pub agencies: Vec<crate::feed::model::AgencyInfo>,
}

/// A version to store: who fetched it, what it is, and the `feed_version` columns.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub instance: &'a str,
    pub gtfs_id: &'a str,
    pub version: &'a str,
    /// `otp2`, `otp1`, or the zip's URL or path.
    pub source: &'a str,
    pub fetched_at: Timestamp,
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    /// The counts `GET /feeds` shows, as JSON.
    pub counts: serde_json::Value,
    /// The replica storing it (named in the notification to the others).
    pub replica: &'a str,
}

/// What storing a version wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Blobs the version names that were new (the others were stored already).
    pub new_blobs: u64,
    /// Bytes of those new blobs.
    pub new_bytes: u64,
}

/// Route detail JSON blobs of an otp-index version, by route id.
pub type RouteBlobs = Vec<(String, Vec<u8>)>;

/// sha256 of `bytes`, lowercase hex: a blob's address.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One content to store: its address and its bytes (borrowed: storing copies a chunk at a
/// time into the statement, never the whole content).
#[derive(Debug, Clone, Copy)]
struct Blob<'a> {
    sha256: &'a str,
    bytes: Content<'a>,
}

/// A blob's bytes: in memory, or a spooled zip (read a chunk at a time from its file).
#[derive(Debug, Clone, Copy)]
enum Content<'a> {
    Memory(&'a [u8]),
    Spool(&'a Spool),
}

impl Content<'_> {
    fn len(self) -> u64 {
        match self {
            Content::Memory(bytes) => bytes.len() as u64,
            Content::Spool(spool) => spool.len(),
        }
    }

    /// Chunk `seq` ([`CHUNK_BYTES`] from `seq * CHUNK_BYTES`; the last is shorter).
    async fn chunk(self, seq: u64) -> anyhow::Result<Vec<u8>> {
        let start = seq * CHUNK_BYTES as u64;
        let len = (self.len() - start).min(CHUNK_BYTES as u64) as usize;
        match self {
            Content::Memory(bytes) => Ok(bytes[start as usize..][..len].to_vec()),
            Content::Spool(spool) => {
                // A file read: off the async runtime.
                let spool = spool.clone();
                tokio::task::spawn_blocking(move || {
                    let mut chunk = vec![0; len];
                    spool.read_exact_at(start, &mut chunk).map(|()| chunk)
                })
                .await?
                .map_err(|e| anyhow::anyhow!("cannot read the spooled zip: {e}"))
            }
        }
    }

    fn chunk_count(self) -> u64 {
        self.len().div_ceil(CHUNK_BYTES as u64)
    }
}

/// Makes sure every blob is stored, and keeps those already stored from being deleted
/// until the transaction ends. Only blobs not stored yet are written, chunk by chunk.
async fn put_blobs(tx: &mut PgConnection, blobs: &[Blob<'_>]) -> anyhow::Result<Written> {
    use anyhow::Context;

    let mut seen = HashSet::new();
    let blobs: Vec<Blob<'_>> = blobs
        .iter()
        .filter(|b| seen.insert(b.sha256))
        .copied()
        .collect();
    let shas: Vec<&str> = blobs.iter().map(|b| b.sha256).collect();
    let present: HashSet<String> = sqlx::query_scalar(
        "SELECT sha256 FROM feed_blob WHERE sha256 = ANY($1) ORDER BY sha256 FOR KEY SHARE",
    )
    .bind(&shas)
    .fetch_all(&mut *tx)
    .await
    .context("cannot look up the stored blobs")?
    .into_iter()
    .collect();
    let missing: Vec<Blob<'_>> = blobs
        .iter()
        .filter(|b| !present.contains(b.sha256))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(Written::default());
    }
    let (missing_shas, sizes): (Vec<&str>, Vec<i64>) = missing
        .iter()
        .map(|b| (b.sha256, b.bytes.len() as i64))
        .unzip();
    let inserted: HashSet<String> = sqlx::query_scalar(
        "INSERT INTO feed_blob (sha256, size)
         SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (sha256) DO NOTHING
         RETURNING sha256",
    )
    .bind(&missing_shas)
    .bind(&sizes)
    .fetch_all(&mut *tx)
    .await
    .context("cannot insert the new blobs")?
    .into_iter()
    .collect();
    // Neither there before nor inserted now: another writer stored them meanwhile (and
    // committed, or the insert would have waited for it). Lock them as the others.
    let raced: Vec<&str> = missing_shas
        .iter()
        .filter(|s| !inserted.contains(**s))
        .copied()
        .collect();
    if !raced.is_empty() {
        let locked: Vec<String> = sqlx::query_scalar(
            "SELECT sha256 FROM feed_blob WHERE sha256 = ANY($1) ORDER BY sha256 FOR KEY SHARE",
        )
        .bind(&raced)
        .fetch_all(&mut *tx)
        .await
        .context("cannot lock the blobs stored meanwhile")?;
        if locked.len() != raced.len() {
            anyhow::bail!("a blob was deleted by the retention while being stored; try again");
        }
    }

    let mut written = Written::default();
    let mut batch = ChunkBatch::default();
    for blob in missing.iter().filter(|b| inserted.contains(b.sha256)) {
        written.new_blobs += 1;
        written.new_bytes += blob.bytes.len();
        for seq in 0..blob.bytes.chunk_count() {
            let chunk = blob.bytes.chunk(seq).await?;
            batch.push(blob.sha256, seq as i32, chunk);
            if batch.bytes >= INSERT_BATCH_BYTES {
                batch.flush(tx).await?;
            }
        }
    }
    batch.flush(tx).await?;
    Ok(written)
}

/// Chunks waiting to be inserted by one statement (copies: a spooled zip's chunks are read
/// from its file, so the batch owns them all).
#[derive(Default)]
struct ChunkBatch<'a> {
    shas: Vec<&'a str>,
    seqs: Vec<i32>,
    chunks: Vec<Vec<u8>>,
    bytes: usize,
}

impl<'a> ChunkBatch<'a> {
    fn push(&mut self, sha256: &'a str, seq: i32, chunk: Vec<u8>) {
        self.shas.push(sha256);
        self.seqs.push(seq);
        self.bytes += chunk.len();
        self.chunks.push(chunk);
    }

    async fn flush(&mut self, tx: &mut PgConnection) -> anyhow::Result<()> {
        use anyhow::Context;

        if self.shas.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO feed_blob_chunk (sha256, seq, bytes)
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::bytea[])",
        )
        .bind(&self.shas)
        .bind(&self.seqs)
        .bind(&self.chunks)
        .execute(&mut *tx)
        .await
        .context("cannot insert blob chunks")?;
        self.shas.clear();
        self.seqs.clear();
        self.chunks.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Inserts (or refreshes) the `feed_version` row and makes it the feed's current version;
/// the version's id.
async fn insert_version(
    tx: &mut PgConnection,
    v: &NewVersion<'_>,
    kind: Kind,
    blob: &str,
) -> anyhow::Result<i64> {
    use anyhow::Context;

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO feed_version
             (instance, gtfs_id, version, kind, blob, source, fetched_at, etag, last_modified, counts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
         ON CONFLICT (instance, gtfs_id, version) DO UPDATE SET
             kind = EXCLUDED.kind, blob = EXCLUDED.blob, source = EXCLUDED.source,
             fetched_at = EXCLUDED.fetched_at, etag = EXCLUDED.etag,
             last_modified = EXCLUDED.last_modified, counts = EXCLUDED.counts
         RETURNING id",
    )
    .bind(v.instance)
    .bind(v.gtfs_id)
    .bind(v.version)
    .bind(kind.as_str())
    .bind(blob)
    .bind(v.source)
    .bind(to_db(v.fetched_at))
    .bind(v.etag)
    .bind(v.last_modified)
    .bind(v.counts.to_string())
    .fetch_one(&mut *tx)
    .await
    .context("cannot insert the feed_version row")?;
    // A version fetched again (the feed went back to it) gets the route details of now.
    sqlx::query("DELETE FROM feed_version_route WHERE version_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("cannot clear the version's old route details")?;
    sqlx::query(
        "INSERT INTO feed_current (instance, gtfs_id, version_id) VALUES ($1, $2, $3)
         ON CONFLICT (instance, gtfs_id) DO UPDATE SET
             version_id = EXCLUDED.version_id, updated_at = now()",
    )
    .bind(v.instance)
    .bind(v.gtfs_id)
    .bind(id)
    .execute(&mut *tx)
    .await
    .context("cannot move feed_current")?;
    // The other replicas load it when told; PostgreSQL delivers the notification only if
    // this transaction commits, so it never names a version that is not stored.
    let notice = VersionNotice {
        instance: v.instance.to_owned(),
        gtfs_id: v.gtfs_id.to_owned(),
        version: v.version.to_owned(),
        replica: v.replica.to_owned(),
    };
    // Too long to send: the other replicas find it on their next interval's catch-up.
    announce(tx, VERSION_CHANNEL, &notice).await?;
    Ok(id)
}

/// Sends `notice` on `channel` when `tx` commits (PostgreSQL delivers it only then), unless
/// it is too long for a notification: then it is logged, and the transaction goes on.
async fn announce(
    tx: &mut PgConnection,
    channel: &str,
    notice: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let payload = serde_json::to_string(notice).context("cannot write the notification")?;
    if payload.len() > MAX_PAYLOAD {
        tracing::warn!(
            channel,
            bytes = payload.len(),
            "a notification too long to send"
        );
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(&payload)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("cannot notify {channel}"))?;
    Ok(())
}

/// Stores a zip version: the zip (unless already stored, by sha256), its version row,
/// and makes it current; one transaction. `zip` is the fetcher's own copy, read a chunk
/// at a time (its sha256 was taken as it was spooled).
pub async fn store_zip(db: &Db, v: &NewVersion<'_>, zip: &Spool) -> anyhow::Result<Written> {
    use anyhow::Context;

    let sha = zip.sha256_hex();
    let mut tx = db
        .pool
        .begin()
        .await
        .context("cannot begin the transaction")?;
    let written = put_blobs(
        &mut tx,
        &[Blob {
            sha256: sha,
            bytes: Content::Spool(zip),
        }],
    )
    .await?;
    insert_version(&mut tx, v, Kind::Zip, sha).await?;
    tx.commit().await.context("cannot commit")?;
    Ok(written)
}

/// Stores an otp-index version: the index JSON and each route detail's JSON (by route
/// id) as blobs, the version row and its route rows, and makes it current; one
/// transaction.
pub async fn store_index(
    db: &Db,
    v: &NewVersion<'_>,
    index: &[u8],
    details: &[(String, Vec<u8>)],
) -> anyhow::Result<Written> {
    use anyhow::Context;

    let index_sha = sha256_hex(index);
    let detail_shas: Vec<String> = details.iter().map(|(_, json)| sha256_hex(json)).collect();
    let mut blobs = Vec::with_capacity(details.len() + 1);
    blobs.push(Blob {
        sha256: &index_sha,
        bytes: Content::Memory(index),
    });
    for ((_, json), sha) in details.iter().zip(&detail_shas) {
        blobs.push(Blob {
            sha256: sha,
            bytes: Content::Memory(json),
        });
    }
    let mut tx = db
        .pool
        .begin()
        .await
        .context("cannot begin the transaction")?;
    let written = put_blobs(&mut tx, &blobs).await?;
    let id = insert_version(&mut tx, v, Kind::OtpIndex, &index_sha).await?;
    let route_ids: Vec<&str> = details.iter().map(|(id, _)| id.as_str()).collect();
    sqlx::query(
        "INSERT INTO feed_version_route (version_id, route_id, blob)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[])",
    )
    .bind(id)
    .bind(&route_ids)
    .bind(&detail_shas)
    .execute(&mut *tx)
    .await
    .context("cannot insert the version's route details")?;
    tx.commit().await.context("cannot commit")?;
    Ok(written)
}

/// A route detail read through on demand, to share with the other replicas.
#[derive(Debug, Clone, Copy)]
pub struct RouteRead<'a> {
    pub instance: &'a str,
    pub gtfs_id: &'a str,
    /// The feed version it was read at (`GET /feeds`'s `version`).
    pub version: &'a str,
    pub route_id: &'a str,
    /// The detail's JSON, as `GET /feeds/{gtfs_id}/routes/{route_id}` answers it.
    pub json: &'a [u8],
    /// This replica's id (it ignores its own announcement).
    pub replica: &'a str,
}

/// Stores `read` as a route row of its version, replacing an earlier read of the same
/// route, and announces it (`NOTIFY`, delivered when it commits); one transaction.
/// Whether it was stored: not when the version is not in the store (it was served but
/// its store failed; the retention deletes the blob) or when the route was crawled with
/// the version (that detail stays).
pub async fn store_route_read(db: &Db, read: &RouteRead<'_>) -> anyhow::Result<bool> {
    use anyhow::Context;

    let sha = sha256_hex(read.json);
    let mut tx = db
        .pool
        .begin()
        .await
        .context("cannot begin the transaction")?;
    put_blobs(
        &mut tx,
        &[Blob {
            sha256: &sha,
            bytes: Content::Memory(read.json),
        }],
    )
    .await?;
    let stored = sqlx::query(
        "INSERT INTO feed_version_route (version_id, route_id, blob, read_at)
         SELECT id, $4, $5, now() FROM feed_version
         WHERE instance = $1 AND gtfs_id = $2 AND version = $3
         ON CONFLICT (version_id, route_id) DO UPDATE
             SET blob = EXCLUDED.blob, read_at = EXCLUDED.read_at
             WHERE feed_version_route.read_at IS NOT NULL",
    )
    .bind(read.instance)
    .bind(read.gtfs_id)
    .bind(read.version)
    .bind(read.route_id)
    .bind(&sha)
    .execute(&mut *tx)
    .await
    .context("cannot insert the route row")?
    .rows_affected()
        > 0;
    if stored {
        let notice = RouteReadNotice {
            instance: read.instance.to_owned(),
            gtfs_id: read.gtfs_id.to_owned(),
            version: read.version.to_owned(),
            route_id: read.route_id.to_owned(),
            blob: sha,
            replica: read.replica.to_owned(),
        };
        // Too long to send: stored all the same; the others ask OTP for it.
        announce(&mut tx, ROUTE_READ_CHANNEL, &notice).await?;
    }
    tx.commit().await.context("cannot commit")?;
    Ok(stored)
}

/// A feed's current version, as stored.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub id: i64,
    pub gtfs_id: String,
    pub version: String,
    /// `None`: a kind this build does not know (the row is left alone).
    pub kind: Option<Kind>,
    pub blob: String,
    pub source: String,
    pub fetched_at: Timestamp,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The current version of every feed of `instance`, by `gtfs_id`.
pub async fn current_versions(db: &Db, instance: &str) -> sqlx::Result<Vec<StoredVersion>> {
    let rows = sqlx::query(
        "SELECT v.id, v.gtfs_id, v.version, v.kind, v.blob, v.source, v.fetched_at, v.etag,
                v.last_modified
         FROM feed_current c JOIN feed_version v ON v.id = c.version_id
         WHERE c.instance = $1
         ORDER BY v.gtfs_id",
    )
    .bind(instance)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            Ok(StoredVersion {
                id: row.try_get("id")?,
                gtfs_id: row.try_get("gtfs_id")?,
                version: row.try_get("version")?,
                kind: Kind::parse(&kind),
                blob: row.try_get("blob")?,
                source: row.try_get("source")?,
                fetched_at: from_db(row.try_get("fetched_at")?),
                etag: row.try_get("etag")?,
                last_modified: row.try_get("last_modified")?,
            })
        })
        .collect()
}

/// Why a stored version could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// What is stored is not what was stored: missing or extra chunks, a wrong size or
    /// sha256 (then `blob` names the blob at fault), JSON that does not parse, a zip that
    /// is not a usable feed. The version is of no use and should be dropped
    /// ([`drop_corrupt`]).
    #[error("corrupt: {why}")]
    Corrupt { why: String, blob: Option<String> },
    /// Usable perhaps, but not by this process now (larger than `max_feed_bytes`).
    #[error("{0}")]
    Unusable(String),
    /// The database could not be read; nothing is known about the version.
    #[error("cannot read the feed store: {0}")]
    Database(#[from] sqlx::Error),
}

impl ReadError {
    /// A version that is of no use, though its blobs are what was stored.
    pub fn corrupt(why: impl Into<String>) -> Self {
        ReadError::Corrupt {
            why: why.into(),
            blob: None,
        }
    }

    /// A blob whose bytes are not what was stored.
    fn bad_blob(sha256: &str, why: impl std::fmt::Display) -> Self {
        ReadError::Corrupt {
            why: format!("blob {sha256}: {why}"),
            blob: Some(sha256.to_owned()),
        }
    }
}

/// Assembles one blob from its chunks in `seq` order, checking them against its size and
/// address; spooled (a large zip goes to a temporary file, not the heap).
struct Assembly {
    sha256: String,
    size: u64,
    bytes: SpoolWriter,
    next_seq: i32,
}

impl Assembly {
    fn new(sha256: String, size: i64) -> Result<Self, ReadError> {
        let size = u64::try_from(size)
            .map_err(|_| ReadError::bad_blob(&sha256, format_args!("size {size}")))?;
        Ok(Self {
            bytes: SpoolWriter::new(),
            sha256,
            size,
            next_seq: 0,
        })
    }

    fn push(&mut self, seq: i32, chunk: &[u8]) -> Result<(), ReadError> {
        if seq != self.next_seq {
            return Err(ReadError::bad_blob(
                &self.sha256,
                format_args!("chunk {seq} where chunk {} was expected", self.next_seq),
            ));
        }
        if self.bytes.len() + chunk.len() as u64 > self.size {
            return Err(ReadError::bad_blob(
                &self.sha256,
                format_args!("its chunks hold more than its {} bytes", self.size),
            ));
        }
        self.bytes
            .write(chunk)
            .map_err(|e| ReadError::Unusable(format!("cannot spool blob {}: {e}", self.sha256)))?;
        self.next_seq += 1;
        Ok(())
    }

    fn finish(self) -> Result<Spool, ReadError> {
        if self.bytes.len() != self.size {
            return Err(ReadError::bad_blob(
                &self.sha256,
                format_args!(
                    "its chunks hold {} of its {} bytes",
                    self.bytes.len(),
                    self.size
                ),
            ));
        }
        let bytes = self
            .bytes
            .finish()
            .map_err(|e| ReadError::Unusable(format!("cannot spool blob {}: {e}", self.sha256)))?;
        if bytes.sha256_hex() != self.sha256 {
            return Err(ReadError::bad_blob(
                &self.sha256,
                format_args!("its bytes have sha256 {}", bytes.sha256_hex()),
            ));
        }
        Ok(bytes)
    }

    /// [`Assembly::finish`], the bytes in memory (a route detail's JSON).
    fn finish_in_memory(self) -> Result<Vec<u8>, ReadError> {
        let sha256 = self.sha256.clone();
        self.finish()?
            .to_vec()
            .map_err(|e| ReadError::Unusable(format!("cannot read spooled blob {sha256}: {e}")))
    }
}

/// The bytes of blob `sha256`, checked; at most `max_bytes`. Spooled: a large zip is in a
/// temporary file, not in memory.
pub async fn read_blob(db: &Db, sha256: &str, max_bytes: u64) -> Result<Spool, ReadError> {
    let size: Option<i64> = sqlx::query_scalar("SELECT size FROM feed_blob WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(&db.pool)
        .await?;
    let Some(size) = size else {
        return Err(ReadError::corrupt(format!("blob {sha256} is missing")));
    };
    if size > 0 && size as u64 > max_bytes {
        return Err(ReadError::Unusable(format!(
            "blob {sha256} has {size} bytes, over max_feed_bytes ({max_bytes})"
        )));
    }
    let mut blob = Assembly::new(sha256.to_owned(), size)?;
    let mut rows =
        sqlx::query("SELECT seq, bytes FROM feed_blob_chunk WHERE sha256 = $1 ORDER BY seq")
            .bind(sha256)
            .fetch(&db.pool);
    while let Some(row) = rows.try_next().await? {
        let bytes: &[u8] = row.try_get("bytes")?;
        blob.push(row.try_get("seq")?, bytes)?;
    }
    blob.finish()
}

/// Which route details of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Details {
    /// Crawled with the version: its own, for the life of the version.
    Crawled,
    /// Read through on demand since ([`store_route_read`]): fresh for `cache_ttl` only.
    Read,
}

/// The route detail blobs of an otp-index version, crawled or read, by route id, each
/// checked.
pub async fn read_route_blobs(
    db: &Db,
    version_id: i64,
    which: Details,
) -> Result<RouteBlobs, ReadError> {
    let mut rows = sqlx::query(
        "SELECT r.route_id, r.blob, b.size, c.seq, c.bytes
         FROM feed_version_route r
         JOIN feed_blob b ON b.sha256 = r.blob
         LEFT JOIN feed_blob_chunk c ON c.sha256 = r.blob
         WHERE r.version_id = $1 AND (r.read_at IS NOT NULL) = $2
         ORDER BY r.route_id, c.seq",
    )
    .bind(version_id)
    .bind(which == Details::Read)
    .fetch(&db.pool);
    let mut out = Vec::new();
    let mut current: Option<(String, Assembly)> = None;
    while let Some(row) = rows.try_next().await? {
        let route_id: String = row.try_get("route_id")?;
        if current.as_ref().is_none_or(|(id, _)| *id != route_id) {
            if let Some((id, blob)) = current.take() {
                out.push((id, blob.finish_in_memory()?));
            }
            let blob = Assembly::new(row.try_get("blob")?, row.try_get("size")?)?;
            current = Some((route_id, blob));
        }
        // A blob of no bytes has no chunk: the outer join gives one row without one.
        let seq: Option<i32> = row.try_get("seq")?;
        let bytes: Option<&[u8]> = row.try_get("bytes")?;
        if let (Some(seq), Some(bytes), Some((_, blob))) = (seq, bytes, current.as_mut()) {
            blob.push(seq, bytes)?;
        }
    }
    if let Some((id, blob)) = current {
        out.push((id, blob.finish_in_memory()?));
    }
    Ok(out)
}

/// Deletes a corrupt version (its route rows and, if it was current, its `feed_current`
/// row go with it) and, when a blob is at fault, that blob and every version naming it:
/// they are all as corrupt, and the blob must go so that the next fetch of the same
/// content stores it anew rather than reusing it. One transaction.
pub async fn drop_corrupt(db: &Db, version_id: i64, blob: Option<&str>) -> sqlx::Result<()> {
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "DELETE FROM feed_version
         WHERE id = $1 OR blob = $2
            OR id IN (SELECT version_id FROM feed_version_route WHERE blob = $2)",
    )
    .bind(version_id)
    .bind(blob)
    .execute(&mut *tx)
    .await?;
    if let Some(blob) = blob {
        sqlx::query("DELETE FROM feed_blob WHERE sha256 = $1")
            .bind(blob)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// What one run of the retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub versions: u64,
    pub blobs: u64,
}

/// Blobs deleted per statement, so that a long backlog never holds one long transaction.
const BLOB_BATCH: i64 = 1000;

/// Deletes the versions beyond the `kept` newest of each feed (by `fetched_at`), except
/// each feed's current version and any version a waybill that is neither completed nor
/// cancelled was checked against; then the blobs no version names.
pub async fn prune(db: &Db, kept: u32) -> sqlx::Result<Pruned> {
    let versions = sqlx::query(
        "WITH ranked AS (
             SELECT id, row_number() OVER (
                 PARTITION BY instance, gtfs_id ORDER BY fetched_at DESC, id DESC) AS n
             FROM feed_version)
         DELETE FROM feed_version v USING ranked r
         WHERE v.id = r.id AND r.n > $1
           AND NOT EXISTS (SELECT 1 FROM feed_current c WHERE c.version_id = v.id)
           AND NOT EXISTS (
               SELECT 1 FROM waybill w
               WHERE w.gtfs_id = v.gtfs_id AND w.feed_version = v.version
                 AND w.status NOT IN ('completed', 'cancelled'))",
    )
    .bind(i64::from(kept))
    .execute(&db.pool)
    .await?
    .rows_affected();
    let mut blobs = 0;
    loop {
        // Blobs a writer is reusing are locked (FOR KEY SHARE) until its version is in:
        // skipped here, and named by then.
        let deleted = sqlx::query(
            "DELETE FROM feed_blob WHERE sha256 IN (
                 SELECT b.sha256 FROM feed_blob b
                 WHERE NOT EXISTS (SELECT 1 FROM feed_version v WHERE v.blob = b.sha256)
                   AND NOT EXISTS (SELECT 1 FROM feed_version_route r WHERE r.blob = b.sha256)
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(BLOB_BATCH)
        .execute(&db.pool)
        .await?
        .rows_affected();
        blobs += deleted;
        if deleted < BLOB_BATCH as u64 {
            return Ok(Pruned { versions, blobs });
        }
    }
}

/// Runs [`prune`] once the database is ready, then whenever `wake` is notified (a new
/// version was stored) and every [`RETENTION_EVERY`]; runs until dropped (the
/// application's background task, stopped by its cancellation token).
pub async fn retention(db: Arc<Db>, kept: u32, wake: Arc<Notify>) {
    db.wait_prepared().await;
    let mut every = tokio::time::interval(RETENTION_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = wake.notified() => {}
        }
        match prune(&db, kept).await {
            Ok(Pruned {
                versions: 0,
                blobs: 0,
            }) => {}
            Ok(p) => tracing::info!(
                versions = p.versions,
                blobs = p.blobs,
                kept,
                "deleted old feed versions from the feed store"
            ),
            Err(e) => tracing::warn!("cannot delete old feed versions from the feed store: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(sha: &str, size: i64, chunks: &[(i32, &[u8])]) -> Result<Vec<u8>, ReadError> {
        let mut blob = Assembly::new(sha.to_owned(), size)?;
        for (seq, bytes) in chunks {
            blob.push(*seq, bytes)?;
        }
        blob.finish_in_memory()
    }

    fn blob_at_fault(e: ReadError) -> Option<String> {
        match e {
            ReadError::Corrupt { blob, .. } => blob,
            other => panic!("not corrupt: {other}"),
        }
    }

    #[test]
    fn chunks_in_order_of_the_announced_size_and_sha256_make_the_blob() {
        let sha = sha256_hex(b"hello world");
        let got = assemble(&sha, 11, &[(0, b"hello "), (1, b"world")]).unwrap();
        assert_eq!(got, b"hello world");
        let empty = sha256_hex(b"");
        assert_eq!(assemble(&empty, 0, &[]).unwrap(), b"");
    }

    #[test]
    fn a_missing_changed_or_extra_chunk_names_the_blob() {
        let sha = sha256_hex(b"hello world");
        for (size, chunks) in [
            // a chunk missing in the middle, at the end
            (11, vec![(0, &b"hello "[..]), (2, b"world")]),
            (11, vec![(0, &b"hello "[..])]),
            // changed bytes, same length
            (11, vec![(0, &b"HELLO "[..]), (1, b"world")]),
            // more bytes than announced
            (11, vec![(0, &b"hello "[..]), (1, b"world!")]),
            // a negative size
            (-1, vec![]),
        ] {
            let e = assemble(&sha, size, &chunks).unwrap_err();
            assert_eq!(blob_at_fault(e), Some(sha.clone()));
        }
    }
}
