//! The offline demo: `config/demo.toml` and the made-up network of `demo/feed` (a
//! directory of GTFS `.txt` files, no OTP). Expected values are written from the feed's
//! files by hand (`demo/README.md` describes them), not read back through the service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gtfs_fetch::config::{Api, Config};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::http::{Answer, route_path, routes_path, trips_path};
use crate::support::{TestApp, spawn_loaded};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn demo_text() -> String {
    std::fs::read_to_string(root().join("config/demo.toml")).expect("config/demo.toml")
}

/// `config/demo.toml` as the service reads it, with no environment.
fn demo_config() -> Config {
    Config::parse(Some(("config/demo.toml", &demo_text())), |_| None)
        .unwrap_or_else(|e| panic!("config/demo.toml: {e}"))
}

#[test]
fn the_demo_config_parses_and_names_the_demo_feed_directory() {
    let config = demo_config();
    assert!(config.database_url.is_none(), "the embedded PostgreSQL");
    assert_eq!(config.instances.len(), 1);
    let demo = &config.instances[0];
    assert_eq!((demo.name.as_str(), demo.api), ("demo", Api::Gtfs));
    assert_eq!(demo.feeds.len(), 1);
    assert_eq!(demo.feeds[0].gtfs_id, "demo");
    // Relative to the working directory: the repository's root, where the README runs it.
    let dir = root().join(&demo.feeds[0].zip_url);
    assert!(dir.join("routes.txt").is_file(), "{}", dir.display());
}

#[test]
fn the_executable_loads_the_demo_config() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gtfs-fetch"));
    cmd.args(["--config", "config/demo.toml", "config"])
        .current_dir(root());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("GTFS_") || name.starts_with("WAYBILLS_DB_") || name == "DATABASE_URL" {
            cmd.env_remove(&*name);
        }
    }
    let out = cmd.output().expect("run gtfs-fetch");
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["instances"][0]["name"], "demo");
    assert_eq!(shown["instances"][0]["feeds"][0]["zip_url"], "demo/feed");
}

/// The demo's directory version, computed here from the files: for each `.txt` file in
/// name order, its name, a NUL, its length as 8 big-endian bytes, its bytes.
fn directory_version(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    let mut hash = Sha256::new();
    for path in names {
        let bytes = std::fs::read(&path).unwrap();
        hash.update(path.file_name().unwrap().to_str().unwrap().as_bytes());
        hash.update([0u8]);
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(&bytes);
    }
    hex::encode(hash.finalize())
}

fn trips(body: &Value) -> Vec<&str> {
    body["trips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trip_id"].as_str().unwrap())
        .collect()
}

async fn trips_on(app: &TestApp, route: &str, date: &str) -> Value {
    app.get(&trips_path("demo", route, date)).await.ok()
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let mut req = app.request(method, path).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Answer::send(req).await
}

/// A directory feed's version is a hash over its files, not its packed zip's sha256: a
/// restart on the same database loads it from the feed store all the same (it was once
/// taken for a corrupt version and deleted).
#[tokio::test]
async fn a_restart_loads_the_stored_directory_feed() {
    let first = spawn_loaded(demo_config()).await;
    let before: Value = first.get("/feeds").await.ok();
    let config = first.state.config.clone();
    first.stop().await.unwrap();

    let second = crate::support::spawn_config(config, axum::Router::new()).await;
    second
        .wait_ready_status(200, std::time::Duration::from_secs(60))
        .await;
    let instances: Value = second.get("/instances").await.ok();
    let warm = &instances["instances"][0]["warm_start"];
    assert_eq!(warm["errors"], serde_json::json!([]), "{warm}");
    assert_eq!(warm["loaded"][0]["gtfs_id"], "demo", "{warm}");
    assert_eq!(
        warm["loaded"][0]["version"], before["feeds"][0]["version"],
        "{warm}"
    );
    let after: Value = second.get("/feeds").await.ok();
    let feed = &after["feeds"][0];
    assert_eq!(feed["version"], before["feeds"][0]["version"], "{after}");
    assert_eq!(feed["last_error"], Value::Null, "{feed}");
    second.stop().await.unwrap();
}

#[tokio::test]
async fn the_demo_serves_routes_trips_and_waybills_from_its_directory() {
    let app = spawn_loaded(demo_config()).await;

    // The feed, versioned by its files.
    let feeds: Value = app.get("/feeds").await.ok();
    let feed = &feeds["feeds"][0];
    assert_eq!(feed["gtfs_id"], "demo", "{feeds}");
    assert_eq!(feed["last_error"], Value::Null, "{feed}");
    assert_eq!(feed["source"], "demo/feed");
    assert_eq!(
        feed["version"],
        directory_version(&root().join("demo/feed")),
        "{feed}"
    );

    // Routes in route_sort_order, one of each type.
    let list = app.get(&routes_path("demo")).await.ok();
    let got: Vec<(&str, i64, &str)> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["route_id"].as_str().unwrap(),
                r["type"].as_i64().unwrap(),
                r["mode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("T1", 0, "TRAM"),
            ("12", 3, "BUS"),
            ("L1", 4, "FERRY"),
            ("FB", 7, "FUNICULAR")
        ],
        "{list}"
    );

    // Route 12: the day pattern through Vigna Nuova, the night express without it, and
    // the way back.
    let detail = app.get(&route_path("demo", "12")).await.ok();
    assert_eq!(detail["long_name"], "Centrale - Ospedale - Airport");
    assert_eq!(detail["trip_count"], 7, "{detail}");
    let mut patterns: Vec<(u64, Vec<&str>, u64)> = detail["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let stops = p["stops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["stop_id"].as_str().unwrap())
                .collect();
            (
                p["direction_id"].as_u64().unwrap(),
                stops,
                p["trip_count"].as_u64().unwrap(),
            )
        })
        .collect();
    patterns.sort();
    assert_eq!(
        patterns,
        [
            (0, vec!["STA", "HOS", "AIR"], 1),
            (0, vec!["STA", "VIG", "HOS", "AIR"], 3),
            (1, vec!["AIR", "HOS", "VIG", "STA"], 3),
        ],
        "{detail}"
    );
    let airport = detail["patterns"][0]["stops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stop_id"] == "AIR")
        .unwrap();
    assert_eq!(
        (
            airport["name"].as_str(),
            airport["lat"].as_f64(),
            airport["lon"].as_f64()
        ),
        (Some("Valmora Airport"), Some(45.98803), Some(8.91012))
    );

    // A Wednesday: the weekday trips by start time, the last one past midnight.
    let wed = trips_on(&app, "12", "2027-03-03").await;
    assert_eq!(
        trips(&wed),
        [
            "12-WD-0630",
            "12-WD-0725",
            "12-WD-1700",
            "12-WD-1755",
            "12-WD-2350"
        ],
        "{wed}"
    );
    let night = &wed["trips"][4];
    assert_eq!(
        (&night["start_time"], &night["end_time"], &night["block_id"]),
        (&json!("23:50:00"), &json!("24:17:00"), &json!("B12N"))
    );
    // A Saturday: the weekend trips.
    let sat = trips_on(&app, "12", "2027-03-06").await;
    assert_eq!(trips(&sat), ["12-WE-0900", "12-WE-1000"], "{sat}");
    // Christmas 2026 is a Friday: calendar_dates.txt removes the weekday service and adds
    // the weekend one.
    let xmas = trips_on(&app, "12", "2026-12-25").await;
    assert_eq!(trips(&xmas), ["12-WE-0900", "12-WE-1000"], "{xmas}");
    // New Year's Eve: a ferry added by calendar_dates.txt alone, arriving after midnight.
    let nye = trips_on(&app, "L1", "2026-12-31").await;
    assert_eq!(
        trips(&nye),
        ["L1-0900", "L1-0945", "L1-1400", "L1-1445", "L1-NYE-2345"],
        "{nye}"
    );
    assert_eq!(nye["trips"][4]["end_time"], "24:10:00");
    let other = trips_on(&app, "L1", "2027-01-05").await;
    assert!(!trips(&other).contains(&"L1-NYE-2345"), "{other}");
    // The tram runs by frequencies.
    let tram = trips_on(&app, "T1", "2027-03-03").await;
    assert_eq!(trips(&tram), ["T1-WD-N", "T1-WD-S"], "{tram}");
    assert_eq!(
        tram["trips"][0]["frequencies"],
        json!([
            {"start_time": "06:00:00", "end_time": "20:00:00", "headway_secs": 600, "exact_times": false},
            {"start_time": "20:00:00", "end_time": "24:00:00", "headway_secs": 1200, "exact_times": false},
        ])
    );

    // A waybill for the morning block, created, started and completed.
    let new = json!({
        "service_date": "2027-03-03", "vehicle_id": "bus-207", "driver_id": "d-0042",
        "gtfs_id": "demo", "route_id": "12", "trip_ids": ["12-WD-0630", "12-WD-0725"],
    });
    let created = app.post_waybill(&new).await.created();
    assert_eq!(created["status"], "issued");
    // 06:30 and 07:58 in Valmora (Europe/Zurich, UTC+1 in March).
    assert_eq!(
        created["planned_start"], "2027-03-03T05:30:00Z",
        "{created}"
    );
    assert_eq!(created["planned_end"], "2027-03-03T06:58:00Z", "{created}");
    assert_eq!(
        created["feed_version"], feed["version"],
        "checked against the directory's version"
    );
    let path = format!("/waybills/{}", created["id"].as_str().unwrap());
    let started = send(
        &app,
        Method::PATCH,
        &path,
        &[("if-match", "\"1\"")],
        &json!({"status": "in_progress", "odometer_start": 48210}),
    )
    .await
    .ok();
    assert_eq!(
        (&started["status"], &started["version"]),
        (&json!("in_progress"), &json!(2))
    );
    // A stale version is refused.
    send(
        &app,
        Method::PATCH,
        &path,
        &[("if-match", "\"1\"")],
        &json!({"status": "cancelled"}),
    )
    .await
    .problem(&[412]);
    let done = send(
        &app,
        Method::PATCH,
        &path,
        &[("if-match", "\"2\"")],
        &json!({"status": "completed", "odometer_end": 48262}),
    )
    .await
    .ok();
    assert_eq!(
        (&done["status"], &done["version"]),
        (&json!("completed"), &json!(3))
    );
    assert_eq!(done["odometer_end"], 48262);

    // The night express ends on the next calendar day.
    let night = app
        .post_waybill(&json!({
            "service_date": "2027-03-03", "vehicle_id": "bus-311", "driver_id": "d-0007",
            "gtfs_id": "demo", "route_id": "12", "trip_ids": ["12-WD-2350"],
        }))
        .await
        .created();
    assert_eq!(night["planned_end"], "2027-03-03T23:17:00Z", "{night}");
    // On Christmas there is no weekday service to drive.
    app.post_waybill(&json!({
        "service_date": "2026-12-25", "vehicle_id": "bus-311", "driver_id": "d-0007",
        "gtfs_id": "demo", "route_id": "12", "trip_ids": ["12-WD-0630"],
    }))
    .await
    .problem_naming(422, "12-WD-0630");

    // An unchanged directory is not parsed again.
    let res = app
        .request(Method::POST, "/instances/demo/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    app.wait_refreshes(2).await;
    let mut outcomes = Vec::new();
    for _ in 0..100 {
        let page: Value = app.get("/feeds/demo/fetches").await.ok();
        outcomes = page["fetches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["outcome"].as_str().unwrap().to_owned())
            .collect();
        if outcomes.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outcomes, ["unchanged", "updated"], "newest first");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_directory_missing_a_required_file_says_which() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("demo/feed")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name != "trips.txt" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let file = format!(
        "[[instances]]\nname = \"demo\"\nurl = \"http://localhost\"\napi = \"gtfs\"\nallow_empty = true\n\
         [[instances.feeds]]\ngtfs_id = \"demo\"\nzip_url = \"{}\"\n",
        dir.path().display()
    );
    let config = Config::parse(Some(("test.toml", &file)), |_| None).unwrap();
    let app = spawn_loaded(config).await;
    let feeds: Value = app.get("/feeds").await.ok();
    assert_eq!(
        feeds["feeds"][0]["last_error"],
        "the directory is not a usable GTFS feed: required file(s) missing from the feed: trips.txt",
        "{feeds}"
    );
    app.stop().await.unwrap();
}
