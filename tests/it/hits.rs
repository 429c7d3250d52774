//! Route detail cache hits answered before the router (the server's front service,
//! issue 13): which requests it answers, and that its answers are the router's, status,
//! headers and bytes.
//!
//! The router still answers a hit whose path has a percent-encoded segment
//! (`/feeds/bart/routes/%30%31` is route `01`), so the two can be set side by side.

use gtfs_fetch::api::routes::{DETAIL_ROUTE, detail_hit};
use http::Method;
use http::request::Parts;

use crate::support::http::Answer;
use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, sim_config, spawn_loaded, zip_feeds};

const PLAIN: &str = "/feeds/bart/routes/01";
const ENCODED: &str = "/feeds/bart/routes/%30%31";

fn parts(method: Method, path: &str) -> Parts {
    http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .expect("a request")
        .into_parts()
        .0
}

/// An answer's headers, sorted, as a comparable text: `Date` and `Age` dropped (a second
/// may tick between two requests), `Server-Timing` reduced to its phase names.
fn comparable(answer: &Answer) -> Vec<String> {
    let mut out: Vec<String> = answer
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "age"))
        .map(|(name, value)| {
            let value = value.to_str().expect("ASCII");
            if name == "server-timing" {
                let phases: Vec<&str> = value
                    .split(", ")
                    .map(|p| p.split(';').next().unwrap_or(""))
                    .collect();
                format!("{name}: {}", phases.join(", "))
            } else {
                format!("{name}: {value}")
            }
        })
        .collect();
    out.sort();
    out
}

async fn requests_counted(app: &TestApp, status: u16) -> u64 {
    let text = app.get("/metrics").await.text();
    let series = format!(
        r#"gtfs_fetch_http_requests_total{{method="GET",route="{DETAIL_ROUTE}",status="{status}"}} "#
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

#[tokio::test]
async fn a_hit_answered_before_the_router_is_the_routers_answer() {
    let sim = OtpSim::start(&["bart"]).await;
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &zip_feeds(&["bart"]), &[])).await;
    let state = &app.state;

    // Nothing cached yet: the router builds it.
    assert!(
        detail_hit(state, &parts(Method::GET, PLAIN))
            .await
            .is_none()
    );
    let first = app.get(PLAIN).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-cache"], "MISS");
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    // Cached, but its compressed forms not made yet: the router makes them.
    let gzip = [("accept-encoding", "gzip")];
    let no_gzip_yet = http::Request::get(PLAIN).header("accept-encoding", "gzip");
    let no_gzip_yet = no_gzip_yet.body(()).unwrap().into_parts().0;
    assert!(detail_hit(state, &no_gzip_yet).await.is_none());
    assert!(
        detail_hit(state, &parts(Method::GET, PLAIN))
            .await
            .is_some()
    );
    assert_eq!(app.get_with(PLAIN, &gzip).await.headers["x-cache"], "HIT");
    assert!(detail_hit(state, &no_gzip_yet).await.is_some(), "made now");

    // What the front leaves to the router.
    for (method, path) in [
        (Method::GET, ENCODED),
        (Method::HEAD, PLAIN),
        (Method::GET, "/feeds/bart/routes/no-such-route"),
        (Method::GET, "/feeds/nope/routes/01"),
        (Method::GET, "/feeds/bart/routes/01/trips"),
        (Method::GET, "/feeds/bart/routes/"),
        (Method::GET, "/feeds//routes/01"),
    ] {
        let what = format!("{method} {path}");
        assert!(
            detail_hit(state, &parts(method, path)).await.is_none(),
            "{what}"
        );
    }

    // The same request both ways: the same answer.
    let weak_list = format!("\"other\", {}", etag.trim_start_matches("W/"));
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("accept-encoding", "gzip")],
        &[("accept-encoding", "gzip, deflate, br")],
        &[("accept-encoding", "br;q=0.5, gzip")],
        &[("accept-encoding", "identity;q=0, *;q=0")],
        &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
        &[("if-none-match", &weak_list)],
        &[("if-none-match", "*")],
        &[("if-none-match", "\"stale-tag\"")],
        &[("accept-encoding", "gzip"), ("accept-encoding", "br")],
    ];
    let before = (
        requests_counted(&app, 200).await,
        requests_counted(&app, 304).await,
    );
    for headers in cases {
        let mut sent = headers.to_vec();
        sent.push(("x-request-id", "same-for-both"));
        let fast = app.get_with(PLAIN, &sent).await;
        let routed = app.get_with(ENCODED, &sent).await;
        let what = format!("{headers:?}");
        assert_eq!(fast.status, routed.status, "{what}");
        assert_eq!(comparable(&fast), comparable(&routed), "{what}");
        assert_eq!(fast.body, routed.body, "{what}");
        assert_eq!(fast.headers["x-request-id"], "same-for-both", "{what}");
        if fast.status != 406 {
            assert_eq!(fast.headers["x-cache"], "HIT", "{what}");
            let age = |a: &Answer| a.headers["age"].to_str().unwrap().parse::<u64>().unwrap();
            assert!(age(&fast).abs_diff(age(&routed)) <= 1, "{what}");
        }
    }
    // Each pair counted twice under the route's template, as the router counts.
    let after = (
        requests_counted(&app, 200).await,
        requests_counted(&app, 304).await,
    );
    assert_eq!(after.0 - before.0, 2 * 6, "200s");
    assert_eq!(after.1 - before.1, 2 * 3, "304s");

    // A request id is made for a client that sends none, on the front's answers too.
    let made = app.get(PLAIN).await;
    let id = made.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    app.stop().await.unwrap();
}
