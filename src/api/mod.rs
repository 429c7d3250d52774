//! The HTTP API: one `router()` per area, merged here, wrapped in the layers every
//! response goes through.
//!
//! Layers, outermost first: request id (set, or kept from the client's `x-request-id`, and
//! echoed), the tracing span that carries it, then [`observe`]: metrics by route template
//! and status, and the `Server-Timing` header.

pub mod error;
pub mod feeds;
pub mod ops;
pub mod routes;
pub mod timing;

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;
use crate::telemetry::HttpLabels;
pub use error::{ApiError, ApiResult};
pub use timing::ServerTiming;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API with its layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(ops::router(state.clone()))
        .merge(feeds::router())
        .merge(routes::router())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .with_state(state.clone())
        .layer(tower_http::compression::CompressionLayer::new().gzip(true).br(true))
        .layer(middleware::from_fn_with_state(state, observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(tower_http::LatencyUnit::Micros)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
}

/// Records the request in the metrics and writes `Server-Timing` (the phases handlers
/// reported, plus `total`).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut response = next.run(req).await;
    let elapsed = start.elapsed();
    let timing = response
        .extensions_mut()
        .remove::<ServerTiming>()
        .unwrap_or_default();
    timing.write(response.headers_mut(), elapsed);
    state.metrics.observe_http(
        HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        },
        elapsed,
    );
    response
}
