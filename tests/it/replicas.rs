//! Replicas on one database (issue 12, parts 3 and 4): several services in this test
//! process, each on a Tokio runtime of its own (so that one can be killed: its runtime is
//! shut down with every task in it, mid-refresh or not, and nothing is released), on one
//! PostgreSQL database and one OTP simulator.
//!
//! - about one upstream fetch per refresh interval in all, not one per replica; a crawl
//!   is made once and the route details reach every replica from the database;
//! - a route detail read through on demand by one replica reaches the others' caches:
//!   OTP is asked for it once;
//! - a new upstream version is served by every replica within 2 s of the first;
//! - a manual refresh asked of a replica that does not hold the lease costs upstream one
//!   refresh, and that replica reports it as done;
//! - the holder killed: another replica refreshes within one interval;
//! - a replica started while the upstream is down serves every feed at once;
//! - a follower cut off from the database serves what it has, and once the link is back
//!   it loads the version stored meanwhile (its notification was lost) at once;
//! - waybills sent to two replicas at once: one key gives one row; two overlapping duties
//!   of one vehicle give one 201 and one 409.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::Router;
use gtfs_fetch::config::Config;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::http::{route_path, routes_path, trips_path, with_query};
use crate::support::otp_sim::{OtpSim, fixture_zip};
use crate::support::{TestApp, fresh_database, spawn_config};

/// The zip feed's path on the simulator.
const ZIP: &str = "/gtfs/caltrain.zip";

/// A replica: a service on a runtime of its own.
struct Replica {
    app: Option<TestApp>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    async fn start(config: Config) -> Replica {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime");
            let app = runtime.block_on(spawn_config(config, Router::new()));
            let _ = tx.send((app, runtime));
        });
        let (app, runtime) = rx.await.expect("the replica started");
        Replica {
            app: Some(app),
            runtime: Some(runtime),
        }
    }

    fn app(&self) -> &TestApp {
        self.app.as_ref().expect("a running replica")
    }

    /// As SIGKILL would: every task stops where it is; the lease is not released.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    async fn id(&self) -> String {
        let instances = self.app().get("/instances").await.ok();
        instances["replica_id"].as_str().unwrap().to_owned()
    }

    /// `refresh_lease` of the one instance, as this replica reports it.
    async fn lease(&self) -> Value {
        let instances = self.app().get("/instances").await.ok();
        instances["instances"][0]["refresh_lease"].clone()
    }

    /// The version each feed is served at, by `gtfs_id` (`null` before the first load).
    async fn versions(&self) -> Vec<(String, Value)> {
        let feeds = self.app().get("/feeds").await.ok();
        feeds["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["gtfs_id"].as_str().unwrap().to_owned(),
                    f["version"].clone(),
                )
            })
            .collect()
    }

    async fn version(&self, gtfs_id: &str) -> Value {
        self.versions()
            .await
            .into_iter()
            .find(|(id, _)| id == gtfs_id)
            .map(|(_, v)| v)
            .unwrap_or(Value::Null)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One instance `sim` refreshed every `interval` seconds: `api` `gtfs` serves the zip
/// feed caltrain only; `otp2` also bart's route index, every route's detail crawled.
fn config(sim: &OtpSim, database: &str, id: &str, interval: f64, api: &str) -> Config {
    config_crawling(sim, database, id, interval, api, true)
}

/// [`config`], the route details crawled (`prefetch`) or read through on demand.
fn config_crawling(
    sim: &OtpSim,
    database: &str,
    id: &str,
    interval: f64,
    api: &str,
    prefetch: bool,
) -> Config {
    let file = format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"{api}\"\n\
         refresh_interval = {interval}\nprefetch_routes = {prefetch}\n\
         [[instances.feeds]]\ngtfs_id = \"caltrain\"\nzip_url = \"{ZIP}\"\n",
        sim.url()
    );
    let env = [
        ("DATABASE_URL", database),
        ("GTFS_LISTEN", "127.0.0.1:0"),
        ("GTFS_REPLICA_ID", id),
        ("GTFS_RATE_LIMIT_DELAY", "0"),
        ("GTFS_RETRY_ATTEMPTS", "0"),
        ("GTFS_REFRESH_MIN_SPACING", "0"),
        ("WAYBILLS_DB_MIN_CONNECTIONS", "1"),
    ];
    Config::parse(Some(("replicas.toml", &file)), |k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .expect("a valid configuration")
}

/// `n` replicas `r1`, `r2`... on one fresh database, each ready and serving `feeds` at
/// the same versions; and the database's URL.
async fn start(
    sim: &OtpSim,
    n: usize,
    interval: f64,
    api: &str,
    feeds: &[&str],
) -> (Vec<Replica>, String) {
    start_crawling(sim, n, interval, api, feeds, true).await
}

/// [`start`], the route details crawled (`prefetch`) or read through on demand.
async fn start_crawling(
    sim: &OtpSim,
    n: usize,
    interval: f64,
    api: &str,
    feeds: &[&str],
    prefetch: bool,
) -> (Vec<Replica>, String) {
    let database = fresh_database().await;
    let mut replicas = Vec::new();
    for i in 1..=n {
        let id = format!("r{i}");
        let config = config_crawling(sim, &database, &id, interval, api, prefetch);
        replicas.push(Replica::start(config).await);
    }
    for r in &replicas {
        r.app()
            .wait_ready_status(200, Duration::from_secs(60))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut seen = BTreeSet::new();
        for r in &replicas {
            for feed in feeds {
                seen.insert((feed.to_string(), r.version(feed).await.to_string()));
            }
        }
        if seen.len() == feeds.len() && !seen.iter().any(|(_, v)| v == "null") {
            return (replicas, database);
        }
        assert!(Instant::now() < deadline, "replicas never agreed: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica holding the lease, by index, once every replica names the same holder
/// and exactly it says it holds the lease.
async fn holder(replicas: &[Replica]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut holders = BTreeSet::new();
        let mut holding = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            let lease = r.lease().await;
            holders.insert(lease["holder"].to_string());
            if lease["role"] == "holder" {
                holding.push(i);
            }
        }
        if holders.len() == 1 && holding.len() == 1 {
            let i = holding[0];
            let id = replicas[i].id().await;
            assert_eq!(holders.first().unwrap(), &json!(id).to_string());
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no single holder: {holders:?}, holding {holding:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many answers `app`'s route cache holds.
async fn cached_entries(app: &TestApp) -> u64 {
    let stats = app.get("/memory-stats").await.ok();
    stats["route_cache"]["entries"].as_u64().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_fetch_about_once_per_interval_and_serve_a_new_version_together() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let interval = 3.0;
    let (replicas, _) = start(&sim, 3, interval, "otp2", &["caltrain", "bart"]).await;
    let h = holder(&replicas).await;
    let ids: BTreeSet<String> = futures::future::join_all(replicas.iter().map(|r| r.id()))
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 3, "each replica has its own id: {ids:?}");
    for (i, r) in replicas.iter().enumerate() {
        let lease = r.lease().await;
        let role = if i == h { "holder" } else { "follower" };
        assert_eq!(lease["role"], role, "replica {i}: {lease}");
        let metrics = r.app().get("/metrics").await.text();
        let held = format!(
            "gtfs_fetch_refresh_lease_held{{instance=\"sim\"}} {}",
            u8::from(i == h)
        );
        assert!(metrics.lines().any(|l| l == held), "replica {i}: no {held}");
    }

    // bart's routes were crawled once, by the holder; the others serve every route's
    // detail from the database, asking upstream nothing.
    let crawled = sim.requests_for("Route");
    let list = replicas[h]
        .app()
        .get(&with_query(&routes_path("bart"), &[("limit", "1000")]))
        .await
        .ok();
    let routes: Vec<&str> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route_id"].as_str().unwrap())
        .collect();
    assert!(!routes.is_empty());
    assert_eq!(crawled, routes.len() as u64, "one crawl for three replicas");
    for r in &replicas {
        for route in &routes {
            r.app().get(&route_path("bart", route)).await.ok();
        }
    }
    assert_eq!(
        sim.requests_for("Route"),
        crawled,
        "no detail asked upstream again"
    );

    // About one zip request per interval in all (three replicas alone would make nine).
    sim.reset_counts();
    let window = Duration::from_secs_f64(interval * 4.0);
    tokio::time::sleep(window).await;
    let zips = sim.requests_for(ZIP);
    let indexes = sim.requests_for("Routes");
    eprintln!("in {window:?}: {zips} zip requests, {indexes} route index requests");
    // 3 or 4 expected (12 if each replica fetched for itself); a busy machine may delay
    // a renewal past the lease's end, and the replica taking over refreshes once more.
    assert!((3..=6).contains(&zips), "{zips} zip requests in {window:?}");
    assert!(
        (3..=6).contains(&indexes),
        "{indexes} index requests in {window:?}"
    );

    // A new version upstream: every replica serves it within 2 s of the first.
    let new_zip = fixture_zip("sample-feed");
    let new_version = json!(sha256(&new_zip));
    sim.set_zip("caltrain", new_zip.to_vec());
    let started = Instant::now();
    let mut served_at: Vec<Option<Duration>> = vec![None; replicas.len()];
    while served_at.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the new version is not everywhere: {served_at:?}"
        );
        for (i, r) in replicas.iter().enumerate() {
            if served_at[i].is_none() && r.version("caltrain").await == new_version {
                served_at[i] = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let times: Vec<Duration> = served_at.into_iter().flatten().collect();
    let spread = *times.iter().max().unwrap() - *times.iter().min().unwrap();
    eprintln!("new version served after {times:?}: spread {spread:?}");
    assert!(spread <= Duration::from_secs(2), "spread {spread:?}");
    // The followers say where it came from.
    for (i, r) in replicas.iter().enumerate() {
        let feeds = r.app().get("/feeds").await.ok();
        let caltrain = feeds["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["gtfs_id"] == "caltrain")
            .unwrap()
            .clone();
        let from = if i == h { "upstream" } else { "store" };
        assert_eq!(caltrain["loaded_from"], from, "replica {i}: {caltrain}");
        assert!(
            !caltrain["last_success_at"].is_null(),
            "replica {i}: {caltrain}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_detail_one_replica_read_through_is_not_asked_upstream_by_the_other() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let (replicas, _) = start_crawling(&sim, 2, 60.0, "otp2", &["caltrain", "bart"], false).await;
    let (a, b) = (replicas[0].app(), replicas[1].app());
    assert_eq!(sim.requests_for("Route"), 0, "nothing crawled");
    let list = a
        .get(&with_query(&routes_path("bart"), &[("limit", "3")]))
        .await
        .ok();
    let routes: Vec<String> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(routes.len(), 3);
    let before = cached_entries(b).await;

    // Replica a reads each detail through from OTP; b is told and caches it.
    let mut bodies = Vec::new();
    for route in &routes {
        let answer = a.get(&route_path("bart", route)).await;
        assert_eq!(answer.header("x-cache"), Some("MISS"), "{route}");
        bodies.push(answer.ok());
    }
    assert_eq!(sim.requests_for("Route"), 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cached_entries(b).await < before + 3 {
        assert!(
            Instant::now() < deadline,
            "replica b never cached the details replica a read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (route, body) in routes.iter().zip(&bodies) {
        let answer = b.get(&route_path("bart", route)).await;
        assert_eq!(answer.header("x-cache"), Some("HIT"), "{route}");
        assert_eq!(
            &answer.ok(),
            body,
            "{route}: the same answer on both replicas"
        );
    }
    assert_eq!(
        sim.requests_for("Route"),
        3,
        "replica b asked OTP for a detail replica a had read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_refresh_asked_of_a_follower_is_one_refresh_by_the_holder() {
    let sim = OtpSim::start(&["caltrain"]).await;
    // Long enough that no scheduled refresh happens during the test.
    let (replicas, _) = start(&sim, 2, 60.0, "gtfs", &["caltrain"]).await;
    let h = holder(&replicas).await;
    let follower = &replicas[1 - h];
    let refreshes = |instances: &Value| instances["instances"][0]["status"]["refreshes"].as_u64();
    // The first refresh may have been made before the follower listened.
    let heard = refreshes(&follower.app().get("/instances").await.ok()).unwrap();
    sim.reset_counts();
    let res = follower
        .app()
        .client
        .post(follower.app().url("/instances/sim/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.requests_for(ZIP) == 0 {
        assert!(Instant::now() < deadline, "the holder did not refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.requests_for(ZIP), 1, "one refresh for both replicas");
    let instances = replicas[h].app().get("/instances").await.ok();
    assert_eq!(
        instances["instances"][0]["status"]["refreshes"], 2,
        "{instances}"
    );
    // The follower asked says so too, as `gtfs-fetch refresh` asking it waits to see.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let instances = follower.app().get("/instances").await.ok();
        let status = &instances["instances"][0]["status"];
        if refreshes(&instances) == Some(heard + 1) {
            assert!(status["last_error"].is_null(), "{status}");
            assert!(!status["last_success_at"].is_null(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never heard: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_killed_another_replica_refreshes_within_one_interval() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let interval = Duration::from_secs(3);
    let (mut replicas, _) = start(&sim, 3, interval.as_secs_f64(), "gtfs", &["caltrain"]).await;
    let h = holder(&replicas).await;
    let killed = replicas[h].id().await;
    replicas[h].kill();
    sim.reset_counts();
    let mut survivors: Vec<Replica> = replicas
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| (i != h).then_some(r))
        .collect();
    let handed_over = sim
        .first_request_for(ZIP, interval * 3)
        .await
        .expect("a survivor refreshed after the holder was killed");
    eprintln!("a survivor refreshed {handed_over:?} after the holder was killed");
    // One interval, plus some slack for a busy machine.
    assert!(
        handed_over <= interval + Duration::from_millis(500),
        "{handed_over:?}"
    );
    let h2 = holder(&survivors).await;
    assert_ne!(survivors[h2].id().await, killed);

    // The survivors go on as before: a new version reaches both.
    let new_zip = fixture_zip("sample-feed");
    let new_version = json!(sha256(&new_zip));
    sim.set_zip("caltrain", new_zip.to_vec());
    let deadline = Instant::now() + Duration::from_secs(15);
    for r in &survivors {
        while r.version("caltrain").await != new_version {
            assert!(Instant::now() < deadline, "the new version did not arrive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for r in &mut survivors {
        r.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_with_the_upstream_down_serves_the_stored_feed_at_once() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let (replicas, database) = start(&sim, 2, 60.0, "otp2", &["caltrain", "bart"]).await;
    let expected = replicas[0].versions().await;
    sim.stop_listening().await;
    sim.reset_counts();
    let started = Instant::now();
    let third = Replica::start(config(&sim, &database, "r3", 60.0, "otp2")).await;
    third
        .app()
        .wait_ready_status(200, Duration::from_secs(30))
        .await;
    eprintln!(
        "ready {:?} after start with the upstream down",
        started.elapsed()
    );
    assert_eq!(third.versions().await, expected);
    assert_eq!(third.lease().await["role"], "follower");
    let list = third
        .app()
        .get(&with_query(&routes_path("bart"), &[("limit", "1000")]))
        .await
        .ok();
    let route = list["routes"][0]["route_id"].as_str().unwrap();
    third.app().get(&route_path("bart", route)).await.ok();
    assert_eq!(sim.requests(), 0, "nothing asked of the upstream");
}

/// A caltrain route with trips on [`DAY`], and that day.
const ROUTE: &str = "Lo-130";
const DAY: &str = "2018-06-01";

/// POSTs each `(replica, body, key)` at the same moment: (status, body) each.
async fn all_at_once(requests: Vec<(&TestApp, Value, Option<&str>)>) -> Vec<(u16, Value)> {
    let requests = requests
        .iter()
        .map(|(app, body, key)| app.waybill_request(body, *key, None))
        .collect();
    crate::support::http::all_at_once(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waybills_sent_to_two_replicas_at_once_are_one_row_or_one_conflict() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let (replicas, database) = start(&sim, 2, 60.0, "gtfs", &["caltrain"]).await;
    // The test's own connection: the replicas' pools belong to their runtimes.
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let (a, b) = (replicas[0].app(), replicas[1].app());
    let trips = a.get(&trips_path("caltrain", ROUTE, DAY)).await.ok();
    let trip = trips["trips"][0]["trip_id"].as_str().unwrap().to_owned();
    let waybill = |vehicle: &str, driver: &str| {
        json!({
            "service_date": DAY, "vehicle_id": vehicle, "driver_id": driver,
            "gtfs_id": "caltrain", "route_id": ROUTE, "trip_ids": [trip],
        })
    };

    // One Idempotency-Key, both replicas, several rounds: one row per key.
    for round in 0..5 {
        let key = format!("replicas-{round}");
        let body = waybill(&format!("bus-{round}"), &format!("driver-{round}"));
        let answers = all_at_once(vec![
            (a, body.clone(), Some(key.as_str())),
            (b, body.clone(), Some(key.as_str())),
        ])
        .await;
        let created: BTreeSet<String> = answers
            .iter()
            .filter(|(s, _)| *s == 201)
            .map(|(_, w)| w["id"].to_string())
            .collect();
        assert_eq!(created.len(), 1, "round {round}: one waybill: {answers:?}");
        for (status, body) in &answers {
            // The second is the stored answer again, or "the first is still in flight".
            assert!(
                *status == 201 || *status == 409,
                "round {round}: {status} {body}"
            );
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM waybill WHERE vehicle_id = $1")
            .bind(format!("bus-{round}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 1, "round {round}");
    }

    // One vehicle, the same trip, two drivers, one on each replica: one 201, one 409.
    for round in 0..5 {
        let vehicle = format!("tram-{round}");
        let answers = all_at_once(vec![
            (a, waybill(&vehicle, &format!("d-a-{round}")), None),
            (b, waybill(&vehicle, &format!("d-b-{round}")), None),
        ])
        .await;
        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {answers:?}");
    }
}

/// A cuttable link to PostgreSQL's Unix socket: a socket of its own in `dir`, whose
/// connections are piped to the real one until [`DbLink::cut`] closes them all and
/// refuses new ones, until [`DbLink::restore`].
struct DbLink {
    dir: tempfile::TempDir,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DbLink {
    async fn start(real_socket: std::path::PathBuf) -> DbLink {
        let dir = tempfile::Builder::new().prefix("pglink").tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let watch = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cut = watch.subscribe();
                let real = real_socket.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::UnixStream::connect(&real).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        DbLink { dir, cut, task }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// `url` with its socket directory replaced by this link's.
    fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "host" {
                    self.dir.path().display().to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url.to_string()
    }
}

impl Drop for DbLink {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_replace(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_the_database_serves_what_it_has_and_catches_up_when_back() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let database = fresh_database().await;
    let Some(socket_dir) = url::Url::parse(&database)
        .unwrap()
        .query_pairs()
        .find(|(k, v)| k == "host" && v.starts_with('/'))
        .map(|(_, v)| std::path::PathBuf::from(v.into_owned()))
    else {
        eprintln!("skipped: the test database is not on a Unix socket");
        return;
    };
    let link = DbLink::start(socket_dir.join(".s.PGSQL.5432")).await;
    // A long interval: nothing but the reconnection can bring the new version in time.
    let holder = Replica::start(config(&sim, &database, "direct", 60.0, "gtfs")).await;
    holder
        .app()
        .wait_ready_status(200, Duration::from_secs(60))
        .await;
    let follower = Replica::start(config(&sim, &link.url(&database), "linked", 60.0, "gtfs")).await;
    follower
        .app()
        .wait_ready_status(200, Duration::from_secs(60))
        .await;
    let old = holder.version("caltrain").await;
    assert_eq!(follower.version("caltrain").await, old);
    assert_eq!(follower.lease().await["role"], "follower");
    let routes = follower.app().get(&routes_path("caltrain")).await.ok();

    link.cut();
    // A new version, stored and announced while the follower cannot hear it.
    let new_zip = fixture_zip("sample-feed");
    let new_version = json!(sha256(&new_zip));
    sim.set_zip("caltrain", new_zip.to_vec());
    let before = holder.app().state.instances[0].status().refreshes;
    let res = holder
        .app()
        .client
        .post(holder.app().url("/instances/sim/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder.app().state.instances[0].status().refreshes <= before {
        assert!(Instant::now() < deadline, "the holder did not refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(holder.version("caltrain").await, new_version);
    // The follower serves what it has meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        follower.app().get(&routes_path("caltrain")).await.ok(),
        routes
    );
    assert_eq!(follower.version("caltrain").await, old);

    link.restore();
    let restored = Instant::now();
    while follower.version("caltrain").await != new_version {
        assert!(
            restored.elapsed() < Duration::from_secs(20),
            "the follower did not catch up after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "caught up {:?} after the link came back",
        restored.elapsed()
    );
}
