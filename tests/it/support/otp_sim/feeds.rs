//! The feeds, read with gtfs-structures, and OTP's patterns.

use super::*;

// ---------------------------------------------------------------------------------------
// Feeds, read with gtfs-structures
// ---------------------------------------------------------------------------------------

pub(super) struct Feed {
    pub(super) id: String,
    pub(super) agencies: Vec<Agency>,
    pub(super) routes: Vec<RouteRec>,
    pub(super) route_by_id: HashMap<String, usize>,
    pub(super) stops: Vec<StopRec>,
    pub(super) stop_by_id: HashMap<String, usize>,
    /// Only trips OTP keeps: known route and service, at least 2 stops.
    pub(super) trips: Vec<TripRec>,
    pub(super) trip_by_id: HashMap<String, usize>,
    pub(super) patterns: Vec<PatternRec>,
    pub(super) pattern_by_code: HashMap<String, usize>,
    /// feed_info.txt: publisher name and url.
    pub(super) publisher: Option<(String, String)>,
}

pub(super) struct Agency {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) url: String,
    pub(super) timezone: String,
    pub(super) lang: Option<String>,
    pub(super) phone: Option<String>,
    pub(super) fare_url: Option<String>,
}

pub(super) struct RouteRec {
    pub(super) id: String,
    pub(super) agency: Option<usize>,
    pub(super) short_name: Option<String>,
    pub(super) long_name: Option<String>,
    pub(super) desc: Option<String>,
    pub(super) route_type: i32,
    pub(super) url: Option<String>,
    /// As written in routes.txt (OTP does not normalise case).
    pub(super) color: Option<String>,
    pub(super) text_color: Option<String>,
    pub(super) sort_order: Option<u32>,
    /// Sorted by code.
    pub(super) patterns: Vec<usize>,
}

pub(super) struct StopRec {
    pub(super) id: String,
    pub(super) code: Option<String>,
    pub(super) name: Option<String>,
    pub(super) desc: Option<String>,
    pub(super) lat: Option<f64>,
    pub(super) lon: Option<f64>,
    pub(super) zone_id: Option<String>,
    pub(super) url: Option<String>,
    pub(super) location_type: i32,
    pub(super) parent: Option<String>,
    pub(super) platform_code: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) wheelchair: i32,
}

pub(super) struct TripRec {
    pub(super) id: String,
    pub(super) route: usize,
    pub(super) service_id: String,
    pub(super) headsign: Option<String>,
    pub(super) short_name: Option<String>,
    pub(super) direction: Option<u8>,
    pub(super) block_id: Option<String>,
    pub(super) shape_id: Option<String>,
    pub(super) wheelchair: i32,
    pub(super) bikes: i32,
    pub(super) pattern: usize,
    /// Rows of frequencies.txt for this trip (0: a scheduled trip).
    pub(super) frequency_rows: usize,
}

pub(super) struct PatternRec {
    /// `feed:route:dir:NN`, dir empty when trips.txt has no direction_id.
    pub(super) code: String,
    /// OTP 2's code: the same, numbered in the order OTP 2 meets the trips ([`java_order`]
    /// of the trips' ids, every trips.txt row counted), not in trips.txt order.
    pub(super) code2: String,
    /// When OTP 2 created it: the [`java_order`] rank of its first trip.
    pub(super) created2: usize,
    pub(super) route: usize,
    /// 0, 1, or -1 when unknown.
    pub(super) direction: i32,
    pub(super) stops: Vec<usize>,
    /// By departure from the first stop, as OTP's timetable sorts them.
    pub(super) trips: Vec<usize>,
    /// The first trip's headsign.
    pub(super) headsign: Option<String>,
    /// OTP 1's name (PatternShort.desc).
    pub(super) name1: String,
    /// OTP 2's name (Pattern.name): the headsign is tried first.
    pub(super) name2: String,
}

impl Feed {
    /// Distinct stops of a route's patterns, in the order first met.
    pub(super) fn route_stops(&self, r: usize) -> Vec<usize> {
        let mut seen = HashSet::new();
        self.routes[r]
            .patterns
            .iter()
            .flat_map(|&p| self.patterns[p].stops.iter().copied())
            .filter(|s| seen.insert(*s))
            .collect()
    }
}

pub(super) fn fixture_feed(name: &str) -> Arc<Feed> {
    type Cell = Arc<OnceLock<Arc<Feed>>>;
    static CACHE: LazyLock<Mutex<HashMap<String, Cell>>> = LazyLock::new(Default::default);
    let cell = CACHE
        .lock()
        .unwrap()
        .entry(name.to_owned())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        Arc::new(
            load_feed(name, &fixture_zip(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}")),
        )
    })
    .clone()
}

pub(super) fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

pub(super) fn route_type_code(t: gtfs_structures::RouteType) -> i32 {
    use gtfs_structures::RouteType::*;
    match t {
        Tramway => 0,
        Subway => 1,
        Rail => 2,
        Bus => 3,
        Ferry => 4,
        CableCar => 5,
        Gondola => 6,
        Funicular => 7,
        Extended(e) => e as i32,
        Other(i) => i32::from(i),
    }
}

pub(super) fn pick_drop(t: gtfs_structures::PickupDropOffType) -> i16 {
    use gtfs_structures::PickupDropOffType::*;
    match t {
        Regular => 0,
        NotAvailable => 1,
        ArrangeByPhone => 2,
        CoordinateWithDriver => 3,
        Unknown(i) => i,
    }
}

/// One stop_times.txt row, as much as patterns need.
pub(super) struct StopTimeRow {
    pub(super) trip_id: String,
    pub(super) stop_id: String,
    pub(super) sequence: u32,
    pub(super) pickup: i16,
    pub(super) drop_off: i16,
    pub(super) departure: Option<u32>,
}

pub(super) fn zip_member(zip: &[u8], file: &str) -> Option<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).ok()?;
    let name = archive
        .file_names()
        .find(|n| n.rsplit('/').next() == Some(file))?
        .to_owned();
    let mut out = Vec::new();
    archive.by_name(&name).ok()?.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Reads a GTFS file with the csv crate: flexible rows, trimmed, BOM removed; rows as
/// header → value maps.
pub(super) fn csv_rows(bytes: &[u8]) -> Vec<HashMap<String, String>> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_owned).collect(),
        Err(_) => return Vec::new(),
    };
    reader
        .records()
        .filter_map(Result::ok)
        .map(|rec| {
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.clone(), v.to_owned()))
                .collect()
        })
        .collect()
}

pub(super) fn parse_gtfs_time(s: &str) -> Option<u32> {
    let mut it = s.trim().split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, sec) = (it.next()??, it.next()??, it.next()??);
    Some(h * 3600 + m * 60 + sec)
}

/// Parses a GTFS zip into the simulator's model of what OTP builds from it.
pub(super) fn load_feed(feed_id: &str, zip: &[u8]) -> Result<Feed, String> {
    let raw = gtfs_structures::RawGtfs::from_reader(Cursor::new(zip)).map_err(|e| e.to_string())?;
    let err = |what: &str, e: gtfs_structures::Error| format!("{feed_id}: {what}: {e}");

    let agencies: Vec<Agency> = raw
        .agencies
        .map_err(|e| err("agency.txt", e))?
        .into_iter()
        .map(|a| Agency {
            // onebusaway-gtfs (OTP's reader) falls back to the agency name without an id.
            id: non_empty(a.id).unwrap_or_else(|| a.name.clone()),
            name: a.name,
            url: a.url,
            timezone: a.timezone,
            lang: non_empty(a.lang),
            phone: non_empty(a.phone),
            fare_url: non_empty(a.fare_url),
        })
        .collect();

    // Colours as written: gtfs-structures parses them into RGB values.
    let raw_colors: HashMap<String, (Option<String>, Option<String>)> =
        zip_member(zip, "routes.txt")
            .map(|b| csv_rows(&b))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut row| {
                let id = row.remove("route_id")?;
                let c = non_empty(row.remove("route_color"));
                let t = non_empty(row.remove("route_text_color"));
                Some((id, (c, t)))
            })
            .collect();

    let mut routes = Vec::new();
    for r in raw.routes.map_err(|e| err("routes.txt", e))? {
        let agency = match non_empty(r.agency_id.clone()) {
            Some(id) => agencies.iter().position(|a| a.id == id),
            None if agencies.len() == 1 => Some(0),
            None => None,
        };
        let (color, text_color) = raw_colors.get(&r.id).cloned().unwrap_or_default();
        routes.push(RouteRec {
            agency,
            short_name: non_empty(r.short_name),
            long_name: non_empty(r.long_name),
            desc: non_empty(r.desc),
            route_type: route_type_code(r.route_type),
            url: non_empty(r.url),
            color,
            text_color,
            sort_order: r.order,
            patterns: Vec::new(),
            id: r.id,
        });
    }
    let route_by_id: HashMap<String, usize> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();

    let stops: Vec<StopRec> = raw
        .stops
        .map_err(|e| err("stops.txt", e))?
        .into_iter()
        .map(|s| {
            use gtfs_structures::LocationType::*;
            StopRec {
                code: non_empty(s.code),
                name: non_empty(s.name),
                desc: non_empty(s.description),
                lat: s.latitude,
                lon: s.longitude,
                zone_id: non_empty(s.zone_id),
                url: non_empty(s.url),
                location_type: match s.location_type {
                    StopPoint => 0,
                    StopArea => 1,
                    StationEntrance => 2,
                    GenericNode => 3,
                    BoardingArea => 4,
                    Unknown(i) => i32::from(i),
                },
                parent: non_empty(s.parent_station),
                platform_code: non_empty(s.platform_code),
                timezone: non_empty(s.timezone),
                wheelchair: match s.wheelchair_boarding {
                    gtfs_structures::Availability::Available => 1,
                    gtfs_structures::Availability::NotAvailable => 2,
                    _ => 0,
                },
                id: s.id,
            }
        })
        .collect();
    let stop_by_id: HashMap<String, usize> = stops
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();

    // stop_times.txt: gtfs-structures, or the csv crate when its rows are too short for it
    // (sample-feed).
    let stop_times: Vec<StopTimeRow> = match raw.stop_times {
        Ok(rows) => rows
            .into_iter()
            .map(|st| StopTimeRow {
                trip_id: st.trip_id,
                stop_id: st.stop_id,
                sequence: st.stop_sequence,
                pickup: pick_drop(st.pickup_type),
                drop_off: pick_drop(st.drop_off_type),
                departure: st.departure_time.or(st.arrival_time),
            })
            .collect(),
        Err(e) => {
            let bytes =
                zip_member(zip, "stop_times.txt").ok_or_else(|| err("stop_times.txt", e))?;
            csv_rows(&bytes)
                .into_iter()
                .filter_map(|mut row| {
                    let num =
                        |v: Option<String>| v.and_then(|v| v.parse::<i16>().ok()).unwrap_or(0);
                    let departure = row
                        .get("departure_time")
                        .and_then(|t| parse_gtfs_time(t))
                        .or_else(|| row.get("arrival_time").and_then(|t| parse_gtfs_time(t)));
                    Some(StopTimeRow {
                        trip_id: row.remove("trip_id")?,
                        stop_id: row.remove("stop_id")?,
                        sequence: row.remove("stop_sequence")?.parse().ok()?,
                        pickup: num(row.remove("pickup_type")),
                        drop_off: num(row.remove("drop_off_type")),
                        departure,
                    })
                })
                .collect()
        }
    };
    let mut times_by_trip: HashMap<String, Vec<StopTimeRow>> = HashMap::new();
    for st in stop_times {
        times_by_trip
            .entry(st.trip_id.clone())
            .or_default()
            .push(st);
    }

    let mut services: HashSet<String> = HashSet::new();
    if let Some(Ok(cal)) = &raw.calendar {
        services.extend(cal.iter().map(|c| c.id.clone()));
    }
    if let Some(Ok(dates)) = &raw.calendar_dates {
        services.extend(dates.iter().map(|d| d.service_id.clone()));
    }

    let mut frequency_rows: HashMap<String, usize> = HashMap::new();
    for mut row in zip_member(zip, "frequencies.txt")
        .map(|b| csv_rows(&b))
        .unwrap_or_default()
    {
        if let Some(trip) = row.remove("trip_id") {
            *frequency_rows.entry(trip).or_default() += 1;
        }
    }

    // Trips in trips.txt order, grouped into patterns as GenerateTripPatternsOperation does.
    type PatternKey = (usize, Option<u8>, Vec<(usize, i16, i16)>);
    let mut trips = Vec::new();
    let mut first_departure = Vec::new();
    let mut patterns: Vec<PatternRec> = Vec::new();
    let mut pattern_by_key: HashMap<PatternKey, usize> = HashMap::new();
    let mut counters: HashMap<(usize, Option<u8>), u32> = HashMap::new();
    let raw_trips = raw.trips.map_err(|e| err("trips.txt", e))?;
    // OTP 2 builds patterns from a HashMap of every trip by id.
    let raw_trip_ids: Vec<String> = raw_trips.iter().map(|t| t.id.clone()).collect();
    let rank2 = java_order(feed_id, &raw_trip_ids);
    for (raw_index, t) in raw_trips.into_iter().enumerate() {
        let Some(&route) = route_by_id.get(&t.route_id) else {
            continue;
        };
        if !services.contains(&t.service_id) {
            continue; // TripUndefinedService
        }
        let Some(mut times) = times_by_trip.remove(&t.id) else {
            continue;
        };
        times.sort_by_key(|st| st.sequence);
        if times.len() < 2 || times.iter().any(|st| !stop_by_id.contains_key(&st.stop_id)) {
            continue; // TripDegenerate, or a stop OTP would not know
        }
        let direction = t.direction_id.map(|d| match d {
            gtfs_structures::DirectionType::Outbound => 0u8,
            gtfs_structures::DirectionType::Inbound => 1u8,
        });
        let key: PatternKey = (
            route,
            direction,
            times
                .iter()
                .map(|st| (stop_by_id[&st.stop_id], st.pickup, st.drop_off))
                .collect(),
        );
        let trip_index = trips.len();
        let pattern = *pattern_by_key.entry(key).or_insert_with_key(|key| {
            let n = counters.entry((route, direction)).or_insert(0);
            *n += 1;
            let dir = direction.map(|d| d.to_string()).unwrap_or_default();
            patterns.push(PatternRec {
                code: format!("{feed_id}:{}:{dir}:{:02}", routes[route].id, *n),
                code2: String::new(),
                created2: usize::MAX,
                route,
                direction: direction.map_or(-1, i32::from),
                stops: key.2.iter().map(|s| s.0).collect(),
                trips: Vec::new(),
                headsign: None,
                name1: String::new(),
                name2: String::new(),
            });
            patterns.len() - 1
        });
        patterns[pattern].trips.push(trip_index);
        patterns[pattern].created2 = patterns[pattern].created2.min(rank2[raw_index]);
        first_departure.push(times[0].departure.unwrap_or(u32::MAX));
        let wheelchair = match t.wheelchair_accessible {
            gtfs_structures::Availability::Available => 1,
            gtfs_structures::Availability::NotAvailable => 2,
            _ => 0,
        };
        let bikes = match t.bikes_allowed {
            gtfs_structures::BikesAllowedType::AtLeastOneBike => 1,
            gtfs_structures::BikesAllowedType::NoBikesAllowed => 2,
            _ => 0,
        };
        trips.push(TripRec {
            frequency_rows: frequency_rows.get(&t.id).copied().unwrap_or(0),
            id: t.id,
            route,
            service_id: t.service_id,
            headsign: non_empty(t.trip_headsign),
            short_name: non_empty(t.trip_short_name),
            direction,
            block_id: non_empty(t.block_id),
            shape_id: non_empty(t.shape_id),
            wheelchair,
            bikes,
            pattern,
        });
    }
    for p in &mut patterns {
        p.trips.sort_by_key(|&t| first_departure[t]);
        p.headsign = trips[p.trips[0]].headsign.clone();
    }
    for (i, p) in patterns.iter().enumerate() {
        routes[p.route].patterns.push(i);
    }
    // OTP 2 numbers a route and direction's patterns as it creates them.
    let mut by_creation: Vec<usize> = (0..patterns.len()).collect();
    by_creation.sort_by_key(|&p| patterns[p].created2);
    let mut counters2: HashMap<(usize, i32), u32> = HashMap::new();
    for p in by_creation {
        let pat = &mut patterns[p];
        let n = counters2.entry((pat.route, pat.direction)).or_insert(0);
        *n += 1;
        let (prefix, _) = pat.code.rsplit_once(':').expect("feed:route:dir:NN");
        pat.code2 = format!("{prefix}:{:02}", *n);
    }
    for r in &mut routes {
        r.patterns
            .sort_by(|&a, &b| patterns[a].code.cmp(&patterns[b].code));
    }
    name_patterns(feed_id, &routes, &stops, &trips, &mut patterns);

    let trip_by_id = trips
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let pattern_by_code = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| (p.code.clone(), i))
        .collect();
    let publisher = match raw.feed_info {
        Some(Ok(info)) => info.into_iter().next().map(|i| (i.name, i.url)),
        _ => None,
    };
    Ok(Feed {
        id: feed_id.to_owned(),
        agencies,
        routes,
        route_by_id,
        stops,
        stop_by_id,
        trips,
        trip_by_id,
        patterns,
        pattern_by_code,
        publisher,
    })
}

/// OTP 1's `TripPattern.generateUniqueNames` (route names made unique first) and OTP 2's
/// `TripPatternNamer` (a unique headsign is tried first).
pub(super) fn name_patterns(
    feed_id: &str,
    routes: &[RouteRec],
    stops: &[StopRec],
    trips: &[TripRec],
    patterns: &mut [PatternRec],
) {
    let stop_name = |s: usize| {
        format!(
            "{} ({feed_id}:{})",
            stops[s].name.as_deref().unwrap_or("null"),
            stops[s].id
        )
    };
    let route_name = |r: &RouteRec| {
        r.short_name
            .clone()
            .or_else(|| r.long_name.clone())
            .unwrap_or_else(|| "null".into())
    };
    let mut used = HashSet::new();
    for route in routes.iter().filter(|r| !r.patterns.is_empty()) {
        let base = route_name(route);
        let mut unique1 = base.clone();
        let mut i = 2;
        while used.contains(&unique1) {
            unique1 = format!("{base} {i}");
            i += 1;
        }
        used.insert(unique1.clone());
        for (with_headsign, name) in [(false, unique1), (true, base)] {
            let names = name_route_patterns(
                &name,
                &route.patterns,
                patterns,
                trips,
                with_headsign,
                &stop_name,
            );
            for (&p, n) in route.patterns.iter().zip(names) {
                if with_headsign {
                    patterns[p].name2 = n;
                } else {
                    patterns[p].name1 = n;
                }
            }
        }
    }
}

pub(super) fn name_route_patterns(
    route_name: &str,
    ids: &[usize],
    patterns: &[PatternRec],
    trips: &[TripRec],
    with_headsign: bool,
    stop_name: &dyn Fn(usize) -> String,
) -> Vec<String> {
    if ids.len() == 1 {
        return vec![route_name.to_owned()];
    }
    let first = |p: usize| patterns[p].stops[0];
    let last = |p: usize| *patterns[p].stops.last().unwrap();
    let count = |f: &dyn Fn(usize) -> bool| ids.iter().filter(|&&p| f(p)).count();
    ids.iter()
        .map(|&p| {
            let pat = &patterns[p];
            let mut name = route_name.to_owned();
            if with_headsign
                && let Some(h) = &pat.headsign
                && count(&|q| patterns[q].headsign.as_ref() == Some(h)) == 1
            {
                return format!("{name} {h}");
            }
            let (start, end) = (first(p), last(p));
            name.push_str(&format!(" to {}", stop_name(end)));
            if count(&|q| last(q) == end) == 1 {
                return name;
            }
            name.push_str(&format!(" from {}", stop_name(start)));
            if count(&|q| first(q) == start) == 1 {
                return name;
            }
            let remaining: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&q| first(q) == start && last(q) == end)
                .collect();
            if remaining.len() == 1 {
                return name;
            }
            for &via in &pat.stops {
                if via == start || via == end {
                    continue;
                }
                let hits = remaining
                    .iter()
                    .filter(|&&q| patterns[q].stops.contains(&via))
                    .count();
                if hits == 1 {
                    return format!("{name} via {}", stop_name(via));
                }
            }
            if remaining.len() == 2 {
                format!("{name} express")
            } else {
                let trip = &trips[pat.trips[0]];
                let feed_id = pat.code.split(':').next().unwrap_or("");
                // OTP 1 writes the trip's id with `FeedScopedId.toString`: `feed_trip`.
                let sep = if with_headsign { ':' } else { '_' };
                format!("{name} like trip {feed_id}{sep}{}", trip.id)
            }
        })
        .collect()
}
