//! Building the route network of a feed: from the tables that [`super::read`] gives to
//! what a [`super::snapshot::FeedSnapshot`] answers with: the routes in list order, every
//! route's patterns (precomputed), and the kept trips with their first and last times and
//! their frequencies. `stop_times.txt`, the largest table, is folded into patterns and
//! trip times here and then dropped.
//!
//! `build` runs a series of named steps, each a function that says what it does and why.
//! They work on compact integer records (stops and trips numbered, a stop_time reduced to
//! a 16-byte `StopEvent`) and free the rows they are done with before the next step
//! allocates, so building costs less time and memory than gtfs-structures' own `Gtfs`.
//!
//! Nothing here fails: [`super::read`] has already refused what cannot be read. Dangling
//! references are noted (one warning per feed, at the end) and handled: stop_times or
//! frequencies of unknown trips are dropped; a stop_id missing from `stops.txt` still
//! appears in patterns, without name or position; trips of unknown routes, and trips
//! without stop_times or without any time, are left out and counted in
//! [`FeedCounts::skipped_trips`].

use std::collections::HashMap;
use std::ops::{ControlFlow, Range};

use gtfs_structures::{
    Agency, DirectionType, ExactTimes, RawFrequency, RawTrip, Route, RouteType, Stop,
};
use serde::Serialize;

use super::calendar::ServiceCalendar;
use super::error::FeedError;
use super::model::{
    AgencyInfo, FrequencyWindow, Pattern, RouteDetail, RouteSummary, StopRef, TripInfo,
    mode_of_route_type, sort_routes,
};
use super::read::Tables;
use super::stop_times::{RowCount, StopTimeRow, StopTimesFile};

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

/// The snapshot's parts, before the caller's ids are attached.
pub(super) struct Parts {
    pub agencies: Vec<AgencyInfo>,
    pub calendar: ServiceCalendar,
    pub counts: FeedCounts,
    pub network: Network,
}

/// Routes and trips, the part of [`Parts`] built from routes, stops, trips and stop_times.
pub(super) struct Network {
    /// In list order ([`RouteSummary::order_key`]), one per `route_id`.
    pub routes: Vec<RouteSummary>,
    /// `route_id` -> index in `routes` (and in `route_trips`).
    pub route_index: HashMap<String, usize>,
    /// Every route, patterns precomputed.
    pub route_details: HashMap<String, RouteDetail>,
    /// All kept trips; each route's trips are contiguous and sorted by
    /// (`start_time`, `trip_id`).
    pub trips: Vec<TripInfo>,
    /// `trip_id` -> index in `trips`.
    pub trip_index: HashMap<String, u32>,
    /// Parallel to `routes`: the range of `trips` holding that route's trips.
    pub route_trips: Vec<Range<u32>>,
}

/// Builds the parts of a snapshot from the feed's tables, reading `stop_times.txt` on the
/// way; its rows are the only error left. CPU-bound, as the caller is.
pub(super) fn build(gtfs_id: &str, tables: Tables, budget: Budget) -> Result<Parts, FeedError> {
    Builder {
        gtfs_id,
        budget,
        notes: Vec::new(),
    }
    .build(tables)
}

/// The memory a build may hold beyond the zip (`max_build_bytes`), checked after each
/// step and every [`Budget::EVERY_ROWS`] stop_times rows against this thread's peak
/// ([`crate::memory::thread_peak_so_far`]), so a feed too large for the budget is
/// stopped early, not after it has taken the memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub max_bytes: u64,
}

impl Budget {
    /// Rows between two checks: a check costs one `mallctl`.
    const EVERY_ROWS: usize = 1 << 16;

    pub fn check(self) -> Result<(), FeedError> {
        if self.max_bytes == u64::MAX {
            return Ok(());
        }
        let held = crate::memory::thread_peak_so_far();
        if held > self.max_bytes {
            return Err(FeedError::OverBudget {
                held,
                max: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// [`Budget::check`] every [`Budget::EVERY_ROWS`] rows of a streamed file: the first
/// failure is kept, to return once the stream has stopped.
struct RowBudget {
    budget: Budget,
    rows: usize,
    over: Result<(), FeedError>,
}

impl RowBudget {
    fn new(budget: Budget) -> Self {
        RowBudget {
            budget,
            rows: 0,
            over: Ok(()),
        }
    }

    /// Counts a row; `Break` once the build holds more than its budget.
    fn tick(&mut self) -> ControlFlow<()> {
        self.rows += 1;
        if self.rows.is_multiple_of(Budget::EVERY_ROWS) {
            self.over = self.budget.check();
            if self.over.is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// How stops and trips are numbered while stop_times is folded: stops.txt's stops, then
/// unknown stop ids; trips.txt's trips.
#[derive(Clone, Copy)]
struct Numbering<'i> {
    stops: &'i IdIndex<'i>,
    trips: &'i IdIndex<'i>,
    /// Rows of stops.txt: unknown stops are numbered after them.
    known_stops: usize,
    /// Rows of trips.txt.
    trip_total: usize,
}

/// No time given (stop_times fields are optional except at the ends of a trip).
const NO_TIME: u32 = u32::MAX;

/// A stop_time reduced to what the snapshot needs: 16 bytes, and only for one trip at a
/// time (or, when the file is not grouped by trip, for the whole file).
#[derive(Clone, Copy)]
struct StopEvent {
    sequence: u32,
    stop: u32,
    arrival: u32,
    departure: u32,
}

/// Trips or stops by id, numbered in file order: looked up once per stop_times row, so with
/// a fast (seeded) hasher.
type IdIndex<'a> = foldhash::HashMap<&'a str, u32>;

/// No stop sequence: the trip has no stop_times.
const NO_SEQUENCE: u32 = u32::MAX;

/// What a trip's stop_times come to in the snapshot: its stop sequence (a number in
/// [`TripShapes::sequences`]) and its first and last times.
#[derive(Clone, Copy)]
struct TripShape {
    /// [`NO_SEQUENCE`] when the trip has no stop_times.
    sequence: u32,
    /// [`NO_TIME`] (both) when no stop_time of the trip has a time.
    start: u32,
    end: u32,
}

/// Every trip's [`TripShape`] (parallel to trips.txt's rows), and the distinct stop
/// sequences they use: a feed has far fewer of them than trips, and far fewer trips than
/// stop_times.
struct TripShapes {
    shapes: Vec<TripShape>,
    /// Sequence `n`'s stops, each stop numbered as in [`StopNames`].
    sequences: Vec<Box<[u32]>>,
    /// stop_ids that stop_times use but stops.txt lacks, numbered after stops.txt's stops.
    unknown_stops: Vec<String>,
}

impl TripShapes {
    fn of(&self, trip: u32) -> TripShape {
        self.shapes[trip as usize]
    }
}

/// Folds stop_times rows, in file order, into [`TripShapes`]: rows are numbered (trip and
/// stop), a trip's events are kept until it is [finished](Self::finish), and the stop
/// sequence is interned.
struct ShapeFold<'i> {
    numbering: Numbering<'i>,
    unknown_stops: Vec<String>,
    unknown_stop_index: foldhash::HashMap<String, u32>,
    orphan_rows: usize,
    shapes: Vec<TripShape>,
    interned: foldhash::HashMap<Box<[u32]>, u32>,
}

impl<'i> ShapeFold<'i> {
    fn new(numbering: Numbering<'i>) -> Self {
        ShapeFold {
            numbering,
            unknown_stops: Vec::new(),
            unknown_stop_index: Default::default(),
            orphan_rows: 0,
            shapes: vec![
                TripShape {
                    sequence: NO_SEQUENCE,
                    start: NO_TIME,
                    end: NO_TIME,
                };
                numbering.trip_total
            ],
            interned: Default::default(),
        }
    }

    /// The row's trip number and event; `None` for a row of an unknown trip (counted). An
    /// unknown stop_id gets a number after stops.txt's, in order of first appearance.
    fn event(&mut self, row: &StopTimeRow) -> Option<(u32, StopEvent)> {
        let Some(&trip) = self.numbering.trips.get(row.trip_id) else {
            self.orphan_rows += 1;
            return None;
        };
        let stop = match self.numbering.stops.get(row.stop_id) {
            Some(&s) => s,
            None => match self.unknown_stop_index.get(row.stop_id) {
                Some(&s) => s,
                None => {
                    let s = (self.numbering.known_stops + self.unknown_stops.len()) as u32;
                    self.unknown_stops.push(row.stop_id.to_owned());
                    self.unknown_stop_index.insert(row.stop_id.to_owned(), s);
                    s
                }
            },
        };
        Some((
            trip,
            StopEvent {
                sequence: row.stop_sequence,
                stop,
                arrival: row.arrival_time.unwrap_or(NO_TIME),
                departure: row.departure_time.unwrap_or(NO_TIME),
            },
        ))
    }

    fn is_finished(&self, trip: u32) -> bool {
        self.shapes[trip as usize].sequence != NO_SEQUENCE
    }

    /// Records a trip from all its events (in file order; sorted here by `stop_sequence`,
    /// stably, so equal sequences keep file order).
    fn finish(&mut self, trip: u32, events: &mut [StopEvent]) {
        if !events.is_sorted_by_key(|e| e.sequence) {
            events.sort_by_key(|e| e.sequence);
        }
        let (start, end) = trip_times(events).unwrap_or((NO_TIME, NO_TIME));
        let stops: Box<[u32]> = events.iter().map(|e| e.stop).collect();
        let next = self.interned.len() as u32;
        let sequence = *self.interned.entry(stops).or_insert(next);
        self.shapes[trip as usize] = TripShape {
            sequence,
            start,
            end,
        };
    }

    fn into_shapes(self) -> (TripShapes, usize) {
        let mut sequences: Vec<Box<[u32]>> = vec![Box::default(); self.interned.len()];
        for (stops, n) in self.interned {
            sequences[n as usize] = stops;
        }
        (
            TripShapes {
                shapes: self.shapes,
                sequences,
                unknown_stops: self.unknown_stops,
            },
            self.orphan_rows,
        )
    }
}

/// Stops by number, for the patterns' [`StopRef`]s: stops.txt's rows, then the unknown
/// stop_ids.
struct StopNames<'a> {
    stops: &'a [Stop],
    unknown: &'a [String],
}

impl StopNames<'_> {
    fn stop_ref(&self, i: u32) -> StopRef {
        match self.stops.get(i as usize) {
            Some(s) => StopRef {
                stop_id: s.id.clone(),
                name: s.name.clone(),
                code: s.code.clone(),
                lat: s.latitude,
                lon: s.longitude,
            },
            None => StopRef {
                stop_id: self.unknown[i as usize - self.stops.len()].clone(),
                name: None,
                code: None,
                lat: None,
                lon: None,
            },
        }
    }
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
    budget: Budget,
    /// Problems that are tolerated, reported in one warning at the end.
    notes: Vec<String>,
}

impl Builder<'_> {
    /// Counts the rows, converts agencies and the calendar, builds the network, and
    /// reports what was tolerated.
    fn build(mut self, tables: Tables) -> Result<Parts, FeedError> {
        let Tables {
            agencies,
            routes,
            stops,
            trips,
            stop_times,
            frequencies,
            calendar,
            calendar_dates,
            notes,
        } = tables;
        self.notes = notes;
        if calendar.is_empty() && calendar_dates.is_empty() {
            self.notes
                .push("no calendar.txt or calendar_dates.txt rows: no trip ever runs".to_owned());
        }
        let mut counts = FeedCounts {
            agencies: agencies.len(),
            routes: routes.len(),
            stops: stops.len(),
            trips: trips.len(),
            stop_times: 0,
            calendar: calendar.len(),
            calendar_dates: calendar_dates.len(),
            frequencies: frequencies.len(),
            patterns: 0,
            skipped_trips: 0,
        };
        let agencies = agencies.into_iter().map(agency_info).collect();
        let calendar = ServiceCalendar::new(calendar, calendar_dates);
        let network = self.network(routes, stops, trips, &stop_times, frequencies, &mut counts)?;
        self.report(&counts);
        Ok(Parts {
            agencies,
            calendar,
            counts,
            network,
        })
    }

    /// The steps from the raw rows to routes, patterns and trips, in order. Each step
    /// frees what the next ones no longer need.
    fn network(
        &mut self,
        routes: Vec<Route>,
        stops: Vec<Stop>,
        raw_trips: Vec<RawTrip>,
        stop_times: &StopTimesFile,
        frequencies: Vec<RawFrequency>,
        counts: &mut FeedCounts,
    ) -> Result<Network, FeedError> {
        let routes = self.route_list(routes);
        let route_index: HashMap<String, usize> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.route_id.clone(), i))
            .collect();
        let stop_index = stop_numbers(&stops);
        let trip_index_raw = self.trip_numbers(&raw_trips);
        let numbering = Numbering {
            stops: &stop_index,
            trips: &trip_index_raw,
            known_stops: stops.len(),
            trip_total: raw_trips.len(),
        };
        let shapes = self.trip_shapes(stop_times, numbering, counts)?;
        let mut trip_windows =
            self.frequency_windows(&frequencies, &trip_index_raw, raw_trips.len());
        let mut by_route = self.trips_by_route(&raw_trips, &route_index, &shapes, counts);

        let stop_names = StopNames {
            stops: &stops,
            unknown: &shapes.unknown_stops,
        };
        let mut plans: Vec<Vec<TripPlan>> = Vec::with_capacity(routes.len());
        let mut route_patterns: Vec<Vec<Pattern>> = Vec::with_capacity(routes.len());
        for (route, group) in routes.iter().zip(&mut by_route) {
            let (patterns, route_plans) =
                patterns_of_route(&route.route_id, group, &raw_trips, &shapes, &stop_names);
            counts.patterns += patterns.len();
            route_patterns.push(patterns);
            plans.push(route_plans);
        }
        drop(by_route);
        drop(stop_index);
        drop(trip_index_raw);
        drop(shapes);
        drop(stops);

        let (trips, route_trips) = kept_trips(raw_trips, plans, &mut trip_windows);
        let trip_index: HashMap<String, u32> = trips
            .iter()
            .enumerate()
            .map(|(i, t)| (t.trip_id.clone(), i as u32))
            .collect();
        let route_details = route_details(&routes, route_patterns, &route_trips);
        Ok(Network {
            routes,
            route_index,
            route_details,
            trips,
            trip_index,
            route_trips,
        })
    }

    /// The route summaries in list order, one per `route_id`. A duplicated route_id
    /// (invalid, rare) keeps its last row, as gtfs-structures does.
    fn route_list(&mut self, routes: Vec<Route>) -> Vec<RouteSummary> {
        let mut routes: Vec<RouteSummary> = routes.into_iter().map(route_summary).collect();
        // A stable sort by id keeps file order within an id; reversed, dedup keeps the last.
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
        routes
    }

    /// Trips by id, numbered in trips.txt order. A duplicated trip_id resolves to its last
    /// row, so the earlier rows get no stop_times and are left out later.
    fn trip_numbers<'t>(&mut self, raw_trips: &'t [RawTrip]) -> IdIndex<'t> {
        let mut trip_index_raw =
            IdIndex::with_capacity_and_hasher(raw_trips.len(), Default::default());
        for (i, t) in raw_trips.iter().enumerate() {
            trip_index_raw.insert(t.id.as_str(), i as u32);
        }
        if trip_index_raw.len() < raw_trips.len() {
            self.notes.push(format!(
                "{} duplicate trip_id rows in trips.txt",
                raw_trips.len() - trip_index_raw.len()
            ));
        }
        trip_index_raw
    }

    /// Reads stop_times.txt as a stream and folds every trip into its [`TripShape`]. Real
    /// feeds list a trip's rows together, so a trip is finished when the next trip's rows
    /// begin, and only one trip's events are ever held. If a trip's rows turn out to be
    /// scattered, the file is read again and its events are grouped first
    /// ([`Self::grouped_shapes`]): same result, more memory.
    fn trip_shapes(
        &mut self,
        stop_times: &StopTimesFile,
        numbering: Numbering<'_>,
        counts: &mut FeedCounts,
    ) -> Result<TripShapes, FeedError> {
        let mut fold = ShapeFold::new(numbering);
        let mut current: Option<u32> = None;
        let mut events: Vec<StopEvent> = Vec::new();
        let mut scattered = false;
        let mut budget = RowBudget::new(self.budget);
        let read = stop_times.for_each_row(|row| {
            budget.tick()?;
            let Some((trip, event)) = fold.event(&row) else {
                return ControlFlow::Continue(());
            };
            if current != Some(trip) {
                if let Some(done) = current {
                    fold.finish(done, &mut events);
                    events.clear();
                }
                if fold.is_finished(trip) {
                    scattered = true;
                    return ControlFlow::Break(());
                }
                current = Some(trip);
            }
            events.push(event);
            ControlFlow::Continue(())
        })?;
        budget.over?;
        let (shapes, read) = if scattered {
            drop(fold);
            self.grouped_shapes(stop_times, numbering)?
        } else {
            if let Some(done) = current {
                fold.finish(done, &mut events);
            }
            let (shapes, orphans) = fold.into_shapes();
            (shapes, (read, orphans))
        };
        let (read, orphan_rows) = read;
        self.note_stop_times(read, orphan_rows, &shapes.unknown_stops);
        counts.stop_times = read.rows;
        Ok(shapes)
    }

    /// The way for a file whose trips' rows are scattered: every row as an event, grouped
    /// by trip with a counting sort (no per-trip `Vec`), then each trip finished.
    fn grouped_shapes(
        &mut self,
        stop_times: &StopTimesFile,
        numbering: Numbering<'_>,
    ) -> Result<(TripShapes, (RowCount, usize)), FeedError> {
        let trip_total = numbering.trip_total;
        let mut fold = ShapeFold::new(numbering);
        let mut bounds = vec![0u32; trip_total + 1];
        let mut trip_of_event: Vec<u32> = Vec::new();
        let mut unsorted: Vec<StopEvent> = Vec::new();
        let mut budget = RowBudget::new(self.budget);
        let read = stop_times.for_each_row(|row| {
            budget.tick()?;
            if let Some((trip, event)) = fold.event(&row) {
                bounds[trip as usize + 1] += 1;
                trip_of_event.push(trip);
                unsorted.push(event);
            }
            ControlFlow::Continue(())
        })?;
        budget.over?;
        for i in 1..bounds.len() {
            bounds[i] += bounds[i - 1];
        }
        let mut cursor = bounds.clone();
        let mut events = vec![
            StopEvent {
                sequence: 0,
                stop: 0,
                arrival: NO_TIME,
                departure: NO_TIME,
            };
            unsorted.len()
        ];
        for (e, &t) in unsorted.iter().zip(&trip_of_event) {
            let slot = &mut cursor[t as usize];
            events[*slot as usize] = *e;
            *slot += 1;
        }
        drop(unsorted);
        drop(trip_of_event);
        drop(cursor);
        for t in 0..trip_total {
            let range = bounds[t] as usize..bounds[t + 1] as usize;
            if !range.is_empty() {
                fold.finish(t as u32, &mut events[range]);
            }
        }
        let (shapes, orphans) = fold.into_shapes();
        Ok((shapes, (read, orphans)))
    }

    /// Notes what reading stop_times.txt tolerated.
    fn note_stop_times(&mut self, read: RowCount, orphan_rows: usize, unknown_stops: &[String]) {
        if read.padded > 0 {
            self.notes.push(format!(
                "{} stop_times.txt rows shorter than their header padded with empty fields",
                read.padded
            ));
        }
        if orphan_rows > 0 {
            self.notes.push(format!(
                "{orphan_rows} stop_times rows of unknown trips dropped"
            ));
        }
        if let Some(first) = unknown_stops.first() {
            self.notes.push(format!(
                "{} stop_id(s) used in stop_times.txt but missing from stops.txt (first: {first})",
                unknown_stops.len(),
            ));
        }
    }

    /// Each trip's frequencies.txt windows, by start time; windows of unknown trips are
    /// dropped.
    fn frequency_windows(
        &mut self,
        frequencies: &[RawFrequency],
        trip_index_raw: &IdIndex<'_>,
        trip_total: usize,
    ) -> Vec<Vec<FrequencyWindow>> {
        let mut windows: Vec<(u32, FrequencyWindow)> = Vec::with_capacity(frequencies.len());
        let mut orphan_frequencies = 0usize;
        for f in frequencies {
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
        let mut trip_windows: Vec<Vec<FrequencyWindow>> = vec![Vec::new(); trip_total];
        for (t, w) in windows {
            trip_windows[t as usize].push(w);
        }
        trip_windows
    }

    /// The trips that are kept, grouped by route (parallel to the route list). Trips of
    /// unknown routes, without stop_times or without any time are left out and counted.
    fn trips_by_route(
        &mut self,
        raw_trips: &[RawTrip],
        route_index: &HashMap<String, usize>,
        shapes: &TripShapes,
        counts: &mut FeedCounts,
    ) -> Vec<Vec<u32>> {
        let mut by_route: Vec<Vec<u32>> = vec![Vec::new(); route_index.len()];
        let mut no_route = 0usize;
        let mut no_times = 0usize;
        let mut no_stop_times = 0usize;
        for (i, t) in raw_trips.iter().enumerate() {
            let Some(&r) = route_index.get(t.route_id.as_str()) else {
                no_route += 1;
                continue;
            };
            let shape = shapes.of(i as u32);
            if shape.sequence == NO_SEQUENCE {
                no_stop_times += 1;
            } else if shape.start == NO_TIME {
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
        by_route
    }

    /// Logs the tolerated problems in one warning.
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

/// Stops by id, numbered in stops.txt order.
fn stop_numbers(stops: &[Stop]) -> IdIndex<'_> {
    let mut stop_index = IdIndex::with_capacity_and_hasher(stops.len(), Default::default());
    for (i, s) in stops.iter().enumerate() {
        stop_index.insert(s.id.as_str(), i as u32);
    }
    stop_index
}

/// One route's patterns and its trips' plans. A pattern is a distinct (direction, stop
/// sequence); patterns are numbered per direction in order of first appearance, trips
/// taken in `trip_id` order so that the numbers do not depend on the file's row order.
fn patterns_of_route<'a>(
    route_id: &str,
    group: &mut [u32],
    raw_trips: &'a [RawTrip],
    shapes: &'a TripShapes,
    stops: &StopNames,
) -> (Vec<Pattern>, Vec<TripPlan>) {
    group.sort_unstable_by(|&a, &b| raw_trips[a as usize].id.cmp(&raw_trips[b as usize].id));
    let mut accs: Vec<PatternAcc<'a>> = Vec::new();
    let mut lookup: HashMap<(Option<u8>, u32), u32> = HashMap::new();
    let mut next_number: [u32; 3] = [0; 3];
    let mut plans = Vec::with_capacity(group.len());
    for &i in group.iter() {
        let t = &raw_trips[i as usize];
        let TripShape {
            sequence,
            start,
            end,
        } = shapes.of(i);
        let direction = t.direction_id.map(direction_number);
        let key = (direction, sequence);
        let pattern = *lookup.entry(key).or_insert_with(|| {
            let slot = direction.map_or(2, usize::from);
            let number = next_number[slot];
            next_number[slot] += 1;
            accs.push(PatternAcc {
                direction,
                number,
                stops: &shapes.sequences[sequence as usize],
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
        plans.push(TripPlan { raw: i, start, end });
    }
    // Directions 0, 1, then none; within one, by number (first appearance).
    accs.sort_by_key(|a| (a.direction.is_none(), a.direction, a.number));
    let patterns = accs
        .into_iter()
        .map(|acc| finish_pattern(route_id, acc, stops))
        .collect();
    (patterns, plans)
}

/// A built pattern: its id `{route_id}:{direction or x}:{number}`, the headsign most of
/// its trips show (on a tie, the smallest), its stops.
fn finish_pattern(route_id: &str, acc: PatternAcc, stops: &StopNames) -> Pattern {
    Pattern {
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
        stops: acc.stops.iter().map(|&s| stops.stop_ref(s)).collect(),
        trip_count: acc.trip_count,
    }
}

/// The kept trips, each route's trips contiguous and sorted by (`start_time`, `trip_id`);
/// and each route's range of them.
///
/// Made in the raw rows' own memory, not beside it: for a national feed the trips are the
/// largest thing a build holds, and two arrays of them at once were its peak. The final
/// order is worked out first (4 bytes a trip), each raw row then becomes its `TripInfo`
/// in place (`collect` reuses the allocation: a `TripInfo` is smaller than a `RawTrip`),
/// the rows are put in that order by swaps, and the trips left out are dropped from the
/// end.
fn kept_trips(
    raw_trips: Vec<RawTrip>,
    mut plans: Vec<Vec<TripPlan>>,
    trip_windows: &mut [Vec<FrequencyWindow>],
) -> (Vec<TripInfo>, Vec<Range<u32>>) {
    // The order: route by route (list order), then (start_time, trip_id).
    let mut order: Vec<u32> = Vec::with_capacity(raw_trips.len());
    let mut route_trips: Vec<Range<u32>> = Vec::with_capacity(plans.len());
    for route_plans in &mut plans {
        route_plans.sort_unstable_by(|a, b| {
            (a.start, &raw_trips[a.raw as usize].id).cmp(&(b.start, &raw_trips[b.raw as usize].id))
        });
        let first = order.len() as u32;
        order.extend(route_plans.iter().map(|p| p.raw));
        route_trips.push(first..order.len() as u32);
    }
    let kept = order.len();
    let mut times = vec![(0u32, 0u32); raw_trips.len()];
    for plan in plans.iter().flatten() {
        times[plan.raw as usize] = (plan.start, plan.end);
    }
    drop(plans);
    // The trips left out go last, in any order.
    let mut placed = vec![false; raw_trips.len()];
    for &raw in &order {
        placed[raw as usize] = true;
    }
    order.extend((0..raw_trips.len() as u32).filter(|&raw| !placed[raw as usize]));
    drop(placed);

    let mut trips: Vec<TripInfo> = raw_trips
        .into_iter()
        .zip(times)
        .zip(trip_windows.iter_mut())
        .map(|((t, (start_time, end_time)), windows)| TripInfo {
            trip_id: t.id,
            route_id: t.route_id,
            service_id: t.service_id,
            headsign: t.trip_headsign,
            direction_id: t.direction_id.map(direction_number),
            block_id: t.block_id,
            start_time,
            end_time,
            frequencies: std::mem::take(windows),
        })
        .collect();
    permute(&mut trips, order);
    trips.truncate(kept);
    // The raw rows' allocation was larger (and had room to grow): give the rest back.
    trips.shrink_to_fit();
    (trips, route_trips)
}

/// Reorders `items` in place so that `items[i]` becomes what was at `order[i]` (`order` a
/// permutation of the indices), following each cycle with swaps.
fn permute<T>(items: &mut [T], mut order: Vec<u32>) {
    const DONE: u32 = u32::MAX;
    for start in 0..items.len() {
        if order[start] == DONE {
            continue;
        }
        // Position `i` takes what is at `order[i]`; along the cycle, swapping `i` with
        // `order[i]` brings each item home, and the last step closes the cycle.
        let mut i = start;
        loop {
            let from = order[i] as usize;
            order[i] = DONE;
            if from == start {
                break;
            }
            items.swap(i, from);
            i = from;
        }
    }
}

/// Every route's detail: its summary, patterns and trip count.
fn route_details(
    routes: &[RouteSummary],
    route_patterns: Vec<Vec<Pattern>>,
    route_trips: &[Range<u32>],
) -> HashMap<String, RouteDetail> {
    routes
        .iter()
        .zip(route_patterns)
        .zip(route_trips)
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
        .collect()
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
    //! (not gtfs-structures, not the code under test): see [`crate::feed::testkit`].

    use crate::feed::testkit::*;
    use jiff::civil::date;
    use std::collections::{BTreeMap, HashMap, HashSet};

    /// The zip with stop_times.txt's rows sorted by stop_sequence (then file order), so
    /// that no trip's rows are together any more.
    fn with_scattered_stop_times(zip_bytes: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for i in 0..archive.len() {
            let mut member = archive.by_index(i).unwrap();
            let name = member.name().to_owned();
            let mut data = Vec::new();
            member.read_to_end(&mut data).unwrap();
            if name.ends_with("stop_times.txt") {
                let mut reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .from_reader(&data[..]);
                let headers = reader.headers().unwrap().clone();
                let seq = headers
                    .iter()
                    .position(|h| h.trim() == "stop_sequence")
                    .unwrap();
                let mut rows: Vec<csv::StringRecord> =
                    reader.records().map(Result::unwrap).collect();
                rows.sort_by_key(|r| r[seq].trim().parse::<u32>().unwrap());
                let mut writer = csv::WriterBuilder::new()
                    .flexible(true)
                    .from_writer(Vec::new());
                writer.write_record(&headers).unwrap();
                for row in &rows {
                    writer.write_record(row).unwrap();
                }
                data = writer.into_inner().unwrap();
            }
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            out.start_file(name, options).unwrap();
            out.write_all(&data).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    /// A trip's rows are folded as they stream by when the file lists them together, and
    /// grouped first when it does not: both ways give the same snapshot, on real feeds
    /// (sample-feed with its short rows and frequencies, caltrain, bart).
    /// In-place reordering gives what a copy in the new order gives, on every
    /// permutation of 6 items and on a few long ones.
    #[test]
    fn permute_puts_each_item_where_the_order_says() {
        fn check(order: Vec<u32>) {
            let items: Vec<String> = (0..order.len()).map(|i| format!("item {i}")).collect();
            let want: Vec<String> = order.iter().map(|&i| items[i as usize].clone()).collect();
            let mut got = items;
            super::permute(&mut got, order.clone());
            assert_eq!(got, want, "{order:?}");
        }
        fn all(prefix: Vec<u32>, rest: Vec<u32>, out: &mut Vec<Vec<u32>>) {
            if rest.is_empty() {
                out.push(prefix);
                return;
            }
            for (k, &x) in rest.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(x);
                let mut r = rest.clone();
                r.remove(k);
                all(p, r, out);
            }
        }
        let mut orders = Vec::new();
        all(Vec::new(), (0..6).collect(), &mut orders);
        assert_eq!(orders.len(), 720);
        for order in orders {
            check(order);
        }
        let mut state = 0x9e37_79b9_u64;
        for n in [0usize, 1, 1000, 4096] {
            let mut order: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            check(order);
        }
    }

    #[test]
    fn scattered_stop_times_give_the_same_snapshot_as_grouped_ones() {
        for (name, bytes) in [
            ("sample-feed", fixture!("sample-feed")),
            ("caltrain", fixture!("caltrain")),
            ("bart", fixture!("bart")),
        ] {
            let grouped = load(name, &bytes);
            let scattered = load(name, &with_scattered_stop_times(&bytes));
            assert!(grouped.counts.stop_times > 0, "{name}");
            assert_eq!(scattered.counts, grouped.counts, "{name}");
            assert_eq!(scattered.routes, grouped.routes, "{name}");
            assert_eq!(scattered.route_details, grouped.route_details, "{name}");
            assert_eq!(scattered.trips, grouped.trips, "{name}");
        }
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
}
