//! Talking to OpenTripPlanner.
//!
//! - [`otp2`]: OTP 2's GTFS GraphQL API (`POST {graphql_path}`), request bodies and
//!   response parsers. Pure functions, no I/O.
//! - [`otp1`]: OTP 1's REST index API (`GET /otp/routers/{router}/index/...`), paths and
//!   response parsers. Pure functions, no I/O.
//! - [`client`]: the HTTP client that sends those requests; [`breaker`]: its per-instance
//!   circuit breaker.
//! - [`instance`]: one configured instance at run time, and the calls made of it through
//!   either adapter, each for a [`instance::Caller`] (refresh, crawl or client).
//! - [`trace`]: the `x-request-id` and W3C `traceparent` a client's read-through passes on.
//!
//! Parsers take the raw body and return the [`crate::feed::model`] types, or
//! [`AdapterError::Malformed`] naming the JSON path that was wrong. Each answer has one
//! set of serde structs, read in one pass (`de` holds their field types and the error
//! messages); what is not about the JSON's shape (ids of the right feed, ranges) is
//! checked after. They never panic on bad input. OTP ids (`feedId:localId`) are split on
//! the first `:`; the model holds local ids only.

pub mod breaker;
pub mod client;
mod de;
pub mod instance;
pub mod otp1;
pub mod otp2;
pub mod trace;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The body is not what the API answers: not JSON, wrong shape, missing required fields, GraphQL `errors`.
    #[error("malformed OTP response: {0}")]
    Malformed(String),
}

// ---- Shared helpers for otp1 and otp2 (private to this module tree) ----

/// How much of a body or value an error message may echo.
const ECHO_CHARS: usize = 200;

fn malformed(msg: impl Into<String>) -> AdapterError {
    AdapterError::Malformed(msg.into())
}

/// `text` quoted, cut to [`ECHO_CHARS`] characters, control characters escaped.
fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Splits an OTP id `feedId:localId` (found at `path`) on the first `:`.
fn split_id<'a>(
    id: &'a str,
    path: &(impl std::fmt::Display + ?Sized),
) -> Result<(&'a str, &'a str), AdapterError> {
    match crate::feed::model::split_otp_id(id) {
        Some((feed, local)) if !feed.is_empty() && !local.is_empty() => Ok((feed, local)),
        _ => Err(malformed(format!(
            "{path}: {} is not a feedId:localId id",
            echo(id)
        ))),
    }
}

/// The local part of an OTP id that must belong to feed `gtfs_id`.
fn local_id<'a>(
    id: &'a str,
    gtfs_id: &str,
    path: &(impl std::fmt::Display + ?Sized),
) -> Result<&'a str, AdapterError> {
    let (feed, local) = split_id(id, path)?;
    if feed != gtfs_id {
        return Err(malformed(format!(
            "{path}: {} belongs to feed {}, not {}",
            echo(id),
            echo(feed),
            echo(gtfs_id)
        )));
    }
    Ok(local)
}

/// A pattern stop's id: local when the stop is of feed `gtfs_id`; the full OTP id when
/// it is of another feed (OTP 2's stop consolidation puts a "primary" stop of another
/// feed into patterns), so it cannot be mistaken for a stop of this feed.
fn stop_id(
    id: &str,
    gtfs_id: &str,
    path: &(impl std::fmt::Display + ?Sized),
) -> Result<String, AdapterError> {
    let (feed, local) = split_id(id, path)?;
    Ok(if feed == gtfs_id { local } else { id }.to_owned())
}

/// A GTFS colour as the model keeps it: hex without a leading `#`.
fn color(c: Option<&str>) -> Option<String> {
    c.map(|c| c.strip_prefix('#').unwrap_or(c))
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

/// A GTFS `route_sort_order`: negative (OTP 1 writes -999 for "not set") or out of
/// range counts as absent.
fn sort_order(n: Option<i64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

/// A GTFS `route_type` from an integer found at `path`.
fn route_type(n: i64, path: &(impl std::fmt::Display + ?Sized)) -> Result<i32, AdapterError> {
    i32::try_from(n).map_err(|_| malformed(format!("{path}: route type {n} is out of range")))
}

/// A GTFS `direction_id` found at `path`: `None` for OTP's -1 ("no direction").
fn direction(
    n: Option<i64>,
    path: &(impl std::fmt::Display + ?Sized),
) -> Result<Option<u8>, AdapterError> {
    match n {
        None | Some(-1) => Ok(None),
        Some(d) => u8::try_from(d)
            .map(Some)
            .map_err(|_| malformed(format!("{path}: direction {d} is not 0, 1 or -1"))),
    }
}

/// A route's GTFS type and OTP mode when it has at least one of them: the missing one is
/// derived (a type's mode by `mode_of_type`, which differs between OTP 1 and OTP 2).
fn type_and_mode(
    route_type: Option<i32>,
    mode: Option<&str>,
    mode_of_type: fn(i32) -> &'static str,
) -> Option<(i32, String)> {
    match (route_type, mode) {
        (Some(t), Some(m)) => Some((t, m.to_owned())),
        (None, Some(m)) => Some((crate::feed::model::route_type_of_mode(m), m.to_owned())),
        (Some(t), None) => Some((t, mode_of_type(t).to_owned())),
        (None, None) => None,
    }
}

/// The fields a route object of either API names alike, optional texts that are empty
/// already taken as absent.
struct SummaryFields<'t> {
    short_name: Option<&'t str>,
    long_name: Option<&'t str>,
    mode: Option<&'t str>,
    route_type: Option<i64>,
    color: Option<&'t str>,
    text_color: Option<&'t str>,
    sort_order: Option<i64>,
}

/// A route summary from the route object at `path` of either API: `mode` and/or `type`
/// (the missing one derived, a type's mode by `mode_of_type`, which differs between
/// OTP 1 and OTP 2), names, colours and sort order.
fn route_summary(
    route: &SummaryFields<'_>,
    path: &dyn std::fmt::Display,
    route_id: &str,
    agency_id: Option<String>,
    mode_of_type: fn(i32) -> &'static str,
) -> Result<crate::feed::model::RouteSummary, AdapterError> {
    let route_type = route
        .route_type
        .map(|t| route_type(t, &format_args!("{path}.type")))
        .transpose()?;
    let Some((route_type, mode)) = type_and_mode(route_type, route.mode, mode_of_type) else {
        return Err(malformed(format!("{path}: neither mode nor type")));
    };
    Ok(crate::feed::model::RouteSummary {
        route_id: route_id.to_owned(),
        agency_id,
        short_name: route.short_name.map(str::to_owned),
        long_name: route.long_name.map(str::to_owned),
        route_type,
        mode,
        color: color(route.color),
        text_color: color(route.text_color),
        sort_order: sort_order(route.sort_order),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_caps_and_escapes() {
        let long = "é".repeat(500);
        let e = echo(&long);
        assert_eq!(e.chars().filter(|&c| c == 'é').count(), ECHO_CHARS);
        assert!(e.ends_with("..."));
        assert_eq!(echo("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn body_errors_are_short() {
        let body = format!("<html>{}</html>", "x".repeat(10_000));
        let parse_body = de::decode::<serde::de::IgnoredAny>;
        let AdapterError::Malformed(msg) = parse_body(body.as_bytes(), "").unwrap_err();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("<html>"), "{msg}");
        let AdapterError::Malformed(msg) = parse_body(b" \n", "").unwrap_err();
        assert_eq!(msg, "empty body");
        // Invalid UTF-8 is reported, not a panic.
        assert!(parse_body(&[0xff, 0xfe, b'{'], "").is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(split_id("F:a:b", "p").unwrap(), ("F", "a:b"));
        assert!(split_id("nocolon", "p").is_err());
        assert!(split_id(":x", "p").is_err());
        assert!(split_id("F:", "p").is_err());
        assert_eq!(local_id("F:1", "F", "p").unwrap(), "1");
        let AdapterError::Malformed(msg) = local_id("G:1", "F", "data.route.gtfsId").unwrap_err();
        assert!(
            msg.contains("data.route.gtfsId") && msg.contains("feed \"G\""),
            "{msg}"
        );
    }

    #[test]
    fn small_conversions() {
        assert_eq!(color(Some("#D81526")).as_deref(), Some("D81526"));
        assert_eq!(color(Some("")), None);
        assert_eq!(sort_order(Some(-999)), None);
        assert_eq!(sort_order(Some(120)), Some(120));
        assert_eq!(direction(Some(-1), "p").unwrap(), None);
        assert_eq!(direction(Some(1), "p").unwrap(), Some(1));
        assert!(direction(Some(-2), "p").is_err());
        assert!(route_type(1 << 40, "p").is_err());
    }
}
