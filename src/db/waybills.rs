//! Waybills in PostgreSQL (tables in `migrations/*_waybills.sql`).
//!
//! Every write is one transaction. The database enforces what must hold across service
//! instances: no overlapping live duties per vehicle or driver (exclusion constraints),
//! unique operator numbers, and an idempotency key committed with its waybill.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::waybill::{NewWaybill, Plan, Status};

/// A stored waybill, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Waybill {
    pub id: Uuid,
    pub number: Option<String>,
    pub status: Status,
    pub version: i32,
    pub service_date: jiff::civil::Date,
    pub vehicle_id: String,
    pub driver_id: String,
    pub gtfs_id: String,
    pub route_id: String,
    pub feed_version: String,
    pub planned_start: Timestamp,
    pub planned_end: Timestamp,
    pub actual_start: Option<Timestamp>,
    pub actual_end: Option<Timestamp>,
    pub odometer_start: Option<i64>,
    pub odometer_end: Option<i64>,
    pub notes: Option<String>,
    pub trips: Vec<WaybillTrip>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One trip of a waybill, in time order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaybillTrip {
    pub sequence: i32,
    pub trip_id: String,
    pub start_time: String,
    pub end_time: String,
    pub planned_start: Timestamp,
    pub planned_end: Timestamp,
}

/// sqlx speaks `time`; the service speaks `jiff`.
pub fn to_db(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

pub fn from_db(t: time::OffsetDateTime) -> Timestamp {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub fn date_to_db(d: jiff::civil::Date) -> time::Date {
    let month = time::Month::try_from(d.month() as u8).unwrap_or(time::Month::January);
    time::Date::from_calendar_date(i32::from(d.year()), month, d.day() as u8)
        .unwrap_or(time::Date::MIN)
}

fn date_from_db(d: time::Date) -> jiff::civil::Date {
    jiff::civil::Date::new(d.year() as i16, u8::from(d.month()) as i8, d.day() as i8)
        .unwrap_or_default()
}

const COLUMNS: &str = "id, number, status, version, service_date, vehicle_id, driver_id, gtfs_id, route_id, \
     feed_version, planned_start, planned_end, actual_start, actual_end, odometer_start, odometer_end, notes, \
     created_at, updated_at";

fn waybill_of(row: &PgRow) -> Result<Waybill, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let ts = |name: &str| row.try_get::<time::OffsetDateTime, _>(name).map(from_db);
    let opt_ts = |name: &str| {
        row.try_get::<Option<time::OffsetDateTime>, _>(name)
            .map(|t| t.map(from_db))
    };
    Ok(Waybill {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status:?}").into()))?,
        version: row.try_get("version")?,
        service_date: date_from_db(row.try_get("service_date")?),
        vehicle_id: row.try_get("vehicle_id")?,
        driver_id: row.try_get("driver_id")?,
        gtfs_id: row.try_get("gtfs_id")?,
        route_id: row.try_get("route_id")?,
        feed_version: row.try_get("feed_version")?,
        planned_start: ts("planned_start")?,
        planned_end: ts("planned_end")?,
        actual_start: opt_ts("actual_start")?,
        actual_end: opt_ts("actual_end")?,
        odometer_start: row.try_get("odometer_start")?,
        odometer_end: row.try_get("odometer_end")?,
        notes: row.try_get("notes")?,
        trips: Vec::new(),
        created_at: ts("created_at")?,
        updated_at: ts("updated_at")?,
    })
}

/// Loads the trips of `waybills` (one query for all).
async fn with_trips(
    conn: &mut PgConnection,
    mut waybills: Vec<Waybill>,
) -> Result<Vec<Waybill>, sqlx::Error> {
    if waybills.is_empty() {
        return Ok(waybills);
    }
    let ids: Vec<Uuid> = waybills.iter().map(|w| w.id).collect();
    let rows = sqlx::query(
        "SELECT waybill_id, sequence, trip_id, start_seconds, end_seconds, planned_start, planned_end
         FROM waybill_trip WHERE waybill_id = ANY($1) ORDER BY waybill_id, sequence",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let id: Uuid = row.try_get("waybill_id")?;
        let secs = |name: &str| {
            row.try_get::<i32, _>(name)
                .map(|s| crate::feed::model::format_gtfs_time(s.max(0) as u32))
        };
        let trip = WaybillTrip {
            sequence: row.try_get("sequence")?,
            trip_id: row.try_get("trip_id")?,
            start_time: secs("start_seconds")?,
            end_time: secs("end_seconds")?,
            planned_start: from_db(row.try_get("planned_start")?),
            planned_end: from_db(row.try_get("planned_end")?),
        };
        if let Some(w) = waybills.iter_mut().find(|w| w.id == id) {
            w.trips.push(trip);
        }
    }
    Ok(waybills)
}

/// Inserts a checked waybill with its trips in one statement (atomic on its own, or part
/// of the caller's transaction); the trips in the answer are the plan's, not read back.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    req: &NewWaybill,
    plan: &Plan,
) -> Result<Waybill, sqlx::Error> {
    let mut sequences = Vec::new();
    let mut trip_ids = Vec::new();
    let (mut starts, mut ends, mut planned_starts, mut planned_ends) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in &plan.trips {
        sequences.push(t.sequence);
        trip_ids.push(t.trip_id.clone());
        starts.push(t.start_seconds as i32);
        ends.push(t.end_seconds as i32);
        planned_starts.push(to_db(t.planned_start));
        planned_ends.push(to_db(t.planned_end));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH w AS (
           INSERT INTO waybill (id, number, service_date, vehicle_id, driver_id, gtfs_id, route_id, feed_version,
                                planned_start, planned_end, notes)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           RETURNING {COLUMNS}),
         t AS (
           INSERT INTO waybill_trip (waybill_id, sequence, trip_id, start_seconds, end_seconds, planned_start, planned_end)
           SELECT $1, * FROM UNNEST($12::int[], $13::text[], $14::int[], $15::int[], $16::timestamptz[], $17::timestamptz[]))
         SELECT * FROM w"
    )))
    .bind(id)
    .bind(&req.number)
    .bind(date_to_db(req.service_date))
    .bind(&req.vehicle_id)
    .bind(&req.driver_id)
    .bind(&req.gtfs_id)
    .bind(&req.route_id)
    .bind(&plan.feed_version)
    .bind(to_db(plan.planned_start))
    .bind(to_db(plan.planned_end))
    .bind(&req.notes)
    .bind(&sequences)
    .bind(&trip_ids)
    .bind(&starts)
    .bind(&ends)
    .bind(&planned_starts)
    .bind(&planned_ends)
    .fetch_one(&mut *conn)
    .await?;
    let mut waybill = waybill_of(&row)?;
    waybill.trips = plan
        .trips
        .iter()
        .map(|t| WaybillTrip {
            sequence: t.sequence,
            trip_id: t.trip_id.clone(),
            start_time: crate::feed::model::format_gtfs_time(t.start_seconds),
            end_time: crate::feed::model::format_gtfs_time(t.end_seconds),
            planned_start: t.planned_start,
            planned_end: t.planned_end,
        })
        .collect();
    Ok(waybill)
}

/// One waybill, `FOR UPDATE` when `lock`.
pub async fn get(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<Waybill>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM waybill WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let waybill = waybill_of(&row)?;
    Ok(with_trips(conn, vec![waybill]).await?.pop())
}

/// `GET /waybills` filters.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub service_date: Option<jiff::civil::Date>,
    pub route_id: Option<String>,
    pub vehicle_id: Option<String>,
    pub driver_id: Option<String>,
    pub status: Option<Status>,
}

/// Waybills matching `filters`, ordered by id (creation order), after `after`.
pub async fn list(
    conn: &mut PgConnection,
    filters: &Filters,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Waybill>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM waybill
         WHERE ($1::date IS NULL OR service_date = $1)
           AND ($2::text IS NULL OR route_id = $2)
           AND ($3::text IS NULL OR vehicle_id = $3)
           AND ($4::text IS NULL OR driver_id = $4)
           AND ($5::text IS NULL OR status = $5)
           AND ($6::uuid IS NULL OR id > $6)
         ORDER BY id
         LIMIT $7"
    )))
    .bind(filters.service_date.map(date_to_db))
    .bind(&filters.route_id)
    .bind(&filters.vehicle_id)
    .bind(&filters.driver_id)
    .bind(filters.status.map(Status::as_str))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let waybills = rows.iter().map(waybill_of).collect::<Result<Vec<_>, _>>()?;
    with_trips(conn, waybills).await
}

/// A status move, already checked; writes it and bumps the version.
#[derive(Debug, Clone)]
pub struct Change {
    pub status: Status,
    pub actual_start: Option<Timestamp>,
    pub actual_end: Option<Timestamp>,
    pub odometer_start: Option<i64>,
    pub odometer_end: Option<i64>,
    pub notes: Option<String>,
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    change: &Change,
) -> Result<Waybill, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE waybill SET status = $2,
                actual_start = COALESCE($3, actual_start), actual_end = COALESCE($4, actual_end),
                odometer_start = COALESCE($5, odometer_start), odometer_end = COALESCE($6, odometer_end),
                notes = COALESCE($7, notes), version = version + 1, updated_at = now()
         WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(change.status.as_str())
    .bind(change.actual_start.map(to_db))
    .bind(change.actual_end.map(to_db))
    .bind(change.odometer_start)
    .bind(change.odometer_end)
    .bind(&change.notes)
    .fetch_one(&mut *conn)
    .await?;
    let waybill = waybill_of(&row)?;
    Ok(with_trips(conn, vec![waybill]).await?.remove(0))
}

/// A stored first answer to an idempotency key.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub fingerprint: String,
    pub status_code: u16,
    pub response: Vec<u8>,
    pub waybill_id: Option<Uuid>,
}

/// Takes the key's transaction-scoped advisory lock; `false` when another request with
/// the key is in flight.
pub async fn lock_key(conn: &mut PgConnection, key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .fetch_one(conn)
        .await
}

pub async fn stored_answer(
    conn: &mut PgConnection,
    key: &str,
) -> Result<Option<StoredAnswer>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT fingerprint, status_code, response, waybill_id FROM idempotency_key WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(StoredAnswer {
            fingerprint: r.try_get("fingerprint")?,
            status_code: r.try_get::<i16, _>("status_code")? as u16,
            response: r.try_get("response")?,
            waybill_id: r.try_get("waybill_id")?,
        })
    })
    .transpose()
}

pub async fn store_answer(
    conn: &mut PgConnection,
    key: &str,
    answer: &StoredAnswer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO idempotency_key (key, fingerprint, status_code, response, waybill_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key)
    .bind(&answer.fingerprint)
    .bind(answer.status_code as i16)
    .bind(&answer.response)
    .bind(answer.waybill_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets idempotency keys older than `hours` (at least 24 are kept).
pub async fn expire_keys(pool: &sqlx::PgPool, hours: i32) -> Result<u64, sqlx::Error> {
    let hours = hours.max(24);
    let done = sqlx::query(
        "DELETE FROM idempotency_key WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(hours)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
