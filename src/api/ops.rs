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
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth;
use super::error::PROBLEM_JSON;
use super::openapi::Problem;
use super::problems::OpsForbidden;
use crate::cache::CacheStats;
use crate::config::EffectiveConfig;
use crate::db::PoolStats;
use crate::otp::client::ClientReport;
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
async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// Readiness: whether the service can do its work.
///
/// 200 when the database answers and every OTP instance has finished its first refresh
/// (or loaded a feed from the database's feed store at start-up) and serves at least one
/// feed (or is configured with `allow_empty = true`); 503 otherwise, and while shutting
/// down. The body lists every check with its state.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        OpsForbidden,
        (status = 503, description = "Not ready: `detail` lists the failing checks, \
            `checks` has every check's state.",
            body = ReadinessProblem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds before asking again (5)."))),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let (checks, failing) = readiness(&state).await;
    if failing.is_empty() {
        return Json(Readiness {
            status: ReadyStatus::Ready,
            checks,
        })
        .into_response();
    }
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let body = ReadinessProblem {
        problem: Problem::new(status, failing.join("; ")),
        checks,
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)),
        (header::RETRY_AFTER, HeaderValue::from(5)),
    ];
    (status, headers, Json(body)).into_response()
}

/// Every readiness check with its state, and the failing ones in words (none: ready).
/// `/readyz` answers with them; `/metrics` says whether the list of failures is empty.
async fn readiness(state: &AppState) -> (BTreeMap<String, String>, Vec<String>) {
    let mut checks = BTreeMap::new();
    let mut failing = Vec::new();
    if state.is_shutting_down() {
        checks.insert("shutdown".into(), "shutting down".to_owned());
        failing.push("shutting down".to_owned());
    }
    for instance in &state.instances {
        let (check, ok) = instance_readiness(state, instance);
        if !ok {
            failing.push(format!("instance {}: {check}", instance.name()));
        }
        checks.insert(format!("instance:{}", instance.name()), check);
    }
    match state.db.check().await {
        Ok(()) => {
            checks.insert("database".into(), "ok".to_owned());
        }
        Err(why) => {
            failing.push(format!("database: {why}"));
            checks.insert("database".into(), why);
        }
    }
    (checks, failing)
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
        OpsForbidden,
    ),
)]
async fn config(State(state): State<AppState>) -> Json<EffectiveConfig> {
    Json(state.config.shown())
}

/// Memory and pools: process, allocator, database pool, route cache, feeds, HTTP clients.
#[utoipa::path(
    get,
    path = "/memory-stats",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "Memory and pool figures.", body = MemoryStats),
        OpsForbidden,
    ),
)]
async fn memory_stats(State(state): State<AppState>) -> Json<MemoryStats> {
    let mem = memory_sample();
    Json(MemoryStats {
        process: ProcessMemory {
            rss_bytes: mem.rss_bytes,
            peak_rss_bytes: crate::memory::peak_rss_bytes(),
            virtual_bytes: mem.virtual_bytes,
        },
        allocator: AllocatorMemory {
            name: "jemalloc",
            allocated_bytes: mem.allocated_bytes,
            resident_bytes: mem.resident_bytes,
        },
        database_pool: state.db.stats(),
        route_cache: state.cache.stats().await,
        feeds: state
            .feeds
            .all()
            .iter()
            .map(|f| {
                let current = f.current();
                FeedMemory {
                    gtfs_id: f.gtfs_id.clone(),
                    version: current.as_ref().map(|c| c.version.clone()),
                    approx_bytes: current.as_ref().map_or(0, |c| c.approx_bytes() as u64),
                    build_peak_bytes: current.as_ref().and_then(|c| c.build_peak_bytes()),
                }
            })
            .collect(),
        instances: state
            .instances
            .iter()
            .map(|i| InstanceHttp {
                name: i.name().to_owned(),
                http: i.client.report(),
            })
            .collect(),
        uptime_seconds: state.started_at.elapsed().as_secs_f64(),
    })
}

/// Prometheus metrics.
///
/// Requests and latency by method, route template and status; RSS; pool gauges; route
/// cache; per OTP instance connections, requests, retries, reuse ratio and breaker state;
/// per feed the last success, the data's age, whether the last refresh failed and the
/// instance's refresh interval; whether `/readyz` would say ready; waybill writes and
/// database time; `build_info`. OpenMetrics text when the client accepts it
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
        OpsForbidden,
    ),
)]
async fn metrics(State(state): State<AppState>, request: HeaderMap) -> impl IntoResponse {
    let mem = memory_sample();
    let pool = state.db.stats();
    let ready = readiness(&state).await.1.is_empty();
    let body = state.metrics.render(Sample {
        rss: mem.rss_bytes,
        allocated: mem.allocated_bytes,
        db_pool_size: pool.size,
        db_pool_idle: pool.idle,
        ready,
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

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
struct Health {
    status: HealthStatus,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum HealthStatus {
    Ok,
}

/// One instance's readiness check: its state in words, and whether it passes. An instance
/// passes once its first refresh has finished, or its warm start has loaded a feed from
/// the database's feed store, and it serves at least one feed (the last good data of a
/// failed refresh counts, and so does a version loaded from the store), or it is
/// configured with `allow_empty`.
fn instance_readiness(state: &AppState, instance: &InstanceRuntime) -> (String, bool) {
    let tried = instance.tried();
    let warm = instance.warm_start().is_some_and(|w| !w.loaded.is_empty());
    if !tried && !warm {
        return ("first refresh not finished".into(), false);
    }
    let served = state
        .feeds
        .all()
        .iter()
        .filter(|f| f.instance == instance.name() && f.current().is_some())
        .count();
    let from_store = if tried {
        ""
    } else {
        " (loaded from the store; first refresh not finished)"
    };
    match served {
        0 if instance.config.allow_empty => ("ok: no feed served (allow_empty)".into(), true),
        0 => {
            let why = instance
                .status()
                .last_error
                .unwrap_or_else(|| "the instance lists no feed".into());
            (format!("no feed served: {why}"), false)
        }
        1 => (format!("ok: 1 feed served{from_store}"), true),
        n => (format!("ok: {n} feeds served{from_store}"), true),
    }
}

/// `GET /readyz` when ready.
#[derive(Serialize, ToSchema)]
struct Readiness {
    status: ReadyStatus,
    /// Every check with its state: `database` (`ok` or why not), `instance:{name}` for
    /// each instance (`ok: 3 feeds served`, `ok: no feed served (allow_empty)`) and, while
    /// shutting down, `shutdown`.
    #[schema(example = json!({"database": "ok", "instance:city": "ok: 3 feeds served"}))]
    checks: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReadyStatus {
    Ready,
}

/// `GET /readyz` when not ready: a problem with every check's state.
#[derive(Serialize, ToSchema)]
struct ReadinessProblem {
    #[serde(flatten)]
    problem: Problem,
    /// Every check with its state: `database` (`ok` or why not), `instance:{name}` (`ok:
    /// …`, `first refresh not finished`, or `no feed served: <last error>`), `shutdown`
    /// (shutting down). A check passes when its state is `ok` or starts with `ok:`.
    #[schema(example = json!({"database": "ok", "instance:city": "first refresh not finished"}))]
    checks: BTreeMap<String, String>,
}

/// `GET /memory-stats`.
#[derive(Serialize, ToSchema)]
struct MemoryStats {
    process: ProcessMemory,
    allocator: AllocatorMemory,
    database_pool: PoolStats,
    route_cache: CacheStats,
    feeds: Vec<FeedMemory>,
    instances: Vec<InstanceHttp>,
    uptime_seconds: f64,
}

#[derive(Serialize, ToSchema)]
struct ProcessMemory {
    rss_bytes: u64,
    /// The most the process has held resident since it started (`VmHWM`): with feeds
    /// from zips, usually the peak of the largest feed build.
    peak_rss_bytes: u64,
    virtual_bytes: u64,
}

#[derive(Serialize, ToSchema)]
struct AllocatorMemory {
    #[schema(example = "jemalloc")]
    name: &'static str,
    allocated_bytes: u64,
    resident_bytes: u64,
}

#[derive(Serialize, ToSchema)]
struct FeedMemory {
    gtfs_id: String,
    /// `null` before the feed's first successful load.
    version: Option<String>,
    /// Rough heap size of the current version; 0 when none.
    approx_bytes: u64,
    /// The most the build of the current version held allocated at once (the zip's raw
    /// tables with the snapshot being made); after it, the build's freed memory is given
    /// back to the system. `null` for a feed read from an OTP index (nothing is built).
    build_peak_bytes: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct InstanceHttp {
    name: String,
    http: ClientReport,
}
