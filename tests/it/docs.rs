//! The API explorer at `/docs`, through a real socket: the page and every file it loads
//! come from this service, the document it shows is this service's `/openapi.json`, and
//! nothing points at another site.

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

#[tokio::test]
async fn the_explorer_is_served_from_the_binary_and_shows_this_document() {
    // Tokens set: the explorer is open all the same, like /openapi.json.
    let app = spawn_app_with(
        &[("GTFS_OPS_TOKEN", "ops-tok"), ("GTFS_API_TOKEN", "api-tok")],
        Router::new(),
    )
    .await;
    let page = app.get("/docs").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains("<div id=\"swagger-ui\">"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );

    let links = links(&html);
    assert!(links.len() >= 6, "{links:?}");
    let mut initializer = None;
    for link in &links {
        assert!(link.starts_with("/docs/"), "{link}: not served from here");
        let file = app.get(link).await;
        assert_eq!(file.status, 200, "{link}");
        let kind = file.headers["content-type"].to_str().unwrap().to_owned();
        let expected = match link.rsplit_once('.').unwrap().1 {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "png" => "image/png",
            other => panic!("{link}: unexpected kind {other}"),
        };
        assert_eq!(kind, expected, "{link}");
        assert!(file.body.len() > 200, "{link}: {} bytes", file.body.len());
        if link.ends_with("/swagger-initializer.js") {
            initializer = Some(file.text());
        }
    }
    // The bundle is Swagger UI itself, not an error page.
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert!(bundle.body.len() > 500_000, "{} bytes", bundle.body.len());
    assert!(bundle.text().contains("SwaggerUIBundle"));

    // The initializer points the page at this service's document, and at no other site.
    let initializer = initializer.expect("the page loads swagger-initializer.js");
    assert!(
        initializer.contains("\"url\": \"/openapi.json\""),
        "{initializer}"
    );
    assert!(
        initializer.contains("\"validatorUrl\": \"none\""),
        "{initializer}"
    );
    assert!(
        !initializer.contains("http://") && !initializer.contains("https://"),
        "{initializer}"
    );
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["info"]["title"], "gtfs-fetch");

    // Anything else under /docs is a documented 404, problem+json.
    for missing in ["/docs/nope.js", "/docs/index.html", "/docs/..%2FCargo.toml"] {
        let answer = app.get(missing).await;
        assert_eq!(answer.status, 404, "{missing}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        let body: Value = answer.json();
        assert_eq!(body["detail"], "no such file of the explorer", "{missing}");
    }
    app.stop().await.unwrap();
}

/// Non-loopback clients get the explorer without a token (the ops guard is not on it).
#[tokio::test]
async fn the_explorer_is_open_to_every_client() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    let app = spawn_app_with(&[("GTFS_OPS_TOKEN", "ops-tok")], Router::new()).await;
    let router = gtfs_fetch::api::router(app.state.clone());
    let remote: std::net::SocketAddr = "10.20.30.40:5555".parse().unwrap();
    for (path, status) in [
        ("/docs", 200),
        ("/docs/swagger-initializer.js", 200),
        ("/metrics", 403),
    ] {
        let mut req = Request::get(path).body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(remote));
        let res = router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status, "{path}");
    }
    app.stop().await.unwrap();
}
