//! The shared state handle: [`AppState`], what every handler and background task holds,
//! and this replica's id ([`make_replica_id`] when none is configured).

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

/// Stores of route details read through on demand running at once, per replica
/// (`crate::refresh::reads::share`); a read beyond them is not shared.
pub const ROUTE_READ_STORES: usize = 2;

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
    /// Permits for storing route details read through on demand, for the other replicas
    /// (`crate::refresh::reads::share`): [`ROUTE_READ_STORES`].
    pub route_reads: Arc<tokio::sync::Semaphore>,
    /// This replica's name among those sharing the database: `replica_id` when
    /// configured, else made at start-up ([`make_replica_id`]). Never changes.
    pub replica_id: String,
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
        let replica_id = match &config.replica_id {
            Some(id) => id.as_str().to_owned(),
            None => make_replica_id(),
        };
        Ok(Self(Arc::new(Inner {
            replica_id,
            metrics: Metrics::new(instances.clone(), cache.clone(), feeds.clone()),
            cache,
            config,
            db: Arc::new(db),
            instances,
            feeds,
            store_retention: Arc::new(tokio::sync::Notify::new()),
            route_reads: Arc::new(tokio::sync::Semaphore::new(ROUTE_READ_STORES)),
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

/// A replica id for a service started without `replica_id`: the host name, the process
/// id and 4 random hex digits (a restarted process is another replica), shortened and
/// reduced to the characters a configured id may have.
pub fn make_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let host = if host.is_empty() { "replica" } else { &host };
    let suffix: u16 = rand::random();
    format!("{host}-{}-{suffix:04x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_replica_ids_are_valid_configured_ones_and_differ() {
        let (a, b) = (make_replica_id(), make_replica_id());
        assert!(crate::config::ReplicaId::parse(&a).is_some(), "{a}");
        // Same host and process: only the random suffix differs (1 in 65536 the same).
        assert!(a != b || make_replica_id() != a, "{a} {b}");
    }
}
