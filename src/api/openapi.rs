//! The OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! Each area registers its routes with `utoipa_axum::routes!`, which takes the route (path
//! and method) from the handler's `#[utoipa::path]` attribute: the router and the document
//! come from the same source (see [`super`] for how to add an area). This module holds
//! what the areas share:
//!
//! - [`ApiDoc`]: the document's info, tags and the `ops_token` bearer scheme;
//! - [`Problem`]: the `application/problem+json` body of every error (the error answers
//!   themselves are documented in [`super::problems`]);
//! - [`add_common_headers`]: `x-request-id` and `Server-Timing`, which the layers in
//!   [`super::router`] put on every response, added to every documented response;
//! - [`require_configured_tokens`]: the token-guarded operations' `security` as this
//!   instance's configuration makes it (a write needs `api_token` when it is set);
//! - [`add_links`]: OpenAPI links from a waybill's creation to reading and changing it,
//!   and from lists to their items, for clients and for stateful testing
//!   (scripts/schemathesis.sh);
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
- A request that reads through to OTP (a route detail not cached) sends OTP its \
`x-request-id` and a W3C `traceparent`: the client's trace (a new parent id) when it sent \
a valid `traceparent`, else a new one.
- CORS, only when `cors_allowed_origins` is configured: preflights (`OPTIONS`) are \
answered, and scripts of an allowed origin may read `ETag`, `Location`, `Retry-After`, \
`Server-Timing`, `X-Cache` and `x-request-id`.
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
        (name = "meta", description = "This document, and the explorer over it (`/docs`)."),
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
#[derive(serde::Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Not Found",
    "status": 404,
    "detail": "no feed \"nope\""
}))]
pub struct Problem {
    /// Always `about:blank`: the status code is the problem type.
    #[schema(example = "about:blank")]
    r#type: &'static str,
    /// The status code's reason phrase.
    title: &'static str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for a human; for internal errors only a pointer to the request id.
    detail: String,
}

impl Problem {
    /// The problem of `status`, with its reason phrase as the title.
    pub fn new(status: axum::http::StatusCode, detail: impl Into<String>) -> Self {
        Self {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
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

/// Makes the `security` of the token-guarded operations say what this instance needs.
///
/// The handlers document every case (`[{}, {"api_token": []}]`: no credentials, or the
/// token); an operation that lists `api_token` is refused to every client without a
/// token once one of its schemes' tokens is configured (writes, a manual refresh: see
/// [`super::auth`]). Then the document drops the no-credentials alternative, and the
/// alternatives whose token is not configured (no client could send it). The ops
/// endpoints (which list only `ops_token`) keep `{}`: loopback clients need no token.
pub fn require_configured_tokens(doc: &mut openapi::OpenApi, api_token: bool, ops_token: bool) {
    let configured = |scheme: &str| match scheme {
        "api_token" => api_token,
        "ops_token" => ops_token,
        _ => false,
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let Some(security) = &mut operation.security else {
                continue;
            };
            // The alternatives as JSON ({} or {"scheme": []}): SecurityRequirement keeps its
            // map private.
            let alternatives: Vec<serde_json::Value> = security
                .iter()
                .map(|r| serde_json::to_value(r).unwrap_or_default())
                .collect();
            let schemes = |r: &serde_json::Value| -> Vec<String> {
                r.as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let lists_api_token = alternatives
                .iter()
                .any(|r| schemes(r).iter().any(|s| s == "api_token"));
            let guarded = alternatives
                .iter()
                .any(|r| schemes(r).iter().any(|s| configured(s)));
            if !(lists_api_token && guarded) {
                continue;
            }
            security.retain(|r| {
                let r = serde_json::to_value(r).unwrap_or_default();
                let names = schemes(&r);
                !names.is_empty() && names.iter().all(|s| configured(s))
            });
        }
    }
}

/// Links between operations (OpenAPI 3.1, 4.8.20), by operationId: where a value in one
/// answer is a parameter of another call. Stateful testers follow them; a client reads
/// them as "what to call next".
///
/// Added to the serialized document, not through utoipa: utoipa 5.5's `Link` serializes
/// its fields in snake_case (`operation_id`), which no OpenAPI reader understands.
pub fn add_links(doc: &mut serde_json::Value) {
    use serde_json::json;
    let change = |id: &str| json!({"id": id, "header.If-Match": "$response.header.ETag"});
    let in_route = |route: &str| json!({"gtfs_id": "$request.path.gtfs_id", "route_id": route});
    // (path, method, status) of the answer; link name, target operationId, parameters.
    let links = [
        (
            "/waybills",
            "post",
            "201",
            "ReadWaybill",
            "read",
            json!({"id": "$response.body#/id"}),
        ),
        (
            "/waybills",
            "post",
            "201",
            "ChangeWaybill",
            "change",
            change("$response.body#/id"),
        ),
        (
            "/waybills/{id}",
            "get",
            "200",
            "ChangeWaybill",
            "change",
            change("$response.body#/id"),
        ),
        (
            "/waybills/{id}",
            "patch",
            "200",
            "ReadWaybill",
            "read",
            json!({"id": "$response.body#/id"}),
        ),
        (
            "/waybills/{id}",
            "patch",
            "200",
            "ChangeWaybill",
            "change",
            change("$response.body#/id"),
        ),
        (
            "/waybills",
            "get",
            "200",
            "ReadWaybill",
            "read",
            json!({"id": "$response.body#/waybills/0/id"}),
        ),
        (
            "/feeds",
            "get",
            "200",
            "ListRoutes",
            "list_routes",
            json!({"gtfs_id": "$response.body#/feeds/0/gtfs_id"}),
        ),
        (
            "/feeds",
            "get",
            "200",
            "ListFetches",
            "list_fetches",
            json!({"gtfs_id": "$response.body#/feeds/0/gtfs_id"}),
        ),
        (
            "/feeds/{gtfs_id}/routes",
            "get",
            "200",
            "RouteDetail",
            "route_detail",
            in_route("$response.body#/routes/0/route_id"),
        ),
        (
            "/feeds/{gtfs_id}/routes",
            "get",
            "200",
            "RouteTrips",
            "route_trips",
            in_route("$response.body#/routes/0/route_id"),
        ),
        (
            "/feeds/{gtfs_id}/routes/{route_id}",
            "get",
            "200",
            "RouteTrips",
            "route_trips",
            in_route("$request.path.route_id"),
        ),
    ];
    for (path, method, status, name, target, parameters) in links {
        // A response the document lacks has no link to carry (the test of the document
        // checks that every link is there and names a real operation).
        if let Some(response) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('/', "~1")
            ))
            .and_then(serde_json::Value::as_object_mut)
        {
            let links = response.entry("links").or_insert_with(|| json!({}));
            links[name] = json!({"operationId": target, "parameters": parameters});
        }
    }
}

/// The serialized document, set once when the router is built.
#[derive(Clone, Default)]
pub struct OpenApiJson(Arc<OnceLock<Bytes>>);

impl OpenApiJson {
    /// Completes `doc` ([`add_common_headers`], [`add_links`]), serializes it and keeps
    /// the bytes.
    pub fn publish(&self, mut doc: openapi::OpenApi) {
        add_common_headers(&mut doc);
        // A document made of strings, numbers and string-keyed maps always serializes.
        let mut json = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
        add_links(&mut json);
        let json = serde_json::to_vec(&json).expect("a JSON value serializes");
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
