//! Waybills over HTTP.
//!
//! - `POST /waybills` (optional `Idempotency-Key`): checked against the feed snapshot,
//!   stored with its trips in one transaction; 201 with `Location` and `ETag`.
//! - `GET /waybills/{id}`, `GET /waybills?service_date=&route_id=&vehicle_id=&driver_id=&status=&limit=&cursor=`.
//! - `PATCH /waybills/{id}` with `If-Match: "<version>"`: status moves.
//!
//! Writes need `Authorization: Bearer <api_token>` when `api_token` is set. While the
//! database is unreachable every waybill request answers 503 with `Retry-After`, never
//! 500. Every answer carries `Server-Timing` with `validate` and `db`; every write also
//! logs one `waybill_timing` line (through the non-blocking log writer).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::WriteAccess;
use super::cursor;
use super::problems::{
    BadChange, BadCreate, BadReadings, BadWaybillQuery, BodyTooLarge, ChangeUnavailable,
    CreateConflict, CreateUnavailable, DatabaseUnavailable, IfMatchMissing, MoveNotAllowed,
    NoSuchWaybill, NotJson, VersionChanged, WaybillUnfit, WriteUnauthorized,
};
use super::{ApiError, ApiResult, ServerTiming};
use crate::db::waybills::{self as store, Change, Filters, StoredAnswer, Waybill};
use crate::state::AppState;
use crate::telemetry::Metrics;
use crate::waybill::{self, NewWaybill, Status};

/// Largest waybill request body.
pub const MAX_BODY: usize = 256 * 1024;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(read, change))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// `GET /waybills`' answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct WaybillList {
    waybills: Vec<Waybill>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /waybills`' query.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// `YYYY-MM-DD`.
    #[param(value_type = Option<String>, format = Date)]
    service_date: Option<String>,
    /// At most 255 characters, as a waybill's `route_id`.
    #[param(max_length = 255)]
    route_id: Option<String>,
    /// At most 64 characters, as a waybill's `vehicle_id`.
    #[param(max_length = 64)]
    vehicle_id: Option<String>,
    /// At most 64 characters, as a waybill's `driver_id`.
    #[param(max_length = 64)]
    driver_id: Option<String>,
    status: Option<Status>,
    /// Page size.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    /// Opaque: the `next_cursor` of the previous page. Empty: the first page.
    cursor: Option<String>,
}

/// A JSON body, with every way it can be wrong answered as problem+json: 413 too large,
/// 415 not JSON, 400 not parseable, 422 the wrong shape (types, missing or unknown fields).
/// Keeps the raw bytes (the idempotency fingerprint is computed over them).
pub struct JsonBody<T>(pub T, pub Bytes);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read the body: {e}"))
            }
        })?;
        if let Some(field) = nul_field(&bytes) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "invalid body: {field} holds a NUL character (\\u0000), which no field may"
                ),
            ));
        }
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(JsonBody(value, bytes)),
            Err(e) if e.is_data() => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid body: {e}"),
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }
}

/// The JSON path (`notes`, `trip_ids[2]`) of a string holding a NUL character, which
/// PostgreSQL cannot store in text. Bodies without the escape `\u0000` (nearly all) are
/// not parsed a second time.
fn nul_field(body: &[u8]) -> Option<String> {
    if !body.windows(6).any(|w| w == br"\u0000") {
        return None;
    }
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        use serde_json::Value as V;
        match v {
            V::String(s) if s.contains('\0') => Some(path.to_owned()),
            V::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            V::Object(map) => map.iter().find_map(|(k, v)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.contains('\0') {
                    Some(here.replace('\0', "\\u0000"))
                } else {
                    walk(v, &here)
                }
            }),
            _ => None,
        }
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    walk(&value, "")
}

/// A waybill answer: JSON, its version as ETag, the timing phases.
fn waybill_response(
    status: StatusCode,
    body: Vec<u8>,
    waybill_id: Uuid,
    version: Option<i32>,
    timing: ServerTiming,
) -> Response {
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = version.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok()) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Ok(v) = HeaderValue::from_str(&format!("/waybills/{waybill_id}"))
    {
        h.insert(header::LOCATION, v);
    }
    response.extensions_mut().insert(timing);
    response
}

fn to_json(waybill: &Waybill) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(waybill).map_err(|e| ApiError::internal(e.into()))
}

/// Logs the phases of a write without holding the answer: the log writer is non-blocking.
/// Logs a write's `waybill_timing` line and records its database time in the metrics.
fn log_timing(
    metrics: &Metrics,
    op: &'static str,
    status: u16,
    validate: Duration,
    db: Duration,
    started: Instant,
) {
    metrics.observe_db(op, db);
    tracing::info!(
        target: "gtfs_fetch::waybill_timing",
        op,
        status,
        validate_us = validate.as_micros() as u64,
        db_us = db.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "waybill_timing"
    );
}

/// Records a waybill, checked against the feed.
///
/// The route must exist, every trip must belong to it and run on the service date, and
/// trips must not overlap. The vehicle and the driver must be free for the planned times
/// (enforced by the database). With `Idempotency-Key`, the same key and body (compared
/// as JSON: key order and whitespace do not matter) give the stored answer again; the same key with another body, 422; while the first request
/// with the key is in flight, 409.
#[utoipa::path(
    post,
    path = "/waybills",
    tag = "waybills",
    request_body = NewWaybill,
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = r#"^("[!#-~]{1,255}"|[!#-~]{1,255})$"#,
            description = "Makes retries safe: 1 to 255 visible ASCII characters other than `\"`, optionally in double quotes (the IETF draft's form; `\"k\"` and `k` are the same key)."),
    ),
    security((), ("api_token" = [])),
    responses(
        (status = 201, description = "Stored (or, for a repeated Idempotency-Key, the stored answer).", body = Waybill,
            headers(("Location" = String, description = "/waybills/{id}"), ("ETag" = String, description = "The version, quoted."))),
        BadCreate,
        WriteUnauthorized,
        CreateConflict,
        BodyTooLarge,
        NotJson,
        WaybillUnfit,
        CreateUnavailable,
    ),
)]
async fn create(
    State(state): State<AppState>,
    _write: WriteAccess,
    headers: HeaderMap,
    body: JsonBody<NewWaybill>,
) -> ApiResult<Response> {
    let started = Instant::now();
    let JsonBody(req, raw) = body;
    req.check_fields()
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.0))?;
    let key = idempotency_key(&headers)?;
    // Only a request with a key is compared with an earlier one.
    let fingerprint = match key {
        Some(_) => hex::encode(Sha256::digest(
            [b"POST /waybills\n".as_slice(), &canonical_json(&raw)].concat(),
        )),
        None => String::new(),
    };
    let mut attempt = 1;
    loop {
        match create_once(&state, &req, key.as_deref(), &fingerprint, started).await {
            Ok(response) => return Ok(response),
            Err(Attempt::Fail(e)) => return Err(e),
            Err(Attempt::Retry(e)) if attempt < CREATE_ATTEMPTS => {
                tracing::info!(attempt, "waybill write retried after {e}");
                attempt += 1;
            }
            Err(Attempt::Retry(e)) => return Err(e.into()),
        }
    }
}

/// What `Idempotency-Key` may be, as the OpenAPI document states it: 1 to 255 visible
/// ASCII characters other than `"`, bare or in double quotes (draft-ietf-httpapi-
/// idempotency-key-header sends a structured-field string, `"k"`; both are the key `k`).
/// No blanks: HTTP trims them at the ends, so a key made of them would arrive empty.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r#"^("[!#-~]{1,255}"|[!#-~]{1,255})$"#;

/// The idempotency key of a request, unquoted; exactly the forms of
/// [`IDEMPOTENCY_KEY_PATTERN`], anything else a 400.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let key = match bytes {
        [b'"', inner @ .., b'"'] => inner,
        _ => bytes,
    };
    if (1..=255).contains(&key.len())
        && key.iter().all(|&b| (b'!'..=b'~').contains(&b) && b != b'"')
    {
        // Visible ASCII only: always valid UTF-8.
        Ok(Some(String::from_utf8_lossy(key).into_owned()))
    } else {
        Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters other than \", \
             optionally in double quotes",
        ))
    }
}

/// The canonical form of a JSON body, what an idempotency key's fingerprint is taken
/// over: object keys sorted, no insignificant whitespace, and a whole number written the
/// same whether it came as `4234` or `4234.0` (both are the same request to the API). Two
/// bodies that mean the same request have the same form. Bytes that are not JSON (already
/// refused by [`JsonBody`]) are returned as they are.
fn canonical_json(raw: &[u8]) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(&Value::String(k.clone()), out);
                    out.push(b':');
                    write(v, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(v, out);
                }
                out.push(b']');
            }
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    out.extend_from_slice((f as i64).to_string().as_bytes());
                }
                _ => out.extend_from_slice(n.to_string().as_bytes()),
            },
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(value) => {
            let mut out = Vec::with_capacity(raw.len());
            write(&value, &mut out);
            out
        }
        Err(_) => raw.to_vec(),
    }
}

/// Tries of one `POST /waybills` when PostgreSQL aborts it as a deadlock victim.
const CREATE_ATTEMPTS: u32 = 3;

/// Why one try of a write stopped.
enum Attempt {
    /// PostgreSQL aborted it and the same request can succeed or fail cleanly when run
    /// again: deadlock_detected (40P01) or serialization_failure (40001). Two inserts that
    /// conflict on an exclusion constraint at the same moment each wait for the other's
    /// row, and PostgreSQL breaks the tie by aborting one; run again, it sees the winner's
    /// committed row and gets the 409 it deserves.
    Retry(sqlx::Error),
    /// The answer for the client.
    Fail(ApiError),
}

impl From<ApiError> for Attempt {
    fn from(e: ApiError) -> Self {
        Attempt::Fail(e)
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            Attempt::Retry(e)
        } else {
            Attempt::Fail(e.into())
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// One try of `POST /waybills`: the key's lookup, the check against the feed, the insert.
async fn create_once(
    state: &AppState,
    req: &NewWaybill,
    key: Option<&str>,
    fingerprint: &str,
    started: Instant,
) -> Result<Response, Attempt> {
    let mut timing = ServerTiming::default();

    let db_started = Instant::now();
    // With a key, the key's lookup, the waybill and the stored answer share a transaction.
    // Without one, the waybill is a single statement: no transaction round trips.
    let mut tx = match &key {
        Some(_) => Some(state.db.pool.begin().await?),
        None => None,
    };
    let tx_slot = &mut tx;
    if let (Some(key), Some(tx)) = (key, tx_slot.as_mut()) {
        if !store::lock_key(tx, key).await? {
            return Err(Attempt::Fail(
                ApiError::new(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is still in flight",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            ));
        }
        if let Some(stored) = store::stored_answer(tx, key).await? {
            // Release the key's lock before answering. A transaction that is only dropped
            // is rolled back when its connection is next used, so the lock would outlive
            // the answer and the client's next request with the key would get a 409.
            if let Some(open) = tx_slot.take() {
                open.rollback().await?;
            }
            if stored.fingerprint != fingerprint {
                return Err(Attempt::Fail(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used for a different request",
                )));
            }
            timing.record("db", db_started.elapsed());
            let status = StatusCode::from_u16(stored.status_code).unwrap_or(StatusCode::CREATED);
            let version = serde_json::from_slice::<serde_json::Value>(&stored.response)
                .ok()
                .and_then(|v| v["version"].as_i64())
                .map(|v| v as i32);
            let id = stored.waybill_id.unwrap_or_default();
            let mut response = waybill_response(status, stored.response, id, version, timing);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
    }
    let mut db_time = db_started.elapsed();

    let validate_started = Instant::now();
    let snapshot = {
        let entry = state.feeds.get(&req.gtfs_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("feed {:?} is not known", req.gtfs_id),
            )
        })?;
        let loaded = entry.current().ok_or_else(|| {
            ApiError::unavailable(format!("feed {:?} is not loaded yet", req.gtfs_id), 30)
        })?;
        if loaded.snapshot().is_none() {
            return Err(Attempt::Fail(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "feed {:?} has no trip data (it is not loaded from a GTFS zip)",
                    req.gtfs_id
                ),
            )));
        }
        loaded
    };
    let plan = waybill::plan(snapshot.snapshot().expect("checked above"), req)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.0))?;
    let validate = validate_started.elapsed();
    timing.record("validate", validate);

    let db_started = Instant::now();
    let id = Uuid::now_v7();
    let (waybill, body) = match (tx, key) {
        (Some(mut tx), Some(key)) => {
            let waybill = store::insert(&mut tx, id, req, &plan).await?;
            let body = to_json(&waybill)?;
            let answer = StoredAnswer {
                fingerprint: fingerprint.to_owned(),
                status_code: 201,
                response: body.clone(),
                waybill_id: Some(id),
            };
            store::store_answer(&mut tx, key, &answer).await?;
            tx.commit().await?;
            (waybill, body)
        }
        _ => {
            let mut conn = state.db.pool.acquire().await?;
            let waybill = store::insert(&mut conn, id, req, &plan).await?;
            let body = to_json(&waybill)?;
            (waybill, body)
        }
    };
    db_time += db_started.elapsed();
    timing.record("db", db_time);
    log_timing(&state.metrics, "create", 201, validate, db_time, started);
    Ok(waybill_response(
        StatusCode::CREATED,
        body,
        id,
        Some(waybill.version),
        timing,
    ))
}

fn parse_id(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text)
        .map_err(|_| ApiError::not_found(format!("no waybill {text:?} (not a waybill id)")))
}

/// One waybill.
#[utoipa::path(
    get,
    path = "/waybills/{id}",
    tag = "waybills",
    params(("id" = String, Path, format = Uuid, description = "The waybill's id (a UUID).")),
    responses(
        (status = 200, description = "The waybill.", body = Waybill, headers(("ETag" = String, description = "The version, quoted."))),
        NoSuchWaybill,
        DatabaseUnavailable,
    ),
)]
async fn read(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let started = Instant::now();
    let mut conn = state.db.pool.acquire().await?;
    let waybill = store::get(&mut conn, id, false)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no waybill {id}")))?;
    let mut timing = ServerTiming::default();
    timing.record("db", started.elapsed());
    state.metrics.observe_db("read", started.elapsed());
    Ok(waybill_response(
        StatusCode::OK,
        to_json(&waybill)?,
        id,
        Some(waybill.version),
        timing,
    ))
}

/// A list position: after this id (see [`super::cursor`]).
fn encode_cursor(after: Uuid) -> String {
    cursor::encode("waybills", &after.to_string())
}

fn decode_cursor(text: &str) -> ApiResult<Uuid> {
    let position = cursor::decode("waybills", text)?;
    Uuid::parse_str(&position).map_err(|_| {
        ApiError::bad_request("cursor is not one this service issued; start again without it")
    })
}

/// Waybills, filtered, in creation order, cursor-paged.
#[utoipa::path(
    get,
    path = "/waybills",
    tag = "waybills",
    params(ListParams),
    responses(
        (status = 200, description = "A page of waybills.", body = WaybillList),
        BadWaybillQuery,
        DatabaseUnavailable,
    ),
)]
async fn list(
    State(state): State<AppState>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    const ALLOWED: [&str; 7] = [
        "service_date",
        "route_id",
        "vehicle_id",
        "driver_id",
        "status",
        "limit",
        "cursor",
    ];
    super::check_params(&q, &ALLOWED)?;
    for (name, max) in [
        ("route_id", waybill::limits::GTFS_ID),
        ("vehicle_id", waybill::limits::ID),
        ("driver_id", waybill::limits::ID),
    ] {
        if let Some(value) = q.get(name) {
            let chars = value.chars().count();
            if chars > max {
                return Err(ApiError::bad_request(format!(
                    "{name} has {chars} characters; at most {max}"
                )));
            }
        }
    }
    let filters = Filters {
        service_date: q
            .get("service_date")
            .map(|d| {
                crate::feed::model::parse_iso_date(d).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "service_date={d:?} is not a date of the form YYYY-MM-DD"
                    ))
                })
            })
            .transpose()?,
        route_id: q.get("route_id").cloned(),
        vehicle_id: q.get("vehicle_id").cloned(),
        driver_id: q.get("driver_id").cloned(),
        status: q
            .get("status")
            .map(|s| {
                Status::parse(s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status={s:?} is not one of issued, in_progress, completed, cancelled"
                    ))
                })
            })
            .transpose()?,
    };
    let limit = cursor::limit(q.get("limit").map(String::as_str), DEFAULT_LIMIT, MAX_LIMIT)?;
    // An empty `cursor=` is the first page.
    let after = q
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(c))
        .transpose()?;
    let started = Instant::now();
    let mut conn = state.db.pool.acquire().await?;
    // One more than asked: whether there is a next page.
    let mut waybills = store::list(&mut conn, &filters, after, limit + 1).await?;
    let next_cursor = if waybills.len() as i64 > limit {
        waybills.truncate(limit as usize);
        waybills.last().map(|w| encode_cursor(w.id))
    } else {
        None
    };
    let mut timing = ServerTiming::default();
    timing.record("db", started.elapsed());
    state.metrics.observe_db("list", started.elapsed());
    let body = serde_json::to_vec(&WaybillList {
        waybills,
        next_cursor,
    })
    .map_err(|e| ApiError::internal(e.into()))?;
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    response.extensions_mut().insert(timing);
    Ok(response)
}

/// `PATCH /waybills/{id}`' body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: Status,
    #[serde(default)]
    pub actual_start: Option<Timestamp>,
    #[serde(default)]
    pub actual_end: Option<Timestamp>,
    /// Kilometres; an integer in JSON Schema's sense, so `4234.0` is one too.
    #[serde(default, deserialize_with = "whole_number")]
    pub odometer_start: Option<i64>,
    /// Kilometres, at least `odometer_start`; `4234.0` is an integer too.
    #[serde(default, deserialize_with = "whole_number")]
    pub odometer_end: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000]*$")]
    pub notes: Option<String>,
}

/// An optional integer, taking JSON numbers with a zero fraction (`4234.0`) as JSON
/// Schema's `integer` does; `4234.5` and out-of-range numbers are refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number"))),
    }
}

/// What `If-Match` may be, as the OpenAPI document states it: `*`, or the waybill's ETag
/// (`"3"`), also weakened by a proxy (`W/"3"`), or the bare version (`3`, DESIGN.md's
/// `If-Match: <version>`). Lists of tags are not taken: a waybill has one version. Nine
/// digits at most, so a version always fits an i32.
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,9}"|[0-9]{1,9})$"#;

/// The version `If-Match` names; `None` for `*`, which matches any current version (RFC
/// 9110, 13.1.1). Exactly the forms of [`IF_MATCH_PATTERN`]; anything else is a 400.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i32>> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match with the waybill's ETag (its version)",
        )
    })?;
    let malformed =
        || ApiError::bad_request("If-Match must be the waybill's ETag, such as \"3\", or *");
    let text = value.to_str().map_err(|_| malformed())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').ok_or_else(malformed)?,
        // A bare version, but not the rest of a weak tag (`W/3`).
        None if tag.len() == text.len() => tag,
        None => return Err(malformed()),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    // At most nine ASCII digits: always an i32.
    digits.parse().map(Some).map_err(|_| malformed())
}

/// Checks a status move against the current waybill and says what to write.
fn check_change(current: &Waybill, req: &StatusChange) -> ApiResult<Change> {
    if !current.status.can_move_to(req.status) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "a waybill cannot move from {} to {}",
                current.status.as_str(),
                req.status.as_str()
            ),
        ));
    }
    let unprocessable = |m: &str| {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            m.to_owned(),
        ))
    };
    if req.odometer_start.is_some_and(|o| o < 0) || req.odometer_end.is_some_and(|o| o < 0) {
        return unprocessable("odometer readings cannot be negative");
    }
    let now = Timestamp::now();
    let mut change = Change {
        status: req.status,
        actual_start: req.actual_start,
        actual_end: req.actual_end,
        odometer_start: req.odometer_start,
        odometer_end: req.odometer_end,
        notes: req.notes.clone(),
    };
    match req.status {
        Status::InProgress => {
            if req.odometer_start.is_none() {
                return unprocessable("starting a waybill needs odometer_start");
            }
            change.actual_start.get_or_insert(now);
        }
        Status::Completed => {
            let Some(end) = req.odometer_end else {
                return unprocessable("completing a waybill needs odometer_end");
            };
            let start = req.odometer_start.or(current.odometer_start).unwrap_or(0);
            if end < start {
                return unprocessable("odometer_end cannot be below odometer_start");
            }
            let actual_end = *change.actual_end.get_or_insert(now);
            if current.actual_start.is_some_and(|s| actual_end < s) {
                return unprocessable("actual_end cannot be before actual_start");
            }
        }
        Status::Cancelled | Status::Issued => {}
    }
    // Whatever the move, the readings the waybill ends up with (the update keeps a stored
    // value the request leaves out) must agree: the database refuses an odometer_end
    // below odometer_start (a CHECK), which would otherwise surface as a 500, and an end
    // before the start is as wrong for times.
    let odometer_start = change.odometer_start.or(current.odometer_start);
    let odometer_end = change.odometer_end.or(current.odometer_end);
    if let (Some(start), Some(end)) = (odometer_start, odometer_end)
        && end < start
    {
        return unprocessable("odometer_end cannot be below odometer_start");
    }
    let actual_start = change.actual_start.or(current.actual_start);
    let actual_end = change.actual_end.or(current.actual_end);
    if let (Some(start), Some(end)) = (actual_start, actual_end)
        && end < start
    {
        return unprocessable("actual_end cannot be before actual_start");
    }
    Ok(change)
}

/// Moves a waybill to its next status.
///
/// issued → in_progress (needs `odometer_start`; `actual_start` defaults to now) →
/// completed (needs `odometer_end` not below the start; `actual_end` defaults to now);
/// issued or in_progress → cancelled. `If-Match` must carry the current ETag.
#[utoipa::path(
    patch,
    path = "/waybills/{id}",
    tag = "waybills",
    request_body = StatusChange,
    params(
        ("id" = String, Path, format = Uuid, description = "The waybill's id (a UUID)."),
        ("If-Match" = String, Header, pattern = r#"^(\*|(W/)?"[0-9]{1,9}"|[0-9]{1,9})$"#,
            description = "The waybill's current ETag (`\"3\"`, also weak: `W/\"3\"`), its bare version (`3`), or `*` for whatever version is current. One tag, not a list."),
    ),
    security((), ("api_token" = [])),
    responses(
        (status = 200, description = "Moved; the version is one higher.", body = Waybill, headers(("ETag" = String))),
        BadChange,
        WriteUnauthorized,
        NoSuchWaybill,
        MoveNotAllowed,
        VersionChanged,
        BodyTooLarge,
        NotJson,
        BadReadings,
        IfMatchMissing,
        ChangeUnavailable,
    ),
)]
async fn change(
    State(state): State<AppState>,
    _write: WriteAccess,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(req, _): JsonBody<StatusChange>,
) -> ApiResult<Response> {
    let started = Instant::now();
    if let Some(notes) = &req.notes {
        waybill::check_notes("notes", notes)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.0))?;
    }
    let id = parse_id(&id)?;
    let expected = if_match(&headers)?;
    let mut tx = state.db.pool.begin().await?;
    let current = store::get(&mut tx, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no waybill {id}")))?;
    if let Some(expected) = expected
        && current.version != expected
    {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "the waybill is at version {}, not {expected}: read it again",
                current.version
            ),
        ));
    }
    let validate_started = Instant::now();
    let change = check_change(&current, &req)?;
    let validate = validate_started.elapsed();
    let updated = store::update(&mut tx, id, &change).await?;
    tx.commit().await?;
    let db = started.elapsed().saturating_sub(validate);
    let mut timing = ServerTiming::default();
    timing.record("validate", validate);
    timing.record("db", db);
    log_timing(&state.metrics, "change", 200, validate, db, started);
    Ok(waybill_response(
        StatusCode::OK,
        to_json(&updated)?,
        id,
        Some(updated.version),
        timing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_refuse_forgeries() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(decode_cursor("nonsense").is_err());
        let forged = URL_SAFE_NO_PAD.encode(format!("{}.00000000", Uuid::now_v7()));
        assert!(decode_cursor(&forged).is_err());
    }

    #[test]
    fn nul_characters_are_found_by_their_field() {
        assert_eq!(nul_field(br#"{"notes":"fine"}"#), None);
        // A backslash followed by u0000 is text, not a NUL.
        assert_eq!(nul_field(br#"{"notes":"\\u0000"}"#), None);
        assert_eq!(
            nul_field(br#"{"notes":"a\u0000b"}"#).as_deref(),
            Some("notes")
        );
        assert_eq!(
            nul_field(br#"{"trip_ids":["x","\u0000"]}"#).as_deref(),
            Some("trip_ids[1]")
        );
        assert_eq!(nul_field(br#"{"a\u0000":1}"#).as_deref(), Some("a\\u0000"));
    }

    #[test]
    fn odometers_are_whole_numbers_with_or_without_a_zero_fraction() {
        let parse = |v: &str| {
            serde_json::from_str::<StatusChange>(&format!(
                r#"{{"status":"completed","odometer_end":{v}}}"#
            ))
            .map(|c| c.odometer_end)
        };
        assert_eq!(parse("4234").unwrap(), Some(4234));
        assert_eq!(parse("4234.0").unwrap(), Some(4234));
        assert_eq!(parse("4.234e3").unwrap(), Some(4234));
        assert_eq!(parse("null").unwrap(), None);
        for bad in ["4234.5", "1e300", "\"4234\"", "18446744073709551615"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_request_has_one_canonical_form() {
        let a = canonical_json(br#"{"b": [1, {"y": 2, "x": 4234.0}], "a": "\u00e9"}"#);
        let b = canonical_json("{\"a\":\"é\",\n \"b\":[1,{\"x\":4234,\"y\":2}]}".as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&a),
            r#"{"a":"é","b":[1,{"x":4234,"y":2}]}"#
        );
        assert_eq!(a, b);
        // Other values are other requests.
        assert_ne!(
            canonical_json(br#"{"a":1.5}"#),
            canonical_json(br#"{"a":1}"#)
        );
        assert_ne!(
            canonical_json(br#"{"a":"1"}"#),
            canonical_json(br#"{"a":1}"#)
        );
        assert_ne!(
            canonical_json(br#"{"a":[1,2]}"#),
            canonical_json(br#"{"a":[2,1]}"#)
        );
    }

    #[test]
    fn idempotency_key_forms() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        let long = "k".repeat(255);
        for (given, key) in [
            ("7f0c-2026-12-01-bus-117", "7f0c-2026-12-01-bus-117"),
            ("\"7f0c\"", "7f0c"),
            ("!#~", "!#~"),
            (long.as_str(), long.as_str()),
        ] {
            assert_eq!(idempotency_key(&h(given)).unwrap().as_deref(), Some(key));
        }
        // Everything IDEMPOTENCY_KEY_PATTERN refuses is a 400.
        let too_long = "k".repeat(256);
        for bad in [
            "",
            "\"\"",
            "\"",
            "a b",
            "a\"b",
            "\"a",
            "\"\"a\"\"",
            "\té",
            too_long.as_str(),
        ] {
            let Ok(value) = HeaderValue::from_str(bad) else {
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", value);
            assert_eq!(
                idempotency_key(&headers).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(idempotency_key(&headers).is_err());
    }

    #[test]
    fn if_match_forms() {
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_static(v));
            h
        };
        assert_eq!(if_match(&h("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&h("W/\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&h("5")).unwrap(), Some(5));
        assert_eq!(if_match(&h("*")).unwrap(), None);
        assert_eq!(
            if_match(&HeaderMap::new()).unwrap_err().status(),
            StatusCode::PRECONDITION_REQUIRED
        );
        // Exactly the documented forms (IF_MATCH_PATTERN): anything else is a 400,
        // including what a lenient parser would read as a number.
        for bad in [
            "\"x\"",
            "W/\"!+$`3\"",
            "\"3",
            "3\"",
            "\"\"3\"\"",
            "W/3",
            "W/W/\"3\"",
            "+3",
            "-3",
            "\"\"",
            "\"1234567890\"",
            "\"1\", \"2\"",
        ] {
            assert_eq!(
                if_match(&h(bad)).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(if_match(&h("\"999999999\"")).unwrap(), Some(999_999_999));
    }
}
