//! Talking to OpenTripPlanner.
//!
//! - [`otp2`]: OTP 2's GTFS GraphQL API (`POST {graphql_path}`), request bodies and
//!   response parsers. Pure functions, no I/O.
//! - [`otp1`]: OTP 1's REST index API (`GET /otp/routers/{router}/index/...`), paths and
//!   response parsers. Pure functions, no I/O.
//! - [`client`]: the HTTP client that sends those requests; [`breaker`]: its per-instance
//!   circuit breaker.
//! - [`instance`]: one configured instance at run time, and the calls made of it through
//!   either adapter.
//!
//! Parsers take the raw body and return the [`crate::feed::model`] types, or
//! [`AdapterError::Malformed`] naming the JSON path that was wrong. They never panic on
//! bad input. OTP ids (`feedId:localId`) are split on the first `:`; the model holds
//! local ids only.

pub mod breaker;
pub mod client;
pub mod instance;
pub mod otp1;
pub mod otp2;

use serde_json::{Map, Value};

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

/// The body as JSON, or why not (with the start of the body).
fn parse_body(body: &[u8]) -> Result<Value, AdapterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("empty body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(4 * ECHO_CHARS)]);
        malformed(format!("not JSON ({e}); body starts {}", echo(&text)))
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(path: &str, expected: &str, found: &Value) -> AdapterError {
    malformed(format!(
        "{path}: expected {expected}, found {}",
        kind(found)
    ))
}

/// `v` as an array (the items with their paths), or an error naming `path`.
fn array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], AdapterError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| wrong_type(path, "an array", v))
}

/// The items of an array that must all be objects, with their paths.
fn objects<'a>(
    items: &'a [Value],
    path: &'a str,
) -> impl Iterator<Item = Result<Obj<'a>, AdapterError>> + 'a {
    items
        .iter()
        .enumerate()
        .map(move |(i, item)| Obj::new(item, Path::Item(path, i)))
}

/// Where a value was found, for error messages. An array item's path is only written out
/// when an error needs it: answers hold thousands of items (trips) that are all fine.
enum Path<'a> {
    Static(&'static str),
    Owned(String),
    /// Item `.1` of the array at `.0`.
    Item(&'a str, usize),
}

impl From<&'static str> for Path<'_> {
    fn from(path: &'static str) -> Self {
        Path::Static(path)
    }
}

impl From<String> for Path<'_> {
    fn from(path: String) -> Self {
        Path::Owned(path)
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Static(path) => f.write_str(path),
            Path::Owned(path) => f.write_str(path),
            Path::Item(array, index) => write!(f, "{array}[{index}]"),
        }
    }
}

/// The path of a field of an object ([`Obj::field`]).
struct FieldPath<'k>(&'k Path<'k>, &'k str);

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// A JSON object and the path that led to it, with typed accessors whose errors name
/// the path. Missing and `null` are the same for the optional accessors (OTP 1 leaves
/// nulls out, OTP 2 writes them).
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: Path<'a>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: impl Into<Path<'a>>) -> Result<Self, AdapterError> {
        let path = path.into();
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(wrong_type(&path.to_string(), "an object", other)),
        }
    }

    fn path_of(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// [`Obj::path_of`], written out only if an error message needs it.
    fn field<'k>(&'k self, key: &'k str) -> FieldPath<'k> {
        FieldPath(&self.path, key)
    }

    /// The value at `key`, `None` when missing or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value, AdapterError> {
        match self.map.get(key) {
            None => Err(malformed(format!("{}: missing", self.path_of(key)))),
            Some(Value::Null) => Err(malformed(format!("{}: is null", self.path_of(key)))),
            Some(v) => Ok(v),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str, AdapterError> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| wrong_type(&self.path_of(key), "a string", v))
    }

    /// An optional text; empty strings count as absent.
    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, AdapterError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
            Some(v) => Err(wrong_type(&self.path_of(key), "a string", v)),
        }
    }

    fn opt_i64(&self, key: &str) -> Result<Option<i64>, AdapterError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(&self.path_of(key), "an integer", v)),
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, AdapterError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(&self.path_of(key), "a number", v)),
        }
    }

    fn opt_obj(&self, key: &str) -> Result<Option<Obj<'a>>, AdapterError> {
        self.get(key)
            .map(|v| Obj::new(v, self.path_of(key)))
            .transpose()
    }

    fn array(&self, key: &str) -> Result<&'a [Value], AdapterError> {
        array(self.required(key)?, &self.path_of(key))
    }

    /// An optional list: missing or null is empty.
    fn opt_array(&self, key: &str) -> Result<&'a [Value], AdapterError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(v) => array(v, &self.path_of(key)),
        }
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
fn route_type(n: i64, path: &str) -> Result<i32, AdapterError> {
    i32::try_from(n).map_err(|_| malformed(format!("{path}: route type {n} is out of range")))
}

/// A GTFS `direction_id` found at `path`: `None` for OTP's -1 ("no direction").
fn direction(n: Option<i64>, path: &str) -> Result<Option<u8>, AdapterError> {
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

/// A route summary from a route object of either API: `mode` and/or `type` (the missing
/// one derived, a type's mode by `mode_of_type`, which differs between OTP 1 and OTP 2),
/// names, colours and sort order under the same field names.
fn route_summary(
    route: &Obj<'_>,
    route_id: &str,
    agency_id: Option<String>,
    mode_of_type: fn(i32) -> &'static str,
) -> Result<crate::feed::model::RouteSummary, AdapterError> {
    let mode = route.opt_str("mode")?;
    let route_type = route
        .opt_i64("type")?
        .map(|t| route_type(t, &route.path_of("type")))
        .transpose()?;
    let Some((route_type, mode)) = type_and_mode(route_type, mode, mode_of_type) else {
        return Err(malformed(format!("{}: neither mode nor type", route.path)));
    };
    Ok(crate::feed::model::RouteSummary {
        route_id: route_id.to_owned(),
        agency_id,
        short_name: route.opt_str("shortName")?.map(str::to_owned),
        long_name: route.opt_str("longName")?.map(str::to_owned),
        route_type,
        mode,
        color: color(route.opt_str("color")?),
        text_color: color(route.opt_str("textColor")?),
        sort_order: sort_order(route.opt_i64("sortOrder")?),
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
        let AdapterError::Malformed(msg) = parse_body(body.as_bytes()).unwrap_err();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("<html>"), "{msg}");
        let AdapterError::Malformed(msg) = parse_body(b" \n").unwrap_err();
        assert_eq!(msg, "empty body");
        // Invalid UTF-8 is reported, not a panic.
        assert!(parse_body(&[0xff, 0xfe, b'{']).is_err());
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
