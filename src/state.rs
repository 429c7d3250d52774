//! The shared state handle: [`AppState`], what every handler and background task holds.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;

use crate::cache::RouteCache;
use crate::config::Config;
use crate::db::Db;
use crate::feed::store::FeedStore;
use crate::otp::instance::InstanceRuntime;
use crate::telemetry::Metrics;

/// Shared state of the service: one `Arc`, cheap to clone; every handler and background
/// task gets one. Read-only after start-up except where a field says who changes it.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    /// The effective configuration (defaults, file, environment). Never changes.
    pub config: Config,
    /// The database pool and its start-up progress (migrations, pre-warming), which the
    /// start-up task advances; waybills and `feed_fetch` rows are written through it.
    pub db: Arc<Db>,
    /// The configured OTP instances, in configuration order: each one's client (counters,
    /// breaker) and refresh status, which the scheduler updates.
    pub instances: Vec<Arc<InstanceRuntime>>,
    /// The current data of every feed; refreshes swap new versions in.
    pub feeds: Arc<FeedStore>,
    /// Serialized route answers; filled on demand by the route API.
    pub cache: RouteCache,
    /// Request metrics the HTTP layer records; instance and cache figures are read live.
    pub metrics: Metrics,
    /// Notified when a new feed version is stored: wakes the feed store's retention
    /// (`crate::db::feed_store::retention`), which deletes the versions no longer kept.
    pub store_retention: Arc<tokio::sync::Notify>,
    /// When the state was built (uptime in `/memory-stats`).
    pub started_at: Instant,
    /// Set once by shutdown: `/readyz` turns 503.
    shutting_down: AtomicBool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, db: Db) -> Result<Self> {
        let instances = config
            .instances
            .iter()
            .map(|i| InstanceRuntime::new(&config, i).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let cache = RouteCache::new(config.cache_max_bytes);
        let feeds = Arc::new(FeedStore::default());
        Ok(Self(Arc::new(Inner {
            metrics: Metrics::new(instances.clone(), cache.clone(), feeds.clone()),
            cache,
            config,
            db: Arc::new(db),
            instances,
            feeds,
            store_retention: Arc::new(tokio::sync::Notify::new()),
            started_at: Instant::now(),
            shutting_down: AtomicBool::new(false),
        })))
    }

    pub fn instance(&self, name: &str) -> Option<&Arc<InstanceRuntime>> {
        self.instances.iter().find(|i| i.name() == name)
    }

    /// From now on `/readyz` answers 503, so load balancers stop sending traffic.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// How many handles to this state exist: each background task and request holds one,
    /// so after [`crate::app::App::stop`] only the caller's own are left.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
