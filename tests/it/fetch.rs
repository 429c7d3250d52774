//! The fetcher against the OTP simulator: real sockets, real fixture feeds, injected faults.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use gtfs_fetch::otp::breaker::BreakerState;
use gtfs_fetch::otp::client::{Call, OtpClient, OtpError};
use serde_json::Value;

use crate::support::http::Answer;
use crate::support::otp_sim::{Fault, OtpSim};
use crate::support::{TestApp, fixture_rows, fresh_database, sim_config, spawn_loaded, zip_feeds};

async fn feeds(app: &TestApp) -> Vec<Value> {
    let body: Value = app.get("/feeds").await.json();
    body["feeds"].as_array().unwrap().clone()
}

fn feed<'a>(feeds: &'a [Value], id: &str) -> &'a Value {
    feeds
        .iter()
        .find(|f| f["gtfs_id"] == id)
        .unwrap_or_else(|| panic!("feed {id} in {feeds:?}"))
}

const ALL_FEEDS: [&str; 5] = ["sample-feed", "caltrain", "bart", "cdmx", "wmata"];

#[tokio::test]
async fn all_fixture_zips_load_with_the_counts_of_their_files() {
    let sim = OtpSim::start(&ALL_FEEDS).await;
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &zip_feeds(&ALL_FEEDS), &[])).await;
    let feeds = feeds(&app).await;
    for name in ALL_FEEDS {
        let f = feed(&feeds, name);
        assert_eq!(f["last_error"], Value::Null, "{name}: {f}");
        assert_eq!(
            f["counts"]["routes"],
            fixture_rows(name, "routes.txt") as u64,
            "{name} routes"
        );
        assert_eq!(
            f["counts"]["trips"],
            fixture_rows(name, "trips.txt") as u64,
            "{name} trips"
        );
        assert_eq!(
            f["counts"]["stops"],
            fixture_rows(name, "stops.txt") as u64,
            "{name} stops"
        );
        assert_eq!(f["version"].as_str().unwrap().len(), 64, "sha256 version");
    }
    app.stop().await.unwrap();
}

/// The service over `sim` as an `api` instance crawling every route's detail, started and
/// loaded; every route of caltrain and bart is in, with its detail.
async fn spawn_crawling(sim: &OtpSim, api: &str) -> TestApp {
    let app = spawn_loaded(sim_config(
        &sim.url(),
        api,
        "prefetch_routes = true",
        &[("GTFS_RATE_LIMIT_DELAY", "0")],
    ))
    .await;
    let feeds = feeds(&app).await;
    for name in ["caltrain", "bart"] {
        let f = feed(&feeds, name);
        assert_eq!(f["last_error"], Value::Null, "{api} {name}: {f}");
        let routes = fixture_rows(name, "routes.txt") as u64;
        assert_eq!(f["counts"]["routes"], routes, "{api} {name}");
        assert_eq!(
            f["counts"]["route_details"], routes,
            "{api} {name}: every route crawled"
        );
    }
    app
}

#[tokio::test]
async fn otp2_and_otp1_instances_load_every_route_with_details() {
    for api in ["otp2", "otp1"] {
        let sim = OtpSim::start(&["caltrain", "bart"]).await;
        let app = spawn_crawling(&sim, api).await;
        let instances: Value = app.get("/instances").await.json();
        let http = &instances["instances"][0]["http"];
        assert!(http["requests_sent"].as_u64().unwrap() > 10, "{http}");
        assert!(
            http["reuse_ratio"].as_f64().unwrap() > 0.9,
            "{api}: connections reused: {http}"
        );
        app.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_otp_before_2_6_without_route_sort_order_is_asked_without_it() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    sim.set_before_2_6(true);
    let app = spawn_crawling(&sim, "otp2").await;
    // One refused Routes request, then the older documents only; the refusal is an
    // answer, not a failure of the server.
    let per_feed = 2;
    assert_eq!(sim.requests_for("Routes"), per_feed + 1);
    let instances: Value = app.get("/instances").await.json();
    let instance = &instances["instances"][0];
    assert_eq!(instance["graphql_dialect"], "before_2_6", "{instance}");
    assert_eq!(instance["http"]["failures"], 0, "{instance}");
    assert_eq!(instance["http"]["breaker"]["state"], "closed", "{instance}");
    // Routes are served, without a sort order (the older server has none to give).
    let route: Value = app.get("/feeds/bart/routes/01").await.json();
    assert_eq!(route["route_id"], "01", "{route}");
    assert_eq!(route["sort_order"], Value::Null, "{route}");
    assert!(!route["patterns"].as_array().unwrap().is_empty(), "{route}");

    // The server is upgraded: the next refresh asks with sortOrder again, and keeps to it.
    sim.set_before_2_6(false);
    let before = sim.requests_for("Routes");
    app.refresh_now().await;
    assert_eq!(sim.requests_for("Routes"), before + per_feed, "no refusal");
    let instances: Value = app.get("/instances").await.json();
    assert_eq!(instances["instances"][0]["graphql_dialect"], "current");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_unchanged_zip_costs_one_conditional_request_and_a_new_one_is_loaded() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[],
    ))
    .await;
    let version = feed(&feeds(&app).await, "caltrain")["version"].clone();
    // The start-up refresh may finish before the migrations have run: its row is written
    // once the database is ready, not lost.
    let fetches = async || -> Vec<(String, Option<i16>)> {
        sqlx::query_as(
            "SELECT outcome, http_status FROM feed_fetch WHERE gtfs_id = 'caltrain' ORDER BY started_at, id",
        )
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fetches().await.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fetches().await, vec![("updated".into(), Some(200))]);
    let before = sim.requests_for("/gtfs/caltrain.zip");
    app.refresh_now().await;
    assert_eq!(
        sim.requests_for("/gtfs/caltrain.zip"),
        before + 1,
        "one request"
    );
    let f = feeds(&app).await;
    assert_eq!(feed(&f, "caltrain")["version"], version);
    assert_eq!(
        fetches().await,
        vec![
            ("updated".into(), Some(200)),
            ("unchanged".into(), Some(304))
        ]
    );

    // A new version of the file is downloaded and parsed.
    let bart = std::fs::read(crate::support::fixture_path("bart")).unwrap();
    sim.set_zip("caltrain", bart);
    app.refresh_now().await;
    let f = feeds(&app).await;
    assert_ne!(feed(&f, "caltrain")["version"], version);
    assert_eq!(
        feed(&f, "caltrain")["counts"]["routes"],
        fixture_rows("bart", "routes.txt") as u64
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_or_corrupt_feed_is_refused_and_the_last_good_one_kept() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[("GTFS_MAX_FEED_BYTES", "100000")],
    ))
    .await;
    let good = feed(&feeds(&app).await, "caltrain").clone();
    assert_eq!(good["last_error"], Value::Null);

    sim.set_zip("caltrain", vec![b'x'; 200_000]);
    app.refresh_now().await;
    let f = feed(&feeds(&app).await, "caltrain").clone();
    assert!(f["last_error"].as_str().unwrap().contains("100000"), "{f}");
    assert_eq!(f["version"], good["version"], "last good version kept");

    sim.set_zip("caltrain", b"PK\x03\x04 this is not a zip".to_vec());
    app.refresh_now().await;
    let f = feed(&feeds(&app).await, "caltrain").clone();
    assert!(
        f["last_error"]
            .as_str()
            .unwrap()
            .contains("not a usable GTFS feed"),
        "{f}"
    );
    assert_eq!(f["counts"], good["counts"], "last good data kept");
    app.stop().await.unwrap();
}

/// A zip past the spool threshold is refused over `max_feed_bytes` as a small one is, and
/// one with a damaged member fails as the same damage fails in memory (the error of
/// reading the zip from a temporary file is the error of reading it from memory).
#[tokio::test]
async fn a_spooled_zip_is_refused_and_fails_as_one_in_memory() {
    let damaged = crate::support::fixtures::padded_fixture_zip("caltrain", true);
    // One byte over the limit (a zip with a byte after its end; refused unread).
    let mut oversized = crate::support::fixtures::padded_fixture_zip("caltrain", false);
    oversized.push(0);
    let sim = OtpSim::start(&["caltrain"]).await;
    let limit = damaged.len().to_string();
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[("GTFS_MAX_FEED_BYTES", &limit)],
    ))
    .await;
    let good = feed(&feeds(&app).await, "caltrain").clone();
    assert_eq!(good["last_error"], Value::Null);

    sim.set_zip("caltrain", oversized);
    app.refresh_now().await;
    let f = feed(&feeds(&app).await, "caltrain").clone();
    assert!(f["last_error"].as_str().unwrap().contains(&limit), "{f}");
    assert_eq!(f["version"], good["version"], "last good version kept");

    sim.set_zip("caltrain", damaged.clone());
    app.refresh_now().await;
    let f = feed(&feeds(&app).await, "caltrain").clone();
    let error = f["last_error"].as_str().unwrap();
    let in_memory =
        gtfs_fetch::feed::snapshot::FeedSnapshot::from_zip_bytes("caltrain", "v", "s", &damaged)
            .unwrap_err();
    assert_eq!(
        error,
        format!("the zip is not a usable GTFS feed: {in_memory}"),
        "{f}"
    );
    assert_eq!(f["version"], good["version"], "last good version kept");
    assert_eq!(f["counts"], good["counts"], "last good data kept");
    app.stop().await.unwrap();
}

/// A feed whose build needs more memory than `max_build_bytes` is refused, naming the
/// figure, and the last good snapshot stays (caltrain builds within 1 MB, bart does not).
#[tokio::test]
async fn a_feed_over_the_build_memory_budget_is_refused_and_the_last_good_one_kept() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[("GTFS_MAX_BUILD_BYTES", "1000000")],
    ))
    .await;
    let good = feed(&feeds(&app).await, "caltrain").clone();
    assert_eq!(good["last_error"], Value::Null);

    let bart = std::fs::read(crate::support::fixture_path("bart")).unwrap();
    sim.set_zip("caltrain", bart);
    app.refresh_now().await;
    let f = feed(&feeds(&app).await, "caltrain").clone();
    let error = f["last_error"].as_str().unwrap();
    assert!(error.contains("over max_build_bytes (1000000)"), "{error}");
    assert_eq!(f["version"], good["version"], "last good version kept");
    assert_eq!(f["counts"], good["counts"], "last good data kept");
    app.stop().await.unwrap();
}

/// A client for the simulator's instance, with environment overrides.
fn client(sim: &OtpSim, env: &[(&str, &str)]) -> OtpClient {
    let config = sim_config(&sim.url(), "otp1", "", env);
    OtpClient::new(&config, &config.instances[0]).unwrap()
}

/// OTP 1's feed list, parsed as the service parses it.
async fn get_feeds(client: &OtpClient) -> Result<usize, OtpError> {
    let call = Call::get(client.url("/otp/routers/default/index/feeds"));
    client
        .call(call, |r| {
            if !r.status.is_success() {
                return Err(format!("HTTP {}", r.status));
            }
            gtfs_fetch::otp::otp1::parse_feeds(&r.body)
                .map(|f| f.len())
                .map_err(|e| e.to_string())
        })
        .await
}

#[tokio::test]
async fn sequential_requests_ride_one_connection() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    let client = client(&sim, &[]);
    for _ in 0..100 {
        get_feeds(&client).await.unwrap();
    }
    assert_eq!(sim.connections(), 1);
    let report = client.report();
    assert_eq!(report.connections_opened, 1);
    assert_eq!(report.requests_sent, 100);
    assert!(report.reuse_ratio >= 0.99);
}

#[tokio::test]
async fn server_closing_idle_or_used_up_connections_causes_no_errors() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    let client = client(&sim, &[("GTFS_RETRY_ATTEMPTS", "0")]);
    // Idle close: the server drops connections idle 250 ms; requests come around then.
    // (Not shorter: on a loaded machine a fresh connection can sit that long before the
    // client writes on it, which is a different race from the one under test.)
    sim.set_idle_close(Some(Duration::from_millis(250)));
    for i in 0..20u64 {
        get_feeds(&client)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        tokio::time::sleep(Duration::from_millis(235 + (i * 7) % 30)).await;
    }
    assert!(
        client.stats().stale_retries.load(Ordering::Relaxed) > 0 || sim.connections() > 1,
        "the race was met"
    );
    sim.set_idle_close(None);
    // OTP's server closes a connection after a number of requests.
    sim.set_max_requests_per_connection(Some(5));
    for i in 0..50 {
        get_feeds(&client)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    assert!(
        sim.connections() >= 10,
        "new connections were opened: {}",
        sim.connections()
    );
}

#[tokio::test]
async fn each_fault_gives_a_clear_error() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    let env = [
        ("GTFS_RETRY_ATTEMPTS", "0"),
        ("GTFS_BREAKER_FAILURES", "1000"),
        ("GTFS_HTTP_REQUEST_TIMEOUT", "0.5"),
    ];
    let client = client(&sim, &env);
    type Expect = fn(&OtpError) -> bool;
    let cases: Vec<(Fault, Expect)> = vec![
        (Fault::Status(500), |e| {
            matches!(e, OtpError::Status { status: 500, .. })
        }),
        (
            Fault::StatusRetryAfter(503, 7),
            |e| matches!(e, OtpError::Status { status: 503, retry_after: Some(d) } if d.as_secs() == 7),
        ),
        (Fault::Garbage, |e| matches!(e, OtpError::Malformed(_))),
        (Fault::Truncated, |e| {
            matches!(e, OtpError::Body(_) | OtpError::Closed(_))
        }),
        (Fault::CloseWithoutAnswer, |e| {
            matches!(e, OtpError::Closed(_))
        }),
        (Fault::Hang, |e| matches!(e, OtpError::Timeout(_))),
        (Fault::Delay(Duration::from_secs(2)), |e| {
            matches!(e, OtpError::Timeout(_))
        }),
        (
            Fault::SlowBody {
                chunk: 1,
                every: Duration::from_millis(200),
            },
            |e| matches!(e, OtpError::Timeout(_)),
        ),
    ];
    for (fault, expected) in cases {
        let name = format!("{fault:?}");
        sim.set_fault(fault);
        let err = get_feeds(&client).await.expect_err(&name);
        assert!(expected(&err), "{name} gave {err:?}");
        assert!(!err.to_string().is_empty());
        sim.clear_fault();
        get_feeds(&client)
            .await
            .unwrap_or_else(|e| panic!("after {name}: {e}"));
    }
    sim.stop_listening().await;
    let err = get_feeds(&client).await.unwrap_err();
    assert!(matches!(err, OtpError::Connect(_)), "refused gave {err:?}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    let client = Arc::new(client(
        &sim,
        &[("GTFS_RETRY_ATTEMPTS", "1"), ("GTFS_RETRY_DELAY", "0.001")],
    ));
    sim.set_fault(Fault::StatusRetryAfter(503, 1));
    let task = tokio::spawn({
        let client = client.clone();
        async move { get_feeds(&client).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sim.requests(), 1, "the retry waits for Retry-After");
    sim.clear_fault();
    task.await.unwrap().expect("the retry after 1 s succeeds");
    assert_eq!(sim.requests(), 2);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_probes_and_closes() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    let env = [
        ("GTFS_RETRY_ATTEMPTS", "0"),
        ("GTFS_BREAKER_FAILURES", "3"),
        ("GTFS_BREAKER_OPEN", "0.3"),
    ];
    let client = Arc::new(client(&sim, &env));
    sim.set_fault(Fault::Status(500));
    for _ in 0..3 {
        assert!(matches!(
            get_feeds(&client).await,
            Err(OtpError::Status { .. })
        ));
    }
    assert_eq!(client.breaker().state(), BreakerState::Open);
    let sent = sim.requests();
    for _ in 0..100 {
        assert!(matches!(
            get_feeds(&client).await,
            Err(OtpError::BreakerOpen(_))
        ));
    }
    assert_eq!(sim.requests(), sent, "no request while open");

    // 404 answers neither count nor reset: tested in the breaker's unit tests.
    // Half-open: of many concurrent calls, one probe reaches the server.
    tokio::time::sleep(Duration::from_millis(450)).await;
    sim.clear_fault();
    sim.set_fault(Fault::Delay(Duration::from_millis(200)));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get_feeds(&client).await })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        if call.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1, "one probe went through");
    assert_eq!(sim.requests(), sent + 1);
    assert_eq!(
        client.breaker().state(),
        BreakerState::Closed,
        "the probe closed it"
    );
    sim.clear_fault();
    get_feeds(&client).await.unwrap();
}

#[tokio::test]
async fn with_the_instance_down_tries_stay_within_the_retry_budget() {
    let sim = OtpSim::start(&["sample-feed"]).await;
    let env = [
        ("GTFS_RETRY_ATTEMPTS", "3"),
        ("GTFS_RETRY_DELAY", "0.001"),
        ("GTFS_BREAKER_FAILURES", "100000"),
    ];
    let client = client(&sim, &env);
    sim.stop_listening().await;
    let calls = 300;
    for _ in 0..calls {
        assert!(get_feeds(&client).await.is_err());
    }
    let sent = client.stats().requests_sent.load(Ordering::Relaxed);
    assert!(
        sent as f64 <= 1.1 * calls as f64 + 1.0,
        "{sent} tries for {calls} calls"
    );
    assert!(sent > calls, "some retries were made: {sent}");

    // A server that accepts and hangs up without answering is down too: its broken
    // connections are fresh ones, not stale pooled ones, so they get no free retry.
    let sim = OtpSim::start(&["sample-feed"]).await;
    let hung_up = self::client(&sim, &env);
    get_feeds(&hung_up).await.unwrap();
    sim.set_fault(Fault::CloseWithoutAnswer);
    for _ in 0..calls {
        assert!(get_feeds(&hung_up).await.is_err());
    }
    let sent = hung_up.stats().requests_sent.load(Ordering::Relaxed) - 1;
    let stale = hung_up.stats().stale_retries.load(Ordering::Relaxed);
    assert!(
        sent as f64 <= 1.1 * calls as f64 + 2.0,
        "{sent} tries for {calls} calls ({stale} stale retries)"
    );
    assert!(stale <= 1, "only the pooled connection was stale: {stale}");

    // The same with calls overlapping: a connect that loses the race to a pooled
    // connection ends up in the pool unused, so tries can ride such connections; once
    // the instance fails, their retries must cost budget too.
    let sim = OtpSim::start(&["sample-feed"]).await;
    let overlapping = self::client(&sim, &env);
    get_feeds(&overlapping).await.unwrap();
    sim.set_fault(Fault::CloseWithoutAnswer);
    let before = overlapping.stats().requests_sent.load(Ordering::Relaxed);
    futures::stream::iter(0..calls)
        .for_each_concurrent(20, |_| async {
            assert!(get_feeds(&overlapping).await.is_err());
        })
        .await;
    let sent = overlapping.stats().requests_sent.load(Ordering::Relaxed) - before;
    let stale = overlapping.stats().stale_retries.load(Ordering::Relaxed);
    assert!(
        sent as f64 <= 1.1 * calls as f64 + 2.0,
        "{sent} tries for {calls} overlapping calls ({stale} stale retries)"
    );
}

#[tokio::test]
async fn with_the_upstream_killed_the_last_good_data_stays_and_the_breaker_recovers() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let env = [
        ("GTFS_RETRY_ATTEMPTS", "0"),
        ("GTFS_BREAKER_FAILURES", "2"),
        ("GTFS_BREAKER_OPEN", "0.2"),
    ];
    let app = spawn_loaded(sim_config(&sim.url(), "otp2", "", &env)).await;
    let good = feed(&feeds(&app).await, "caltrain").clone();
    sim.stop_listening().await;
    app.refresh_now().await;
    app.refresh_now().await;
    let instances: Value = app.get("/instances").await.json();
    assert_eq!(
        instances["instances"][0]["http"]["breaker"]["state"], "open",
        "{instances}"
    );
    let f = feed(&feeds(&app).await, "caltrain").clone();
    assert!(f["last_error"].is_string(), "{f}");
    assert_eq!(f["counts"], good["counts"], "last good data kept");
    let stats: Value = app.get("/memory-stats").await.json();
    assert_eq!(stats["instances"][0]["http"]["breaker"]["state"], "open");
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains("gtfs_fetch_otp_breaker_state{instance=\"sim\"} 1"),
        "{metrics}"
    );

    sim.resume_listening().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.refresh_now().await;
    let instances: Value = app.get("/instances").await.json();
    assert_eq!(
        instances["instances"][0]["http"]["breaker"]["state"], "closed",
        "{instances}"
    );
    assert_eq!(
        feed(&feeds(&app).await, "caltrain")["last_error"],
        Value::Null
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn refresh_endpoint_is_single_flight_and_knows_its_instances() {
    let sim = OtpSim::start(&["wmata"]).await;
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &zip_feeds(&["wmata"]), &[])).await;
    let res = Answer::send(app.client.post(app.url("/instances/nope/refresh"))).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.headers["content-type"], "application/problem+json");
    // Slow the download so the first refresh is still running when the second asks.
    sim.set_fault(Fault::Delay(Duration::from_millis(500)));
    let first: Value = app
        .client
        .post(app.url("/instances/sim/refresh"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second: Value = app
        .client
        .post(app.url("/instances/sim/refresh"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["refresh"], "started");
    assert_eq!(second["refresh"], "already_running");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn manual_refreshes_need_a_token_when_one_is_set_and_are_spaced() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[
            ("GTFS_OPS_TOKEN", "ops-secret"),
            ("GTFS_API_TOKEN", "api-secret"),
            ("GTFS_REFRESH_MIN_SPACING", "30"),
        ],
    ))
    .await;
    let post = |auth: &'static str| {
        let req = app.client.post(app.url("/instances/sim/refresh"));
        let req = if auth.is_empty() {
            req
        } else {
            req.header("authorization", auth)
        };
        Answer::send(req)
    };
    // A token is configured: a loopback client without it is refused too.
    for auth in ["", "Bearer wrong", "Basic b3BzLXNlY3JldA=="] {
        let res = post(auth).await;
        assert_eq!(res.status, 401, "{auth:?}");
        assert_eq!(res.headers["www-authenticate"], "Bearer");
        assert_eq!(res.headers["content-type"], "application/problem+json");
    }
    let zip_gets = sim.requests_for("/gtfs/caltrain.zip");
    let before = app.state.instances[0].status().refreshes;
    let res = post("Bearer ops-secret").await;
    assert_eq!(res.status, 202);
    for _ in 0..200 {
        if app.state.instances[0].status().refreshes > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Asked again once it is done, with either token: 429 and when to come back.
    for auth in ["Bearer ops-secret", "bearer api-secret"] {
        let res = post(auth).await;
        assert_eq!(res.status, 429, "{auth}");
        let wait: u64 = res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&wait), "Retry-After {wait}");
        assert_eq!(res.headers["content-type"], "application/problem+json");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sim.requests_for("/gtfs/caltrain.zip") - zip_gets,
        1,
        "one refresh reached the upstream"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_local_refresh_command_loads_feeds_reports_and_sets_its_exit_code() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gtfs.toml");
    let text = format!(
        "retry_attempts = 0\n[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"otp2\"\n{}",
        sim.url(),
        zip_feeds(&["bart"])
    );
    std::fs::write(&file, text).unwrap();
    let database_url = fresh_database().await;
    let run = |instance: Option<&str>| {
        let mut cmd = tokio::process::Command::new(crate::support::binary::bin());
        // In this process: no service runs here.
        cmd.args(["--config", file.to_str().unwrap(), "refresh", "--local"]);
        if let Some(name) = instance {
            cmd.args(["--instance", name]);
        }
        cmd.env("DATABASE_URL", &database_url)
            .env("RUST_LOG", "warn")
            .output()
    };
    let out = run(None).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sim/bart: updated, version "), "{stdout}");
    assert!(
        stdout.contains("sim/caltrain: updated, version "),
        "{stdout}"
    );

    // Recorded in the database the service uses.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM feed_fetch WHERE outcome = 'updated'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 2);

    sim.set_fault(Fault::Status(500));
    let out = run(Some("sim")).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": failed: "));

    // A usage error.
    let out = run(Some("nope")).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance named \"nope\""));
}

#[tokio::test]
async fn the_fetch_history_pages_newest_first_and_old_rows_expire() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain", "bart"]),
        &[],
    ))
    .await;
    let pool = &app.state.db.pool;
    let rows = async |id: &str| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM feed_fetch WHERE gtfs_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    // The start-up fetch is written once the database is ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rows("caltrain").await == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        app.refresh_now().await;
    }
    assert_eq!(rows("caltrain").await, 5);

    // Two at a time, newest first, until the last page.
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    for page in 0.. {
        assert!(page < 5, "more pages than rows");
        let res = app
            .get(&format!("/feeds/caltrain/fetches?limit=2&cursor={cursor}"))
            .await;
        assert_eq!(res.status, 200);
        let body: Value = res.json();
        let fetches = body["fetches"].as_array().unwrap();
        assert!(fetches.len() <= 2, "{body}");
        seen.extend(fetches.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.iter()
            .all(|f| f["gtfs_id"] == "caltrain" && f["instance"] == "sim")
    );
    let outcomes: Vec<&str> = seen
        .iter()
        .map(|f| f["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "unchanged",
            "unchanged",
            "unchanged",
            "unchanged",
            "updated"
        ],
        "newest first"
    );
    let started: Vec<&str> = seen
        .iter()
        .map(|f| f["started_at"].as_str().unwrap())
        .collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "{started:?}");
    assert_eq!(seen[4]["http_status"], 200);
    assert_eq!(seen[4]["version"].as_str().unwrap().len(), 64);
    assert!(seen[4]["bytes"].as_u64().unwrap() > 1000);

    // Errors: an unknown feed, another feed's cursor, a made-up one, a bad limit, an
    // unknown parameter.
    assert_eq!(app.get("/feeds/nope/fetches").await.status, 404);
    let first: Value = app.get("/feeds/caltrain/fetches?limit=1").await.json();
    let caltrain_cursor = first["next_cursor"].as_str().unwrap().to_owned();
    for bad in [
        format!("/feeds/bart/fetches?cursor={caltrain_cursor}"),
        "/feeds/caltrain/fetches?cursor=bm9wZQ".to_owned(),
        "/feeds/caltrain/fetches?limit=0".to_owned(),
        "/feeds/caltrain/fetches?limit=501".to_owned(),
        "/feeds/caltrain/fetches?page=2".to_owned(),
    ] {
        let res = app.get(&bad).await;
        assert_eq!(res.status, 400, "{bad}");
        assert_eq!(
            res.headers["content-type"], "application/problem+json",
            "{bad}"
        );
    }

    // Retention: rows older than the configured days go, the others stay.
    assert_eq!(
        app.state.config.feed_fetch_retention_days, 30,
        "the default"
    );
    sqlx::query(
        "INSERT INTO feed_fetch (instance, gtfs_id, started_at, outcome)
         SELECT 'sim', 'caltrain', now() - make_interval(days => d), 'failed'
         FROM generate_series(29, 40) AS d",
    )
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(rows("caltrain").await, 17);
    let deleted = gtfs_fetch::db::fetches::expire(&app.state.db, 30)
        .await
        .unwrap();
    assert_eq!(
        deleted, 11,
        "days 30 to 40 (day 30 ended a moment ago); 29 is kept"
    );
    assert_eq!(rows("caltrain").await, 6);
    app.stop().await.unwrap();
}
