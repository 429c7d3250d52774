//! The one layer every response goes through, `observe`: the request id, the request's
//! tracing span and its log line, the metrics, and `Server-Timing`. Its work is done by
//! [`Observation`], which the server's front service also uses for the cache hits it
//! answers before the router (`crate::server`), so those are observed the same way.
//!
//! One middleware rather than a stack of tower layers (request id set, request id
//! propagated, trace, metrics) because a cache hit is a few microseconds of work and each
//! layer costs a share of it: boxed futures, a wrapped response body, the request id
//! parsed and formatted more than once. What it does, in order:
//!
//! 1. The request id: the client's own `x-request-id` is kept as it is, otherwise a
//!    random UUID is made. It is set on the request (so handlers, and what they call,
//!    see it as a header and as the [`RequestId`] extension) and on the response. A
//!    handler that reads through to OTP passes it on, with the client's `traceparent`,
//!    by taking a [`TraceContext`] (extracted here, used in `crate::otp::trace`).
//! 2. The span `request` (`request_id`, `method`, `path`) the handler runs in, so every
//!    line it logs names the request; one INFO line `finished processing request` with
//!    `status` and `latency_us` when the answer is made.
//! 3. The metrics: requests and latency by method, route template and status, and
//!    waybill writes by operation and status, whatever answered them (the handler, or an
//!    extractor refusing the token or the body first).
//! 4. `Server-Timing`: the phases the handler reported ([`ServerTiming`] in the
//!    response's extensions), plus `total`.
//!
//! Logging: the INFO line per response is the only one the layer writes. An internal
//! error adds one ERROR line with its cause ([`ApiError::internal`](super::ApiError));
//! expected 503s (`/readyz` during an outage, OTP unavailable, shutting down) are no
//! errors and must not fill the error log.

use std::convert::Infallible;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use tracing::Instrument;

use super::timing::ServerTiming;
use crate::otp::trace::{TRACEPARENT, TraceContext};
use crate::state::AppState;
use crate::telemetry::{self, HttpLabels};

/// The request id's header, read from the request and written on every response.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id (the client's `x-request-id`, or one made here), in the request's
/// extensions for whoever needs to pass it on.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// A handler that may read through to OTP takes the request's [`TraceContext`]: its id
/// (set by `observe`) and the client's `traceparent`, as they are (two header values
/// cloned; nothing is parsed unless OTP is called, see [`crate::otp::trace`]).
impl<S: Send + Sync> FromRequestParts<S> for TraceContext {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let request_id = match parts.extensions.get::<RequestId>() {
            Some(id) => Some(id.0.clone()),
            None => parts.headers.get(&REQUEST_ID).cloned(),
        };
        Ok(TraceContext {
            request_id,
            traceparent: parts.headers.get(&TRACEPARENT).cloned(),
        })
    }
}

/// `router` wrapped in `observe`.
pub(crate) fn with_layers(router: Router, state: AppState) -> Router {
    router.layer(middleware::from_fn_with_state(state, observe))
}

/// The client's request id, or a new random UUID.
fn request_id(req: &Parts) -> HeaderValue {
    if let Some(id) = req.headers.get(&REQUEST_ID) {
        return id.clone();
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
}

/// What `observe` notes of a request when it starts, to finish with its response: the
/// same for the router's answers and for the cache hits answered before it
/// (`crate::server`'s front service, [`super::routes::detail_hit`]).
pub(crate) struct Observation {
    start: Instant,
    id: HeaderValue,
    method: &'static str,
    route: &'static str,
    span: tracing::Span,
}

impl Observation {
    /// Starts observing `req`, received at `start` and answered by the route template
    /// `route`.
    pub(crate) fn begin(req: &Parts, route: &'static str, start: Instant) -> Observation {
        let id = request_id(req);
        let span = tracing::info_span!(
            "request",
            request_id = id.to_str().unwrap_or("-"),
            method = %req.method,
            path = %req.uri.path(),
        );
        Observation {
            start,
            id,
            method: telemetry::method_label(&req.method),
            route,
            span,
        }
    }

    /// Logs, counts and stamps `response` (module docs, steps 2 to 4), with the phases
    /// its handler put in its extensions.
    pub(crate) fn finish(self, state: &AppState, response: &mut Response) {
        let timing = response
            .extensions_mut()
            .remove::<ServerTiming>()
            .unwrap_or_default();
        self.finish_timed(state, response, &timing);
    }

    /// [`Observation::finish`] with the handler's phases given here.
    pub(crate) fn finish_timed(
        self,
        state: &AppState,
        response: &mut Response,
        timing: &ServerTiming,
    ) {
        let elapsed = self.start.elapsed();
        let status = response.status().as_u16();
        self.span.in_scope(|| {
            tracing::info!(
                status,
                latency_us = elapsed.as_micros() as u64,
                "finished processing request"
            )
        });
        let write = match (self.method, self.route) {
            ("POST", "/waybills") => Some("create"),
            ("PATCH", "/waybills/{id}") => Some("change"),
            _ => None,
        };
        if let Some(op) = write {
            state.metrics.observe_waybill_write(op, status);
        }
        let headers = response.headers_mut();
        timing.write(headers, elapsed);
        headers.entry(&REQUEST_ID).or_insert(self.id);
        state.metrics.observe_http(
            HttpLabels {
                method: self.method,
                route: self.route,
                status,
            },
            elapsed,
        );
    }
}

/// The middleware (module docs).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("unmatched", |p| telemetry::route_label(p.as_str()));
    let observation = Observation::begin(&parts, route, start);
    let id = observation.id.clone();
    parts.headers.insert(REQUEST_ID.clone(), id.clone());
    parts.extensions.insert(RequestId(id));
    let span = observation.span.clone();
    let req = Request::from_parts(parts, body);
    let mut response = next.run(req).instrument(span).await;
    observation.finish(&state, &mut response);
    response
}
