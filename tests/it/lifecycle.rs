//! Start, stop and restart: readiness follows the database, shutdown drains, the embedded
//! database keeps its data across restarts.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use gtfs_fetch::app::App;
use gtfs_fetch::db::embedded::{DATABASE, EmbeddedPostgres};

use crate::support::http::Answer;
use crate::support::{config_from, spawn_app_with, spawn_config};

#[tokio::test]
async fn readiness_follows_the_database_down_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    let url = pg.url(DATABASE);
    let config = config_from(&[("DATABASE_URL", &url), ("GTFS_LISTEN", "127.0.0.1:0")]);
    let app = spawn_config(config, Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(30)).await;

    pg.stop().await.unwrap();
    let res = app.get("/readyz").await;
    assert_eq!(res.status, 503);
    assert!(res.headers.contains_key("retry-after"));
    let body: serde_json::Value = res.json();
    assert_ne!(body["checks"]["database"], "ok", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert_eq!(
        app.get("/healthz").await.status,
        200,
        "alive while the database is down"
    );

    pg.start_server().await.unwrap();
    app.wait_ready_status(200, Duration::from_secs(30)).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_waits_for_a_database_that_comes_up_later() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    pg.stop().await.unwrap();
    let url = pg.url(DATABASE);
    let config = config_from(&[("DATABASE_URL", &url), ("GTFS_LISTEN", "127.0.0.1:0")]);
    let app = spawn_config(config, Router::new()).await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status, 503);
    pg.start_server().await.unwrap();
    app.wait_ready_status(200, Duration::from_secs(30)).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_turns_unready_then_finishes_requests_in_flight() {
    let slow = Router::new().route(
        "/test/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "done"
        }),
    );
    let mut app = spawn_app_with(&[("GTFS_SHUTDOWN_DRAIN", "0.5")], slow).await;
    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/test/slow");
        async move { client.get(url).send().await?.text().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // During the drain the listener is open and readiness says 503.
    let fresh = reqwest::Client::new();
    let res = Answer::send(fresh.get(app.url("/readyz"))).await;
    assert_eq!(res.status, 503);
    let body: serde_json::Value = res.json();
    assert_eq!(body["checks"]["shutdown"], "shutting down");

    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        "done",
        "the request in flight finished"
    );
    let addr = app.addr;
    app.stop().await.expect("clean exit");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn embedded_database_keeps_data_across_restarts_and_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let vars = [
        ("GTFS_DATA_DIR", data_dir.as_str()),
        ("GTFS_LISTEN", "127.0.0.1:0"),
    ];

    let app = spawn_config(config_from(&vars), Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(60)).await;
    sqlx::query(
        "INSERT INTO feed_fetch (instance, started_at, outcome) VALUES ('kept', now(), 'failed')",
    )
    .execute(&app.state.db.pool)
    .await
    .unwrap();

    // A second service on the same data_dir is refused while the first runs.
    let second = App::start(config_from(&vars), true).await;
    let err = format!("{:#}", second.expect_err("the data dir is locked"));
    assert!(err.contains("in use by another gtfs-fetch"), "{err}");

    app.stop().await.unwrap();

    let app = spawn_config(config_from(&vars), Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(60)).await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM feed_fetch WHERE instance = 'kept'")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();
    assert_eq!(kept, 1);
    app.stop().await.unwrap();
}

#[test]
fn migrate_and_serve_commands_work_end_to_end() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let bin = crate::support::binary::bin();
    let out = Command::new(&bin)
        .arg("migrate")
        .env("GTFS_DATA_DIR", data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("GTFS_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // serve on a free port, answer /healthz, exit 0 on SIGTERM.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&bin)
        .env("GTFS_DATA_DIR", data_dir)
        .env("GTFS_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("DATABASE_URL")
        .env_remove("GTFS_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ready = rt.block_on(async {
        for _ in 0..300 {
            if let Ok(res) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
                && res.status() == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(ready, "serve became ready");
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    // The embedded server was stopped with the service: the data dir is free again.
    assert!(
        !dir.path().join("pg/postmaster.pid").exists(),
        "embedded PostgreSQL stopped"
    );
}

/// The first refresh of an otp2 instance on the simulator has happened; a route detail is
/// read through to OTP (no prefetch).
fn otp2_instance(sim: &crate::support::otp_sim::OtpSim) -> String {
    format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"otp2\"\n",
        sim.url()
    )
}

#[tokio::test]
async fn a_second_signal_abandons_requests_in_flight_at_once_and_exits_1() {
    use crate::support::binary::Served;
    use crate::support::otp_sim::{Fault, OtpSim};
    let sim = OtpSim::start(&["bart"]).await;
    let db = crate::support::fresh_database().await;
    // Without the second signal, the drain would wait two minutes for the request.
    let mut served = Served::start(
        &otp2_instance(&sim),
        &[
            ("DATABASE_URL", db.as_str()),
            ("GTFS_SHUTDOWN_TIMEOUT", "120"),
            ("GTFS_HTTP_REQUEST_TIMEOUT", "120"),
        ],
    );
    served.wait_ready(Duration::from_secs(60)).await;
    let route = crate::support::fixture_csv("bart", "routes.txt")[0]["route_id"].clone();
    sim.set_fault(Fault::Hang);
    let before = sim.requests();
    let in_flight = tokio::spawn(reqwest::get(
        served.url(&format!("/feeds/bart/routes/{route}")),
    ));
    // In flight once OTP has been asked.
    for _ in 0..200 {
        if sim.requests() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(sim.requests() > before, "the read-through reached OTP");

    served.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    served.signal("TERM");
    let status = served.wait_exit(Duration::from_secs(20)).await;
    let logs = served.stderr();
    let status = status.unwrap_or_else(|| panic!("still draining after a second SIGTERM:\n{logs}"));
    assert_eq!(status.code(), Some(1), "requests were abandoned:\n{logs}");
    assert!(logs.contains("abandoned"), "{logs}");
    assert!(
        in_flight.await.unwrap().is_err(),
        "the abandoned request got no answer"
    );
}

#[tokio::test]
async fn a_second_signal_during_the_drain_exits_0_when_nothing_is_in_flight() {
    use crate::support::binary::Served;
    let db = crate::support::fresh_database().await;
    let mut served = Served::start(
        "",
        &[
            ("DATABASE_URL", db.as_str()),
            ("GTFS_SHUTDOWN_DRAIN", "120"),
        ],
    );
    served.wait_ready(Duration::from_secs(60)).await;
    served.signal("INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        reqwest::get(served.url("/readyz")).await.unwrap().status(),
        503,
        "draining"
    );
    served.signal("INT");
    let status = served.wait_exit(Duration::from_secs(20)).await;
    let logs = served.stderr();
    let status = status.unwrap_or_else(|| panic!("still draining after a second SIGINT:\n{logs}"));
    assert_eq!(status.code(), Some(0), "nothing was abandoned:\n{logs}");
}

#[tokio::test]
async fn a_clean_start_and_stop_log_no_warning_no_error_no_notice() {
    use crate::support::binary::{Served, log_lines_at};
    // A fresh database: the first start migrates it, the second finds it migrated (and
    // PostgreSQL sends "relation ... already exists, skipping" notices).
    let db = crate::support::fresh_database().await;
    for run in ["first", "second"] {
        let mut served = Served::start("", &[("DATABASE_URL", db.as_str())]);
        served.wait_ready(Duration::from_secs(60)).await;
        // Give the background tasks (key expiry) their first go.
        tokio::time::sleep(Duration::from_millis(500)).await;
        served.signal("TERM");
        let status = served.wait_exit(Duration::from_secs(30)).await;
        let logs = served.stderr();
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{run} run:\n{logs}");
        assert!(
            logs.contains("gtfs-fetch listening"),
            "JSON logs on a pipe:\n{logs}"
        );
        for level in ["WARN", "ERROR"] {
            assert_eq!(
                log_lines_at(&logs, level),
                Vec::<String>::new(),
                "{run} run, {level}:\n{logs}"
            );
        }
        assert!(!logs.contains("already exists"), "{run} run:\n{logs}");
    }
}

#[tokio::test]
async fn stopping_ends_every_background_task_before_it_returns() {
    use crate::support::otp_sim::{Fault, OtpSim};
    use crate::support::{sim_config, spawn_loaded, zip_feeds};
    let sim = OtpSim::start(&["sample-feed"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "otp2",
        &zip_feeds(&["sample-feed"]),
        &[],
    ))
    .await;
    // A refresh hangs on OTP while the service stops.
    sim.set_fault(Fault::Hang);
    let res = Answer::send(app.client.post(app.url("/instances/sim/refresh"))).await;
    assert_eq!(res.status, 202);
    for _ in 0..100 {
        if app.state.instances[0].is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        app.state.instances[0].is_running(),
        "the refresh is in flight"
    );
    let state = app.state.clone();
    app.stop().await.unwrap();
    assert_eq!(
        state.handles(),
        1,
        "the scheduler, the expiry tasks and the migrate task have all let go"
    );
}
