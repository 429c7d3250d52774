//! The floor of the HTTP stack a cache hit goes through (issue 13): a server that does
//! nothing but what a hit needs (one path, a body already made, an ETag compared with
//! `If-None-Match`), on the same crates and runtime as the service, so that
//! `benches/hit_syscalls.sh` can set nginx, this floor and the service side by side.
//!
//! ```sh
//! cargo build --release --example hit_floor
//! target/release/examples/hit_floor hyper 127.0.0.1:18313 r.json r.json.gz
//! target/release/examples/hit_floor axum 127.0.0.1:18314 r.json r.json.gz
//! ```
//!
//! - `hyper`: hyper's HTTP/1 connection on tokio's multi-threaded runtime, one
//!   `service_fn`, no router, no middleware: what any server on this stack pays at least.
//! - `axum`: the same answer from an axum `Router` with one route, served by
//!   `axum::serve` as the service is: what axum adds over hyper.
//!
//! Both answer any GET with the identity bytes (first file), or the gzip bytes (second
//! file) when `Accept-Encoding` mentions gzip; each representation has its own ETag; an
//! `If-None-Match` equal to it gets a 304. Nothing else is negotiated or checked: this is
//! a measuring stick, not a server.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
// The service's allocator (jemalloc, set in the library), so the floor allocates as it does.
use gtfs_fetch as _;

/// One representation: its bytes and ETag.
struct Form {
    body: Bytes,
    etag: HeaderValue,
}

/// The two representations of the one answer.
struct Answer {
    identity: Form,
    gzip: Form,
}

impl Answer {
    fn read(identity: &str, gzip: &str) -> Answer {
        let form = |path: &str, tag: &str| {
            let body = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
            let etag = format!("\"{tag}-{:016x}\"", xxhash_rust::xxh3::xxh3_64(&body));
            Form {
                body: body.into(),
                etag: HeaderValue::from_str(&etag).expect("an ETag is ASCII"),
            }
        };
        Answer {
            identity: form(identity, "i"),
            gzip: form(gzip, "g"),
        }
    }

    fn respond(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let gzip = headers
            .get(ACCEPT_ENCODING)
            .is_some_and(|v| v.as_bytes().windows(4).any(|w| w == b"gzip"));
        let form = if gzip { &self.gzip } else { &self.identity };
        let fresh = headers.get(IF_NONE_MATCH) == Some(&form.etag);
        let mut response = if fresh {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            Response::new(Full::new(form.body.clone()))
        };
        let h = response.headers_mut();
        h.insert(ETAG, form.etag.clone());
        h.insert(VARY, HeaderValue::from_static("accept-encoding"));
        if !fresh {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if gzip {
                h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
        }
        response
    }
}

async fn serve_hyper(addr: SocketAddr, answer: Arc<Answer>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let response = answer.respond(req.headers());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn serve_axum(addr: SocketAddr, answer: Arc<Answer>) {
    use axum::serve::ListenerExt;
    let router = axum::Router::new()
        .route(
            "/{*path}",
            axum::routing::get(|headers: HeaderMap| async move { answer.respond(&headers) }),
        )
        .into_make_service();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind")
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, router).await.expect("serve");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, addr, identity, gzip] = args.as_slice() else {
        eprintln!("usage: hit_floor hyper|axum ADDR IDENTITY_FILE GZIP_FILE");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is host:port");
    let answer = Arc::new(Answer::read(identity, gzip));
    match mode.as_str() {
        "hyper" => serve_hyper(addr, answer).await,
        "axum" => serve_axum(addr, answer).await,
        other => {
            eprintln!("unknown mode {other:?}: hyper or axum");
            std::process::exit(2);
        }
    }
}
