//! A client request that reads through to OTP passes on its `x-request-id` and a W3C
//! `traceparent`, as the OTP simulator records them; the scheduler's own calls carry
//! neither.

use std::time::Duration;

use axum::Router;
use gtfs_fetch::config::Config;
use gtfs_fetch::otp::trace::parse_traceparent;
use http::HeaderMap;

use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, fixture_csv, fresh_database, spawn_config};

const CLIENT_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The service over one instance of the simulator speaking `api`, without prefetching:
/// route details are read through.
async fn read_through_app(sim: &OtpSim, api: &str) -> TestApp {
    let file = format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{}\"\napi = \"{api}\"\n",
        sim.url()
    );
    let db = fresh_database().await;
    let config = Config::parse(Some(("test.toml", &file)), |k| match k {
        "DATABASE_URL" => Some(db.clone()),
        "GTFS_LISTEN" => Some("127.0.0.1:0".into()),
        _ => None,
    })
    .unwrap();
    let app = spawn_config(config, Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(60)).await;
    app
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// The requests OTP received since `before` (an index into [`OtpSim::received`]).
fn since(sim: &OtpSim, before: usize) -> Vec<(String, HeaderMap)> {
    sim.received().split_off(before)
}

/// Reads `route` through with the given request headers; what OTP received for it.
async fn read_through(
    app: &TestApp,
    sim: &OtpSim,
    feed: &str,
    route: &str,
    headers: &[(&str, &str)],
) -> (String, Vec<(String, HeaderMap)>) {
    let before = sim.received().len();
    let res = app
        .get_with(&format!("/feeds/{feed}/routes/{route}"), headers)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-cache"), Some("MISS"));
    let id = res.header("x-request-id").unwrap().to_owned();
    let got = since(sim, before);
    assert!(!got.is_empty(), "OTP was asked");
    (id, got)
}

#[tokio::test]
async fn a_read_through_passes_the_request_id_and_trace_to_otp2() {
    let sim = OtpSim::start(&["bart"]).await;
    let app = read_through_app(&sim, "otp2").await;
    // What the refresh sent: neither header.
    for (key, headers) in sim.received() {
        assert_eq!(header(&headers, "x-request-id"), None, "{key}");
        assert_eq!(header(&headers, "traceparent"), None, "{key}");
    }
    let routes = fixture_csv("bart", "routes.txt");
    let route = |i: usize| routes[i]["route_id"].clone();

    // The client's id and trace: the same id, the same trace with a new parent.
    let (id, got) = read_through(
        &app,
        &sim,
        "bart",
        &route(0),
        &[
            ("x-request-id", "dispatch-42"),
            ("traceparent", CLIENT_TRACE),
        ],
    )
    .await;
    assert_eq!(id, "dispatch-42");
    let (key, headers) = &got[0];
    assert_eq!(key, "Route");
    assert_eq!(header(headers, "x-request-id"), Some("dispatch-42"));
    let sent = header(headers, "traceparent").expect("a traceparent");
    assert_eq!(
        parse_traceparent(sent),
        Some(("0af7651916cd43dd8448eb211c80319c", "01")),
        "{sent}"
    );
    assert_ne!(&sent[36..52], "b7ad6b7169203331", "a span of ours: {sent}");

    // Neither: the id made for the request (the one answered), and a new trace.
    let (id, got) = read_through(&app, &sim, "bart", &route(1), &[]).await;
    let headers = &got[0].1;
    assert_eq!(header(headers, "x-request-id"), Some(id.as_str()));
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let sent = header(headers, "traceparent").expect("a traceparent");
    let (trace_id, flags) = parse_traceparent(sent).expect("valid");
    assert_eq!(flags, "00");
    assert_ne!(trace_id, "0af7651916cd43dd8448eb211c80319c");

    // An invalid traceparent is not passed on: a new trace instead.
    let (_, got) = read_through(
        &app,
        &sim,
        "bart",
        &route(2),
        &[("traceparent", "00-not-a-trace")],
    )
    .await;
    let sent = header(&got[0].1, "traceparent").expect("a traceparent");
    assert!(parse_traceparent(sent).is_some(), "{sent}");

    // A hit asks OTP nothing.
    let before = sim.received().len();
    let res = app.get(&format!("/feeds/bart/routes/{}", route(0))).await;
    assert_eq!(res.header("x-cache"), Some("HIT"));
    assert_eq!(sim.received().len(), before);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_request_of_an_otp1_read_through_carries_them() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = read_through_app(&sim, "otp1").await;
    let route = fixture_csv("caltrain", "routes.txt")[0]["route_id"].clone();
    let (_, got) = read_through(
        &app,
        &sim,
        "caltrain",
        &route,
        &[("x-request-id", "r-1"), ("traceparent", CLIENT_TRACE)],
    )
    .await;
    // The route, its pattern list, each pattern: one trace, one span per request.
    assert!(
        got.len() >= 3,
        "{:?}",
        got.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let mut parents = std::collections::HashSet::new();
    for (key, headers) in &got {
        assert_eq!(header(headers, "x-request-id"), Some("r-1"), "{key}");
        let sent = header(headers, "traceparent").unwrap();
        assert_eq!(
            parse_traceparent(sent).map(|(t, _)| t),
            Some("0af7651916cd43dd8448eb211c80319c"),
            "{key}"
        );
        parents.insert(sent[36..52].to_owned());
    }
    assert_eq!(parents.len(), got.len(), "a new parent id per request");
    app.stop().await.unwrap();
}
