//! Waybills (issue 6) end to end, on real feeds: caltrain and bart loaded from their zips
//! through the OTP simulator (`api = "gtfs"`), a real PostgreSQL, real sockets.
//!
//! Every expected value is computed here from the feeds' CSV files (the oracle
//! `support::gtfs`), independently of the service: which trips run on a date
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

use crate::support::fixtures::format_gtfs_time;
use crate::support::gtfs::FeedCsv;
use crate::support::http::Answer;
use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, fixture_csv, fresh_database, spawn_config};

mod auth;
mod bad_requests;
mod concurrency;
mod fields;
mod listing;
mod postgres_down;
mod rules;
mod state_changes;
mod stored;

// ---------------------------------------------------------------------------------------
// The feeds, read from their CSV files (the shared oracle, `support::gtfs`)
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
    /// What the CSV files say, service days included.
    csv: FeedCsv,
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
        let csv = FeedCsv::load(name);
        let trips: Vec<Trip> = csv
            .trips
            .iter()
            .map(|t| Trip {
                id: t.trip_id.clone(),
                route: t.route_id.clone(),
                service: t.service_id.clone(),
                start: t.start,
                end: t.end,
            })
            .collect();
        let by_id = trips
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.clone(), i))
            .collect();
        Feed {
            name,
            tz,
            trips,
            by_id,
            csv,
        }
    }

    /// Whether `service` runs on `date` (calendar.txt and calendar_dates.txt).
    fn runs(&self, service: &str, date: Date) -> bool {
        self.csv.active(service, date)
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
        let body: Value = app.get("/feeds").await.json();
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
        let body: Value = self.app.get("/feeds").await.json();
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
