//! The feed data model the rest of the service works with, whatever the source (OTP 2
//! GraphQL, OTP 1 REST index, or a GTFS zip). These are also the shapes of the route API's
//! JSON answers, so field names follow DESIGN.md's contract.
//!
//! Ids are the GTFS ids *inside* a feed (`route_id`, `stop_id`, `trip_id`), never OTP's
//! `feedId:localId` form; adapters split OTP ids on the first `:`.

use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

/// One route, as listed by `GET /feeds/{gtfs_id}/routes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteSummary {
    /// GTFS `route_id` inside the feed (not OTP's `feedId:localId`).
    pub route_id: String,
    pub agency_id: Option<String>,
    pub short_name: Option<String>,
    pub long_name: Option<String>,
    /// GTFS `route_type` (0 tram, 1 subway, 2 rail, 3 bus, ... and extended types).
    #[serde(rename = "type")]
    pub route_type: i32,
    /// OTP's transport mode name (`BUS`, `RAIL`, `SUBWAY`, `TRAM`, ...), derived from
    /// `route_type` for GTFS zips with [`mode_of_route_type`].
    pub mode: String,
    /// Hex colour without `#`, as in GTFS (`0d0d0d`).
    #[schema(example = "0d0d0d")]
    pub color: Option<String>,
    /// Hex colour without `#`.
    #[schema(example = "ffffff")]
    pub text_color: Option<String>,
    /// GTFS `route_sort_order`; the list is sorted by it (missing last), then `route_id`.
    pub sort_order: Option<u32>,
}

impl RouteSummary {
    /// Where the route stands in every route list: by `sort_order`, routes without one
    /// last, then by `route_id`. Snapshots and OTP route indexes are kept in this order and
    /// the list API's cursor holds this key, so paging is right only because all of them
    /// use this one function.
    pub fn order_key(&self) -> (u64, &str) {
        (
            self.sort_order.map_or(u64::MAX, u64::from),
            self.route_id.as_str(),
        )
    }
}

/// Puts routes in list order ([`RouteSummary::order_key`]); stable, so rows with the same
/// key keep their order.
pub fn sort_routes(routes: &mut [RouteSummary]) {
    routes.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
}

/// A stop on a pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StopRef {
    pub stop_id: String,
    pub name: Option<String>,
    /// GTFS `stop_code`, the code shown to riders.
    pub code: Option<String>,
    /// WGS 84 latitude; `null` for a stop missing from `stops.txt`.
    pub lat: Option<f64>,
    /// WGS 84 longitude.
    pub lon: Option<f64>,
}

/// A distinct ordered stop sequence of a route, with the trips that run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Pattern {
    /// Stable within a feed version: OTP's pattern code, or for zips
    /// `{route_id}:{direction_id or x}:{n}` in order of first appearance.
    pub pattern_id: String,
    /// GTFS `direction_id` (0 or 1).
    #[schema(maximum = 1)]
    pub direction_id: Option<u8>,
    pub headsign: Option<String>,
    /// The stops in the order the trips call at them.
    pub stops: Vec<StopRef>,
    /// Trips that run this pattern.
    pub trip_count: usize,
}

/// A route with its patterns, as answered by `GET /feeds/{gtfs_id}/routes/{route_id}`:
/// the summary's fields, plus patterns and trip count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteDetail {
    #[serde(flatten)]
    pub summary: RouteSummary,
    pub patterns: Vec<Pattern>,
    /// Trips of the route, over all patterns.
    pub trip_count: usize,
}

/// A `frequencies.txt` window of a trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FrequencyWindow {
    /// After the service day's start: seconds in memory, `HH:MM:SS` in the API (hours may
    /// exceed 23).
    #[serde(serialize_with = "serialize_gtfs_time")]
    #[schema(value_type = String, pattern = r"^[0-9]{2,}:[0-5][0-9]:[0-5][0-9]$", example = "06:00:00")]
    pub start_time: u32,
    /// `HH:MM:SS`, as `start_time`.
    #[serde(serialize_with = "serialize_gtfs_time")]
    #[schema(value_type = String, pattern = r"^[0-9]{2,}:[0-5][0-9]:[0-5][0-9]$", example = "25:10:00")]
    pub end_time: u32,
    pub headway_secs: u32,
    /// `exact_times` = 1: schedule-based, vehicles leave exactly every `headway_secs`.
    pub exact_times: bool,
}

/// A trip, without its stop_times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TripInfo {
    pub trip_id: String,
    pub route_id: String,
    pub service_id: String,
    pub headsign: Option<String>,
    /// GTFS `direction_id` (0 or 1).
    #[schema(maximum = 1)]
    pub direction_id: Option<u8>,
    pub block_id: Option<String>,
    /// First departure (or arrival) after the service day's start: seconds in memory (may
    /// exceed 86400), `HH:MM:SS` in the API (hours past 23 for trips running past midnight,
    /// `25:10:00`). For a frequency-based trip, the times of its template run (see
    /// `frequencies`).
    #[serde(serialize_with = "serialize_gtfs_time")]
    #[schema(value_type = String, pattern = r"^[0-9]{2,}:[0-5][0-9]:[0-5][0-9]$", example = "07:15:00")]
    pub start_time: u32,
    /// Last arrival (or departure); `HH:MM:SS` in the API, as `start_time`.
    #[serde(serialize_with = "serialize_gtfs_time")]
    #[schema(value_type = String, pattern = r"^[0-9]{2,}:[0-5][0-9]:[0-5][0-9]$", example = "25:10:00")]
    pub end_time: u32,
    /// The trip's `frequencies.txt` windows; absent when it has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frequencies: Vec<FrequencyWindow>,
}

/// `HH:MM:SS` for seconds after the service day's start; hours go past 23 (`25:10:00`).
pub fn format_gtfs_time(secs: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn serialize_gtfs_time<S: Serializer>(secs: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_gtfs_time(*secs))
}

/// A feed as an OTP instance lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedInfo {
    pub gtfs_id: String,
    /// Agency ids (inside the feed) with their time zones, when the source says.
    pub agencies: Vec<AgencyInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgencyInfo {
    pub agency_id: Option<String>,
    pub name: String,
    pub timezone: Option<String>,
}

/// OTP 2's mode name for a GTFS `route_type`, basic and extended, as OTP 2 itself maps
/// them (`org.opentripplanner.gtfs.mapping.TransitModeMapper`), so a zip feed's routes
/// show the mode the same routes have in OTP: 100-199 rail, 200-299 coach, 300-499 rail
/// except 401-402 subway and 405 monorail, 500-699 subway, 700-799 bus, 800-899
/// trolleybus, 900-999 tram, 1000-1099 and 1200-1299 ferry, 1100-1199 airplane,
/// 1300-1399 gondola, 1400-1499 funicular, 1551-1560 carpool, 1500-1599 taxi, 1600-1699
/// bus. Where OTP has no mode (1700-1799, types it does not know) the route is a bus, the
/// GTFS default. One deliberate difference: OTP 2 refuses 1599 (its taxi range ends at
/// 1598, an off-by-one against the TPEG table's 1500-1599); here it is a taxi.
pub fn mode_of_route_type(route_type: i32) -> &'static str {
    match route_type {
        0 => "TRAM",
        1 => "SUBWAY",
        2 => "RAIL",
        3 => "BUS",
        4 => "FERRY",
        5 => "CABLE_CAR",
        6 => "GONDOLA",
        7 => "FUNICULAR",
        11 => "TROLLEYBUS",
        12 => "MONORAIL",
        100..=199 => "RAIL",
        200..=299 => "COACH",
        401..=402 => "SUBWAY",
        405 => "MONORAIL",
        300..=499 => "RAIL",
        500..=699 => "SUBWAY",
        700..=799 => "BUS",
        800..=899 => "TROLLEYBUS",
        900..=999 => "TRAM",
        1000..=1099 | 1200..=1299 => "FERRY",
        1100..=1199 => "AIRPLANE",
        1300..=1399 => "GONDOLA",
        1400..=1499 => "FUNICULAR",
        1551..=1560 => "CARPOOL",
        1500..=1599 => "TAXI",
        1600..=1699 => "BUS",
        _ => "BUS",
    }
}

/// GTFS `route_type` for an OTP mode name (the inverse of [`mode_of_route_type`] on the
/// basic types), for sources that give a mode but no type.
pub fn route_type_of_mode(mode: &str) -> i32 {
    match mode {
        "TRAM" => 0,
        "SUBWAY" => 1,
        "RAIL" => 2,
        "BUS" | "COACH" => 3,
        "FERRY" => 4,
        "CABLE_CAR" => 5,
        "GONDOLA" => 6,
        "FUNICULAR" => 7,
        "TROLLEYBUS" => 11,
        "MONORAIL" => 12,
        "AIRPLANE" => 1100,
        "TAXI" => 1500,
        "CARPOOL" => 1551,
        _ => 3,
    }
}

/// Splits OTP's `feedId:localId` into its two parts (on the first `:`; local ids may
/// contain more colons). `None` when there is no `:`.
pub fn split_otp_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
}

/// A date written exactly `YYYY-MM-DD` (jiff alone would also take `YYYYMMDD`).
pub fn parse_iso_date(text: &str) -> Option<jiff::civil::Date> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OTP 2's own mapping (TransitModeMapper) at every boundary of its ranges.
    #[test]
    fn route_types_map_to_the_modes_otp_2_gives_them() {
        let otp = [
            (0, "TRAM"),
            (3, "BUS"),
            (5, "CABLE_CAR"),
            (11, "TROLLEYBUS"),
            (12, "MONORAIL"),
            (100, "RAIL"),
            (199, "RAIL"),
            (200, "COACH"),
            (299, "COACH"),
            (300, "RAIL"),
            (400, "RAIL"),
            (401, "SUBWAY"),
            (402, "SUBWAY"),
            (403, "RAIL"),
            (404, "RAIL"),
            (405, "MONORAIL"),
            (499, "RAIL"),
            (500, "SUBWAY"),
            (699, "SUBWAY"),
            (700, "BUS"),
            (714, "BUS"),
            (800, "TROLLEYBUS"),
            (900, "TRAM"),
            (1000, "FERRY"),
            (1100, "AIRPLANE"),
            (1200, "FERRY"),
            (1300, "GONDOLA"),
            (1400, "FUNICULAR"),
            (1500, "TAXI"),
            (1510, "TAXI"),
            (1550, "TAXI"),
            (1551, "CARPOOL"),
            (1555, "CARPOOL"),
            (1560, "CARPOOL"),
            (1561, "TAXI"),
            (1598, "TAXI"),
            (1600, "BUS"),
        ];
        for (route_type, mode) in otp {
            assert_eq!(
                mode_of_route_type(route_type),
                mode,
                "route_type {route_type}"
            );
        }
        // Where OTP 2 has no mode (or refuses the type), the GTFS default and the TPEG range.
        assert_eq!(mode_of_route_type(1700), "BUS");
        assert_eq!(mode_of_route_type(42), "BUS");
        assert_eq!(mode_of_route_type(1599), "TAXI");
    }

    #[test]
    fn basic_modes_round_trip() {
        for route_type in [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 1100, 1500, 1551] {
            let mode = mode_of_route_type(route_type);
            assert_eq!(route_type_of_mode(mode), route_type, "{mode}");
        }
    }

    #[test]
    fn gtfs_times_format_past_midnight() {
        assert_eq!(format_gtfs_time(0), "00:00:00");
        assert_eq!(format_gtfs_time(8 * 3600 + 5 * 60 + 9), "08:05:09");
        assert_eq!(format_gtfs_time(86_400 + 15 * 60), "24:15:00");
        assert_eq!(format_gtfs_time(100 * 3600), "100:00:00");
    }
}
