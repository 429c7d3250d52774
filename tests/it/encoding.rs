//! Content codings (issue 13): every representation the service sends decodes to exactly
//! the identity bytes; negotiation follows RFC 9110 (q-values, `identity`, `*`, `q=0`);
//! `Vary`, `ETag`, `Content-Length` on each; 304 for each; 406 when nothing is acceptable;
//! answers that are not cached are compressed only above the size threshold.

use std::io::Read;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
};

use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, sim_config, spawn_loaded, zip_feeds};

/// One answer, its body as sent on the wire (reqwest here decompresses nothing).
struct Sent {
    status: StatusCode,
    coding: Option<String>,
    vary: Option<String>,
    etag: Option<String>,
    length: Option<usize>,
    content_type: Option<String>,
    body: Vec<u8>,
}

async fn fetch(app: &TestApp, path: &str, accept: Option<&str>, etag: Option<&str>) -> Sent {
    let mut req = app.client.get(app.url(path));
    if let Some(a) = accept {
        req = req.header(ACCEPT_ENCODING, a);
    }
    if let Some(e) = etag {
        req = req.header(IF_NONE_MATCH, e);
    }
    let res = req.send().await.expect("request");
    let h = |name| {
        res.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (coding, vary, etag) = (h(CONTENT_ENCODING), h(VARY), h(ETAG));
    let content_type = h(CONTENT_TYPE);
    let length = h(CONTENT_LENGTH).map(|l| l.parse().unwrap());
    let status = res.status();
    let body = res.bytes().await.expect("body").to_vec();
    Sent {
        status,
        coding,
        vary,
        etag,
        length,
        content_type,
        body,
    }
}

/// The body decoded by its `Content-Encoding`, with the reference decoders.
fn decoded(sent: &Sent) -> Vec<u8> {
    let mut out = Vec::new();
    match sent.coding.as_deref() {
        None => out.clone_from(&sent.body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&sent.body[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        Some("br") => {
            brotli::Decompressor::new(&sent.body[..], 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

fn varies_on_encoding(sent: &Sent) -> bool {
    sent.vary
        .as_deref()
        .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
}

#[tokio::test]
async fn every_representation_of_a_cached_answer_decodes_to_the_same_bytes() {
    let sim = OtpSim::start(&["bart", "cdmx"]).await;
    let feeds = zip_feeds(&["bart", "cdmx"]);
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &feeds, &[])).await;
    // A route's detail, a list's first page, and a shorter page.
    for path in [
        "/feeds/bart/routes/01",
        "/feeds/cdmx/routes",
        "/feeds/cdmx/routes?limit=20",
    ] {
        every_representation(&app, path).await;
    }
    app.stop().await.unwrap();
}

async fn every_representation(app: &TestApp, path: &str) {
    let plain = fetch(app, path, None, None).await;
    assert_eq!(plain.status, StatusCode::OK, "{path}");
    assert_eq!(plain.coding, None);
    assert!(varies_on_encoding(&plain), "Vary on identity too");
    assert_eq!(plain.length, Some(plain.body.len()));
    assert!(
        plain.body.len() > 2_000,
        "{path}: a large answer: {}",
        plain.body.len()
    );
    let etag = plain.etag.clone().expect("ETag");

    // (Accept-Encoding, the coding expected), RFC 9110's rules.
    let cases: &[(&str, Option<&str>)] = &[
        ("gzip", Some("gzip")),
        ("x-gzip", Some("gzip")),
        ("br", Some("br")),
        ("gzip, deflate, br", Some("br")),
        ("gzip, deflate, br, zstd", Some("br")),
        ("br;q=0.5, gzip", Some("gzip")),
        ("gzip;q=0.5, identity", None),
        ("deflate", None),
        ("identity", None),
        ("", None),
        ("*", Some("br")),
        ("*;q=0.1, gzip;q=0.2", Some("gzip")),
        ("identity;q=0, gzip", Some("gzip")),
    ];
    // Twice: the first request that asks makes the forms, the second finds them made.
    for round in 0..2 {
        for (accept, expected) in cases {
            let sent = fetch(app, path, Some(accept), None).await;
            let what = format!("{path}, round {round}, Accept-Encoding {accept:?}");
            assert_eq!(sent.status, StatusCode::OK, "{what}");
            assert_eq!(sent.coding.as_deref(), *expected, "{what}");
            assert_eq!(sent.length, Some(sent.body.len()), "{what}: Content-Length");
            assert!(varies_on_encoding(&sent), "{what}: Vary");
            assert_eq!(sent.etag.as_deref(), Some(etag.as_str()), "{what}: ETag");
            assert_eq!(
                sent.content_type.as_deref(),
                Some("application/json"),
                "{what}"
            );
            if expected.is_some() {
                assert!(sent.body.len() < plain.body.len() / 2, "{what}: compressed");
            }
            assert!(
                decoded(&sent) == plain.body,
                "{what}: decodes to the identity bytes"
            );
            // The client that has it gets a 304 whatever coding it asks for.
            let again = fetch(app, path, Some(accept), Some(&etag)).await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{what}: 304");
            assert!(again.body.is_empty(), "{what}: 304 has no body");
            assert!(varies_on_encoding(&again), "{what}: Vary on 304");
            assert_eq!(
                again.etag.as_deref(),
                Some(etag.as_str()),
                "{what}: 304 ETag"
            );
        }
    }
    // Nothing acceptable: 406, a problem body, and Vary so that caches key on it.
    for accept in ["*;q=0", "identity;q=0", "gzip;q=0, br;q=0, identity;q=0"] {
        let sent = fetch(app, path, Some(accept), None).await;
        assert_eq!(sent.status, StatusCode::NOT_ACCEPTABLE, "{path} {accept}");
        assert_eq!(
            sent.content_type.as_deref(),
            Some("application/problem+json"),
            "{accept}"
        );
        assert!(varies_on_encoding(&sent), "{path} {accept}");
    }
}

#[tokio::test]
async fn answers_built_per_request_are_compressed_above_the_threshold_only() {
    let sim = OtpSim::start(&["bart"]).await;
    let app = spawn_loaded(sim_config(&sim.url(), "gtfs", &zip_feeds(&["bart"]), &[])).await;
    // Large answers built per request: the trips of a day, the document.
    for path in [
        "/openapi.json",
        "/feeds/bart/routes/01/trips?date=2019-01-07",
    ] {
        let plain = fetch(&app, path, None, None).await;
        assert_eq!(plain.status, StatusCode::OK, "{path}");
        assert!(
            plain.body.len() > 1024,
            "{path}: {} bytes",
            plain.body.len()
        );
        for (accept, coding) in [("gzip", "gzip"), ("gzip, deflate, br", "br")] {
            let sent = fetch(&app, path, Some(accept), None).await;
            assert_eq!(sent.coding.as_deref(), Some(coding), "{path} {accept}");
            assert!(varies_on_encoding(&sent), "{path} {accept}");
            assert!(decoded(&sent) == plain.body, "{path} {accept}: same bytes");
        }
    }
    // A small answer is sent as it is.
    let small = fetch(&app, "/healthz", Some("gzip, br"), None).await;
    assert_eq!(small.status, StatusCode::OK);
    assert!(small.body.len() < 1024);
    assert_eq!(small.coding, None, "/healthz is not worth compressing");
    app.stop().await.unwrap();
}
