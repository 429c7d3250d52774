//! Waybills (issue 6) end to end, on real feeds: caltrain and bart loaded from their zips
//! through the OTP simulator (`api = "gtfs"`), a real PostgreSQL, real sockets.
//!
//! Every expected value is computed here from the feeds' CSV files (see
//! `support::fixtures`), independently of the service: which trips run on a date
//! (calendar.txt weekdays and range, plus calendar_dates.txt additions, minus its
//! removals), each trip's first departure and last arrival (stop_times.txt), and the
//! planned timestamps: GTFS times count from "noon minus 12 h" of the service date in the
//! agency's time zone (agency.txt), so 25:10:00 is ten past one the next morning, and on a
//! DST day 08:00:00 is still eight o'clock on the wall clock.
//!
//! The tests that stop PostgreSQL run their own embedded server (like `lifecycle.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::Router;
use gtfs_fetch::config::Config;
use gtfs_fetch::db::embedded::{DATABASE, EmbeddedPostgres};
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::fixtures::{fixture_table, format_gtfs_time, parse_gtfs_date, parse_gtfs_time};
use crate::support::http::Answer;
use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, fixture_csv, fresh_database, spawn_config};

// ---------------------------------------------------------------------------------------
// The feeds, read from their CSV files
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Trip {
    id: String,
    route: String,
    service: String,
    /// First departure and last arrival, seconds after the service day's start.
    start: u32,
    end: u32,
}

struct Feed {
    name: &'static str,
    tz: TimeZone,
    trips: Vec<Trip>,
    by_id: HashMap<String, usize>,
    /// service_id → (Monday-first weekdays, first date, last date).
    weekly: HashMap<String, ([bool; 7], Date, Date)>,
    added: HashSet<(String, Date)>,
    removed: HashSet<(String, Date)>,
}

static CALTRAIN: LazyLock<Feed> = LazyLock::new(|| Feed::load("caltrain"));
static BART: LazyLock<Feed> = LazyLock::new(|| Feed::load("bart"));

fn day(s: &str) -> Date {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

impl Feed {
    fn load(name: &'static str) -> Feed {
        let tz_name = fixture_csv(name, "agency.txt")[0]["agency_timezone"].clone();
        let tz = TimeZone::get(&tz_name).unwrap_or_else(|e| panic!("{tz_name}: {e}"));

        // (stop_sequence, arrival, departure) by trip.
        type Event = (u32, Option<u32>, Option<u32>);
        let mut events: HashMap<String, Vec<Event>> = HashMap::new();
        for r in fixture_table(
            name,
            "stop_times.txt",
            &["trip_id", "stop_sequence", "arrival_time", "departure_time"],
        ) {
            events.entry(r[0].clone()).or_default().push((
                r[1].parse().unwrap(),
                parse_gtfs_time(&r[2]),
                parse_gtfs_time(&r[3]),
            ));
        }
        let trips: Vec<Trip> =
            fixture_table(name, "trips.txt", &["trip_id", "route_id", "service_id"])
                .into_iter()
                .map(|r| {
                    let mut ev = events.remove(&r[0]).unwrap_or_default();
                    ev.sort_by_key(|e| e.0);
                    let start = ev.iter().find_map(|e| e.2.or(e.1));
                    let end = ev.iter().rev().find_map(|e| e.1.or(e.2));
                    Trip {
                        id: r[0].clone(),
                        route: r[1].clone(),
                        service: r[2].clone(),
                        start: start.unwrap_or_else(|| panic!("{name} trip {}: times", r[0])),
                        end: end.unwrap_or_else(|| panic!("{name} trip {}: times", r[0])),
                    }
                })
                .collect();
        let by_id = trips
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
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
        let weekly = fixture_csv(name, "calendar.txt")
            .into_iter()
            .map(|r| {
                let mut on = [false; 7];
                for (i, d) in days.iter().enumerate() {
                    on[i] = r[*d] == "1";
                }
                (
                    r["service_id"].clone(),
                    (
                        on,
                        parse_gtfs_date(&r["start_date"]),
                        parse_gtfs_date(&r["end_date"]),
                    ),
                )
            })
            .collect();
        let mut added = HashSet::new();
        let mut removed = HashSet::new();
        for r in fixture_csv(name, "calendar_dates.txt") {
            let key = (r["service_id"].clone(), parse_gtfs_date(&r["date"]));
            match r["exception_type"].as_str() {
                "1" => added.insert(key),
                "2" => removed.insert(key),
                other => panic!("{name}: exception_type {other}"),
            };
        }
        Feed {
            name,
            tz,
            trips,
            by_id,
            weekly,
            added,
            removed,
        }
    }

    fn runs(&self, service: &str, date: Date) -> bool {
        let key = (service.to_owned(), date);
        if self.removed.contains(&key) {
            return false;
        }
        if self.added.contains(&key) {
            return true;
        }
        self.weekly.get(service).is_some_and(|(on, from, to)| {
            *from <= date && date <= *to && on[date.weekday().to_monday_zero_offset() as usize]
        })
    }

    fn trip(&self, id: &str) -> &Trip {
        &self.trips[self.by_id[id]]
    }

    /// Trips of `route` running on `date`, by start time (then trip_id).
    fn trips_on(&self, route: &str, date: Date) -> Vec<&Trip> {
        let mut v: Vec<&Trip> = self
            .trips
            .iter()
            .filter(|t| t.route == route && self.runs(&t.service, date))
            .collect();
        v.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
        v
    }

    /// Trips of `route` on `date` between 04:00 and 23:00, so that duties on consecutive
    /// days never overlap.
    fn daytime(&self, route: &str, date: Date) -> Vec<&Trip> {
        self.trips_on(route, date)
            .into_iter()
            .filter(|t| t.start >= 4 * 3600 && t.end <= 23 * 3600 && t.end > t.start)
            .collect()
    }

    /// `n` daytime trips of `route` on `date`, each starting after the previous one ends.
    fn sequential(&self, route: &str, date: Date, n: usize) -> Vec<&Trip> {
        let mut picked: Vec<&Trip> = Vec::new();
        for t in self.daytime(route, date) {
            if picked.last().is_none_or(|p| t.start > p.end) {
                picked.push(t);
            }
            if picked.len() == n {
                return picked;
            }
        }
        panic!(
            "{}: no {n} sequential trips of {route} on {date}",
            self.name
        );
    }

    /// Two daytime trips of `route` on `date` whose times overlap.
    fn overlapping_pair(&self, route: &str, date: Date) -> (&Trip, &Trip) {
        let day = self.daytime(route, date);
        for (i, a) in day.iter().enumerate() {
            if let Some(b) = day[i + 1..].iter().find(|b| b.start < a.end) {
                return (a, b);
            }
        }
        panic!("{}: no overlapping trips of {route} on {date}", self.name);
    }

    /// A daytime trip of `route` on `date` whose times overlap `t`'s.
    fn overlapping_with(&self, t: &Trip, route: &str, date: Date) -> &Trip {
        self.daytime(route, date)
            .into_iter()
            .find(|o| o.start < t.end && t.start < o.end)
            .unwrap_or_else(|| panic!("{}: no {route} trip overlapping {t:?}", self.name))
    }

    /// The first daytime trip of `route` on `date` starting after `secs`.
    fn first_after(&self, route: &str, date: Date, secs: u32) -> &Trip {
        self.daytime(route, date)
            .into_iter()
            .find(|t| t.start > secs)
            .unwrap_or_else(|| panic!("{}: no {route} trip after {secs} on {date}", self.name))
    }

    /// The service day's origin: noon minus 12 h on `date` in the agency's time zone.
    fn origin(&self, date: Date) -> Timestamp {
        date.at(12, 0, 0, 0)
            .to_zoned(self.tz.clone())
            .unwrap()
            .timestamp()
            - SignedDuration::from_hours(12)
    }

    /// GTFS time `secs` of service date `date` as an instant.
    fn at(&self, date: Date, secs: u32) -> Timestamp {
        self.origin(date) + SignedDuration::from_secs(i64::from(secs))
    }
}

// ---------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------

const FEEDS: [&str; 2] = ["caltrain", "bart"];

/// One `gtfs` instance on the simulator with caltrain and bart, `db_url`, port 0, `env`.
fn config(sim_url: &str, db_url: &str, env: &[(String, String)]) -> Config {
    let mut file = format!("[[instances]]\nname = \"sim\"\nurl = \"{sim_url}\"\napi = \"gtfs\"\n");
    for n in FEEDS {
        file += &format!("[[instances.feeds]]\ngtfs_id = \"{n}\"\nzip_url = \"/gtfs/{n}.zip\"\n");
    }
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), db_url.to_owned()),
        ("GTFS_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ];
    vars.extend(env.iter().cloned());
    Config::parse(Some(("waybills-test.toml", &file)), |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .expect("valid test config")
}

/// The simulator, the service on it, and how to start the service again.
struct Harness {
    app: TestApp,
    sim: OtpSim,
    db_url: String,
    env: Vec<(String, String)>,
    /// `GTFS_API_TOKEN`, sent on every request unless a test says otherwise.
    token: Option<String>,
}

impl Harness {
    /// On a fresh database of the shared test cluster.
    async fn start(env: &[(&str, &str)]) -> Harness {
        Self::start_on(fresh_database().await, env).await
    }

    /// On the database at `db_url`.
    async fn start_on(db_url: String, env: &[(&str, &str)]) -> Harness {
        let sim = OtpSim::start(&FEEDS).await;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let token = env
            .iter()
            .find(|(k, _)| k == "GTFS_API_TOKEN")
            .map(|(_, v)| v.clone());
        let app = Self::spawn(&sim, &db_url, &env).await;
        Harness {
            app,
            sim,
            db_url,
            env,
            token,
        }
    }

    async fn spawn(sim: &OtpSim, db_url: &str, env: &[(String, String)]) -> TestApp {
        let app = spawn_config(config(&sim.url(), db_url, env), Router::new()).await;
        app.wait_ready_status(200, Duration::from_secs(120)).await;
        let body: Value = app.get("/feeds").await.json().await.unwrap();
        for name in FEEDS {
            let f = body["feeds"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["gtfs_id"] == name)
                .unwrap_or_else(|| panic!("feed {name} in {body}"));
            assert_eq!(f["last_error"], Value::Null, "{name} loaded: {f}");
        }
        app
    }

    /// Stops the service and starts another on the same database and simulator.
    async fn restart(self) -> Harness {
        let Harness {
            app,
            sim,
            db_url,
            env,
            token,
        } = self;
        app.stop().await.expect("clean stop");
        let app = Self::spawn(&sim, &db_url, &env).await;
        Harness {
            app,
            sim,
            db_url,
            env,
            token,
        }
    }

    async fn stop(self) {
        self.app.stop().await.expect("clean stop");
    }

    /// `/feeds`' version of `feed`.
    async fn feed_version(&self, feed: &str) -> String {
        let body: Value = self.app.get("/feeds").await.json().await.unwrap();
        body["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["gtfs_id"] == feed)
            .unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends a request. The harness's token goes with it unless `headers` name an
    /// `authorization` of their own; a header with an empty value is left out.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.app.client.request(method.clone(), self.app.url(path));
        let own_auth = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(token), false) = (&self.token, own_auth) {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            if !v.is_empty() {
                req = req.header(*k, *v);
            }
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let what = format!("{method} {path}");
        let res = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Answer::read(what, res).await.assert_timed()
    }

    /// POST /waybills with these bytes; `Content-Type: application/json` unless `headers`
    /// say otherwise.
    async fn post_bytes(&self, body: Vec<u8>, headers: &[(&str, &str)]) -> Answer {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            all.push(("content-type", "application/json"));
        }
        self.send(Method::POST, "/waybills", &all, Some(body)).await
    }

    async fn post(&self, body: &Value) -> Answer {
        self.post_bytes(serde_json::to_vec(body).unwrap(), &[])
            .await
    }

    async fn post_key(&self, body: &Value, key: &str) -> Answer {
        self.post_bytes(
            serde_json::to_vec(body).unwrap(),
            &[("idempotency-key", key)],
        )
        .await
    }

    /// POSTs and expects 201: the waybill.
    async fn create(&self, body: &Value) -> Value {
        self.post(body).await.created()
    }

    async fn get_waybill(&self, id: &str) -> Answer {
        self.send(Method::GET, &format!("/waybills/{id}"), &[], None)
            .await
    }

    /// PATCH with `If-Match: "<version>"` (none when `if_match` is None).
    async fn patch(&self, id: &str, if_match: Option<u64>, body: &Value) -> Answer {
        let tag = if_match.map(|v| format!("\"{v}\"")).unwrap_or_default();
        self.send(
            Method::PATCH,
            &format!("/waybills/{id}"),
            &[("content-type", "application/json"), ("if-match", &tag)],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    /// PATCHes and expects 200: the waybill.
    async fn patch_ok(&self, id: &str, if_match: u64, body: &Value) -> Value {
        let a = self.patch(id, Some(if_match), body).await;
        let w = a.ok();
        assert_eq!(
            a.header("etag"),
            Some(format!("\"{}\"", if_match + 1).as_str()),
            "{}: {w}",
            a.what
        );
        a.assert_phases(&["db", "total"]);
        w
    }

    async fn list(&self, query: &[(&str, &str)]) -> Answer {
        let path = if query.is_empty() {
            "/waybills".to_owned()
        } else {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            format!("/waybills?{q}")
        };
        self.send(Method::GET, &path, &[], None).await
    }

    /// Every waybill matching `filters`, following `next_cursor` with `limit` per page;
    /// checks that paging ends and returns no row twice.
    async fn list_all(&self, filters: &[(&str, &str)], limit: usize) -> Vec<Value> {
        let limit_s = limit.to_string();
        let mut all: Vec<Value> = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        for page_no in 0.. {
            assert!(page_no < 5000, "{filters:?}: paging does not end");
            let mut q = filters.to_vec();
            q.push(("limit", &limit_s));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let (rows, next) = page(&self.list(&q).await);
            assert!(
                rows.len() <= limit,
                "{filters:?} limit {limit}: {} rows",
                rows.len()
            );
            for r in &rows {
                let id = r["id"]
                    .as_str()
                    .expect("listed waybill has an id")
                    .to_owned();
                assert!(
                    seen.insert(id.clone()),
                    "{filters:?} limit {limit} page {page_no}: {id} listed twice"
                );
            }
            all.extend(rows);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        all
    }

    /// Every waybill, per `GET /waybills`.
    async fn all_rows(&self) -> Vec<Value> {
        self.list_all(&[], 1000).await
    }

    /// Rows in `waybill` and `waybill_trip`, straight from the database.
    async fn db_counts(&self) -> (i64, i64) {
        let pool = &self.app.state.db.pool;
        let w = sqlx::query_scalar("SELECT count(*) FROM waybill")
            .fetch_one(pool)
            .await
            .unwrap();
        let t = sqlx::query_scalar("SELECT count(*) FROM waybill_trip")
            .fetch_one(pool)
            .await
            .unwrap();
        (w, t)
    }

    /// Nothing beyond `waybills` waybills (with `trips` trips) was written, per the API
    /// and per the database.
    async fn assert_rows(&self, waybills: usize, trips: usize, ctx: &str) {
        let listed = self.all_rows().await;
        assert_eq!(
            listed.len(),
            waybills,
            "{ctx}: GET /waybills lists {} rows: {listed:?}",
            listed.len()
        );
        assert_eq!(
            self.db_counts().await,
            (waybills as i64, trips as i64),
            "{ctx}: rows in waybill, waybill_trip"
        );
    }
}

/// The rows of one list page and its `next_cursor`, the shape checked.
fn page(a: &Answer) -> (Vec<Value>, Option<String>) {
    let body = a.ok();
    let rows = body["waybills"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: waybills is not an array: {body}", a.what))
        .clone();
    assert!(
        body.as_object().unwrap().contains_key("next_cursor"),
        "{}: next_cursor must be present (null on the last page): {body}",
        a.what
    );
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{}: next_cursor {other}", a.what),
    };
    (rows, next)
}

// ---------------------------------------------------------------------------------------
// Waybill checks
// ---------------------------------------------------------------------------------------

fn wb(date: &str, vehicle: &str, driver: &str, feed: &str, route: &str, trips: &[&str]) -> Value {
    json!({
        "service_date": date,
        "vehicle_id": vehicle,
        "driver_id": driver,
        "gtfs_id": feed,
        "route_id": route,
        "trip_ids": trips,
    })
}

/// A timestamp field: RFC 3339 in UTC ("Z").
fn ts(v: &Value) -> Timestamp {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {v}"));
    assert!(s.ends_with('Z'), "timestamps are UTC with a Z: {s:?}");
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
}

fn id_of(w: &Value) -> String {
    w["id"].as_str().expect("id").to_owned()
}

fn assert_between(v: &Value, from: Timestamp, to: Timestamp, what: &str) {
    let slack = SignedDuration::from_secs(2);
    let t = ts(v);
    assert!(
        from - slack <= t && t <= to + slack,
        "{what} {t} is not between {from} and {to}"
    );
}

const WAYBILL_KEYS: [&str; 20] = [
    "id",
    "number",
    "status",
    "version",
    "service_date",
    "vehicle_id",
    "driver_id",
    "gtfs_id",
    "route_id",
    "feed_version",
    "planned_start",
    "planned_end",
    "actual_start",
    "actual_end",
    "odometer_start",
    "odometer_end",
    "notes",
    "trips",
    "created_at",
    "updated_at",
];

/// What a new waybill must say.
struct Expect<'a> {
    feed: &'a Feed,
    date: Date,
    vehicle: &'a str,
    driver: &'a str,
    route: &'a str,
    /// In time order.
    trips: Vec<&'a Trip>,
    number: Option<&'a str>,
    notes: Option<&'a str>,
    feed_version: &'a str,
}

/// Checks a freshly created waybill against what the feed's files say.
fn check_new(w: &Value, e: &Expect) {
    for k in WAYBILL_KEYS {
        assert!(
            w.as_object().is_some_and(|o| o.contains_key(k)),
            "waybill without {k}: {w}"
        );
    }
    uuid::Uuid::parse_str(w["id"].as_str().expect("id string"))
        .unwrap_or_else(|err| panic!("id is not a UUID ({err}): {w}"));
    assert_eq!(w["status"], "issued", "{w}");
    assert_eq!(w["version"], 1, "{w}");
    assert_eq!(w["service_date"], e.date.to_string(), "{w}");
    assert_eq!(w["vehicle_id"], e.vehicle, "{w}");
    assert_eq!(w["driver_id"], e.driver, "{w}");
    assert_eq!(w["gtfs_id"], e.feed.name, "{w}");
    assert_eq!(w["route_id"], e.route, "{w}");
    assert_eq!(
        w["feed_version"], e.feed_version,
        "the feed's /feeds version: {w}"
    );
    assert_eq!(w["number"], json!(e.number), "{w}");
    assert_eq!(w["notes"], json!(e.notes), "{w}");
    for k in [
        "actual_start",
        "actual_end",
        "odometer_start",
        "odometer_end",
    ] {
        assert_eq!(w[k], Value::Null, "{k} of a new waybill: {w}");
    }
    let first = e.trips.first().unwrap();
    let last = e.trips.last().unwrap();
    assert_eq!(
        ts(&w["planned_start"]),
        e.feed.at(e.date, first.start),
        "planned_start = first trip {} starts {} on {}: {w}",
        first.id,
        format_gtfs_time(first.start),
        e.date
    );
    assert_eq!(
        ts(&w["planned_end"]),
        e.feed.at(e.date, last.end),
        "planned_end = last trip {} ends {} on {}: {w}",
        last.id,
        format_gtfs_time(last.end),
        e.date
    );
    let trips = w["trips"].as_array().expect("trips array");
    assert_eq!(trips.len(), e.trips.len(), "{w}");
    for (i, (got, t)) in trips.iter().zip(&e.trips).enumerate() {
        assert_eq!(got["sequence"], i + 1, "trip {i}: {got}");
        assert_eq!(got["trip_id"], t.id, "trips in time order: {w}");
        assert_eq!(got["start_time"], format_gtfs_time(t.start), "{got}");
        assert_eq!(got["end_time"], format_gtfs_time(t.end), "{got}");
        assert_eq!(
            ts(&got["planned_start"]),
            e.feed.at(e.date, t.start),
            "{got}"
        );
        assert_eq!(ts(&got["planned_end"]), e.feed.at(e.date, t.end), "{got}");
    }
    ts(&w["created_at"]);
    ts(&w["updated_at"]);
}

/// The fields a PATCH never changes.
fn assert_same_duty(before: &Value, after: &Value) {
    for k in [
        "id",
        "number",
        "service_date",
        "vehicle_id",
        "driver_id",
        "gtfs_id",
        "route_id",
        "feed_version",
        "planned_start",
        "planned_end",
        "trips",
        "created_at",
    ] {
        assert_eq!(before[k], after[k], "{k} changed by a PATCH: {after}");
    }
    assert!(
        ts(&after["updated_at"]) >= ts(&before["updated_at"]),
        "updated_at went back: {before} → {after}"
    );
}

/// A list entry agrees with the waybill it lists.
fn assert_listed(entry: &Value, full: &Value) {
    for k in [
        "id",
        "status",
        "service_date",
        "vehicle_id",
        "driver_id",
        "route_id",
    ] {
        assert!(
            entry.get(k).is_some(),
            "list entries carry the waybill's {k}: {entry}"
        );
    }
    for (k, v) in entry.as_object().unwrap() {
        assert_eq!(
            &full[k], v,
            "listed {k} differs from GET: {entry} vs {full}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Raw requests (bodies bigger than the server wants to read)
// ---------------------------------------------------------------------------------------

/// Sends `method path` with a JSON body of `len` bytes (a `notes` string makes it up),
/// by `Content-Length` or chunked, over a raw connection, reading the answer while the
/// body is still being written: a server that refuses early may stop reading.
async fn send_oversized(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    if_match: u64,
    len: usize,
    chunked: bool,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let what = format!(
        "{method} {path} with a {len}-byte body ({})",
        if chunked { "chunked" } else { "Content-Length" }
    );
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         If-Match: \"{if_match}\"\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        head += &format!("Authorization: Bearer {t}\r\n");
    }
    if chunked {
        head += "Transfer-Encoding: chunked\r\n\r\n";
    } else {
        head += &format!("Content-Length: {len}\r\n\r\n");
    }
    let prefix = br#"{"service_date":"2018-06-01","vehicle_id":"big","driver_id":"big","gtfs_id":"caltrain","route_id":"Lo-130","trip_ids":["101"],"notes":""#;
    let suffix = br#""}"#;
    assert!(len > prefix.len() + suffix.len());
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(prefix);
        body.resize(len - suffix.len(), b'x');
        body.extend_from_slice(suffix);
        for piece in body.chunks(64 * 1024) {
            if chunked {
                wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                wr.write_all(piece).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(piece).await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        wr.flush().await?;
        // Keep the write half open: closing it early could end the exchange.
        tokio::time::sleep(Duration::from_secs(60)).await;
        std::io::Result::Ok(())
    });

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let parsed = loop {
        if let Some(p) = parse_response(&buf) {
            break p;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut chunk)).await {
            Err(_) => panic!(
                "{what}: no complete answer within 60 s: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => match parse_response_at_eof(&buf) {
                Some(p) => break p,
                None => panic!(
                    "{what}: the connection ended without an answer: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            },
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    writer.abort();
    let (status, headers, body) = parsed;
    let a = Answer {
        what,
        status,
        headers,
        body: body.into(),
    };
    assert!(
        a.phases().iter().any(|p| p == "total"),
        "{}: no Server-Timing total: {:?}",
        a.what,
        a.headers
    );
    a
}

type Parsed = (u16, HeaderMap, Vec<u8>);

/// Status, headers and body of a complete HTTP/1.1 response in `buf`, if it is complete.
fn parse_response(buf: &[u8]) -> Option<Parsed> {
    let (status, headers, rest) = parse_head(buf)?;
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
    {
        return (rest.len() >= len).then(|| (status, headers, rest[..len].to_vec()));
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_str().unwrap_or_default().contains("chunked"))
    {
        let body = dechunk(rest)?;
        return Some((status, headers, body));
    }
    None
}

/// Like [`parse_response`], when the server has closed: a body without a length ends here.
fn parse_response_at_eof(buf: &[u8]) -> Option<Parsed> {
    parse_response(buf).or_else(|| {
        let (status, headers, rest) = parse_head(buf)?;
        (!headers.contains_key("content-length") && !headers.contains_key("transfer-encoding"))
            .then(|| (status, headers, rest.to_vec()))
    })
}

fn parse_head(buf: &[u8]) -> Option<(u16, HeaderMap, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
            HeaderValue::from_str(v.trim()).ok()?,
        );
    }
    Some((status, headers, &buf[end + 4..]))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Stored, read back, listed, moved, kept across a restart
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_waybill_is_stored_read_listed_moved_through_its_states_and_kept_across_a_restart() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let date = day("2018-06-01");
    assert_eq!(date.weekday(), Weekday::Friday);
    let trips = cal.sequential("Lo-130", date, 2);
    let version = h.feed_version("caltrain").await;

    // Trips given out of order: the waybill lists them in time order.
    let mut req = wb(
        "2018-06-01",
        "train-921",
        "driver-ana",
        "caltrain",
        "Lo-130",
        &[&trips[1].id, &trips[0].id],
    );
    req["number"] = json!("WB-2018-000001");
    req["notes"] = json!("first duty of the day");
    let bytes = serde_json::to_vec(&req).unwrap();
    let t0 = Timestamp::now();
    let created = h
        .post_bytes(bytes.clone(), &[("idempotency-key", "lifecycle-1")])
        .await;
    let t1 = Timestamp::now();
    let w1 = created.created();
    check_new(
        &w1,
        &Expect {
            feed: cal,
            date,
            vehicle: "train-921",
            driver: "driver-ana",
            route: "Lo-130",
            trips: trips.clone(),
            number: Some("WB-2018-000001"),
            notes: Some("first duty of the day"),
            feed_version: &version,
        },
    );
    assert_between(&w1["created_at"], t0, t1, "created_at");
    assert_between(&w1["updated_at"], t0, t1, "updated_at");
    let id = id_of(&w1);

    // Read back and listed.
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w1, "GET answers what POST answered");
    assert_eq!(got.header("etag"), Some("\"1\""));
    got.assert_phases(&["db", "total"]);
    let listed = h.list(&[]).await;
    listed.assert_phases(&["db", "total"]);
    let (rows, next) = page(&listed);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(next, None);
    assert_listed(&rows[0], &w1);

    // issued → in_progress: actual_start defaults to now.
    let t0 = Timestamp::now();
    let w2 = h
        .patch_ok(
            &id,
            1,
            &json!({"status": "in_progress", "odometer_start": 120345}),
        )
        .await;
    let t1 = Timestamp::now();
    assert_eq!(w2["status"], "in_progress", "{w2}");
    assert_eq!(w2["version"], 2, "{w2}");
    assert_eq!(w2["odometer_start"], 120345, "{w2}");
    assert_between(&w2["actual_start"], t0, t1, "default actual_start");
    assert_eq!(w2["actual_end"], Value::Null, "{w2}");
    assert_eq!(w2["odometer_end"], Value::Null, "{w2}");
    assert_eq!(w2["notes"], w1["notes"], "{w2}");
    assert_same_duty(&w1, &w2);
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w2);
    assert_eq!(got.header("etag"), Some("\"2\""));

    // in_progress → completed, with an explicit end (after the start) and new notes.
    let end = ts(&w2["actual_start"]) + SignedDuration::from_mins(97);
    let w3 = h
        .patch_ok(
            &id,
            2,
            &json!({
                "status": "completed",
                "odometer_end": 120398,
                "actual_end": end.to_string(),
                "notes": "arrived on time",
            }),
        )
        .await;
    assert_eq!(w3["status"], "completed", "{w3}");
    assert_eq!(w3["version"], 3, "{w3}");
    assert_eq!(w3["odometer_start"], 120345, "{w3}");
    assert_eq!(w3["odometer_end"], 120398, "{w3}");
    assert_eq!(ts(&w3["actual_end"]), end, "{w3}");
    assert_eq!(w3["actual_start"], w2["actual_start"], "{w3}");
    assert_eq!(w3["notes"], "arrived on time", "{w3}");
    assert_same_duty(&w2, &w3);

    // Another service on the same database finds it as it was.
    let h = h.restart().await;
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w3, "after a restart");
    assert_eq!(got.header("etag"), Some("\"3\""));
    let rows = h.all_rows().await;
    assert_eq!(rows.len(), 1);
    assert_listed(&rows[0], &w3);

    // The key's stored answer survives too: the first answer again, no new row.
    let replay = h
        .post_bytes(bytes, &[("idempotency-key", "lifecycle-1")])
        .await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.json(), w1, "the stored answer of the key");
    h.assert_rows(1, 2, "after the replay").await;
    h.stop().await;
}

#[tokio::test]
async fn planned_times_follow_the_agency_time_zone_past_midnight_and_across_dst() {
    let h = Harness::start(&[]).await;
    let (cal, bart) = (&*CALTRAIN, &*BART);
    let cal_version = h.feed_version("caltrain").await;
    let bart_version = h.feed_version("bart").await;

    // The test's own arithmetic, pinned: noon minus 12 h in Los Angeles.
    assert_eq!(
        cal.origin(day("2018-06-01")).to_string(),
        "2018-06-01T07:00:00Z"
    );
    assert_eq!(
        cal.origin(day("2018-03-11")).to_string(),
        "2018-03-11T07:00:00Z"
    );
    assert_eq!(
        cal.origin(day("2018-11-04")).to_string(),
        "2018-11-04T08:00:00Z"
    );

    // Spring forward and fall back: Sunday service, daytime trips.
    for (i, date) in ["2018-03-11", "2018-11-04"].into_iter().enumerate() {
        let d = day(date);
        assert_eq!(d.weekday(), Weekday::Sunday);
        let trips = cal.sequential("Lo-130", d, 2);
        let vehicle = format!("dst-v{i}");
        let driver = format!("dst-d{i}");
        let w = h
            .create(&wb(
                date,
                &vehicle,
                &driver,
                "caltrain",
                "Lo-130",
                &[&trips[0].id, &trips[1].id],
            ))
            .await;
        check_new(
            &w,
            &Expect {
                feed: cal,
                date: d,
                vehicle: &vehicle,
                driver: &driver,
                route: "Lo-130",
                trips,
                number: None,
                notes: None,
                feed_version: &cal_version,
            },
        );
    }

    // BART: a trip that ends after midnight, and one that starts after midnight.
    let d = day("2018-06-01");
    let on_day: Vec<&Trip> = bart
        .trips
        .iter()
        .filter(|t| bart.runs(&t.service, d))
        .collect();
    let crossing = on_day
        .iter()
        .find(|t| t.start < 86400 && t.end > 86400)
        .expect("a bart trip across midnight on 2018-06-01");
    let late = on_day
        .iter()
        .find(|t| t.start >= 86400)
        .expect("a bart trip after midnight on 2018-06-01");
    for (i, t) in [crossing, late].into_iter().enumerate() {
        let vehicle = format!("night-v{i}");
        let driver = format!("night-d{i}");
        let w = h
            .create(&wb(
                "2018-06-01",
                &vehicle,
                &driver,
                "bart",
                &t.route,
                &[&t.id],
            ))
            .await;
        check_new(
            &w,
            &Expect {
                feed: bart,
                date: d,
                vehicle: &vehicle,
                driver: &driver,
                route: &t.route,
                trips: vec![*t],
                number: None,
                notes: None,
                feed_version: &bart_version,
            },
        );
        assert!(
            w["planned_end"]
                .as_str()
                .unwrap()
                .starts_with("2018-06-02T"),
            "{} ends {} on the next calendar day: {w}",
            t.id,
            format_gtfs_time(t.end)
        );
    }
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_rule_is_checked_with_422_naming_the_culprit_and_nothing_is_written() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let seq = cal.sequential("Lo-130", fri, 2);
    let (a, b) = (&seq[0].id, &seq[1].id);
    let (o1, o2) = cal.overlapping_pair("Lo-130", fri);
    let bullet = &cal.daytime("Bu-130", fri)[0].id;
    let bart_trip = &BART.trips[0].id;
    let weekday_only = cal.trip(a);
    assert_eq!(weekday_only.service, "mtwtf");
    assert!(!cal.runs("mtwtf", day("2018-06-02")), "Saturday");
    assert!(
        !cal.runs("mtwtf", day("2018-07-04")),
        "removed by calendar_dates"
    );
    assert!(cal.runs("mtwtf", day("2018-07-03")));
    assert!(!cal.runs("mtwtf", day("2030-06-03")), "past the calendar");

    let v = |date: &str, route: &str, trips: &[&str]| {
        wb(date, "veh-rules", "drv-rules", "caltrain", route, trips)
    };
    let mut unknown_feed = v("2018-06-01", "Lo-130", &[a]);
    unknown_feed["gtfs_id"] = json!("no-such-feed");
    let bart_route_on_caltrain = v("2018-06-01", &BART.trips[0].route, &[a]);
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        ("unknown feed", unknown_feed, Some("no-such-feed")),
        (
            "unknown route",
            v("2018-06-01", "No-Such-Route", &[a]),
            Some("No-Such-Route"),
        ),
        ("a route of another feed", bart_route_on_caltrain, None),
        (
            "unknown trip after a good one",
            v("2018-06-01", "Lo-130", &[a, "no-such-trip"]),
            Some("no-such-trip"),
        ),
        (
            "a trip of another feed",
            v("2018-06-01", "Lo-130", &[bart_trip]),
            Some(bart_trip),
        ),
        (
            "a trip not on the route",
            v("2018-06-01", "Lo-130", &[a, bullet]),
            Some(bullet),
        ),
        (
            "a weekday trip on a Saturday",
            v("2018-06-02", "Lo-130", &[a]),
            Some(a),
        ),
        (
            "a weekday trip on a holiday removed by calendar_dates",
            v("2018-07-04", "Lo-130", &[a, b]),
            None,
        ),
        (
            "a date past the feed's calendar",
            v("2030-06-03", "Lo-130", &[a]),
            Some(a),
        ),
        (
            "overlapping trips",
            v("2018-06-01", "Lo-130", &[&o1.id, &o2.id]),
            None,
        ),
        ("no trips", v("2018-06-01", "Lo-130", &[]), None),
        (
            "a trip twice",
            v("2018-06-01", "Lo-130", &[a, b, a]),
            Some(a),
        ),
    ];
    for (what, body, culprit) in &cases {
        let res = h.post(body).await;
        let problem = match culprit {
            Some(c) => res.problem_naming(422, c),
            None => res.problem(&[422]),
        };
        if *what == "overlapping trips" {
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(&o1.id) || detail.contains(&o2.id),
                "{what}: the detail names a trip: {detail}"
            );
        }
        if what.contains("holiday") {
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(a.as_str()) || detail.contains(b.as_str()),
                "{what}: the detail names a trip: {detail}"
            );
        }
        h.assert_rows(0, 0, what).await;
    }

    // Empty identifiers are the client's fault, never a 500.
    for field in ["vehicle_id", "driver_id", "number"] {
        let mut body = v("2018-06-01", "Lo-130", &[a]);
        body[field] = json!("");
        h.post(&body).await.problem(&[400, 422]);
        h.assert_rows(0, 0, &format!("empty {field}")).await;
    }

    // calendar_dates additions run: Sunday service on the 4th of July.
    assert!(cal.runs("sat_sun", day("2018-07-04")));
    let holiday = cal.sequential("Lo-130", day("2018-07-04"), 1);
    assert_eq!(holiday[0].service, "sat_sun");
    let w = h
        .create(&v("2018-07-04", "Lo-130", &[&holiday[0].id]))
        .await;
    assert_eq!(w["trips"][0]["trip_id"], holiday[0].id);
    assert!(BART.runs("SUN", day("2018-07-04")));
    let bart_sunday = BART
        .trips
        .iter()
        .filter(|t| t.service == "SUN" && t.start >= 4 * 3600 && t.end <= 23 * 3600)
        .min_by_key(|t| t.start)
        .unwrap();
    h.create(&wb(
        "2018-07-04",
        "veh-bart",
        "drv-bart",
        "bart",
        &bart_sunday.route,
        &[&bart_sunday.id],
    ))
    .await;
    h.assert_rows(2, 2, "two good ones").await;
    h.stop().await;
}

#[tokio::test]
async fn overlapping_duties_and_reused_numbers_are_409_and_cancelling_frees_the_slot() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let a = cal.sequential("Lo-130", fri, 1)[0];
    let bullet = cal.overlapping_with(a, "Bu-130", fri);
    let limited = cal.overlapping_with(a, "Li-130", fri);
    // Clear of all three.
    let later = cal.first_after("Lo-130", fri, a.end.max(bullet.end).max(limited.end));

    let mut first = wb("2018-06-01", "V1", "D1", "caltrain", "Lo-130", &[&a.id]);
    first["number"] = json!("N-1");
    let w1 = h.create(&first).await;

    // The same vehicle, or the same driver, overlapping: same route or another.
    let conflicts = [
        (
            "same vehicle, other route",
            wb(
                "2018-06-01",
                "V1",
                "D2",
                "caltrain",
                "Bu-130",
                &[&bullet.id],
            ),
        ),
        (
            "same vehicle, same trip",
            wb("2018-06-01", "V1", "D3", "caltrain", "Lo-130", &[&a.id]),
        ),
        (
            "same driver, other route",
            wb(
                "2018-06-01",
                "V2",
                "D1",
                "caltrain",
                "Li-130",
                &[&limited.id],
            ),
        ),
        (
            "same driver, same trip",
            wb("2018-06-01", "V3", "D1", "caltrain", "Lo-130", &[&a.id]),
        ),
    ];
    for (what, body) in &conflicts {
        let res = h.post(body).await;
        assert_eq!(res.status, 409, "{what}: {}", res.text());
        res.problem(&[409]);
        h.assert_rows(1, 1, what).await;
    }

    // No overlap: later that day, or the same trip another day.
    let w2 = h
        .create(&wb(
            "2018-06-01",
            "V1",
            "D1",
            "caltrain",
            "Lo-130",
            &[&later.id],
        ))
        .await;
    let mon = day("2018-06-04");
    assert!(cal.runs(&a.service, mon));
    h.create(&wb(
        "2018-06-04",
        "V1",
        "D1",
        "caltrain",
        "Lo-130",
        &[&a.id],
    ))
    .await;

    // A number is used once.
    let mut reuse = wb("2018-06-04", "V9", "D9", "caltrain", "Lo-130", &[&later.id]);
    reuse["number"] = json!("N-1");
    let res = h.post(&reuse).await;
    res.problem(&[409]);
    h.assert_rows(3, 3, "reused number").await;

    // Started and completed duties still hold their slot.
    h.patch_ok(
        &id_of(&w2),
        1,
        &json!({"status": "in_progress", "odometer_start": 10}),
    )
    .await;
    let over_later = cal.overlapping_with(later, "Bu-130", fri);
    let res = h
        .post(&wb(
            "2018-06-01",
            "V1",
            "D7",
            "caltrain",
            "Bu-130",
            &[&over_later.id],
        ))
        .await;
    res.problem(&[409]);
    h.patch_ok(
        &id_of(&w2),
        2,
        &json!({"status": "completed", "odometer_end": 20}),
    )
    .await;
    let res = h
        .post(&wb(
            "2018-06-01",
            "V8",
            "D1",
            "caltrain",
            "Bu-130",
            &[&over_later.id],
        ))
        .await;
    res.problem(&[409]);
    h.assert_rows(3, 3, "slots of started and completed duties")
        .await;

    // Cancelling frees the slot, for the vehicle and for the driver.
    let cancelled = h
        .patch_ok(&id_of(&w1), 1, &json!({"status": "cancelled"}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    for (_, body) in &conflicts[..1] {
        h.create(body).await;
    }
    h.create(&wb(
        "2018-06-01",
        "V2",
        "D1",
        "caltrain",
        "Li-130",
        &[&limited.id],
    ))
    .await;
    h.assert_rows(5, 5, "after cancelling").await;
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// Sends all `bodies` at once (one task each, released together): (status, body) each.
async fn all_at_once(h: &Harness, requests: Vec<(Value, Option<String>)>) -> Vec<(u16, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(body, key)| {
            let client = h.app.client.clone();
            let url = h.app.url("/waybills");
            let token = h.token.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut req = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap());
                if let Some(k) = key {
                    req = req.header("idempotency-key", k);
                }
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                barrier.wait().await;
                let res = req.send().await.expect("POST /waybills");
                let status = res.status().as_u16();
                let ct = res
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let text = res.text().await.unwrap();
                if status != 201 {
                    assert!(
                        ct.starts_with("application/problem+json"),
                        "{status} as {ct}: {text}"
                    );
                }
                let body = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
                (status, body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_hundred_concurrent_posts_with_one_key_make_one_row() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let trips = cal.sequential("Li-130", day("2018-06-01"), 2);
    let body = wb(
        "2018-06-01",
        "key-v",
        "key-d",
        "caltrain",
        "Li-130",
        &[&trips[0].id, &trips[1].id],
    );
    let answers = all_at_once(
        &h,
        (0..100)
            .map(|_| (body.clone(), Some("one-key-for-all".to_owned())))
            .collect(),
    )
    .await;
    let mut created: Vec<&Value> = Vec::new();
    let mut in_flight = 0;
    for (status, b) in &answers {
        match status {
            201 => created.push(b),
            409 => in_flight += 1,
            other => panic!("only 201 (the answer) or 409 (in flight) allowed, got {other}: {b}"),
        }
    }
    assert!(!created.is_empty(), "no 201 among {answers:?}");
    assert!(
        created.iter().all(|b| *b == created[0]),
        "every 201 is the same answer, with the same id"
    );
    eprintln!(
        "100 posts with one key: {} × 201, {in_flight} × 409",
        created.len()
    );
    h.assert_rows(1, 2, "100 posts, one key").await;
    let w = created[0].clone();

    // Later, the stored answer again.
    let replay = h.post_key(&body, "one-key-for-all").await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.json(), w);
    // The same request written another way (keys in another order, other whitespace) is
    // the same request: the stored answer, not 422.
    let mut pairs: Vec<(String, Value)> = body
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.reverse();
    let reordered = format!(
        "{{\n  {}\n}}",
        pairs
            .iter()
            .map(|(k, v)| format!(
                "{} :  {}",
                json!(k),
                serde_json::to_string_pretty(v).unwrap()
            ))
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    assert_ne!(reordered.as_bytes(), serde_json::to_vec(&body).unwrap());
    let replay = h
        .post_bytes(
            reordered.into_bytes(),
            &[("idempotency-key", "one-key-for-all")],
        )
        .await;
    assert_eq!(replay.status, 201, "{}", replay.text());
    assert_eq!(replay.json(), w);
    // Same key, another body: refused, nothing written.
    let mut other = body.clone();
    other["notes"] = json!("changed my mind");
    h.post_key(&other, "one-key-for-all").await.problem(&[422]);
    // The same body without the key, or with another, is a new request: an overlap.
    h.post(&body).await.problem(&[409]);
    h.post_key(&body, "another-key").await.problem(&[409]);
    h.assert_rows(1, 2, "after replays").await;
    let got = h.get_waybill(&id_of(&w)).await;
    assert_eq!(got.ok(), w);
    h.stop().await;
}

#[tokio::test]
async fn two_concurrent_overlapping_waybills_for_one_vehicle_driver_or_number_give_one_201() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let a = cal.sequential("Lo-130", fri, 1)[0];
    let x = cal.overlapping_with(a, "Bu-130", fri);
    let rounds = 15;
    for r in 0..rounds {
        // One vehicle, two drivers; then one driver, two vehicles.
        let pairs = [
            (
                wb(
                    "2018-06-01",
                    &format!("rv{r}"),
                    &format!("rd{r}a"),
                    "caltrain",
                    "Lo-130",
                    &[&a.id],
                ),
                wb(
                    "2018-06-01",
                    &format!("rv{r}"),
                    &format!("rd{r}b"),
                    "caltrain",
                    "Bu-130",
                    &[&x.id],
                ),
            ),
            (
                wb(
                    "2018-06-01",
                    &format!("sv{r}a"),
                    &format!("sd{r}"),
                    "caltrain",
                    "Lo-130",
                    &[&a.id],
                ),
                wb(
                    "2018-06-01",
                    &format!("sv{r}b"),
                    &format!("sd{r}"),
                    "caltrain",
                    "Bu-130",
                    &[&x.id],
                ),
            ),
        ];
        // And one number for two duties that do not overlap at all.
        let mut n1 = wb(
            "2018-06-04",
            &format!("nv{r}a"),
            &format!("nd{r}a"),
            "caltrain",
            "Lo-130",
            &[&a.id],
        );
        n1["number"] = json!(format!("race-{r}"));
        let mut n2 = wb(
            "2018-06-04",
            &format!("nv{r}b"),
            &format!("nd{r}b"),
            "caltrain",
            "Lo-130",
            &[&a.id],
        );
        n2["number"] = json!(format!("race-{r}"));
        for (p, q) in pairs.into_iter().chain([(n1, n2)]) {
            let answers = all_at_once(&h, vec![(p, None), (q, None)]).await;
            let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
            statuses.sort();
            assert_eq!(statuses, vec![201, 409], "round {r}: {answers:?}");
        }
    }
    h.assert_rows(3 * rounds, 3 * rounds, "one per round and kind")
        .await;
    let pool = &h.app.state.db.pool;
    for r in 0..rounds {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE vehicle_id = $1")
            .bind(format!("rv{r}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "vehicle rv{r}");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE driver_id = $1")
            .bind(format!("sd{r}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "driver sd{r}");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE number = $1")
            .bind(format!("race-{r}"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "number race-{r}");
    }
    h.stop().await;
}

#[tokio::test]
async fn concurrent_patches_with_one_version_give_exactly_one_200() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let w = h
        .create(&wb(
            "2018-06-01",
            "pv",
            "pd",
            "caltrain",
            "Lo-130",
            &[&a.id],
        ))
        .await;
    let id = id_of(&w);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (client, url, barrier) = (
                h.app.client.clone(),
                h.app.url(&format!("/waybills/{id}")),
                barrier.clone(),
            );
            tokio::spawn(async move {
                let req = client
                    .patch(url)
                    .header("content-type", "application/json")
                    .header("if-match", "\"1\"")
                    .body(json!({"status": "in_progress", "odometer_start": i}).to_string());
                barrier.wait().await;
                let res = req.send().await.unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let stale = statuses.iter().filter(|(s, _)| *s == 412).count();
    assert_eq!(
        (ok, stale),
        (1, 19),
        "one winner, the others stale: {statuses:?}"
    );
    let got = h.get_waybill(&id).await.ok();
    assert_eq!(got["version"], 2, "{got}");
    assert_eq!(got["status"], "in_progress", "{got}");
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------

/// PATCH /waybills/{id} with `If-Match: "<version>"`, these bytes and this content type.
async fn patch_bytes(h: &Harness, id: &str, version: u64, ct: &str, body: Vec<u8>) -> Answer {
    let tag = format!("\"{version}\"");
    h.send(
        Method::PATCH,
        &format!("/waybills/{id}"),
        &[("content-type", ct), ("if-match", &tag)],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn bad_bodies_get_400_413_415_or_422_problem_json_and_write_nothing() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let good = wb(
        "2018-06-01",
        "bad-v",
        "bad-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    );
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };

    // Every refusal is checked; the failures are reported together at the end. A bad body
    // wrongly accepted is counted, so that "nothing written" still means something.
    let mut fails: Vec<String> = Vec::new();
    let mut written = 0usize;
    let mut note = |res: &Answer, statuses: &[u16], written: &mut usize| {
        if let Err(e) = res.check_problem(statuses) {
            fails.push(e);
            if res.status == 201 {
                *written += 1;
            }
        }
    };

    // JSON syntax errors: 400. Each is the good body broken, so that syntax is its only
    // fault (a parser that stops at the first problem must find this one).
    let good_text = serde_json::to_string(&good).unwrap();
    let open = &good_text[..good_text.len() - 1];
    let syntax = [
        String::new(),
        "not json".to_owned(),
        open.to_owned(),
        format!("{open},}}"),
        format!("{good_text}}}"),
        format!("{good_text} trailing"),
        good_text.replacen(':', "", 1),
        good_text.replacen('"', "'", 2),
    ];
    for (n, text) in syntax.iter().enumerate() {
        let text = text.replace("bad-v", &format!("syn-v{n}"));
        let text = text.replace("bad-d", &format!("syn-d{n}"));
        let mut res = h.post_bytes(text.as_bytes().to_vec(), &[]).await;
        res.what = format!("{} ({text:?})", res.what);
        note(&res, &[400], &mut written);
    }
    h.assert_rows(written, written, "syntax errors").await;

    // Wrong types, missing fields, unknown fields, malformed dates: 422 (or 400).
    let mut bad: Vec<(String, Value)> = vec![
        ("an array".into(), json!([good.clone()])),
        ("null".into(), Value::Null),
        ("a string".into(), json!("waybill")),
        (
            "a numeric date".into(),
            with("service_date", json!(20180601)),
        ),
        ("a numeric vehicle".into(), with("vehicle_id", json!(921))),
        ("a null driver".into(), with("driver_id", Value::Null)),
        ("trip_ids a string".into(), with("trip_ids", json!(a.id))),
        ("numeric trip ids".into(), with("trip_ids", json!([101]))),
        (
            "an object route".into(),
            with("route_id", json!({"id": "Lo-130"})),
        ),
        ("a numeric number".into(), with("number", json!(7))),
        ("boolean notes".into(), with("notes", json!(true))),
        ("an unknown field".into(), with("colour", json!("red"))),
        (
            "a status on create".into(),
            with("status", json!("completed")),
        ),
        (
            "an id on create".into(),
            with("id", json!(uuid::Uuid::new_v4().to_string())),
        ),
    ];
    for field in [
        "service_date",
        "vehicle_id",
        "driver_id",
        "gtfs_id",
        "route_id",
        "trip_ids",
    ] {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        bad.push((format!("without {field}"), b));
    }
    for date in [
        "2018-06-31",
        "2018-13-01",
        "2018-02-29",
        "2018-6-1",
        "20180601",
        "01/06/2018",
        "",
        "2018-06-01T00:00:00Z",
        "2018-06-01 ",
        " 2018-06-01",
        "+002018-06-01",
        "yesterday",
    ] {
        bad.push((
            format!("service_date {date:?}"),
            with("service_date", json!(date)),
        ));
    }
    for (n, (what, body)) in bad.iter_mut().enumerate() {
        // Own vehicle and driver: a wrongly accepted body does not block the next ones.
        if body["vehicle_id"] == "bad-v" {
            body["vehicle_id"] = json!(format!("bad-v{n}"));
        }
        if body["driver_id"] == "bad-d" {
            body["driver_id"] = json!(format!("bad-d{n}"));
        }
        let mut res = h.post(body).await;
        res.what = format!("{} ({what})", res.what);
        note(&res, &[400, 422], &mut written);
        h.assert_rows(written, written, what).await;
    }

    // Content types: 415.
    let bytes = serde_json::to_vec(&good).unwrap();
    for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let mut res = h.post_bytes(bytes.clone(), &[("content-type", ct)]).await;
        res.what = format!("{} (content-type {ct:?})", res.what);
        note(&res, &[415], &mut written);
    }
    h.assert_rows(written, written, "wrong content types").await;

    // 10 MB: 413, with a length up front and streamed.
    for chunked in [false, true] {
        let res = send_oversized(
            h.app.addr,
            "POST",
            "/waybills",
            h.token.as_deref(),
            1,
            10 * 1024 * 1024,
            chunked,
        )
        .await;
        note(&res, &[413], &mut written);
        h.assert_rows(written, written, &res.what).await;
    }

    // The good body, with a charset, is welcome.
    let res = h
        .post_bytes(
            bytes,
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
    let w = res.created();
    let id = id_of(&w);
    h.assert_rows(written + 1, written + 1, "the good one")
        .await;

    // PATCH bodies, each with the current version (a wrongly accepted one moves it on).
    let mut current = 1u64;
    for text in ["", "{", "{\"status\": }"] {
        let res = patch_bytes(
            &h,
            &id,
            current,
            "application/json",
            text.as_bytes().to_vec(),
        )
        .await;
        note(&res, &[400], &mut written);
        current = current_version(&h, &id).await;
    }
    let bad_patches = [
        json!({}),
        json!({"status": "flying"}),
        json!({"status": 3}),
        json!({"status": "in_progress", "odometer_start": "12"}),
        json!({"status": "in_progress", "odometer_start": -1}),
        json!({"status": "in_progress", "odometer_start": 1.5}),
        json!({"status": "in_progress", "odometer_start": 1e30}),
        json!({"status": "in_progress", "odometer_start": 1, "actual_start": "yesterday"}),
        json!({"status": "in_progress", "odometer_start": 1, "actual_start": "2018-06-01 10:00"}),
        json!({"status": "in_progress", "odometer_start": 1, "colour": "red"}),
        json!({"status": "in_progress", "odometer_start": 1, "vehicle_id": "other"}),
        json!({"status": "in_progress", "odometer_start": 1, "notes": 5}),
    ];
    for body in &bad_patches {
        let mut res = h.patch(&id, Some(current), body).await;
        res.what = format!("{} ({body})", res.what);
        note(&res, &[400, 422], &mut written);
        current = current_version(&h, &id).await;
    }
    for ct in ["text/plain", ""] {
        let body = serde_json::to_vec(&json!({"status": "cancelled"})).unwrap();
        let mut res = patch_bytes(&h, &id, current, ct, body).await;
        res.what = format!("{} (content-type {ct:?})", res.what);
        note(&res, &[415], &mut written);
        current = current_version(&h, &id).await;
    }
    let res = send_oversized(
        h.app.addr,
        "PATCH",
        &format!("/waybills/{id}"),
        h.token.as_deref(),
        current,
        10 * 1024 * 1024,
        false,
    )
    .await;
    note(&res, &[413], &mut written);
    let got = h.get_waybill(&id).await;
    if got.ok() != w {
        fails.push(format!(
            "a bad PATCH changed the waybill: {} → {}",
            w,
            got.text()
        ));
    }
    h.assert_rows(written + 1, written + 1, "after bad patches")
        .await;
    h.stop().await;
    assert!(
        fails.is_empty(),
        "{} bad requests not refused as they should be:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// The current version of waybill `id`.
async fn current_version(h: &Harness, id: &str) -> u64 {
    h.get_waybill(id).await.ok()["version"].as_u64().unwrap()
}

/// The waybill `id` is still `expect`, ETag included.
async fn unchanged(h: &Harness, id: String, expect: Value) {
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), expect, "nothing changed");
    assert_eq!(
        got.header("etag"),
        Some(format!("\"{}\"", expect["version"]).as_str())
    );
}

#[tokio::test]
async fn patch_needs_if_match_and_follows_the_state_machine() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let fri = day("2018-06-01");
    let trips = cal.sequential("Lo-130", fri, 3);
    let new = |i: usize| {
        wb(
            "2018-06-01",
            &format!("sm-v{i}"),
            &format!("sm-d{i}"),
            "caltrain",
            "Lo-130",
            &[&trips[i].id],
        )
    };
    let w = h.create(&new(0)).await;
    let id = id_of(&w);

    let start = json!({"status": "in_progress", "odometer_start": 1000});
    h.patch(&id, None, &start).await.problem(&[428]);
    h.patch(&id, Some(7), &start).await.problem(&[412]);
    h.patch(&id, Some(0), &start).await.problem(&[412]);
    unchanged(&h, id.clone(), w.clone()).await;

    // issued → completed is not a move.
    h.patch(
        &id,
        Some(1),
        &json!({"status": "completed", "odometer_end": 5}),
    )
    .await
    .problem(&[409]);
    // issued → in_progress needs odometer_start.
    h.patch(&id, Some(1), &json!({"status": "in_progress"}))
        .await
        .problem(&[422]);
    unchanged(&h, id.clone(), w.clone()).await;

    let w2 = h
        .patch_ok(
            &id,
            1,
            &json!({"status": "in_progress", "odometer_start": 1000, "actual_start": "2018-06-01T11:20:00Z"}),
        )
        .await;
    assert_eq!(w2["version"], 2);
    assert_eq!(
        ts(&w2["actual_start"]).to_string(),
        "2018-06-01T11:20:00Z",
        "{w2}"
    );
    // The old version is stale now.
    h.patch(&id, Some(1), &json!({"status": "cancelled"}))
        .await
        .problem(&[412]);
    h.patch(&id, Some(2), &start).await.problem(&[409]);
    h.patch(&id, Some(2), &json!({"status": "completed"}))
        .await
        .problem(&[422]);
    h.patch(
        &id,
        Some(2),
        &json!({"status": "completed", "odometer_end": 999}),
    )
    .await
    .problem(&[422]);
    unchanged(&h, id.clone(), w2.clone()).await;

    let t0 = Timestamp::now();
    let w3 = h
        .patch_ok(
            &id,
            2,
            &json!({"status": "completed", "odometer_end": 1000}),
        )
        .await;
    let t1 = Timestamp::now();
    assert_eq!(w3["status"], "completed");
    assert_eq!(w3["odometer_end"], 1000, "equal odometers are fine");
    assert_between(&w3["actual_end"], t0, t1, "default actual_end");
    assert_eq!(w3["actual_start"], w2["actual_start"]);
    for body in [
        json!({"status": "cancelled"}),
        json!({"status": "in_progress", "odometer_start": 1}),
        json!({"status": "completed", "odometer_end": 2000}),
    ] {
        h.patch(&id, Some(3), &body).await.problem(&[409]);
    }
    unchanged(&h, id.clone(), w3.clone()).await;

    // issued → cancelled; then nothing.
    let c = h.create(&new(1)).await;
    let cid = id_of(&c);
    let c2 = h.patch_ok(&cid, 1, &json!({"status": "cancelled"})).await;
    assert_eq!(c2["status"], "cancelled");
    for body in [
        json!({"status": "cancelled"}),
        json!({"status": "in_progress", "odometer_start": 1}),
        json!({"status": "completed", "odometer_end": 2000}),
    ] {
        h.patch(&cid, Some(2), &body).await.problem(&[409]);
    }
    unchanged(&h, cid, c2).await;

    // in_progress → cancelled.
    let p = h.create(&new(2)).await;
    let pid = id_of(&p);
    h.patch_ok(
        &pid,
        1,
        &json!({"status": "in_progress", "odometer_start": 0}),
    )
    .await;
    let p3 = h
        .patch_ok(
            &pid,
            2,
            &json!({"status": "cancelled", "notes": "breakdown"}),
        )
        .await;
    assert_eq!(p3["status"], "cancelled");
    assert_eq!(p3["notes"], "breakdown");
    assert_eq!(p3["version"], 3);

    // Unknown and malformed ids.
    let ghost = uuid::Uuid::new_v4().to_string();
    h.patch(&ghost, Some(1), &json!({"status": "cancelled"}))
        .await
        .problem(&[404]);
    h.get_waybill(&ghost).await.problem(&[404]);
    h.get_waybill("not-a-uuid").await.problem(&[400, 404]);
    h.get_waybill("123").await.problem(&[400, 404]);
    h.assert_rows(3, 3, "state machine").await;
    h.stop().await;
}

/// Found by schemathesis (scripts/schemathesis.sh): a move whose readings contradict each
/// other, or the stored ones (`odometer_end` below `odometer_start` while starting or
/// cancelling), reached the database's CHECK and came back as 500. Whatever the move, such
/// readings are a 422 naming them, and nothing changes.
#[tokio::test]
async fn readings_that_contradict_each_other_are_422_whatever_the_move() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let trip = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let w = h
        .create(&wb(
            "2018-06-01",
            "rd-v",
            "rd-d",
            "caltrain",
            "Lo-130",
            &[&trip.id],
        ))
        .await;
    let id = id_of(&w);
    for (body, named) in [
        // The request schemathesis sent, shrunk.
        (
            json!({"status": "in_progress", "odometer_start": 1, "odometer_end": 0.0}),
            "odometer_end",
        ),
        (
            json!({"status": "in_progress", "odometer_start": 1,
                   "actual_start": "2018-06-01T12:00:00Z", "actual_end": "2018-06-01T11:59:59Z"}),
            "actual_end",
        ),
        (
            json!({"status": "cancelled", "odometer_start": 10, "odometer_end": 9}),
            "odometer_end",
        ),
    ] {
        h.patch(&id, Some(1), &body)
            .await
            .problem_naming(422, named);
    }
    unchanged(&h, id.clone(), w.clone()).await;

    // Against what is stored: started at 100 km and at 12:00, then cancelled with an end
    // below either.
    let started = h
        .patch_ok(
            &id,
            1,
            &json!({"status": "in_progress", "odometer_start": 100, "actual_start": "2018-06-01T12:00:00Z"}),
        )
        .await;
    for (body, named) in [
        (
            json!({"status": "cancelled", "odometer_end": 99}),
            "odometer_end",
        ),
        (
            json!({"status": "cancelled", "actual_end": "2018-06-01T11:00:00Z"}),
            "actual_end",
        ),
        (
            json!({"status": "completed", "odometer_end": 100, "actual_end": "2018-06-01T11:00:00Z"}),
            "actual_end",
        ),
    ] {
        h.patch(&id, Some(2), &body)
            .await
            .problem_naming(422, named);
    }
    unchanged(&h, id.clone(), started).await;
    let cancelled = h
        .patch_ok(&id, 2, &json!({"status": "cancelled", "odometer_end": 100}))
        .await;
    assert_eq!(cancelled["odometer_end"], 100, "{cancelled}");
    h.stop().await;
}

#[tokio::test]
async fn every_text_field_has_the_documented_length_and_character_rule() {
    use gtfs_fetch::waybill::limits;
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let good = wb(
        "2018-06-01",
        "len-v",
        "len-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    );
    let long = |n: usize| "x".repeat(n);
    let mut cases: Vec<(&str, Value)> = vec![
        ("vehicle_id", json!(long(limits::ID + 1))),
        ("driver_id", json!(long(limits::ID + 1))),
        ("number", json!(long(limits::ID + 1))),
        ("vehicle_id", json!("bus\u{1}17")),
        ("driver_id", json!("d\u{7f}")),
        ("number", json!("  ")),
        ("route_id", json!(long(limits::GTFS_ID + 1))),
        ("gtfs_id", json!(long(limits::GTFS_ID + 1))),
        ("trip_ids[0]", json!([long(limits::GTFS_ID + 1)])),
        ("trip_ids", json!(vec!["t"; limits::TRIPS + 1])),
        ("notes", json!(long(limits::NOTES + 1))),
    ];
    // 200,000 characters, as a careless client sent.
    cases.push(("vehicle_id", json!(long(200_000))));
    for (field, value) in cases {
        let mut body = good.clone();
        let key = field.split('[').next().unwrap();
        body[key] = value;
        h.post(&body).await.problem_naming(422, field);
    }
    h.assert_rows(0, 0, "nothing written").await;
    // At the limits, and with text the rule allows (accents, spaces inside, newlines in notes).
    let mut body = good.clone();
    body["vehicle_id"] = json!("é".repeat(limits::ID));
    body["driver_id"] = json!("driver 42");
    body["number"] = json!(long(limits::ID));
    body["notes"] = json!(format!("line 1\n{}", long(limits::NOTES - 7)));
    let w = h.post(&body).await.created();
    let id = id_of(&w);
    h.patch(
        &id,
        Some(1),
        &json!({"status": "cancelled", "notes": long(limits::NOTES + 1)}),
    )
    .await
    .problem_naming(422, "notes");
    h.list(&[("vehicle_id", &long(limits::ID + 1))])
        .await
        .problem_naming(400, "vehicle_id");
    h.stop().await;
}

#[tokio::test]
async fn nul_characters_are_refused_by_field_and_if_match_star_and_empty_cursor_work() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let good = wb(
        "2018-06-01",
        "nul-v",
        "nul-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    );
    for field in ["notes", "vehicle_id", "number", "driver_id"] {
        let mut body = good.clone();
        body[field] = json!("a\u{0}b");
        h.post(&body).await.problem_naming(422, field);
    }
    h.assert_rows(0, 0, "nothing written").await;
    // `%00` in a query parameter.
    h.list(&[("vehicle_id", "a\u{0}")])
        .await
        .problem_naming(400, "vehicle_id");
    // An empty cursor is the first page.
    let w = h.post(&good).await.created();
    let id = id_of(&w);
    let (rows, _) = page(&h.list(&[("cursor", "")]).await);
    assert_eq!(rows.len(), 1);
    // PATCH: a NUL in notes is refused and changes nothing; `If-Match: *` matches any version.
    h.patch(
        &id,
        Some(1),
        &json!({"status": "cancelled", "notes": "x\u{0}"}),
    )
    .await
    .problem_naming(422, "notes");
    let res = h
        .send(
            Method::PATCH,
            &format!("/waybills/{id}"),
            &[("content-type", "application/json"), ("if-match", "*")],
            Some(br#"{"status":"cancelled"}"#.to_vec()),
        )
        .await;
    let changed = res.ok();
    assert_eq!(changed["status"], "cancelled", "{changed}");
    assert_eq!(changed["version"], 2, "{changed}");
    h.stop().await;
}

#[tokio::test]
async fn authentication_comes_before_the_body_and_the_scheme_is_any_case() {
    let h = Harness::start(&[("GTFS_API_TOKEN", "s3cret-token")]).await;
    // Without the token, every body gets the same 401: nothing about the schema.
    for (body, ctype) in [
        (&b"{}"[..], "application/json"),
        (b"not json", "application/json"),
        (br#"{"service_date": 7}"#, "application/json"),
        (b"{}", "text/plain"),
    ] {
        for auth in ["", "Bearer wrong"] {
            let res = h
                .post_bytes(
                    body.to_vec(),
                    &[("authorization", auth), ("content-type", ctype)],
                )
                .await;
            let problem = res.problem(&[401]);
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(
                !detail.contains("service_date") && !detail.contains("field"),
                "{problem}"
            );
        }
    }
    let res = h
        .send(
            Method::PATCH,
            &format!("/waybills/{}", uuid::Uuid::new_v4()),
            &[("authorization", ""), ("content-type", "application/json")],
            Some(b"{".to_vec()),
        )
        .await;
    res.problem(&[401]);
    h.assert_rows(0, 0, "nothing written").await;
    // RFC 9110: the scheme is case-insensitive.
    let cal = &*CALTRAIN;
    for (i, scheme) in ["bearer", "BEARER"].into_iter().enumerate() {
        let a = cal.sequential("Lo-130", day("2018-06-01"), 2)[i];
        let body = serde_json::to_vec(&wb(
            "2018-06-01",
            &format!("case-v{i}"),
            &format!("case-d{i}"),
            "caltrain",
            "Lo-130",
            &[&a.id],
        ))
        .unwrap();
        let auth = format!("{scheme} s3cret-token");
        h.post_bytes(body, &[("authorization", &auth)])
            .await
            .created();
    }
    h.stop().await;
}

#[tokio::test]
async fn writes_need_the_api_token_when_one_is_set() {
    let h = Harness::start(&[("GTFS_API_TOKEN", "s3cret-token")]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let body = serde_json::to_vec(&wb(
        "2018-06-01",
        "tok-v",
        "tok-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    ))
    .unwrap();
    for auth in [
        "",
        "Bearer wrong",
        "Bearer ",
        "Basic czNjcmV0LXRva2Vu",
        "s3cret-token",
    ] {
        let res = h.post_bytes(body.clone(), &[("authorization", auth)]).await;
        res.problem(&[401]);
        h.assert_rows(0, 0, &format!("Authorization {auth:?}"))
            .await;
    }
    let w = h.post_bytes(body, &[]).await.created();
    let id = id_of(&w);
    for auth in ["", "Bearer wrong"] {
        let res = h
            .send(
                Method::PATCH,
                &format!("/waybills/{id}"),
                &[
                    ("authorization", auth),
                    ("content-type", "application/json"),
                    ("if-match", "\"1\""),
                ],
                Some(br#"{"status":"cancelled"}"#.to_vec()),
            )
            .await;
        res.problem(&[401]);
    }
    // Reads are open.
    let got = h
        .send(
            Method::GET,
            &format!("/waybills/{id}"),
            &[("authorization", "")],
            None,
        )
        .await;
    assert_eq!(got.ok(), w, "unchanged");
    let list = h
        .send(Method::GET, "/waybills", &[("authorization", "")], None)
        .await;
    assert_eq!(page(&list).0.len(), 1);
    h.patch_ok(&id, 1, &json!({"status": "cancelled"})).await;
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn lists_filter_combine_and_page_through_every_row_once() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let routes = ["Lo-130", "Bu-130", "Li-130"];
    let mut dates = Vec::new();
    let mut d = day("2018-06-04");
    while dates.len() < 35 {
        if cal.runs("mtwtf", d) {
            dates.push(d);
        }
        d = d.tomorrow().unwrap();
    }

    #[derive(Debug)]
    struct Row {
        date: String,
        route: &'static str,
        vehicle: String,
        driver: String,
        status: &'static str,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for i in 0..105usize {
        let (date, slot) = (dates[i / 3], i % 3);
        let route = routes[slot];
        let day_trips = cal.daytime(route, date);
        let trip = day_trips[(i / 3) % day_trips.len()];
        // Within a date vehicles and drivers differ; across dates nothing overlaps.
        let vehicle = format!("veh-{slot}");
        let driver = format!("drv-{}", (slot + i / 3) % 3);
        let w = h
            .create(&wb(
                &date.to_string(),
                &vehicle,
                &driver,
                "caltrain",
                route,
                &[&trip.id],
            ))
            .await;
        let id = id_of(&w);
        let status = if i % 5 == 0 {
            h.patch_ok(&id, 1, &json!({"status": "cancelled"})).await;
            "cancelled"
        } else if i % 7 == 0 {
            h.patch_ok(
                &id,
                1,
                &json!({"status": "in_progress", "odometer_start": 1}),
            )
            .await;
            "in_progress"
        } else {
            "issued"
        };
        rows.insert(
            id,
            Row {
                date: date.to_string(),
                route,
                vehicle,
                driver,
                status,
            },
        );
    }

    // Every row once, whatever the page size.
    let all: BTreeSet<String> = rows.keys().cloned().collect();
    for limit in [1000, 100, 7, 1] {
        let got = h.list_all(&[], limit).await;
        let ids: BTreeSet<String> = got.iter().map(id_of).collect();
        assert_eq!(ids, all, "limit {limit}");
        for entry in &got {
            let r = &rows[&id_of(entry)];
            assert_eq!(entry["service_date"], r.date, "{entry}");
            assert_eq!(entry["route_id"], r.route, "{entry}");
            assert_eq!(entry["vehicle_id"], r.vehicle, "{entry}");
            assert_eq!(entry["driver_id"], r.driver, "{entry}");
            assert_eq!(entry["status"], r.status, "{entry}");
        }
    }
    // The default limit is 100.
    let (first, next) = page(&h.list(&[]).await);
    assert_eq!(first.len(), 100, "default limit");
    let next = next.expect("a cursor after 100 of 105");
    let (second, last) = page(&h.list(&[("cursor", &next)]).await);
    assert_eq!(second.len(), 5);
    assert_eq!(last, None);
    let ids: BTreeSet<String> = first.iter().chain(&second).map(id_of).collect();
    assert_eq!(ids, all);

    // Filters, alone and combined.
    let d4 = dates[4].to_string();
    let filters: Vec<Vec<(&str, &str)>> = vec![
        vec![("service_date", &d4)],
        vec![("route_id", "Bu-130")],
        vec![("vehicle_id", "veh-1")],
        vec![("driver_id", "drv-2")],
        vec![("status", "cancelled")],
        vec![("status", "in_progress")],
        vec![("status", "issued")],
        vec![("service_date", &d4), ("route_id", "Li-130")],
        vec![("vehicle_id", "veh-0"), ("status", "issued")],
        vec![
            ("route_id", "Lo-130"),
            ("driver_id", "drv-1"),
            ("status", "cancelled"),
        ],
        vec![
            ("driver_id", "drv-0"),
            ("vehicle_id", "veh-2"),
            ("route_id", "Li-130"),
        ],
        vec![("vehicle_id", "nobody")],
        vec![("service_date", "2019-01-01")],
    ];
    for f in &filters {
        let expected: BTreeSet<String> = rows
            .iter()
            .filter(|(_, r)| {
                f.iter().all(|(k, v)| match *k {
                    "service_date" => r.date == *v,
                    "route_id" => r.route == *v,
                    "vehicle_id" => r.vehicle == *v,
                    "driver_id" => r.driver == *v,
                    "status" => r.status == *v,
                    _ => unreachable!(),
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for limit in [1000, 4] {
            let got: BTreeSet<String> = h.list_all(f, limit).await.iter().map(id_of).collect();
            assert_eq!(got, expected, "filter {f:?} limit {limit}");
        }
    }

    // Out-of-range limits and garbage cursors are the client's error.
    for q in [
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "-1")],
        vec![("limit", "lots")],
        vec![("cursor", "garbage")],
        vec![("service_date", "2018-13-01")],
    ] {
        h.list(&q).await.problem(&[400, 422]);
    }
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// PostgreSQL down, and restarted under load
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn with_postgresql_down_requests_get_503_and_the_service_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    let h = Harness::start_on(pg.url(DATABASE), &[("WAYBILLS_DB_ACQUIRE_TIMEOUT", "1")]).await;
    let cal = &*CALTRAIN;
    let trips = cal.sequential("Lo-130", day("2018-06-01"), 2);
    let w = h
        .create(&wb(
            "2018-06-01",
            "down-v0",
            "down-d0",
            "caltrain",
            "Lo-130",
            &[&trips[0].id],
        ))
        .await;
    let id = id_of(&w);
    let next = wb(
        "2018-06-01",
        "down-v1",
        "down-d1",
        "caltrain",
        "Lo-130",
        &[&trips[1].id],
    );

    pg.stop().await.unwrap();
    h.post_key(&next, "while-down").await.unavailable();
    h.post(&next).await.unavailable();
    h.patch(&id, Some(1), &json!({"status": "cancelled"}))
        .await
        .unavailable();
    h.get_waybill(&id).await.unavailable();
    h.list(&[]).await.unavailable();

    pg.start_server().await.unwrap();
    // Back by itself: the same key now creates the waybill (a 503 is not a stored answer).
    let deadline = Instant::now() + Duration::from_secs(60);
    let created = loop {
        let res = h.post_key(&next, "while-down").await;
        if res.status == 201 {
            break res.created();
        }
        res.unavailable();
        assert!(Instant::now() < deadline, "not recovered after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w);
    let replay = h.post_key(&next, "while-down").await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.json(), created);
    h.patch_ok(&id, 1, &json!({"status": "cancelled"})).await;
    h.assert_rows(2, 2, "after recovery").await;
    h.stop().await;
    pg.stop().await.unwrap();
}

#[derive(Default, Debug)]
struct WriterReport {
    /// key, vehicle, id, when the 201 came.
    created: Vec<(String, String, String, Instant)>,
    unavailable: usize,
    in_flight: usize,
    connection_errors: usize,
    unexpected: Vec<String>,
}

/// Posts waybills with fresh vehicles, drivers and keys until `stop`, retrying each key
/// (same body) until it gets its 201.
async fn writer(
    w: usize,
    base: String,
    trip: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut rep = WriterReport::default();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (vehicle, driver, key) = (
            format!("load-v{w}-{i}"),
            format!("load-d{w}-{i}"),
            format!("load-k{w}-{i}"),
        );
        let body = serde_json::to_vec(&wb(
            "2018-06-01",
            &vehicle,
            &driver,
            "caltrain",
            "Lo-130",
            &[&trip],
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        loop {
            if Instant::now() > deadline {
                rep.unexpected
                    .push(format!("{key}: no 201 within 90 s; last answer {last}"));
                return rep;
            }
            let mut req = client
                .post(format!("{base}/waybills"))
                .header("content-type", "application/json")
                .header("idempotency-key", &key)
                .body(body.clone());
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    rep.connection_errors += 1;
                    last = format!("error {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            let text = match res.text().await {
                Ok(t) => t,
                Err(e) => {
                    rep.connection_errors += 1;
                    last = format!("{status}, body error {e}");
                    continue;
                }
            };
            last = format!("{status} {text}");
            match status {
                201 => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["vehicle_id"] != vehicle.as_str() {
                        rep.unexpected
                            .push(format!("{key}: 201 for another waybill: {text}"));
                    }
                    rep.created.push((key, vehicle, id_of(&v), Instant::now()));
                    break;
                }
                503 => {
                    rep.unavailable += 1;
                    if !retry_after && rep.unexpected.len() < 50 {
                        rep.unexpected
                            .push(format!("{key}: 503 without Retry-After"));
                    }
                }
                409 => rep.in_flight += 1,
                _ => {
                    if rep.unexpected.len() < 50 {
                        rep.unexpected.push(format!("{key}: {status} {text}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    rep
}

#[tokio::test]
async fn postgresql_restarted_under_write_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    let url = pg.url(DATABASE);
    let h = Harness::start_on(url.clone(), &[]).await;
    let trip = CALTRAIN.sequential("Lo-130", day("2018-06-01"), 1)[0]
        .id
        .clone();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(writer(
                w,
                h.app.url(""),
                trip.clone(),
                h.token.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = Instant::now();
    pg.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.start_server().await.unwrap();
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::SeqCst);

    let mut created = Vec::new();
    let (mut unavailable, mut in_flight, mut conn_errors) = (0, 0, 0);
    let mut unexpected = Vec::new();
    for w in writers {
        let rep = w.await.unwrap();
        created.extend(rep.created);
        unavailable += rep.unavailable;
        in_flight += rep.in_flight;
        conn_errors += rep.connection_errors;
        unexpected.extend(rep.unexpected);
    }
    let before = created.iter().filter(|c| c.3 < stopped_at).count();
    let after = created.iter().filter(|c| c.3 > restarted_at).count();
    eprintln!(
        "restart under load: {} created ({before} before the stop, {after} after the restart), \
         {unavailable} × 503, {in_flight} × 409, {conn_errors} connection errors",
        created.len()
    );
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    assert!(before > 0, "writes before the stop");
    assert!(
        after > 0,
        "writes after the restart: the service recovered by itself"
    );

    // Every 201 has its row, with its id; nothing else is there.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id::text, vehicle_id, driver_id FROM waybill")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut by_vehicle: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_driver: HashMap<&str, usize> = HashMap::new();
    for (id, vehicle, driver) in &stored {
        by_vehicle.entry(vehicle).or_default().push(id);
        *by_driver.entry(driver).or_default() += 1;
    }
    for (key, vehicle, id, _) in &created {
        assert_eq!(
            by_vehicle.get(vehicle.as_str()),
            Some(&vec![id.as_str()]),
            "{key}: exactly one row, with the id its 201 gave"
        );
    }
    assert!(
        by_driver.values().all(|n| *n == 1),
        "a driver twice: {by_driver:?}"
    );
    assert_eq!(
        stored.len(),
        created.len(),
        "rows without an acknowledged key"
    );
    conn.close().await.ok();

    // Replaying every key gives its stored answer, and still no new row.
    for (key, vehicle, id, _) in created.iter().step_by(7) {
        let body = wb(
            "2018-06-01",
            vehicle,
            &vehicle.replace("load-v", "load-d"),
            "caltrain",
            "Lo-130",
            &[&trip],
        );
        let res = h.post_key(&body, key).await;
        assert_eq!(res.status, 201, "{key}: {}", res.text());
        assert_eq!(res.json()["id"], id.as_str(), "{key}");
    }
    h.assert_rows(created.len(), created.len(), "after the replays")
        .await;
    h.stop().await;
    pg.stop().await.unwrap();
}
