//! The one error type of the HTTP API, rendered as `application/problem+json` (RFC 9457).
//!
//! Client errors carry a `detail` meant for the caller. Internal errors are logged (inside
//! the request's span, so with its request id) and answered with a generic detail: their
//! text never reaches the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
    retry_after: Option<u64>,
    /// Extension members added to the problem object (RFC 9457 section 3.2).
    extensions: Map<String, Json>,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After` on a 409, ...).
    headers: Vec<(axum::http::HeaderName, HeaderValue)>,
    /// For internal errors: what is logged instead of shown.
    source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            retry_after: None,
            extensions: Map::new(),
            headers: Vec::new(),
            source: None,
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }
    /// 503 with a `Retry-After` in seconds.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, detail);
        e.retry_after = Some(retry_after_secs);
        e
    }
    /// A failure of ours: logged with its cause, answered as a bare 500.
    pub fn internal(source: anyhow::Error) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the request id is in the x-request-id header and the logs",
        );
        e.source = Some(source);
        e
    }
    pub fn with_extension(mut self, key: &str, value: Json) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }
    pub fn with_header(mut self, name: axum::http::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(status = self.status.as_u16(), "internal error: {source:#}");
        }
        let problem = super::openapi::Problem::new(self.status, self.detail);
        // Four strings and a number always serialize.
        let mut body = serde_json::to_value(problem).unwrap_or_default();
        if let Json::Object(map) = &mut body {
            map.extend(self.extensions);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// What a database error means for the client: 503 when the database cannot be reached
/// (never a 500 for that), 409 for the constraints that encode business rules (named in
/// `migrations/`), 500 (logged, never echoed) for the rest. Handlers use `?`.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut
            | E::PoolClosed
            | E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::WorkerCrashed => {
                ApiError::unavailable(format!("the database is unavailable: {e}"), 2)
            }
            E::Database(db) => match (db.code().as_deref(), db.constraint()) {
                (Some("23P01"), Some("waybill_vehicle_overlap")) => ApiError::new(
                    StatusCode::CONFLICT,
                    "the vehicle already has a waybill overlapping these times",
                ),
                (Some("23P01"), Some("waybill_driver_overlap")) => ApiError::new(
                    StatusCode::CONFLICT,
                    "the driver already has a waybill overlapping these times",
                ),
                (Some("23505"), Some("waybill_number_key")) => {
                    ApiError::new(StatusCode::CONFLICT, "a waybill with this number exists")
                }
                // Still a deadlock victim after its retries: the client may try again.
                (Some("40P01" | "40001"), _) => {
                    ApiError::unavailable("the write collided with concurrent ones; try again", 1)
                }
                // Class 08 (connection), 57P (shutdown, crash), 53 (resources): try again later.
                (Some(code), _)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || code.starts_with("53") =>
                {
                    ApiError::unavailable(format!("the database is unavailable: {e}"), 2)
                }
                _ => ApiError::internal(e.into()),
            },
            _ => ApiError::internal(e.into()),
        }
    }
}
