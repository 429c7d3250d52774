//! The GTFS oracle: what the fixture feeds say, read from their CSV files with the zip
//! and csv crates (see [`super::fixtures`]), independently of the service. Routes, trips
//! (stops in order, first departure and last arrival), stops, frequencies, and the service
//! days of calendar.txt (weekdays within a date range) and calendar_dates.txt (additions,
//! removals; a removal wins). Shared by the route, waybill and real-OTP tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use jiff::civil::Date;

use super::fixtures::{fixture_table, format_gtfs_time, parse_gtfs_date, parse_gtfs_time};

pub struct RouteRow {
    pub route_id: String,
    pub agency_id: Option<String>,
    pub short_name: Option<String>,
    pub long_name: Option<String>,
    pub route_type: i64,
    pub color: Option<String>,
    pub text_color: Option<String>,
    pub sort_order: Option<u64>,
}

pub struct TripRow {
    pub trip_id: String,
    pub route_id: String,
    pub service_id: String,
    pub headsign: Option<String>,
    pub direction_id: Option<i64>,
    pub block_id: Option<String>,
    /// stop_ids in stop_sequence order.
    pub stops: Vec<String>,
    /// First departure (or arrival) and last arrival (or departure), seconds.
    pub start: u32,
    pub end: u32,
}

pub struct StopRow {
    pub name: Option<String>,
    pub code: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

pub struct Weekly {
    /// Monday first.
    pub days: [bool; 7],
    pub start: Date,
    pub end: Date,
}

#[derive(Clone, PartialEq, Debug)]
pub struct Window {
    pub start: String,
    pub end: String,
    pub headway: u64,
    pub exact: bool,
}

/// One feed, read from its CSV files.
pub struct FeedCsv {
    pub name: String,
    pub routes: Vec<RouteRow>,
    pub trips: Vec<TripRow>,
    pub stops: HashMap<String, StopRow>,
    pub weekly: HashMap<String, Weekly>,
    pub added: HashSet<(String, Date)>,
    pub removed: HashSet<(String, Date)>,
    pub frequencies: HashMap<String, Vec<Window>>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl FeedCsv {
    pub fn load(name: &str) -> FeedCsv {
        let routes = fixture_table(
            name,
            "routes.txt",
            &[
                "route_id",
                "agency_id",
                "route_short_name",
                "route_long_name",
                "route_type",
                "route_color",
                "route_text_color",
                "route_sort_order",
            ],
        )
        .into_iter()
        .map(|r| RouteRow {
            route_id: r[0].clone(),
            agency_id: non_empty(&r[1]),
            short_name: non_empty(&r[2]),
            long_name: non_empty(&r[3]),
            route_type: r[4].parse().unwrap(),
            color: non_empty(&r[5]),
            text_color: non_empty(&r[6]),
            sort_order: non_empty(&r[7]).map(|s| s.parse().unwrap()),
        })
        .collect();

        // stop_times by trip: (sequence, stop_id, arrival, departure).
        type Event = (u32, String, Option<u32>, Option<u32>);
        let mut events: HashMap<String, Vec<Event>> = HashMap::new();
        for r in fixture_table(
            name,
            "stop_times.txt",
            &[
                "trip_id",
                "stop_sequence",
                "stop_id",
                "arrival_time",
                "departure_time",
            ],
        ) {
            let mut r = r.into_iter();
            let trip = r.next().unwrap();
            let seq = r.next().unwrap().parse().unwrap();
            let stop = r.next().unwrap();
            let arr = parse_gtfs_time(&r.next().unwrap());
            let dep = parse_gtfs_time(&r.next().unwrap());
            events.entry(trip).or_default().push((seq, stop, arr, dep));
        }
        let trips = fixture_table(
            name,
            "trips.txt",
            &[
                "trip_id",
                "route_id",
                "service_id",
                "trip_headsign",
                "direction_id",
                "block_id",
            ],
        )
        .into_iter()
        .map(|r| {
            let mut ev = events
                .remove(&r[0])
                .unwrap_or_else(|| panic!("{name}: trip {} has stop_times", r[0]));
            ev.sort_by_key(|e| e.0);
            let start = ev.iter().find_map(|e| e.3.or(e.2)).expect("a start time");
            let end = ev.iter().rev().find_map(|e| e.2.or(e.3)).expect("an end");
            TripRow {
                trip_id: r[0].clone(),
                route_id: r[1].clone(),
                service_id: r[2].clone(),
                headsign: non_empty(&r[3]),
                direction_id: non_empty(&r[4]).map(|d| d.parse().unwrap()),
                block_id: non_empty(&r[5]),
                stops: ev.into_iter().map(|e| e.1).collect(),
                start,
                end,
            }
        })
        .collect();

        let stops = fixture_table(
            name,
            "stops.txt",
            &["stop_id", "stop_name", "stop_code", "stop_lat", "stop_lon"],
        )
        .into_iter()
        .map(|r| {
            (
                r[0].clone(),
                StopRow {
                    name: non_empty(&r[1]),
                    code: non_empty(&r[2]),
                    lat: non_empty(&r[3]).map(|s| s.parse().unwrap()),
                    lon: non_empty(&r[4]).map(|s| s.parse().unwrap()),
                },
            )
        })
        .collect();

        let days = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        let mut columns = vec!["service_id", "start_date", "end_date"];
        columns.extend(days);
        let weekly = fixture_table(name, "calendar.txt", &columns)
            .into_iter()
            .map(|r| {
                let mut flags = [false; 7];
                for (i, f) in flags.iter_mut().enumerate() {
                    *f = r[3 + i] == "1";
                }
                (
                    r[0].clone(),
                    Weekly {
                        days: flags,
                        start: parse_gtfs_date(&r[1]),
                        end: parse_gtfs_date(&r[2]),
                    },
                )
            })
            .collect();
        let mut added = HashSet::new();
        let mut removed = HashSet::new();
        for r in fixture_table(
            name,
            "calendar_dates.txt",
            &["service_id", "date", "exception_type"],
        ) {
            let key = (r[0].clone(), parse_gtfs_date(&r[1]));
            match r[2].as_str() {
                "1" => added.insert(key),
                "2" => removed.insert(key),
                other => panic!("exception_type {other}"),
            };
        }
        let mut frequencies: HashMap<String, Vec<Window>> = HashMap::new();
        for r in fixture_table(
            name,
            "frequencies.txt",
            &[
                "trip_id",
                "start_time",
                "end_time",
                "headway_secs",
                "exact_times",
            ],
        ) {
            frequencies.entry(r[0].clone()).or_default().push(Window {
                start: format_gtfs_time(parse_gtfs_time(&r[1]).unwrap()),
                end: format_gtfs_time(parse_gtfs_time(&r[2]).unwrap()),
                headway: r[3].parse().unwrap(),
                exact: r[4] == "1",
            });
        }
        FeedCsv {
            name: name.to_owned(),
            routes,
            trips,
            stops,
            weekly,
            added,
            removed,
            frequencies,
        }
    }

    /// The feed, read once per test process (tests share it).
    pub async fn get(name: &str) -> Arc<FeedCsv> {
        type Cell = Arc<OnceLock<Arc<FeedCsv>>>;
        static CACHE: LazyLock<Mutex<HashMap<String, Cell>>> = LazyLock::new(Default::default);
        let cell = CACHE
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            cell.get_or_init(|| Arc::new(Self::load(&name))).clone()
        })
        .await
        .unwrap()
    }

    pub fn route(&self, id: &str) -> &RouteRow {
        self.routes.iter().find(|r| r.route_id == id).unwrap()
    }

    pub fn trips_of(&self, route_id: &str) -> Vec<&TripRow> {
        self.trips
            .iter()
            .filter(|t| t.route_id == route_id)
            .collect()
    }

    /// GTFS: a removal wins; then an addition, or the weekly pattern within its range.
    pub fn active(&self, service: &str, date: Date) -> bool {
        let key = (service.to_owned(), date);
        if self.removed.contains(&key) {
            return false;
        }
        if self.added.contains(&key) {
            return true;
        }
        self.weekly.get(service).is_some_and(|w| {
            w.start <= date
                && date <= w.end
                && w.days[date.weekday().to_monday_zero_offset() as usize]
        })
    }

    /// The route's trips running on `date`, sorted by start time, then trip_id.
    pub fn trips_on(&self, route_id: &str, date: Date) -> Vec<&TripRow> {
        let mut trips: Vec<&TripRow> = self
            .trips_of(route_id)
            .into_iter()
            .filter(|t| self.active(&t.service_id, date))
            .collect();
        trips.sort_by(|a, b| (a.start, &a.trip_id).cmp(&(b.start, &b.trip_id)));
        trips
    }
}
