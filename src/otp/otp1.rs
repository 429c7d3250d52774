//! OTP 1's REST index API: request paths and response parsers (no I/O).
//!
//! Every request is a `GET` under `/otp/routers/{router}/index`. The shapes are those of
//! OTP's dev-1.x branch (`org.opentripplanner.index.IndexAPI` and the classes in
//! `org.opentripplanner.index.model`), serialized by Jackson with nulls left out:
//!
//! | path | answer |
//! |---|---|
//! | `/feeds` | `["feedId", ...]` |
//! | `/routes` | `[RouteShort]`: `id`, `shortName`, `longName`, `mode`, `color`, `agencyName` (TriMet's build adds `sortOrder`) |
//! | `/routes/{id}` | `Route`: `id`, `agency` {`id`, `name`, ...}, `shortName`, `longName`, `type`, `color`, `textColor`, `sortOrder` (-999 when unset), `sortOrderSet`, ... |
//! | `/routes/{id}/patterns` | `[PatternShort]`: `id` (the pattern code, `feed:route:direction:nn`), `desc` |
//! | `/patterns/{id}` | `PatternDetail`: `id`, `desc`, `routeId`, `stops` [`id`, `code`, `name`, `lat`, `lon`, ...], `trips` [`id`, `tripHeadsign`, `serviceId`, `shapeId`, `direction`] |
//!
//! Route, stop and trip ids are `feedId:localId`; an agency id is the bare GTFS
//! `agency_id`. Ids go into paths as one percent-encoded segment, since a local id may
//! hold `/`, ` `, `%`, `#` or `?`.
//!
//! What the index does not say, and how it is filled in:
//! - `RouteShort` has no `type`: it is derived from `mode` ([`route_type_of_mode`]), so a
//!   route listed as `TRAM` has type 0 even if its GTFS type is 900; the full `Route`
//!   has the real `type`, and its `mode` is derived the way OTP 1 derives it, so a route
//!   shows the same mode in the list and in its detail;
//! - `RouteShort` has no agency id, only `agencyName`: the id is looked up by name among
//!   the feed's agencies (`/agencies/{feedId}`, asked with the feed list); no `textColor`;
//! - a pattern has no direction or headsign of its own: the direction is the trips'
//!   `direction` when all trips have the same one, the headsign the most common
//!   `tripHeadsign` (ties: the first met), else none, as OTP 2 and the feed's own trips
//!   say (the pattern's `desc`, "40 to E Main St (1:EMSI)", is OTP's label, not a headsign);
//! - a frequency-based trip (frequencies.txt) is in a pattern's `trips` once per
//!   frequency row (OTP 1 adds one `FrequencyEntry` each): trips are counted by id.
//!
//! Seen on a real OTP 1.4.0: the lists (`/routes`, a route's patterns, a pattern's trips)
//! come in hash-map order, pattern numbers too (`TripPattern.generateUniqueIds` walks a
//! `HashMultimap`); feed ids are `feed_info.feed_id`, else "1", "2", ... in the order
//! the graph builder met the feeds; a route without a usable trip is in no list and
//! answers 404; a route with a colour but no text colour gets `textColor` `000000` or
//! `FFFFFF` from the graph builder.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use super::de::{AnyBool, Int, List, Num, Object, Text, TopList, decode, items, owned, text};
use super::{AdapterError, SummaryFields, direction, local_id, split_id, stop_id};
use crate::feed::model::{
    AgencyInfo, FeedInfo, Pattern, RouteSummary, StopRef, mode_of_route_type,
};

/// Bytes escaped in a path segment: all but RFC 3986's unreserved characters and `:`
/// (which OTP's own examples write as is, `TriMet:52`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

fn index(router: &str) -> String {
    format!(
        "/otp/routers/{}/index",
        utf8_percent_encode(router, SEGMENT)
    )
}

fn route_segment(gtfs_id: &str, route_id: &str) -> String {
    utf8_percent_encode(&format!("{gtfs_id}:{route_id}"), SEGMENT).to_string()
}

/// `GET` this for the feed ids ([`parse_feeds`]).
pub fn feeds_path(router: &str) -> String {
    format!("{}/feeds", index(router))
}

/// `GET` this for the agencies of one feed ([`parse_agencies`]).
pub fn agencies_path(router: &str, gtfs_id: &str) -> String {
    format!(
        "{}/agencies/{}",
        index(router),
        utf8_percent_encode(gtfs_id, SEGMENT)
    )
}

/// `GET` this for every route of every feed ([`parse_routes`]).
pub fn routes_path(router: &str) -> String {
    format!("{}/routes", index(router))
}

/// `GET` this for one route ([`parse_route`]).
pub fn route_path(router: &str, gtfs_id: &str, route_id: &str) -> String {
    format!(
        "{}/routes/{}",
        index(router),
        route_segment(gtfs_id, route_id)
    )
}

/// `GET` this for the ids of a route's patterns ([`parse_pattern_ids`]).
pub fn route_patterns_path(router: &str, gtfs_id: &str, route_id: &str) -> String {
    format!(
        "{}/routes/{}/patterns",
        index(router),
        route_segment(gtfs_id, route_id)
    )
}

/// `GET` this for one pattern ([`parse_pattern`]); `pattern_id` as
/// [`parse_pattern_ids`] gave it.
pub fn pattern_path(router: &str, pattern_id: &str) -> String {
    format!(
        "{}/patterns/{}",
        index(router),
        utf8_percent_encode(pattern_id, SEGMENT)
    )
}

/// The answer to [`feeds_path`]: feed ids, without agencies (the index lists those
/// elsewhere).
pub fn parse_feeds(body: &[u8]) -> Result<Vec<FeedInfo>, AdapterError> {
    let TopList(feeds) = decode::<TopList<FeedId<'_>>>(body, "feeds")?;
    Ok(feeds
        .into_iter()
        .map(|FeedId(id)| FeedInfo {
            gtfs_id: id.into_owned(),
            agencies: Vec::new(),
        })
        .collect())
}

/// The answer to [`agencies_path`]: `[Agency]` with `id`, `name`, `timezone` (an unknown
/// feed gives `[]`).
pub fn parse_agencies(body: &[u8]) -> Result<Vec<AgencyInfo>, AdapterError> {
    let TopList(agencies) = decode::<TopList<Object<AgencyIn<'_>>>>(body, "agencies")?;
    Ok(agencies
        .into_iter()
        .map(|Object(agency)| AgencyInfo {
            agency_id: owned(&agency.id),
            name: owned(&agency.name).unwrap_or_default(),
            timezone: owned(&agency.timezone),
        })
        .collect())
}

/// The answer to [`routes_path`]: the routes of feed `gtfs_id` (the index lists every
/// feed's), in OTP's order. `RouteShort` names its agency only (`agencyName`): the id is
/// that of the feed's agency of that name in `agencies` ([`parse_agencies`]), when
/// exactly one has it.
pub fn parse_routes(
    gtfs_id: &str,
    body: &[u8],
    agencies: &[AgencyInfo],
) -> Result<Vec<RouteSummary>, AdapterError> {
    let TopList(routes) = decode::<TopList<Object<RouteIn<'_>>>>(body, "routes")?;
    let agency_id = |name: Option<&str>| {
        let name = name?;
        let mut named = agencies.iter().filter(|a| a.name == name);
        match (named.next(), named.next()) {
            (Some(a), None) => a.agency_id.clone(),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(routes.len());
    for (i, Object(route)) in routes.iter().enumerate() {
        let id_path = format_args!("routes[{i}].id");
        let (feed, route_id) = split_id(route.id.as_str(), &id_path)?;
        if feed == gtfs_id {
            let agency = agency_id(text(&route.agency_name));
            let path = format_args!("routes[{i}]");
            out.push(summary(route, &path, route_id, agency)?);
        }
    }
    Ok(out)
}

/// The answer to [`route_path`]: the full route, which must be of feed `gtfs_id`.
pub fn parse_route(gtfs_id: &str, body: &[u8]) -> Result<RouteSummary, AdapterError> {
    let Object(route) = decode::<Object<RouteIn<'_>>>(body, "route")?;
    let route_id = local_id(route.id.as_str(), gtfs_id, "route.id")?;
    let agency_id = route
        .agency
        .as_ref()
        .and_then(|Object(agency)| owned(&agency.id));
    let mut summary = summary(&route, &"route", route_id, agency_id)?;
    if route.sort_order_set.and_then(|set| set.0) == Some(false) {
        summary.sort_order = None;
    }
    Ok(summary)
}

/// The answer to [`route_patterns_path`]: the pattern ids, for [`pattern_path`].
pub fn parse_pattern_ids(body: &[u8]) -> Result<Vec<String>, AdapterError> {
    let TopList(patterns) = decode::<TopList<Object<PatternShort<'_>>>>(body, "patterns")?;
    Ok(patterns
        .into_iter()
        .map(|Object(p)| p.id.into_string())
        .collect())
}

/// The answer to [`pattern_path`], for a pattern of feed `gtfs_id`.
pub fn parse_pattern(gtfs_id: &str, body: &[u8]) -> Result<Pattern, AdapterError> {
    let Object(p) = decode::<Object<PatternDetail<'_>>>(body, "pattern")?;
    if let Some(route_id) = text(&p.route_id) {
        local_id(route_id, gtfs_id, "pattern.routeId")?;
    }

    let stops = items(p.stops)
        .into_iter()
        .enumerate()
        .map(|(i, Object(s))| {
            let path = format_args!("pattern.stops[{i}].id");
            Ok(StopRef {
                stop_id: stop_id(s.id.as_str(), gtfs_id, &path)?,
                name: owned(&s.name),
                code: owned(&s.code),
                lat: s.lat.map(|n| n.0),
                lon: s.lon.map(|n| n.0),
            })
        })
        .collect::<Result<Vec<_>, AdapterError>>()?;

    let trips = items(p.trips);
    let mut directions = Vec::with_capacity(trips.len());
    let mut headsigns = Vec::with_capacity(trips.len());
    // A frequency-based trip is listed once per frequencies.txt row: counted once.
    let mut seen = HashSet::with_capacity(trips.len());
    for (i, Object(trip)) in trips.iter().enumerate() {
        if let Some(id) = text(&trip.id)
            && !seen.insert(id)
        {
            continue;
        }
        let path = format_args!("pattern.trips[{i}].direction");
        directions.push(direction(trip.direction.map(|d| d.0), &path)?);
        headsigns.extend(text(&trip.trip_headsign));
    }
    let direction_id = match directions.split_first() {
        Some((first, rest)) if rest.iter().all(|d| d == first) => *first,
        _ => None,
    };
    let headsign = most_common(&headsigns);

    Ok(Pattern {
        pattern_id: p.id.into_string(),
        direction_id,
        headsign: headsign.map(str::to_owned),
        stops,
        trip_count: directions.len(),
    })
}

/// A feed id: a string, not empty.
struct FeedId<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for FeedId<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FeedIdVisitor;
        impl FeedIdVisitor {
            fn check<E: de::Error>(self, id: Cow<'_, str>) -> Result<Cow<'_, str>, E> {
                if id.is_empty() {
                    return Err(E::invalid_type(Unexpected::Str(""), &self));
                }
                Ok(id)
            }
        }
        impl<'de> Visitor<'de> for FeedIdVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a feed id")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                self.check(Cow::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                self.check(Cow::Owned(s.to_owned()))
            }
        }
        d.deserialize_any(FeedIdVisitor).map(FeedId)
    }
}

#[derive(Deserialize)]
struct AgencyIn<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    timezone: Option<Text<'a>>,
}

/// A `RouteShort` or a full `Route`: they share field names; the first has `mode` and
/// `agencyName`, the second `type`, `agency` and `sortOrderSet`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteIn<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    short_name: Option<Text<'a>>,
    #[serde(borrow)]
    long_name: Option<Text<'a>>,
    #[serde(borrow)]
    mode: Option<Text<'a>>,
    #[serde(rename = "type")]
    route_type: Option<Int>,
    #[serde(borrow)]
    color: Option<Text<'a>>,
    #[serde(borrow)]
    text_color: Option<Text<'a>>,
    sort_order: Option<Int>,
    /// Only `false` matters (the sort order is OTP 1's -999 "not set"), of any value.
    sort_order_set: Option<AnyBool>,
    #[serde(borrow)]
    agency: Option<Object<AgencyRef<'a>>>,
    #[serde(borrow)]
    agency_name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct AgencyRef<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct PatternShort<'a> {
    #[serde(borrow)]
    id: Text<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatternDetail<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    route_id: Option<Text<'a>>,
    #[serde(borrow)]
    stops: Option<List<Object<StopIn<'a>>>>,
    #[serde(borrow)]
    trips: Option<List<Object<TripIn<'a>>>>,
}

#[derive(Deserialize)]
struct StopIn<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    code: Option<Text<'a>>,
    lat: Option<Num>,
    lon: Option<Num>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TripIn<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    direction: Option<Int>,
    #[serde(borrow)]
    trip_headsign: Option<Text<'a>>,
}

/// The most frequent value; among equals, the one met first.
fn most_common<'a>(values: &[&'a str]) -> Option<&'a str> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, v) in values.iter().enumerate() {
        counts.entry(v).or_insert((0, i)).0 += 1;
    }
    counts
        .into_iter()
        .max_by(|(_, (n1, i1)), (_, (n2, i2))| n1.cmp(n2).then(i2.cmp(i1)))
        .map(|(v, _)| v)
}

/// A summary from a `RouteShort` or a full `Route` found at `path`.
fn summary(
    route: &RouteIn<'_>,
    path: &dyn fmt::Display,
    route_id: &str,
    agency_id: Option<String>,
) -> Result<RouteSummary, AdapterError> {
    let fields = SummaryFields {
        short_name: text(&route.short_name),
        long_name: text(&route.long_name),
        mode: text(&route.mode),
        route_type: route.route_type.map(|t| t.0),
        color: text(&route.color),
        text_color: text(&route.text_color),
        sort_order: route.sort_order.map(|n| n.0),
    };
    super::route_summary(&fields, path, route_id, agency_id, otp1_mode)
}

/// The mode OTP 1 gives a GTFS route type (dev-1.x `GtfsLibrary.getTraverseMode`, which
/// is what `RouteShort.mode` says), so that a route's detail agrees with the route list.
/// Types OTP 1 rejects fall back to [`mode_of_route_type`].
fn otp1_mode(route_type: i32) -> &'static str {
    match route_type {
        100..=199 => "RAIL",
        200..=299 => "BUS",
        401..=402 => "SUBWAY",
        300..=499 => "RAIL",
        500..=699 => "SUBWAY",
        700..=899 => "BUS",
        900..=999 => "TRAM",
        1000..=1099 | 1200..=1299 => "FERRY",
        1100..=1199 => "AIRPLANE",
        1300..=1399 => "GONDOLA",
        1400..=1499 => "FUNICULAR",
        1500..=1599 => "BUS",
        1600..=1699 => "CAR",
        _ => mode_of_route_type(route_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;
    use serde_json::{Value, json};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/otp/1.x");

    fn fixture(name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(format!("{FIXTURES}/{name}")).unwrap()).unwrap()
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn msg(err: AdapterError) -> String {
        let AdapterError::Malformed(m) = err;
        m
    }

    /// The path's segments, decoded, as a server would route them.
    fn segments(path: &str) -> Vec<String> {
        let url = url::Url::parse(&format!("http://otp.test{path}")).unwrap();
        assert_eq!(url.path(), path, "the URL parser keeps the path as built");
        url.path_segments()
            .unwrap()
            .map(|s| percent_decode_str(s).decode_utf8().unwrap().into_owned())
            .collect()
    }

    #[test]
    fn paths() {
        assert_eq!(feeds_path("default"), "/otp/routers/default/index/feeds");
        assert_eq!(routes_path("default"), "/otp/routers/default/index/routes");
        assert_eq!(
            route_path("default", "TriMet", "52"),
            "/otp/routers/default/index/routes/TriMet:52"
        );
        assert_eq!(
            route_patterns_path("default", "TriMet", "4"),
            "/otp/routers/default/index/routes/TriMet:4/patterns"
        );
        assert_eq!(
            pattern_path("default", "TriMet:90:0:01"),
            "/otp/routers/default/index/patterns/TriMet:90:0:01"
        );
    }

    #[test]
    fn awkward_ids_make_one_segment() {
        let id = "a/b c#d%e?f+g;h&Ü";
        let path = route_path("default", "F", id);
        assert_eq!(
            path,
            "/otp/routers/default/index/routes/F:a%2Fb%20c%23d%25e%3Ff%2Bg%3Bh%26%C3%9C"
        );
        let segs = segments(&path);
        assert_eq!(segs.len(), 6, "{segs:?}");
        assert_eq!(segs[5], format!("F:{id}"));

        let segs = segments(&route_patterns_path("my router", "F/G", id));
        assert_eq!(
            segs,
            [
                "otp",
                "routers",
                "my router",
                "index",
                "routes",
                &format!("F/G:{id}"),
                "patterns"
            ]
        );

        let segs = segments(&pattern_path("default", "F:a/b c#d:0:01"));
        assert_eq!(segs.len(), 6, "{segs:?}");
        assert_eq!(segs[5], "F:a/b c#d:0:01");
    }

    #[test]
    fn feeds() {
        let feeds = parse_feeds(br#"["TriMet","C-TRAN"]"#).unwrap();
        assert_eq!(
            feeds.iter().map(|f| f.gtfs_id.as_str()).collect::<Vec<_>>(),
            ["TriMet", "C-TRAN"]
        );
        assert!(feeds.iter().all(|f| f.agencies.is_empty()));
        assert_eq!(parse_feeds(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn routes_from_trimet_stop_mock() {
        // The stop viewer's `routes` list is `/stops/{id}/routes`: RouteShort, as `/routes`.
        let mut routes = fixture("mock-otp-transit-index-data.json")["routes"].clone();
        routes
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "C-TRAN:4", "mode": "BUS", "agencyName": "C-TRAN"}));
        let parsed = parse_routes("TriMet", &bytes(&routes), &[]).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed[0],
            RouteSummary {
                route_id: "20".into(),
                agency_id: None,
                short_name: Some("20".into()),
                long_name: Some("Burnside/Stark".into()),
                route_type: 3,
                mode: "BUS".into(),
                color: None,
                text_color: None,
                sort_order: Some(2600),
            }
        );
        assert_eq!(
            parse_routes("C-TRAN", &bytes(&routes), &[]).unwrap()[0].route_id,
            "4"
        );
        // The dev-1.x RouteShort: no sortOrder; a colour; a mode that gives the type.
        let body = json!([{"id": "F:1", "shortName": "1", "mode": "SUBWAY", "color": "FF0000",
                           "agencyName": "A"}]);
        let r = &parse_routes("F", &bytes(&body), &[]).unwrap()[0];
        assert_eq!((r.route_type, r.sort_order), (1, None));
        assert_eq!(r.color.as_deref(), Some("FF0000"));
    }

    #[test]
    fn route_list_agency_ids_come_from_the_feeds_agencies_by_name() {
        // As a real OTP 1.4.0 answers /index/agencies/1.
        let agencies = parse_agencies(
            br#"[{"id":"DTA","name":"Demo Transit Authority","url":"http://google.com","timezone":"America/Los_Angeles"}]"#,
        )
        .unwrap();
        assert_eq!(
            agencies,
            vec![AgencyInfo {
                agency_id: Some("DTA".into()),
                name: "Demo Transit Authority".into(),
                timezone: Some("America/Los_Angeles".into()),
            }]
        );
        assert!(parse_agencies(b"[]").unwrap().is_empty());
        assert!(parse_agencies(br#"{"id":"DTA"}"#).is_err());
        let body = json!([
            {"id": "1:AB", "mode": "BUS", "agencyName": "Demo Transit Authority"},
            {"id": "1:X", "mode": "BUS", "agencyName": "Someone Else"},
            {"id": "1:Y", "mode": "BUS"},
        ]);
        let ids: Vec<Option<String>> = parse_routes("1", &bytes(&body), &agencies)
            .unwrap()
            .into_iter()
            .map(|r| r.agency_id)
            .collect();
        assert_eq!(ids, vec![Some("DTA".into()), None, None]);
        // Two agencies of one name: which one is unknown.
        let twice = [
            agencies[0].clone(),
            AgencyInfo {
                agency_id: Some("D2".into()),
                ..agencies[0].clone()
            },
        ];
        assert_eq!(
            parse_routes("1", &bytes(&body), &twice).unwrap()[0].agency_id,
            None
        );
    }

    #[test]
    fn route_from_trimet_mock() {
        let mock = fixture("mock-route.json");
        let route = parse_route("TriMet", &bytes(&mock)).unwrap();
        assert_eq!(
            route,
            RouteSummary {
                route_id: "90".into(),
                agency_id: Some("TRIMET".into()),
                short_name: None,
                long_name: Some("MAX Red Line".into()),
                route_type: 0,
                mode: "TRAM".into(),
                color: Some("D81526".into()),
                text_color: Some("FFFFFF".into()),
                sort_order: Some(120),
            }
        );
        let err = msg(parse_route("C-TRAN", &bytes(&mock)).unwrap_err());
        assert!(err.starts_with("route.id:"), "{err}");
        // OTP 1's "no sort order" and its extended types.
        let body = json!({"id": "F:x", "type": 900, "sortOrder": -999, "sortOrderSet": false});
        let r = parse_route("F", &bytes(&body)).unwrap();
        assert_eq!(
            (r.route_type, r.mode.as_str(), r.sort_order),
            (900, "TRAM", None)
        );
        let body = json!({"id": "F:x", "type": 200});
        assert_eq!(parse_route("F", &bytes(&body)).unwrap().mode, "BUS");
    }

    #[test]
    fn pattern_ids_from_trimet_mock() {
        // `/routes/{id}/patterns` is a list of PatternShort {id, desc}: the mock's patterns.
        let mock = fixture("mock-route.json");
        let shorts: Vec<Value> = mock["patterns"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| json!({"id": p["id"], "desc": p["desc"]}))
            .collect();
        let mut ids = parse_pattern_ids(&bytes(&json!(shorts))).unwrap();
        ids.sort();
        assert_eq!(
            ids,
            [
                "TriMet:90:0:01",
                "TriMet:90:0:02",
                "TriMet:90:0:03",
                "TriMet:90:1:01",
                "TriMet:90:1:02"
            ]
        );
    }

    /// A PatternDetail built from the mock's first pattern (id, desc, stops) plus `trips`.
    fn trimet_pattern(trips: Value) -> Value {
        let mock = fixture("mock-route.json");
        let p = &mock["patterns"]["TriMet:90:0:01"];
        json!({"id": p["id"], "desc": p["desc"], "routeId": "TriMet:90",
               "stops": p["stops"], "trips": trips})
    }

    #[test]
    fn pattern_from_trimet_mock() {
        // otp-ui replaced the mock's stops by dummies with bare ids ("20"): not what OTP
        // sends (StopShort.id is a feed-scoped id), and refused as such.
        let raw = trimet_pattern(json!([]));
        let err = msg(parse_pattern("TriMet", &bytes(&raw)).unwrap_err());
        assert!(err.starts_with("pattern.stops[0].id:"), "{err}");

        let mut body = raw.clone();
        for s in body["stops"].as_array_mut().unwrap() {
            s["id"] = json!(format!("TriMet:{}", s["id"].as_str().unwrap()));
        }
        body["trips"] = json!([
            {"id": "TriMet:1", "tripHeadsign": "Airport", "serviceId": "TriMet:A", "direction": 0},
            {"id": "TriMet:2", "tripHeadsign": "City Center", "serviceId": "TriMet:A", "direction": 0},
            {"id": "TriMet:3", "tripHeadsign": "City Center", "serviceId": "TriMet:A", "direction": 0},
        ]);
        let p = parse_pattern("TriMet", &bytes(&body)).unwrap();
        assert_eq!(p.pattern_id, "TriMet:90:0:01");
        assert_eq!(p.direction_id, Some(0));
        assert_eq!(p.headsign.as_deref(), Some("City Center"));
        assert_eq!(p.trip_count, 3);
        assert_eq!(
            p.stops,
            [
                StopRef {
                    stop_id: "20".into(),
                    name: Some("Dummy stop 1".into()),
                    code: None,
                    lat: Some(45.54267),
                    lon: Some(-122.569774),
                },
                StopRef {
                    stop_id: "26".into(),
                    name: Some("Dummy stop 2".into()),
                    code: None,
                    lat: Some(45.545655),
                    lon: Some(-122.570035),
                }
            ]
        );

        // Mixed directions: none. No headsigns: none (not the description). No trips at all.
        body["trips"] =
            json!([{"id": "TriMet:1", "direction": 0}, {"id": "TriMet:2", "direction": 1}]);
        let p = parse_pattern("TriMet", &bytes(&body)).unwrap();
        assert_eq!((p.direction_id, p.headsign), (None, None));
        body["trips"] = json!([{"id": "TriMet:1", "direction": 1}, {"id": "TriMet:2"}]);
        assert_eq!(
            parse_pattern("TriMet", &bytes(&body)).unwrap().direction_id,
            None
        );
        body["trips"] = json!([]);
        let p = parse_pattern("TriMet", &bytes(&body)).unwrap();
        assert_eq!((p.direction_id, p.trip_count), (None, 0));
        // A frequency-based trip comes once per frequency row; it is one trip.
        body["trips"] = json!([
            {"id": "TriMet:1", "tripHeadsign": "A", "direction": 0},
            {"id": "TriMet:1", "tripHeadsign": "A", "direction": 0},
            {"id": "TriMet:1", "tripHeadsign": "A", "direction": 0},
            {"id": "TriMet:2", "tripHeadsign": "B", "direction": 0},
            {"id": "TriMet:3", "tripHeadsign": "B", "direction": 0},
        ]);
        let p = parse_pattern("TriMet", &bytes(&body)).unwrap();
        assert_eq!(p.trip_count, 3);
        assert_eq!(p.headsign.as_deref(), Some("B"));
        // Ties go to the headsign met first.
        assert_eq!(most_common(&["b", "a", "a", "b"]), Some("b"));
        assert_eq!(most_common(&[]), None);
    }

    #[test]
    fn bad_bodies_are_malformed() {
        let common: &[(&str, &str)] = &[
            ("", "empty body"),
            ("garbage", "not JSON"),
            ("FOUR ZERO FOUR", "not JSON"),
            ("{}", "expected an array, found an object"),
            (r#"{"data":null}"#, "expected an array"),
            (r#"{"errors":[{"message":"boom"}]}"#, "expected an array"),
            (r#"[{"id":"F:1","mode":"BUS""#, "not JSON"),
            ("5", "expected an array, found a number"),
        ];
        for (body, want) in common {
            for err in [
                parse_routes("F", body.as_bytes(), &[]).unwrap_err(),
                parse_pattern_ids(body.as_bytes()).unwrap_err(),
                parse_feeds(body.as_bytes()).unwrap_err(),
            ] {
                let err = msg(err);
                assert!(err.contains(want), "{body}: {err}");
            }
        }
        let cases: &[(&str, &str)] = &[
            (r#"[null]"#, "routes[0]: expected an object, found null"),
            (
                r#"[{"id":"nocolon","mode":"BUS"}]"#,
                "routes[0].id: \"nocolon\" is not a feedId:localId id",
            ),
            (
                r#"[{"id":5,"mode":"BUS"}]"#,
                "routes[0].id: expected a string",
            ),
            (r#"[{"mode":"BUS"}]"#, "routes[0].id: missing"),
            (r#"[{"id":"F:1"}]"#, "routes[0]: neither mode nor type"),
            (
                r#"[{"id":"F:1","mode":"BUS","sortOrder":"1"}]"#,
                "routes[0].sortOrder: expected an integer",
            ),
        ];
        for (body, want) in cases {
            let err = msg(parse_routes("F", body.as_bytes(), &[]).unwrap_err());
            assert!(err.contains(want), "{body}: {err}");
        }
        for (body, want) in [
            ("", "empty body"),
            ("garbage", "not JSON"),
            ("[]", "route: expected an object, found an array"),
            ("{}", "route.id: missing"),
            (r#"{"id":"90","type":0}"#, "not a feedId:localId"),
            (
                r#"{"id":"F:90","type":"0"}"#,
                "route.type: expected an integer",
            ),
            (
                r#"{"id":"F:90","type":0,"agency":"A"}"#,
                "route.agency: expected an object",
            ),
            (
                r#"{"id":"F:90","type":0,"agency":{"id":5}}"#,
                "route.agency.id: expected a string",
            ),
        ] {
            let err = msg(parse_route("F", body.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{body}: {err}");
        }
        for (body, want) in [
            ("", "empty body"),
            ("{}", "pattern.id: missing"),
            (r#"{"id":"F:1:0:01","routeId":"G:1"}"#, "pattern.routeId"),
            (
                r#"{"id":"F:1:0:01","stops":5}"#,
                "pattern.stops: expected an array",
            ),
            (
                r#"{"id":"F:1:0:01","stops":[{"id":"s"}]}"#,
                "pattern.stops[0].id",
            ),
            (
                r#"{"id":"F:1:0:01","stops":[{"id":"F:s","lat":"45"}]}"#,
                "pattern.stops[0].lat: expected a number",
            ),
            (
                r#"{"id":"F:1:0:01","trips":[{"id":"F:t","direction":"0"}]}"#,
                "pattern.trips[0].direction: expected an integer",
            ),
            (
                r#"{"id":"F:1:0:01","trips":[{"id":"F:t","direction":300}]}"#,
                "direction 300",
            ),
            (
                r#"{"id":"F:1:0:01","trips":[{"id":"F:t","tripHeadsign":1}]}"#,
                "pattern.trips[0].tripHeadsign",
            ),
        ] {
            let err = msg(parse_pattern("F", body.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{body}: {err}");
        }
        for (body, want) in [
            (r#"[5]"#, "patterns[0]: expected an object"),
            (r#"[{"desc":"x"}]"#, "patterns[0].id: missing"),
        ] {
            let err = msg(parse_pattern_ids(body.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{body}: {err}");
        }
        let err = msg(parse_feeds(br#"["F", 5]"#).unwrap_err());
        assert!(
            err.contains("feeds[1]: expected a feed id, found a number"),
            "{err}"
        );
    }

    #[test]
    fn truncated_bodies_never_panic() {
        let route = bytes(&fixture("mock-route.json"));
        for cut in (0..route.len()).step_by(53) {
            assert!(parse_route("TriMet", &route[..cut]).is_err());
        }
        let routes = bytes(&fixture("mock-otp-transit-index-data.json")["routes"]);
        for cut in 0..routes.len() {
            assert!(parse_routes("TriMet", &routes[..cut], &[]).is_err());
        }
    }
}
