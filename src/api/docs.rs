//! The API explorer: Swagger UI over `GET /openapi.json`, at `GET /docs`.
//!
//! Its files come from the `utoipa-swagger-ui` crate, built with its `vendored` feature:
//! a pinned Swagger UI release (5.17.14) inside the `utoipa-swagger-ui-vendored` crate from
//! crates.io, embedded into the binary at build time, so neither the build nor the page
//! reaches the network. The page loads every file from `/docs/...` of this service and
//! asks for the document at `/openapi.json`; the validator badge (which would send the
//! document to a public validator) is off.
//!
//! Open to every client, like `/openapi.json` it shows: documentation, not operations.
//! "Try it out" calls the service from the browser as any other client would, so the ops
//! guard and the tokens apply to those calls as usual.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::Config;

use super::ApiError;
use super::problems::NoSuchDocsFile;
use crate::state::AppState;

/// Where the explorer is served; its files are under `{PREFIX}/`.
const PREFIX: &str = "/docs";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(explorer))
        .routes(routes!(file))
}

/// The explorer's settings: this service's document, no public validator.
static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::new(["/openapi.json"])
            .validator_url("none")
            .try_it_out_enabled(true),
    )
});

/// A file of the pinned Swagger UI with its content type, or `None`.
fn swagger_file(name: &str) -> Option<(Vec<u8>, &'static str)> {
    // Only the files of the one flat directory: no `index.html` (the page is `/docs`).
    if name.is_empty() || name.contains('/') || name == "index.html" {
        return None;
    }
    let file = utoipa_swagger_ui::serve(name, CONFIG.clone()).ok()??;
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("png") => "image/png",
        Some("map" | "json") => "application/json",
        // Swagger UI's files are all of the kinds above.
        _ => return None,
    };
    Some((file.bytes.into_owned(), content_type))
}

/// The explorer page: Swagger UI's `index.html`, its relative links made to point
/// under `/docs/`, so the page works at `/docs` without a trailing slash.
fn page() -> String {
    let index = utoipa_swagger_ui::serve("index.html", CONFIG.clone())
        .ok()
        .flatten()
        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
        .unwrap_or_default();
    index
        .replace("<title>Swagger UI</title>", "<title>gtfs-fetch API</title>")
        .replace("href=\"./", &format!("href=\"{PREFIX}/"))
        .replace("src=\"./", &format!("src=\"{PREFIX}/"))
        .replace(
            "href=\"index.css\"",
            &format!("href=\"{PREFIX}/index.css\""),
        )
}

fn answer(body: Vec<u8>, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // The files change only with the binary.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The API explorer (Swagger UI) over `/openapi.json`.
///
/// An HTML page; its scripts and styles are served by this service under `/docs/` (built
/// into the binary, nothing from another site). Open to every client.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    responses(
        (status = 200, description = "The explorer page.",
            body = String, content_type = "text/html; charset=utf-8",
            headers(("Cache-Control" = String))),
    ),
)]
async fn explorer() -> Response {
    answer(page().into_bytes(), "text/html; charset=utf-8")
}

/// A file of the API explorer: its scripts, styles and icons.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "meta",
    params(("file" = String, Path, description = "A file of the explorer.",
        example = "swagger-ui-bundle.js")),
    responses(
        (status = 200, description = "The file.",
            content(
                (String = "text/javascript; charset=utf-8"),
                (String = "text/css; charset=utf-8"),
                (String = "text/html; charset=utf-8"),
                (String = "application/json"),
                (Vec<u8> = "image/png"),
            ),
            headers(("Cache-Control" = String))),
        NoSuchDocsFile,
    ),
)]
async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (body, content_type) =
        swagger_file(&name).ok_or_else(|| ApiError::not_found("no such file of the explorer"))?;
    Ok(answer(body, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_files_from_here_and_the_document_from_this_service() {
        let page = page();
        for file in [
            "swagger-ui.css",
            "index.css",
            "favicon-32x32.png",
            "swagger-ui-bundle.js",
            "swagger-ui-standalone-preset.js",
            "swagger-initializer.js",
        ] {
            assert!(
                page.contains(&format!("\"/docs/{file}\"")),
                "{file}: {page}"
            );
            assert!(
                swagger_file(file).is_some_and(|(b, _)| b.len() > 100),
                "{file}"
            );
        }
        // No link left relative (it would resolve from `/`), none to another site.
        for attr in ["href=\"", "src=\""] {
            for link in page.split(attr).skip(1) {
                assert!(link.starts_with("/docs/"), "{attr}{link}");
            }
        }
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
        let (init, kind) = swagger_file("swagger-initializer.js").unwrap();
        let init = String::from_utf8(init).unwrap();
        assert_eq!(kind, "text/javascript; charset=utf-8");
        assert!(init.contains("\"/openapi.json\""), "{init}");
        assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
        assert!(
            !init.contains("http://") && !init.contains("https://"),
            "{init}"
        );
        for missing in ["", "index.html", "nope.js", "../Cargo.toml", "a/b.js"] {
            assert!(swagger_file(missing).is_none(), "{missing}");
        }
    }
}
