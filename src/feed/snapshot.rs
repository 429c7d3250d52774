//! An immutable in-memory snapshot of one GTFS feed, built from the bytes of its zip, and
//! the queries the route API and the waybill rules ask of it.
//!
//! [`FeedSnapshot::from_zip_within`] is the whole way in (the zip in memory or spooled to
//! a file, [`super::spool`]), in three steps, one module each:
//! [`super::read`] turns the bytes into the tables this service uses (or a
//! [`FeedError`]), [`super::network`] builds routes, patterns and trips from them, and this
//! module keeps the result with the indexes the queries need, plus an estimate of the
//! memory it holds (the route cache and `/memory-stats` weigh snapshots by it).
//!
//! Only what the service answers with is kept: agencies, route summaries, every route's
//! patterns (precomputed), trips with their first and last times and frequencies, and the
//! service calendar. Building a snapshot costs less than gtfs-structures' `Gtfs::from_reader`
//! alone on the same zip (BENCHMARKS.md).
//!
//! Times are seconds after the start of the service day ("noon minus 12h"), so a trip
//! leaving at `25:10:00` has `start_time` 90600 and belongs to the service date it
//! started from; [`super::model::format_gtfs_time`] writes them back in GTFS form.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use jiff::civil::Date;

use super::calendar::ServiceCalendar;
use super::error::FeedError;
use super::model::{AgencyInfo, RouteDetail, RouteSummary, TripInfo};
use super::network::{self, Budget, FeedCounts, Parts};
use super::read;
use super::spool::ZipBytes;

/// One feed, immutable once built; share it behind an `Arc`.
pub struct FeedSnapshot {
    pub gtfs_id: String,
    /// Given by the caller: the sha256 (hex) of the zip.
    pub version: String,
    /// Given by the caller: where the zip came from (URL or path).
    pub source: String,
    pub agencies: Vec<AgencyInfo>,
    /// In list order ([`RouteSummary::order_key`]): `sort_order` (routes without one
    /// last), then `route_id`.
    pub routes: Vec<RouteSummary>,
    /// `route_id` -> index in `routes` (and in `route_trips`).
    route_index: HashMap<String, usize>,
    /// Every route, patterns precomputed.
    pub route_details: HashMap<String, RouteDetail>,
    /// All kept trips; each route's trips are contiguous and sorted by
    /// (`start_time`, `trip_id`), so a route's trips are a slice, not a list of ids.
    pub(super) trips: Vec<TripInfo>,
    /// `trip_id` -> index in `trips`.
    trip_index: HashMap<String, u32>,
    /// Parallel to `routes`: the range of `trips` holding that route's trips.
    route_trips: Vec<Range<u32>>,
    pub calendar: ServiceCalendar,
    pub counts: FeedCounts,
    /// Estimate of the heap this snapshot holds (strings plus vec and map capacity).
    pub approx_bytes: usize,
    /// The most its build held allocated at once, the zip's raw tables included
    /// ([`crate::memory::thread_peak`]); 0 when the allocator could not say.
    pub build_peak_bytes: u64,
}

impl fmt::Debug for FeedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedSnapshot")
            .field("gtfs_id", &self.gtfs_id)
            .field("version", &self.version)
            .field("source", &self.source)
            .field("counts", &self.counts)
            .field("approx_bytes", &self.approx_bytes)
            .field("build_peak_bytes", &self.build_peak_bytes)
            .finish_non_exhaustive()
    }
}

impl FeedSnapshot {
    /// Parses a GTFS zip held in memory and builds the snapshot, with no memory bound
    /// ([`FeedSnapshot::from_zip_within`]).
    pub fn from_zip_bytes(
        gtfs_id: &str,
        version: &str,
        source: &str,
        bytes: &[u8],
    ) -> Result<Self, FeedError> {
        Self::from_zip_within(gtfs_id, version, source, bytes.into(), u64::MAX)
    }

    /// Parses a GTFS zip, in memory or spooled to a file ([`super::spool`]), and builds the
    /// snapshot, noting the most the build held allocated at once
    /// ([`FeedSnapshot::build_peak_bytes`]); stopped with [`FeedError::OverBudget`] as soon
    /// as the build holds more than `max_build_bytes` beyond the zip (`u64::MAX`: no bound).
    /// CPU-bound (seconds for a large feed): call it from `spawn_blocking`.
    pub fn from_zip_within(
        gtfs_id: &str,
        version: &str,
        source: &str,
        zip: ZipBytes<'_>,
        max_build_bytes: u64,
    ) -> Result<Self, FeedError> {
        let budget = Budget {
            max_bytes: max_build_bytes,
        };
        let (built, peak) =
            crate::memory::thread_peak(|| Self::build(gtfs_id, version, source, zip, budget));
        built.map(|snapshot| FeedSnapshot {
            build_peak_bytes: peak,
            ..snapshot
        })
    }

    fn build(
        gtfs_id: &str,
        version: &str,
        source: &str,
        zip: ZipBytes<'_>,
        budget: Budget,
    ) -> Result<Self, FeedError> {
        let tables = read::tables(gtfs_id, zip)?;
        budget.check()?;
        let Parts {
            agencies,
            calendar,
            counts,
            network,
        } = network::build(gtfs_id, tables, budget)?;
        budget.check()?;
        let mut snapshot = FeedSnapshot {
            gtfs_id: gtfs_id.to_owned(),
            version: version.to_owned(),
            source: source.to_owned(),
            agencies,
            routes: network.routes,
            route_index: network.route_index,
            route_details: network.route_details,
            trips: network.trips,
            trip_index: network.trip_index,
            route_trips: network.route_trips,
            calendar,
            counts,
            approx_bytes: 0,
            build_peak_bytes: 0,
        };
        snapshot.approx_bytes = snapshot.estimate_heap_bytes();
        Ok(snapshot)
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

#[cfg(test)]
mod tests {
    //! Expected values come from the zips themselves, read with the `zip` and `csv` crates
    //! (not gtfs-structures, not the code under test): see [`crate::feed::testkit`].

    use super::*;
    use crate::feed::model::format_gtfs_time;
    use crate::feed::testkit::*;
    use gtfs_structures::GtfsReader;
    use jiff::civil::date;

    /// `bytes` spooled to a temporary file, as a large download is.
    fn in_file(bytes: &[u8]) -> crate::feed::spool::Spool {
        let mut spool = crate::feed::spool::SpoolWriter::spooling_at(0);
        for chunk in bytes.chunks(100_000) {
            spool.write(chunk).unwrap();
        }
        let spool = spool.finish().unwrap();
        assert_eq!(spool.in_file(), !bytes.is_empty());
        spool
    }

    fn from_file(bytes: &[u8]) -> Result<FeedSnapshot, FeedError> {
        FeedSnapshot::from_zip_within("x", "v", "s", in_file(bytes).bytes(), u64::MAX)
    }

    /// Read from a spool's file, a zip builds what it builds from memory (the sample
    /// feed through the short-row repair too).
    #[test]
    fn a_spooled_zip_builds_the_same_snapshot_as_one_in_memory() {
        for (name, bytes) in [
            ("sample-feed", fixture!("sample-feed")),
            ("caltrain", fixture!("caltrain")),
            ("bart", fixture!("bart")),
        ] {
            let memory = FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes).unwrap();
            let file = from_file(&bytes).unwrap();
            assert!(memory.counts.stop_times > 0, "{name}");
            assert_eq!(file.counts, memory.counts, "{name}");
            assert_eq!(file.routes, memory.routes, "{name}");
            assert_eq!(file.route_details, memory.route_details, "{name}");
            assert_eq!(file.trips, memory.trips, "{name}");
            assert_eq!(file.approx_bytes, memory.approx_bytes, "{name}");
        }
    }

    /// Read from a spool's file, a broken zip fails with the error it fails with from
    /// memory: cut short, a member's compressed bytes damaged, a bad row, a file missing.
    #[test]
    fn a_spooled_zip_fails_as_one_in_memory() {
        let caltrain = fixture!("caltrain");
        let damaged = |member: &str| {
            let mut bytes = caltrain.clone();
            let archive = zip::ZipArchive::new(std::io::Cursor::new(&caltrain)).unwrap();
            let index = archive.index_for_name(member).unwrap();
            let mut archive = archive;
            let file = archive.by_index(index).unwrap();
            let (start, len) = (
                file.data_start().unwrap() as usize,
                file.compressed_size() as usize,
            );
            drop(file);
            for b in &mut bytes[start + len / 3..start + len / 3 + 64] {
                *b ^= 0x5a;
            }
            bytes
        };
        let bad_row = minimal_feed(
            ROUTES,
            TRIPS,
            &format!("{STOP_TIMES}T1,8:x,08:20:00,S3,3\n"),
        );
        for (case, bytes) in [
            ("cut short", caltrain[..caltrain.len() / 2].to_vec()),
            ("stop_times.txt damaged", damaged("stop_times.txt")),
            ("trips.txt damaged", damaged("trips.txt")),
            ("a bad stop_times row", bad_row),
            ("no stop_times.txt", zip_of(&[("agency.txt", AGENCY)])),
            ("empty", Vec::new()),
        ] {
            let want = FeedSnapshot::from_zip_bytes("x", "v", "s", &bytes).unwrap_err();
            assert_eq!(from_file(&bytes).unwrap_err(), want, "{case}");
        }
    }

    /// A build is stopped once it holds more than its budget, with the figures; the same
    /// feed builds within a budget that fits it.
    #[test]
    fn a_build_over_its_memory_budget_is_stopped() {
        let bytes = fixture!("bart");
        let err = FeedSnapshot::from_zip_within("bart", "v", "s", (&bytes[..]).into(), 500_000)
            .unwrap_err();
        let FeedError::OverBudget { held, max } = err else {
            panic!("{err:?}");
        };
        assert_eq!(max, 500_000);
        assert!(held > max, "{held}");
        assert!(
            err.to_string().contains("over max_build_bytes (500000)"),
            "{err}"
        );
        let snapshot =
            FeedSnapshot::from_zip_within("bart", "v", "s", (&bytes[..]).into(), 64 << 20).unwrap();
        assert!(snapshot.build_peak_bytes > 500_000);
        assert!(snapshot.build_peak_bytes < 64 << 20);
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
}
