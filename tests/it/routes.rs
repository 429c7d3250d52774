//! The route query API (issue 5) on the real fixture feeds, loaded from their zips through
//! the OTP simulator (`api = "gtfs"`).
//!
//! Every expected value is computed here from the feeds' CSV files (zip and csv crates, see
//! `support::fixtures`), independently of the service: route lists, stops and trip counts
//! per route, and the trips running on a date (calendar.txt weekdays and range, plus
//! calendar_dates.txt additions, minus its removals; times past 24:00:00 stay on the date
//! the trip starts from). Each test starts one app and checks many things with it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::civil::Date;
use serde_json::Value;

use crate::support::fixtures::format_gtfs_time;
use crate::support::gtfs::{FeedCsv, RouteRow, TripRow, Window};
use crate::support::http::{Answer, route_path, routes_path, trips_path, with_query};
use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, sim_config, spawn_loaded, zip_feeds};

// ---------------------------------------------------------------------------------------
// The app (helpers copied from fetch.rs)
// ---------------------------------------------------------------------------------------

/// The simulator serving the fixture zips, and the service that loaded them.
struct Harness {
    app: TestApp,
    _sim: OtpSim,
}

impl Harness {
    async fn start(feeds: &[&str]) -> Harness {
        let sim = OtpSim::start(feeds).await;
        let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &zip_feeds(feeds), &[])).await;
        // Every feed must have loaded, or nothing below means anything.
        let body = get(&app, "/feeds", &[]).await.json();
        for name in feeds {
            let f = body["feeds"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["gtfs_id"] == *name)
                .unwrap_or_else(|| panic!("feed {name} in {body}"));
            assert_eq!(f["last_error"], Value::Null, "{name} loaded: {f}");
        }
        Harness { app, _sim: sim }
    }

    async fn stop(self) {
        self.app.stop().await.unwrap();
    }

    /// The feed's version as `/feeds` reports it.
    async fn version(&self, feed: &str) -> Value {
        let body = get(&self.app, "/feeds", &[]).await.json();
        body["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["gtfs_id"] == feed)
            .unwrap()["version"]
            .clone()
    }
}

// ---------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------

/// GETs `path` with extra request headers. Every response must carry `Server-Timing` with
/// a `total` phase.
async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    app.get_with(path, headers).await.assert_timed()
}

/// One page of the route list, its shape checked.
struct Page {
    routes: Vec<Value>,
    next_cursor: Option<String>,
    version: Value,
}

async fn list_page(app: &TestApp, feed: &str, query: &[(&str, &str)]) -> Page {
    let what = with_query(&routes_path(feed), query);
    let body = get(app, &what, &[]).await.ok();
    assert_eq!(body["gtfs_id"], feed, "{what}: {body}");
    assert!(body["version"].is_string(), "{what}: version: {body}");
    let routes = body["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: routes is not an array: {body}"))
        .clone();
    let next_cursor = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{what}: next_cursor {other}"),
    };
    assert!(
        body.as_object().unwrap().contains_key("next_cursor"),
        "{what}: next_cursor must be present (null on the last page): {body}"
    );
    Page {
        routes,
        next_cursor,
        version: body["version"].clone(),
    }
}

/// Every route of a list query, following `next_cursor` with `limit` per page. Checks the
/// paging rules: full pages until the last, the last one (and only it) with a null cursor,
/// never an empty page unless nothing matches, one version throughout.
pub(crate) async fn list_all(
    app: &TestApp,
    feed: &str,
    filters: &[(&str, &str)],
    limit: usize,
) -> Vec<Value> {
    let limit_text = limit.to_string();
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    let mut version = None;
    for page_no in 0.. {
        assert!(
            page_no <= 2000 / limit + 2,
            "{feed} {filters:?}: paging does not end"
        );
        let mut query: Vec<(&str, &str)> = filters.to_vec();
        query.push(("limit", limit_text.as_str()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.as_str()));
        }
        let page = list_page(app, feed, &query).await;
        let ctx = format!("{feed} {filters:?} limit {limit} page {page_no}");
        assert!(
            page.routes.len() <= limit,
            "{ctx}: {} routes",
            page.routes.len()
        );
        match &version {
            None => version = Some(page.version.clone()),
            Some(v) => assert_eq!(&page.version, v, "{ctx}: version changed while paging"),
        }
        if page_no > 0 {
            assert!(
                !page.routes.is_empty(),
                "{ctx}: an empty page after a cursor: the previous page was the last one and \
                 should have had next_cursor null"
            );
        }
        all.extend(page.routes.iter().cloned());
        match page.next_cursor {
            Some(c) => {
                assert_eq!(
                    page.routes.len(),
                    limit,
                    "{ctx}: a page with a next_cursor must be full"
                );
                cursor = Some(c);
            }
            None => break,
        }
    }
    all
}

fn route_ids(routes: &[Value]) -> Vec<String> {
    routes
        .iter()
        .map(|r| r["route_id"].as_str().expect("route_id string").to_owned())
        .collect()
}

/// Sort order ascending (routes without one last), then route_id; no duplicates.
fn assert_route_order(routes: &[Value], ctx: &str) {
    let key = |r: &Value| {
        let order = r["sort_order"].as_u64();
        (
            order.is_none(),
            order,
            r["route_id"].as_str().unwrap().to_owned(),
        )
    };
    for pair in routes.windows(2) {
        assert!(
            key(&pair[0]) < key(&pair[1]),
            "{ctx}: order broken (or duplicate) between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

/// `YYYY-MM-DD`.
fn iso(s: &str) -> Date {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Lower case without accents, for `q`: "Tasqueña" and "TASQUENA" both give "tasquena".
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            'ý' | 'ÿ' => 'y',
            c => c,
        })
        .collect()
}

/// Strings compared without surrounding blanks (some names in the feeds end with one).
fn same_text(got: &Value, want: &Option<String>) -> bool {
    match (got, want) {
        (Value::Null, None) => true,
        (Value::String(g), Some(w)) => g.trim() == w.trim(),
        _ => false,
    }
}

/// A route summary from the API against its routes.txt row.
pub(crate) fn check_summary(got: &Value, want: &RouteRow, ctx: &str) {
    check_summary_from(got, want, ctx, false)
}

/// [`check_summary`] for a source that may derive a text colour: OTP before 2.6 (and
/// OTP 1's route details) give a route with a `route_color` and no `route_text_color` a
/// contrasting black or white one.
pub(crate) fn check_summary_from(
    got: &Value,
    want: &RouteRow,
    ctx: &str,
    derives_text_color: bool,
) {
    if derives_text_color && want.color.is_some() && want.text_color.is_none() {
        let derived = got["text_color"].as_str().map(str::to_ascii_uppercase);
        assert!(
            matches!(derived.as_deref(), None | Some("FFFFFF" | "000000")),
            "{ctx} route {}: text_color none, or derived as black or white: {got}",
            want.route_id
        );
        let mut got = got.clone();
        got["text_color"] = Value::Null;
        return check_summary_from(&got, want, ctx, false);
    }
    let ctx = format!("{ctx} route {}: {got}", want.route_id);
    assert_eq!(got["route_id"], want.route_id.as_str(), "{ctx}");
    assert!(
        same_text(&got["agency_id"], &want.agency_id),
        "{ctx}: agency_id"
    );
    assert!(
        same_text(&got["short_name"], &want.short_name),
        "{ctx}: short_name"
    );
    assert!(
        same_text(&got["long_name"], &want.long_name),
        "{ctx}: long_name"
    );
    assert_eq!(got["type"], want.route_type, "{ctx}: type");
    let mode = got["mode"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: mode"));
    let basic = [
        "TRAM",
        "SUBWAY",
        "RAIL",
        "BUS",
        "FERRY",
        "CABLE_CAR",
        "GONDOLA",
        "FUNICULAR",
    ];
    if let Some(m) = usize::try_from(want.route_type)
        .ok()
        .and_then(|t| basic.get(t))
    {
        assert_eq!(mode, *m, "{ctx}: mode");
    }
    for (key, want) in [("color", &want.color), ("text_color", &want.text_color)] {
        let got = got[key].as_str().map(str::to_ascii_lowercase);
        assert_eq!(
            got,
            want.as_ref().map(|c| c.to_ascii_lowercase()),
            "{ctx}: {key}"
        );
    }
    assert_eq!(
        got["sort_order"].as_u64(),
        want.sort_order,
        "{ctx}: sort_order"
    );
    assert!(
        got["sort_order"].is_null() || got["sort_order"].is_u64(),
        "{ctx}: sort_order"
    );
}

/// A trip from the API against its CSV rows.
fn check_trip(got: &Value, want: &TripRow, feed: &FeedCsv, ctx: &str) {
    let ctx = format!("{ctx} trip {}: {got}", want.trip_id);
    assert_eq!(got["trip_id"], want.trip_id.as_str(), "{ctx}");
    assert_eq!(
        got["service_id"],
        want.service_id.as_str(),
        "{ctx}: service_id"
    );
    assert!(
        same_text(&got["headsign"], &want.headsign),
        "{ctx}: headsign"
    );
    assert_eq!(
        got["direction_id"].as_i64(),
        want.direction_id,
        "{ctx}: direction_id"
    );
    assert!(
        same_text(&got["block_id"], &want.block_id),
        "{ctx}: block_id"
    );
    assert_eq!(
        got["start_time"],
        format_gtfs_time(want.start),
        "{ctx}: start_time"
    );
    assert_eq!(
        got["end_time"],
        format_gtfs_time(want.end),
        "{ctx}: end_time"
    );
    match feed.frequencies.get(&want.trip_id) {
        Some(windows) => {
            let list = got["frequencies"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: frequency-based trip without frequencies"));
            let mut got_windows: Vec<Window> = list
                .iter()
                .map(|w| Window {
                    start: w["start_time"].as_str().expect("start_time").to_owned(),
                    end: w["end_time"].as_str().expect("end_time").to_owned(),
                    headway: w["headway_secs"].as_u64().expect("headway_secs"),
                    exact: w["exact_times"]
                        .as_bool()
                        .unwrap_or_else(|| panic!("{ctx}: exact_times is a boolean")),
                })
                .collect();
            let mut want_windows = windows.clone();
            got_windows.sort_by(|a, b| a.start.cmp(&b.start));
            want_windows.sort_by(|a, b| a.start.cmp(&b.start));
            assert_eq!(got_windows, want_windows, "{ctx}: frequencies");
        }
        None => assert!(
            got.get("frequencies").is_none(),
            "{ctx}: frequencies present on a trip that has none"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

const ALL_FEEDS: [&str; 5] = ["sample-feed", "caltrain", "bart", "cdmx", "wmata"];

#[tokio::test]
async fn route_lists_page_through_every_route_of_each_feed_in_order() {
    let (h, feeds) = tokio::join!(Harness::start(&ALL_FEEDS), async {
        let mut feeds = Vec::new();
        for name in ALL_FEEDS {
            feeds.push(FeedCsv::get(name).await);
        }
        feeds
    });
    for csv in &feeds {
        let feed = csv.name.as_str();
        let version = h.version(feed).await;
        let all = list_all(&h.app, feed, &[], 7).await;
        let ids = route_ids(&all);
        assert_eq!(all.len(), csv.routes.len(), "{feed}: route count");
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{feed}: duplicates in {ids:?}");
        let want: BTreeSet<&String> = csv.routes.iter().map(|r| &r.route_id).collect();
        assert_eq!(unique, want, "{feed}: route ids");
        assert_route_order(&all, feed);
        for r in &all {
            check_summary(r, csv.route(r["route_id"].as_str().unwrap()), feed);
        }

        // One page of up to 1000 gives the same list; the default limit is 100.
        let page = list_page(&h.app, feed, &[("limit", "1000")]).await;
        assert_eq!(page.routes, all, "{feed}: limit=1000");
        assert_eq!(page.next_cursor, None, "{feed}: limit=1000 is one page");
        assert_eq!(
            page.version, version,
            "{feed}: version is the feed's version"
        );
        let page = list_page(&h.app, feed, &[]).await;
        let n = csv.routes.len().min(100);
        assert_eq!(page.routes[..], all[..n], "{feed}: default limit 100");
        assert_eq!(
            page.next_cursor.is_some(),
            csv.routes.len() > 100,
            "{feed}: default page cursor"
        );
        if let Some(cursor) = page.next_cursor {
            let rest = list_page(&h.app, feed, &[("cursor", cursor.as_str())]).await;
            assert_eq!(rest.routes[..], all[100..], "{feed}: second default page");
            assert_eq!(rest.next_cursor, None);
        }
        // The edge of a page: limit = count exactly, and count - 1.
        let exact = csv.routes.len().to_string();
        let page = list_page(&h.app, feed, &[("limit", exact.as_str())]).await;
        assert_eq!(page.routes.len(), csv.routes.len(), "{feed}: limit={exact}");
        assert_eq!(
            page.next_cursor, None,
            "{feed}: limit={exact} holds every route, so it is the last page"
        );
        let paged = list_all(&h.app, feed, &[], csv.routes.len() - 1).await;
        assert_eq!(paged, all, "{feed}: limit=count-1");
        let paged = list_all(&h.app, feed, &[], 1).await;
        assert_eq!(paged, all, "{feed}: limit=1");
    }
    h.stop().await;
}

#[tokio::test]
async fn route_details_have_the_stops_and_trip_counts_of_their_trips() {
    let names = ["caltrain", "bart", "cdmx", "wmata"];
    let (h, feeds) = tokio::join!(Harness::start(&names), async {
        let mut feeds = Vec::new();
        for name in names {
            feeds.push(FeedCsv::get(name).await);
        }
        feeds
    });
    for csv in &feeds {
        check_route_details(&h.app, csv, &csv.name, false).await;
    }
    h.stop().await;
}

/// Every route of `csv` as the service answers it under the feed id `feed`: the summary
/// of routes.txt, the trip count of trips.txt, and patterns that are the distinct
/// (direction, ordered stops) of the route's trips with their trip counts, their stops
/// as in stops.txt. `derives_text_color`: see [`check_summary_from`].
pub(crate) async fn check_route_details(
    app: &TestApp,
    csv: &FeedCsv,
    feed: &str,
    derives_text_color: bool,
) {
    let list = list_page(app, feed, &[("limit", "1000")]).await.routes;
    // Every route of every feed: details are answered from memory.
    for route in &csv.routes {
        let id = route.route_id.as_str();
        let ctx = format!("{feed}/{id}");
        let body = app.get_route(feed, id).await.ok();
        check_summary_from(&body, route, &ctx, derives_text_color);
        let summary = list.iter().find(|r| r["route_id"] == id).unwrap();
        for (key, value) in summary.as_object().unwrap() {
            assert_eq!(&body[key], value, "{ctx}: {key} as in the list");
        }

        let trips = csv.trips_of(id);
        assert_eq!(body["trip_count"], trips.len(), "{ctx}: trip_count");
        let patterns = body["patterns"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: patterns: {body}"));
        let counted: u64 = patterns
            .iter()
            .map(|p| p["trip_count"].as_u64().expect("pattern trip_count"))
            .sum();
        assert_eq!(
            counted as usize,
            trips.len(),
            "{ctx}: sum of patterns' trip_count"
        );

        let want_stops: BTreeSet<&str> = trips
            .iter()
            .flat_map(|t| t.stops.iter().map(String::as_str))
            .collect();
        let got_stops: BTreeSet<&str> = patterns
            .iter()
            .flat_map(|p| p["stops"].as_array().expect("stops").iter())
            .map(|s| s["stop_id"].as_str().expect("stop_id"))
            .collect();
        assert_eq!(got_stops, want_stops, "{ctx}: stops over the patterns");

        // A pattern is a distinct (direction, ordered stops) of the route's trips.
        type Key = (Option<i64>, Vec<String>);
        let mut want: BTreeMap<Key, (usize, BTreeSet<Option<&str>>)> = BTreeMap::new();
        for t in &trips {
            let e = want.entry((t.direction_id, t.stops.clone())).or_default();
            e.0 += 1;
            e.1.insert(t.headsign.as_deref().map(str::trim));
        }
        let mut got: BTreeMap<Key, usize> = BTreeMap::new();
        let mut pattern_ids = HashSet::new();
        for p in patterns {
            assert!(
                pattern_ids.insert(p["pattern_id"].as_str().expect("pattern_id")),
                "{ctx}: duplicate pattern_id {}",
                p["pattern_id"]
            );
            let stops: Vec<String> = p["stops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["stop_id"].as_str().unwrap().to_owned())
                .collect();
            let key = (p["direction_id"].as_i64(), stops);
            if let Some((_, headsigns)) = want.get(&key) {
                let h = p["headsign"].as_str().map(str::trim);
                assert!(
                    h.is_none() || headsigns.contains(&h),
                    "{ctx}: pattern headsign {h:?} is none of its trips' {headsigns:?}"
                );
            }
            *got.entry(key).or_default() += p["trip_count"].as_u64().unwrap() as usize;
            for s in p["stops"].as_array().unwrap() {
                let stop_id = s["stop_id"].as_str().unwrap();
                let row = csv
                    .stops
                    .get(stop_id)
                    .unwrap_or_else(|| panic!("{ctx}: stop {stop_id} not in stops.txt"));
                let sctx = format!("{ctx} stop {stop_id}: {s}");
                assert!(same_text(&s["name"], &row.name), "{sctx}: name");
                assert!(same_text(&s["code"], &row.code), "{sctx}: code");
                for (key, want) in [("lat", row.lat), ("lon", row.lon)] {
                    match (s[key].as_f64(), want) {
                        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-6, "{sctx}: {key}"),
                        (None, None) => {}
                        _ => panic!("{sctx}: {key}, want {want:?}"),
                    }
                }
            }
        }
        let want: BTreeMap<Key, usize> = want.into_iter().map(|(k, v)| (k, v.0)).collect();
        assert_eq!(
            got, want,
            "{ctx}: patterns (direction, stops) -> trip_count"
        );
    }
}

/// Dates per feed: the first list has trips (weekday, weekend days, calendar_dates
/// exception days), the second none (dates outside the feed, or a day every service is
/// removed from).
fn test_dates(feed: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    match feed {
        // FULLW every day but Monday 2007-06-04 (removed, and WE runs on weekends only:
        // no trip that day); WE on weekends.
        "sample-feed" => (
            vec!["2007-06-05", "2007-06-09", "2007-06-10"],
            vec!["2007-06-04", "2006-12-31", "2011-01-03"],
        ),
        // Wed with a Giants game, Sat, Sun with a special, 4 July (weekday removed,
        // weekend added).
        "caltrain" => (
            vec![
                "2018-06-20",
                "2018-06-23",
                "2018-06-24",
                "2018-07-04",
                "2018-06-21",
            ],
            vec!["2017-01-02", "2020-01-06"],
        ),
        // Wed, Sat, Sun, 4 July (Sunday service on a Wednesday).
        "bart" => (
            vec![
                "2018-06-20",
                "2018-06-22",
                "2018-06-23",
                "2018-06-24",
                "2018-07-04",
            ],
            vec!["2018-05-01", "2019-07-02"],
        ),
        // calendar.txt only, frequency-based.
        "cdmx" => (
            vec!["2018-06-20", "2018-06-23", "2018-06-24"],
            vec!["2017-12-31", "2020-01-06"],
        ),
        // calendar_dates.txt only: Tue, Sat, Sun, a Wed at the start of the feed.
        "wmata" => (
            vec![
                "2026-05-05",
                "2026-05-09",
                "2026-05-10",
                "2026-04-29",
                "2026-09-06",
            ],
            vec!["2026-04-28", "2026-12-01"],
        ),
        _ => unreachable!(),
    }
}

/// The trips of every route of `csv` on its test dates, as the service answers them under
/// the feed id `feed`, against calendar.txt and calendar_dates.txt.
pub(crate) async fn check_trips_on_dates(app: &TestApp, csv: &FeedCsv, feed: &str) {
    let (running, outside) = test_dates(&csv.name);
    for (date, inside) in running
        .iter()
        .map(|d| (*d, true))
        .chain(outside.iter().map(|d| (*d, false)))
    {
        let mut total = 0;
        for route in &csv.routes {
            let id = route.route_id.as_str();
            let ctx = format!("{feed}/{id} on {date}");
            let want = csv.trips_on(id, iso(date));
            total += want.len();
            let body = get(app, &trips_path(feed, id, date), &[]).await.ok();
            assert_eq!(body["gtfs_id"], feed, "{ctx}");
            assert_eq!(body["route_id"], id, "{ctx}");
            assert_eq!(body["date"], date, "{ctx}");
            let got = body["trips"]
                .as_array()
                .unwrap_or_else(|| panic!("{ctx}: trips: {body}"));
            let got_ids: Vec<&str> = got.iter().map(|t| t["trip_id"].as_str().unwrap()).collect();
            let want_ids: Vec<&str> = want.iter().map(|t| t.trip_id.as_str()).collect();
            if got_ids != want_ids {
                let g: BTreeSet<&str> = got_ids.iter().copied().collect();
                let w: BTreeSet<&str> = want_ids.iter().copied().collect();
                panic!(
                    "{ctx}: {} trips, want {}; extra {:?}; missing {:?}; (same set: {})",
                    got_ids.len(),
                    want_ids.len(),
                    g.difference(&w).take(10).collect::<Vec<_>>(),
                    w.difference(&g).take(10).collect::<Vec<_>>(),
                    g == w
                );
            }
            for (g, w) in got.iter().zip(&want) {
                check_trip(g, w, csv, &ctx);
            }
            if csv.name == "cdmx" {
                for t in got {
                    assert!(
                        t["frequencies"].as_array().is_some_and(|f| !f.is_empty()),
                        "{ctx}: cdmx is frequency-based: {t}"
                    );
                }
            }
        }
        // The dates were chosen well: trips on the first list's, none on the other's.
        assert_eq!(
            total > 0,
            inside,
            "{feed} on {date}: {total} trips in the CSV"
        );
    }
}

#[tokio::test]
async fn trips_on_a_date_follow_calendar_and_calendar_dates() {
    let (h, feeds) = tokio::join!(Harness::start(&ALL_FEEDS), async {
        let mut feeds = Vec::new();
        for name in ALL_FEEDS {
            feeds.push(FeedCsv::get(name).await);
        }
        feeds
    });
    for csv in &feeds {
        check_trips_on_dates(&h.app, csv, &csv.name).await;
    }

    // After midnight: BART's 25:15 departure is on the date it starts from, not shifted.
    let trip = |date: &str, trip_id: &str| {
        let path = trips_path("bart", "19", date);
        let app = &h.app;
        let trip_id = trip_id.to_owned();
        async move {
            let body = get(app, &path, &[]).await.ok();
            body["trips"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["trip_id"] == trip_id.as_str())
                .cloned()
        }
    };
    let late = trip("2018-06-20", "8050115WKDY")
        .await
        .expect("Wednesday's late trip");
    assert_eq!(late["start_time"], "25:15:00", "{late}");
    assert_eq!(late["end_time"], "25:23:00", "{late}");
    let sat = trip("2018-06-23", "8050115SAT")
        .await
        .expect("Saturday's late trip");
    assert_eq!(sat["start_time"], "25:15:00", "{sat}");
    assert!(
        trip("2018-06-23", "8050115WKDY").await.is_none(),
        "Friday night's 25:15 trip belongs to Friday, not Saturday"
    );
    assert!(trip("2018-06-22", "8050115WKDY").await.is_some());
    // Sample feed: frequency-based trips give their windows, others none.
    let body = get(
        &h.app,
        &trips_path("sample-feed", "CITY", "2007-06-05"),
        &[],
    )
    .await
    .ok();
    assert_eq!(body["trips"].as_array().unwrap().len(), 2, "{body}");
    for t in body["trips"].as_array().unwrap() {
        assert_eq!(t["frequencies"].as_array().map(Vec::len), Some(5), "{t}");
    }
    let body = get(&h.app, &trips_path("sample-feed", "AB", "2007-06-05"), &[])
        .await
        .ok();
    for t in body["trips"].as_array().unwrap() {
        assert!(t.get("frequencies").is_none(), "{t}");
    }
    h.stop().await;
}

#[tokio::test]
async fn filters_by_type_agency_and_accent_insensitive_text_page_too() {
    let names = ["cdmx", "caltrain"];
    let (h, cdmx, caltrain) = tokio::join!(
        Harness::start(&names),
        FeedCsv::get("cdmx"),
        FeedCsv::get("caltrain")
    );
    let expect = |csv: &FeedCsv, filters: &[(&str, &str)]| -> Vec<String> {
        let mut ids: Vec<&RouteRow> = csv
            .routes
            .iter()
            .filter(|r| {
                filters.iter().all(|(k, v)| match *k {
                    "type" => r.route_type.to_string() == *v,
                    "agency" => r.agency_id.as_deref() == Some(*v),
                    "q" => {
                        let q = fold(v);
                        [&r.short_name, &r.long_name]
                            .iter()
                            .any(|n| n.as_deref().is_some_and(|n| fold(n).contains(&q)))
                    }
                    _ => unreachable!(),
                })
            })
            .collect();
        ids.sort_by(|a, b| {
            (a.sort_order.is_none(), a.sort_order, &a.route_id).cmp(&(
                b.sort_order.is_none(),
                b.sort_order,
                &b.route_id,
            ))
        });
        ids.into_iter().map(|r| r.route_id.clone()).collect()
    };

    type Case<'a> = (&'a FeedCsv, Vec<(&'a str, &'a str)>, Option<usize>);
    let cases: Vec<Case> = vec![
        (&cdmx, vec![("type", "1")], Some(12)),
        (&cdmx, vec![("type", "3")], Some(131)),
        (&cdmx, vec![("type", "2")], Some(2)),
        (&cdmx, vec![("type", "0")], Some(0)),
        (&cdmx, vec![("agency", "RTP")], Some(103)),
        (&cdmx, vec![("agency", "MB"), ("type", "3")], Some(7)),
        (&cdmx, vec![("agency", "MB"), ("type", "1")], Some(0)),
        (&cdmx, vec![("agency", "rtp")], Some(0)), // exact, not case-insensitive
        (&cdmx, vec![("agency", "NOPE")], Some(0)),
        (&cdmx, vec![("q", "ecobus")], Some(2)),
        (&cdmx, vec![("q", "ECOBÚS")], Some(2)),
        (&cdmx, vec![("q", "EcoBús santa fe")], Some(2)),
        (&cdmx, vec![("q", "martin carrera")], None),
        (&cdmx, vec![("q", "MARTÍN CARRERA")], None),
        (&cdmx, vec![("q", "tasquena")], None),
        (&cdmx, vec![("q", "lazaro")], None), // "Lázaro" and "Lazáro" alike
        (&cdmx, vec![("q", "San Lázaro")], None),
        (&cdmx, vec![("q", "161-")], None), // short names
        (&cdmx, vec![("q", "ruta 4")], Some(1)),
        (&cdmx, vec![("q", "metro")], None),
        (
            &cdmx,
            vec![("q", "metro"), ("agency", "RTP"), ("type", "3")],
            None,
        ),
        (&cdmx, vec![("q", "pantitlán"), ("type", "1")], None),
        (&cdmx, vec![("q", "no such route anywhere")], Some(0)),
        (&caltrain, vec![("type", "3")], Some(1)),
        (
            &caltrain,
            vec![("type", "2"), ("agency", "caltrain-ca-us")],
            Some(5),
        ),
        (&caltrain, vec![("q", "BULLET")], None),
    ];
    for (csv, filters, count) in &cases {
        let feed = csv.name.as_str();
        let want = expect(csv, filters);
        if let Some(n) = count {
            assert_eq!(
                want.len(),
                *n,
                "test data: {feed} {filters:?} gives {want:?}"
            );
        } else {
            assert!(
                !want.is_empty(),
                "test data: {feed} {filters:?} matches nothing"
            );
        }
        let got = list_all(&h.app, feed, filters, 7).await;
        assert_eq!(route_ids(&got), want, "{feed} {filters:?}, 7 a page");
        assert_route_order(&got, feed);
        let one = list_page(
            &h.app,
            feed,
            &[filters.clone(), vec![("limit", "1000")]].concat(),
        )
        .await;
        assert_eq!(route_ids(&one.routes), want, "{feed} {filters:?}, one page");
        assert_eq!(one.next_cursor, None);
    }
    // The folding is the feed's, not ours: both accented routes come back for "ecobus".
    let got = list_all(&h.app, "cdmx", &[("q", "ecobus")], 1).await;
    assert_eq!(route_ids(&got), ["ROUTE_35881", "ROUTE_36043"]);
    h.stop().await;
}

/// A standard (or URL-safe, unpadded) base64 encoding, for forged cursors.
fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url_safe {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn bad_parameters_are_problems() {
    let h = Harness::start(&["caltrain", "bart"]).await;
    let app = &h.app;
    let route = "Bu-130";
    // Sanity: the good forms answer.
    app.get_route("caltrain", route).await.ok();
    get(app, &trips_path("caltrain", route, "2018-06-20"), &[])
        .await
        .ok();
    for limit in ["1", "1000"] {
        get(
            app,
            &with_query(&routes_path("caltrain"), &[("limit", limit)]),
            &[],
        )
        .await
        .ok();
    }

    // Unknown feed or route: 404.
    for path in [
        routes_path("nope"),
        route_path("nope", route),
        trips_path("nope", route, "2018-06-20"),
        route_path("caltrain", "NOPE"),
        trips_path("caltrain", "NOPE", "2018-06-20"),
        // A route of another feed.
        route_path("caltrain", "01"),
    ] {
        get(app, &path, &[]).await.problem(&[404]);
    }

    // Missing or malformed date: 400.
    let trips = format!("{}/trips", route_path("caltrain", route));
    get(app, &trips, &[]).await.problem(&[400]);
    for date in [
        "2024-13-01",
        "20240101",
        "yesterday",
        "2023-02-29",
        "2024-06-31",
        "2024-6-1",
        "",
    ] {
        get(app, &with_query(&trips, &[("date", date)]), &[])
            .await
            .problem(&[400]);
    }

    // Limits and types.
    let list = routes_path("caltrain");
    for (key, value) in [
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "abc"),
        ("limit", "-1"),
        ("limit", "1.5"),
        ("type", "bus"),
        ("type", "2.0"),
    ] {
        get(app, &with_query(&list, &[(key, value)]), &[])
            .await
            .problem(&[400]);
    }

    // Cursors the service did not issue for this query.
    let first = list_page(app, "caltrain", &[("limit", "2")]).await;
    let issued = first.next_cursor.expect("caltrain has more than 2 routes");
    let next = list_page(
        app,
        "caltrain",
        &[("limit", "2"), ("cursor", issued.as_str())],
    )
    .await;
    assert_eq!(next.routes.len(), 2, "the issued cursor works");
    let typed = list_page(app, "caltrain", &[("type", "2"), ("limit", "2")])
        .await
        .next_cursor
        .expect("caltrain has more than 2 rail routes");
    let queried = list_page(app, "caltrain", &[("q", "l"), ("limit", "1")])
        .await
        .next_cursor
        .expect("several caltrain routes have an l");
    let bart = list_page(app, "bart", &[("limit", "2")])
        .await
        .next_cursor
        .expect("bart has more than 2 routes");
    let mut tampered: Vec<char> = issued.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let mut forged = vec![
        ("garbage", "!!!not a cursor!!!".to_owned()),
        ("garbage", "zzzz".to_owned()),
        ("a real cursor with one character changed", tampered),
        ("a real cursor with bytes appended", format!("{issued}AAAA")),
        (
            "a real cursor cut short",
            issued[..issued.len() / 2].to_owned(),
        ),
    ];
    for text in [
        "hello, world",
        "Li-130",
        r#"{"route_id":"Li-130"}"#,
        r#"{"after":"Li-130"}"#,
        r#"{"after":["Li-130"],"type":null}"#,
        "1|Li-130",
    ] {
        for url_safe in [false, true] {
            forged.push((
                "base64 of something else",
                base64(text.as_bytes(), url_safe),
            ));
        }
    }
    for (what, cursor) in &forged {
        let path = with_query(&list, &[("limit", "2"), ("cursor", cursor.as_str())]);
        let answer = get(app, &path, &[]).await;
        assert_eq!(
            answer.status,
            400,
            "{what} ({cursor:?}) accepted: {}",
            answer.text()
        );
        answer.problem(&[400]);
    }
    // Issued, but for other filters or another feed.
    for (what, filters, cursor) in [
        ("a cursor of type=2 without filters", vec![], &typed),
        (
            "a cursor of type=2 with type=3",
            vec![("type", "3")],
            &typed,
        ),
        (
            "a cursor without filters with type=2",
            vec![("type", "2")],
            &issued,
        ),
        ("a cursor of q=l with q=b", vec![("q", "b")], &queried),
        (
            "a cursor of q=l with agency",
            vec![("q", "l"), ("agency", "x")],
            &queried,
        ),
    ] {
        let mut query = filters.clone();
        query.push(("limit", "2"));
        query.push(("cursor", cursor.as_str()));
        let answer = get(app, &with_query(&list, &query), &[]).await;
        assert_eq!(answer.status, 400, "{what} accepted: {}", answer.text());
        answer.problem(&[400]);
    }
    let answer = get(
        app,
        &with_query(&list, &[("limit", "2"), ("cursor", bart.as_str())]),
        &[],
    )
    .await;
    assert_eq!(
        answer.status,
        400,
        "bart's cursor accepted on caltrain: {}",
        answer.text()
    );
    answer.problem(&[400]);
    h.stop().await;
}

fn assert_etag(answer: &Answer) -> String {
    let etag = answer
        .header("etag")
        .unwrap_or_else(|| panic!("{}: no ETag", answer.what))
        .to_owned();
    let opaque = etag.strip_prefix("W/").unwrap_or(&etag);
    assert!(
        opaque.len() >= 3 && opaque.starts_with('"') && opaque.ends_with('"'),
        "{}: ETag {etag:?} is not a quoted string",
        answer.what
    );
    etag
}

fn assert_cache_control(answer: &Answer) {
    assert!(
        answer
            .header("cache-control")
            .is_some_and(|v| !v.is_empty()),
        "{}: no Cache-Control",
        answer.what
    );
}

/// 304 on `If-None-Match` with the ETag (alone or in a list), 200 with another.
async fn check_conditional(app: &TestApp, path: &str, etag: &str, body: &[u8]) {
    for header in [etag.to_owned(), format!("\"something-else\", {etag}")] {
        let answer = get(app, path, &[("if-none-match", &header)]).await;
        assert_eq!(
            answer.status,
            304,
            "{path} If-None-Match: {header}: {}",
            answer.text()
        );
        assert!(answer.body.is_empty(), "{path}: a 304 has no body");
        assert_eq!(
            answer.header("etag"),
            Some(etag),
            "{path}: a 304 carries the ETag (RFC 9110 15.4.5)"
        );
        assert_cache_control(&answer);
    }
    let answer = get(app, path, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(answer.status, 200, "{path}: another ETag");
    assert_eq!(answer.body, body, "{path}");
}

#[tokio::test]
async fn answers_carry_cache_headers_and_compress_when_asked() {
    let h = Harness::start(&["cdmx", "caltrain"]).await;
    let app = &h.app;

    // Route detail: MISS, then HIT, one ETag, 304 when it matches.
    for (feed, route) in [("cdmx", "ROUTE_14243"), ("caltrain", "Bu-130")] {
        let path = route_path(feed, route);
        let first = get(app, &path, &[]).await;
        first.ok();
        assert_eq!(
            first.header("x-cache"),
            Some("MISS"),
            "{path}: first answer"
        );
        let etag = assert_etag(&first);
        assert_cache_control(&first);
        let second = get(app, &path, &[]).await;
        second.ok();
        assert_eq!(
            second.header("x-cache"),
            Some("HIT"),
            "{path}: second answer"
        );
        assert_eq!(assert_etag(&second), etag, "{path}: same ETag");
        assert_cache_control(&second);
        assert_eq!(second.body, first.body, "{path}: same body");
        check_conditional(app, &path, &etag, &first.body).await;
    }
    // Different routes, different ETags.
    let a = assert_etag(&app.get_route("cdmx", "ROUTE_14243").await);
    let b = assert_etag(&app.get_route("cdmx", "ROUTE_14244").await);
    assert_ne!(a, b, "two routes share an ETag");

    // Route list: same query, same ETag, 304.
    for query in [
        vec![("limit", "1000")],
        vec![("type", "1"), ("limit", "5")],
        vec![],
    ] {
        let path = with_query(&routes_path("cdmx"), &query);
        let first = get(app, &path, &[]).await;
        first.ok();
        let etag = assert_etag(&first);
        assert_cache_control(&first);
        if let Some(x) = first.header("x-cache") {
            assert!(["HIT", "MISS", "STALE"].contains(&x), "{path}: X-Cache {x}");
        }
        let second = get(app, &path, &[]).await;
        second.ok();
        assert_eq!(assert_etag(&second), etag, "{path}: same ETag");
        assert_eq!(second.body, first.body, "{path}: same body");
        check_conditional(app, &path, &etag, &first.body).await;
    }
    let all = assert_etag(
        &get(
            app,
            &with_query(&routes_path("cdmx"), &[("limit", "1000")]),
            &[],
        )
        .await,
    );
    let metro = assert_etag(
        &get(
            app,
            &with_query(&routes_path("cdmx"), &[("type", "1")]),
            &[],
        )
        .await,
    );
    assert_ne!(all, metro, "two different lists share an ETag");

    // Compression of the large list, when asked for.
    let path = with_query(&routes_path("cdmx"), &[("limit", "1000")]);
    let plain = get(app, &path, &[]).await;
    plain.ok();
    assert_eq!(plain.header("content-encoding"), None, "not asked for");
    let identity = get(app, &path, &[("accept-encoding", "identity")]).await;
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(identity.body, plain.body);
    for coding in ["gzip", "br"] {
        let answer = get(app, &path, &[("accept-encoding", coding)]).await;
        assert_eq!(answer.status, 200, "{path} {coding}");
        assert_eq!(
            answer.header("content-encoding"),
            Some(coding),
            "{path} {coding}"
        );
        assert!(
            answer.body.len() < plain.body.len(),
            "{coding}: {} bytes, uncompressed {}",
            answer.body.len(),
            plain.body.len()
        );
        if coding == "gzip" {
            assert_eq!(&answer.body[..2], &[0x1f, 0x8b], "gzip magic");
        }
    }
    // Errors and ops answers carry Server-Timing too (checked in `get`).
    get(app, &route_path("cdmx", "NOPE"), &[])
        .await
        .problem(&[404]);
    get(app, "/healthz", &[]).await;
    h.stop().await;
}
