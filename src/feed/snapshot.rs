//! An immutable in-memory snapshot of one GTFS feed, built from the bytes of its zip.
//!
//! [`FeedSnapshot::from_zip_bytes`] parses the zip with gtfs-structures' raw reader
//! ([`gtfs_structures::RawGtfs`]: one `Vec` of rows per file) and keeps only what the
//! service answers with: agencies, route summaries, every route's patterns (precomputed),
//! trips with their first and last times and frequencies, and the service calendar.
//! `stop_times.txt` is folded into patterns and trip times and then dropped.
//!
//! Why the raw reader rather than [`gtfs_structures::Gtfs`]: `Gtfs` re-links every
//! stop_time to an `Arc<Stop>`, converts files this service never uses (fares, shapes,
//! pathways, levels...) and refuses the whole feed when one of those is broken. Reading
//! raw, this module validates only the files it uses, skips `shapes.txt` (the largest file
//! of many feeds) and does its grouping on compact integer records, so building a snapshot
//! costs less than `Gtfs::from_reader` alone on the same zip.
//!
//! What is lenient and what is not:
//!
//! - a missing required file (`agency.txt`, `routes.txt`, `stops.txt`, `trips.txt`,
//!   `stop_times.txt`), a corrupt zip, or a row that does not parse in one of the files used
//!   here is a [`FeedError`] naming the file, line and column when known;
//! - a broken optional file this service does not use (fares, shapes, transfers...) is
//!   logged and ignored;
//! - dangling references are logged (one warning per feed) and handled: stop_times or
//!   frequencies of unknown trips are dropped; a stop_id missing from `stops.txt` still
//!   appears in patterns, without name or position; trips of unknown routes, and trips
//!   without stop_times or without any time, are left out and counted in
//!   [`FeedCounts::skipped_trips`].
//!
//! Times are seconds after the start of the service day ("noon minus 12h"), so a trip
//! leaving at `25:10:00` has `start_time` 90600 and belongs to the service date it
//! started from; [`format_gtfs_time`] writes them back in GTFS form.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use gtfs_structures::{
    Agency, DirectionType, ExactTimes, GtfsReader, RawFrequency, RawGtfs, RawStopTime, RawTrip,
    Route, RouteType, Stop,
};
use jiff::civil::Date;
use serde::{Serialize, Serializer};

use super::calendar::ServiceCalendar;
use super::model::{
    AgencyInfo, Pattern, RouteDetail, RouteSummary, StopRef, mode_of_route_type, sort_routes,
};

/// A copy of the zip with every CSV row shorter than its header padded with empty
/// fields, and how many rows were padded; `None` when no row is short (or the zip cannot be
/// read, in which case the original error stands).
fn pad_short_rows(zip_bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).ok()?;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut padded = 0;
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).ok()?;
        let name = member.name().to_owned();
        let mut data = Vec::new();
        member.read_to_end(&mut data).ok()?;
        if name.ends_with(".txt") {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .has_headers(false)
                .from_reader(&data[..]);
            let mut writer = csv::Writer::from_writer(Vec::new());
            let mut width = None;
            for record in reader.records() {
                let mut fields: Vec<String> = record.ok()?.iter().map(str::to_owned).collect();
                let width = *width.get_or_insert(fields.len());
                if fields.len() < width {
                    padded += 1;
                    fields.resize(width, String::new());
                }
                writer.write_record(&fields).ok()?;
            }
            data = writer.into_inner().ok()?;
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .ok()?;
        out.write_all(&data).ok()?;
    }
    let bytes = out.finish().ok()?.into_inner();
    (padded > 0).then_some((bytes, padded))
}

/// Why a feed could not be turned into a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The bytes are not a zip archive gtfs-structures can open.
    #[error("not a readable zip archive: {0}")]
    Zip(String),
    /// Required GTFS files are absent from the archive.
    #[error("required file(s) missing from the feed: {}", .0.join(", "))]
    MissingFiles(Vec<String>),
    /// A file could not be parsed as CSV or a row did not fit its GTFS columns.
    #[error("{file}{}: {detail}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Csv {
        file: String,
        /// 1-based line in the file (the header is line 1), when the parser knows it.
        line: Option<u64>,
        detail: String,
    },
    /// Any other reason gtfs-structures gave, with its whole error chain.
    #[error("invalid GTFS feed: {0}")]
    Invalid(String),
}

impl FeedError {
    /// Translates a gtfs-structures error. Its own messages are terse ("impossible to read
    /// csv file 'x'"); the useful part is in `source()`, so the chain is folded in.
    fn from_gtfs(err: gtfs_structures::Error) -> Self {
        use gtfs_structures::Error as E;
        match err {
            E::Zip(e) => FeedError::Zip(e.to_string()),
            E::MissingFile(file) => FeedError::MissingFiles(vec![file]),
            E::CSVError {
                file_name,
                source,
                line_in_error,
            } => {
                let line = source.position().map(|p| p.line());
                let text = source.to_string();
                // "CSV deserialize error: record 3 (line: 4, byte: 120): field 5: invalid
                // digit found in string": keep what follows the position, and name the column.
                let mut detail = match text.split_once("): ") {
                    Some((head, rest)) if head.contains("(line: ") => rest.to_owned(),
                    _ => text,
                };
                if let Some(row) = &line_in_error {
                    if let Some((field, rest)) = detail
                        .strip_prefix("field ")
                        .and_then(|d| d.split_once(": "))
                        .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)))
                        && let Some(column) = row.headers.get(field)
                    {
                        detail = format!("column {column}: {rest}");
                    }
                    let mut values = row.values.join(",");
                    if values.len() > 200 {
                        let cut = (0..=200).rev().find(|&i| values.is_char_boundary(i));
                        values.truncate(cut.unwrap_or(0));
                        values.push_str("...");
                    }
                    detail = format!(
                        "{detail} (row has {} fields, header {}: {values})",
                        row.values.len(),
                        row.headers.len()
                    );
                }
                FeedError::Csv {
                    file: file_name,
                    line,
                    detail,
                }
            }
            E::NamedFileIO { file_name, source } => FeedError::Csv {
                file: file_name,
                line: None,
                detail: format!("cannot be read: {source}"),
            },
            other => FeedError::Invalid(error_chain(&other)),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Row counts of the feed's files (rows, not distinct ids), plus what the snapshot derived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FeedCounts {
    pub agencies: usize,
    pub routes: usize,
    pub stops: usize,
    pub trips: usize,
    pub stop_times: usize,
    /// Rows of `calendar.txt`.
    pub calendar: usize,
    /// Rows of `calendar_dates.txt`.
    pub calendar_dates: usize,
    pub frequencies: usize,
    /// Patterns over all routes.
    pub patterns: usize,
    /// Trips left out of the snapshot: no stop_times, no times at all, or an unknown route.
    pub skipped_trips: usize,
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

/// One feed, immutable once built; share it behind an `Arc`.
pub struct FeedSnapshot {
    pub gtfs_id: String,
    /// Given by the caller: the sha256 (hex) of the zip.
    pub version: String,
    /// Given by the caller: where the zip came from (URL or path).
    pub source: String,
    pub agencies: Vec<AgencyInfo>,
    /// Sorted by `sort_order` (routes without one last), then `route_id`.
    pub routes: Vec<RouteSummary>,
    /// `route_id` -> index in `routes` (and in `route_trips`).
    route_index: HashMap<String, usize>,
    /// Every route, patterns precomputed.
    pub route_details: HashMap<String, RouteDetail>,
    /// All kept trips; each route's trips are contiguous and sorted by
    /// (`start_time`, `trip_id`), so a route's trips are a slice, not a list of ids.
    trips: Vec<TripInfo>,
    /// `trip_id` -> index in `trips`.
    trip_index: HashMap<String, u32>,
    /// Parallel to `routes`: the range of `trips` holding that route's trips.
    route_trips: Vec<Range<u32>>,
    pub calendar: ServiceCalendar,
    pub counts: FeedCounts,
    /// Estimate of the heap this snapshot holds (strings plus vec and map capacity).
    pub approx_bytes: usize,
}

impl fmt::Debug for FeedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedSnapshot")
            .field("gtfs_id", &self.gtfs_id)
            .field("version", &self.version)
            .field("source", &self.source)
            .field("counts", &self.counts)
            .field("approx_bytes", &self.approx_bytes)
            .finish_non_exhaustive()
    }
}

/// The text a panic carried (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

impl FeedSnapshot {
    /// Parses a GTFS zip and builds the snapshot. CPU-bound (hundreds of milliseconds for a
    /// large feed): call it from `spawn_blocking`.
    pub fn from_zip_bytes(
        gtfs_id: &str,
        version: &str,
        source: &str,
        bytes: &[u8],
    ) -> Result<Self, FeedError> {
        let read = |bytes: &[u8]| {
            // gtfs-structures 0.52 panics on some malformed values: a 6-byte route_color
            // that is not ASCII (`parse_color` slices inside a character), an hour of
            // 1193047 or more (`parse_time` overflows u32; debug builds panic). That is this
            // feed's error, not the process's.
            let raw = std::panic::catch_unwind(|| {
                GtfsReader::default()
                    .read_shapes(false)
                    .raw()
                    .read_from_reader(std::io::Cursor::new(bytes))
            })
            .map_err(|panic| {
                FeedError::Invalid(format!(
                    "the GTFS reader failed on a malformed value: {}",
                    panic_message(&*panic).chars().take(300).collect::<String>()
                ))
            })?
            .map_err(FeedError::from_gtfs)?;
            Builder::new(gtfs_id).build(raw)
        };
        let parts = match read(bytes) {
            // gtfs-structures refuses rows with fewer fields than the header, which real
            // feeds have (sample-feed's stop_times): pad them and read again.
            Err(err @ FeedError::Csv { .. }) => match pad_short_rows(bytes) {
                Some((padded, rows)) => {
                    tracing::warn!(
                        gtfs_id,
                        rows,
                        "feed has CSV rows shorter than their header; padded them with empty fields"
                    );
                    read(&padded)?
                }
                None => return Err(err),
            },
            other => other?,
        };
        Ok({
            let mut snapshot = FeedSnapshot {
                gtfs_id: gtfs_id.to_owned(),
                version: version.to_owned(),
                source: source.to_owned(),
                agencies: parts.agencies,
                routes: parts.routes,
                route_index: parts.route_index,
                route_details: parts.route_details,
                trips: parts.trips,
                trip_index: parts.trip_index,
                route_trips: parts.route_trips,
                calendar: parts.calendar,
                counts: parts.counts,
                approx_bytes: 0,
            };
            snapshot.approx_bytes = snapshot.estimate_heap_bytes();
            snapshot
        })
    }

    pub fn route(&self, route_id: &str) -> Option<&RouteSummary> {
        self.route_index.get(route_id).map(|&i| &self.routes[i])
    }

    pub fn route_detail(&self, route_id: &str) -> Option<&RouteDetail> {
        self.route_details.get(route_id)
    }

    pub fn trip(&self, trip_id: &str) -> Option<&TripInfo> {
        self.trip_index
            .get(trip_id)
            .map(|&i| &self.trips[i as usize])
    }

    /// A route's trips sorted by `start_time`, then `trip_id`; empty for an unknown route.
    pub fn trips_of_route(&self, route_id: &str) -> impl Iterator<Item = &TripInfo> {
        self.route_trip_slice(route_id).iter()
    }

    /// The route's trips running on service date `date` (calendar.txt weekdays and range,
    /// calendar_dates.txt exceptions), sorted by `start_time`, then `trip_id`. Trips after
    /// midnight (`start_time` >= 24:00:00) belong to the date they start from.
    pub fn trips_on(&self, route_id: &str, date: Date) -> Vec<&TripInfo> {
        // Trips of a route share a handful of services: remember each answer.
        let mut known: Vec<(&str, bool)> = Vec::new();
        self.route_trip_slice(route_id)
            .iter()
            .filter(|trip| {
                if let Some(&(_, active)) = known.iter().find(|(s, _)| *s == trip.service_id) {
                    return active;
                }
                let active = self.calendar.is_active(&trip.service_id, date);
                known.push((&trip.service_id, active));
                active
            })
            .collect()
    }

    fn route_trip_slice(&self, route_id: &str) -> &[TripInfo] {
        match self.route_index.get(route_id) {
            Some(&i) => {
                let r = &self.route_trips[i];
                &self.trips[r.start as usize..r.end as usize]
            }
            None => &[],
        }
    }

    fn estimate_heap_bytes(&self) -> usize {
        let agencies = vec_bytes(&self.agencies)
            + self
                .agencies
                .iter()
                .map(|a| opt_bytes(&a.agency_id) + a.name.capacity() + opt_bytes(&a.timezone))
                .sum::<usize>();
        let routes = vec_bytes(&self.routes) + self.routes.iter().map(summary_bytes).sum::<usize>();
        let route_index = map_bytes(&self.route_index)
            + self.route_index.keys().map(String::capacity).sum::<usize>();
        let details = map_bytes(&self.route_details)
            + self
                .route_details
                .iter()
                .map(|(id, d)| id.capacity() + detail_bytes(d))
                .sum::<usize>();
        let trips = vec_bytes(&self.trips) + self.trips.iter().map(trip_bytes).sum::<usize>();
        let trip_index = map_bytes(&self.trip_index)
            + self.trip_index.keys().map(String::capacity).sum::<usize>();
        self.gtfs_id.capacity()
            + self.version.capacity()
            + self.source.capacity()
            + agencies
            + routes
            + route_index
            + details
            + trips
            + trip_index
            + vec_bytes(&self.route_trips)
            + self.calendar.approx_bytes()
    }
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// hashbrown: one slot of (K, V) plus one control byte per bucket.
fn map_bytes<K, V>(m: &HashMap<K, V>) -> usize {
    m.capacity() * (std::mem::size_of::<(K, V)>() + 1)
}

fn opt_bytes(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::capacity)
}

fn summary_bytes(s: &RouteSummary) -> usize {
    s.route_id.capacity()
        + opt_bytes(&s.agency_id)
        + opt_bytes(&s.short_name)
        + opt_bytes(&s.long_name)
        + s.mode.capacity()
        + opt_bytes(&s.color)
        + opt_bytes(&s.text_color)
}

fn detail_bytes(d: &RouteDetail) -> usize {
    summary_bytes(&d.summary)
        + vec_bytes(&d.patterns)
        + d.patterns
            .iter()
            .map(|p| {
                p.pattern_id.capacity()
                    + opt_bytes(&p.headsign)
                    + vec_bytes(&p.stops)
                    + p.stops
                        .iter()
                        .map(|s| s.stop_id.capacity() + opt_bytes(&s.name) + opt_bytes(&s.code))
                        .sum::<usize>()
            })
            .sum::<usize>()
}

fn trip_bytes(t: &TripInfo) -> usize {
    t.trip_id.capacity()
        + t.route_id.capacity()
        + t.service_id.capacity()
        + opt_bytes(&t.headsign)
        + opt_bytes(&t.block_id)
        + vec_bytes(&t.frequencies)
}

/// The snapshot's parts, before the caller's ids are attached.
struct Parts {
    agencies: Vec<AgencyInfo>,
    routes: Vec<RouteSummary>,
    route_index: HashMap<String, usize>,
    route_details: HashMap<String, RouteDetail>,
    trips: Vec<TripInfo>,
    trip_index: HashMap<String, u32>,
    route_trips: Vec<Range<u32>>,
    calendar: ServiceCalendar,
    counts: FeedCounts,
}

/// Routes and trips, the part of [`Parts`] built from routes, stops, trips and stop_times.
struct Network {
    routes: Vec<RouteSummary>,
    route_index: HashMap<String, usize>,
    route_details: HashMap<String, RouteDetail>,
    trips: Vec<TripInfo>,
    trip_index: HashMap<String, u32>,
    route_trips: Vec<Range<u32>>,
}

/// No time given (stop_times fields are optional except at the ends of a trip).
const NO_TIME: u32 = u32::MAX;

/// A stop_time reduced to what the snapshot needs: 16 bytes instead of ~150 plus strings.
#[derive(Clone, Copy)]
struct StopEvent {
    sequence: u32,
    stop: u32,
    arrival: u32,
    departure: u32,
}

/// A trip's place while patterns are worked out.
struct TripPlan {
    /// Index in the raw trips.
    raw: u32,
    start: u32,
    end: u32,
}

/// A pattern while it is being built.
struct PatternAcc<'a> {
    direction: Option<u8>,
    number: u32,
    stops: &'a [u32],
    trip_count: usize,
    headsigns: HashMap<&'a str, usize>,
}

struct Builder<'a> {
    gtfs_id: &'a str,
    /// Problems that are tolerated, reported in one warning at the end.
    notes: Vec<String>,
}

impl<'a> Builder<'a> {
    fn new(gtfs_id: &'a str) -> Self {
        Builder {
            gtfs_id,
            notes: Vec::new(),
        }
    }

    fn build(mut self, raw: RawGtfs) -> Result<Parts, FeedError> {
        let RawGtfs {
            calendar,
            calendar_dates,
            stops,
            routes,
            trips,
            agencies,
            frequencies,
            stop_times,
            shapes,
            fare_attributes,
            fare_rules,
            fare_products,
            fare_media,
            rider_categories,
            transfers,
            pathways,
            levels,
            feed_info,
            translations,
            ticketing_deep_links,
            ticketing_identifiers,
            attributions,
            licenses,
            ..
        } = raw;

        // Files this service does not use: a broken one is noted, not fatal.
        let unused = [
            ("shapes.txt", shapes.map(|r| r.map(drop))),
            ("fare_attributes.txt", fare_attributes.map(|r| r.map(drop))),
            ("fare_rules.txt", fare_rules.map(|r| r.map(drop))),
            ("fare_products.txt", fare_products.map(|r| r.map(drop))),
            ("fare_media.txt", fare_media.map(|r| r.map(drop))),
            (
                "rider_categories.txt",
                rider_categories.map(|r| r.map(drop)),
            ),
            ("transfers.txt", transfers.map(|r| r.map(drop))),
            ("pathways.txt", pathways.map(|r| r.map(drop))),
            ("levels.txt", levels.map(|r| r.map(drop))),
            ("feed_info.txt", feed_info.map(|r| r.map(drop))),
            ("translations.txt", translations.map(|r| r.map(drop))),
            (
                "ticketing_deep_links.txt",
                ticketing_deep_links.map(|r| r.map(drop)),
            ),
            (
                "ticketing_identifiers.txt",
                ticketing_identifiers.map(|r| r.map(drop)),
            ),
            ("attributions.txt", attributions.map(|r| r.map(drop))),
            ("licenses.txt", licenses.map(|r| r.map(drop))),
        ];
        for (file, result) in unused {
            if let Some(Err(e)) = result {
                self.notes.push(format!(
                    "ignored unreadable {file} (not used here): {}",
                    FeedError::from_gtfs(e)
                ));
            }
        }

        // Every missing required file at once, then the first unreadable one.
        let missing: Vec<String> = [
            ("agency.txt", is_missing(&agencies)),
            ("routes.txt", is_missing(&routes)),
            ("stops.txt", is_missing(&stops)),
            ("trips.txt", is_missing(&trips)),
            ("stop_times.txt", is_missing(&stop_times)),
        ]
        .into_iter()
        .filter(|(_, missing)| *missing)
        .map(|(file, _)| file.to_owned())
        .collect();
        if !missing.is_empty() {
            return Err(FeedError::MissingFiles(missing));
        }
        let agencies = agencies.map_err(FeedError::from_gtfs)?;
        let routes = routes.map_err(FeedError::from_gtfs)?;
        let stops = stops.map_err(FeedError::from_gtfs)?;
        let trips = trips.map_err(FeedError::from_gtfs)?;
        let stop_times = stop_times.map_err(FeedError::from_gtfs)?;
        let frequencies = optional(frequencies)?;
        let calendar = optional(calendar)?;
        let calendar_dates = optional(calendar_dates)?;
        if calendar.is_empty() && calendar_dates.is_empty() {
            self.notes
                .push("no calendar.txt or calendar_dates.txt rows: no trip ever runs".to_owned());
        }

        let mut counts = FeedCounts {
            agencies: agencies.len(),
            routes: routes.len(),
            stops: stops.len(),
            trips: trips.len(),
            stop_times: stop_times.len(),
            calendar: calendar.len(),
            calendar_dates: calendar_dates.len(),
            frequencies: frequencies.len(),
            patterns: 0,
            skipped_trips: 0,
        };

        let agencies = agencies.into_iter().map(agency_info).collect();
        let calendar = ServiceCalendar::new(calendar, calendar_dates);
        let network =
            self.build_network(routes, stops, trips, stop_times, frequencies, &mut counts);
        self.report(&counts);
        Ok(Parts {
            agencies,
            routes: network.routes,
            route_index: network.route_index,
            route_details: network.route_details,
            trips: network.trips,
            trip_index: network.trip_index,
            route_trips: network.route_trips,
            calendar,
            counts,
        })
    }

    fn build_network(
        &mut self,
        routes: Vec<Route>,
        stops: Vec<Stop>,
        raw_trips: Vec<RawTrip>,
        stop_times: Vec<RawStopTime>,
        frequencies: Vec<RawFrequency>,
        counts: &mut FeedCounts,
    ) -> Network {
        // Routes in their final order, and an index to find them by id.
        let mut routes: Vec<RouteSummary> = routes.into_iter().map(route_summary).collect();
        // A duplicated route_id (invalid, rare) keeps its last row, as gtfs-structures does:
        // a stable sort by id keeps file order within an id; reversed, dedup keeps the last.
        let rows = routes.len();
        routes.sort_by(|a, b| a.route_id.cmp(&b.route_id));
        routes.reverse();
        routes.dedup_by(|a, b| a.route_id == b.route_id);
        if routes.len() < rows {
            self.notes.push(format!(
                "{} duplicate route_id rows in routes.txt ignored",
                rows - routes.len()
            ));
        }
        sort_routes(&mut routes);
        let route_index: HashMap<String, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.route_id.clone(), i))
            .collect();

        // Stops by id; ids that stop_times use but stops.txt lacks are numbered after them.
        let mut stop_index: HashMap<&str, u32> = HashMap::with_capacity(stops.len());
        for (i, s) in stops.iter().enumerate() {
            stop_index.insert(s.id.as_str(), i as u32);
        }
        let mut unknown_stops: Vec<String> = Vec::new();
        let mut unknown_stop_index: HashMap<String, u32> = HashMap::new();

        // Trips by id. A duplicated trip_id resolves to its last row, so the earlier rows
        // get no stop_times and are left out below.
        let mut trip_index_raw: HashMap<&str, u32> = HashMap::with_capacity(raw_trips.len());
        for (i, t) in raw_trips.iter().enumerate() {
            trip_index_raw.insert(t.id.as_str(), i as u32);
        }
        if trip_index_raw.len() < raw_trips.len() {
            self.notes.push(format!(
                "{} duplicate trip_id rows in trips.txt",
                raw_trips.len() - trip_index_raw.len()
            ));
        }

        // stop_times -> compact events grouped by trip (counting sort), then by sequence.
        let mut trip_of_event: Vec<u32> = Vec::with_capacity(stop_times.len());
        let mut per_trip = vec![0u32; raw_trips.len() + 1];
        let mut orphan_stop_times = 0usize;
        let mut events_unsorted: Vec<StopEvent> = Vec::with_capacity(stop_times.len());
        for st in &stop_times {
            let Some(&trip) = trip_index_raw.get(st.trip_id.as_str()) else {
                orphan_stop_times += 1;
                continue;
            };
            let stop = match stop_index.get(st.stop_id.as_str()) {
                Some(&s) => s,
                None => *unknown_stop_index
                    .entry(st.stop_id.clone())
                    .or_insert_with(|| {
                        unknown_stops.push(st.stop_id.clone());
                        (stops.len() + unknown_stops.len() - 1) as u32
                    }),
            };
            per_trip[trip as usize + 1] += 1;
            trip_of_event.push(trip);
            events_unsorted.push(StopEvent {
                sequence: st.stop_sequence,
                stop,
                arrival: st.arrival_time.unwrap_or(NO_TIME),
                departure: st.departure_time.unwrap_or(NO_TIME),
            });
        }
        // The rows are done with: free them before building anything else.
        drop(stop_times);
        drop(unknown_stop_index);
        if orphan_stop_times > 0 {
            self.notes.push(format!(
                "{orphan_stop_times} stop_times rows of unknown trips dropped"
            ));
        }
        if !unknown_stops.is_empty() {
            self.notes.push(format!(
                "{} stop_id(s) used in stop_times.txt but missing from stops.txt (first: {})",
                unknown_stops.len(),
                unknown_stops[0]
            ));
        }
        for i in 1..per_trip.len() {
            per_trip[i] += per_trip[i - 1];
        }
        // per_trip[t]..per_trip[t + 1] is trip t's slice of `events`.
        let mut cursor = per_trip.clone();
        let mut events = vec![
            StopEvent {
                sequence: 0,
                stop: 0,
                arrival: NO_TIME,
                departure: NO_TIME,
            };
            events_unsorted.len()
        ];
        for (e, &t) in events_unsorted.iter().zip(&trip_of_event) {
            let slot = &mut cursor[t as usize];
            events[*slot as usize] = *e;
            *slot += 1;
        }
        drop(events_unsorted);
        drop(trip_of_event);
        drop(cursor);
        let stop_seq: Vec<u32> = {
            for t in 0..raw_trips.len() {
                let slice = &mut events[per_trip[t] as usize..per_trip[t + 1] as usize];
                if !slice.is_sorted_by_key(|e| e.sequence) {
                    slice.sort_by_key(|e| e.sequence);
                }
            }
            events.iter().map(|e| e.stop).collect()
        };

        // Frequencies by trip.
        let mut windows: Vec<(u32, FrequencyWindow)> = Vec::with_capacity(frequencies.len());
        let mut orphan_frequencies = 0usize;
        for f in &frequencies {
            match trip_index_raw.get(f.trip_id.as_str()) {
                Some(&t) => windows.push((t, frequency_window(f))),
                None => orphan_frequencies += 1,
            }
        }
        if orphan_frequencies > 0 {
            self.notes.push(format!(
                "{orphan_frequencies} frequencies rows of unknown trips dropped"
            ));
        }
        windows.sort_by_key(|(t, w)| (*t, w.start_time));
        let mut trip_windows: Vec<Vec<FrequencyWindow>> = vec![Vec::new(); raw_trips.len()];
        for (t, w) in windows {
            trip_windows[t as usize].push(w);
        }

        // Trips grouped by route, each group in trip_id order (pattern numbering order).
        let mut by_route: Vec<Vec<u32>> = vec![Vec::new(); routes.len()];
        let mut no_route = 0usize;
        let mut no_times = 0usize;
        let mut no_stop_times = 0usize;
        for (i, t) in raw_trips.iter().enumerate() {
            let Some(&r) = route_index.get(t.route_id.as_str()) else {
                no_route += 1;
                continue;
            };
            let slice = &events[per_trip[i] as usize..per_trip[i + 1] as usize];
            if slice.is_empty() {
                no_stop_times += 1;
            } else if trip_times(slice).is_none() {
                no_times += 1;
            } else {
                by_route[r].push(i as u32);
            }
        }
        for (n, what) in [
            (no_route, "of unknown routes"),
            (no_stop_times, "without stop_times"),
            (no_times, "without any arrival or departure time"),
        ] {
            if n > 0 {
                self.notes.push(format!("{n} trips {what} left out"));
            }
        }
        counts.skipped_trips = no_route + no_stop_times + no_times;

        // Patterns per route, numbered per direction in order of first appearance.
        let stop_refs = |i: u32| -> StopRef {
            match stops.get(i as usize) {
                Some(s) => StopRef {
                    stop_id: s.id.clone(),
                    name: s.name.clone(),
                    code: s.code.clone(),
                    lat: s.latitude,
                    lon: s.longitude,
                },
                None => StopRef {
                    stop_id: unknown_stops[i as usize - stops.len()].clone(),
                    name: None,
                    code: None,
                    lat: None,
                    lon: None,
                },
            }
        };
        let mut plans: Vec<Vec<TripPlan>> = Vec::with_capacity(routes.len());
        let mut route_patterns: Vec<Vec<Pattern>> = Vec::with_capacity(routes.len());
        for (r, group) in by_route.iter_mut().enumerate() {
            group
                .sort_unstable_by(|&a, &b| raw_trips[a as usize].id.cmp(&raw_trips[b as usize].id));
            let mut accs: Vec<PatternAcc> = Vec::new();
            let mut lookup: HashMap<(Option<u8>, &[u32]), u32> = HashMap::new();
            let mut next_number: [u32; 3] = [0; 3];
            let mut route_plans = Vec::with_capacity(group.len());
            for &i in group.iter() {
                let t = &raw_trips[i as usize];
                let range = per_trip[i as usize] as usize..per_trip[i as usize + 1] as usize;
                let (start, end) = trip_times(&events[range.clone()]).unwrap_or_default();
                let direction = t.direction_id.map(direction_number);
                let key = (direction, &stop_seq[range]);
                let pattern = *lookup.entry(key).or_insert_with(|| {
                    let slot = direction.map_or(2, usize::from);
                    let number = next_number[slot];
                    next_number[slot] += 1;
                    accs.push(PatternAcc {
                        direction,
                        number,
                        stops: key.1,
                        trip_count: 0,
                        headsigns: HashMap::new(),
                    });
                    (accs.len() - 1) as u32
                });
                let acc = &mut accs[pattern as usize];
                acc.trip_count += 1;
                if let Some(h) = t.trip_headsign.as_deref() {
                    *acc.headsigns.entry(h).or_default() += 1;
                }
                route_plans.push(TripPlan { raw: i, start, end });
            }
            let route_id = &routes[r].route_id;
            // Directions 0, 1, then none; within one, by number (first appearance).
            accs.sort_by_key(|a| (a.direction.is_none(), a.direction, a.number));
            let patterns: Vec<Pattern> = accs
                .into_iter()
                .map(|acc| Pattern {
                    pattern_id: format!(
                        "{route_id}:{}:{}",
                        acc.direction
                            .map_or_else(|| "x".to_owned(), |d| d.to_string()),
                        acc.number
                    ),
                    direction_id: acc.direction,
                    headsign: acc
                        .headsigns
                        .into_iter()
                        // Most trips first; on a tie, the smallest headsign.
                        .min_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)))
                        .map(|(h, _)| h.to_owned()),
                    stops: acc.stops.iter().map(|&s| stop_refs(s)).collect(),
                    trip_count: acc.trip_count,
                })
                .collect();
            counts.patterns += patterns.len();
            route_patterns.push(patterns);
            plans.push(route_plans);
        }
        drop(by_route);
        drop(stop_index);
        drop(trip_index_raw);
        drop(stop_seq);
        drop(events);
        drop(per_trip);
        drop(stops);

        // Trips, moved out of the raw rows, each route's slice sorted by (start, trip_id).
        let mut raw_trips: Vec<Option<RawTrip>> = raw_trips.into_iter().map(Some).collect();
        let kept: usize = plans.iter().map(Vec::len).sum();
        let mut trips: Vec<TripInfo> = Vec::with_capacity(kept);
        let mut route_trips: Vec<Range<u32>> = Vec::with_capacity(routes.len());
        for route_plans in plans {
            let first = trips.len();
            for plan in route_plans {
                let Some(t) = raw_trips[plan.raw as usize].take() else {
                    continue;
                };
                trips.push(TripInfo {
                    trip_id: t.id,
                    route_id: t.route_id,
                    service_id: t.service_id,
                    headsign: t.trip_headsign,
                    direction_id: t.direction_id.map(direction_number),
                    block_id: t.block_id,
                    start_time: plan.start,
                    end_time: plan.end,
                    frequencies: std::mem::take(&mut trip_windows[plan.raw as usize]),
                });
            }
            trips[first..].sort_unstable_by(|a, b| {
                (a.start_time, &a.trip_id).cmp(&(b.start_time, &b.trip_id))
            });
            route_trips.push(first as u32..trips.len() as u32);
        }
        drop(raw_trips);
        let trip_index: HashMap<String, u32> = trips
            .iter()
            .enumerate()
            .map(|(i, t)| (t.trip_id.clone(), i as u32))
            .collect();

        let route_details: HashMap<String, RouteDetail> = routes
            .iter()
            .zip(route_patterns)
            .zip(&route_trips)
            .map(|((summary, patterns), range)| {
                (
                    summary.route_id.clone(),
                    RouteDetail {
                        summary: summary.clone(),
                        patterns,
                        trip_count: range.len(),
                    },
                )
            })
            .collect();

        Network {
            routes,
            route_index,
            route_details,
            trips,
            trip_index,
            route_trips,
        }
    }

    fn report(&self, counts: &FeedCounts) {
        if !self.notes.is_empty() {
            tracing::warn!(
                gtfs_id = self.gtfs_id,
                skipped_trips = counts.skipped_trips,
                problems = %self.notes.join("; "),
                "feed loaded with problems"
            );
        }
    }
}

/// (start, end) of a trip from its events sorted by sequence: the first departure (or
/// arrival) and the last arrival (or departure). `None` when no event has a time.
fn trip_times(events: &[StopEvent]) -> Option<(u32, u32)> {
    let start = events.iter().find_map(|e| {
        let t = if e.departure != NO_TIME {
            e.departure
        } else {
            e.arrival
        };
        (t != NO_TIME).then_some(t)
    })?;
    let end = events.iter().rev().find_map(|e| {
        let t = if e.arrival != NO_TIME {
            e.arrival
        } else {
            e.departure
        };
        (t != NO_TIME).then_some(t)
    })?;
    Some((start, end))
}

fn is_missing<T>(file: &Result<Vec<T>, gtfs_structures::Error>) -> bool {
    matches!(file, Err(gtfs_structures::Error::MissingFile(_)))
}

fn optional<T>(file: Option<Result<Vec<T>, gtfs_structures::Error>>) -> Result<Vec<T>, FeedError> {
    file.unwrap_or_else(|| Ok(Vec::new()))
        .map_err(FeedError::from_gtfs)
}

fn direction_number(d: DirectionType) -> u8 {
    match d {
        DirectionType::Outbound => 0,
        DirectionType::Inbound => 1,
    }
}

fn frequency_window(f: &RawFrequency) -> FrequencyWindow {
    FrequencyWindow {
        start_time: f.start_time,
        end_time: f.end_time,
        headway_secs: f.headway_secs,
        exact_times: matches!(f.exact_times, Some(ExactTimes::ScheduleBased)),
    }
}

fn agency_info(a: Agency) -> AgencyInfo {
    AgencyInfo {
        agency_id: a.id,
        name: a.name,
        timezone: Some(a.timezone).filter(|tz| !tz.is_empty()),
    }
}

fn route_type_number(t: RouteType) -> i32 {
    match t {
        RouteType::Tramway => 0,
        RouteType::Subway => 1,
        RouteType::Rail => 2,
        RouteType::Bus => 3,
        RouteType::Ferry => 4,
        RouteType::CableCar => 5,
        RouteType::Gondola => 6,
        RouteType::Funicular => 7,
        RouteType::Extended(e) => e as i32,
        RouteType::Other(n) => i32::from(n),
    }
}

fn route_summary(r: Route) -> RouteSummary {
    let route_type = route_type_number(r.route_type);
    RouteSummary {
        route_id: r.id,
        agency_id: r.agency_id,
        short_name: r.short_name,
        long_name: r.long_name,
        route_type,
        mode: mode_of_route_type(route_type).to_owned(),
        // gtfs-structures parses colours to RGB; write them back as lowercase hex.
        color: r
            .color
            .map(|c| format!("{:02x}{:02x}{:02x}", c.r, c.g, c.b)),
        text_color: r
            .text_color
            .map(|c| format!("{:02x}{:02x}{:02x}", c.r, c.g, c.b)),
        sort_order: r.order,
    }
}

#[cfg(test)]
mod tests {
    //! Expected values come from the zips themselves, read with the `zip` and `csv` crates
    //! (not gtfs-structures, not the code under test).

    use super::*;
    use jiff::civil::date;
    use std::collections::{BTreeMap, HashSet};
    use std::io::{Read, Write};

    macro_rules! fixture {
        ($name:literal) => {
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/fixtures/gtfs/",
                $name,
                ".zip"
            ))
            .expect(concat!("fixture ", $name))
        };
    }

    /// One CSV file of a zip: header and rows, fields trimmed, BOM removed.
    struct Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    }

    impl Table {
        fn col(&self, name: &str) -> usize {
            self.headers
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no column {name} in {:?}", self.headers))
        }

        /// The value of `name` in `row`, `None` when the column or the value is absent.
        fn get<'r>(&self, row: &'r [String], name: &str) -> Option<&'r str> {
            let i = self.headers.iter().position(|h| h == name)?;
            row.get(i).map(String::as_str).filter(|v| !v.is_empty())
        }
    }

    fn read_member(zip_bytes: &[u8], file: &str) -> Option<Vec<u8>> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
        let index = (0..archive.len()).find(|&i| {
            let name = archive.by_index(i).unwrap().name().to_owned();
            name == file || name.ends_with(&format!("/{file}"))
        })?;
        let mut data = Vec::new();
        archive
            .by_index(index)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        Some(data)
    }

    fn table(zip_bytes: &[u8], file: &str) -> Option<Table> {
        let data = read_member(zip_bytes, file)?;
        let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(data);
        let headers = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let rows = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        Some(Table { headers, rows })
    }

    fn rows(zip_bytes: &[u8], file: &str) -> usize {
        table(zip_bytes, file).map_or(0, |t| t.rows.len())
    }

    fn parse_time(s: &str) -> u32 {
        let mut parts = s.split(':').map(|p| p.parse::<u32>().unwrap());
        let (h, m, sec) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        h * 3600 + m * 60 + sec
    }

    fn parse_date(s: &str) -> Date {
        date(
            s[0..4].parse().unwrap(),
            s[4..6].parse().unwrap(),
            s[6..8].parse().unwrap(),
        )
    }

    /// Per trip: its stop_ids in stop_sequence order.
    fn stop_sequences(zip_bytes: &[u8]) -> HashMap<String, Vec<String>> {
        let st = table(zip_bytes, "stop_times.txt").unwrap();
        let (trip, seq, stop) = (
            st.col("trip_id"),
            st.col("stop_sequence"),
            st.col("stop_id"),
        );
        let mut by_trip: HashMap<String, BTreeMap<u32, String>> = HashMap::new();
        for row in &st.rows {
            by_trip
                .entry(row[trip].clone())
                .or_default()
                .insert(row[seq].parse().unwrap(), row[stop].clone());
        }
        by_trip
            .into_iter()
            .map(|(t, m)| (t, m.into_values().collect()))
            .collect()
    }

    /// The service ids active on `day`, by the GTFS rules applied to the raw CSV rows.
    fn active_services(zip_bytes: &[u8], day: Date) -> HashSet<String> {
        let mut active = HashSet::new();
        if let Some(cal) = table(zip_bytes, "calendar.txt") {
            let weekday = [
                "monday",
                "tuesday",
                "wednesday",
                "thursday",
                "friday",
                "saturday",
                "sunday",
            ][day.weekday().to_monday_zero_offset() as usize];
            for row in &cal.rows {
                let start = parse_date(cal.get(row, "start_date").unwrap());
                let end = parse_date(cal.get(row, "end_date").unwrap());
                if start <= day && day <= end && cal.get(row, weekday) == Some("1") {
                    active.insert(cal.get(row, "service_id").unwrap().to_owned());
                }
            }
        }
        if let Some(cd) = table(zip_bytes, "calendar_dates.txt") {
            let mut removed = Vec::new();
            for row in &cd.rows {
                if parse_date(cd.get(row, "date").unwrap()) != day {
                    continue;
                }
                let service = cd.get(row, "service_id").unwrap().to_owned();
                match cd.get(row, "exception_type") {
                    Some("1") => {
                        active.insert(service);
                    }
                    Some("2") => removed.push(service),
                    other => panic!("exception_type {other:?}"),
                }
            }
            for service in removed {
                active.remove(&service);
            }
        }
        active
    }

    fn load(name: &str, bytes: &[u8]) -> FeedSnapshot {
        FeedSnapshot::from_zip_bytes(name, "v1", &format!("{name}.zip"), bytes)
            .unwrap_or_else(|e| panic!("{name} does not load: {e}"))
    }

    /// The snapshot's counts equal the row counts of the zip's files.
    fn assert_counts_match_csv(name: &str, bytes: &[u8]) -> FeedSnapshot {
        let snapshot = load(name, bytes);
        let c = snapshot.counts;
        assert_eq!(c.agencies, rows(bytes, "agency.txt"), "{name} agencies");
        assert_eq!(c.routes, rows(bytes, "routes.txt"), "{name} routes");
        assert_eq!(c.stops, rows(bytes, "stops.txt"), "{name} stops");
        assert_eq!(c.trips, rows(bytes, "trips.txt"), "{name} trips");
        assert_eq!(
            c.stop_times,
            rows(bytes, "stop_times.txt"),
            "{name} stop_times"
        );
        assert_eq!(
            c.frequencies,
            rows(bytes, "frequencies.txt"),
            "{name} frequencies"
        );
        assert_eq!(c.calendar, rows(bytes, "calendar.txt"), "{name} calendar");
        assert_eq!(
            c.calendar_dates,
            rows(bytes, "calendar_dates.txt"),
            "{name} calendar_dates"
        );
        // Every trip of these feeds has times: all are kept and reachable.
        assert_eq!(c.skipped_trips, 0, "{name} skipped");
        assert_eq!(snapshot.trips.len(), c.trips, "{name} kept trips");
        assert_eq!(snapshot.routes.len(), c.routes, "{name} route list");
        assert_eq!(snapshot.route_details.len(), c.routes, "{name} details");
        let pattern_total: usize = snapshot
            .route_details
            .values()
            .map(|d| d.patterns.len())
            .sum();
        assert_eq!(c.patterns, pattern_total, "{name} patterns");
        for detail in snapshot.route_details.values() {
            let in_patterns: usize = detail.patterns.iter().map(|p| p.trip_count).sum();
            assert_eq!(
                in_patterns, detail.trip_count,
                "{name} {}",
                detail.summary.route_id
            );
        }
        assert!(snapshot.approx_bytes > 0);
        snapshot
    }

    /// Trips of `route_id` in trips.txt.
    fn csv_trips_of_route(bytes: &[u8], route_id: &str) -> Vec<Vec<String>> {
        let trips = table(bytes, "trips.txt").unwrap();
        let r = trips.col("route_id");
        trips
            .rows
            .into_iter()
            .filter(|row| row[r] == route_id)
            .collect()
    }

    /// For every route and each date: `trips_on` equals the trips whose service runs that
    /// day by the CSV rows. Returns the total over all routes per date.
    fn assert_trips_on_match_csv(name: &str, bytes: &[u8], days: &[Date]) -> Vec<usize> {
        let snapshot = load(name, bytes);
        let trips = table(bytes, "trips.txt").unwrap();
        let (route, service) = (trips.col("route_id"), trips.col("service_id"));
        days.iter()
            .map(|&day| {
                let active = active_services(bytes, day);
                let mut expected: HashMap<&str, usize> = HashMap::new();
                for row in &trips.rows {
                    if active.contains(&row[service]) {
                        *expected.entry(&row[route]).or_default() += 1;
                    }
                }
                let mut total = 0;
                for summary in &snapshot.routes {
                    let got = snapshot.trips_on(&summary.route_id, day);
                    let want = expected
                        .get(summary.route_id.as_str())
                        .copied()
                        .unwrap_or(0);
                    assert_eq!(got.len(), want, "{name} {} on {day}", summary.route_id);
                    assert!(
                        got.windows(2).all(|w| (w[0].start_time, &w[0].trip_id)
                            <= (w[1].start_time, &w[1].trip_id)),
                        "{name} {} on {day}: sorted",
                        summary.route_id
                    );
                    assert!(
                        got.iter()
                            .all(|t| snapshot.calendar.is_active(&t.service_id, day))
                    );
                    total += got.len();
                }
                total
            })
            .collect()
    }

    #[test]
    fn caltrain_counts_route_trips_and_patterns_match_the_csv() {
        let bytes = fixture!("caltrain");
        let snapshot = assert_counts_match_csv("caltrain", &bytes);
        assert_eq!(snapshot.counts.frequencies, 0, "header only");

        let route = "Lo-130";
        let csv_trips = csv_trips_of_route(&bytes, route);
        assert_eq!(csv_trips.len(), 52);
        let detail = snapshot.route_detail(route).unwrap();
        assert_eq!(detail.trip_count, csv_trips.len());
        assert_eq!(snapshot.trips_of_route(route).count(), csv_trips.len());

        // Distinct (direction, ordered stop sequence) among the route's trips.
        let trips = table(&bytes, "trips.txt").unwrap();
        let (id, dir) = (trips.col("trip_id"), trips.col("direction_id"));
        let sequences = stop_sequences(&bytes);
        let distinct: HashSet<(String, Vec<String>)> = csv_trips
            .iter()
            .map(|row| (row[dir].clone(), sequences[&row[id]].clone()))
            .collect();
        assert_eq!(detail.patterns.len(), distinct.len());
    }

    #[test]
    fn bart_patterns_are_the_distinct_stop_sequences_numbered_by_first_trip() {
        let bytes = fixture!("bart");
        let snapshot = assert_counts_match_csv("bart", &bytes);
        let trips = table(&bytes, "trips.txt").unwrap();
        let (id, dir, headsign) = (
            trips.col("trip_id"),
            trips.col("direction_id"),
            trips.col("trip_headsign"),
        );
        let sequences = stop_sequences(&bytes);
        let stops = table(&bytes, "stops.txt").unwrap();
        let stop_names: HashMap<&str, &str> = stops
            .rows
            .iter()
            .map(|r| {
                (
                    stops.get(r, "stop_id").unwrap(),
                    stops.get(r, "stop_name").unwrap(),
                )
            })
            .collect();

        for route in ["01", "19"] {
            let mut csv_trips = csv_trips_of_route(&bytes, route);
            let detail = snapshot.route_detail(route).unwrap();
            assert_eq!(detail.trip_count, csv_trips.len(), "route {route}");

            // Number patterns as specified, from the CSV: trips in trip_id order, the
            // n-th new (direction, sequence) of a direction is n.
            csv_trips.sort_by(|a, b| a[id].cmp(&b[id]));
            struct CsvPattern {
                direction: String,
                stops: Vec<String>,
                trips: usize,
                headsigns: BTreeMap<String, usize>,
            }
            let mut numbered: Vec<CsvPattern> = Vec::new();
            for row in &csv_trips {
                let seq = &sequences[&row[id]];
                let at = numbered
                    .iter()
                    .position(|p| p.direction == row[dir] && p.stops == *seq)
                    .unwrap_or_else(|| {
                        numbered.push(CsvPattern {
                            direction: row[dir].clone(),
                            stops: seq.clone(),
                            trips: 0,
                            headsigns: BTreeMap::new(),
                        });
                        numbered.len() - 1
                    });
                numbered[at].trips += 1;
                *numbered[at]
                    .headsigns
                    .entry(row[headsign].clone())
                    .or_default() += 1;
            }
            assert_eq!(detail.patterns.len(), numbered.len(), "route {route}");
            for n_dir in ["0", "1"] {
                let group = numbered.iter().filter(|p| p.direction == n_dir);
                for (n, csv_pattern) in group.enumerate() {
                    let pattern_id = format!("{route}:{n_dir}:{n}");
                    let pattern = detail
                        .patterns
                        .iter()
                        .find(|p| p.pattern_id == pattern_id)
                        .unwrap_or_else(|| panic!("no pattern {pattern_id}"));
                    let ids: Vec<&str> = pattern.stops.iter().map(|s| s.stop_id.as_str()).collect();
                    assert_eq!(ids, csv_pattern.stops, "{pattern_id} stops");
                    assert_eq!(pattern.trip_count, csv_pattern.trips, "{pattern_id} trips");
                    // Most common headsign; BTreeMap order makes the first of the top the
                    // smallest.
                    let headsigns = &csv_pattern.headsigns;
                    let top = headsigns.values().max().unwrap();
                    let expected = headsigns.iter().find(|(_, c)| *c == top).unwrap().0;
                    assert_eq!(pattern.headsign.as_deref(), Some(expected.as_str()));
                    assert_eq!(pattern.direction_id, Some(n_dir.parse().unwrap()));
                    for s in &pattern.stops {
                        assert_eq!(s.name.as_deref(), Some(stop_names[s.stop_id.as_str()]));
                        assert!(s.lat.is_some() && s.lon.is_some());
                    }
                }
            }
        }
    }

    #[test]
    fn bart_keeps_trips_past_midnight_on_their_service_date() {
        let bytes = fixture!("bart");
        let snapshot = load("bart", &bytes);
        // The trip with the latest first departure, from the CSV.
        let st = table(&bytes, "stop_times.txt").unwrap();
        let (trip, seq, dep, arr) = (
            st.col("trip_id"),
            st.col("stop_sequence"),
            st.col("departure_time"),
            st.col("arrival_time"),
        );
        let mut first: HashMap<&str, (u32, &str, &str)> = HashMap::new();
        let mut last: HashMap<&str, (u32, &str)> = HashMap::new();
        for row in &st.rows {
            let s: u32 = row[seq].parse().unwrap();
            let e = first.entry(&row[trip]).or_insert((s, &row[dep], &row[arr]));
            if s <= e.0 {
                *e = (s, &row[dep], &row[arr]);
            }
            let l = last.entry(&row[trip]).or_insert((s, &row[arr]));
            if s >= l.0 {
                *l = (s, &row[arr]);
            }
        }
        let (late_trip, (_, late_dep, _)) = first
            .iter()
            .max_by_key(|(id, (_, d, _))| (parse_time(d), **id))
            .unwrap();
        let start = parse_time(late_dep);
        assert!(start > 86_400, "bart has a trip starting after midnight");
        let info = snapshot.trip(late_trip).unwrap();
        assert_eq!(info.start_time, start);
        assert_eq!(info.end_time, parse_time(last[late_trip].1));
        let json = serde_json::to_value(info).unwrap();
        assert_eq!(json["start_time"], format_gtfs_time(start));
        assert!(json["start_time"].as_str().unwrap().starts_with("25:"));
        assert_eq!(json["start_time"], **late_dep);
        assert!(json.get("frequencies").is_none(), "empty list left out");

        // Every trip's start and end agree with its first and last stop_time.
        for (id, (_, d, a)) in &first {
            let info = snapshot.trip(id).unwrap();
            let d = if d.is_empty() { a } else { d };
            assert_eq!(info.start_time, parse_time(d), "{id}");
            assert_eq!(info.end_time, parse_time(last[id].1), "{id}");
        }
    }

    #[test]
    fn cdmx_loads_with_bom_quotes_frequencies_and_a_stray_file() {
        let bytes = fixture!("cdmx");
        assert!(read_member(&bytes, "desktop.ini").is_some());
        assert!(
            read_member(&bytes, "agency.txt")
                .unwrap()
                .starts_with(b"\xEF\xBB\xBF")
        );
        let snapshot = assert_counts_match_csv("cdmx", &bytes);

        // BOM: the first column of agency.txt is agency_id, read as such.
        let agencies = table(&bytes, "agency.txt").unwrap();
        let ids: Vec<Option<&str>> = agencies
            .rows
            .iter()
            .map(|r| agencies.get(r, "agency_id"))
            .collect();
        let got: Vec<Option<&str>> = snapshot
            .agencies
            .iter()
            .map(|a| a.agency_id.as_deref())
            .collect();
        assert_eq!(got, ids);
        assert!(snapshot.agencies.iter().any(|a| a.name == "Metrobús"));

        // Frequencies: one window per trip, as in frequencies.txt.
        let freq = table(&bytes, "frequencies.txt").unwrap();
        for row in &freq.rows {
            let trip = snapshot.trip(freq.get(row, "trip_id").unwrap()).unwrap();
            assert_eq!(trip.frequencies.len(), 1);
            let w = &trip.frequencies[0];
            assert_eq!(
                w.start_time,
                parse_time(freq.get(row, "start_time").unwrap())
            );
            assert_eq!(w.end_time, parse_time(freq.get(row, "end_time").unwrap()));
            assert_eq!(
                w.headway_secs.to_string(),
                freq.get(row, "headway_secs").unwrap()
            );
            assert_eq!(w.exact_times, freq.get(row, "exact_times") == Some("1"));
        }

        // Quoted fields: the long name of a route with a quoted, comma-holding desc.
        let routes = table(&bytes, "routes.txt").unwrap();
        for row in &routes.rows {
            let id = routes.get(row, "route_id").unwrap();
            let summary = snapshot.route(id).unwrap();
            assert_eq!(
                summary.long_name.as_deref(),
                routes.get(row, "route_long_name")
            );
            assert_eq!(
                summary.short_name.as_deref(),
                routes.get(row, "route_short_name")
            );
            assert_eq!(
                summary.color.as_deref(),
                routes
                    .get(row, "route_color")
                    .map(|c| c.to_ascii_lowercase())
                    .as_deref()
            );
        }

        let route = "ROUTE_36490";
        assert_eq!(
            snapshot.route_detail(route).unwrap().trip_count,
            csv_trips_of_route(&bytes, route).len()
        );
        assert_eq!(snapshot.trips_of_route(route).count(), 44);
        // No direction_id in cdmx: pattern ids say "x".
        assert!(
            snapshot.route_detail(route).unwrap().patterns[0]
                .pattern_id
                .starts_with("ROUTE_36490:x:")
        );
    }

    #[test]
    fn wmata_calendar_dates_only_trips_on_match_the_csv() {
        let bytes = fixture!("wmata");
        assert!(read_member(&bytes, "calendar.txt").is_none());
        let snapshot = assert_counts_match_csv("wmata", &bytes);
        assert_eq!(snapshot.counts.calendar, 0);
        let cd = table(&bytes, "calendar_dates.txt").unwrap();
        let dates: Vec<Date> = cd
            .rows
            .iter()
            .map(|r| parse_date(cd.get(r, "date").unwrap()))
            .collect();
        let (first, last) = (*dates.iter().min().unwrap(), *dates.iter().max().unwrap());
        assert_eq!(snapshot.calendar.service_range(), Some((first, last)));

        // A Saturday and a weekday from calendar_dates.txt, and a day after the feed.
        let days = [date(2026, 7, 11), date(2026, 5, 6), date(2027, 1, 4)];
        let totals = assert_trips_on_match_csv("wmata", &bytes, &days);
        assert!(totals[0] > 0 && totals[1] > 0, "{totals:?}");
        assert_eq!(totals[2], 0);
    }

    #[test]
    fn caltrain_trips_on_follow_calendar_and_exceptions() {
        let bytes = fixture!("caltrain");
        // 2018-06-20: a Wednesday with an added Giants service; 2018-07-04: holiday
        // (weekday service removed, weekend service added); a Sunday; before the feed.
        let days = [
            date(2018, 6, 20),
            date(2018, 7, 4),
            date(2018, 6, 24),
            date(2017, 10, 1),
        ];
        let totals = assert_trips_on_match_csv("caltrain", &bytes, &days);
        assert!(totals[..3].iter().all(|&t| t > 0), "{totals:?}");
        assert_eq!(totals[3], 0);
        let snapshot = load("caltrain", &bytes);
        assert_eq!(
            snapshot.calendar.service_range().map(|(f, _)| f),
            Some(date(2017, 10, 2))
        );
    }

    #[test]
    fn cdmx_trips_on_follow_the_weekly_calendar() {
        let bytes = fixture!("cdmx");
        // A Tuesday, a Saturday, a Sunday, and the day after the feed ends.
        let days = [
            date(2018, 6, 19),
            date(2018, 6, 23),
            date(2019, 3, 3),
            date(2020, 1, 1),
        ];
        let totals = assert_trips_on_match_csv("cdmx", &bytes, &days);
        assert!(totals[0] > 0, "{totals:?}");
        assert_eq!(totals[3], 0);
    }

    /// gtfs-structures refuses the sample feed: 13 rows of its stop_times.txt have fewer
    /// fields than the header. The snapshot pads them (13 rows) and loads the feed.
    #[test]
    fn sample_feed_short_rows_are_padded() {
        let bytes = fixture!("sample-feed");
        let (_, rows) = pad_short_rows(&bytes).expect("short rows found");
        assert_eq!(rows, 13);
        // A feed without short rows is left alone.
        assert!(pad_short_rows(&fixture!("caltrain")).is_none());
    }

    /// The sample feed, short rows and all, matches its CSVs.
    #[test]
    fn sample_feed_with_padded_rows_matches_the_csv() {
        let bytes = fixture!("sample-feed");
        let snapshot = assert_counts_match_csv("sample-feed", &bytes);
        assert_eq!(snapshot.counts.frequencies, 11);
        assert_eq!(snapshot.counts.stop_times, 28);
        let stba = snapshot.trip("STBA").unwrap();
        assert_eq!(stba.frequencies.len(), 1);
        assert_eq!(format_gtfs_time(stba.frequencies[0].start_time), "06:00:00");
        // FULLW runs every day of 2007-2010 except 2007-06-04.
        let days = [date(2007, 6, 4), date(2007, 6, 5), date(2011, 1, 1)];
        let totals = assert_trips_on_match_csv("sample-feed", &bytes, &days);
        assert!(totals[1] > totals[0], "{totals:?}");
        assert_eq!(totals[2], 0);
    }

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, text) in files {
            out.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(text.as_bytes()).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    const AGENCY: &str = "agency_id,agency_name,agency_url,agency_timezone\nA,Agency,http://a.example,Europe/Paris\n";
    const STOPS: &str = "stop_id,stop_name,stop_lat,stop_lon\nS1,One,48.1,2.1\nS2,Two,48.2,2.2\n";
    const ROUTES: &str =
        "route_id,agency_id,route_short_name,route_long_name,route_type\nR1,A,1,One,3\n";
    const TRIPS: &str = "route_id,service_id,trip_id,trip_headsign,direction_id\nR1,WK,T1,Two,0\n";
    const STOP_TIMES: &str = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,08:00:00,08:00:00,S1,1\nT1,08:10:00,08:10:00,S2,2\n";
    const CALENDAR: &str = "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\nWK,1,1,1,1,1,0,0,20240101,20241231\n";

    fn minimal_feed(routes: &str, trips: &str, stop_times: &str) -> Vec<u8> {
        zip_of(&[
            ("agency.txt", AGENCY),
            ("stops.txt", STOPS),
            ("routes.txt", routes),
            ("trips.txt", trips),
            ("stop_times.txt", stop_times),
            ("calendar.txt", CALENDAR),
        ])
    }

    #[test]
    fn a_minimal_hand_made_feed_loads() {
        let snapshot = load("mini", &minimal_feed(ROUTES, TRIPS, STOP_TIMES));
        let detail = snapshot.route_detail("R1").unwrap();
        assert_eq!(detail.summary.mode, "BUS");
        assert_eq!(detail.patterns.len(), 1);
        assert_eq!(detail.patterns[0].pattern_id, "R1:0:0");
        assert_eq!(detail.patterns[0].headsign.as_deref(), Some("Two"));
        let t = snapshot.trip("T1").unwrap();
        assert_eq!((t.start_time, t.end_time), (8 * 3600, 8 * 3600 + 600));
        assert_eq!(snapshot.trips_on("R1", date(2024, 1, 1)).len(), 1);
        assert_eq!(snapshot.trips_on("R1", date(2024, 1, 6)).len(), 0);
        assert_eq!(snapshot.trips_on("NOPE", date(2024, 1, 1)).len(), 0);
        assert_eq!(snapshot.trips_of_route("NOPE").count(), 0);
        assert!(snapshot.route("NOPE").is_none() && snapshot.trip("NOPE").is_none());
    }

    #[test]
    fn trips_without_stop_times_or_times_are_skipped_and_counted() {
        let trips = "route_id,service_id,trip_id,direction_id\nR1,WK,T1,0\nR1,WK,EMPTY,0\nR1,WK,NOTIME,0\nGHOST,WK,ORPHAN,0\n";
        let stop_times = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,08:00:00,08:00:00,S1,1\nT1,08:10:00,08:10:00,S2,2\nNOTIME,,,S1,1\nNOTIME,,,S2,2\nORPHAN,09:00:00,09:00:00,S1,1\n";
        let snapshot = load("skips", &minimal_feed(ROUTES, trips, stop_times));
        assert_eq!(snapshot.counts.trips, 4);
        assert_eq!(snapshot.counts.skipped_trips, 3);
        assert!(snapshot.trip("T1").is_some());
        assert!(snapshot.trip("EMPTY").is_none());
        assert!(snapshot.trip("NOTIME").is_none());
        assert_eq!(snapshot.route_detail("R1").unwrap().trip_count, 1);
    }

    #[test]
    fn pattern_ids_headsigns_and_trip_order_follow_the_rules() {
        // T3 and T1 share a sequence; T2 runs it backwards; T4 has no direction.
        let trips = "route_id,service_id,trip_id,trip_headsign,direction_id\n\
                     R1,WK,T3,Zed,0\nR1,WK,T1,Alpha,0\nR1,WK,T2,Back,0\nR1,WK,T4,,\nR1,WK,T5,Zed,0\n";
        let stop_times = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n\
                          T3,07:00:00,07:00:00,S1,1\nT3,07:10:00,07:10:00,S2,2\n\
                          T1,09:00:00,09:00:00,S1,1\nT1,09:10:00,09:10:00,S2,2\n\
                          T2,08:10:00,08:10:00,S1,2\nT2,08:00:00,08:00:00,S2,1\n\
                          T4,06:00:00,,S1,1\nT4,,06:30:00,S2,2\n\
                          T5,07:00:00,07:00:00,S1,1\nT5,07:10:00,07:10:00,S2,2\n";
        let snapshot = load("order", &minimal_feed(ROUTES, trips, stop_times));
        let patterns = &snapshot.route_detail("R1").unwrap().patterns;
        let ids: Vec<&str> = patterns.iter().map(|p| p.pattern_id.as_str()).collect();
        // By trip_id: T1 (S1,S2) is dir 0 #0, T2 (S2,S1) dir 0 #1; T4 has no direction.
        assert_eq!(ids, ["R1:0:0", "R1:0:1", "R1:x:0"]);
        let forward = &patterns[0];
        assert_eq!(forward.trip_count, 3);
        assert_eq!(
            forward.headsign.as_deref(),
            Some("Zed"),
            "2 Zed beat 1 Alpha"
        );
        let stops: Vec<&str> = patterns[1]
            .stops
            .iter()
            .map(|s| s.stop_id.as_str())
            .collect();
        assert_eq!(stops, ["S2", "S1"], "stop_sequence order, not file order");
        assert_eq!(patterns[2].headsign, None);
        assert_eq!(patterns[2].direction_id, None);
        // Arrival-only start and departure-only end still give times.
        let t4 = snapshot.trip("T4").unwrap();
        assert_eq!((t4.start_time, t4.end_time), (6 * 3600, 6 * 3600 + 1800));
        let order: Vec<&str> = snapshot
            .trips_of_route("R1")
            .map(|t| t.trip_id.as_str())
            .collect();
        assert_eq!(order, ["T4", "T3", "T5", "T2", "T1"]);
    }

    #[test]
    fn random_bytes_are_a_zip_error() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes).unwrap_err();
        assert!(matches!(err, FeedError::Zip(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("not a readable zip archive"),
            "{err}"
        );
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &[]).unwrap_err();
        assert!(matches!(err, FeedError::Zip(_)), "{err:?}");
    }

    #[test]
    fn a_truncated_zip_is_a_clear_error() {
        let bytes = fixture!("caltrain");
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, FeedError::Zip(_)), "{err:?}");
    }

    #[test]
    fn an_empty_zip_names_every_missing_required_file() {
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &zip_of(&[])).unwrap_err();
        assert_eq!(
            err,
            FeedError::MissingFiles(
                [
                    "agency.txt",
                    "routes.txt",
                    "stops.txt",
                    "trips.txt",
                    "stop_times.txt"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            err.to_string(),
            "required file(s) missing from the feed: agency.txt, routes.txt, stops.txt, trips.txt, stop_times.txt"
        );
    }

    #[test]
    fn a_zip_without_routes_txt_says_so() {
        let bytes = zip_of(&[
            ("agency.txt", AGENCY),
            ("stops.txt", STOPS),
            ("trips.txt", TRIPS),
            ("stop_times.txt", STOP_TIMES),
        ]);
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes).unwrap_err();
        assert_eq!(err, FeedError::MissingFiles(vec!["routes.txt".into()]));
    }

    #[test]
    fn a_broken_routes_row_names_file_line_and_column() {
        let routes = "route_id,agency_id,route_short_name,route_long_name,route_type\nR1,A,1,One,3\nR2,A,2,Two,bus\n";
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed(routes, TRIPS, STOP_TIMES))
                .unwrap_err();
        let FeedError::Csv { file, line, detail } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(file, "routes.txt");
        assert_eq!(*line, Some(3));
        assert!(detail.starts_with("column route_type: "), "{detail}");
        assert!(detail.contains("R2,A,2,Two,bus"), "{detail}");
        assert!(
            err.to_string()
                .starts_with("routes.txt line 3: column route_type"),
            "{err}"
        );
    }

    #[test]
    fn garbage_inside_a_member_is_a_csv_error_not_a_panic() {
        let garbage = String::from_utf8_lossy(&[0xff, 0xfe, b'"', b'\n', 0, 1, 2]).into_owned();
        for file in ["routes.txt", "stop_times.txt", "calendar.txt"] {
            let mut files = vec![
                ("agency.txt", AGENCY),
                ("stops.txt", STOPS),
                ("routes.txt", ROUTES),
                ("trips.txt", TRIPS),
                ("stop_times.txt", STOP_TIMES),
                ("calendar.txt", CALENDAR),
            ];
            files.iter_mut().find(|(n, _)| *n == file).unwrap().1 = &garbage;
            let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &zip_of(&files)).unwrap_err();
            assert!(err.to_string().starts_with(file), "{err}");
        }
        // An empty (0-byte) required file.
        let err = FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed("", TRIPS, STOP_TIMES))
            .unwrap_err();
        assert!(
            matches!(&err, FeedError::Csv { file, .. } if file == "routes.txt"),
            "{err:?}"
        );
    }

    #[test]
    fn a_broken_file_the_snapshot_does_not_use_is_ignored() {
        let mut files = vec![
            ("agency.txt", AGENCY),
            ("stops.txt", STOPS),
            ("routes.txt", ROUTES),
            ("trips.txt", TRIPS),
            ("stop_times.txt", STOP_TIMES),
            ("calendar.txt", CALENDAR),
        ];
        files.push(("fare_attributes.txt", "fare_id,price\nF1\n"));
        let snapshot = load("fares", &zip_of(&files));
        assert_eq!(snapshot.counts.trips, 1);
    }

    #[test]
    fn gtfs_times_format_past_midnight() {
        assert_eq!(format_gtfs_time(0), "00:00:00");
        assert_eq!(format_gtfs_time(8 * 3600 + 5 * 60 + 9), "08:05:09");
        assert_eq!(format_gtfs_time(86_400 + 15 * 60), "24:15:00");
        assert_eq!(format_gtfs_time(100 * 3600), "100:00:00");
    }

    /// Rough timing, release only:
    /// `cargo test --release --lib feed::snapshot::tests::time_wmata -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release"]
    fn time_wmata() {
        let bytes = fixture!("wmata");
        let time = |f: &dyn Fn()| {
            let mut best = std::time::Duration::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed());
            }
            best
        };
        let parse = time(&|| {
            drop(gtfs_structures::Gtfs::from_reader(std::io::Cursor::new(&bytes[..])).unwrap());
        });
        let raw = time(&|| {
            let reader = GtfsReader::default().read_shapes(false).raw();
            drop(
                reader
                    .read_from_reader(std::io::Cursor::new(&bytes[..]))
                    .unwrap(),
            );
        });
        let snapshot = time(&|| {
            drop(FeedSnapshot::from_zip_bytes("wmata", "v", "s", &bytes).unwrap());
        });
        let s = FeedSnapshot::from_zip_bytes("wmata", "v", "s", &bytes).unwrap();
        println!(
            "wmata (best of 5): Gtfs::from_reader {parse:?}; FeedSnapshot::from_zip_bytes \
             {snapshot:?} ({:.2}x), of which the raw read without shapes {raw:?}; \
             approx_bytes {} ({} patterns)",
            snapshot.as_secs_f64() / parse.as_secs_f64(),
            s.approx_bytes,
            s.counts.patterns
        );
    }

    // ---- Panic hunting: mutated feeds must load or fail with a message ----

    /// The members of a zip, in order.
    fn members(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
        (0..archive.len())
            .map(|i| {
                let mut member = archive.by_index(i).unwrap();
                let mut data = Vec::new();
                member.read_to_end(&mut data).unwrap();
                (member.name().to_owned(), data)
            })
            .collect()
    }

    fn zip_bytes(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in files {
            // Stored, not deflated: debug builds deflate slowly, and thousands are made.
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            out.start_file(name.as_str(), options).unwrap();
            out.write_all(data).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    /// `files` with `name`'s content replaced by `f` of it.
    fn with_file(
        files: &[(String, Vec<u8>)],
        name: &str,
        f: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Vec<(String, Vec<u8>)> {
        let mut out = files.to_vec();
        if let Some((_, d)) = out.iter_mut().find(|(n, _)| n == name) {
            *d = f(d);
        }
        out
    }

    /// A CSV file as rows of fields (naive split: the sample feed has no quotes).
    fn cells(data: &[u8]) -> Vec<Vec<String>> {
        String::from_utf8_lossy(data)
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    fn uncells(rows: &[Vec<String>]) -> Vec<u8> {
        let mut out = rows
            .iter()
            .map(|r| r.join(","))
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        out.into_bytes()
    }

    /// Loads `bytes` under `catch_unwind`: a panic fails naming `case`; an error must have a
    /// message; a snapshot is read through its whole API.
    fn survives(case: &str, bytes: &[u8]) -> bool {
        let result = std::panic::catch_unwind(|| {
            FeedSnapshot::from_zip_bytes("x", "v", "s", bytes).map(|snapshot| {
                for route in &snapshot.routes {
                    let _ = snapshot.route(&route.route_id);
                    let _ = snapshot.route_detail(&route.route_id);
                    for day in [date(2007, 6, 4), date(2008, 1, 1)] {
                        let _ = snapshot.trips_on(&route.route_id, day);
                    }
                    for trip in snapshot.trips_of_route(&route.route_id) {
                        let _ = snapshot.trip(&trip.trip_id);
                        serde_json::to_string(trip).unwrap();
                    }
                }
                let _ = snapshot.calendar.service_range();
                snapshot.approx_bytes
            })
        });
        match result {
            Ok(Ok(_)) => true,
            Ok(Err(err)) => {
                let text = err.to_string();
                assert!(!text.trim().is_empty(), "{case}: empty error {err:?}");
                assert!(
                    text.len() < 4_000,
                    "{case}: {}-byte error: {text}",
                    text.len()
                );
                false
            }
            Err(payload) => {
                panic!(
                    "{case}: from_zip_bytes panicked: {}",
                    panic_message(&*payload)
                );
            }
        }
    }

    /// Values put in every cell of the first data rows of every file.
    const ODD_CELLS: &[&str] = &[
        "",
        " ",
        "-1",
        "0",
        "2",
        "99999999999999999999",
        "-9223372036854775809",
        "4294967295",
        "4294967296",
        "1e400",
        "NaN",
        "99:99:99",
        "25:00:00",
        "-1:00:00",
        "24:00:00",
        "1193046:28:15",
        "1193047:00:00",
        "4294967295:00:00",
        "00:00:4294967295",
        "1:2:3",
        "::",
        "20181341",
        "20180229",
        "00000000",
        "99991231",
        "-2018010",
        "1é2345",
        "é1234",
        "1é234",
        "ééé",
        "#FFFFFF",
        "GGGGGG",
        "\"a\n\"\"b\"",
        "\"unterminated",
        "\u{0}",
        "\u{feff}x",
        "NOPE",
        "FULLW",
        "AB1",
        "STAGECOACH",
    ];

    type Files = Vec<(String, Vec<u8>)>;

    /// Mutations of the sample feed, named: every file removed, emptied, cut, with a
    /// BOM, CRLF, invalid UTF-8, garbage, duplicated rows, odd rows, each column removed,
    /// each cell of the first row set to each of [`ODD_CELLS`] (cases named `... = ...`),
    /// hand-made dangling references and calendars, and 600 random byte mutations.
    fn mutated_sample_feeds() -> Vec<(String, Files)> {
        use rand::{Rng, SeedableRng};
        // Padded once here, so that loads go through the reader once (mutants with short
        // rows still take the padding path).
        let (padded, _) = pad_short_rows(&fixture!("sample-feed")).unwrap();
        let base = members(&padded);
        let names: Vec<String> = base.iter().map(|(n, _)| n.clone()).collect();
        assert!(survives("sample-feed as is", &zip_bytes(&base)));
        let mut cases: Vec<(String, Files)> = Vec::new();

        for name in &names {
            let data = &base.iter().find(|(n, _)| n == name).unwrap().1;
            let rows = cells(data);
            let push =
                |cases: &mut Vec<(String, Files)>, what: String, f: &dyn Fn(&[u8]) -> Vec<u8>| {
                    cases.push((format!("{name}: {what}"), with_file(&base, name, f)));
                };
            push(&mut cases, "removed".into(), &|_| Vec::new());
            cases.last_mut().unwrap().1.retain(|(n, _)| n != name);
            push(&mut cases, "empty".into(), &|_| Vec::new());
            push(&mut cases, "two bytes".into(), &|d| {
                d[..2.min(d.len())].to_vec()
            });
            push(&mut cases, "header only".into(), &|_| uncells(&rows[..1]));
            push(&mut cases, "BOM".into(), &|d| [b"\xef\xbb\xbf", d].concat());
            push(&mut cases, "double BOM".into(), &|d| {
                [b"\xef\xbb\xbf\xef\xbb\xbf", d].concat()
            });
            push(&mut cases, "CRLF".into(), &|d| {
                String::from_utf8_lossy(d)
                    .replace('\n', "\r\n")
                    .into_bytes()
            });
            push(&mut cases, "rows twice (duplicate ids)".into(), &|d| {
                let mut out = d.to_vec();
                out.push(b'\n');
                out.extend(uncells(&rows[1..]));
                out
            });
            push(&mut cases, "invalid UTF-8".into(), &|d| {
                let mut out = d.to_vec();
                out.splice(d.len() / 2..d.len() / 2, [0xff, 0xfe, 0xc3]);
                out
            });
            push(&mut cases, "garbage".into(), &|_| {
                (0..=255u8).cycle().take(1000).collect()
            });
            push(&mut cases, "a row longer than the header".into(), &|d| {
                [d, b"\na,b,c,d,e,f,g,h,i,j,k,l,m,n\n"].concat()
            });
            push(&mut cases, "a one-field row".into(), &|d| {
                [d, b"\nx\n"].concat()
            });
            for cut in (0..data.len()).step_by((data.len() / 12).max(1)) {
                push(&mut cases, format!("cut at {cut}"), &|d| d[..cut].to_vec());
            }
            for column in 0..rows[0].len() {
                push(
                    &mut cases,
                    format!("column {} removed", rows[0][column]),
                    &|_| {
                        let rows: Vec<Vec<String>> = rows
                            .iter()
                            .map(|r| {
                                let mut r = r.clone();
                                if column < r.len() {
                                    r.remove(column);
                                }
                                r
                            })
                            .collect();
                        uncells(&rows)
                    },
                );
                for odd in ODD_CELLS {
                    for row in 1..rows.len().min(2) {
                        push(
                            &mut cases,
                            format!("row {row} {} = {odd:?}", rows[0][column]),
                            &|_| {
                                let mut rows = rows.clone();
                                if let Some(cell) = rows[row].get_mut(column) {
                                    *cell = (*odd).to_owned();
                                }
                                uncells(&rows)
                            },
                        );
                    }
                }
            }
        }
        // Frequencies ending before they start, and calendar_dates.txt alone.
        cases.push((
            "frequencies end before start".into(),
            with_file(&base, "frequencies.txt", |_| {
                b"trip_id,start_time,end_time,headway_secs\nSTBA,22:00:00,6:00:00,0\nAB1,6:00:00,6:00:00,4294967295\n".to_vec()
            }),
        ));
        let mut dates_only = with_file(&base, "calendar_dates.txt", |_| {
            b"service_id,date,exception_type\nFULLW,20070604,1\nFULLW,20070604,2\nWE,20070605,1\nNOPE,20070606,1\nWE,20070607,3\n".to_vec()
        });
        dates_only.retain(|(n, _)| n != "calendar.txt");
        cases.push(("calendar_dates.txt only".into(), dates_only));
        cases.push((
            "a calendar of 8000 years".into(),
            with_file(&base, "calendar.txt", |_| {
                b"service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\nFULLW,0,0,0,0,0,0,0,00010101,99991231\nWE,1,1,1,1,1,1,1,99991231,00010101\n".to_vec()
            }),
        ));
        cases.push((
            "stop_times of unknown trips and stops".into(),
            with_file(&base, "stop_times.txt", |d| {
                [d, b"\nGHOST,6:00:00,6:00:00,STAGECOACH,1\nSTBA,6:30:00,6:30:00,NOWHERE,3\nSTBA,,,NOWHERE,4294967295\n".as_slice()].concat()
            }),
        ));

        // Random byte mutations of one file at a time.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6755);
        for i in 0..600 {
            let name = &names[rng.random_range(0..names.len())];
            cases.push((
                format!("{name}: random mutant {i}"),
                with_file(&base, name, |d| {
                    let mut d = d.to_vec();
                    for _ in 0..rng.random_range(1..=6) {
                        let at = rng.random_range(0..=d.len());
                        match rng.random_range(0..4) {
                            0 if at < d.len() => d[at] = rng.random(),
                            1 if at < d.len() => {
                                d.remove(at);
                            }
                            2 => {
                                const SIGNIFICANT: &[u8] = b",\"\n:\r0\xff";
                                d.insert(at, SIGNIFICANT[rng.random_range(0..SIGNIFICANT.len())]);
                            }
                            _ => d.insert(at, rng.random()),
                        }
                    }
                    d
                }),
            ));
        }

        cases
    }

    /// Loads each case; (cases, how many loaded).
    fn load_all<'c>(cases: impl Iterator<Item = &'c (String, Files)>) -> (usize, usize) {
        let (mut total, mut loaded) = (0, 0);
        for (case, files) in cases {
            total += 1;
            loaded += usize::from(survives(case, &zip_bytes(files)));
        }
        (total, loaded)
    }

    #[test]
    fn mutated_feeds_load_or_fail_without_panicking() {
        let cases = mutated_sample_feeds();
        let (total, loaded) = load_all(cases.iter().filter(|(name, _)| !name.contains(" = ")));
        eprintln!("{total} mutated feeds, {loaded} loaded");
        assert!(total > 900, "{total}");
        // Many mutations leave a loadable feed: the builder past the CSV reader is reached.
        assert!(loaded > total / 4, "{loaded} of {total}");
    }

    #[test]
    fn odd_values_in_every_cell_load_or_fail_without_panicking() {
        let cases = mutated_sample_feeds();
        let (total, loaded) = load_all(cases.iter().filter(|(name, _)| name.contains(" = ")));
        eprintln!("{total} feeds with an odd cell, {loaded} loaded");
        assert!(total > 2_000, "{total}");
        assert!(loaded > total / 4, "{loaded} of {total}");
    }

    /// gtfs-structures 0.52 panics on a 6-byte non-ASCII colour (in any build) and on an
    /// hour past 1193046 (u32 overflow, in debug builds): a feed error, not a panic.
    #[test]
    fn a_panic_in_the_gtfs_reader_is_a_feed_error() {
        let routes = "route_id,agency_id,route_short_name,route_long_name,route_type,route_color\nR1,A,1,One,3,1\u{e9}234\n";
        let err =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed(routes, TRIPS, STOP_TIMES))
                .unwrap_err();
        assert!(matches!(err, FeedError::Invalid(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid GTFS feed: the GTFS reader failed on a malformed value: "),
            "{err}"
        );
        let stop_times = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,1193047:00:00,1193047:00:00,S1,1\n";
        let result =
            FeedSnapshot::from_zip_bytes("x", "v", "s", &minimal_feed(ROUTES, TRIPS, stop_times));
        if cfg!(debug_assertions) {
            assert!(matches!(result, Err(FeedError::Invalid(_))), "{result:?}");
        }
    }

    #[test]
    fn mutated_zip_containers_fail_without_panicking() {
        use rand::{Rng, SeedableRng};
        let bytes = fixture!("sample-feed");
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("nothing".into(), Vec::new()),
            (
                "html".into(),
                b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            ),
            ("zip magic only".into(), b"PK\x03\x04".to_vec()),
            (
                "end record only".into(),
                [b"PK\x05\x06".as_slice(), &[0; 18]].concat(),
            ),
            ("1 MB of zeros".into(), vec![0; 1 << 20]),
        ];
        for cut in (0..bytes.len()).step_by(97) {
            cases.push((format!("cut at {cut}"), bytes[..cut].to_vec()));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x2197);
        for i in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            cases.push((format!("byte flips {i}"), b));
        }
        // Every entry claiming a huge uncompressed size (local headers and central
        // directory), and one claiming 0.
        for (what, size) in [("huge", u32::MAX - 1), ("zero", 0)] {
            let mut b = zip_bytes(&members(&bytes));
            let mut at = 0;
            while at + 30 <= b.len() {
                let sig = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                match sig {
                    0x0403_4b50 => b[at + 22..at + 26].copy_from_slice(&size.to_le_bytes()),
                    0x0201_4b50 => b[at + 24..at + 28].copy_from_slice(&size.to_le_bytes()),
                    _ => {}
                }
                at += 1;
            }
            cases.push((format!("{what} declared sizes"), b));
        }
        for (case, b) in &cases {
            survives(case, b);
        }
    }
}
