//! One OTP instance at run time: its configuration, its tuned client, its refresh status,
//! and the calls the service makes of it, over OTP 2's GraphQL API or OTP 1's REST index
//! (the adapters `otp2` and `otp1` say what is sent and how answers are read).
//!
//! The scheduler (`crate::refresh`) runs refreshes and writes the status; the API reads
//! it, and reads routes through [`InstanceRuntime::route`] on a cache miss.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::Timestamp;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::sync::Notify;

use super::client::{Call, ClientReport, OtpClient, OtpError, Response};
use super::trace::Upstream;
use super::{AdapterError, otp1, otp2};
use crate::config::{Api, Config, Instance};
use crate::feed::model::{FeedInfo, RouteDetail, RouteSummary};
use crate::feed::store::WarmStart;

/// One OTP instance at run time: its configuration, client and refresh state.
pub struct InstanceRuntime {
    pub config: Instance,
    pub client: OtpClient,
    /// A refresh is running (set and cleared by the scheduler).
    running: AtomicBool,
    /// One refresh at a time, whoever asks.
    single_flight: tokio::sync::Mutex<()>,
    status: Mutex<InstanceStatus>,
    /// What the warm start loaded from the feed store (set once, before the first
    /// refresh, by `crate::refresh::warm`).
    warm_start: Mutex<Option<WarmStart>>,
    /// Wakes the scheduler's task for a refresh now.
    wake: Notify,
    /// When the last manual refresh was accepted (for `refresh_min_spacing`).
    last_manual: Mutex<Option<Instant>>,
    /// Set when an otp2 server has refused `Route.sortOrder` (OTP before 2.6); cleared at
    /// the start of each refresh.
    before_2_6: AtomicBool,
    /// This replica's part in refreshing the instance, as last seen by the scheduler
    /// (`crate::refresh::lease`), which updates it.
    lease: Mutex<Option<LeaseReport>>,
    /// One load from the feed store at a time (`crate::refresh::follow`).
    follow: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for InstanceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceRuntime")
            .field("name", &self.config.name)
            .finish()
    }
}

/// How an instance's refreshes went.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = InstanceRefreshStatus)]
pub struct InstanceStatus {
    /// Refreshes finished since start-up.
    pub refreshes: u64,
    pub last_started_at: Option<Timestamp>,
    pub last_finished_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// How this replica takes part in refreshing an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshRole {
    /// This replica holds the instance's refresh lease: it refreshes from upstream and
    /// stores each new version for the others.
    Holder,
    /// Another replica (`holder`) holds the lease: this one loads each new version from
    /// the database when told, and reads it there every `refresh_interval` in case it
    /// missed one.
    Follower,
    /// The database could not be asked (down, or not ready yet): this replica refreshes
    /// from upstream by itself, as a single service does.
    Alone,
}

/// The instance's refresh lease among the replicas sharing the database, as this replica
/// last saw it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = RefreshLease)]
pub struct LeaseReport {
    pub role: RefreshRole,
    /// The `replica_id` of the replica holding the lease; `null` when unknown (role
    /// `alone`).
    pub holder: Option<String>,
    /// When the lease runs out unless its holder renews it; `null` when unknown.
    pub expires_at: Option<Timestamp>,
    /// When this replica last asked the database about the lease.
    pub checked_at: Timestamp,
    /// When this replica, not holding the lease, last read the instance's current
    /// versions from the database; `null` if it never has.
    pub last_catch_up_at: Option<Timestamp>,
}

/// An OTP instance, as `GET /instances` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceReport {
    pub name: String,
    pub url: String,
    pub api: Api,
    /// otp2 only (null otherwise): `before_2_6` once the server has refused
    /// `Route.sortOrder`, after which routes are asked for without it.
    #[schema(inline)]
    pub graphql_dialect: Option<otp2::Dialect>,
    /// Seconds between scheduled refreshes (±10 % jitter).
    pub refresh_interval: f64,
    /// Whether a refresh is running now.
    pub running: bool,
    pub status: InstanceStatus,
    /// What was loaded from the database's feed store at start-up, before the first
    /// refresh; `null` until that is done (or when the service refreshes without a
    /// scheduler).
    pub warm_start: Option<WarmStart>,
    /// Which replica refreshes this instance from upstream (the lease holder) and this
    /// replica's part; `null` before the scheduler's first look (or when the service
    /// refreshes without a scheduler).
    pub refresh_lease: Option<LeaseReport>,
    pub http: ClientReport,
}

impl InstanceRuntime {
    pub fn new(config: &Config, instance: &Instance) -> anyhow::Result<Self> {
        Ok(Self {
            config: instance.clone(),
            client: OtpClient::new(config, instance).with_context(|| {
                format!("cannot build the HTTP client of instance {}", instance.name)
            })?,
            running: AtomicBool::new(false),
            single_flight: tokio::sync::Mutex::new(()),
            status: Mutex::new(InstanceStatus::default()),
            warm_start: Mutex::new(None),
            wake: Notify::new(),
            last_manual: Mutex::new(None),
            before_2_6: AtomicBool::new(false),
            lease: Mutex::new(None),
            follow: tokio::sync::Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The GraphQL documents this instance is sent (otp2 only).
    pub fn dialect(&self) -> otp2::Dialect {
        if self.before_2_6.load(Ordering::Relaxed) {
            otp2::Dialect::Before2_6
        } else {
            otp2::Dialect::Current
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> InstanceStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the warm start loaded, once it is done.
    pub fn warm_start(&self) -> Option<WarmStart> {
        self.warm_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records what the warm start loaded.
    pub(crate) fn set_warm_start(&self, report: WarmStart) {
        *self.warm_start.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// Whether a refresh has finished at least once, or (not holding the refresh lease)
    /// the versions stored by the holder have been read once (`/readyz` waits for this).
    pub fn tried(&self) -> bool {
        self.status().last_finished_at.is_some()
            || self.lease().is_some_and(|l| l.last_catch_up_at.is_some())
    }

    /// The refresh lease as this replica last saw it.
    pub fn lease(&self) -> Option<LeaseReport> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This replica's role, as last seen (`None` before the scheduler's first look).
    pub fn role(&self) -> Option<RefreshRole> {
        self.lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.role)
    }

    /// Records what the scheduler saw of the lease (the catch-up time is kept).
    pub(crate) fn set_lease(
        &self,
        role: RefreshRole,
        holder: Option<String>,
        expires_at: Option<Timestamp>,
    ) {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let last_catch_up_at = lease.as_ref().and_then(|l| l.last_catch_up_at);
        *lease = Some(LeaseReport {
            role,
            holder,
            expires_at,
            checked_at: Timestamp::now(),
            last_catch_up_at,
        });
    }

    /// Records a catch-up from the feed store made while following the lease holder.
    pub(crate) fn set_caught_up(&self, at: Timestamp) {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = lease.as_mut().filter(|l| l.role == RefreshRole::Follower) {
            l.last_catch_up_at = Some(at);
        }
    }

    /// Held while loading versions from the feed store, so that two loads of this
    /// instance never interleave.
    pub(crate) async fn follow_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.follow.lock().await
    }

    /// Asks the scheduler for a refresh now. `false` when one is already running (its
    /// result is the one the caller will see).
    pub fn trigger(&self) -> bool {
        if self.is_running() {
            return false;
        }
        self.wake.notify_one();
        true
    }

    /// A refresh asked for by hand: `Ok(true)` started, `Ok(false)` one is already running
    /// (its result is the one to wait for), `Err(wait)` the last manual one was accepted
    /// less than `spacing` ago; ask again in `wait`.
    pub fn trigger_manual(&self, spacing: Duration) -> Result<bool, Duration> {
        if self.is_running() {
            return Ok(false);
        }
        let mut last = self.last_manual.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(at) = *last {
            let since = now.duration_since(at);
            if since < spacing {
                return Err(spacing - since);
            }
        }
        *last = Some(now);
        Ok(self.trigger())
    }

    /// `GET /instances`' view.
    pub fn report(&self) -> InstanceReport {
        InstanceReport {
            name: self.config.name.clone(),
            url: self.config.url.as_str().to_owned(),
            api: self.config.api,
            graphql_dialect: (self.config.api == Api::Otp2).then(|| self.dialect()),
            refresh_interval: self.config.refresh_interval.as_secs_f64(),
            running: self.is_running(),
            status: self.status(),
            warm_start: self.warm_start(),
            refresh_lease: self.lease(),
            http: self.client.report(),
        }
    }

    /// Changes the refresh status (the scheduler's).
    pub(crate) fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Starts a refresh: waits for one already running, then marks this one running and
    /// forgets the GraphQL dialect (so an upgraded OTP is noticed). The refresh lasts as
    /// long as the guard; call [`Self::end_refresh`] before dropping it.
    pub(crate) async fn begin_refresh(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let guard = self.single_flight.lock().await;
        self.running.store(true, Ordering::SeqCst);
        self.before_2_6.store(false, Ordering::Relaxed);
        guard
    }

    pub(crate) fn end_refresh(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// Resolves when [`Self::trigger`] asks for a refresh.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

/// Who a call to OTP is made for, which decides how it is sent.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// The scheduler's refresh (the feed list, route indexes): nothing added.
    Refresh,
    /// The prefetch crawl: spaced by `rate_limit_delay`.
    Crawl,
    /// A client request waiting on a cache miss: not spaced, and carrying the request's
    /// `x-request-id` and `traceparent` ([`super::trace`]).
    Client(&'a Upstream),
}

impl Caller<'_> {
    fn apply(self, call: &mut Call<'_>) {
        match self {
            Caller::Refresh => {}
            Caller::Crawl => call.crawl = true,
            Caller::Client(upstream) => call.headers.extend(upstream.headers()),
        }
    }
}

/// The two OTP APIs behind one face: what a refresh and a read-through ask an instance.
impl InstanceRuntime {
    /// `otp1` or `otp2`: the source of the feeds this instance lists.
    pub fn api_name(&self) -> &'static str {
        match self.config.api {
            Api::Otp1 => "otp1",
            _ => "otp2",
        }
    }

    async fn graphql<T>(
        &self,
        body: &serde_json::Value,
        caller: Caller<'_>,
        parse: impl Fn(&[u8]) -> Result<T, AdapterError>,
    ) -> Result<T, OtpError> {
        let url = self.client.url(&self.config.graphql_path);
        let mut call = Call::graphql(url, body);
        caller.apply(&mut call);
        self.client
            .call(call, |r| {
                ok_body(r).and_then(|b| parse(b).map_err(|e| e.to_string()))
            })
            .await
    }

    /// A `Routes` or `Route` call. An OTP before 2.6 refuses the documents because of
    /// `sortOrder`: the instance is switched (until its next refresh) to the documents
    /// without it and the call made again. The refusal is a proper answer, not a failure of the server.
    async fn graphql_routes<T>(
        &self,
        request: impl Fn(otp2::Dialect) -> serde_json::Value,
        caller: Caller<'_>,
        parse: impl Fn(&[u8]) -> Result<T, AdapterError>,
    ) -> Result<T, OtpError> {
        loop {
            let dialect = self.dialect();
            let answer = self
                .graphql(&request(dialect), caller, |b| match parse(b) {
                    Err(_) if dialect == otp2::Dialect::Current && otp2::refuses_sort_order(b) => {
                        Ok(None)
                    }
                    other => other.map(Some),
                })
                .await?;
            match answer {
                Some(value) => return Ok(value),
                None => {
                    self.before_2_6.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        instance = self.name(),
                        "the server has no Route.sortOrder (OTP before 2.6): asking without it from now on"
                    );
                }
            }
        }
    }

    async fn rest<T>(
        &self,
        path: &str,
        caller: Caller<'_>,
        parse: impl Fn(&[u8]) -> Result<T, AdapterError>,
    ) -> Result<T, OtpError> {
        let mut call = Call::get(self.client.url(path));
        caller.apply(&mut call);
        self.client
            .call(call, |r| {
                ok_body(r).and_then(|b| parse(b).map_err(|e| e.to_string()))
            })
            .await
    }

    /// The feeds the instance serves.
    pub async fn feeds(&self) -> Result<Vec<FeedInfo>, OtpError> {
        let router = &self.config.router;
        match self.config.api {
            Api::Otp1 => {
                let mut feeds = self
                    .rest(
                        &otp1::feeds_path(router),
                        Caller::Refresh,
                        otp1::parse_feeds,
                    )
                    .await?;
                // The feed list has no agencies; route lists name theirs by name only.
                for feed in &mut feeds {
                    feed.agencies = self
                        .rest(
                            &otp1::agencies_path(router, &feed.gtfs_id),
                            Caller::Refresh,
                            otp1::parse_agencies,
                        )
                        .await?;
                }
                Ok(feeds)
            }
            _ => {
                self.graphql(&otp2::feeds_request(), Caller::Refresh, otp2::parse_feeds)
                    .await
            }
        }
    }

    /// The routes of one feed (as [`Self::feeds`] gave it).
    pub async fn routes(&self, feed: &FeedInfo) -> Result<Vec<RouteSummary>, OtpError> {
        let router = &self.config.router;
        let gtfs_id = feed.gtfs_id.as_str();
        match self.config.api {
            Api::Otp1 => {
                self.rest(&otp1::routes_path(router), Caller::Refresh, |b| {
                    otp1::parse_routes(gtfs_id, b, &feed.agencies)
                })
                .await
            }
            _ => {
                self.graphql_routes(
                    |dialect| otp2::routes_request(gtfs_id, dialect),
                    Caller::Refresh,
                    |b| otp2::parse_routes(gtfs_id, b),
                )
                .await
            }
        }
    }

    /// One route with its patterns; `None` when the instance does not know it. Crawl
    /// requests are spaced by `rate_limit_delay`; a user waiting on a cache miss is not,
    /// and passes on its request id and trace ([`Caller`]).
    pub async fn route(
        &self,
        gtfs_id: &str,
        route_id: &str,
        caller: Caller<'_>,
    ) -> Result<Option<RouteDetail>, OtpError> {
        let router = &self.config.router;
        match self.config.api {
            Api::Otp1 => {
                let path = otp1::route_path(router, gtfs_id, route_id);
                let Some(summary) = self
                    .rest_optional(&path, caller, |b| otp1::parse_route(gtfs_id, b))
                    .await?
                else {
                    return Ok(None);
                };
                let ids = self
                    .rest(
                        &otp1::route_patterns_path(router, gtfs_id, route_id),
                        caller,
                        otp1::parse_pattern_ids,
                    )
                    .await?;
                let mut patterns = Vec::with_capacity(ids.len());
                for id in ids {
                    patterns.push(
                        self.rest(&otp1::pattern_path(router, &id), caller, |b| {
                            otp1::parse_pattern(gtfs_id, b)
                        })
                        .await?,
                    );
                }
                let trip_count = patterns.iter().map(|p| p.trip_count).sum();
                Ok(Some(RouteDetail {
                    summary,
                    patterns,
                    trip_count,
                }))
            }
            _ => {
                self.graphql_routes(
                    |dialect| otp2::route_request(gtfs_id, route_id, dialect),
                    caller,
                    |b| otp2::parse_route(gtfs_id, b),
                )
                .await
            }
        }
    }

    /// A crawl GET where 404 means "no such thing".
    async fn rest_optional<T>(
        &self,
        path: &str,
        caller: Caller<'_>,
        parse: impl Fn(&[u8]) -> Result<T, AdapterError>,
    ) -> Result<Option<T>, OtpError> {
        let mut call = Call::get(self.client.url(path));
        caller.apply(&mut call);
        self.client
            .call(call, |r| {
                if r.status == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                ok_body(r).and_then(|b| parse(b).map(Some).map_err(|e| e.to_string()))
            })
            .await
    }
}

/// The body of a 2xx answer; other statuses (4xx reach parsers) are errors.
fn ok_body(r: &Response) -> Result<&[u8], String> {
    if r.status.is_success() {
        Ok(&r.body)
    } else {
        Err(format!("OTP answered HTTP {}", r.status.as_u16()))
    }
}
