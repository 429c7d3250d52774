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

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::WriteAccess;
use super::cursor;
use super::extract::{self, JsonBody, MAX_BODY, Query, if_match};
use super::idempotency::{canonical_json, idempotency_key};
use super::problems::{
    BadChange, BadCreate, BadReadings, BadWaybillQuery, BodyTooLarge, ChangeUnavailable,
    CreateConflict, CreateUnavailable, DatabaseUnavailable, IfMatchMissing, MoveNotAllowed,
    NoSuchWaybill, NotJson, VersionChanged, WaybillUnfit, WriteUnauthorized,
};
use super::{ApiError, ApiResult, ServerTiming};
use crate::db::waybills::{self as store, Change, Filters, StoredAnswer, Waybill};
use crate::state::AppState;
use crate::telemetry::Metrics;
use crate::waybill::{self, NewWaybill, Progress, Refused, Status, StatusChange};

pub use super::extract::IF_MATCH_PATTERN;
pub use super::idempotency::IDEMPOTENCY_KEY_PATTERN;

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

/// `GET /waybills`' query. Any other parameter is a 400.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// `YYYY-MM-DD`.
    #[serde(default, deserialize_with = "service_date")]
    #[param(value_type = Option<String>, format = Date)]
    service_date: Option<jiff::civil::Date>,
    /// At most 255 characters, as a waybill's `route_id`.
    #[param(max_length = 255)]
    route_id: Option<String>,
    /// At most 64 characters, as a waybill's `vehicle_id`.
    #[param(max_length = 64)]
    vehicle_id: Option<String>,
    /// At most 64 characters, as a waybill's `driver_id`.
    #[param(max_length = 64)]
    driver_id: Option<String>,
    #[serde(default, deserialize_with = "status")]
    status: Option<Status>,
    /// Page size.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// Opaque: the `next_cursor` of the previous page. Empty: the first page.
    cursor: Option<String>,
}

fn service_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<jiff::civil::Date>, D::Error> {
    extract::parse_value(
        d,
        "service_date",
        "is not a date of the form YYYY-MM-DD",
        crate::feed::model::parse_iso_date,
    )
}

fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Status>, D::Error> {
    extract::parse_value(
        d,
        "status",
        "is not one of issued, in_progress, completed, cancelled",
        Status::parse,
    )
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
async fn list(State(state): State<AppState>, Query(q): Query<ListParams>) -> ApiResult<Response> {
    for (name, value, max) in [
        ("route_id", &q.route_id, waybill::limits::GTFS_ID),
        ("vehicle_id", &q.vehicle_id, waybill::limits::ID),
        ("driver_id", &q.driver_id, waybill::limits::ID),
    ] {
        if let Some(value) = value {
            let chars = value.chars().count();
            if chars > max {
                return Err(ApiError::bad_request(format!(
                    "{name} has {chars} characters; at most {max}"
                )));
            }
        }
    }
    let limit = cursor::limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // An empty `cursor=` is the first page.
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let filters = Filters {
        service_date: q.service_date,
        route_id: q.route_id,
        vehicle_id: q.vehicle_id,
        driver_id: q.driver_id,
        status: q.status,
    };
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

/// Checks a status move against the current waybill ([`StatusChange::check`]) and says
/// what to write: a refused move is a 409, missing or inconsistent readings a 422.
fn check_change(current: &Waybill, req: &StatusChange) -> ApiResult<Change> {
    let progress = Progress {
        status: current.status,
        actual_start: current.actual_start,
        actual_end: current.actual_end,
        odometer_start: current.odometer_start,
        odometer_end: current.odometer_end,
    };
    let checked = req
        .check(&progress, Timestamp::now())
        .map_err(|refused| match refused {
            Refused::Move(why) => ApiError::new(StatusCode::CONFLICT, why),
            Refused::Invalid(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why.0),
        })?;
    Ok(Change {
        status: checked.status,
        actual_start: checked.actual_start,
        actual_end: checked.actual_end,
        odometer_start: checked.odometer_start,
        odometer_end: checked.odometer_end,
        notes: checked.notes,
    })
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
}
