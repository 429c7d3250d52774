//! The feeds the service knows, each with its current data and its refresh status.
//!
//! A feed's data is immutable once built ([`FeedData`]) and is swapped in atomically
//! (`arc-swap`): readers never wait for a refresh and never see half a feed. A failed
//! refresh leaves the last good data in place and records the error beside it.
//!
//! A version is either fetched from upstream by this process or loaded from the
//! database's feed store (`crate::db::feed_store`): at start-up by
//! `crate::refresh::warm`, or following another replica by `crate::refresh::follow`:
//! [`FeedEntry::install`] and [`FeedEntry::install_stored`], and `GET /feeds` says which
//! ([`LoadedFrom`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwapOption;
use jiff::Timestamp;
use serde::Serialize;

use super::model::{AgencyInfo, RouteDetail, RouteSummary};
use super::network::FeedCounts;
use super::snapshot::FeedSnapshot;

/// A feed's route index as read from an OTP API (no zip): the routes, and the details of
/// those crawled so far (all of them with `prefetch_routes`).
#[derive(Debug)]
pub struct RouteIndex {
    pub routes: Vec<RouteSummary>,
    pub details: HashMap<String, RouteDetail>,
    pub agencies: Vec<AgencyInfo>,
}

/// The data of one feed version.
#[derive(Debug)]
pub enum FeedData {
    /// Full static data from a GTFS zip.
    Snapshot(Box<FeedSnapshot>),
    /// What an OTP API tells about the feed.
    Index(RouteIndex),
}

/// One loaded version of a feed.
#[derive(Debug)]
pub struct Loaded {
    /// sha256 of the zip, or of the route index for OTP APIs.
    pub version: String,
    pub fetched_at: Timestamp,
    pub data: FeedData,
}

impl Loaded {
    pub fn routes(&self) -> &[RouteSummary] {
        match &self.data {
            FeedData::Snapshot(s) => &s.routes,
            FeedData::Index(i) => &i.routes,
        }
    }

    pub fn route_detail(&self, route_id: &str) -> Option<&RouteDetail> {
        match &self.data {
            FeedData::Snapshot(s) => s.route_detail(route_id),
            FeedData::Index(i) => i.details.get(route_id),
        }
    }

    pub fn snapshot(&self) -> Option<&FeedSnapshot> {
        match &self.data {
            FeedData::Snapshot(s) => Some(s),
            FeedData::Index(_) => None,
        }
    }

    /// Counts for `GET /feeds`.
    pub fn counts(&self) -> FeedCountsReport {
        match &self.data {
            FeedData::Snapshot(s) => FeedCountsReport::Zip(s.counts),
            FeedData::Index(i) => FeedCountsReport::Index(IndexCounts {
                routes: i.routes.len() as u64,
                route_details: i.details.len() as u64,
                agencies: i.agencies.len() as u64,
            }),
        }
    }

    /// The most the build of a zip's snapshot held allocated at once, for
    /// `/memory-stats`; `None` for an OTP index (nothing is built) or when the allocator
    /// could not say.
    pub fn build_peak_bytes(&self) -> Option<u64> {
        self.snapshot()
            .map(|s| s.build_peak_bytes)
            .filter(|&peak| peak > 0)
    }

    /// Rough heap size, for `/memory-stats`.
    pub fn approx_bytes(&self) -> usize {
        match &self.data {
            FeedData::Snapshot(s) => s.approx_bytes,
            // The index is small next to a snapshot; its JSON size is a fair estimate.
            FeedData::Index(i) => {
                serde_json::to_vec(&i.routes).map_or(0, |v| v.len())
                    + i.details
                        .values()
                        .map(|d| serde_json::to_vec(d).map_or(0, |v| v.len()))
                        .sum::<usize>()
            }
        }
    }
}

/// Where the version a feed serves came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadedFrom {
    /// Fetched from upstream by this process, or confirmed unchanged by upstream since.
    Upstream,
    /// Read from the database's feed store: at start-up, not yet confirmed by upstream
    /// by this process (OTP has been unreachable, or the first refresh has not finished);
    /// or stored there by the replica holding the instance's refresh lease.
    Store,
}

/// How the last refreshes of a feed went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedStatus {
    pub last_attempt_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    /// Validators of the last zip download, for the next conditional request.
    #[serde(skip)]
    pub etag: Option<String>,
    #[serde(skip)]
    pub last_modified: Option<String>,
    /// Where the current version came from; `None` before the first load.
    #[serde(skip)]
    pub loaded_from: Option<LoadedFrom>,
    /// The current version is served but did not reach the database's feed store (the
    /// database was down or restarting when it was stored): the next refresh fetches it
    /// in full, without "has it changed?", and stores it.
    #[serde(skip)]
    pub unstored: bool,
}

/// One feed: where it comes from, its current data, its status.
#[derive(Debug)]
pub struct FeedEntry {
    pub gtfs_id: String,
    pub instance: String,
    /// `otp2`, `otp1`, or the zip's URL or path.
    pub source: String,
    current: ArcSwapOption<Loaded>,
    status: Mutex<FeedStatus>,
}

impl FeedEntry {
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// Swaps in a new version fetched from upstream and records the success; the version
    /// now served.
    pub fn install(&self, loaded: Loaded) -> Arc<Loaded> {
        let at = loaded.fetched_at;
        let loaded = Arc::new(loaded);
        self.current.store(Some(loaded.clone()));
        self.update_status(|s| {
            s.last_success_at = Some(at);
            s.last_error = None;
            s.loaded_from = Some(LoadedFrom::Upstream);
        });
        loaded
    }

    /// Swaps in a version read from the feed store (the warm start), with the validators
    /// of its zip download so the next refresh can ask "has it changed?". No refresh has
    /// succeeded for it in this process: the success time stays as it is.
    pub fn install_stored(
        &self,
        loaded: Loaded,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> Arc<Loaded> {
        let loaded = Arc::new(loaded);
        self.current.store(Some(loaded.clone()));
        self.update_status(|s| {
            s.etag = etag;
            s.last_modified = last_modified;
            s.loaded_from = Some(LoadedFrom::Store);
            s.unstored = false;
        });
        loaded
    }

    pub fn status(&self) -> FeedStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut FeedStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Records a refresh that found the current version still current: upstream has
    /// confirmed it, wherever it was loaded from.
    pub fn record_unchanged(&self) {
        self.update_status(|s| {
            s.last_success_at = Some(Timestamp::now());
            s.last_error = None;
            s.loaded_from = Some(LoadedFrom::Upstream);
        });
    }

    /// Records a failed refresh; the current data stays.
    pub fn record_error(&self, error: &str) {
        self.update_status(|s| {
            s.last_error = Some(error.to_owned());
            s.last_error_at = Some(Timestamp::now());
        });
    }

    /// `GET /feeds`' view of the feed.
    pub fn report(&self) -> FeedReport {
        let current = self.current();
        let status = self.status();
        FeedReport {
            gtfs_id: self.gtfs_id.clone(),
            instance: self.instance.clone(),
            source: self.source.clone(),
            version: current.as_ref().map(|c| c.version.clone()),
            fetched_at: current.as_ref().map(|c| c.fetched_at),
            loaded_from: current.as_ref().and(status.loaded_from),
            age_seconds: current.as_ref().map(|c| {
                let age = Timestamp::now().duration_since(c.fetched_at).as_secs_f64();
                // Milliseconds are plenty; a clock set back gives 0, not a negative age.
                (age.max(0.0) * 1000.0).round() / 1000.0
            }),
            counts: current.as_ref().map(|c| c.counts()),
            last_success_at: status.last_success_at,
            last_attempt_at: status.last_attempt_at,
            last_error: status.last_error,
            last_error_at: status.last_error_at,
        }
    }
}

/// A feed, as `GET /feeds` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeedReport {
    /// OTP's feed id, which the route API calls `gtfs_id`.
    pub gtfs_id: String,
    /// The instance that serves it.
    pub instance: String,
    /// `otp2`, `otp1`, or the zip's URL or path.
    pub source: String,
    /// sha256 (hex) of the zip (for a directory, over its `.txt` files: name and bytes
    /// in name order), or of the route index for OTP feeds; `null` before the first
    /// successful load.
    pub version: Option<String>,
    /// When the current version was fetched from upstream (for a version loaded from
    /// the store: when it was first fetched, before the restart).
    pub fetched_at: Option<Timestamp>,
    /// `upstream`: fetched, or confirmed unchanged, by this process; `store`: loaded from
    /// the database, at start-up and not confirmed by upstream since (OTP unreachable, or
    /// the first refresh not finished), or as stored by the replica that holds the
    /// instance's refresh lease. `null` before the first load.
    pub loaded_from: Option<LoadedFrom>,
    /// Seconds since `fetched_at`: how old the data served is; `null` before the first
    /// load.
    pub age_seconds: Option<f64>,
    /// Counts of the current version: of the zip's files for a GTFS zip, of the route index
    /// for OTP feeds; `null` before the first successful load.
    pub counts: Option<FeedCountsReport>,
    pub last_success_at: Option<Timestamp>,
    pub last_attempt_at: Option<Timestamp>,
    /// The last refresh's error; `null` once a refresh succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

/// Counts of a feed's current version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum FeedCountsReport {
    Zip(FeedCounts),
    Index(IndexCounts),
}

/// Counts of a feed read from an OTP route index.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IndexCounts {
    pub routes: u64,
    /// Routes whose detail has been crawled (all of them with `prefetch_routes`).
    pub route_details: u64,
    pub agencies: u64,
}

/// What the warm start of an instance loaded from the database's feed store.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WarmStart {
    /// When the warm start finished (before the first refresh from upstream began).
    pub finished_at: Timestamp,
    /// The feeds loaded from the store, each with its version.
    pub loaded: Vec<WarmFeed>,
    /// What could not be loaded, and why: a corrupt stored version (deleted, the feed is
    /// fetched from upstream instead), or a database that could not be read.
    pub errors: Vec<String>,
}

/// A feed loaded from the store at start-up.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WarmFeed {
    pub gtfs_id: String,
    pub version: String,
    /// When that version was fetched from upstream.
    pub fetched_at: Timestamp,
}

/// Every known feed, by `gtfs_id`.
#[derive(Debug, Default)]
pub struct FeedStore {
    feeds: RwLock<BTreeMap<String, Arc<FeedEntry>>>,
}

impl FeedStore {
    pub fn get(&self, gtfs_id: &str) -> Option<Arc<FeedEntry>> {
        self.feeds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(gtfs_id)
            .cloned()
    }

    /// The entry for `gtfs_id`, created on first sight. A feed id is owned by the first
    /// instance that reports it: another instance's claim is refused (`Err` names the owner).
    pub fn entry(
        &self,
        gtfs_id: &str,
        instance: &str,
        source: &str,
    ) -> Result<Arc<FeedEntry>, String> {
        let mut feeds = self.feeds.write().unwrap_or_else(|e| e.into_inner());
        let entry = feeds.entry(gtfs_id.to_owned()).or_insert_with(|| {
            Arc::new(FeedEntry {
                gtfs_id: gtfs_id.to_owned(),
                instance: instance.to_owned(),
                source: source.to_owned(),
                current: ArcSwapOption::empty(),
                status: Mutex::new(FeedStatus::default()),
            })
        });
        if entry.instance != instance {
            return Err(format!(
                "feed {gtfs_id:?} is already served by instance {:?}; feed ids must be unique across instances",
                entry.instance
            ));
        }
        Ok(entry.clone())
    }

    /// All feeds, by `gtfs_id`.
    pub fn all(&self) -> Vec<Arc<FeedEntry>> {
        self.feeds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
