//! The operator console at `/ui`, through a real socket: the page and every file it links
//! come from this service with their headers (content type, cache, security policy),
//! nothing points at another site, the ids the browser test reads are there, and the ops
//! guard keeps non-loopback clients without the token out. What the page shows in a
//! browser is checked by `scripts/browser-test.sh`.

use axum::Router;
use serde_json::Value;

use crate::support::spawn_app_with;

/// The `href="..."` and `src="..."` values of an HTML page.
fn links(html: &str) -> Vec<String> {
    ["href=\"", "src=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|rest| rest.split_once('"').map(|(link, _)| link.to_owned()))
        .collect()
}

fn assert_no_other_site(what: &str, text: &str) {
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "{what} refers to another site: {text}"
    );
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_its_policy() {
    let app = spawn_app_with(&[("GTFS_OPS_TOKEN", "ops-tok")], Router::new()).await;
    let page = app.get("/ui").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers["cache-control"], "no-cache");
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self';"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    let html = page.text();
    assert_no_other_site("/ui", &html);
    assert!(html.contains("name=\"viewport\""), "readable on a phone");
    // The figures the browser test reads.
    for id in [
        "instances",
        "feeds",
        "cache-entries",
        "cache-bytes",
        "cache-hit-ratio",
        "pool-size",
        "pool-max",
        "waybills-date",
        "waybills-issued",
        "waybills-in_progress",
        "waybills-completed",
        "waybills-cancelled",
        "instance-breaker",
        "instance-connections",
        "instance-requests",
        "instance-reuse",
        "instance-last-refresh",
        "instance-last-error",
        "feed-version",
        "feed-age",
        "feed-counts",
        "feed-fetches",
    ] {
        assert!(html.contains(&format!("data-testid=\"{id}\"")), "{id}");
    }

    let links = links(&html);
    assert_eq!(links.len(), 3, "{links:?}");
    let mut script = None;
    for link in &links {
        assert!(link.starts_with("/ui/"), "{link}: not served from here");
        let file = app.get(link).await;
        assert_eq!(file.status, 200, "{link}");
        let expected = match link.rsplit_once('.').unwrap().1 {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "png" => "image/png",
            other => panic!("{link}: unexpected kind {other}"),
        };
        assert_eq!(file.headers["content-type"], expected, "{link}");
        assert_eq!(file.headers["cache-control"], "no-cache", "{link}");
        assert!(
            file.headers.contains_key("content-security-policy"),
            "{link}"
        );
        assert!(file.body.len() > 100, "{link}: {} bytes", file.body.len());
        if expected.starts_with("text/") {
            assert_no_other_site(link, &file.text());
        }
        if link.ends_with(".js") {
            script = Some(file.text());
        }
    }
    // The script reads this service's endpoints, by path (so from this origin only).
    let script = script.expect("the page loads a script");
    for endpoint in [
        "'/instances'",
        "'/feeds'",
        "'/memory-stats'",
        "`/waybills?",
        "`/feeds/",
    ] {
        assert!(script.contains(endpoint), "{endpoint}");
    }

    // Anything else under /ui is a documented 404, problem+json.
    for missing in ["/ui/nope.js", "/ui/index.html", "/ui/..%2FCargo.toml"] {
        let answer = app.get(missing).await;
        assert_eq!(answer.status, 404, "{missing}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        let body: Value = answer.json();
        assert_eq!(body["detail"], "no such file of the console", "{missing}");
    }
    app.stop().await.unwrap();
}

/// The ops guard: a non-loopback client needs the ops token, for the page and its files;
/// with no token configured, only loopback clients get it.
#[tokio::test]
async fn the_console_is_behind_the_ops_guard() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    let remote: std::net::SocketAddr = "10.20.30.40:5555".parse().unwrap();
    let loopback: std::net::SocketAddr = "127.0.0.1:5555".parse().unwrap();
    for token in [Some("ops-tok"), None] {
        let vars: Vec<(&str, &str)> = token.map(|t| ("GTFS_OPS_TOKEN", t)).into_iter().collect();
        let app = spawn_app_with(&vars, Router::new()).await;
        let router = gtfs_fetch::api::router(app.state.clone());
        let call = |path: &str, from, auth: Option<&str>| {
            let mut req = Request::get(path).body(Body::empty()).unwrap();
            req.extensions_mut()
                .insert(ConnectInfo::<std::net::SocketAddr>(from));
            if let Some(auth) = auth {
                req.headers_mut()
                    .insert("authorization", auth.parse().unwrap());
            }
            router.clone().oneshot(req)
        };
        for path in ["/ui", "/ui/console.js", "/ui/console.css", "/ui/nope.js"] {
            let res = call(path, remote, None).await.unwrap();
            assert_eq!(res.status(), 403, "{path} without a token ({token:?})");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
            let wrong = call(path, remote, Some("Bearer wrong")).await.unwrap();
            assert_eq!(wrong.status(), 403, "{path} ({token:?})");
            let expected = if path.ends_with("nope.js") { 404 } else { 200 };
            let with_token = call(path, remote, Some("Bearer ops-tok")).await.unwrap();
            let with_token_expected = if token.is_some() { expected } else { 403 };
            assert_eq!(
                with_token.status(),
                with_token_expected,
                "{path} ({token:?})"
            );
            let local = call(path, loopback, None).await.unwrap();
            assert_eq!(local.status(), expected, "{path} from loopback ({token:?})");
        }
        app.stop().await.unwrap();
    }
}
