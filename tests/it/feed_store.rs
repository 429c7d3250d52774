//! The durable feed store and the warm start (issue 12, parts 1 and 2), on a real
//! PostgreSQL with the OTP simulator: a restarted service serves the stored versions while
//! the upstream is down, a zip two instances serve is stored once, old versions go except
//! one a live waybill was checked against, a corrupt stored version is dropped, and a
//! route detail read through on demand is stored with its version for the other replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use gtfs_fetch::config::Config;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Connection;

use crate::support::fixtures::{
    CALTRAIN_DAY as DAY, CALTRAIN_ROUTE as ROUTE, caltrain_waybill as waybill, padded_fixture_zip,
};
use crate::support::http::{Answer, route_path, routes_path, trips_path, with_query};
use crate::support::otp_sim::{OtpSim, fixture_zip};
use crate::support::{TestApp, sim_config, spawn_config, spawn_loaded, zip_feeds};

fn feed<'a>(feeds: &'a Value, id: &str) -> &'a Value {
    feeds["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["gtfs_id"] == id)
        .unwrap_or_else(|| panic!("feed {id} in {feeds}"))
}

/// A second service on the first one's database (and port 0), once ready.
async fn restart_on(config: &Config) -> TestApp {
    let app = spawn_config(config.clone(), Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(60)).await;
    app
}

/// The answer to `path`, which must be a 200.
async fn ok(app: &TestApp, path: &str) -> Value {
    app.get(path).await.ok()
}

/// Every route of `feed`, each with its detail, by route id.
async fn details(app: &TestApp, gtfs_id: &str) -> BTreeMap<String, Value> {
    let list = ok(
        app,
        &with_query(&routes_path(gtfs_id), &[("limit", "1000")]),
    )
    .await;
    let mut out = BTreeMap::new();
    for route in list["routes"].as_array().unwrap() {
        let id = route["route_id"].as_str().unwrap();
        out.insert(id.to_owned(), ok(app, &route_path(gtfs_id, id)).await);
    }
    out
}

/// `feed_version` rows: (instance, gtfs_id, version), sorted.
async fn versions(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT instance, gtfs_id, version FROM feed_version ORDER BY 1, 2, 3")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// The first trip of [`ROUTE`] on [`DAY`].
async fn first_trip(app: &TestApp) -> String {
    let trips = ok(app, &trips_path("caltrain", ROUTE, DAY)).await;
    trips["trips"][0]["trip_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a trip in {trips}"))
        .to_owned()
}

#[tokio::test]
async fn a_restart_with_the_upstream_down_serves_the_stored_versions_and_takes_waybills() {
    // An otp2 instance crawling every route (bart from its route index) with caltrain's
    // full data from its zip.
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let extra = format!("prefetch_routes = true\n{}", zip_feeds(&["caltrain"]));
    let first = spawn_loaded(sim_config(
        &sim.url(),
        "otp2",
        &extra,
        &[("GTFS_RATE_LIMIT_DELAY", "0"), ("GTFS_RETRY_ATTEMPTS", "0")],
    ))
    .await;
    let config = first.state.config.clone();
    let feeds_before = ok(&first, "/feeds").await;
    for id in ["caltrain", "bart"] {
        let f = feed(&feeds_before, id);
        assert_eq!(f["loaded_from"], "upstream", "{f}");
        assert!(f["age_seconds"].as_f64().unwrap() >= 0.0, "{f}");
    }
    let caltrain_list = ok(
        &first,
        &with_query(&routes_path("caltrain"), &[("limit", "1000")]),
    )
    .await;
    let caltrain_detail = ok(&first, &route_path("caltrain", ROUTE)).await;
    let trips = ok(&first, &trips_path("caltrain", ROUTE, DAY)).await;
    let bart = details(&first, "bart").await;
    assert_eq!(
        bart.len(),
        crate::support::fixture_rows("bart", "routes.txt"),
        "every bart route"
    );
    assert!(
        bart.values()
            .all(|d| !d["patterns"].as_array().unwrap().is_empty()),
        "bart details have patterns"
    );
    first.stop().await.unwrap();

    // OTP goes down; the service starts again on the same database.
    sim.stop_listening().await;
    let before = sim.requests();
    let second = restart_on(&config).await;
    let feeds_after = ok(&second, "/feeds").await;
    for id in ["caltrain", "bart"] {
        let (was, now) = (feed(&feeds_before, id), feed(&feeds_after, id));
        assert_eq!(now["version"], was["version"], "{id}: same version");
        assert_eq!(now["fetched_at"], was["fetched_at"], "{id}: fetched before");
        assert_eq!(now["counts"], was["counts"], "{id}: same counts");
        assert_eq!(now["loaded_from"], "store", "{id}: {now}");
        assert!(now["age_seconds"].as_f64().unwrap() > 0.0, "{now}");
    }
    let instances = ok(&second, "/instances").await;
    let warm = &instances["instances"][0]["warm_start"];
    let mut loaded: Vec<(String, String)> = warm["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["gtfs_id"].as_str().unwrap().to_owned(),
                f["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    loaded.sort();
    let expected: Vec<(String, String)> = ["bart", "caltrain"]
        .iter()
        .map(|id| {
            let v = feed(&feeds_before, id)["version"].as_str().unwrap();
            ((*id).to_owned(), v.to_owned())
        })
        .collect();
    assert_eq!(loaded, expected, "{warm}");
    assert_eq!(warm["errors"], json!([]), "{warm}");

    // Everything is served as before: routes, details, trips by date.
    assert_eq!(
        ok(
            &second,
            &with_query(&routes_path("caltrain"), &[("limit", "1000")])
        )
        .await,
        caltrain_list
    );
    assert_eq!(
        ok(&second, &route_path("caltrain", ROUTE)).await,
        caltrain_detail
    );
    assert_eq!(
        ok(&second, &trips_path("caltrain", ROUTE, DAY)).await,
        trips
    );
    assert_eq!(
        details(&second, "bart").await,
        bart,
        "every bart route detail"
    );

    // A waybill is checked against the stored version.
    let trip = trips["trips"][0]["trip_id"].as_str().unwrap();
    let created = second
        .post_waybill(&waybill(trip, "warm-1"))
        .await
        .created();
    assert_eq!(
        created["feed_version"],
        feed(&feeds_before, "caltrain")["version"]
    );

    // The first refresh failed (OTP is down) and changed nothing of that.
    second.wait_refreshes(1).await;
    assert_eq!(sim.requests(), before, "the simulator is not listening");
    let feeds_now = ok(&second, "/feeds").await;
    let caltrain = feed(&feeds_now, "caltrain");
    assert!(caltrain["last_error"].is_string(), "{caltrain}");
    assert_eq!(caltrain["loaded_from"], "store", "{caltrain}");
    assert_eq!(second.get("/readyz").await.status, 200);
    second.stop().await.unwrap();

    // OTP back: the next start finds the same versions upstream (a 304 for the zip) and
    // says so.
    sim.resume_listening().await;
    let third = restart_on(&config).await;
    third.wait_refreshes(1).await;
    let feeds_back = ok(&third, "/feeds").await;
    for id in ["caltrain", "bart"] {
        let f = feed(&feeds_back, id);
        assert_eq!(f["loaded_from"], "upstream", "{f}");
        assert_eq!(f["version"], feed(&feeds_before, id)["version"]);
    }
    let fetched: Vec<(String, Option<i16>)> = sqlx::query_as(
        "SELECT outcome, http_status FROM feed_fetch WHERE gtfs_id = 'caltrain' ORDER BY id",
    )
    .fetch_all(&third.state.db.pool)
    .await
    .unwrap();
    assert_eq!(
        fetched.last(),
        Some(&("unchanged".to_owned(), Some(304))),
        "the stored ETag was sent: {fetched:?}"
    );
    third.stop().await.unwrap();
}

#[tokio::test]
async fn a_zip_two_instances_serve_is_stored_once_in_chunks() {
    // wmata's zip is over 3 MiB: four chunks.
    let sim = OtpSim::start(&["wmata"]).await;
    let mut toml = String::new();
    for name in ["one", "two"] {
        toml.push_str(&format!(
            "[[instances]]\nname = \"{name}\"\nurl = \"{}\"\napi = \"gtfs\"\n\
             [[instances.feeds]]\ngtfs_id = \"wmata-{name}\"\nzip_url = \"/gtfs/wmata.zip\"\n",
            sim.url()
        ));
    }
    let config = Config::parse(Some(("test.toml", &toml)), |_| None).unwrap();
    let app = spawn_loaded(config).await;
    let zip = fixture_zip("wmata");
    let sha = hex::encode(Sha256::digest(&zip));
    assert_eq!(
        versions(&app).await,
        vec![
            ("one".into(), "wmata-one".into(), sha.clone()),
            ("two".into(), "wmata-two".into(), sha.clone()),
        ]
    );
    let blobs: Vec<(String, i64)> = sqlx::query_as("SELECT sha256, size FROM feed_blob")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(blobs, vec![(sha.clone(), zip.len() as i64)], "one blob");
    let chunks: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT seq, length(bytes) FROM feed_blob_chunk WHERE sha256 = $1 ORDER BY seq",
    )
    .bind(&sha)
    .fetch_all(&app.state.db.pool)
    .await
    .unwrap();
    let mib = 1 << 20;
    let expected: Vec<(i32, i32)> = zip
        .chunks(mib)
        .enumerate()
        .map(|(i, c)| (i as i32, c.len() as i32))
        .collect();
    assert_eq!(expected.len(), 4, "wmata spans four chunks");
    assert_eq!(chunks, expected);
    assert_eq!(count(&app, "feed_current").await, 2);
    // And it reads back whole.
    let read = gtfs_fetch::db::feed_store::read_blob(&app.state.db, &sha, u64::MAX)
        .await
        .unwrap();
    assert!(
        read.to_vec().unwrap() == zip,
        "the stored zip reads back byte for byte"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn old_versions_go_except_one_a_live_waybill_was_checked_against() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[("GTFS_FEED_VERSIONS_KEPT", "1")],
    ))
    .await;
    assert_eq!(ok(&app, "/config").await["feed_versions_kept"], 1);
    let sha = |name: &str| hex::encode(Sha256::digest(fixture_zip(name)));
    let row = |v: &str| ("sim".to_owned(), "caltrain".to_owned(), v.to_owned());
    let v1 = sha("caltrain");
    assert_eq!(versions(&app).await, vec![row(&v1)]);
    let trip = first_trip(&app).await;
    let w = app.post_waybill(&waybill(&trip, "kept-1")).await.created();
    assert_eq!(w["feed_version"], v1.as_str());

    // The versions kept, once the retention (woken by each new version) has run; and
    // `blobs` blobs, which it deletes by a statement of its own after the versions.
    let settle = async |want: Vec<(String, String, String)>, blobs: i64| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = (versions(&app).await, count(&app, "feed_blob").await);
            if got == (want.clone(), blobs) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "versions and blobs {got:?}, want {want:?} and {blobs}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let new_version = async |name: &str| {
        sim.set_zip("caltrain", fixture_zip(name).to_vec());
        app.refresh_now().await;
        assert_eq!(
            feed(&ok(&app, "/feeds").await, "caltrain")["version"],
            sha(name)
        );
    };
    new_version("bart").await;
    let mut want = vec![row(&v1), row(&sha("bart"))];
    want.sort();
    settle(want, 2).await;
    // bart's version is neither current nor checked against: it goes, and its zip too.
    new_version("cdmx").await;
    let mut want = vec![row(&v1), row(&sha("cdmx"))];
    want.sort();
    settle(want, 2).await;

    // Once the waybill is cancelled, its version may go as well.
    let id = w["id"].as_str().unwrap();
    let res = Answer::send(
        app.request(Method::PATCH, &format!("/waybills/{id}"))
            .header("if-match", "\"1\"")
            .json(&json!({"status": "cancelled"})),
    )
    .await;
    assert_eq!(res.ok()["status"], "cancelled");
    new_version("sample-feed").await;
    settle(vec![row(&sha("sample-feed"))], 1).await;
    assert_eq!(
        count(&app, "feed_blob_chunk").await,
        1,
        "sample-feed's zip, in one chunk"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_stored_version_is_dropped_and_fetched_from_upstream() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let first = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[],
    ))
    .await;
    let config = first.state.config.clone();
    let version = feed(&ok(&first, "/feeds").await, "caltrain")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_id: i64 = sqlx::query_scalar("SELECT version_id FROM feed_current")
        .fetch_one(&first.state.db.pool)
        .await
        .unwrap();
    first.stop().await.unwrap();

    // A chunk overwritten behind the service's back.
    let url = config.database_url.as_ref().unwrap().expose().to_owned();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let changed = sqlx::query(
        "UPDATE feed_blob_chunk SET bytes = decode('504b0304deadbeef', 'hex')
         WHERE sha256 = $1 AND seq = 0",
    )
    .bind(&version)
    .execute(&mut conn)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
    conn.close().await.unwrap();

    let before = sim.requests_for("/gtfs/caltrain.zip");
    let second = restart_on(&config).await;
    second.wait_refreshes(1).await;
    let instances = ok(&second, "/instances").await;
    let warm = &instances["instances"][0]["warm_start"];
    assert_eq!(warm["loaded"], json!([]), "{warm}");
    let errors = warm["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{warm}");
    let error = errors[0].as_str().unwrap();
    assert!(
        error.contains("corrupt") && error.contains("deleted"),
        "{error}"
    );
    // Fetched from upstream as if nothing had been stored: a full download, no 304.
    assert_eq!(sim.requests_for("/gtfs/caltrain.zip"), before + 1);
    let f = feed(&ok(&second, "/feeds").await, "caltrain").clone();
    assert_eq!(f["version"], version.as_str(), "{f}");
    assert_eq!(f["loaded_from"], "upstream", "{f}");
    assert_eq!(f["last_error"], Value::Null, "{f}");
    // Stored again, whole: a new version row, current, whose zip reads back.
    let new_id: i64 = sqlx::query_scalar("SELECT version_id FROM feed_current")
        .fetch_one(&second.state.db.pool)
        .await
        .unwrap();
    assert_ne!(new_id, old_id, "the corrupt version was deleted");
    let zip = gtfs_fetch::db::feed_store::read_blob(&second.state.db, &version, u64::MAX)
        .await
        .unwrap();
    assert!(
        zip.to_vec().unwrap() == fixture_zip("caltrain"),
        "the zip is stored whole again"
    );
    second.stop().await.unwrap();
}

/// A zip past the spool threshold (built from a temporary file, stored from it) is served
/// as the same feed as the plain one, stored byte for byte in chunks, read back into a
/// temporary file, and warm-started by a restart with the upstream down.
#[tokio::test]
async fn a_spooled_zip_is_served_stored_and_warm_started_like_any_other() {
    let padded = padded_fixture_zip("caltrain", false);
    let sha = hex::encode(Sha256::digest(&padded));
    let sim = OtpSim::start(&["caltrain"]).await;
    let plain = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[],
    ))
    .await;
    let plain_feeds = ok(&plain, "/feeds").await;
    let plain_details = details(&plain, "caltrain").await;
    plain.stop().await.unwrap();

    sim.set_zip("caltrain", padded.clone());
    let first = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[],
    ))
    .await;
    let config = first.state.config.clone();
    let feeds = ok(&first, "/feeds").await;
    let f = feed(&feeds, "caltrain");
    assert_eq!(f["last_error"], Value::Null, "{f}");
    assert_eq!(f["version"], sha.as_str());
    assert_eq!(f["counts"], feed(&plain_feeds, "caltrain")["counts"]);
    assert_eq!(details(&first, "caltrain").await, plain_details);
    let size: i64 = sqlx::query_scalar("SELECT size FROM feed_blob WHERE sha256 = $1")
        .bind(&sha)
        .fetch_one(&first.state.db.pool)
        .await
        .unwrap();
    assert_eq!(size, padded.len() as i64);
    let read = gtfs_fetch::db::feed_store::read_blob(&first.state.db, &sha, u64::MAX)
        .await
        .unwrap();
    assert!(read.in_file(), "read back into a temporary file");
    assert!(read.to_vec().unwrap() == padded, "stored byte for byte");
    first.stop().await.unwrap();

    sim.stop_listening().await;
    let second = restart_on(&config).await;
    let feeds = ok(&second, "/feeds").await;
    let f = feed(&feeds, "caltrain");
    assert_eq!(f["loaded_from"], "store", "{f}");
    assert_eq!(f["version"], sha.as_str());
    assert_eq!(details(&second, "caltrain").await, plain_details);
    second.stop().await.unwrap();
}

/// The `feed_version_route` row of `route_id` in `gtfs_id`'s current version: its blob
/// and whether it was read through (`read_at` set) rather than crawled.
async fn route_row(app: &TestApp, gtfs_id: &str, route_id: &str) -> Option<(String, bool)> {
    sqlx::query_as(
        "SELECT r.blob, r.read_at IS NOT NULL FROM feed_version_route r
         JOIN feed_current c ON c.version_id = r.version_id
         JOIN feed_version v ON v.id = c.version_id
         WHERE v.gtfs_id = $1 AND r.route_id = $2",
    )
    .bind(gtfs_id)
    .bind(route_id)
    .fetch_optional(&app.state.db.pool)
    .await
    .unwrap()
}

/// The ids of the first two routes of feed `gtfs_id`, in the API's order.
async fn first_two_routes(app: &TestApp, gtfs_id: &str) -> (String, String) {
    let list = ok(app, &with_query(&routes_path(gtfs_id), &[("limit", "2")])).await;
    let id = |i: usize| list["routes"][i]["route_id"].as_str().unwrap().to_owned();
    (id(0), id(1))
}

/// A service on `sim`'s otp2 API with its route details read through on demand (not
/// crawled), once loaded.
async fn read_through(sim: &OtpSim) -> TestApp {
    spawn_loaded(sim_config(
        &sim.url(),
        "otp2",
        "prefetch_routes = false",
        &[("GTFS_RATE_LIMIT_DELAY", "0"), ("GTFS_RETRY_ATTEMPTS", "0")],
    ))
    .await
}

#[tokio::test]
async fn a_route_read_through_is_stored_with_its_version_but_never_over_a_crawled_one() {
    use gtfs_fetch::db::feed_store::{RouteRead, read_blob, store_route_read};

    let sim = OtpSim::start(&["bart"]).await;
    let app = read_through(&sim).await;
    let version = feed(&ok(&app, "/feeds").await, "bart")["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let (read, crawled) = first_two_routes(&app, "bart").await;
    let (read, crawled) = (read.as_str(), crawled.as_str());
    assert_eq!(route_row(&app, "bart", read).await, None, "nothing crawled");

    // A client's read goes through to OTP; the detail is stored off the request's path.
    let answer = app.get(&route_path("bart", read)).await;
    assert_eq!(answer.header("x-cache"), Some("MISS"));
    let detail = answer.ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (blob, was_read) = loop {
        if let Some(row) = route_row(&app, "bart", read).await {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the read was never stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(was_read, "stored as read through, not as crawled");
    let stored = read_blob(&app.state.db, &blob, u64::MAX)
        .await
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&stored).unwrap(), detail);

    let db = &app.state.db;
    let mut other = RouteRead {
        instance: "sim",
        gtfs_id: "bart",
        version: &version,
        route_id: read,
        json: b"{\"a\":\"later read\"}",
        replica: "another",
    };
    // A later read of the same route replaces the earlier one.
    assert!(store_route_read(db, &other).await.unwrap());
    let (later, _) = route_row(&app, "bart", read).await.unwrap();
    assert_ne!(later, blob, "the later read replaced it");
    // A version that is not stored (its store failed) gets no row.
    other.version = "a version never stored";
    assert!(!store_route_read(db, &other).await.unwrap());
    // A crawled detail (read_at null) is never replaced by a read.
    sqlx::query(
        "INSERT INTO feed_version_route (version_id, route_id, blob)
         SELECT c.version_id, $2, $3 FROM feed_current c WHERE c.gtfs_id = $1",
    )
    .bind("bart")
    .bind(crawled)
    .bind(&blob)
    .execute(&db.pool)
    .await
    .unwrap();
    other.version = &version;
    other.route_id = crawled;
    assert!(!store_route_read(db, &other).await.unwrap());
    assert_eq!(
        route_row(&app, "bart", crawled).await,
        Some((blob.clone(), false)),
        "the crawled detail stays"
    );
}

#[tokio::test]
async fn route_details_read_through_before_a_restart_are_served_stale_while_otp_is_down() {
    let sim = OtpSim::start(&["bart"]).await;
    let first = read_through(&sim).await;
    let config = first.state.config.clone();
    let (read, never_read) = first_two_routes(&first, "bart").await;
    let (read, never_read) = (read.as_str(), never_read.as_str());
    let detail = ok(&first, &route_path("bart", read)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while route_row(&first, "bart", read).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the read was never stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await.unwrap();

    // OTP goes down; the service starts again on the same database.
    sim.stop_listening().await;
    let second = restart_on(&config).await;
    let answer = second.get(&route_path("bart", read)).await;
    assert_eq!(answer.header("x-cache"), Some("STALE"));
    assert_eq!(answer.ok(), detail, "the detail read before the restart");
    // Asking OTP again failed: still served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = second.get(&route_path("bart", read)).await;
    assert_eq!(again.ok(), detail);
    // A detail nobody read is not there to serve.
    let answer = second.get(&route_path("bart", never_read)).await;
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}
