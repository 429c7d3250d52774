//! What a client's request passes on to OTP when it reads through (a route detail that is
//! not cached), so that one request can be followed across both services' logs:
//!
//! - `x-request-id`: the request's id, the client's own or the one made for it
//!   (`crate::api::layers`), as the client sees it on the answer;
//! - `traceparent` (W3C Trace Context level 1): the client's trace when it sent a valid
//!   `traceparent` (same trace id and flags, a new parent id: the OTP call is a span of
//!   ours inside the client's), otherwise a new trace (random trace id, flags `00`: this
//!   service records no spans, so it does not ask for sampling).
//!
//! How it gets there: an explicit value, not a task-local. The route handler extracts a
//! [`TraceContext`] (two header values cloned, nothing parsed: a cache hit never looks at
//! it); the cache loader it builds on a miss owns a copy, turns it into an [`Upstream`]
//! when it really asks OTP, and passes it down as [`super::instance::Caller::Client`],
//! which adds [`Upstream::headers`] to every request of that call. An explicit value
//! survives what a task-local would not: the cache's background revalidation of a stale
//! entry runs in a task of its own, and still carries the ids of the request that
//! started it. Calls of the scheduler (refreshes, crawls) carry neither header.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// `traceparent`, W3C Trace Context.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a client request brought: its request id and its `traceparent` header as sent
/// (checked only when OTP is called).
#[derive(Debug, Clone, Default)]
pub struct TraceContext {
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
}

/// The trace a read-through belongs to, resolved from a [`TraceContext`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    request_id: Option<HeaderValue>,
    /// 32 lower-case hex digits.
    trace_id: String,
    /// 2 lower-case hex digits.
    flags: String,
}

impl TraceContext {
    /// The client's trace if its `traceparent` is valid, else a new one.
    pub fn upstream(&self) -> Upstream {
        let client = self
            .traceparent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (trace_id, flags) = match client {
            Some((trace_id, flags)) => (trace_id.to_owned(), flags.to_owned()),
            None => (random_hex::<16>(), "00".to_owned()),
        };
        Upstream {
            request_id: self.request_id.clone(),
            trace_id,
            flags,
        }
    }
}

impl Upstream {
    /// The trace id, as logged.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The headers of one request to OTP: `x-request-id` (when there is one) and a
    /// `traceparent` with a new parent id.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(2);
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID.clone(), id.clone());
        }
        let traceparent = format!("00-{}-{}-{}", self.trace_id, random_hex::<8>(), self.flags);
        // Hex digits and dashes only.
        if let Ok(value) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT.clone(), value);
        }
        headers
    }
}

/// The trace id and flags of a valid `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`, lower
/// case, ids not all zeros. A later version (`01`-`fe`) is read the same way when its first
/// 55 characters have that form and what follows starts with `-`, as the specification
/// asks of a version 00 parser; version `ff` is invalid.
pub fn parse_traceparent(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_matches([' ', '\t']);
    let head = text.get(..55)?;
    let rest = &text[55..];
    let version = &head[..2];
    if !is_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && !rest.is_empty()
        || version != "00" && !rest.is_empty() && !rest.starts_with('-')
    {
        return None;
    }
    let bytes = head.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace_id, parent_id, flags) = (&head[3..35], &head[36..52], &head[53..55]);
    let valid = |id: &str| is_hex(id) && id.bytes().any(|b| b != b'0');
    (valid(trace_id) && valid(parent_id) && is_hex(flags)).then_some((trace_id, flags))
}

/// Lower-case hex digits only.
fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `N` random bytes in hex, not all zeros (an all-zero id is invalid).
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::rng().fill(&mut bytes[..]);
    if bytes.iter().all(|&b| b == 0) {
        bytes[N - 1] = 1;
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_traceparents_are_read_and_others_refused() {
        assert_eq!(
            parse_traceparent(VALID),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "01"))
        );
        // A later version with more fields is read for what version 00 defines.
        assert_eq!(
            parse_traceparent(&format!("cc{}-what-comes-next", &VALID[2..])),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "01"))
        );
        for bad in [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}-"),           // version 00 has 4 fields
            &format!("ff{}", &VALID[2..]),  // version ff
            &format!("cc{}x", &VALID[2..]), // later version, no dash
            &VALID.to_uppercase(),          // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_clients_trace_is_continued_with_a_new_span_else_a_new_trace_starts() {
        let ctx = TraceContext {
            request_id: Some(HeaderValue::from_static("req-1")),
            traceparent: Some(HeaderValue::from_static(VALID)),
        };
        let up = ctx.upstream();
        let (a, b) = (up.headers(), up.headers());
        assert_eq!(a["x-request-id"], "req-1");
        let sent = a["traceparent"].to_str().unwrap();
        let (trace_id, flags) = parse_traceparent(sent).expect("a valid traceparent");
        assert_eq!(
            (trace_id, flags),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "01")
        );
        assert_ne!(&sent[36..52], "00f067aa0ba902b7", "a new parent id");
        assert_ne!(a["traceparent"], b["traceparent"], "one span per request");

        for client in [None, Some(HeaderValue::from_static("garbage"))] {
            let ctx = TraceContext {
                request_id: None,
                traceparent: client,
            };
            let up = ctx.upstream();
            let headers = up.headers();
            assert!(headers.get("x-request-id").is_none());
            let sent = headers["traceparent"].to_str().unwrap();
            let (trace_id, flags) = parse_traceparent(sent).expect("a valid traceparent");
            assert_eq!((trace_id, flags), (up.trace_id(), "00"));
            assert_ne!(trace_id, ctx.upstream().trace_id(), "a new trace each time");
        }
    }
}
