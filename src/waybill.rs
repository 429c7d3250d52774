//! Waybills: the domain rules, apart from HTTP and SQL.
//!
//! A waybill is a vehicle's duty on one route for one service date: the trips it runs,
//! who drives, when it is planned to start and end, and what actually happened. This
//! module checks a new waybill against the feed snapshot ([`plan`]), decides which
//! status moves are allowed ([`Status::can_move_to`]) and checks a move's readings and
//! times against the waybill as stored ([`StatusChange::check`]). Persistence is in
//! [`crate::db::waybills`]; the HTTP side in [`crate::api::waybills`].

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

use crate::feed::snapshot::FeedSnapshot;

/// Limits on a waybill's text, exactly as the OpenAPI document states them (a test
/// compares): lengths in characters (JSON Schema's unit), and which characters.
pub mod limits {
    /// `vehicle_id`, `driver_id`, `number`: the operator's own ids.
    pub const ID: usize = 64;
    /// `gtfs_id`, `route_id` and each trip id: GTFS ids.
    pub const GTFS_ID: usize = 255;
    /// `notes`.
    pub const NOTES: usize = 2000;
    /// Trips on one waybill.
    pub const TRIPS: usize = 500;
    /// An id: no control character (U+0000-U+001F, U+007F), and not only blanks.
    pub const ID_PATTERN: &str =
        r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$";
    /// Notes: any text without NUL (PostgreSQL cannot store it).
    pub const NOTES_PATTERN: &str = r"^[^\u0000]*$";
}

/// `POST /waybills`' body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWaybill {
    /// The service date (`YYYY-MM-DD`) the trips run on.
    #[serde(deserialize_with = "iso_date")]
    #[schema(value_type = String, format = Date)]
    pub service_date: Date,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$"
    )]
    pub vehicle_id: String,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$"
    )]
    pub driver_id: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$"
    )]
    pub gtfs_id: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$"
    )]
    pub route_id: String,
    /// GTFS trip_ids of the route, running that date, not overlapping in time; each
    /// 1 to 255 characters, no control character, not only blanks; no trip twice.
    #[schema(schema_with = trip_ids_schema)]
    pub trip_ids: Vec<String>,
    /// The operator's own waybill number; unique.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$"
    )]
    pub number: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000]*$")]
    pub notes: Option<String>,
}

fn trip_ids_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(limits::GTFS_ID))
                .pattern(Some(limits::ID_PATTERN)),
        )
        .min_items(Some(1))
        .max_items(Some(limits::TRIPS))
        // A trip runs once per waybill: a list naming one twice is refused (422).
        .unique_items(true)
        .description(Some(
            "GTFS trip_ids of the route, running that date, not overlapping in time; each \
             1 to 255 characters, no control character, not only blanks; no trip twice.",
        ))
        .build()
}

/// Whether `value` is an id as [`limits::ID_PATTERN`] says, of at most `max` characters.
pub fn check_id(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    let chars = value.chars().count();
    if chars > max {
        return Err(Invalid(format!(
            "{field} has {chars} characters; at most {max}"
        )));
    }
    if value.chars().any(|c| c.is_control() && (c as u32) < 0x80) {
        return Err(Invalid(format!("{field} holds a control character")));
    }
    // ECMA-262's \s (the pattern's) is Unicode White_Space plus U+FEFF.
    if value.chars().all(|c| c.is_whitespace() || c == '\u{feff}') {
        return Err(Invalid(format!("{field} must not be empty or blank")));
    }
    Ok(())
}

/// Whether `value` is notes as [`limits::NOTES_PATTERN`] says.
pub fn check_notes(field: &str, value: &str) -> Result<(), Invalid> {
    let chars = value.chars().count();
    if chars > limits::NOTES {
        return Err(Invalid(format!(
            "{field} has {chars} characters; at most {}",
            limits::NOTES
        )));
    }
    if value.contains('\0') {
        return Err(Invalid(format!("{field} holds a NUL character")));
    }
    Ok(())
}

impl NewWaybill {
    /// The limits of the document on every field, before anything is looked up.
    pub fn check_fields(&self) -> Result<(), Invalid> {
        check_id("vehicle_id", &self.vehicle_id, limits::ID)?;
        check_id("driver_id", &self.driver_id, limits::ID)?;
        if let Some(number) = &self.number {
            check_id("number", number, limits::ID)?;
        }
        check_id("gtfs_id", &self.gtfs_id, limits::GTFS_ID)?;
        check_id("route_id", &self.route_id, limits::GTFS_ID)?;
        if self.trip_ids.is_empty() {
            return Err(Invalid("trip_ids must list at least one trip".into()));
        }
        if self.trip_ids.len() > limits::TRIPS {
            return Err(Invalid(format!(
                "trip_ids lists {} trips; at most {}",
                self.trip_ids.len(),
                limits::TRIPS
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.trip_ids.len());
        for (i, trip) in self.trip_ids.iter().enumerate() {
            check_id(&format!("trip_ids[{i}]"), trip, limits::GTFS_ID)?;
            // The document's uniqueItems, before the feed is looked up.
            if !seen.insert(trip.as_str()) {
                return Err(Invalid(format!(
                    "trip {trip:?} is listed twice (trip_ids[{i}])"
                )));
            }
        }
        if let Some(notes) = &self.notes {
            check_notes("notes", notes)?;
        }
        Ok(())
    }
}

fn iso_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
    let text = String::deserialize(d)?;
    crate::feed::model::parse_iso_date(&text).ok_or_else(|| {
        serde::de::Error::custom(format!("{text:?} is not a date of the form YYYY-MM-DD"))
    })
}

/// A waybill's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Issued,
    InProgress,
    Completed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Issued => "issued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "issued" => Some(Status::Issued),
            "in_progress" => Some(Status::InProgress),
            "completed" => Some(Status::Completed),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }

    /// issued → in_progress → completed; issued or in_progress → cancelled.
    pub fn can_move_to(self, next: Status) -> bool {
        matches!(
            (self, next),
            (Status::Issued, Status::InProgress)
                | (Status::InProgress, Status::Completed)
                | (Status::Issued | Status::InProgress, Status::Cancelled)
        )
    }
}

/// `PATCH /waybills/{id}`' body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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

/// What a status move is checked against: the waybill as it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub status: Status,
    pub actual_start: Option<Timestamp>,
    pub actual_end: Option<Timestamp>,
    pub odometer_start: Option<i64>,
    pub odometer_end: Option<i64>,
}

/// Why a status move is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The current status cannot move to the one asked for (a 409 for the client).
    #[error("{0}")]
    Move(String),
    /// Readings or times missing or inconsistent (a 422).
    #[error("{0}")]
    Invalid(Invalid),
}

impl StatusChange {
    /// Checks the move against the waybill as it is and says what to write: this change,
    /// with `actual_start` (starting) or `actual_end` (completing) set to `now` when the
    /// request leaves it out. Whatever the move, the readings and times the waybill ends
    /// up with (a value the request leaves out keeps the stored one) must agree: the
    /// database refuses an `odometer_end` below `odometer_start` (a CHECK), which would
    /// otherwise surface as a 500, and an end before the start is as wrong for times.
    pub fn check(&self, current: &Progress, now: Timestamp) -> Result<StatusChange, Refused> {
        if !current.status.can_move_to(self.status) {
            return Err(Refused::Move(format!(
                "a waybill cannot move from {} to {}",
                current.status.as_str(),
                self.status.as_str()
            )));
        }
        let invalid = |m: &str| Err(Refused::Invalid(Invalid(m.to_owned())));
        if self.odometer_start.is_some_and(|o| o < 0) || self.odometer_end.is_some_and(|o| o < 0) {
            return invalid("odometer readings cannot be negative");
        }
        let mut change = self.clone();
        match self.status {
            Status::InProgress => {
                if self.odometer_start.is_none() {
                    return invalid("starting a waybill needs odometer_start");
                }
                change.actual_start.get_or_insert(now);
            }
            Status::Completed => {
                let Some(end) = self.odometer_end else {
                    return invalid("completing a waybill needs odometer_end");
                };
                let start = self.odometer_start.or(current.odometer_start).unwrap_or(0);
                if end < start {
                    return invalid("odometer_end cannot be below odometer_start");
                }
                let actual_end = *change.actual_end.get_or_insert(now);
                if current.actual_start.is_some_and(|s| actual_end < s) {
                    return invalid("actual_end cannot be before actual_start");
                }
            }
            Status::Cancelled | Status::Issued => {}
        }
        let odometer_start = change.odometer_start.or(current.odometer_start);
        let odometer_end = change.odometer_end.or(current.odometer_end);
        if let (Some(start), Some(end)) = (odometer_start, odometer_end)
            && end < start
        {
            return invalid("odometer_end cannot be below odometer_start");
        }
        let actual_start = change.actual_start.or(current.actual_start);
        let actual_end = change.actual_end.or(current.actual_end);
        if let (Some(start), Some(end)) = (actual_start, actual_end)
            && end < start
        {
            return invalid("actual_end cannot be before actual_start");
        }
        Ok(change)
    }
}

/// One trip of a planned waybill.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTrip {
    pub sequence: i32,
    pub trip_id: String,
    /// GTFS seconds after the service day's start; may pass 24 h.
    pub start_seconds: u32,
    pub end_seconds: u32,
    pub planned_start: Timestamp,
    pub planned_end: Timestamp,
}

/// A new waybill checked against the feed: its trips in time order, with real times.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub feed_version: String,
    pub trips: Vec<PlannedTrip>,
    pub planned_start: Timestamp,
    pub planned_end: Timestamp,
}

/// Why a new waybill does not fit the feed (a 422 for the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks `req` against the feed and works out its times: the route exists; every trip
/// exists, belongs to the route and runs on the service date; no two trips overlap.
/// Times are GTFS times on the service date in the route's agency time zone (the service
/// day starts at "noon minus 12 h", which matters on daylight-saving days).
pub fn plan(snapshot: &FeedSnapshot, req: &NewWaybill) -> Result<Plan, Invalid> {
    let invalid = |m: String| Err(Invalid(m));
    for (field, value) in [
        ("vehicle_id", &req.vehicle_id),
        ("driver_id", &req.driver_id),
    ] {
        if value.trim().is_empty() {
            return invalid(format!("{field} must not be empty"));
        }
    }
    if req.number.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return invalid("number, when given, must not be empty".into());
    }
    let Some(route) = snapshot.route(&req.route_id) else {
        return invalid(format!(
            "route {:?} is not in feed {:?}",
            req.route_id, req.gtfs_id
        ));
    };
    if req.trip_ids.is_empty() {
        return invalid("trip_ids must list at least one trip".into());
    }
    let mut trips = Vec::with_capacity(req.trip_ids.len());
    for trip_id in &req.trip_ids {
        if req.trip_ids.iter().filter(|t| *t == trip_id).count() > 1 {
            return invalid(format!("trip {trip_id:?} is listed twice"));
        }
        let Some(trip) = snapshot.trip(trip_id) else {
            return invalid(format!("trip {trip_id:?} is not in feed {:?}", req.gtfs_id));
        };
        if trip.route_id != req.route_id {
            return invalid(format!(
                "trip {trip_id:?} belongs to route {:?}, not {:?}",
                trip.route_id, req.route_id
            ));
        }
        if !snapshot
            .calendar
            .is_active(&trip.service_id, req.service_date)
        {
            return invalid(format!(
                "trip {trip_id:?} does not run on {}",
                req.service_date
            ));
        }
        trips.push(trip);
    }
    trips.sort_by(|a, b| (a.start_time, &a.trip_id).cmp(&(b.start_time, &b.trip_id)));
    for pair in trips.windows(2) {
        if pair[1].start_time < pair[0].end_time {
            return invalid(format!(
                "trips {:?} and {:?} overlap in time",
                pair[0].trip_id, pair[1].trip_id
            ));
        }
    }
    let tz = agency_time_zone(snapshot, route.agency_id.as_deref());
    let day_start = service_day_start(req.service_date, &tz)
        .map_err(|e| Invalid(format!("service_date: {e}")))?;
    let at = |secs: u32| {
        day_start
            .checked_add(Span::new().seconds(i64::from(secs)))
            .map_err(|e| Invalid(format!("time out of range: {e}")))
    };
    let mut planned = Vec::with_capacity(trips.len());
    for (i, trip) in trips.iter().enumerate() {
        planned.push(PlannedTrip {
            sequence: i as i32 + 1,
            trip_id: trip.trip_id.clone(),
            start_seconds: trip.start_time,
            end_seconds: trip.end_time,
            planned_start: at(trip.start_time)?,
            planned_end: at(trip.end_time)?,
        });
    }
    let planned_start = planned[0].planned_start;
    let mut planned_end = planned
        .iter()
        .map(|t| t.planned_end)
        .max()
        .unwrap_or(planned_start);
    if planned_end <= planned_start {
        // A single trip with no duration still occupies its minute.
        planned_end = planned_start + Span::new().seconds(60);
    }
    Ok(Plan {
        feed_version: snapshot.version.clone(),
        trips: planned,
        planned_start,
        planned_end,
    })
}

/// The time zone of the route's agency, else of the feed's first agency, else UTC.
fn agency_time_zone(snapshot: &FeedSnapshot, agency_id: Option<&str>) -> TimeZone {
    let named = |name: &str| TimeZone::get(name).ok();
    snapshot
        .agencies
        .iter()
        .find(|a| agency_id.is_some() && a.agency_id.as_deref() == agency_id)
        .or_else(|| snapshot.agencies.first())
        .and_then(|a| a.timezone.as_deref())
        .and_then(named)
        .unwrap_or(TimeZone::UTC)
}

/// GTFS's service-day origin: noon minus 12 hours, local time.
pub fn service_day_start(date: Date, tz: &TimeZone) -> Result<Timestamp, jiff::Error> {
    let noon = date.at(12, 0, 0, 0).to_zoned(tz.clone())?;
    Ok(noon.timestamp() - Span::new().hours(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_moves() {
        use Status::*;
        assert!(Issued.can_move_to(InProgress));
        assert!(InProgress.can_move_to(Completed));
        assert!(Issued.can_move_to(Cancelled));
        assert!(InProgress.can_move_to(Cancelled));
        for (from, to) in [
            (Issued, Completed),
            (Completed, Cancelled),
            (Cancelled, Issued),
            (InProgress, Issued),
            (Issued, Issued),
        ] {
            assert!(!from.can_move_to(to), "{from:?} -> {to:?}");
        }
        assert_eq!(Status::parse("in_progress"), Some(InProgress));
        assert_eq!(Status::parse("done"), None);
    }

    #[test]
    fn the_service_day_starts_at_noon_minus_twelve_hours() {
        let la = TimeZone::get("America/Los_Angeles").unwrap();
        // An ordinary day: local midnight, 07:00 UTC in summer.
        let d = service_day_start(jiff::civil::date(2018, 6, 1), &la).unwrap();
        assert_eq!(d.to_string(), "2018-06-01T07:00:00Z");
        // The spring-forward day (2018-03-11): noon PDT minus 12 h is 23:00 PST the day before.
        let d = service_day_start(jiff::civil::date(2018, 3, 11), &la).unwrap();
        assert_eq!(d.to_string(), "2018-03-11T07:00:00Z");
        assert_eq!(d.to_zoned(la).hour(), 23);
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
    fn status_changes_are_checked_against_the_waybill() {
        let now: Timestamp = "2026-12-01T08:00:00Z".parse().unwrap();
        let issued = Progress {
            status: Status::Issued,
            actual_start: None,
            actual_end: None,
            odometer_start: None,
            odometer_end: None,
        };
        let change = |json: &str| serde_json::from_str::<StatusChange>(json).unwrap();
        let started = change(r#"{"status":"in_progress","odometer_start":100}"#)
            .check(&issued, now)
            .unwrap();
        assert_eq!(started.actual_start, Some(now), "defaults to now");
        let refused =
            |current: &Progress, json: &str| change(json).check(current, now).unwrap_err();
        assert!(matches!(
            refused(&issued, r#"{"status":"completed","odometer_end":5}"#),
            Refused::Move(_)
        ));
        assert_eq!(
            refused(&issued, r#"{"status":"in_progress"}"#).to_string(),
            "starting a waybill needs odometer_start"
        );
        let running = Progress {
            status: Status::InProgress,
            odometer_start: Some(100),
            actual_start: Some(now),
            ..issued
        };
        assert_eq!(
            refused(&running, r#"{"status":"completed","odometer_end":99}"#).to_string(),
            "odometer_end cannot be below odometer_start"
        );
        assert_eq!(
            refused(&running, r#"{"status":"cancelled","odometer_end":-1}"#).to_string(),
            "odometer readings cannot be negative"
        );
        let done = change(r#"{"status":"completed","odometer_end":150}"#)
            .check(&running, now)
            .unwrap();
        assert_eq!((done.odometer_end, done.actual_end), (Some(150), Some(now)));
    }
}
