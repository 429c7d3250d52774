//! The route cache through the API, against the OTP simulator: single flight on misses,
//! stale-if-error, and memory accounting.

use std::time::Duration;

use axum::Router;
use gtfs_fetch::config::Config;
use serde_json::Value;

use crate::support::otp_sim::{Fault, OtpSim};
use crate::support::{TestApp, fixture_csv, fresh_database, spawn_config};

/// The service over one otp2 instance on the simulator, without prefetching: route
/// details are read through to OTP.
async fn read_through_app(sim: &OtpSim, env: &[(&str, &str)]) -> TestApp {
    let file = format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"otp2\"\n",
        sim.url()
    );
    let url = fresh_database().await;
    let mut vars: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), url),
        ("GTFS_LISTEN".into(), "127.0.0.1:0".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::parse(Some(("test.toml", &file)), |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    let app = spawn_config(config, Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(60)).await;
    app
}

fn first_route(feed: &str) -> String {
    fixture_csv(feed, "routes.txt")[0]["route_id"].clone()
}

#[tokio::test]
async fn a_thousand_concurrent_misses_make_one_upstream_call() {
    let sim = OtpSim::start(&["bart"]).await;
    let app = read_through_app(&sim, &[]).await;
    let route = first_route("bart");
    let path = format!("/feeds/bart/routes/{route}");
    let before = sim.requests_for("Route");
    // Slow OTP down so that all requests wait on the same miss.
    sim.set_fault(Fault::Delay(Duration::from_millis(300)));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let requests: Vec<_> = (0..1000)
        .map(|_| {
            let (client, url) = (client.clone(), app.url(&path));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap(), 200);
    }
    assert_eq!(
        sim.requests_for("Route") - before,
        1,
        "one upstream call for 1000 misses"
    );
    sim.clear_fault();
    let res = app.get(&path).await;
    assert_eq!(res.headers["x-cache"], "HIT");
    let stats: Value = app.get("/memory-stats").await.json();
    let cache = &stats["route_cache"];
    assert_eq!(cache["entries"], 1, "{cache}");
    assert!(cache["hits"].as_u64().unwrap() >= 1, "{cache}");
    assert!(cache["weighted_bytes"].as_u64().unwrap() > 100, "{cache}");
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains("gtfs_fetch_route_cache_entries 1"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn with_otp_down_cached_routes_are_served_stale_and_others_get_503() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = read_through_app(
        &sim,
        &[("GTFS_CACHE_TTL", "0.3"), ("GTFS_RETRY_ATTEMPTS", "0")],
    )
    .await;
    let routes = fixture_csv("caltrain", "routes.txt");
    let (cached, never) = (routes[0]["route_id"].clone(), routes[1]["route_id"].clone());
    let res = app.get(&format!("/feeds/caltrain/routes/{cached}")).await;
    assert_eq!(res.headers["x-cache"], "MISS");
    assert!(
        res.headers["server-timing"]
            .to_str()
            .unwrap()
            .contains("otp;dur=")
    );
    let etag = res.headers["etag"].clone();
    let body = res.body.clone();

    sim.stop_listening().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        let res = app.get(&format!("/feeds/caltrain/routes/{cached}")).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.headers["x-cache"], "STALE");
        assert!(res.headers["age"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(res.headers["etag"], etag);
        assert_eq!(res.body.clone(), body, "the last good bytes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = app.get(&format!("/feeds/caltrain/routes/{never}")).await;
    assert_eq!(res.status, 503);
    assert!(res.headers.contains_key("retry-after"));
    assert_eq!(res.headers["content-type"], "application/problem+json");

    // Back up: the next background refresh makes it fresh again.
    sim.resume_listening().await;
    let mut fresh = false;
    for _ in 0..50 {
        let res = app.get(&format!("/feeds/caltrain/routes/{cached}")).await;
        if res.headers["x-cache"] == "HIT" {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fresh, "revalidated once OTP is back");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_of_an_otp_feed_are_404_without_asking_otp() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = read_through_app(&sim, &[]).await;
    let before = sim.requests_for("Route");
    let res = app.get("/feeds/caltrain/routes/no-such-route").await;
    assert_eq!(res.status, 404);
    assert_eq!(sim.requests_for("Route"), before);
    let res = app
        .get("/feeds/caltrain/routes/x/trips?date=2018-06-01")
        .await;
    assert_eq!(res.status, 501, "trips need a zip");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_malformed_answer_is_not_retried() {
    let sim = OtpSim::start(&["bart"]).await;
    let app = read_through_app(&sim, &[("GTFS_RETRY_DELAY", "0.01")]).await;
    let path = format!("/feeds/bart/routes/{}", first_route("bart"));
    let failures = |v: &Value| v["instances"][0]["http"]["failures"].as_u64().unwrap();
    let failed_before = failures(&app.get("/instances").await.json());
    let before = sim.requests_for("Route");
    sim.set_fault(Fault::Garbage);
    let res = app.get(&path).await;
    assert_eq!(res.status, 503);
    assert_eq!(
        sim.requests_for("Route") - before,
        1,
        "a 200 that cannot be parsed is asked once"
    );
    // It counted as a failure of the instance.
    let instances: Value = app.get("/instances").await.json();
    assert_eq!(failures(&instances), failed_before + 1, "{instances}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_read_through_waits_read_deadline_at_most() {
    let sim = OtpSim::start(&["bart"]).await;
    // Each try may take 30 s, with two retries: without a deadline, a minute and more.
    let app = read_through_app(
        &sim,
        &[
            ("GTFS_READ_DEADLINE", "0.5"),
            ("GTFS_HTTP_REQUEST_TIMEOUT", "30"),
            ("GTFS_RETRY_ATTEMPTS", "2"),
        ],
    )
    .await;
    let path = format!("/feeds/bart/routes/{}", first_route("bart"));
    sim.set_fault(Fault::Hang);
    let started = std::time::Instant::now();
    let res = app.get(&path).await;
    let waited = started.elapsed();
    assert_eq!(res.status, 503);
    assert!(res.headers.contains_key("retry-after"));
    let body: Value = res.json();
    assert!(
        body["detail"].as_str().unwrap().contains("within 500ms"),
        "{body}"
    );
    // Generous bound: the point is "not 30 s times three".
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    sim.clear_fault();
    app.stop().await.unwrap();
}
