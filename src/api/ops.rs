//! Operations endpoints, the ones the original system's runbooks call.
//!
//! `/healthz` is open to all (load balancers probe it). The others answer loopback clients;
//! other clients need `Authorization: Bearer <ops_token>` when `ops_token` is set and are
//! refused (403) when it is not. A reverse proxy on the same host makes every client look
//! like loopback: set `ops_token` and keep ops paths off the proxy in that case.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json_, json};

use super::{ApiError, ApiResult};
use crate::app::AppState;
use crate::telemetry::{Sample, memory_sample};

pub fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/config", get(config))
        .route("/memory-stats", get(memory_stats))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state, require_ops_access));
    Router::new().route("/healthz", get(healthz)).merge(guarded)
}

/// Whether a client may call the ops endpoints. Pure, so it is tested on its own.
pub fn ops_access(
    peer: Option<IpAddr>,
    authorization: Option<&str>,
    ops_token: Option<&str>,
) -> Result<(), &'static str> {
    if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) {
        return Ok(());
    }
    let Some(token) = ops_token else {
        return Err("ops endpoints answer loopback clients only (set ops_token to allow others)");
    };
    let given = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err("ops endpoints need Authorization: Bearer <ops_token> from non-loopback clients"),
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_ops_access(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = state.config.ops_token.as_ref().map(|t| t.expose());
    match ops_access(peer, authorization, token) {
        Ok(()) => next.run(req).await,
        Err(why) => ApiError::forbidden(why).into_response(),
    }
}

async fn healthz() -> Json<Json_> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the service can do its work; 503 with a reason per failing check.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Json_>> {
    let mut checks = serde_json::Map::new();
    let mut failing = Vec::new();
    if state.is_shutting_down() {
        checks.insert("shutdown".into(), json!("shutting down"));
        failing.push("shutting down".to_owned());
    }
    for instance in &state.instances {
        if !instance.tried() {
            checks.insert(
                format!("instance:{}", instance.name()),
                json!("first refresh not finished"),
            );
            failing.push(format!(
                "instance {}: first refresh not finished",
                instance.name()
            ));
        }
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

async fn config(State(state): State<AppState>) -> Json<Json_> {
    Json(state.config.to_redacted_json())
}

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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mem = memory_sample();
    let pool = state.db.stats();
    let body = state.metrics.render(Sample {
        rss: mem.rss_bytes,
        allocated: mem.allocated_bytes,
        db_pool_size: pool.size,
        db_pool_idle: pool.idle,
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    (headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));

    #[test]
    fn loopback_needs_no_token() {
        assert!(ops_access(LOOPBACK, None, None).is_ok());
        assert!(ops_access(LOOPBACK, None, Some("s3cret")).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(ops_access(Some(mapped), None, None).is_ok());
        assert!(ops_access(Some("::1".parse().unwrap()), None, None).is_ok());
    }

    #[test]
    fn remote_clients_need_the_token() {
        assert!(ops_access(REMOTE, None, None).is_err());
        assert!(ops_access(REMOTE, Some("Bearer s3cret"), None).is_err());
        assert!(ops_access(REMOTE, None, Some("s3cret")).is_err());
        assert!(ops_access(REMOTE, Some("Bearer wrong"), Some("s3cret")).is_err());
        assert!(ops_access(REMOTE, Some("s3cret"), Some("s3cret")).is_err());
        assert!(ops_access(REMOTE, Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert!(ops_access(None, Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert!(ops_access(None, None, Some("s3cret")).is_err());
    }
}
