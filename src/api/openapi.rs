//! The OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! Each area registers its routes with `utoipa_axum::routes!`, which takes the route (path
//! and method) from the handler's `#[utoipa::path]` attribute: the router and the document
//! come from the same source (see [`super`] for how to add an area). This module holds
//! what the areas share:
//!
//! - [`ApiDoc`]: the document's info, tags and the `ops_token` bearer scheme;
//! - [`Problem`]: the `application/problem+json` body of every error;
//! - [`add_common_headers`]: `x-request-id` and `Server-Timing`, which the layers in
//!   [`super::router`] put on every response, added to every documented response;
//! - [`openapi_json`]: the handler of `GET /openapi.json`, answering with the document
//!   serialized once, when the router is built.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

const DESCRIPTION: &str = "\
A back-office service for a transit operator: it pulls GTFS data from OpenTripPlanner \
instances, keeps routes in memory and answers route queries.

Conventions:

- Bodies are JSON. Errors are `application/problem+json` (RFC 9457) with `type` \
(`about:blank`), `title`, `status` and `detail`; internal errors never echo their cause.
- Every response carries `x-request-id` (the client's own is kept, otherwise one is \
made) and `Server-Timing` (`total`, plus phases such as `cache`, `build` or `otp`).
- Nullable fields are always present, `null` when unknown, unless a field says it may be \
absent.
- Unknown paths answer 404 and known paths with another method 405, both problem+json. \
Every `GET` also answers `HEAD`. Bodies are compressed (gzip, br) when the client \
accepts it.
- Ops endpoints (tag `ops`, except `/healthz`) answer loopback clients without \
credentials; other clients need `Authorization: Bearer <ops_token>` when `ops_token` is \
configured, and get 403 otherwise.";

/// The document's fixed parts; the paths and their schemas come from the areas' routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gtfs-fetch",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION,
    ),
    modifiers(&OpsTokenScheme),
    components(schemas(Problem)),
    tags(
        (name = "routes", description = "Route queries, answered from memory."),
        (name = "feeds", description = "The feeds the service knows and the OTP instances they come from."),
        (name = "ops", description = "Health, readiness, configuration, memory and metrics, for the operations team."),
        (name = "waybills", description = "Vehicle duties per service date, kept in PostgreSQL."),
        (name = "meta", description = "This document."),
    ),
)]
pub struct ApiDoc;

/// Adds the `ops_token` bearer scheme.
struct OpsTokenScheme;

impl Modify for OpsTokenScheme {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "`Authorization: Bearer <ops_token>` (the `ops_token` setting, \
                 `GTFS_OPS_TOKEN`). Loopback clients need none; without `ops_token` \
                 configured, only loopback clients are answered.",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("ops_token", SecurityScheme::Http(scheme));
        let api = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "`Authorization: Bearer <api_token>` (the `api_token` setting, \
                 `GTFS_API_TOKEN`), needed by writes when `api_token` is set.",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_token", SecurityScheme::Http(api));
    }
}

/// An error (RFC 9457), as `application/problem+json`.
#[derive(ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "no feed \"nope\""
}))]
#[allow(dead_code)] // documentation of ApiError's body
pub struct Problem {
    /// Always `about:blank`: the status code is the problem type.
    #[schema(example = "about:blank")]
    r#type: String,
    /// The status code's reason phrase.
    title: String,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for a human; for internal errors only a pointer to the request id.
    detail: String,
}

/// The headers every response carries, whatever the endpoint and status.
fn common_headers() -> [(&'static str, openapi::header::Header); 2] {
    let string = || openapi::ObjectBuilder::new().schema_type(openapi::Type::String);
    [
        (
            "x-request-id",
            openapi::header::HeaderBuilder::new()
                .schema(string())
                .description(Some(
                    "The request's id: the client's own `x-request-id` when it sent one, \
                     otherwise a new UUID. Logs carry it.",
                ))
                .build(),
        ),
        (
            "Server-Timing",
            openapi::header::HeaderBuilder::new()
                .schema(string().examples(["cache;dur=0.012, total;dur=0.051"]))
                .description(Some(
                    "Time spent, in milliseconds: `total`, plus the phases the handler \
                     reported (`cache`, `build`, `otp`, `db`).",
                ))
                .build(),
        ),
    ]
}

/// Adds [`common_headers`] to every response of every operation.
pub fn add_common_headers(doc: &mut openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    for (name, header) in common_headers() {
                        response.headers.entry(name.to_owned()).or_insert(header);
                    }
                }
            }
        }
    }
}

/// The serialized document, set once when the router is built.
#[derive(Clone, Default)]
pub struct OpenApiJson(Arc<OnceLock<Bytes>>);

impl OpenApiJson {
    /// Completes `doc` ([`add_common_headers`]), serializes it and keeps the bytes.
    pub fn publish(&self, mut doc: openapi::OpenApi) {
        add_common_headers(&mut doc);
        // A document made of strings, numbers and string-keyed maps always serializes.
        let json = doc.to_json().expect("the OpenAPI document serializes");
        let _ = self.0.set(Bytes::from(json));
    }
}

/// This document: OpenAPI 3.1, every endpoint of the service.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.",
            body = Object, content_type = "application/json"),
    ),
)]
pub async fn openapi_json(State(doc): State<OpenApiJson>) -> Response {
    let body = doc.0.get().cloned().unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
