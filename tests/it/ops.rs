//! Ops endpoints through a real socket, on a real PostgreSQL.

use crate::support::http::Answer;
use crate::support::otp_sim::{Fault, OtpSim};
use crate::support::{
    SECRET_PASSWORD, TestApp, sim_config, spawn_app, spawn_app_with, spawn_fresh, spawn_loaded,
    zip_feeds,
};
use axum::Router;
use serde_json::Value;

#[tokio::test]
async fn healthz_answers_with_request_id_and_server_timing() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status, 200);
    assert!(res.headers["x-request-id"].to_str().unwrap().len() >= 32);
    let timing = res.headers["server-timing"].to_str().unwrap().to_owned();
    assert!(timing.contains("total;dur="), "{timing}");
    assert_eq!(res.json()["status"], "ok");

    // A client's own request id is kept and echoed.
    let res = Answer::send(
        app.client
            .get(app.url("/healthz"))
            .header("x-request-id", "abc-123"),
    )
    .await;
    assert_eq!(res.headers["x-request-id"], "abc-123");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_reports_the_database() {
    let app = spawn_app().await;
    let body: Value = app.get("/readyz").await.json();
    assert_eq!(body["checks"]["database"], "ok");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn config_shows_flat_keys_and_hides_the_database_password() {
    let app = spawn_app_with(
        &[
            ("GTFS_CONNECTION_LIMIT", "77"),
            ("GTFS_OPS_TOKEN", "tok-xyz"),
        ],
        Router::new(),
    )
    .await;
    let res = app.get("/config").await;
    assert_eq!(res.status, 200);
    let text = res.text();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["connection_limit"], 77);
    assert_eq!(body["db_max_connections"], 20);
    assert!(
        body["database_url"]
            .as_str()
            .unwrap()
            .starts_with("postgres://")
    );
    assert!(!text.contains(SECRET_PASSWORD), "password leaked: {text}");
    assert!(!text.contains("tok-xyz"), "token leaked: {text}");
    assert_eq!(body["ops_token"], "***");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn memory_stats_shows_process_allocator_and_a_prewarmed_pool() {
    let app = spawn_app_with(&[("WAYBILLS_DB_MIN_CONNECTIONS", "4")], Router::new()).await;
    let body: Value = app.get("/memory-stats").await.json();
    assert!(
        body["process"]["rss_bytes"].as_u64().unwrap() > 1_000_000,
        "{body}"
    );
    assert!(
        body["allocator"]["allocated_bytes"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert!(
        body["allocator"]["resident_bytes"].as_u64().unwrap() > 0,
        "{body}"
    );
    let pool = &body["database_pool"];
    assert!(pool["size"].as_u64().unwrap() >= 4, "pre-warmed: {pool}");
    assert!(pool["idle"].as_u64().is_some());
    assert_eq!(pool["max"], 20);
    app.stop().await.unwrap();
}

/// A feed built from a zip says what its build held at its peak: more than the snapshot
/// it keeps (the raw tables were there too); the process says the most it ever held.
#[tokio::test]
async fn memory_stats_show_the_peak_of_each_feed_build() {
    let sim = OtpSim::start(&["bart"]).await;
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &zip_feeds(&["bart"]), &[])).await;
    let body: Value = app.get("/memory-stats").await.json();
    let feed = &body["feeds"][0];
    let (peak, kept) = (
        feed["build_peak_bytes"].as_u64().unwrap_or(0),
        feed["approx_bytes"].as_u64().unwrap(),
    );
    assert!(
        kept > 0 && peak > kept,
        "build peak {peak}, snapshot {kept}: {body}"
    );
    let process = &body["process"];
    assert!(
        process["peak_rss_bytes"].as_u64().unwrap() >= process["rss_bytes"].as_u64().unwrap(),
        "the peak is the most ever held: {body}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.get("/healthz").await;
    }
    app.get("/no/such/thing").await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status, 200);
    let text = res.text();
    assert!(
        text.contains(
            r#"gtfs_fetch_http_requests_total{method="GET",route="/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        text.contains("gtfs_fetch_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("gtfs_fetch_db_pool_connections"), "{text}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn errors_are_problem_json() {
    let app = spawn_app().await;
    let res = app.get("/no/such/thing").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.headers["content-type"], "application/problem+json");
    let body: Value = res.json();
    assert_eq!(body["status"], 404);
    assert_eq!(body["title"], "Not Found");
    assert!(body["detail"].is_string());
    let res = Answer::send(app.client.post(app.url("/healthz"))).await;
    assert_eq!(res.status, 405);
    assert_eq!(res.headers["content-type"], "application/problem+json");
    app.stop().await.unwrap();
}

/// The access rule wired into the router: a non-loopback peer (set as the server would,
/// through `ConnectInfo`) needs the ops token; `/healthz` stays open.
#[tokio::test]
async fn non_loopback_clients_need_the_ops_token() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    let app = spawn_app_with(&[("GTFS_OPS_TOKEN", "ops-tok")], Router::new()).await;
    let router = gtfs_fetch::api::router(app.state.clone());
    let remote: std::net::SocketAddr = "10.20.30.40:5555".parse().unwrap();
    let call = |path: &str, auth: Option<&str>| {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(remote));
        if let Some(auth) = auth {
            req.headers_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        router.clone().oneshot(req)
    };
    for path in ["/config", "/memory-stats", "/metrics", "/readyz"] {
        let res = call(path, None).await.unwrap();
        assert_eq!(res.status(), 403, "{path} without a token");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(
            call(path, Some("Bearer wrong")).await.unwrap().status(),
            403,
            "{path}"
        );
        assert_eq!(
            call(path, Some("Bearer ops-tok")).await.unwrap().status(),
            200,
            "{path} with the token"
        );
    }
    assert_eq!(call("/healthz", None).await.unwrap().status(), 200);
    app.stop().await.unwrap();
}

/// `/readyz`'s answer once the first refresh has finished and the database is ready.
async fn instance_check(app: &TestApp) -> (u16, Value) {
    app.wait_refreshes(1).await;
    for _ in 0..300 {
        let res = app.get("/readyz").await;
        let status = res.status;
        let body: Value = res.json();
        if body["checks"]["database"] == "ok" {
            return (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the database did not become ready");
}

#[tokio::test]
async fn readiness_needs_every_instance_to_serve_data_or_be_allowed_empty() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_fault(Fault::Status(503));
    let env = [("GTFS_RETRY_ATTEMPTS", "0")];
    let app = spawn_fresh(sim_config(&sim.url(), "otp2", "", &env)).await;
    // Every try failed and nothing is served: not ready, and the body says why.
    let (status, body) = instance_check(&app).await;
    assert_eq!(status, 503, "{body}");
    let check = body["checks"]["instance:sim"].as_str().unwrap();
    assert!(check.starts_with("no feed served: "), "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("instance sim"),
        "{body}"
    );
    // /metrics says the same, for the readiness alert.
    let ready = async || sample(&app.get("/metrics").await.text(), "gtfs_fetch_ready");
    assert_eq!(ready().await, Some(0.0));

    // OTP answers: ready, and the check counts what is served.
    sim.clear_fault();
    app.refresh_now().await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status, 200);
    let body: Value = res.json();
    assert_eq!(
        body["checks"]["instance:sim"], "ok: 1 feed served",
        "{body}"
    );
    assert_eq!(ready().await, Some(1.0));

    // OTP fails again: the last good data is still served, so still ready.
    sim.set_fault(Fault::Status(503));
    app.refresh_now().await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status, 200);
    let body: Value = res.json();
    assert_eq!(
        body["checks"]["instance:sim"], "ok: 1 feed served",
        "{body}"
    );
    app.stop().await.unwrap();

    // An instance allowed to be empty does not hold readiness back.
    let app = spawn_fresh(sim_config(&sim.url(), "otp2", "allow_empty = true", &env)).await;
    let (status, body) = instance_check(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["checks"]["instance:sim"], "ok: no feed served (allow_empty)",
        "{body}"
    );
    app.stop().await.unwrap();
}

/// The value of the sample `series` (name and labels, as written) in a `/metrics` text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

/// Runs `promtool check metrics` on `text`: required in CI, skipped (said so) elsewhere
/// when promtool is not installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}); .ci/run installs it");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_say_what_operators_alert_on_and_pass_promtool() {
    let t0 = jiff::Timestamp::now().as_second() as f64;
    let sim = OtpSim::start(&["caltrain"]).await;
    let env = [("GTFS_RETRY_ATTEMPTS", "0")];
    let instance = format!("refresh_interval = 1234\n{}", zip_feeds(&["caltrain"]));
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &instance, &env)).await;
    let metrics = async || app.get("/metrics").await.text();
    let text = metrics().await;
    let build = format!(
        "gtfs_fetch_build_info{{version=\"{}\",git_sha=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        gtfs_fetch::build::GIT_SHA
    );
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    let feed = r#"{feed="caltrain",instance="sim"}"#;
    let series = |name: &str| format!("gtfs_fetch_{name}{feed}");
    let success = sample(&text, &series("feed_last_success_timestamp_seconds")).unwrap();
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        t0 - 1.0 <= success && success <= now + 1.0,
        "{success} in [{t0}, {now}]"
    );
    let age = sample(&text, &series("feed_data_age_seconds")).unwrap();
    assert!((0.0..=now - t0 + 1.0).contains(&age), "{age}");
    assert_eq!(
        sample(&text, &series("feed_last_refresh_failed")),
        Some(0.0)
    );
    // The instance's refresh_interval, labelled as the feed, for the staleness alert.
    assert_eq!(
        sample(&text, &series("feed_refresh_interval_seconds")),
        Some(1234.0),
        "{text}"
    );

    // The zip fails: the feed says so, its last success stays, its data ages.
    sim.set_fault(Fault::Status(503));
    app.refresh_now().await;
    let text = metrics().await;
    assert_eq!(
        sample(&text, &series("feed_last_refresh_failed")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &series("feed_last_success_timestamp_seconds")),
        Some(success)
    );
    assert!(sample(&text, &series("feed_data_age_seconds")).unwrap() >= age);
    sim.clear_fault();

    // Waybill writes by status, whoever answered; database time by operation.
    let res = app.post_waybill(&serde_json::json!({})).await;
    assert_eq!(res.status, 422);
    assert_eq!(app.get("/waybills").await.status, 200);
    let text = metrics().await;
    assert_eq!(
        sample(
            &text,
            r#"gtfs_fetch_waybill_writes_total{op="create",status="422"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"gtfs_fetch_db_duration_seconds_count{op="list"}"#),
        Some(1.0),
        "{text}"
    );
    promtool_check(&text);
    // Prometheus asks for OpenMetrics, and gets it.
    let res = Answer::send(app.client.get(app.url("/metrics")).header(
        "accept",
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
    ))
    .await;
    assert_eq!(
        res.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = res.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE gtfs_fetch_waybill_writes counter"),
        "{om}"
    );
    app.stop().await.unwrap();
}
