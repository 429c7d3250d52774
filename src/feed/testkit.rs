//! What the feed tests share: the fixture zips, a CSV oracle that reads a zip's files
//! with the `zip` and `csv` crates (not gtfs-structures, not the code under test), and
//! small hand-made feeds. The tests of [`super::read`], [`super::network`] and
//! [`super::snapshot`] take their expected values from here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};

use jiff::civil::{Date, date};

use super::snapshot::FeedSnapshot;

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
pub(crate) use fixture;

/// One CSV file of a zip: header and rows, fields trimmed, BOM removed.
pub(crate) struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn col(&self, name: &str) -> usize {
        self.headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.headers))
    }

    /// The value of `name` in `row`, `None` when the column or the value is absent.
    pub(crate) fn get<'r>(&self, row: &'r [String], name: &str) -> Option<&'r str> {
        let i = self.headers.iter().position(|h| h == name)?;
        row.get(i).map(String::as_str).filter(|v| !v.is_empty())
    }
}

pub(crate) fn read_member(zip_bytes: &[u8], file: &str) -> Option<Vec<u8>> {
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

pub(crate) fn table(zip_bytes: &[u8], file: &str) -> Option<Table> {
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

pub(crate) fn rows(zip_bytes: &[u8], file: &str) -> usize {
    table(zip_bytes, file).map_or(0, |t| t.rows.len())
}

pub(crate) fn parse_time(s: &str) -> u32 {
    let mut parts = s.split(':').map(|p| p.parse::<u32>().unwrap());
    let (h, m, sec) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600 + m * 60 + sec
}

pub(crate) fn parse_date(s: &str) -> Date {
    date(
        s[0..4].parse().unwrap(),
        s[4..6].parse().unwrap(),
        s[6..8].parse().unwrap(),
    )
}

/// Per trip: its stop_ids in stop_sequence order.
pub(crate) fn stop_sequences(zip_bytes: &[u8]) -> HashMap<String, Vec<String>> {
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
pub(crate) fn active_services(zip_bytes: &[u8], day: Date) -> HashSet<String> {
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

pub(crate) fn load(name: &str, bytes: &[u8]) -> FeedSnapshot {
    FeedSnapshot::from_zip_bytes(name, "v1", &format!("{name}.zip"), bytes)
        .unwrap_or_else(|e| panic!("{name} does not load: {e}"))
}

/// The snapshot's counts equal the row counts of the zip's files.
pub(crate) fn assert_counts_match_csv(name: &str, bytes: &[u8]) -> FeedSnapshot {
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
pub(crate) fn csv_trips_of_route(bytes: &[u8], route_id: &str) -> Vec<Vec<String>> {
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
pub(crate) fn assert_trips_on_match_csv(name: &str, bytes: &[u8], days: &[Date]) -> Vec<usize> {
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
                    got.windows(2)
                        .all(|w| (w[0].start_time, &w[0].trip_id)
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

pub(crate) fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in files {
        out.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(text.as_bytes()).unwrap();
    }
    out.finish().unwrap().into_inner()
}

pub(crate) const AGENCY: &str =
    "agency_id,agency_name,agency_url,agency_timezone\nA,Agency,http://a.example,Europe/Paris\n";
pub(crate) const STOPS: &str =
    "stop_id,stop_name,stop_lat,stop_lon\nS1,One,48.1,2.1\nS2,Two,48.2,2.2\n";
pub(crate) const ROUTES: &str =
    "route_id,agency_id,route_short_name,route_long_name,route_type\nR1,A,1,One,3\n";
pub(crate) const TRIPS: &str =
    "route_id,service_id,trip_id,trip_headsign,direction_id\nR1,WK,T1,Two,0\n";
pub(crate) const STOP_TIMES: &str = "trip_id,arrival_time,departure_time,stop_id,stop_sequence\nT1,08:00:00,08:00:00,S1,1\nT1,08:10:00,08:10:00,S2,2\n";
pub(crate) const CALENDAR: &str = "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\nWK,1,1,1,1,1,0,0,20240101,20241231\n";

pub(crate) fn minimal_feed(routes: &str, trips: &str, stop_times: &str) -> Vec<u8> {
    zip_of(&[
        ("agency.txt", AGENCY),
        ("stops.txt", STOPS),
        ("routes.txt", routes),
        ("trips.txt", trips),
        ("stop_times.txt", stop_times),
        ("calendar.txt", CALENDAR),
    ])
}
