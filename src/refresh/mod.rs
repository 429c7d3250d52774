//! Refreshing feeds: one refresh per instance at a time, on a schedule or on demand.
//!
//! A refresh of an instance:
//! - for each `[[instances.feeds]]` zip: a conditional GET (ETag, Last-Modified) or a file
//!   read, spooled (to a temporary file once large, hashed on the way: [`Spool`]); a 304
//!   or an unchanged sha256 costs nothing more; a new version is parsed off the async
//!   runtime into a [`FeedSnapshot`] and swapped in. A local directory of `.txt`
//!   files is read like a file, its version being the sha256 over its files ([`FeedDir`]);
//! - for `otp2`/`otp1` instances, every other feed the instance lists: its route index,
//!   hashed into a version; with `prefetch_routes`, each route's detail crawled (spaced by
//!   `rate_limit_delay`).
//!
//! A failure keeps the feed's last good data and records the error on the feed and the
//! instance. Every fetch is recorded in the `feed_fetch` table. A new version is swapped
//! in first, then written to the database's feed store ([`save`]).
//!
//! The scheduler runs one task per instance: the warm start ([`warm`]: the versions
//! stored before the restart), a refresh at start-up, then every `refresh_interval`
//! ±10 %, or at once when `POST /instances/{name}/refresh` wakes it. Replicas sharing
//! the database take turns ([`lease`]): per instance only the one holding the refresh
//! lease refreshes; the others load what it stores ([`follow`]), and the route details
//! each one reads through on demand ([`reads`]).

pub mod follow;
pub mod lease;
pub mod reads;
mod save;
pub mod warm;

use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{
    ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use url::Url;

use crate::config::{Api, FeedSource};
use crate::db::fetches::{self, FeedOutcome, Outcome};
use crate::feed::dir::FeedDir;
use crate::feed::error::FeedError;
use crate::feed::model::{FeedInfo, sort_routes};
use crate::feed::snapshot::FeedSnapshot;
use crate::feed::spool::Spool;
use crate::feed::store::{FeedData, FeedEntry, Loaded, RouteIndex};
use crate::memory;
use crate::otp::client::{Call, OtpClient, OtpError, Response};
use crate::otp::instance::{Caller, InstanceRuntime};
use crate::state::AppState;

/// Download progress: feed id, bytes so far, total when announced.
pub type DownloadProgress<'a> = dyn Fn(&str, u64, Option<u64>) + Send + Sync + 'a;

/// The result of one instance refresh.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshSummary {
    pub instance: String,
    pub feeds: Vec<FeedOutcome>,
}

impl RefreshSummary {
    pub fn ok(&self) -> bool {
        self.feeds.iter().all(|f| f.outcome != Outcome::Failed)
    }
}

/// One instance's scheduler: the warm start, then, while this replica holds the
/// instance's refresh lease, a refresh now and one every `refresh_interval` (±10 %) or
/// when woken by a manual refresh ([`lease::run`]); runs until dropped (`App` runs one per
/// instance as a background task, stopped by its cancellation token).
pub async fn schedule(state: AppState, instance: std::sync::Arc<InstanceRuntime>) {
    warm::warm_start(&state, &instance).await;
    lease::run(&state, &instance).await;
}

/// Refreshes every feed of `instance`; waits if a refresh of it is already running.
pub async fn refresh_instance(
    state: &AppState,
    instance: &InstanceRuntime,
    progress: Option<&DownloadProgress<'_>>,
) -> RefreshSummary {
    // An OTP found older than 2.6 may have been upgraded since: the refresh asks as for a
    // current one again (one refused request per refresh if not).
    let _single = instance.begin_refresh().await;
    instance.update(|s| s.last_started_at = Some(Timestamp::now()));
    tracing::info!(instance = instance.name(), "refresh started");

    let mut feeds = Vec::new();
    for source in &instance.config.feeds {
        feeds.push(refresh_zip(state, instance, source, progress).await);
    }
    match instance.config.api {
        Api::Otp2 | Api::Otp1 => feeds.extend(refresh_api(state, instance).await),
        Api::Gtfs => {}
    }
    fetches::record(&state.db, &feeds).await;

    let summary = RefreshSummary {
        instance: instance.name().to_owned(),
        feeds,
    };
    let now = Timestamp::now();
    let first_error = summary.feeds.iter().find_map(|f| {
        f.error.as_ref().map(|e| match &f.gtfs_id {
            Some(id) => format!("feed {id}: {e}"),
            None => e.clone(),
        })
    });
    instance.update(|s| {
        s.refreshes += 1;
        s.last_finished_at = Some(now);
        match &first_error {
            None => {
                s.last_success_at = Some(now);
                s.last_error = None;
            }
            Some(e) => s.last_error = Some(e.clone()),
        }
    });
    instance.end_refresh();
    let counts = |o: Outcome| summary.feeds.iter().filter(|f| f.outcome == o).count();
    tracing::info!(
        instance = instance.name(),
        updated = counts(Outcome::Updated),
        unchanged = counts(Outcome::Unchanged),
        failed = counts(Outcome::Failed),
        "refresh finished"
    );
    summary
}

/// Where a zip comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipLocation {
    Url(Url),
    /// A local zip file, or a local directory of GTFS `.txt` files.
    File(PathBuf),
}

/// Resolves `zip_url`: `http(s)://...` as is; `/path` a local file (or directory) when one
/// is there, else that path under the instance URL; `file://...` or any other text a local
/// path (relative to the working directory).
pub async fn zip_location(client: &OtpClient, zip_url: &str) -> Result<ZipLocation, String> {
    if zip_url.starts_with("http://") || zip_url.starts_with("https://") {
        return Url::parse(zip_url)
            .map(ZipLocation::Url)
            .map_err(|e| format!("bad zip_url {zip_url:?}: {e}"));
    }
    if zip_url.starts_with('/') {
        let is_file = tokio::fs::metadata(zip_url)
            .await
            .is_ok_and(|m| m.is_file() || m.is_dir());
        return Ok(if is_file {
            ZipLocation::File(PathBuf::from(zip_url))
        } else {
            ZipLocation::Url(client.url(zip_url))
        });
    }
    if zip_url.starts_with("file:") {
        let url = Url::parse(zip_url).map_err(|e| format!("bad zip_url {zip_url:?}: {e}"))?;
        return url
            .to_file_path()
            .map(ZipLocation::File)
            .map_err(|()| format!("bad file URL {zip_url:?}"));
    }
    Ok(ZipLocation::File(PathBuf::from(zip_url)))
}

/// `url` for messages: its password, if any, as `***`.
fn shown_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some(crate::config::REDACTED));
    }
    url.to_string()
}

/// What a zip download (or a local read) gave.
enum Download {
    NotModified,
    Body {
        zip: Spool,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// A local directory of `.txt` files, read whole, with its version.
    Dir(FeedDir),
}

/// What is parsed once a new version is known.
enum NewFeed {
    Zip(Spool),
    Dir(FeedDir),
}

impl NewFeed {
    /// The feed as one zip (a directory packed into one, so that the parser and the
    /// store take it like any zip). Blocking: packing reads and compresses every file.
    fn into_spool(self) -> Result<Spool, FeedError> {
        match self {
            NewFeed::Zip(zip) => Ok(zip),
            NewFeed::Dir(dir) => Ok(Spool::from_bytes(dir.to_zip()?.into())),
        }
    }

    /// What it is, for messages.
    fn what(&self) -> &'static str {
        match self {
            NewFeed::Zip(_) => "the zip",
            NewFeed::Dir(_) => "the directory",
        }
    }
}

async fn refresh_zip(
    state: &AppState,
    instance: &InstanceRuntime,
    source: &FeedSource,
    progress: Option<&DownloadProgress<'_>>,
) -> FeedOutcome {
    let started_at = Timestamp::now();
    let mut outcome =
        FeedOutcome::started(instance.name(), Some(source.gtfs_id.clone()), started_at);
    let result = async {
        let entry = state
            .feeds
            .entry(&source.gtfs_id, instance.name(), &source.zip_url)?;
        entry.update_status(|s| s.last_attempt_at = Some(started_at));
        let result = load_zip(state, instance, source, &entry, progress, &mut outcome).await;
        if let Err(e) = &result {
            entry.record_error(e);
        }
        result
    }
    .await;
    match result {
        Ok(o) => outcome.outcome = o,
        Err(e) => {
            tracing::warn!(instance = instance.name(), gtfs_id = %source.gtfs_id, "feed refresh failed: {e}");
            outcome.error = Some(e);
        }
    }
    outcome.finished_at = Timestamp::now();
    outcome
}

async fn load_zip(
    state: &AppState,
    instance: &InstanceRuntime,
    source: &FeedSource,
    entry: &FeedEntry,
    progress: Option<&DownloadProgress<'_>>,
    outcome: &mut FeedOutcome,
) -> Result<Outcome, String> {
    let max = state.config.max_feed_bytes;
    let current = entry.current();
    let download = match zip_location(&instance.client, &source.zip_url).await? {
        ZipLocation::Url(url) => {
            let shown = shown_url(&url);
            let mut headers = HeaderMap::new();
            // Only ask "has it changed?" when we hold what it would not have changed from,
            // stored in the database too (else the bytes are wanted again, to store them).
            if current.is_some() && !entry.status().unstored {
                let status = entry.status();
                if let Some(v) = status
                    .etag
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    headers.insert(IF_NONE_MATCH, v);
                }
                if let Some(v) = status
                    .last_modified
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                {
                    headers.insert(IF_MODIFIED_SINCE, v);
                }
            }
            let gtfs_id = source.gtfs_id.clone();
            let on_chunk = move |done: u64, total: Option<u64>| {
                if let Some(p) = progress {
                    p(&gtfs_id, done, total);
                }
            };
            let call = Call {
                headers,
                max_bytes: max,
                progress: Some(&on_chunk),
                spool: true,
                ..Call::get(url)
            };
            let mut http_status = None;
            let result = instance
                .client
                .call(call, |r: &Response| {
                    match r.status {
                        StatusCode::NOT_MODIFIED => Ok(Download::NotModified),
                        s if s.is_success() => Ok(Download::Body {
                            zip: r
                                .spooled
                                .clone()
                                .unwrap_or_else(|| Spool::from_bytes(r.body.clone())),
                            etag: header_text(&r.headers, ETAG),
                            last_modified: header_text(&r.headers, LAST_MODIFIED),
                        }),
                        s => Err(format!("the zip URL answered HTTP {}", s.as_u16())),
                    }
                    .inspect(|_| http_status = Some(r.status.as_u16()))
                })
                .await;
            outcome.http_status = http_status.or(match &result {
                Err(OtpError::Status { status, .. }) => Some(*status),
                _ => None,
            });
            result.map_err(|e| {
                // An absolute path is tried as a local file first: say that it was.
                let no_file = if source.zip_url.starts_with('/') {
                    format!(" (and there is no local file {})", source.zip_url)
                } else {
                    String::new()
                };
                format!("GET {shown}: {e}{no_file}")
            })?
        }
        ZipLocation::File(path) => {
            let path = std::path::absolute(&path).unwrap_or(path);
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if meta.is_dir() {
                let dir = tokio::task::spawn_blocking(move || FeedDir::read(&path, max))
                    .await
                    .map_err(|e| format!("the directory reader stopped: {e}"))??;
                Download::Dir(dir)
            } else if meta.len() > max {
                return Err(format!(
                    "{} is {} bytes, over max_feed_bytes ({max})",
                    path.display(),
                    meta.len()
                ));
            } else {
                // Read a chunk at a time into a spool: a large zip is never whole in memory.
                let shown = path.display().to_string();
                let zip = tokio::task::spawn_blocking(move || {
                    Spool::from_reader(std::fs::File::open(&path)?)
                })
                .await
                .map_err(|e| format!("the file reader stopped: {e}"))?
                .map_err(|e| format!("cannot read {shown}: {e}"))?;
                Download::Body {
                    zip,
                    etag: None,
                    last_modified: None,
                }
            }
        }
    };
    let (version, size, etag, last_modified, feed) = match download {
        Download::NotModified => {
            outcome.version = current.as_ref().map(|c| c.version.clone());
            entry.record_unchanged();
            return Ok(Outcome::Unchanged);
        }
        Download::Body {
            zip,
            etag,
            last_modified,
        } => (
            zip.sha256_hex().to_owned(),
            zip.len(),
            etag,
            last_modified,
            NewFeed::Zip(zip),
        ),
        Download::Dir(dir) => (
            dir.version().to_owned(),
            dir.total_bytes(),
            None,
            None,
            NewFeed::Dir(dir),
        ),
    };
    outcome.bytes = Some(size);
    outcome.version = Some(version.clone());
    entry.update_status(|s| {
        s.etag.clone_from(&etag);
        s.last_modified.clone_from(&last_modified);
    });
    let origin = save::Origin {
        instance: instance.name(),
        gtfs_id: &source.gtfs_id,
        source: &source.zip_url,
        etag: etag.as_deref(),
        last_modified: last_modified.as_deref(),
        replica: &state.replica_id,
    };
    if let Some(current) = current.filter(|c| c.version == version) {
        if entry.status().unstored {
            // Served since an earlier refresh, whose store failed: store it now.
            let what = feed.what();
            let zip = tokio::task::spawn_blocking(move || feed.into_spool())
                .await
                .map_err(|e| format!("the directory packer stopped: {e}"))?
                .map_err(|e| format!("{what} is not a usable GTFS feed: {e}"))?;
            save::save_zip(state, entry, origin, &current, &zip).await;
        }
        entry.record_unchanged();
        return Ok(Outcome::Unchanged);
    }
    // The parser and then the store read the one copy of the zip, spooled to a file when
    // large (`Spool` is shared); a directory is packed into one first, so that the store
    // keeps it like any zip.
    let (gtfs_id, source_text, v) = (
        source.gtfs_id.clone(),
        source.zip_url.clone(),
        version.clone(),
    );
    let what = feed.what();
    let max_build_bytes = state.config.max_build_bytes;
    let (snapshot, zip) = tokio::task::spawn_blocking(move || {
        let zip = feed.into_spool()?;
        let built =
            FeedSnapshot::from_zip_within(&gtfs_id, &v, &source_text, zip.bytes(), max_build_bytes);
        // The build's raw tables are freed: their pages go back now, before the store
        // allocates its buffers on other threads (from other arenas), which would
        // otherwise come on top of them and make the refresh's peak.
        memory::purge();
        Ok((built?, zip))
    })
    .await
    .map_err(|e| format!("the feed parser stopped: {e}"))?
    .map_err(|e: FeedError| format!("{what} is not a usable GTFS feed: {e}"))?;
    let loaded = entry.install(Loaded {
        version,
        fetched_at: fetched_now(),
        data: FeedData::Snapshot(Box::new(snapshot)),
    });
    save::save_zip(state, entry, origin, &loaded, &zip).await;
    // The old snapshot is freed by now unless a request still holds it, and so are the
    // store's buffers: give their pages back rather than keep them resident while idle.
    let _ = tokio::task::spawn_blocking(memory::purge).await;
    Ok(Outcome::Updated)
}

/// Now, to the microsecond: the precision PostgreSQL keeps, so a version's `fetched_at`
/// reads the same after a restart has loaded it from the feed store.
fn fetched_now() -> Timestamp {
    let now = Timestamp::now();
    now.round(jiff::Unit::Microsecond).unwrap_or(now)
}

fn header_text(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

/// Refreshes the feeds an OTP API lists, except those loaded from zips.
async fn refresh_api(state: &AppState, instance: &InstanceRuntime) -> Vec<FeedOutcome> {
    let started_at = Timestamp::now();
    let failed = |gtfs_id: Option<String>, error: String| FeedOutcome {
        error: Some(error),
        finished_at: Timestamp::now(),
        ..FeedOutcome::started(instance.name(), gtfs_id, started_at)
    };
    let feeds = match instance.feeds().await {
        Ok(feeds) => feeds,
        Err(e) => {
            let error = format!("cannot list the instance's feeds: {e}");
            tracing::warn!(instance = instance.name(), "{error}");
            for entry in state
                .feeds
                .all()
                .iter()
                .filter(|f| f.instance == instance.name())
            {
                entry.record_error(&error);
            }
            return vec![failed(None, error)];
        }
    };
    let from_zips: Vec<&str> = instance
        .config
        .feeds
        .iter()
        .map(|f| f.gtfs_id.as_str())
        .collect();
    let mut outcomes = Vec::new();
    for feed in feeds
        .iter()
        .filter(|f| !from_zips.contains(&f.gtfs_id.as_str()))
    {
        let started_at = Timestamp::now();
        let entry = match state
            .feeds
            .entry(&feed.gtfs_id, instance.name(), instance.api_name())
        {
            Ok(entry) => entry,
            Err(e) => {
                outcomes.push(failed(Some(feed.gtfs_id.clone()), e));
                continue;
            }
        };
        entry.update_status(|s| s.last_attempt_at = Some(started_at));
        let result = load_index(state, instance, feed, &entry).await;
        let mut outcome = FeedOutcome {
            finished_at: Timestamp::now(),
            ..FeedOutcome::started(instance.name(), Some(feed.gtfs_id.clone()), started_at)
        };
        match result {
            Ok((o, version)) => {
                outcome.outcome = o;
                outcome.version = Some(version);
            }
            Err(e) => {
                tracing::warn!(instance = instance.name(), gtfs_id = %feed.gtfs_id, "feed refresh failed: {e}");
                entry.record_error(&e);
                outcome.error = Some(e);
            }
        }
        outcomes.push(outcome);
    }
    outcomes
}

async fn load_index(
    state: &AppState,
    instance: &InstanceRuntime,
    feed: &FeedInfo,
    entry: &FeedEntry,
) -> Result<(Outcome, String), String> {
    let mut routes = instance.routes(feed).await.map_err(|e| e.to_string())?;
    // OTP lists routes in no particular order: sort them as snapshots are sorted, so the
    // version hash and the route list's paging are stable.
    sort_routes(&mut routes);
    let version = hex::encode(Sha256::digest(
        serde_json::to_vec(&routes).unwrap_or_default(),
    ));
    let origin = save::Origin {
        instance: instance.name(),
        gtfs_id: &feed.gtfs_id,
        source: instance.api_name(),
        etag: None,
        last_modified: None,
        replica: &state.replica_id,
    };
    if let Some(current) = entry.current().filter(|c| c.version == version) {
        if entry.status().unstored {
            // Served since an earlier refresh, whose store failed: store it now.
            save::save_index(state, entry, origin, current).await;
        }
        entry.record_unchanged();
        return Ok((Outcome::Unchanged, version));
    }
    let mut details = HashMap::new();
    if instance.config.prefetch_routes {
        for route in &routes {
            match instance
                .route(&feed.gtfs_id, &route.route_id, Caller::Crawl)
                .await
            {
                Ok(Some(detail)) => {
                    details.insert(route.route_id.clone(), detail);
                }
                // Gone between the two calls: the next refresh will see the new list.
                Ok(None) => {}
                Err(e) => return Err(format!("crawling route {}: {e}", route.route_id)),
            }
        }
        // A route's detail says more than its list entry (OTP 1 lists no text colour,
        // and derives the type from the mode): the list says what the detail says.
        for route in &mut routes {
            if let Some(detail) = details.get(&route.route_id) {
                route.clone_from(&detail.summary);
            }
        }
        sort_routes(&mut routes);
    }
    let loaded = entry.install(Loaded {
        version: version.clone(),
        fetched_at: fetched_now(),
        data: FeedData::Index(RouteIndex {
            routes,
            details,
            agencies: feed.agencies.clone(),
        }),
    });
    save::save_index(state, entry, origin, loaded).await;
    Ok((Outcome::Updated, version))
}
