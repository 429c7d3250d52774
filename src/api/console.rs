//! The operator console: one page at `GET /ui`, its script, styles and icon under
//! `GET /ui/{file}`.
//!
//! What it shows, read by its script from the service's own JSON endpoints every few
//! seconds: per instance (`/instances`) the breaker state, connections opened, requests
//! sent, reuse ratio, last refresh and last error; per feed (`/feeds`) the version, its
//! age and counts, and the recent fetch history (`/feeds/{gtfs_id}/fetches`) as a small
//! chart drawn as inline SVG; the route cache and the database pool (`/memory-stats`);
//! the waybills of today's service date by status (`/waybills?service_date=`, every page,
//! "today" being the browser's local date, which the page shows). Each figure has a stable
//! `data-testid`, so a test (and `scripts/browser-test.sh`) can read it.
//!
//! The files (`src/api/console/`) are plain HTML, CSS and JavaScript, built into the
//! binary with `include_str!`: no build step, no library, nothing loaded from another
//! site, no web font. Every answer carries a `Content-Security-Policy` whose
//! `default-src 'self'` (and `connect-src 'self'`) keeps the page on this service even if
//! a figure it shows (an error text, a feed id) were crafted: the script writes figures as
//! text, never as HTML. `Cache-Control: no-cache`: the files change only with the binary,
//! but a page and a script of two versions must not meet.
//!
//! # Who may open it
//!
//! The same guard as `/memory-stats` ([`super::auth::require_ops_access`]), on the page
//! and on every file: loopback clients, or clients sending `Authorization: Bearer
//! <ops_token>` when `ops_token` is set; others get 403. A browser cannot send a bearer
//! header when it loads a page, so the simplest safe way for an operator is the one that
//! needs no token in the browser at all: reach the service as a loopback client through an
//! SSH tunnel (`ssh -L 8000:127.0.0.1:8000 host`, then `http://localhost:8000/ui`). The page
//! then loads and so do its own requests, which the same guard lets in for the same reason.
//! What was left out on purpose: a token in the URL (it ends up in logs, history and
//! `Referer`), a login form setting a cookie (the guard would have to accept cookies,
//! which needs CSRF protection on every ops endpoint), and a page open to all that asks
//! for the token (the page would then be served to anyone, and the token would sit in
//! the browser's storage). A client that can add a header to every request (a header
//! extension, or a reverse proxy on another host that adds the token) also works.
//!
//! The page and its files are documented in `/openapi.json` like `/docs`, so the document
//! and the router stay one list.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problems::{NoSuchConsoleFile, OpsForbidden};
use super::{ApiError, auth};
use crate::state::AppState;

/// The page itself.
const PAGE: &str = include_str!("console/index.html");

/// The files the page loads, by name under `/ui/`, with their content type.
const FILES: &[(&str, &[u8], &str)] = &[
    (
        "console.js",
        include_bytes!("console/console.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "console.css",
        include_bytes!("console/console.css"),
        "text/css; charset=utf-8",
    ),
    (
        "favicon.png",
        include_bytes!("console/favicon.png"),
        "image/png",
    ),
];

/// Everything from this service, nothing else: no inline script, no plugin, no frame, no
/// form posting elsewhere. Inline SVG drawn by the script needs no exception.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(console_page))
        .routes(routes!(console_file))
        .route_layer(middleware::from_fn_with_state(
            state,
            auth::require_ops_access,
        ))
}

/// A file of the console by its name under `/ui/`, with its content type.
fn asset(name: &str) -> Option<(&'static [u8], &'static str)> {
    FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, body, kind)| (*body, *kind))
}

fn answer(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The operator console.
///
/// An HTML page showing instances, feeds with their fetch history, the route cache, the
/// database pool and today's waybills by status, updated every few seconds from this
/// service's JSON endpoints. Its script and styles are served under `/ui/` (built into the
/// binary, nothing from another site). Behind the ops guard, like `/memory-stats`: a
/// browser cannot send a bearer token on a page load, so remote operators reach it as a
/// loopback client (an SSH tunnel).
#[utoipa::path(
    get,
    path = "/ui",
    tag = "ops",
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "The console page.",
            body = String, content_type = "text/html; charset=utf-8",
            headers(("Cache-Control" = String), ("Content-Security-Policy" = String))),
        OpsForbidden,
    ),
)]
async fn console_page() -> Response {
    answer(PAGE.as_bytes(), "text/html; charset=utf-8")
}

/// A file of the operator console: its script, styles and icon.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    tag = "ops",
    params(("file" = String, Path, description = "A file of the console.",
        example = "console.js")),
    security((), ("ops_token" = [])),
    responses(
        (status = 200, description = "The file.",
            content(
                (String = "text/javascript; charset=utf-8"),
                (String = "text/css; charset=utf-8"),
                (Vec<u8> = "image/png"),
            ),
            headers(("Cache-Control" = String), ("Content-Security-Policy" = String))),
        OpsForbidden,
        NoSuchConsoleFile,
    ),
)]
async fn console_file(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (body, content_type) =
        asset(&name).ok_or_else(|| ApiError::not_found("no such file of the console"))?;
    Ok(answer(body, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `href="..."` and `src="..."` values of the page.
    fn links(html: &str) -> Vec<&str> {
        ["href=\"", "src=\""]
            .iter()
            .flat_map(|attr| html.split(attr).skip(1))
            .filter_map(|rest| rest.split_once('"').map(|(link, _)| link))
            .collect()
    }

    #[test]
    fn the_page_links_exactly_its_files_and_nothing_elsewhere() {
        let links = links(PAGE);
        let mut linked: Vec<&str> = links
            .iter()
            .map(|l| l.strip_prefix("/ui/").unwrap_or_else(|| panic!("{l}")))
            .collect();
        linked.sort_unstable();
        let mut files: Vec<&str> = FILES.iter().map(|(n, _, _)| *n).collect();
        files.sort_unstable();
        assert_eq!(linked, files, "every file linked, every linked file served");
        for (name, body, _) in FILES {
            assert!(body.len() > 100, "{name}");
        }
        let texts = FILES
            .iter()
            .filter(|(_, _, kind)| kind.starts_with("text/"))
            .map(|(name, body, _)| (*name, std::str::from_utf8(body).expect("UTF-8")));
        for (name, text) in std::iter::once(("page", PAGE)).chain(texts) {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name}"
            );
            // No inline script or style: the policy would block them.
            assert!(
                !text.contains("<script>") && !text.contains("style=\""),
                "{name}"
            );
        }
        assert!(PAGE.contains("name=\"viewport\""));
        for missing in ["", "index.html", "nope.js", "../Cargo.toml", "a/console.js"] {
            assert!(asset(missing).is_none(), "{missing}");
        }
    }
}
