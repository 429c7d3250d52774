//! CORS, for browser apps served from another origin (a dispatch app on
//! `https://dispatch.example` calling this API): tower-http's [`CorsLayer`], built from
//! the `cors_*` keys.
//!
//! - With `cors_allowed_origins` empty (the default) there is no layer at all: not a
//!   layer that answers "no", none, so a cache hit pays nothing for CORS (see
//!   [`super::layers`] for why every layer counts).
//! - With origins: a preflight (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) from an allowed origin is answered at once, 200
//!   with an empty body, `Access-Control-Allow-Origin` (that origin, or `*`),
//!   `-Allow-Methods`, `-Allow-Headers` and `-Max-Age`; other answers to an allowed
//!   origin carry `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers`
//!   ([`EXPOSED`]), so scripts can read the ETag, the request id and `Server-Timing`.
//!   `Vary: origin, ...` (not with `*`, which is the same for all) is added to what the
//!   handler said (`Vary: accept-encoding` stays).
//! - Another origin gets no `Access-Control-*` header at all ([`only_for_allowed`]
//!   removes those tower-http adds whatever the origin), so its scripts can neither read
//!   an answer nor send a request that needs a preflight; its preflight is an empty 200.
//! - No credentials mode (cookies): the API's only credential is the bearer token, which
//!   a script sends as the `authorization` header, allowed by default.
//!
//! The layer sits inside `observe` (so a preflight has its request id, log line and
//! metrics like any request) and wraps every route, its 405 fallback included, and the
//! 404 fallback.

use axum::http::{HeaderName, header};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;

/// Response headers scripts may read besides the CORS-safelisted ones (`Cache-Control`,
/// `Content-Type`, `Content-Length`...).
pub static EXPOSED: [HeaderName; 6] = [
    axum::http::header::ETAG,
    axum::http::header::LOCATION,
    axum::http::header::RETRY_AFTER,
    HeaderName::from_static("server-timing"),
    HeaderName::from_static("x-cache"),
    HeaderName::from_static("x-request-id"),
];

/// The CORS layer the configuration asks for; `None` when it allows no origin.
pub(crate) fn layer(config: &Config) -> Option<CorsLayer> {
    let origins = &config.cors_allowed_origins;
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.is_any() {
        AllowOrigin::any()
    } else {
        // Checked and normalized when the configuration was read: all valid values.
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(
                config
                    .cors_allowed_methods
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .allow_headers(
                config
                    .cors_allowed_headers
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .expose_headers(EXPOSED.to_vec())
            .max_age(config.cors_max_age),
    )
}

/// Removes the `Access-Control-*` headers from an answer that does not allow the
/// request's origin: tower-http adds the allowed methods, headers, max age and exposed
/// headers to every answer, and leaves out only `Access-Control-Allow-Origin` for an
/// origin it does not allow.
pub(crate) fn only_for_allowed(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ] {
            headers.remove(name);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    fn config(origins: &str) -> Config {
        Config::parse(None, |v| {
            (v == "GTFS_CORS_ALLOWED_ORIGINS").then(|| origins.to_owned())
        })
        .unwrap()
    }

    async fn ask(router: &Router, origin: &str, preflight: bool) -> Response {
        let mut req = Request::builder().uri("/x").header("origin", origin);
        if preflight {
            req = req
                .method("OPTIONS")
                .header("access-control-request-method", "PATCH");
        }
        router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn cors_headers(res: &Response) -> Vec<&str> {
        res.headers()
            .keys()
            .map(HeaderName::as_str)
            .filter(|k| k.starts_with("access-control-"))
            .collect()
    }

    #[test]
    fn no_origin_no_layer() {
        assert!(layer(&config("")).is_none());
        assert!(layer(&config("https://a.example")).is_some());
    }

    #[tokio::test]
    async fn any_origin_is_a_star_that_does_not_vary() {
        let cors = layer(&config("*")).unwrap();
        let router = Router::default()
            .fallback(|| async { "ok" })
            .layer(cors)
            .layer(tower::util::MapResponseLayer::new(only_for_allowed));
        for preflight in [false, true] {
            let res = ask(&router, "https://anyone.example", preflight).await;
            assert_eq!(res.headers()["access-control-allow-origin"], "*");
            assert!(res.headers().get("vary").is_none(), "{:?}", res.headers());
        }
    }

    #[tokio::test]
    async fn another_origin_gets_no_cors_header_at_all() {
        let cors = layer(&config("https://a.example")).unwrap();
        let router = Router::default()
            .fallback(|| async { "ok" })
            .layer(cors)
            .layer(tower::util::MapResponseLayer::new(only_for_allowed));
        for preflight in [false, true] {
            let res = ask(&router, "https://b.example", preflight).await;
            assert_eq!(cors_headers(&res), Vec::<&str>::new(), "{preflight}");
            assert!(res.headers()["vary"].to_str().unwrap().contains("origin"));
            let res = ask(&router, "https://a.example", preflight).await;
            assert_eq!(
                res.headers()["access-control-allow-origin"],
                "https://a.example"
            );
        }
    }
}
