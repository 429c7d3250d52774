//! CORS: none by default; with allowed origins, preflights answered and answers readable
//! by scripts of those origins only; origins checked when the configuration is read.

use gtfs_fetch::config::Config;
use reqwest::Method;
use serde_json::json;

use crate::support::http::Answer;
use crate::support::{TestApp, spawn_app, spawn_app_with, spawn_loaded};

const ALLOWED: &str = "https://dispatch.example";
const OTHER: &str = "https://evil.example";

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str, headers: &str) -> Answer {
    Answer::send(
        app.request(Method::OPTIONS, path)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers),
    )
    .await
}

fn cors_headers(a: &Answer) -> Vec<String> {
    a.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

/// The comma-separated values of header `name`, lower case.
fn list(a: &Answer, name: &str) -> Vec<String> {
    a.headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

#[tokio::test]
async fn without_allowed_origins_there_are_no_cors_headers() {
    let app = spawn_app().await;
    let get = app.get_with("/healthz", &[("origin", ALLOWED)]).await;
    assert_eq!(get.status, 200);
    assert_eq!(cors_headers(&get), Vec::<String>::new());
    assert!(!list(&get, "vary").contains(&"origin".to_owned()));
    // A preflight is an OPTIONS request like any other: 405, and nothing for CORS.
    let pre = preflight(&app, "/waybills", ALLOWED, "POST", "content-type").await;
    pre.problem(&[405]);
    assert_eq!(cors_headers(&pre), Vec::<String>::new());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn allowed_origins_get_preflights_answered_and_readable_headers() {
    let app = spawn_app_with(
        &[
            (
                "GTFS_CORS_ALLOWED_ORIGINS",
                &format!("{ALLOWED}, http://localhost:5173"),
            ),
            ("GTFS_CORS_MAX_AGE", "120"),
        ],
        axum::Router::new(),
    )
    .await;

    // A preflight for a status change: answered at once, with what the browser asked.
    let pre = preflight(
        &app,
        "/waybills/00000000-0000-0000-0000-000000000000",
        ALLOWED,
        "PATCH",
        "content-type,if-match,traceparent",
    )
    .await;
    assert!(
        matches!(pre.status, 200 | 204),
        "{}: {}",
        pre.status,
        pre.text()
    );
    assert_eq!(pre.header("access-control-allow-origin"), Some(ALLOWED));
    let methods = list(&pre, "access-control-allow-methods");
    for m in ["get", "head", "post", "patch"] {
        assert!(methods.contains(&m.to_owned()), "{methods:?}");
    }
    let headers = list(&pre, "access-control-allow-headers");
    for h in [
        "content-type",
        "if-match",
        "traceparent",
        "authorization",
        "idempotency-key",
    ] {
        assert!(headers.contains(&h.to_owned()), "{headers:?}");
    }
    assert_eq!(pre.header("access-control-max-age"), Some("120"));
    assert!(
        pre.header("x-request-id").is_some(),
        "preflights are requests too"
    );
    assert!(pre.body.is_empty());
    // The other origin configured too.
    let pre = preflight(
        &app,
        "/feeds",
        "http://localhost:5173",
        "GET",
        "x-request-id",
    )
    .await;
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );

    // An answer: the origin allowed, and the headers scripts need exposed.
    let get = app.get_with("/feeds", &[("origin", ALLOWED)]).await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), Some(ALLOWED));
    let exposed = list(&get, "access-control-expose-headers");
    for h in [
        "etag",
        "server-timing",
        "x-request-id",
        "location",
        "x-cache",
    ] {
        assert!(exposed.contains(&h.to_owned()), "{exposed:?}");
    }
    assert!(list(&get, "vary").contains(&"origin".to_owned()));
    // Errors too: a script must be able to read the problem.
    let missing = app.get_with("/nope", &[("origin", ALLOWED)]).await;
    missing.problem(&[404]);
    assert_eq!(missing.header("access-control-allow-origin"), Some(ALLOWED));
    // A write: the created waybill's Location and ETag are readable.
    let bad = Answer::send(
        app.request(Method::POST, "/waybills")
            .header("origin", ALLOWED)
            .json(&json!({"service_date": "2027-01-01"})),
    )
    .await;
    assert_eq!(bad.header("access-control-allow-origin"), Some(ALLOWED));

    // Another origin: nothing that lets its scripts read or send.
    let pre = preflight(&app, "/waybills", OTHER, "POST", "content-type").await;
    assert_eq!(
        cors_headers(&pre),
        Vec::<String>::new(),
        "{:?}",
        pre.headers
    );
    let get = app.get_with("/feeds", &[("origin", OTHER)]).await;
    assert_eq!(get.status, 200, "the server answers; the browser hides it");
    assert_eq!(cors_headers(&get), Vec::<String>::new());
    assert!(list(&get, "vary").contains(&"origin".to_owned()));
    // The origin is compared as browsers send it: a path never matches.
    let get = app
        .get_with("/feeds", &[("origin", &format!("{ALLOWED}/"))])
        .await;
    assert_eq!(get.header("access-control-allow-origin"), None);

    let shown = app.get("/config").await.ok();
    assert_eq!(
        shown["cors_allowed_origins"],
        json!([ALLOWED, "http://localhost:5173"])
    );
    assert_eq!(shown["cors_max_age"], 120.0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cached_answers_keep_their_vary_and_gain_origin() {
    // The demo feed, its route details served from the cache.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml")).unwrap();
    let config = Config::parse(Some(("config/demo.toml", &text)), |name| {
        (name == "GTFS_CORS_ALLOWED_ORIGINS").then(|| ALLOWED.to_owned())
    })
    .unwrap();
    let app = spawn_loaded(config).await;
    let pre = preflight(
        &app,
        "/feeds/demo/routes/12",
        ALLOWED,
        "GET",
        "if-none-match",
    )
    .await;
    assert_eq!(pre.header("access-control-allow-origin"), Some(ALLOWED));
    for round in 0..2 {
        let get = app
            .get_with(
                "/feeds/demo/routes/12",
                &[("origin", ALLOWED), ("accept-encoding", "gzip")],
            )
            .await;
        assert_eq!(get.status, 200);
        if round == 1 {
            assert_eq!(get.header("x-cache"), Some("HIT"));
        }
        assert_eq!(get.header("content-encoding"), Some("gzip"));
        assert_eq!(get.header("access-control-allow-origin"), Some(ALLOWED));
        let vary = list(&get, "vary");
        assert!(vary.contains(&"accept-encoding".to_owned()), "{vary:?}");
        assert!(vary.contains(&"origin".to_owned()), "{vary:?}");
    }
    app.stop().await.unwrap();
}

#[test]
fn bad_origins_are_refused_naming_the_key_and_the_entry() {
    let parse = |file: &str, env: &[(&str, &str)]| {
        Config::parse(Some(("test.toml", file)), |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    };
    let e = parse(
        "cors_allowed_origins = [\"https://dispatch.example/app\"]",
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key, "cors_allowed_origins");
    assert_eq!(
        e.to_string(),
        "invalid configuration: cors_allowed_origins: \"https://dispatch.example/app\" is not an \
         origin (an origin has no path, query or fragment: write \"https://dispatch.example\")"
    );
    let e = parse(
        "",
        &[(
            "GTFS_CORS_ALLOWED_ORIGINS",
            "https://ok.example,dispatch.example",
        )],
    )
    .unwrap_err();
    assert_eq!(e.key, "GTFS_CORS_ALLOWED_ORIGINS");
    assert!(
        e.problem
            .starts_with("\"dispatch.example\" is not an origin"),
        "{e}"
    );
    let e = parse("cors_allowed_origins = \"https://dispatch.example\"", &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: cors_allowed_origins: \"https://dispatch.example\" is not a list \
         of origins such as [\"https://dispatch.example\"]"
    );
    let e = parse("cors_allowed_methods = [\"GET\", \"NOT A METHOD\"]", &[]).unwrap_err();
    assert_eq!(e.key, "cors_allowed_methods");
    let e = parse("", &[("GTFS_CORS_ALLOWED_HEADERS", "if-match,bad header")]).unwrap_err();
    assert_eq!(e.key, "GTFS_CORS_ALLOWED_HEADERS");
    let e = parse("cors_max_age = -1", &[]).unwrap_err();
    assert_eq!(e.key, "cors_max_age");

    // Normalized as browsers send them.
    let c = parse(
        "cors_allowed_origins = [\"HTTPS://Dispatch.Example:443\"]",
        &[],
    )
    .unwrap();
    assert_eq!(c.cors_allowed_origins.iter().collect::<Vec<_>>(), [ALLOWED]);
}
