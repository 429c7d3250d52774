//! The HTTP API: one `router()` per area, merged here, wrapped in the layers every
//! response goes through, and its OpenAPI document (`GET /openapi.json`).
//!
//! An area file (`feeds.rs`, `ops.rs`, `routes.rs`, `waybills.rs`, and the two pages:
//! `docs.rs`, the API explorer, and `console.rs`, the operator console) holds its
//! handlers and their documentation; what they share is a stack below them:
//!
//! - [`extract`]: [`extract::JsonBody`] (a JSON body, every way it can be wrong answered
//!   as problem+json), [`extract::Query`] (query parameters into a
//!   `#[derive(Deserialize, IntoParams)]` struct, a parameter it does not name refused with
//!   400) and [`extract::if_match`].
//! - [`auth`]: [`auth::WriteAccess`] (the API token), [`auth::RefreshAccess`] and
//!   [`auth::require_ops_access`], the ops endpoints' route layer.
//! - [`idempotency`]: `Idempotency-Key` and the canonical JSON of a body.
//! - [`cursor`]: the one signed cursor codec of every paged list, and the `limit` rule.
//! - [`error`]: [`ApiError`], problem+json; `From<sqlx::Error>`, so handlers use `?`.
//! - [`timing`]: `Server-Timing`; [`openapi`]: the document's frame.
//!
//! Domain rules (a waybill's trips, status moves, odometers) are in [`crate::waybill`].
//!
//! One layer around everything, [`layers`]: the request id (kept from the client's
//! `x-request-id`, or made, and echoed), the tracing span that carries it and the log line
//! per response, metrics by route template and status, and the `Server-Timing` header.
//! Inside it, only when `cors_allowed_origins` is set, tower-http's CORS layer ([`cors`]).
//!
//! Compression: cached answers (route details) keep their gzip and brotli forms, made
//! once per entry, and pick one per request in [`negotiate`]. Everything else (lists,
//! trips, waybills, ops, the OpenAPI document) goes through [`compression`], which
//! compresses per request, only above [`COMPRESS_ABOVE`] bytes, and never an answer that
//! already has a `Content-Encoding`.
//!
//! # Adding an area (or an endpoint) with its documentation
//!
//! Routes are registered with utoipa-axum, never with a bare `.route(...)`, so that an
//! endpoint cannot exist without its OpenAPI documentation (nor the reverse):
//!
//! 1. In `src/api/<area>.rs`, put `#[utoipa::path(...)]` on each handler: method, `path`,
//!    `tag`, `params(...)` (path parameters as tuples; query parameters as a
//!    `#[derive(Deserialize, IntoParams)]` struct with limits and defaults, which the
//!    handler takes as [`extract::Query`]), `request_body = T`, and
//!    `responses(...)` listing every status the handler can answer, with the headers that
//!    matter (`ETag`, `Retry-After`...); errors by their [`problems`] type (`NoSuchFeed`,
//!    `Internal`...), adding one there for a new kind of error. `x-request-id` and
//!    `Server-Timing` are added to every response by [`openapi::add_common_headers`]; do
//!    not list them.
//! 2. Bodies: `#[derive(serde::Serialize, utoipa::ToSchema)]` on the type the handler
//!    answers with (`Json<T>`), where it is defined (a report next to what it reports on,
//!    a page in the area); never a `json!()` body, which the document cannot describe.
//!    Keep the JSON shape with serde attributes and the schema's name with
//!    `#[schema(as = ...)]` when the Rust name differs.
//! 3. `pub fn router() -> OpenApiRouter<AppState>` with `.routes(routes!(handler))`, one
//!    `routes!` per path (methods of one path together: `routes!(get_x, patch_x)`).
//!    Guards go on as `.route_layer(...)`; say so in the docs (`security(...)`, 403).
//! 4. Merge it in [`router`] below, add a tag in [`openapi::ApiDoc`], and add the new
//!    `(method, path)` pairs to the expected list in `tests/it/openapi.rs`, which fails
//!    until router and document agree, and checks real answers against the schemas.
//!
//! `waybills.rs` (POST/GET/PATCH `/waybills...`) is meant to be added exactly this way:
//!
//! ```ignore
//! use utoipa_axum::{router::OpenApiRouter, routes};
//! use super::problems::{NotJson, WaybillUnfit};
//!
//! pub fn router() -> OpenApiRouter<AppState> {
//!     OpenApiRouter::default()
//!         .routes(routes!(list, create)) // GET, POST /waybills
//!         .routes(routes!(read, change)) // GET, PATCH /waybills/{id}
//!         .layer(DefaultBodyLimit::max(MAX_BODY))
//! }
//!
//! /// Records a waybill. (First line: the summary; the rest: the description.)
//! #[utoipa::path(
//!     post,
//!     path = "/waybills",
//!     tag = "waybills",
//!     request_body = NewWaybill,
//!     params(("Idempotency-Key" = Option<String>, Header, description = "...")),
//!     responses(
//!         (status = 201, description = "Stored.", body = Waybill,
//!             headers(("Location" = String), ("ETag" = String))),
//!         NotJson,
//!         WaybillUnfit,
//!     ),
//! )]
//! async fn create(/* ... */) -> ApiResult<Response> { /* ... */ }
//! ```
//!
//! and in [`router`]: `.merge(waybills::router())`.

pub mod auth;
pub mod console;
pub mod cors;
pub mod cursor;
pub mod docs;
pub mod error;
pub mod extract;
pub mod feeds;
pub mod idempotency;
pub mod layers;
pub mod negotiate;
pub mod openapi;
pub mod ops;
pub mod problems;
pub mod routes;
pub mod timing;
pub mod waybills;

use axum::Router;
use axum::http::StatusCode;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};

use crate::state::AppState;
pub use error::{ApiError, ApiResult};
use layers::with_layers;
pub use timing::ServerTiming;

/// The whole API with its layers, and `GET /openapi.json` documenting it.
pub fn router(state: AppState) -> Router {
    let openapi_json = openapi::OpenApiJson::default();
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router(state.clone()))
        .merge(feeds::router())
        .merge(waybills::router())
        .merge(docs::router())
        .merge(console::router(state.clone()))
        .routes(utoipa_axum::routes!(openapi::openapi_json).with_state(openapi_json.clone()))
        .layer(compression())
        // Its own: cached answers bring their compressed forms (module docs).
        .merge(routes::router())
        .split_for_parts();
    // Security as this instance's tokens make it (see the function).
    openapi::require_configured_tokens(
        &mut doc,
        state.config.api_token.is_some(),
        state.config.ops_token.is_some(),
    );
    openapi_json.publish(doc);
    let router = router
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .with_state(state.clone());
    // No origin allowed, no layer: nothing added to the cache-hit path (`cors`).
    let router = match cors::layer(&state.config) {
        Some(cors) => router
            .layer(cors)
            .layer(tower::util::MapResponseLayer::new(cors::only_for_allowed)),
        None => router,
    };
    with_layers(router, state)
}

/// Answers at most this long are sent as they are by [`compression`]: the bytes saved
/// would not pay for the time.
pub const COMPRESS_ABOVE: u64 = 1024;

/// Per-request compression (gzip, brotli) for answers that are not cached, above
/// [`COMPRESS_ABOVE`] bytes; it leaves alone an answer that has a `Content-Encoding`
/// already, and images, event streams and gRPC.
pub(crate) fn compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .compress_when(DefaultPredicate::new().and(SizeAbove::new(COMPRESS_ABOVE)))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

    use axum::extract::Request;
    use tracing::Level;

    use super::*;
    use crate::config::Config;
    use crate::db::Db;

    /// Every event logged while it is the default subscriber: level and text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<(Level, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Text(String);
            impl tracing::field::Visit for Text {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), text.0));
        }
    }

    impl Captured {
        fn at(&self, level: Level) -> Vec<String> {
            let events = self.0.lock().unwrap();
            events
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, t)| t.clone())
                .collect()
        }
        fn at_least_info(&self) -> usize {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|(l, _)| *l <= Level::INFO)
                .count()
        }
    }

    /// A state whose database is a closed port: never prepared, so `/readyz` is 503.
    fn offline_state() -> AppState {
        let config = Config::parse(None, |_| None).unwrap();
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(1);
        AppState::new(config.clone(), Db::new_lazy(&config, options)).unwrap()
    }

    /// Sends `path` from a loopback client through `router`, logging into a fresh capture.
    async fn logged(router: Router, path: &str) -> (StatusCode, Captured) {
        let captured = Captured::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let res = router.oneshot(req).await.unwrap();
        let status = res.status();
        // The body is read, as a client would, so a failure while sending it is seen.
        let _ = axum::body::to_bytes(res.into_body(), usize::MAX).await;
        (status, captured)
    }

    #[tokio::test]
    async fn an_internal_error_is_one_error_line_with_its_cause() {
        let state = offline_state();
        // A fallback, not a route: the one handler this router has (and routes must be
        // documented, which tests/it/openapi.rs checks).
        let failing = Router::default()
            .fallback(|| async { ApiError::internal(anyhow::anyhow!("the disk is on fire")) });
        let (status, logs) = logged(with_layers(failing, state), "/boom").await;
        assert_eq!(status, 500);
        let errors = logs.at(Level::ERROR);
        assert_eq!(errors.len(), 1, "one ERROR line: {errors:?}");
        assert!(errors[0].contains("the disk is on fire"), "{errors:?}");
    }

    #[tokio::test]
    async fn expected_503s_are_no_errors() {
        let state = offline_state();
        let (status, logs) = logged(router(state.clone()), "/readyz").await;
        assert_eq!(status, 503, "the database is not there");
        assert_eq!(logs.at(Level::ERROR), Vec::<String>::new());
        assert_eq!(logs.at_least_info(), 1, "one line per probe");

        state.begin_shutdown();
        let (status, logs) = logged(router(state), "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(logs.at(Level::ERROR), Vec::<String>::new());
        assert_eq!(logs.at_least_info(), 1);
    }

    #[tokio::test]
    async fn handlers_see_the_request_id_the_client_gets() {
        let state = offline_state();
        let echo = Router::default().fallback(
            |axum::Extension(id): axum::Extension<layers::RequestId>| async move {
                id.0.to_str().unwrap_or_default().to_owned()
            },
        );
        let router = with_layers(echo, state);
        for sent in [Some("client-chosen-id"), None] {
            let mut req = Request::get("/any");
            if let Some(id) = sent {
                req = req.header("x-request-id", id);
            }
            let res = router
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(body, header.as_bytes(), "the handler saw the id answered");
            match sent {
                Some(id) => assert_eq!(header, id, "the client's id is kept"),
                None => assert!(uuid::Uuid::parse_str(&header).is_ok(), "{header}"),
            }
        }
    }
}
