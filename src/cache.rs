//! The route cache: serialized route answers (route details and route list pages: bytes
//! plus ETag) in a moka cache bounded by `cache_max_bytes`, weighted by size.
//!
//! - Keys carry the feed version (`route:{gtfs_id}:{route_id}@{version}`): a new version of
//!   a feed never serves bytes built from an old one; old entries age out by size.
//! - A miss is filled once however many requests wait for it (moka's `try_get_with`).
//! - moka has neither stale-while-revalidate nor stale-if-error, so freshness is ours:
//!   entries never expire inside moka; an entry past its `fresh_until` is served as STALE
//!   while one background refresh runs, and stays served (with `Age`) for as long as the
//!   refresh fails (OTP down, breaker open). Entries built from a feed snapshot are fresh
//!   for the life of their version; read-through entries for `cache_ttl`.
//! - Each entry keeps its gzip and brotli forms ([`encoded`]), made once by the first
//!   request that can take one ([`RouteCache::encodings`]) and counted in its weight.

pub mod encoded;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use moka::notification::RemovalCause;
use tokio::time::Instant;

use crate::otp::client::OtpError;
use encoded::Encoded;

/// What an entry holds: one route's detail, or one page of a feed's route list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Route,
    List,
}

/// `route:{gtfs_id}:{route_id}` (or, for a list page, `routes:{gtfs_id}?{page}`) at one
/// feed version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub kind: KeyKind,
    pub gtfs_id: Arc<str>,
    /// The route id, or for a list the page's canonical query.
    pub route_id: Arc<str>,
    pub version: Arc<str>,
}

impl RouteKey {
    pub fn new(gtfs_id: &str, route_id: &str, version: &str) -> Self {
        Self {
            kind: KeyKind::Route,
            gtfs_id: gtfs_id.into(),
            route_id: route_id.into(),
            version: version.into(),
        }
    }

    /// A page of the route list, `page` being its canonical query (equal queries, equal
    /// text).
    pub fn list(gtfs_id: &str, page: &str, version: &str) -> Self {
        Self {
            kind: KeyKind::List,
            ..Self::new(gtfs_id, page, version)
        }
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, sep) = match self.kind {
            KeyKind::Route => ("route", ':'),
            KeyKind::List => ("routes", '?'),
        };
        write!(
            f,
            "{what}:{}{sep}{}@{}",
            self.gtfs_id, self.route_id, self.version
        )
    }
}

/// One cached answer.
#[derive(Debug)]
pub struct CachedRoute {
    pub body: Bytes,
    /// Weak ETag (`W/"..."`): the same for the identity, gzip and brotli forms.
    pub etag: HeaderValue,
    /// The gzip and brotli forms, made once on demand ([`RouteCache::encodings`]).
    encoded: tokio::sync::OnceCell<Encoded>,
    pub fetched_at: Instant,
    /// `None`: fresh for the life of its key (built from a versioned snapshot).
    pub fresh_until: Option<Instant>,
    /// Time spent building it, and whether that meant asking OTP (for `Server-Timing`).
    pub load_time: Duration,
    pub from_otp: bool,
}

impl CachedRoute {
    /// An entry for `body`, its ETag computed from the bytes.
    pub fn new(body: Bytes, ttl: Option<Duration>, load_time: Duration, from_otp: bool) -> Self {
        let now = Instant::now();
        Self {
            etag: etag_of(&body),
            body,
            encoded: tokio::sync::OnceCell::new(),
            fetched_at: now,
            fresh_until: ttl.map(|t| now + t),
            load_time,
            from_otp,
        }
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|t| now < t)
    }

    /// Seconds since it was built, for `Age`.
    pub fn age(&self) -> u64 {
        self.fetched_at.elapsed().as_secs()
    }

    /// Its compressed forms, if they have been made.
    pub fn encoded(&self) -> Option<&Encoded> {
        self.encoded.get()
    }
}

/// The weak ETag of an answer: its 128-bit XXH3 hash. Weak because the same answer is
/// also served gzip- or brotli-encoded, and all its forms share it. XXH3 rather than a
/// cryptographic hash: an ETag only has to change when the bytes do, and it is computed
/// on every cache miss (sha256 took about 20 µs of a 38 KB answer, XXH3 about 2).
/// The algorithm is fixed, so replicas and restarts give the same tag.
pub fn etag_of(body: &[u8]) -> HeaderValue {
    let tag = format!("W/\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body));
    // Hex in quotes is always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from(tag)).unwrap_or(HeaderValue::from_static("W/\"\""))
}

/// Why an entry could not be built.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no such route")]
    NotFound,
    #[error("OTP could not answer: {0}")]
    Upstream(OtpError),
    #[error("{0}")]
    Internal(String),
}

/// How a lookup was answered, for `X-Cache`.
#[derive(Clone, Debug)]
pub enum Lookup {
    Hit(Arc<CachedRoute>),
    Miss(Arc<CachedRoute>),
    Stale(Arc<CachedRoute>),
}

impl Lookup {
    pub fn entry(&self) -> &Arc<CachedRoute> {
        match self {
            Lookup::Hit(e) | Lookup::Miss(e) | Lookup::Stale(e) => e,
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            Lookup::Hit(_) => "HIT",
            Lookup::Miss(_) => "MISS",
            Lookup::Stale(_) => "STALE",
        }
    }
}

pub type LoadFuture = Pin<Box<dyn Future<Output = Result<Option<CachedRoute>, LoadError>> + Send>>;

/// Builds an entry; called at most once at a time per key.
pub type Loader = Arc<dyn Fn() -> LoadFuture + Send + Sync>;

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    evictions: AtomicU64,
    refresh_failures: AtomicU64,
}

/// The route cache's figures, for `/memory-stats` and `/metrics`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = RouteCacheStats)]
pub struct CacheStats {
    pub entries: u64,
    /// Size of the entries as weighed against `max_bytes`.
    pub weighted_bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Answers served stale while a refresh ran or failed.
    pub stale: u64,
    /// (hits + stale) / lookups; 0 before any lookup.
    pub hit_ratio: f64,
    pub evictions: u64,
    pub refresh_failures: u64,
}

/// The route cache; cheap to clone (all clones share one cache).
#[derive(Clone)]
pub struct RouteCache {
    /// Keyed with foldhash (per-process seed) rather than SipHash: a hit hashes its key
    /// once, and SipHash was a measurable share of a 304.
    cache: moka::future::Cache<RouteKey, Arc<CachedRoute>, foldhash::fast::RandomState>,
    refreshing: Arc<Mutex<HashSet<RouteKey>>>,
    counters: Arc<Counters>,
    max_bytes: u64,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// What an entry weighs: its bytes and their compressed forms, plus its key and
/// bookkeeping.
fn weigh(key: &RouteKey, value: &Arc<CachedRoute>) -> u32 {
    let size = value.body.len()
        + value.encoded().map_or(0, Encoded::len)
        + value.etag.len()
        + key.gtfs_id.len()
        + key.route_id.len()
        + key.version.len()
        + 128;
    u32::try_from(size).unwrap_or(u32::MAX)
}

impl RouteCache {
    pub fn new(max_bytes: u64) -> Self {
        let counters = Arc::new(Counters::default());
        let evictions = counters.clone();
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(weigh)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            cache,
            refreshing: Arc::default(),
            counters,
            max_bytes,
        }
    }

    /// The entry for `key`: fresh from the cache (HIT), stale from the cache while one
    /// background refresh runs (STALE), or built now by `load`, once for all concurrent
    /// callers (MISS). `loader` is only called when something must be built, so a hit
    /// costs no allocation for it.
    pub async fn get(
        &self,
        key: RouteKey,
        loader: impl FnOnce() -> Loader,
    ) -> Result<Lookup, LoadError> {
        if let Some(entry) = self.cache.get(&key).await {
            if entry.is_fresh(Instant::now()) {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Lookup::Hit(entry));
            }
            self.counters.stale.fetch_add(1, Ordering::Relaxed);
            self.revalidate(key, loader());
            return Ok(Lookup::Stale(entry));
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let load = loader();
        let entry = self
            .cache
            .try_get_with(key, async move {
                match load().await {
                    Ok(Some(entry)) => Ok(Arc::new(entry)),
                    Ok(None) => Err(LoadError::NotFound),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|e| (*e).clone())?;
        Ok(Lookup::Miss(entry))
    }

    /// The entry for `key` if it is cached and fresh, counted as a hit; `None` (and
    /// nothing counted) otherwise, for [`RouteCache::get`] to settle. For the cache hits
    /// answered before the router (`crate::api::routes::detail_hit`).
    pub async fn fresh(&self, key: &RouteKey) -> Option<Arc<CachedRoute>> {
        let entry = self.cache.get(key).await?;
        if !entry.is_fresh(Instant::now()) {
            return None;
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Puts `entry` under `key`, replacing what was there (an answer another replica
    /// built, `crate::refresh::reads`).
    pub async fn put(&self, key: RouteKey, entry: CachedRoute) {
        self.cache.insert(key, Arc::new(entry)).await;
    }

    /// One background refresh per key at a time; on failure the stale entry stays.
    fn revalidate(&self, key: RouteKey, load: Loader) {
        {
            let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
            if !refreshing.insert(key.clone()) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            match load().await {
                Ok(Some(entry)) => this.cache.insert(key.clone(), Arc::new(entry)).await,
                // The route is gone from OTP: stop serving it.
                Ok(None) => this.cache.invalidate(&key).await,
                Err(e) => {
                    this.counters
                        .refresh_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(key = %key, "background refresh failed, serving the stale entry: {e}");
                }
            }
            this.refreshing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
    }

    /// `entry`'s gzip and brotli forms, made now (on the blocking pool, once however many
    /// requests ask at the same time) unless they exist. The entry is then put back under
    /// `key`, unless something newer replaced it meanwhile, so that its weight counts them.
    pub async fn encodings<'a>(&self, key: &RouteKey, entry: &'a Arc<CachedRoute>) -> &'a Encoded {
        if let Some(done) = entry.encoded.get() {
            return done;
        }
        let mut made = false;
        let flag = &mut made;
        let encoded = entry
            .encoded
            .get_or_init(|| async move {
                *flag = true;
                let body = entry.body.clone();
                // A panic there would only cost the encodings: serve identity.
                tokio::task::spawn_blocking(move || encoded::encode(&body))
                    .await
                    .unwrap_or_default()
            })
            .await;
        if made {
            let (cache, key, entry) = (self.cache.clone(), key.clone(), entry.clone());
            tokio::spawn(async move {
                cache
                    .entry(key)
                    .and_compute_with(|current| async move {
                        match current {
                            Some(now) if Arc::ptr_eq(now.value(), &entry) => {
                                moka::ops::compute::Op::Put(entry)
                            }
                            _ => moka::ops::compute::Op::Nop,
                        }
                    })
                    .await;
            });
        }
        encoded
    }

    /// Drops every entry: the next lookup of anything is a miss (benchmarks of the miss
    /// path use it).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Figures, after letting moka apply its pending bookkeeping.
    pub async fn stats(&self) -> CacheStats {
        self.cache.run_pending_tasks().await;
        self.stats_now()
    }

    /// Figures as moka has them now (entry count and size may lag slightly).
    pub fn stats_now(&self) -> CacheStats {
        let c = &self.counters;
        let hits = c.hits.load(Ordering::Relaxed);
        let misses = c.misses.load(Ordering::Relaxed);
        let stale = c.stale.load(Ordering::Relaxed);
        let lookups = hits + misses + stale;
        CacheStats {
            entries: self.cache.entry_count(),
            weighted_bytes: self.cache.weighted_size(),
            max_bytes: self.max_bytes,
            hits,
            misses,
            stale,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                (hits + stale) as f64 / lookups as f64
            },
            evictions: c.evictions.load(Ordering::Relaxed),
            refresh_failures: c.refresh_failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn loader(
        calls: Arc<AtomicUsize>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        ttl: Duration,
    ) -> Loader {
        Arc::new(move || {
            let calls = calls.clone();
            let fail = fail.clone();
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                if fail.load(Ordering::SeqCst) {
                    return Err(LoadError::Upstream(OtpError::Connect("refused".into())));
                }
                let body = Bytes::from(format!("{{\"n\":{n}}}"));
                Ok(Some(CachedRoute::new(
                    body,
                    Some(ttl),
                    Duration::ZERO,
                    true,
                )))
            })
        })
    }

    fn key() -> RouteKey {
        RouteKey::new("f", "r", "v1")
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_then_stale_while_one_refresh_runs_then_fresh_again() {
        let cache = RouteCache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = loader(calls.clone(), fail.clone(), Duration::from_secs(60));
        assert!(matches!(
            cache.get(key(), || load.clone()).await.unwrap(),
            Lookup::Miss(_)
        ));
        assert!(matches!(
            cache.get(key(), || load.clone()).await.unwrap(),
            Lookup::Hit(_)
        ));
        tokio::time::advance(Duration::from_secs(61)).await;
        // Past its TTL: served stale, and only one background refresh for many requests.
        for _ in 0..5 {
            let got = cache.get(key(), || load.clone()).await.unwrap();
            assert!(matches!(got, Lookup::Stale(_)), "{got:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one load, one refresh");
        let got = cache.get(key(), || load.clone()).await.unwrap();
        assert!(matches!(got, Lookup::Hit(_)), "refreshed: {got:?}");
        assert_eq!(&got.entry().body[..], b"{\"n\":1}");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_if_error_keeps_the_last_good_entry() {
        let cache = RouteCache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = loader(calls.clone(), fail.clone(), Duration::from_secs(60));
        cache.get(key(), || load.clone()).await.unwrap();
        fail.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(600)).await;
        for _ in 0..3 {
            let got = cache.get(key(), || load.clone()).await.unwrap();
            assert!(matches!(got, Lookup::Stale(_)));
            assert_eq!(&got.entry().body[..], b"{\"n\":0}");
            assert!(got.entry().age() >= 600);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cache.stats().await.refresh_failures >= 1);
        // With nothing cached and the upstream failing, the error comes through.
        let err = cache
            .get(RouteKey::new("f", "other", "v1"), || load)
            .await
            .unwrap_err();
        assert!(matches!(err, LoadError::Upstream(_)));
    }

    #[tokio::test]
    async fn concurrent_misses_load_once() {
        let cache = RouteCache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let load = loader(calls.clone(), Arc::default(), Duration::from_secs(60));
        let lookups: Vec<_> = (0..1000)
            .map(|_| {
                let cache = cache.clone();
                let load = load.clone();
                tokio::spawn(async move { cache.get(key(), || load).await })
            })
            .collect();
        for l in lookups {
            l.await.unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_new_version_is_a_new_entry_and_unknown_routes_are_not_cached() {
        let cache = RouteCache::new(1 << 20);
        let calls = Arc::new(AtomicUsize::new(0));
        let load = loader(calls.clone(), Arc::default(), Duration::from_secs(60));
        cache
            .get(RouteKey::new("f", "r", "v1"), || load.clone())
            .await
            .unwrap();
        let got = cache
            .get(RouteKey::new("f", "r", "v2"), || load.clone())
            .await
            .unwrap();
        assert!(matches!(got, Lookup::Miss(_)), "v2 does not see v1's bytes");
        let none: Loader = Arc::new(|| Box::pin(async { Ok(None) }));
        for _ in 0..2 {
            assert!(matches!(
                cache
                    .get(RouteKey::new("f", "x", "v1"), || none.clone())
                    .await,
                Err(LoadError::NotFound)
            ));
        }
        assert_eq!(cache.stats().await.misses, 4);
    }

    #[tokio::test]
    async fn encodings_are_made_once_and_counted_in_the_weight() {
        let cache = RouteCache::new(1 << 24);
        let body: String = (0..2000).map(|i| format!("{{\"stop\":{i}}},")).collect();
        let body = Bytes::from(body);
        let load: Loader = Arc::new(move || {
            let body = body.clone();
            Box::pin(async move { Ok(Some(CachedRoute::new(body, None, Duration::ZERO, false))) })
        });
        let entry = cache
            .get(key(), || load.clone())
            .await
            .unwrap()
            .entry()
            .clone();
        assert!(entry.encoded().is_none(), "not made before a client asks");
        let before = cache.stats().await.weighted_bytes;
        let k = key();
        let (a, b) = tokio::join!(cache.encodings(&k, &entry), cache.encodings(&k, &entry));
        assert!(std::ptr::eq(a, b), "one set of forms for concurrent askers");
        assert!(a.gzip.is_some() && a.br.is_some(), "{a:?}");
        // The entry is put back in the background, with its new weight.
        let mut after = before;
        for _ in 0..200 {
            after = cache.stats().await.weighted_bytes;
            if after != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(after, before + a.len() as u64);
        let again = cache.get(key(), || load.clone()).await.unwrap();
        assert!(
            Arc::ptr_eq(again.entry(), &entry),
            "the same entry, not rebuilt"
        );
        assert!(again.entry().encoded().is_some());
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_bound_when_filled_ten_times_over() {
        let max = 100_000;
        let cache = RouteCache::new(max);
        for i in 0..1000 {
            let body = Bytes::from(vec![b'x'; 1000]);
            let load: Loader = Arc::new(move || {
                let body = body.clone();
                Box::pin(
                    async move { Ok(Some(CachedRoute::new(body, None, Duration::ZERO, false))) },
                )
            });
            cache
                .get(RouteKey::new("f", &format!("r{i}"), "v"), || load)
                .await
                .unwrap();
        }
        let stats = cache.stats().await;
        assert!(stats.weighted_bytes <= max, "{stats:?}");
        assert!(stats.entries > 10 && stats.entries < 100, "{stats:?}");
        assert!(stats.evictions > 800, "{stats:?}");
    }
}
