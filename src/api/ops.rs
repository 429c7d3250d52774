//! Operations endpoints, the ones the original system's runbooks call.
//!
//! `/healthz` is open to all (load balancers probe it). The others answer loopback clients;
//! other clients need `Authorization: Bearer <ops_token>` when `ops_token` is set and are
//! refused (403) when it is not. A reverse proxy on the same host makes every client look
//! like loopback: set `ops_token` and keep ops paths off the proxy in that case. The rule
//! and its route layer are [`super::auth::ops_access`] and [`super::auth::require_ops_access`].

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::response::IntoResponse;
use serde_json::{Value as Json_, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth;
use super::openapi::Problem;
use super::{ApiError, ApiResult};
use crate::config::Api as InstanceApi;
use crate::otp::client::ClientReport as HttpClientReport;
use crate::otp::instance::InstanceRuntime;
use crate::state::AppState;
use crate::telemetry::{Sample, memory_sample};

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    let guarded = OpenApiRouter::default()
        .routes(routes!(readyz))
        .routes(routes!(config))
        .routes(routes!(memory_stats))
        .routes(routes!(metrics))
        .route_layer(middleware::from_fn_with_state(
            state,
            auth::require_ops_access,
        ));
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .merge(guarded)
}

/// Liveness: 200 while the process runs.
///
/// Open to every client (load balancers probe it).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process runs.", body = Health)),
)]
async fn healthz() -> Json<Json_> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: whether the service can do its work.
///
/// 200 when the database answers and every OTP instance has finished its first refresh
/// and serves at least one feed (or is configured with `allow_empty = true`); 503
/// otherwise, and while shutting down. The body lists every check with its state.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 403, description = "Not a loopback client, and no valid ops token.",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not ready: `detail` lists the failing checks, \
            `checks` has every check's state.",
            body = ReadinessProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds before asking again (5)."))),
    ),
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Json_>> {
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    if state.is_shutting_down() {
        checks.insert("shutdown".into(), json!("shutting down"));
        failing.push("shutting down".to_owned());
    }
    for instance in &state.instances {
        let (check, ok) = instance_readiness(&state, instance);
        if !ok {
            failing.push(format!("instance {}: {check}", instance.name()));
        }
        checks.insert(format!("instance:{}", instance.name()), json!(check));
    }
    match state.db.check().await {
        Ok(()) => {
            checks.insert("database".into(), json!("ok"));
        }
        Err(why) => {
            checks.insert("database".into(), json!(why));
            failing.push(format!("database: {why}"));
        }
    }
    if failing.is_empty() {
        Ok(Json(json!({ "status": "ready", "checks": checks })))
    } else {
        Err(ApiError::unavailable(failing.join("; "), 5)
            .with_extension("checks", Json_::Object(checks)))
    }
}

/// The effective configuration, secrets redacted.
///
/// Flat keys at the top level, named as in `config/default.toml`; durations in seconds.
/// The database password, tokens and instance header values are `***`.
#[utoipa::path(
    get,
    path = "/config",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "The effective configuration.", body = EffectiveConfig),
        (status = 403, description = "Not a loopback client, and no valid ops token.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn config(State(state): State<AppState>) -> Json<Json_> {
    Json(state.config.to_redacted_json())
}

/// Memory and pools: process, allocator, database pool, route cache, feeds, HTTP clients.
#[utoipa::path(
    get,
    path = "/memory-stats",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "Memory and pool figures.", body = MemoryStats),
        (status = 403, description = "Not a loopback client, and no valid ops token.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn memory_stats(State(state): State<AppState>) -> Json<Json_> {
    let mem = memory_sample();
    Json(json!({
        "process": { "rss_bytes": mem.rss_bytes, "virtual_bytes": mem.virtual_bytes },
        "allocator": {
            "name": "jemalloc",
            "allocated_bytes": mem.allocated_bytes,
            "resident_bytes": mem.resident_bytes,
        },
        "database_pool": state.db.stats(),
        "route_cache": state.cache.stats().await,
        "feeds": state.feeds.all().iter().map(|f| {
            let current = f.current();
            json!({
                "gtfs_id": f.gtfs_id,
                "version": current.as_ref().map(|c| c.version.clone()),
                "approx_bytes": current.as_ref().map_or(0, |c| c.approx_bytes()),
            })
        }).collect::<Vec<_>>(),
        "instances": state.instances.iter().map(|i| json!({
            "name": i.name(),
            "http": i.client.report(),
        })).collect::<Vec<_>>(),
        "uptime_seconds": state.started_at.elapsed().as_secs_f64(),
    }))
}

/// Prometheus metrics.
///
/// Requests and latency by method, route template and status; RSS; pool gauges; route
/// cache; per OTP instance connections, requests, retries, reuse ratio and breaker state;
/// per feed the last success, the data's age and whether the last refresh failed; waybill
/// writes and database time; `build_info`. OpenMetrics text when the client accepts it
/// (Prometheus asks for it), else the Prometheus text format 0.0.4 (curl, promtool).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "The metrics: OpenMetrics text when `Accept` names \
            `application/openmetrics-text`, else the Prometheus text format 0.0.4.",
            content(
                (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
                (String = "text/plain; version=0.0.4; charset=utf-8"),
            )),
        (status = 403, description = "Not a loopback client, and no valid ops token.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn metrics(State(state): State<AppState>, request: HeaderMap) -> impl IntoResponse {
    let mem = memory_sample();
    let pool = state.db.stats();
    let body = state.metrics.render(Sample {
        rss: mem.rss_bytes,
        allocated: mem.allocated_bytes,
        db_pool_size: pool.size,
        db_pool_idle: pool.idle,
    });
    let openmetrics = request
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            crate::telemetry::to_prometheus_text(&body),
        )
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    (headers, body)
}

// Documentation of the bodies built with `json!()` above, field for field (never built;
// tests/it/openapi.rs checks real answers against them).

/// `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Health {
    status: HealthStatus,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum HealthStatus {
    Ok,
}

/// One instance's readiness check: its state in words, and whether it passes. An instance
/// passes once its first refresh has finished and it serves at least one feed (the last
/// good data of a failed refresh counts), or it is configured with `allow_empty`.
fn instance_readiness(state: &AppState, instance: &InstanceRuntime) -> (String, bool) {
    if !instance.tried() {
        return ("first refresh not finished".into(), false);
    }
    let served = state
        .feeds
        .all()
        .iter()
        .filter(|f| f.instance == instance.name() && f.current().is_some())
        .count();
    match served {
        0 if instance.config.allow_empty => ("ok: no feed served (allow_empty)".into(), true),
        0 => {
            let why = instance
                .status()
                .last_error
                .unwrap_or_else(|| "the instance lists no feed".into());
            (format!("no feed served: {why}"), false)
        }
        1 => ("ok: 1 feed served".into(), true),
        n => (format!("ok: {n} feeds served"), true),
    }
}

/// `GET /readyz` when ready.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Readiness {
    status: ReadyStatus,
    /// Every check with its state: `database` (`ok` or why not), `instance:{name}` for
    /// each instance (`ok: 3 feeds served`, `ok: no feed served (allow_empty)`) and, while
    /// shutting down, `shutdown`.
    #[schema(example = json!({"database": "ok", "instance:city": "ok: 3 feeds served"}))]
    checks: BTreeMap<String, String>,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum ReadyStatus {
    Ready,
}

/// `GET /readyz` when not ready: a problem with every check's state.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ReadinessProblem {
    #[serde(flatten)]
    problem: Problem,
    /// Every check with its state: `database` (`ok` or why not), `instance:{name}` (`ok:
    /// …`, `first refresh not finished`, or `no feed served: <last error>`), `shutdown`
    /// (shutting down). A check passes when its state is `ok` or starts with `ok:`.
    #[schema(example = json!({"database": "ok", "instance:city": "first refresh not finished"}))]
    checks: BTreeMap<String, String>,
}

/// `GET /config`: every flat setting, then the instances. Durations are seconds.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EffectiveConfig {
    #[schema(example = "0.0.0.0:8000")]
    listen: String,
    connection_limit: u64,
    http_pool_idle_timeout: f64,
    http_tcp_keepalive: f64,
    http_connect_timeout: f64,
    http_request_timeout: f64,
    read_deadline: f64,
    retry_attempts: u32,
    retry_delay: f64,
    rate_limit_delay: f64,
    breaker_failures: u32,
    breaker_open: f64,
    cache_max_bytes: u64,
    cache_ttl: f64,
    max_feed_bytes: u64,
    data_dir: String,
    /// `null`: the embedded PostgreSQL. The password is `***`.
    #[schema(example = "postgres://app:***@db:5432/waybills")]
    database_url: Option<String>,
    db_max_connections: u32,
    db_min_connections: u32,
    db_acquire_timeout: f64,
    db_idle_timeout: f64,
    db_max_lifetime: f64,
    /// `***` when set.
    #[schema(example = "***")]
    api_token: Option<String>,
    /// `***` when set.
    #[schema(example = "***")]
    ops_token: Option<String>,
    /// Seconds between two manual refreshes of one instance.
    refresh_min_spacing: f64,
    feed_fetch_retention_days: u32,
    shutdown_drain: f64,
    shutdown_timeout: f64,
    instances: Vec<InstanceConfig>,
}

/// One `[[instances]]` table.
#[derive(ToSchema)]
#[allow(dead_code)]
struct InstanceConfig {
    name: String,
    url: String,
    api: InstanceApi,
    /// OTP 1 router id.
    router: String,
    graphql_path: String,
    /// Seconds.
    refresh_interval: f64,
    /// Header names, each value `***`.
    #[schema(example = json!({"X-Api-Key": "***"}))]
    headers: BTreeMap<String, String>,
    prefetch_routes: bool,
    /// `/readyz` may say ready while this instance serves no feed.
    allow_empty: bool,
    feeds: Vec<ZipFeedConfig>,
}

/// One `[[instances.feeds]]` table.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ZipFeedConfig {
    gtfs_id: String,
    /// As configured: an absolute URL, a path under the instance's URL, or a file.
    zip_url: String,
}

/// `GET /memory-stats`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct MemoryStats {
    process: ProcessMemory,
    allocator: AllocatorMemory,
    database_pool: DatabasePool,
    route_cache: RouteCacheStats,
    feeds: Vec<FeedMemory>,
    instances: Vec<InstanceHttp>,
    uptime_seconds: f64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct ProcessMemory {
    rss_bytes: u64,
    virtual_bytes: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct AllocatorMemory {
    #[schema(example = "jemalloc")]
    name: String,
    allocated_bytes: u64,
    resident_bytes: u64,
}

/// The database pool (`crate::db::PoolStats`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct DatabasePool {
    /// Connections open.
    size: u32,
    idle: u64,
    max: u32,
    min: u32,
}

/// The route cache (`crate::cache::CacheStats`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct RouteCacheStats {
    entries: u64,
    /// Size of the entries as weighed against `max_bytes`.
    weighted_bytes: u64,
    max_bytes: u64,
    hits: u64,
    misses: u64,
    /// Answers served stale while a refresh ran or failed.
    stale: u64,
    /// (hits + stale) / lookups; 0 before any lookup.
    hit_ratio: f64,
    evictions: u64,
    refresh_failures: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct FeedMemory {
    gtfs_id: String,
    /// `null` before the feed's first successful load.
    version: Option<String>,
    /// Rough heap size of the current version; 0 when none.
    approx_bytes: u64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
struct InstanceHttp {
    name: String,
    http: HttpClientReport,
}
