//! Content negotiation for cacheable answers: which representation a request gets
//! (RFC 9110 §12.5.3, `Accept-Encoding`) and whether it already has it (§13.1.2,
//! `If-None-Match`).
//!
//! Cached answers keep their gzip and brotli forms (see [`crate::cache::encoded`]), so the
//! choice here only picks bytes that exist already; nothing is compressed per request.
//! The rules, as RFC 9110 gives them:
//! - no `Accept-Encoding`: the identity bytes;
//! - each coding gets the q-value of its own entry, else that of `*`, else 0; `identity`
//!   gets its own, else that of `*`, else 1 (it is acceptable unless refused by
//!   `identity;q=0` or `*;q=0`); `x-gzip` is `gzip`;
//! - the coding with the highest q wins; on a tie a named coding beats identity (a client
//!   that lists `gzip` wants it) and brotli beats gzip (it is smaller);
//! - nothing acceptable: 406 with a problem body.
//!
//! Every negotiable answer says `Vary: accept-encoding`, 304s and 406s included, so that a
//! shared cache keys on it. All representations of an answer share its weak ETag.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use utoipa::IntoParams;

use super::ApiError;
use crate::cache::encoded::Encoded;

const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("public, max-age=60");
const VARY: HeaderValue = HeaderValue::from_static("accept-encoding");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// What a negotiable GET asks for: its `If-None-Match` and `Accept-Encoding` fields,
/// taken from the request without copying its other headers (this runs on every cache
/// hit). In the OpenAPI document it is the `If-None-Match` header parameter;
/// `Accept-Encoding` is HTTP's own and described in the answers.
#[derive(Debug, Default, Clone, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct Conditional {
    /// ETags the client has (the `ETag` of an earlier answer): 304 when one is current.
    #[param(rename = "If-None-Match", value_type = String, required = false)]
    pub if_none_match: Option<HeaderValue>,
    #[param(ignore)]
    pub accept_encoding: Option<HeaderValue>,
}

impl Conditional {
    /// The two fields of `headers`, each field sent several times joined with `, ` (RFC
    /// 9110 §5.3: the same as one field with the values listed).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            if_none_match: combined(headers, &header::IF_NONE_MATCH),
            accept_encoding: combined(headers, &header::ACCEPT_ENCODING),
        }
    }
}

fn combined(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(first.clone());
    };
    let mut joined = BytesMut::from(first.as_bytes());
    for more in std::iter::once(second).chain(all) {
        joined.put_slice(b", ");
        joined.put_slice(more.as_bytes());
    }
    HeaderValue::from_maybe_shared(joined.freeze()).ok()
}

impl<S: Send + Sync> FromRequestParts<S> for Conditional {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self::from_headers(&parts.headers))
    }
}

/// A content coding this service can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
}

impl Coding {
    fn header(self) -> Option<HeaderValue> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some(HeaderValue::from_static("gzip")),
            Coding::Br => Some(HeaderValue::from_static("br")),
        }
    }
}

/// The q-values (in thousandths) that `Accept-Encoding` gives the codings we know.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Weights {
    gzip: Option<u16>,
    br: Option<u16>,
    identity: Option<u16>,
    star: Option<u16>,
}

impl Weights {
    fn of(&self, coding: Coding) -> u16 {
        match coding {
            Coding::Gzip => self.gzip.or(self.star).unwrap_or(0),
            Coding::Br => self.br.or(self.star).unwrap_or(0),
            Coding::Identity => self.identity.or(self.star).unwrap_or(1000),
        }
    }
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` when it is not one.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The weights the request's `Accept-Encoding` gives; `None` without the field. An entry
/// that does not parse is ignored, as if the client had not sent it.
fn weights(request: &Conditional) -> Option<Weights> {
    let field = request.accept_encoding.as_ref()?;
    let mut w = Weights::default();
    let Ok(text) = field.to_str() else {
        return Some(w);
    };
    for entry in text.split(',') {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for param in parts {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("q") {
                q = qvalue(value.trim());
            }
        }
        let Some(q) = q else { continue };
        let slot = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            &mut w.gzip
        } else if name.eq_ignore_ascii_case("br") {
            &mut w.br
        } else if name.eq_ignore_ascii_case("identity") {
            &mut w.identity
        } else if name == "*" {
            &mut w.star
        } else {
            continue;
        };
        // A coding listed twice keeps its best weight.
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    Some(w)
}

/// Whether the request could take a compressed form: then a cached entry's encodings are
/// worth making (or waiting for).
pub fn wants_coding(request: &Conditional) -> bool {
    weights(request).is_some_and(|w| w.of(Coding::Gzip) > 0 || w.of(Coding::Br) > 0)
}

/// The representation to send, among identity and the codings `encoded` has; `None` when
/// the request accepts none of them (406).
pub fn choose(request: &Conditional, encoded: Option<&Encoded>) -> Option<Coding> {
    let Some(w) = weights(request) else {
        return Some(Coding::Identity);
    };
    let has = |c: Coding| match (c, encoded) {
        (Coding::Br, Some(e)) => e.br.is_some(),
        (Coding::Gzip, Some(e)) => e.gzip.is_some(),
        _ => false,
    };
    // In order of preference on equal weight: the smaller forms first.
    let best = [Coding::Br, Coding::Gzip, Coding::Identity]
        .into_iter()
        .filter(|&c| c == Coding::Identity || has(c))
        .map(|c| (w.of(c), c))
        .filter(|&(q, _)| q > 0)
        .fold(None, |best: Option<(u16, Coding)>, (q, c)| match best {
            Some((bq, _)) if bq >= q => best,
            _ => Some((q, c)),
        });
    best.map(|(_, c)| c)
}

/// Whether `If-None-Match` lists `etag` (or `*`): weak comparison, as RFC 9110 asks for
/// GET, so every representation of an answer matches its ETag.
pub fn if_none_match(request: &Conditional, etag: &HeaderValue) -> bool {
    fn bare(tag: &str) -> &str {
        tag.trim().trim_start_matches("W/")
    }
    let Some(sent) = request.if_none_match.as_ref() else {
        return false;
    };
    // What a client sends back most: the ETag as it got it (checked first, byte for byte,
    // on every 304).
    if sent == etag {
        return true;
    }
    let etag = bare(etag.to_str().unwrap_or(""));
    sent.to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim() == "*" || bare(t) == etag))
}

/// A cacheable JSON answer for `request`: `Cache-Control`, `ETag`, `Vary`; 304 when the
/// client has it; otherwise the representation [`choose`] picks, with its
/// `Content-Encoding` and `Content-Length`; 406 when none is acceptable.
pub fn answer(
    request: &Conditional,
    body: &Bytes,
    etag: &HeaderValue,
    encoded: Option<&Encoded>,
) -> Response {
    if if_none_match(request, etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        headers.reserve(ANSWER_HEADERS);
        headers.insert(header::VARY, VARY);
        headers.insert(header::CACHE_CONTROL, CACHE_CONTROL);
        headers.insert(header::ETAG, etag.clone());
        return response;
    }
    let Some(coding) = choose(request, encoded) else {
        let mut refused = ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Accept-Encoding accepts none of identity, gzip and br for this answer",
        )
        .into_response();
        refused.headers_mut().insert(header::VARY, VARY);
        return refused;
    };
    let bytes = match (coding, encoded) {
        (Coding::Gzip, Some(Encoded { gzip: Some(b), .. }))
        | (Coding::Br, Some(Encoded { br: Some(b), .. })) => b.clone(),
        _ => body.clone(),
    };
    let length = HeaderValue::from(bytes.len());
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.reserve(ANSWER_HEADERS);
    headers.insert(header::VARY, VARY);
    headers.insert(header::CACHE_CONTROL, CACHE_CONTROL);
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CONTENT_TYPE, JSON);
    if let Some(v) = coding.header() {
        headers.insert(header::CONTENT_ENCODING, v);
    }
    headers.insert(header::CONTENT_LENGTH, length);
    response
}

/// The headers an answer ends up with: the six above, plus `X-Cache`, `Age`,
/// `Server-Timing` and `X-Request-Id` added on the way out. Reserved at once, so that
/// the header map is allocated once per answer, not grown on the way.
const ANSWER_HEADERS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn req(accept: &[&str]) -> Conditional {
        Conditional::from_headers(&headers(accept))
    }

    fn both() -> Encoded {
        Encoded {
            gzip: Some(Bytes::from_static(b"g")),
            br: Some(Bytes::from_static(b"b")),
        }
    }

    #[test]
    fn codings_follow_rfc_9110() {
        let e = both();
        let pick = |a: &[&str]| choose(&req(a), Some(&e));
        assert_eq!(pick(&[]), Some(Coding::Identity), "no header: identity");
        assert_eq!(pick(&[""]), Some(Coding::Identity), "empty: identity only");
        assert_eq!(pick(&["gzip"]), Some(Coding::Gzip));
        assert_eq!(pick(&["x-gzip"]), Some(Coding::Gzip));
        assert_eq!(pick(&["GZIP"]), Some(Coding::Gzip));
        assert_eq!(pick(&["gzip, deflate, br"]), Some(Coding::Br));
        assert_eq!(pick(&["gzip", "br"]), Some(Coding::Br), "fields combine");
        assert_eq!(pick(&["br;q=0.5, gzip"]), Some(Coding::Gzip));
        // identity keeps its implicit q=1, which outweighs gzip at 0.1.
        assert_eq!(pick(&["br;q=0, gzip;q=0.1"]), Some(Coding::Identity));
        assert_eq!(pick(&["gzip;q=0.5, identity"]), Some(Coding::Identity));
        assert_eq!(pick(&["deflate"]), Some(Coding::Identity));
        assert_eq!(pick(&["*"]), Some(Coding::Br));
        assert_eq!(pick(&["*;q=0.5, gzip"]), Some(Coding::Gzip));
        assert_eq!(pick(&["identity;q=0, *;q=0.2, br;q=0"]), Some(Coding::Gzip));
        assert_eq!(pick(&["*;q=0"]), None);
        assert_eq!(pick(&["identity;q=0"]), None);
        assert_eq!(pick(&["gzip;q=0, br;q=0, identity;q=0"]), None);
        assert_eq!(pick(&["gzip;q=1.000"]), Some(Coding::Gzip));
        // Bad q-values make their entry void, not the header.
        assert_eq!(pick(&["gzip;q=2, br;q=0.0001"]), Some(Coding::Identity));
        assert_eq!(pick(&["gzip;q=abc, br"]), Some(Coding::Br));
        assert_eq!(pick(&[" , ;q=1, gzip ; q=1 "]), Some(Coding::Gzip));
        assert_eq!(pick(&["gzip ; q=0.9"]), Some(Coding::Identity));
    }

    #[test]
    fn only_forms_that_exist_are_chosen() {
        let gzip_only = Encoded {
            gzip: Some(Bytes::from_static(b"g")),
            br: None,
        };
        assert_eq!(
            choose(&req(&["gzip, br"]), Some(&gzip_only)),
            Some(Coding::Gzip)
        );
        assert_eq!(
            choose(&req(&["br"]), Some(&gzip_only)),
            Some(Coding::Identity)
        );
        assert_eq!(choose(&req(&["gzip"]), None), Some(Coding::Identity));
        assert_eq!(choose(&req(&["gzip, identity;q=0"]), None), None);
        assert!(wants_coding(&req(&["gzip"])));
        assert!(wants_coding(&req(&["*"])));
        assert!(!wants_coding(&req(&[])));
        assert!(!wants_coding(&req(&["identity, gzip;q=0"])));
    }

    #[test]
    fn if_none_match_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        let c = Conditional::from_headers(&h);
        assert!(if_none_match(&c, &HeaderValue::from_static("W/\"b\"")));
        assert!(
            if_none_match(&c, &HeaderValue::from_static("\"b\"")),
            "weak comparison"
        );
        assert!(if_none_match(&c, &HeaderValue::from_static("\"a\"")));
        assert!(!if_none_match(&c, &HeaderValue::from_static("\"c\"")));
        h.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"d\""));
        assert!(
            if_none_match(
                &Conditional::from_headers(&h),
                &HeaderValue::from_static("\"d\"")
            ),
            "two fields"
        );
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(if_none_match(
            &Conditional::from_headers(&h),
            &HeaderValue::from_static("\"anything\"")
        ));
        assert!(!if_none_match(
            &Conditional::default(),
            &HeaderValue::from_static("\"a\"")
        ));
    }

    #[test]
    fn answers_carry_vary_length_and_coding() {
        let body = Bytes::from_static(b"{\"identity\":true}");
        let e = both();
        let r = answer(
            &req(&["gzip"]),
            &body,
            &HeaderValue::from_static("W/\"x\""),
            Some(&e),
        );
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::VARY], "accept-encoding");
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert_eq!(h[header::CONTENT_LENGTH], "1");
        assert_eq!(h[header::ETAG], "W/\"x\"");
        let r = answer(
            &req(&[]),
            &body,
            &HeaderValue::from_static("W/\"x\""),
            Some(&e),
        );
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(r.headers()[header::CONTENT_LENGTH], body.len().to_string());
        let mut cond = headers(&["br"]);
        cond.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"x\""));
        let r = answer(
            &Conditional::from_headers(&cond),
            &body,
            &HeaderValue::from_static("W/\"x\""),
            Some(&e),
        );
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::VARY], "accept-encoding");
        let r = answer(
            &req(&["*;q=0"]),
            &body,
            &HeaderValue::from_static("W/\"x\""),
            Some(&e),
        );
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(r.headers()[header::VARY], "accept-encoding");
    }
}
