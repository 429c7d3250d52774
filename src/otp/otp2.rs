//! OTP 2's GTFS GraphQL API: request bodies and response parsers (no I/O).
//!
//! Every request is a `POST` of a JSON body `{"query", "operationName", "variables"}` to
//! the instance's `graphql_path` (`/otp/gtfs/v1`; older 2.x releases:
//! `/otp/routers/default/index/graphql`). Three operations, named `Feeds`, `Routes` and
//! `Route`; the test OTP simulator dispatches on those names. Their documents are checked
//! against OTP's own schema in the tests below. They are valid against every release's
//! schema from 2.0.0 on, except `Route.sortOrder`, which OTP has had since 2.6.0: older
//! servers refuse `Routes` and `Route` with a validation error naming the field
//! ([`refuses_sort_order`]). For those, [`Dialect::Before2_6`] sends the same documents
//! without `sortOrder`, and the parsers take the missing field as none.
//!
//! Reading the answers:
//! - any top-level `errors` entry makes the answer [`AdapterError::Malformed`], with the
//!   first message: GraphQL nulls out the fields that failed, so the data next to errors
//!   is incomplete in ways we cannot tell from real nulls (`trips: null` would read as
//!   "no trips"), and the caller keeps its last good data instead;
//! - ids `feedId:localId` become local ids; a route of another feed is left out of a
//!   route list, and is an error as a route detail; so is an agency of another feed
//!   (OTP scopes agencies by their route's feed). Pattern stops may come
//!   from another feed when the instance uses OTP's stop consolidation (it swaps stops in
//!   patterns for a "primary" stop of another feed): such a stop keeps its full OTP id;
//! - a missing `type` is derived from `mode` ([`route_type_of_mode`]) and a missing
//!   `mode` from `type`; `directionId` -1 (OTP's "no direction") is `None`.

use serde_json::{Value, json};

use super::{
    AdapterError, Obj, array, direction, echo, kind, local_id, malformed, objects, parse_body,
    split_id, stop_id,
};
use crate::feed::model::{
    AgencyInfo, FeedInfo, Pattern, RouteDetail, RouteSummary, StopRef, mode_of_route_type,
};

/// Every feed with its agencies.
pub const FEEDS_QUERY: &str = "\
query Feeds {
  feeds {
    feedId
    agencies { gtfsId name timezone }
  }
}";

/// The routes of the feeds in `$feeds`.
pub const ROUTES_QUERY: &str = "\
query Routes($feeds: [String]) {
  routes(feeds: $feeds) {
    gtfsId shortName longName mode type color textColor sortOrder
    agency { gtfsId }
  }
}";

/// [`ROUTES_QUERY`] for OTP before 2.6, which has no `Route.sortOrder`.
pub const ROUTES_QUERY_BEFORE_2_6: &str = "\
query Routes($feeds: [String]) {
  routes(feeds: $feeds) {
    gtfsId shortName longName mode type color textColor
    agency { gtfsId }
  }
}";

/// One route (`$id` = `feedId:routeId`) with its patterns, their stops and trips.
pub const ROUTE_QUERY: &str = "\
query Route($id: String!) {
  route(id: $id) {
    gtfsId shortName longName mode type color textColor sortOrder
    agency { gtfsId }
    patterns {
      code directionId headsign
      stops { gtfsId name code lat lon }
      trips { gtfsId }
    }
  }
}";

/// [`ROUTE_QUERY`] for OTP before 2.6, which has no `Route.sortOrder`.
pub const ROUTE_QUERY_BEFORE_2_6: &str = "\
query Route($id: String!) {
  route(id: $id) {
    gtfsId shortName longName mode type color textColor
    agency { gtfsId }
    patterns {
      code directionId headsign
      stops { gtfsId name code lat lon }
      trips { gtfsId }
    }
  }
}";

/// The GraphQL documents an otp2 instance is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = GraphqlDialect)]
pub enum Dialect {
    /// OTP 2.6 and later: routes with `sortOrder`.
    Current,
    /// OTP 2.0 to 2.5: the same without `sortOrder`.
    #[serde(rename = "before_2_6")]
    Before2_6,
}

fn request(query: &str, operation: &str, variables: Value) -> Value {
    json!({ "query": query, "operationName": operation, "variables": variables })
}

/// The body of the `Feeds` request.
pub fn feeds_request() -> Value {
    request(FEEDS_QUERY, "Feeds", json!({}))
}

/// The body of the `Routes` request for one feed.
pub fn routes_request(gtfs_id: &str, dialect: Dialect) -> Value {
    let query = match dialect {
        Dialect::Current => ROUTES_QUERY,
        Dialect::Before2_6 => ROUTES_QUERY_BEFORE_2_6,
    };
    request(query, "Routes", json!({ "feeds": [gtfs_id] }))
}

/// The body of the `Route` request for `route_id` of feed `gtfs_id`.
pub fn route_request(gtfs_id: &str, route_id: &str, dialect: Dialect) -> Value {
    let query = match dialect {
        Dialect::Current => ROUTE_QUERY,
        Dialect::Before2_6 => ROUTE_QUERY_BEFORE_2_6,
    };
    request(
        query,
        "Route",
        json!({ "id": format!("{gtfs_id}:{route_id}") }),
    )
}

/// Whether `body` is a server refusing the query because it has no `Route.sortOrder`:
/// errors without data, one of them naming the field. graphql-java (OTP) says
/// "Validation error (FieldUndefined@[routes/sortOrder]) : Field 'sortOrder' in type
/// 'Route' is undefined"; older releases word it differently, all name the field.
/// Meant for answers the parsers refused: it parses the body again.
pub fn refuses_sort_order(body: &[u8]) -> bool {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let no_data = top.get("data").is_none_or(Value::is_null);
    let names_field = top
        .get("errors")
        .and_then(Value::as_array)
        .is_some_and(|errors| {
            errors.iter().any(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.contains("sortOrder"))
            })
        });
    no_data && names_field
}

/// The answer to [`feeds_request`].
pub fn parse_feeds(body: &[u8]) -> Result<Vec<FeedInfo>, AdapterError> {
    let root = parse_body(body)?;
    let data = data(&root)?;
    objects(data.array("feeds")?, "data.feeds")
        .map(|feed| {
            let feed = feed?;
            let gtfs_id = feed.str("feedId")?;
            let agencies_path = feed.path_of("agencies");
            let agencies = objects(feed.opt_array("agencies")?, &agencies_path)
                .map(|agency| {
                    let agency = agency?;
                    let id = agency.str("gtfsId")?;
                    Ok(AgencyInfo {
                        agency_id: Some(local_id(id, gtfs_id, &agency.field("gtfsId"))?.into()),
                        name: agency.str("name")?.into(),
                        timezone: agency.opt_str("timezone")?.map(str::to_owned),
                    })
                })
                .collect::<Result<_, AdapterError>>()?;
            Ok(FeedInfo {
                gtfs_id: gtfs_id.into(),
                agencies,
            })
        })
        .collect()
}

/// The answer to [`routes_request`]: the routes of feed `gtfs_id`, in OTP's order
/// (routes of other feeds are left out).
pub fn parse_routes(gtfs_id: &str, body: &[u8]) -> Result<Vec<RouteSummary>, AdapterError> {
    let root = parse_body(body)?;
    let data = data(&root)?;
    let routes = data.array("routes")?;
    let mut out = Vec::with_capacity(routes.len());
    for route in objects(routes, "data.routes") {
        let route = route?;
        let (feed, route_id) = split_id(route.str("gtfsId")?, &route.field("gtfsId"))?;
        if feed == gtfs_id {
            out.push(summary(&route, gtfs_id, route_id)?);
        }
    }
    Ok(out)
}

/// The answer to [`route_request`]: `Ok(None)` when OTP knows no such route
/// (`data.route` is null).
pub fn parse_route(gtfs_id: &str, body: &[u8]) -> Result<Option<RouteDetail>, AdapterError> {
    match fast::parse_route(gtfs_id, body) {
        Some(route) => Ok(route),
        None => parse_route_slow(gtfs_id, body),
    }
}

/// [`parse_route`] through a [`Value`] tree: the reference, and the only one that says
/// what is wrong with a bad answer.
fn parse_route_slow(gtfs_id: &str, body: &[u8]) -> Result<Option<RouteDetail>, AdapterError> {
    let root = parse_body(body)?;
    let data = data(&root)?;
    if !data.map.contains_key("route") {
        return Err(malformed("data.route: missing"));
    }
    let Some(route) = data.opt_obj("route")? else {
        return Ok(None);
    };
    let route_id = local_id(route.str("gtfsId")?, gtfs_id, &route.field("gtfsId"))?;
    let summary = summary(&route, gtfs_id, route_id)?;

    let patterns_path = route.path_of("patterns");
    let patterns = objects(route.opt_array("patterns")?, &patterns_path)
        .map(|p| pattern(&p?, gtfs_id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(RouteDetail {
        summary,
        trip_count: patterns.iter().map(|p| p.trip_count).sum(),
        patterns,
    }))
}

/// `data` of a GraphQL answer, after checking there are no `errors`.
fn data(root: &Value) -> Result<Obj<'_>, AdapterError> {
    let Value::Object(top) = root else {
        return Err(malformed(format!(
            "expected a GraphQL answer (an object), found {}",
            kind(root)
        )));
    };
    if let Some(errors) = top.get("errors").filter(|e| !e.is_null()) {
        let errors = array(errors, "errors")?;
        if let Some(first) = errors.first() {
            let message = first
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(malformed(format!(
                "GraphQL errors ({}), first: {}",
                errors.len(),
                echo(message)
            )));
        }
    }
    match top.get("data") {
        None => Err(malformed("data: missing")),
        Some(data) => Obj::new(data, "data"),
    }
}

/// The summary fields of a route object (`Routes` and `Route` select the same ones).
fn summary(route: &Obj<'_>, gtfs_id: &str, route_id: &str) -> Result<RouteSummary, AdapterError> {
    let agency_id = match route.opt_obj("agency")? {
        Some(agency) => {
            let id = agency.str("gtfsId")?;
            Some(local_id(id, gtfs_id, &agency.field("gtfsId"))?.to_owned())
        }
        None => None,
    };
    super::route_summary(route, route_id, agency_id, mode_of_route_type)
}

fn pattern(p: &Obj<'_>, gtfs_id: &str) -> Result<Pattern, AdapterError> {
    let stops_path = p.path_of("stops");
    let stops = objects(p.opt_array("stops")?, &stops_path)
        .map(|s| {
            let s = s?;
            Ok(StopRef {
                stop_id: stop_id(s.str("gtfsId")?, gtfs_id, &s.field("gtfsId"))?,
                name: s.opt_str("name")?.map(str::to_owned),
                code: s.opt_str("code")?.map(str::to_owned),
                lat: s.opt_f64("lat")?,
                lon: s.opt_f64("lon")?,
            })
        })
        .collect::<Result<_, AdapterError>>()?;
    let trips_path = p.path_of("trips");
    let trips = p.opt_array("trips")?;
    for trip in objects(trips, &trips_path) {
        trip?.str("gtfsId")?;
    }
    Ok(Pattern {
        pattern_id: p.str("code")?.to_owned(),
        direction_id: direction(p.opt_i64("directionId")?, &p.path_of("directionId"))?,
        headsign: p.opt_str("headsign")?.map(str::to_owned),
        stops,
        trip_count: trips.len(),
    })
}

/// A fast path for [`parse_route`], for the answers it can vouch for.
///
/// The slow path builds a [`Value`] tree, a map and its key strings for every stop and
/// trip, and throws it away: for bart route 01 (51,838 bytes: 20 patterns, 408 stops,
/// 402 trips) `parse_route` took ~310 µs, about 245 µs of it building the tree. Here the
/// body is checked as UTF-8 once and decoded straight into structs that borrow its
/// strings; trips are checked and counted, not stored; then the model is built with
/// the slow path's helpers: ~86 µs.
///
/// It answers `None` ("ask the slow path") on any doubt: not JSON, a shape, type or key
/// it does not expect, `errors`, `data` or `data.route` missing, a duplicate key, or a
/// helper refusing a value. The slow path then answers, and its error messages name the
/// JSON path. So this path only has to agree with the slow path on answers that path
/// accepts, and must never accept an answer that path refuses. Hence its strictness:
/// - objects are read with `deserialize_map` ([`Object`]): derived structs would also
///   take a JSON array, fields by position;
/// - unknown fields are refused, not skipped: serde skips them with `IgnoredAny`, which
///   is laxer than building a [`Value`] (no depth limit, no UTF-8 or escape checks);
/// - integers are `i64` and coordinates `f64` as serde_json reads them, which agrees
///   with `Value::as_i64` (no `1.0`, nothing above `i64::MAX`) and `Value::as_f64`
///   (integers taken).
mod fast {
    use std::borrow::Cow;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    use super::super::{
        color, direction, local_id, route_type, sort_order, stop_id, type_and_mode,
    };
    use crate::feed::model::{Pattern, RouteDetail, RouteSummary, StopRef, mode_of_route_type};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Answer<'a> {
        #[serde(borrow)]
        data: Object<Data<'a>>,
        /// Any entry sends the answer to the slow path; `null` is no errors.
        errors: Option<IgnoredAny>,
        /// GraphQL's room for server extras: ignored, but read as a [`Value`] to refuse
        /// what the slow path refuses.
        #[serde(rename = "extensions")]
        _extensions: Option<Value>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Data<'a> {
        #[serde(borrow)]
        route: NullOrObject<Route<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Route<'a> {
        #[serde(borrow)]
        gtfs_id: Text<'a>,
        #[serde(borrow)]
        short_name: Option<Text<'a>>,
        #[serde(borrow)]
        long_name: Option<Text<'a>>,
        #[serde(borrow)]
        mode: Option<Text<'a>>,
        #[serde(rename = "type")]
        route_type: Option<i64>,
        #[serde(borrow)]
        color: Option<Text<'a>>,
        #[serde(borrow)]
        text_color: Option<Text<'a>>,
        sort_order: Option<i64>,
        #[serde(borrow)]
        agency: Option<Object<Agency<'a>>>,
        #[serde(borrow)]
        patterns: Option<Vec<Object<PatternIn<'a>>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Agency<'a> {
        #[serde(borrow)]
        gtfs_id: Text<'a>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct PatternIn<'a> {
        #[serde(borrow)]
        code: Text<'a>,
        direction_id: Option<i64>,
        #[serde(borrow)]
        headsign: Option<Text<'a>>,
        #[serde(borrow)]
        stops: Option<Vec<Object<Stop<'a>>>>,
        trips: Option<TripCount>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Stop<'a> {
        #[serde(borrow)]
        gtfs_id: Text<'a>,
        #[serde(borrow)]
        name: Option<Text<'a>>,
        #[serde(borrow)]
        code: Option<Text<'a>>,
        lat: Option<f64>,
        lon: Option<f64>,
    }

    /// A trip: checked (an object with a string `gtfsId`), not kept.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Trip {
        #[serde(rename = "gtfsId")]
        _gtfs_id: AnyString,
    }

    /// A JSON string, borrowed from the body unless it has escapes.
    struct Text<'a>(Cow<'a, str>);

    impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct TextVisitor;
            impl<'de> Visitor<'de> for TextVisitor {
                type Value = Cow<'de, str>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                    Ok(Cow::Borrowed(s))
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                    Ok(Cow::Owned(s.to_owned()))
                }
                fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                    Ok(Cow::Owned(s))
                }
            }
            d.deserialize_str(TextVisitor).map(Text)
        }
    }

    /// A JSON string, checked (valid UTF-8 and escapes, as for a [`Value`]) but not kept.
    struct AnyString;

    impl<'de> Deserialize<'de> for AnyString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct AnyStringVisitor;
            impl Visitor<'_> for AnyStringVisitor {
                type Value = AnyString;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyString, E> {
                    Ok(AnyString)
                }
            }
            d.deserialize_str(AnyStringVisitor)
        }
    }

    /// The number of items of a JSON array of trips.
    struct TripCount(usize);

    impl<'de> Deserialize<'de> for TripCount {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct CountVisitor;
            impl<'de> Visitor<'de> for CountVisitor {
                type Value = TripCount;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an array of trips")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TripCount, A::Error> {
                    let mut n = 0;
                    while seq.next_element::<Object<Trip>>()?.is_some() {
                        n += 1;
                    }
                    Ok(TripCount(n))
                }
            }
            d.deserialize_seq(CountVisitor)
        }
    }

    /// A struct `T` read from a JSON object only. Derived `Deserialize` asks for
    /// `deserialize_struct`, which serde_json also answers from an array (fields by
    /// position); `deserialize_map` takes `{` only.
    struct Object<T>(T);

    /// Reads `T` (derived) from the entries of a JSON object.
    struct ObjectVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
        }
    }

    /// A required field that may be `null` or an object `T`. (`Option<T>` would also
    /// take a missing field as `None`; the slow path refuses a missing `data.route`.)
    struct NullOrObject<T>(Option<T>);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for NullOrObject<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct NullOrVisitor<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for NullOrVisitor<T> {
                type Value = Option<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("null or an object")
                }
                fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                    Ok(None)
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
                    ObjectVisitor(PhantomData).visit_map(map).map(Some)
                }
            }
            // Not `deserialize_option`: serde fills a missing field by asking for an
            // option, which answers `None`; asked for anything else, it is an error.
            d.deserialize_any(NullOrVisitor(PhantomData))
                .map(NullOrObject)
        }
    }

    /// An optional text as the slow path reads it: empty counts as absent.
    fn text<'t>(t: &'t Option<Text<'_>>) -> Option<&'t str> {
        t.as_ref().map(|t| &*t.0).filter(|s| !s.is_empty())
    }

    fn owned(t: &Option<Text<'_>>) -> Option<String> {
        text(t).map(str::to_owned)
    }

    /// See [`parse_route`](super::parse_route) and this module's doc. `Some(answer)` is
    /// what the slow path answers; `None` means "ask the slow path".
    pub(super) fn parse_route(gtfs_id: &str, body: &[u8]) -> Option<Option<RouteDetail>> {
        let body = std::str::from_utf8(body).ok()?;
        let Object(answer) = serde_json::from_str::<Object<Answer<'_>>>(body).ok()?;
        if answer.errors.is_some() {
            return None;
        }
        let Some(route) = answer.data.0.route.0 else {
            return Some(None);
        };
        let route_id = local_id(&route.gtfs_id.0, gtfs_id, "").ok()?;
        let summary = summary(&route, gtfs_id, route_id)?;
        let patterns = route
            .patterns
            .into_iter()
            .flatten()
            .map(|Object(p)| pattern(p, gtfs_id))
            .collect::<Option<Vec<_>>>()?;
        Some(Some(RouteDetail {
            summary,
            trip_count: patterns.iter().map(|p| p.trip_count).sum(),
            patterns,
        }))
    }

    /// As [`super::summary`] and [`super::super::route_summary`] (OTP 2's mode of a
    /// type), with the same [`type_and_mode`] rule.
    fn summary(route: &Route<'_>, gtfs_id: &str, route_id: &str) -> Option<RouteSummary> {
        let agency_id = match &route.agency {
            Some(Object(agency)) => Some(local_id(&agency.gtfs_id.0, gtfs_id, "").ok()?.to_owned()),
            None => None,
        };
        let mode = text(&route.mode);
        let route_type = route
            .route_type
            .map(|t| route_type(t, ""))
            .transpose()
            .ok()?;
        let (route_type, mode) = type_and_mode(route_type, mode, mode_of_route_type)?;
        Some(RouteSummary {
            route_id: route_id.to_owned(),
            agency_id,
            short_name: owned(&route.short_name),
            long_name: owned(&route.long_name),
            route_type,
            mode,
            color: color(text(&route.color)),
            text_color: color(text(&route.text_color)),
            sort_order: sort_order(route.sort_order),
        })
    }

    /// As [`super::pattern`].
    fn pattern(p: PatternIn<'_>, gtfs_id: &str) -> Option<Pattern> {
        let stops = p
            .stops
            .into_iter()
            .flatten()
            .map(|Object(s)| {
                Some(StopRef {
                    stop_id: stop_id(&s.gtfs_id.0, gtfs_id, "").ok()?,
                    name: owned(&s.name),
                    code: owned(&s.code),
                    lat: s.lat,
                    lon: s.lon,
                })
            })
            .collect::<Option<_>>()?;
        Some(Pattern {
            pattern_id: p.code.0.into_owned(),
            direction_id: direction(p.direction_id, "").ok()?,
            headsign: owned(&p.headsign),
            stops,
            trip_count: p.trips.map_or(0, |t| t.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_compiler::{ExecutableDocument, Schema, validation::Valid};
    use std::sync::OnceLock;

    const SCHEMA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/otp/2.x/schema/schema.graphqls"
    );
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/otp/2.x");

    fn schema() -> &'static Valid<Schema> {
        static SCHEMA_CELL: OnceLock<Valid<Schema>> = OnceLock::new();
        SCHEMA_CELL.get_or_init(|| {
            let text = std::fs::read_to_string(SCHEMA).expect("OTP schema fixture");
            Schema::parse_and_validate(text, SCHEMA).expect("OTP's schema is valid")
        })
    }

    /// Parses and validates `query` against OTP's schema; checks that `operation` is an
    /// operation of it declaring exactly the variables in `variables`.
    fn validate(query: &str, operation: &str, variables: &Value) -> Result<(), String> {
        let doc = ExecutableDocument::parse_and_validate(schema(), query, "query.graphql")
            .map_err(|e| e.errors.to_string())?;
        let op = doc
            .operations
            .get(Some(operation))
            .map_err(|_| format!("no operation named {operation}"))?;
        let mut declared: Vec<&str> = op.variables.iter().map(|v| v.name.as_str()).collect();
        let mut sent: Vec<&str> = variables
            .as_object()
            .ok_or("variables is not an object")?
            .keys()
            .map(String::as_str)
            .collect();
        declared.sort_unstable();
        sent.sort_unstable();
        if declared != sent {
            return Err(format!("declared {declared:?}, sent {sent:?}"));
        }
        Ok(())
    }

    fn validate_request(body: &Value) -> Result<(), String> {
        validate(
            body["query"].as_str().ok_or("no query")?,
            body["operationName"].as_str().ok_or("no operationName")?,
            &body["variables"],
        )
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    fn msg(err: AdapterError) -> String {
        let AdapterError::Malformed(m) = err;
        m
    }

    #[test]
    fn every_request_validates_against_otp_schema() {
        for body in [
            feeds_request(),
            routes_request("F", Dialect::Current),
            route_request("F", "a/b c#d", Dialect::Current),
            routes_request("F", Dialect::Before2_6),
            route_request("F", "a/b c#d", Dialect::Before2_6),
        ] {
            validate_request(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn validation_rejects_bad_queries() {
        // Negative controls: the same helper must fail on a misspelled field, a wrong
        // argument, an undeclared variable and a wrong operation name.
        let typo = ROUTES_QUERY.replace("shortName", "shortNmae");
        let err = validate(&typo, "Routes", &json!({"feeds": ["F"]})).unwrap_err();
        assert!(err.contains("shortNmae"), "{err}");
        let bad_arg = ROUTE_QUERY.replace("route(id: $id)", "route(gtfsId: $id)");
        assert!(validate(&bad_arg, "Route", &json!({"id": "F:1"})).is_err());
        assert!(validate(ROUTE_QUERY, "Route", &json!({})).is_err());
        assert!(validate(FEEDS_QUERY, "Feed", &json!({})).is_err());
        // And the fixtures' own queries pass, so the schema is read right.
        for q in ["routes-tutorial", "routes-extended", "feedinfo", "patterns"] {
            let text = String::from_utf8(fixture(&format!("queries/{q}.graphql"))).unwrap();
            ExecutableDocument::parse_and_validate(schema(), text, q).expect(q);
        }
    }

    #[test]
    fn before_2_6_documents_are_the_current_ones_without_sort_order() {
        assert_eq!(
            ROUTES_QUERY.replace(" sortOrder", ""),
            ROUTES_QUERY_BEFORE_2_6
        );
        assert_eq!(
            ROUTE_QUERY.replace(" sortOrder", ""),
            ROUTE_QUERY_BEFORE_2_6
        );
        assert!(!ROUTE_QUERY_BEFORE_2_6.contains("sortOrder"));
    }

    #[test]
    fn a_server_without_sort_order_is_recognised() {
        for refusal in [
            // graphql-java 19 and later (OTP 2.2 on).
            r#"{"errors":[{"message":"Validation error (FieldUndefined@[routes/sortOrder]) : Field 'sortOrder' in type 'Route' is undefined","locations":[{"line":3,"column":59}],"extensions":{"classification":"ValidationError"}}]}"#,
            // graphql-java 17 (OTP 2.0, 2.1).
            r#"{"errors":[{"message":"Validation error of type FieldUndefined: Field 'sortOrder' in type 'Route' is undefined @ 'routes/sortOrder'","locations":[{"line":3,"column":59}],"extensions":{"classification":"ValidationError"}}],"data":null}"#,
        ] {
            assert!(refuses_sort_order(refusal.as_bytes()), "{refusal}");
            assert!(parse_routes("F", refusal.as_bytes()).is_err());
        }
        for other in [
            r#"{"errors":[{"message":"Validation error (FieldUndefined@[routes/shortNmae])"}]}"#,
            r#"{"errors":[{"message":"sortOrder"}],"data":{"routes":[]}}"#,
            r#"{"data":{"routes":[]}}"#,
            r#"{"errors":"sortOrder"}"#,
            "sortOrder",
            "",
        ] {
            assert!(!refuses_sort_order(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn request_bodies() {
        assert_eq!(
            routes_request("F", Dialect::Current)["variables"],
            json!({"feeds": ["F"]})
        );
        let r = route_request("F", "a:b", Dialect::Current);
        assert_eq!(r["variables"], json!({"id": "F:a:b"}));
        assert_eq!(r["operationName"], "Route");
        assert_eq!(feeds_request()["operationName"], "Feeds");
    }

    #[test]
    fn routes_fixtures() {
        for name in ["routes-tutorial", "routes-extended"] {
            let body = fixture(&format!("expectations/{name}.json"));
            let routes = parse_routes("F", &body).unwrap();
            assert_eq!(routes.len(), 16, "{name}");
            let bus = routes.iter().find(|r| r.route_id == "BUS").unwrap();
            assert_eq!(bus.agency_id.as_deref(), Some("A1"));
            assert_eq!(bus.short_name.as_deref(), Some("RBUS"));
            assert_eq!(bus.long_name.as_deref(), Some("Long name for BUS"));
            assert_eq!((bus.route_type, bus.mode.as_str()), (3, "BUS"));
            let tram = routes.iter().find(|r| r.route_id == "TRAM").unwrap();
            assert_eq!((tram.route_type, tram.mode.as_str()), (0, "TRAM"));
            let air = routes.iter().find(|r| r.route_id == "AIRPLANE").unwrap();
            assert_eq!(air.route_type, 1100);
            // Other feeds are left out.
            assert!(parse_routes("G", &body).unwrap().is_empty());
        }
        let ext = parse_routes("F", &fixture("expectations/routes-extended.json")).unwrap();
        let sort = |id: &str| ext.iter().find(|r| r.route_id == id).unwrap().sort_order;
        assert_eq!(sort("AIRPLANE"), Some(6));
        assert_eq!(sort("RAIL"), None);
    }

    #[test]
    fn routes_mixed_feeds_and_type() {
        let body = json!({"data": {"routes": [
            {"gtfsId": "F:1", "mode": "BUS", "type": 715, "color": "#00ff00", "textColor": "",
             "shortName": "1", "longName": null, "sortOrder": 2, "agency": null},
            {"gtfsId": "G:2", "mode": "RAIL", "type": 2, "agency": {"gtfsId": "G:a"}},
            {"gtfsId": "F:3:x", "type": 1, "agency": {"gtfsId": "F:a"}}
        ]}});
        let routes = parse_routes("F", body.to_string().as_bytes()).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].route_type, 715);
        assert_eq!(routes[0].color.as_deref(), Some("00ff00"));
        assert_eq!(routes[0].text_color, None);
        assert_eq!(routes[0].long_name, None);
        assert_eq!(routes[0].agency_id, None);
        assert_eq!(routes[1].route_id, "3:x");
        assert_eq!(routes[1].mode, "SUBWAY");
    }

    #[test]
    fn feeds_fixture_shape() {
        // OTP's feedinfo fixture selects no feedId: the parser walks data.feeds and says so.
        let raw = fixture("expectations/feedinfo.json");
        let err = msg(parse_feeds(&raw).unwrap_err());
        assert_eq!(err, "data.feeds[0].feedId: missing");
        // The same answer with the fields our query selects.
        let mut v: Value = serde_json::from_slice(&raw).unwrap();
        let feed = &mut v["data"]["feeds"][0];
        feed["feedId"] = json!("F");
        feed["agencies"][0]["gtfsId"] = json!("F:A1");
        feed["agencies"][0]["timezone"] = json!("Europe/Berlin");
        let feeds = parse_feeds(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            feeds,
            vec![FeedInfo {
                gtfs_id: "F".into(),
                agencies: vec![AgencyInfo {
                    agency_id: Some("A1".into()),
                    name: "speedtransit".into(),
                    timezone: Some("Europe/Berlin".into()),
                }],
            }]
        );
        // A feed without agencies, and an agency of another feed.
        let body = json!({"data": {"feeds": [{"feedId": "X", "agencies": null}]}});
        assert_eq!(
            parse_feeds(body.to_string().as_bytes()).unwrap()[0].agencies,
            vec![]
        );
        let body = json!({"data": {"feeds": [{"feedId": "X", "agencies": [
            {"gtfsId": "Y:1", "name": "n", "timezone": "UTC"}]}]}});
        assert!(parse_feeds(body.to_string().as_bytes()).is_err());
    }

    /// Decodes standard base64 (the mock's pattern ids are Relay ids `Pattern:{code}`).
    fn base64(s: &str) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes().filter(|&c| c != b'=') {
            bits = bits << 6 | ABC.iter().position(|&a| a == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// A raw GraphQL `Route` answer built from otp-ui's CobbLinc mock (a client-side
    /// shape): route fields as they are; patterns as a list with `code` and `directionId`
    /// from the decoded Relay id, stops as `gtfsId`/`name`/`code`/`lat`/`lon`. The mock
    /// holds no trips and no headsigns: three trips are made up for the first pattern.
    fn mock_route_answer() -> Value {
        let mock: Value = serde_json::from_slice(&fixture("mock-route-otp2.json")).unwrap();
        let patterns: Vec<Value> = mock["patterns"]
            .as_object()
            .unwrap()
            .values()
            .enumerate()
            .map(|(i, p)| {
                let relay = base64(p["id"].as_str().unwrap());
                let code = relay.strip_prefix("Pattern:").unwrap().to_owned();
                let direction: i64 = code.split(':').nth(2).unwrap().parse().unwrap();
                let stops: Vec<Value> = p["stops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        json!({"gtfsId": s["id"], "name": s["name"], "code": s["code"],
                               "lat": s["lat"], "lon": s["lon"]})
                    })
                    .collect();
                let trips: Vec<Value> = (0..if i == 0 { 3 } else { 0 })
                    .map(|t| json!({"gtfsId": format!("4:trip{t}")}))
                    .collect();
                json!({"code": code, "directionId": direction, "headsign": null,
                       "stops": stops, "trips": trips})
            })
            .collect();
        json!({"data": {"route": {
            "gtfsId": mock["id"], "shortName": mock["shortName"], "longName": mock["longName"],
            "mode": mock["mode"], "type": mock["type"], "color": mock["color"],
            "textColor": mock["textColor"], "sortOrder": null,
            "agency": {"gtfsId": mock["agency"]["id"]},
            "patterns": patterns
        }}})
    }

    #[test]
    fn route_from_cobblinc_mock() {
        let body = mock_route_answer().to_string();
        let route = parse_route("4", body.as_bytes()).unwrap().unwrap();
        let s = &route.summary;
        assert_eq!(s.route_id, "101");
        assert_eq!(s.agency_id.as_deref(), Some("1"));
        assert_eq!(s.short_name.as_deref(), Some("101"));
        assert_eq!(s.long_name.as_deref(), Some("MARTA Civic/5 Points - MTC"));
        assert_eq!((s.route_type, s.mode.as_str()), (3, "BUS"));
        assert_eq!(s.color.as_deref(), Some("0d0d0d"));
        assert_eq!(s.text_color.as_deref(), Some("f2f2f2"));
        assert_eq!(s.sort_order, None);
        assert_eq!(route.patterns.len(), 2);
        let p0 = &route.patterns[0];
        assert_eq!(p0.pattern_id, "4:101:0:01");
        assert_eq!(p0.direction_id, Some(0));
        assert_eq!(p0.headsign, None);
        assert_eq!(p0.stops.len(), 16);
        assert_eq!(
            p0.stops[0],
            StopRef {
                stop_id: "30".into(),
                name: Some("MARIETTA TRANSFER CENTER".into()),
                code: Some("920030".into()),
                lat: Some(33.941682),
                lon: Some(-84.529481),
            }
        );
        assert_eq!(p0.trip_count, 3);
        let p1 = &route.patterns[1];
        assert_eq!(
            (p1.pattern_id.as_str(), p1.direction_id),
            ("4:101:1:01", Some(1))
        );
        assert_eq!((p1.stops.len(), p1.trip_count), (19, 0));
        assert_eq!(route.trip_count, 3);
        // The route of another feed is an error, not a silent relabel.
        let err = msg(parse_route("5", body.as_bytes()).unwrap_err());
        assert!(err.starts_with("data.route.gtfsId:"), "{err}");
    }

    #[test]
    fn route_details() {
        // Unknown route.
        assert_eq!(
            parse_route("F", br#"{"data":{"route":null}}"#).unwrap(),
            None
        );
        // Minimal route: no patterns, direction -1, null lists, a consolidated stop of
        // another feed keeps its full id.
        let body = json!({"data": {"route": {"gtfsId": "F:r", "mode": "TRAM", "patterns": [
            {"code": "F:r:0:01", "directionId": -1, "headsign": "Town", "trips": null,
             "stops": [{"gtfsId": "F:s1"}, {"gtfsId": "MARTA:907"}]},
            {"code": "F:r:1:01", "directionId": null, "stops": null, "trips": [{"gtfsId": "F:t"}]}
        ]}}});
        let r = parse_route("F", body.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.summary.route_type, 0);
        assert_eq!(r.patterns[0].direction_id, None);
        assert_eq!(r.patterns[0].headsign.as_deref(), Some("Town"));
        assert_eq!(r.patterns[0].stops[0].stop_id, "s1");
        assert_eq!(r.patterns[0].stops[1].stop_id, "MARTA:907");
        assert_eq!(r.patterns[0].trip_count, 0);
        assert_eq!(r.patterns[1].direction_id, None);
        assert!(r.patterns[1].stops.is_empty());
        assert_eq!(r.trip_count, 1);
        let body = json!({"data": {"route": {"gtfsId": "F:r", "mode": "BUS"}}});
        let r = parse_route("F", body.to_string().as_bytes())
            .unwrap()
            .unwrap();
        assert!(r.patterns.is_empty());
        assert_eq!(r.trip_count, 0);
    }

    #[test]
    fn bad_bodies_are_malformed() {
        let routes_cases: &[(&str, &str)] = &[
            ("", "empty body"),
            ("garbage", "not JSON"),
            ("{}", "data: missing"),
            ("[]", "found an array"),
            (r#"{"data":null}"#, "data: expected an object, found null"),
            (r#"{"errors":[{"message":"boom"}]}"#, "boom"),
            (
                r#"{"data":{"routes":null},"errors":[{"message":"boom"}]}"#,
                "boom",
            ),
            (r#"{"errors":"boom"}"#, "errors: expected an array"),
            (
                r#"{"data":{"routes":[{"gtfsId":"F:1","mode":"BUS""#,
                "not JSON",
            ),
            (
                r#"{"data":{"routes":5}}"#,
                "data.routes: expected an array, found a number",
            ),
            (r#"{"data":{"routes":null}}"#, "data.routes: is null"),
            (
                r#"{"data":{"routes":[null]}}"#,
                "data.routes[0]: expected an object, found null",
            ),
            (
                r#"{"data":{"routes":[{"gtfsId":"nocolon","mode":"BUS"}]}}"#,
                "not a feedId:localId",
            ),
            (
                r#"{"data":{"routes":[{"gtfsId":7}]}}"#,
                "data.routes[0].gtfsId: expected a string",
            ),
            (
                r#"{"data":{"routes":[{"gtfsId":"F:1"}]}}"#,
                "neither mode nor type",
            ),
            (
                r#"{"data":{"routes":[{"gtfsId":"F:1","mode":"BUS","type":"3"}]}}"#,
                "data.routes[0].type: expected an integer",
            ),
            (
                r#"{"data":{"routes":[{"gtfsId":"F:1","mode":"BUS","agency":{"gtfsId":"A1"}}]}}"#,
                "data.routes[0].agency.gtfsId",
            ),
        ];
        for (body, want) in routes_cases {
            let err = msg(parse_routes("F", body.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{body}: {err}");
        }
        let route_cases: &[(&str, &str)] = &[
            ("", "empty body"),
            ("garbage", "not JSON"),
            ("{}", "data: missing"),
            (r#"{"data":null}"#, "data: expected an object"),
            (r#"{"data":{}}"#, "data.route: missing"),
            (r#"{"errors":[{"message":"boom"}]}"#, "boom"),
            (
                r#"{"data":{"route":null},"errors":[{"message":"boom"}]}"#,
                "boom",
            ),
            (r#"{"data":{"route":5}}"#, "data.route: expected an object"),
            (
                r#"{"data":{"route":{"gtfsId":"r","mode":"BUS"}}}"#,
                "not a feedId:localId",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":{}}}}"#,
                "data.route.patterns: expected an array",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":[{"code":"c","stops":[{"gtfsId":"s"}]}]}}}"#,
                "data.route.patterns[0].stops[0].gtfsId",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":[{"code":"c","directionId":"0"}]}}}"#,
                "directionId: expected an integer",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":[{"code":"c","directionId":7000}]}}}"#,
                "direction 7000",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":[{"code":"c","stops":[{"gtfsId":"F:s","lat":"x"}]}]}}}"#,
                "stops[0].lat: expected a number",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":[{"directionId":0}]}}}"#,
                "patterns[0].code: missing",
            ),
            (
                r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","patterns":[{"code":"c","trips":[3]}]}}}"#,
                "trips[0]: expected an object",
            ),
        ];
        for (body, want) in route_cases {
            let err = msg(parse_route("F", body.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{body}: {err}");
        }
        for body in [
            "",
            "garbage",
            "{}",
            r#"{"data":null}"#,
            r#"{"data":{"feeds":5}}"#,
            r#"{"errors":[{"message":"boom"}]}"#,
            r#"{"data":{"feeds":[{"feedId":"F","agencies":[{"gtfsId":"x","name":"n"}]}]}}"#,
        ] {
            assert!(parse_feeds(body.as_bytes()).is_err(), "{body}");
        }
        // A huge error message is cut.
        let long = json!({"errors": [{"message": "x".repeat(5000)}]}).to_string();
        assert!(msg(parse_routes("F", long.as_bytes()).unwrap_err()).len() < 300);
    }

    #[test]
    fn truncated_fixture_never_panics() {
        let body = mock_route_answer().to_string();
        for cut in (0..body.len()).step_by(97) {
            assert!(parse_route("4", &body.as_bytes()[..cut]).is_err());
        }
        let routes = fixture("expectations/routes-extended.json");
        for cut in (0..routes.len()).step_by(31) {
            assert!(parse_routes("F", &routes[..cut]).is_err());
        }
    }

    // ---- The fast path of `parse_route` against the slow one ----

    /// Runs both paths on `body`: the fast one must answer nothing or exactly what the
    /// slow one answers, and `parse_route` what the slow one answers (errors included).
    /// Whether the fast path answered.
    fn same_as_slow(gtfs_id: &str, body: &[u8], case: &str) -> bool {
        let slow = parse_route_slow(gtfs_id, body);
        let fast = fast::parse_route(gtfs_id, body);
        if let Some(fast) = &fast {
            let Ok(slow) = &slow else {
                panic!(
                    "{case}: the fast path accepted what the slow one refuses: {slow:?}\n{}",
                    String::from_utf8_lossy(body)
                );
            };
            // Debug, not ==: it tells -0.0 from 0.0.
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{case}");
        }
        assert_eq!(
            format!("{:?}", parse_route(gtfs_id, body)),
            format!("{slow:?}"),
            "{case}"
        );
        fast.is_some()
    }

    /// [`mock_route_answer`] cut down to two stops per pattern and two trips, so that
    /// every value of it can be mutated in turn.
    fn small_route_answer() -> Value {
        let mut v = mock_route_answer();
        for p in v["data"]["route"]["patterns"].as_array_mut().unwrap() {
            p["stops"].as_array_mut().unwrap().truncate(2);
            p["headsign"] = json!("Marietta");
        }
        v["data"]["route"]["patterns"][0]["trips"]
            .as_array_mut()
            .unwrap()
            .truncate(2);
        v["data"]["route"]["sortOrder"] = json!(3);
        v
    }

    /// A route of feed "F" with every field set, and a stop of another feed.
    fn full_route_answer() -> Value {
        json!({"data": {"route": {
            "gtfsId": "F:r", "shortName": "R", "longName": "The R", "mode": "RAIL",
            "type": 2, "color": "#FF0000", "textColor": "fff", "sortOrder": 0,
            "agency": {"gtfsId": "F:a"},
            "patterns": [
                {"code": "F:r:0:01", "directionId": 0, "headsign": "North",
                 "stops": [{"gtfsId": "F:s1", "name": "One", "code": "1", "lat": 37.5, "lon": -122},
                           {"gtfsId": "G:s2", "name": "", "code": null, "lat": null}],
                 "trips": [{"gtfsId": "F:t1"}, {"gtfsId": "F:t2"}]},
                {"code": "F:r:1:01", "directionId": 1, "headsign": null, "stops": [],
                 "trips": [{"gtfsId": "F:t3"}]}
            ]
        }}})
    }

    /// A realistic-size answer of feed "bart": `patterns` patterns of 25 stops and
    /// `trips` trips each.
    fn big_route_answer(patterns: usize, trips: usize) -> Value {
        let patterns: Vec<Value> = (0..patterns)
            .map(|p| {
                let stops: Vec<Value> = (0..25)
                    .map(|s| {
                        json!({"gtfsId": format!("bart:S{s}"), "name": format!("Stop {s}"),
                               "code": null, "lat": 37.0 + s as f64 / 100.0, "lon": -122.25})
                    })
                    .collect();
                let trips: Vec<Value> = (0..trips)
                    .map(|t| json!({"gtfsId": format!("bart:{p}-{t}-weekday")}))
                    .collect();
                json!({"code": format!("bart:01:{}:{p:02}", p % 2), "directionId": p % 2,
                       "headsign": "Richmond", "stops": stops, "trips": trips})
            })
            .collect();
        json!({"data": {"route": {
            "gtfsId": "bart:01", "shortName": null, "longName": "Richmond - Millbrae",
            "mode": "SUBWAY", "type": 1, "color": "ff0000", "textColor": null,
            "sortOrder": null, "agency": {"gtfsId": "bart:BART"}, "patterns": patterns
        }}})
    }

    /// JSON pointers to every value of `v` (the root is "").
    fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
        out.push(at.to_owned());
        match v {
            Value::Object(m) => {
                for (key, child) in m {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    pointers(child, &format!("{at}/{key}"), out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    pointers(child, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    /// `base` with the value at `ptr` replaced by the raw bytes `raw`.
    fn splice(base: &Value, ptr: &str, raw: &[u8]) -> Vec<u8> {
        const MARK: &str = "\"__splice__\"";
        let mut v = base.clone();
        *v.pointer_mut(ptr).unwrap() = serde_json::from_str(MARK).unwrap();
        let text = v.to_string();
        let at = text.find(MARK).unwrap();
        [
            &text.as_bytes()[..at],
            raw,
            &text.as_bytes()[at + MARK.len()..],
        ]
        .concat()
    }

    /// Raw JSON put in place of every value: types, numbers around the edges of `i64`,
    /// `u64` and `f64`, ids of other feeds, escapes, what a [`Value`] refuses (bad
    /// surrogates, bytes that are not UTF-8, nesting deeper than 128) or reads with
    /// a duplicate key.
    fn raw_values() -> Vec<Vec<u8>> {
        let mut raw: Vec<Vec<u8>> = [
            "null",
            r#""""#,
            r#""x""#,
            r##""#""##,
            r#""F:x""#,
            r#""G:x""#,
            r#""4:x""#,
            r#""bart:x""#,
            r#"":x""#,
            "0",
            "-1",
            "1",
            "2",
            "255",
            "7000",
            "37",
            "37.5",
            "1.0",
            "-0",
            "-0.0",
            "1e2",
            "1e400",
            "-1e400",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "100000000000000000000000",
            "true",
            "[]",
            "{}",
            "[{}]",
            "[null]",
            r#"["F:x"]"#,
            r#"{"gtfsId":"F:x"}"#,
            r#"[{"gtfsId":"F:x"}]"#,
            r#""\u0046:\u0072""#,
            r#""\u0034:101""#,
            r#""\ud800""#,
            r#""\ud83d\ude8c""#,
            r#""a\"b\\c\n""#,
            r#"{"a":1,"a":[2]}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        raw.push(b"\"\xff\"".to_vec());
        raw.push(format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes());
        raw
    }

    /// The JSON object `obj` with `"key": raw` first.
    fn with_key(obj: &Value, key: &str, raw: &[u8]) -> Vec<u8> {
        let text = obj.to_string();
        let head = format!("{{{}:", serde_json::to_string(key).unwrap());
        let tail = match &text[1..] {
            "}" => "}".to_owned(),
            rest => format!(",{rest}"),
        };
        [head.as_bytes(), raw, tail.as_bytes()].concat()
    }

    /// `base` changed in many ways, each with a name: every value removed, replaced by
    /// each of [`raw_values`], a string written with `\u` escapes, an object by the
    /// array of its values, objects with an unknown key (and the root with `errors` and
    /// `extensions`) or a duplicate key.
    fn mutations(base: &Value) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = Vec::new();
        pointers(base, "", &mut at);
        let raw_values = raw_values();
        let mut extra_values = raw_values.clone();
        extra_values.retain(|raw| serde_json::from_slice::<Value>(raw).is_err());
        let good = [
            r#"{"cost":[1,{"a":null}]}"#,
            "null",
            "[]",
            r#"[{"message":"boom"}]"#,
        ];
        extra_values.extend(good.map(|raw| raw.as_bytes().to_vec()));
        for ptr in &at {
            let original = base.pointer(ptr).unwrap();
            if let Some((parent, key)) = ptr.rsplit_once('/') {
                let mut v = base.clone();
                match v.pointer_mut(parent).unwrap() {
                    Value::Object(m) => drop(m.remove(key)),
                    Value::Array(a) => drop(a.remove(key.parse::<usize>().unwrap())),
                    _ => unreachable!(),
                }
                out.push((format!("{ptr} removed"), v.to_string().into_bytes()));
            }
            for raw in &raw_values {
                let name = format!("{ptr} = {}", String::from_utf8_lossy(raw));
                out.push((name, splice(base, ptr, raw)));
            }
            match original {
                Value::String(s) => {
                    let escaped: String = s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
                    let raw = format!("\"{escaped}\"");
                    out.push((format!("{ptr} escaped"), splice(base, ptr, raw.as_bytes())));
                }
                Value::Object(m) => {
                    let values = Value::Array(m.values().cloned().collect());
                    let raw = values.to_string();
                    out.push((
                        format!("{ptr} as an array"),
                        splice(base, ptr, raw.as_bytes()),
                    ));
                    // Unknown keys, with values a `Value` takes or refuses.
                    let keys: &[&str] = if ptr.is_empty() {
                        &["extra", "errors", "extensions"]
                    } else {
                        &["extra"]
                    };
                    for key in keys {
                        for raw in &extra_values {
                            let name =
                                format!("{ptr} with {key}: {}", String::from_utf8_lossy(raw));
                            let raw = with_key(original, key, raw);
                            out.push((name, splice(base, ptr, &raw)));
                        }
                    }
                    // Each key twice: the same value first, or null last (which a
                    // `Value` keeps).
                    let text = original.to_string();
                    for (key, value) in m {
                        let key = serde_json::to_string(key).unwrap();
                        let first = format!("{{{key}:{value},{}", &text[1..]);
                        let last = format!("{},{key}:null}}", &text[..text.len() - 1]);
                        for (name, raw) in [("first", first), ("last", last)] {
                            let name = format!("{ptr} with {key} also {name}");
                            out.push((name, splice(base, ptr, raw.as_bytes())));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn fast_route_path_agrees_with_slow_path() {
        let mut bart = big_route_answer(2, 2);
        for p in bart["data"]["route"]["patterns"].as_array_mut().unwrap() {
            p["stops"].as_array_mut().unwrap().truncate(1);
        }
        let bases = [
            ("4", small_route_answer()),
            ("F", full_route_answer()),
            ("bart", bart),
        ];
        let (mut cases, mut fast) = (0, 0);
        for (gtfs_id, base) in &bases {
            assert!(same_as_slow(gtfs_id, base.to_string().as_bytes(), "base"));
            for (case, body) in mutations(base) {
                cases += 1;
                fast += usize::from(same_as_slow(gtfs_id, &body, &case));
            }
        }
        // The mutations are mostly refused; a good share is still the fast path's.
        assert!(cases > 5000, "{cases}");
        assert!(fast > cases / 10, "{fast} of {cases}");
    }

    #[test]
    fn fast_route_path_takes_real_answers() {
        // The whole mock fixture, an answer of bart route 01's shape (20 patterns, 400
        // trips) and a much larger one.
        let mock = mock_route_answer().to_string();
        assert!(same_as_slow("4", mock.as_bytes(), "mock"));
        for (patterns, trips) in [(20, 20), (12, 3000)] {
            let big = big_route_answer(patterns, trips).to_string();
            assert!(same_as_slow("bart", big.as_bytes(), "big"));
            let route = fast::parse_route("bart", big.as_bytes()).unwrap().unwrap();
            assert_eq!(route.trip_count, patterns * trips);
            // Formatted as OTP writes it, with spaces and newlines.
            let pretty = serde_json::to_string_pretty(&big_route_answer(patterns, trips)).unwrap();
            assert!(same_as_slow("bart", pretty.as_bytes(), "pretty"));
        }
        // Short answers.
        for body in [
            r#"{"data":{"route":null}}"#,
            r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS"}}}"#,
        ] {
            assert!(same_as_slow("F", body.as_bytes(), body));
        }
        // Escaped strings are taken (owned, not borrowed) and read the same.
        let escaped = r#"{"data":{"route":{"gtfsId":"\u0046:\u0072","mode":"B\u0055S",
            "longName":"a\"b","patterns":[{"code":"c\n","stops":[{"gtfsId":"F:s\u00e9"}],
            "trips":[{"gtfsId":"F:\ud83d\ude8c"}]}]}}}"#;
        assert!(same_as_slow("F", escaped.as_bytes(), "escaped"));
        let r = fast::parse_route("F", escaped.as_bytes()).unwrap().unwrap();
        assert_eq!(r.summary.route_id, "r");
        assert_eq!(r.summary.mode, "BUS");
        assert_eq!(r.summary.long_name.as_deref(), Some("a\"b"));
        assert_eq!(r.patterns[0].stops[0].stop_id, "s\u{e9}");
        assert_eq!(r.trip_count, 1);
    }

    #[test]
    fn fast_route_path_refuses_arrays_for_objects() {
        // The trap: a derived struct takes a JSON array, fields by position.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Derived {
            a: String,
        }
        assert!(serde_json::from_str::<Derived>(r#"["x"]"#).is_ok());

        // Each object of an answer as the array of its values: refused, with the slow
        // path's message.
        let base = full_route_answer();
        for (ptr, want) in [
            ("", "expected a GraphQL answer (an object), found an array"),
            ("/data", "data: expected an object, found an array"),
            (
                "/data/route",
                "data.route: expected an object, found an array",
            ),
            (
                "/data/route/agency",
                "data.route.agency: expected an object, found an array",
            ),
            (
                "/data/route/patterns/0",
                "data.route.patterns[0]: expected an object, found an array",
            ),
            (
                "/data/route/patterns/0/stops/1",
                "data.route.patterns[0].stops[1]: expected an object, found an array",
            ),
            (
                "/data/route/patterns/0/trips/1",
                "data.route.patterns[0].trips[1]: expected an object, found an array",
            ),
        ] {
            let Value::Object(m) = base.pointer(ptr).unwrap() else {
                panic!("{ptr}")
            };
            let values = Value::Array(m.values().cloned().collect()).to_string();
            let body = splice(&base, ptr, values.as_bytes());
            assert_eq!(fast::parse_route("F", &body), None, "{ptr}");
            assert_eq!(msg(parse_route("F", &body).unwrap_err()), want);
        }
        // The root as the array of all three of its fields (data, errors, extensions),
        // which a derived struct would read by position.
        for root in [
            r#"[{"route":{"gtfsId":"F:r","mode":"BUS"}},null,null]"#,
            r#"[{"route":null},null,null]"#,
        ] {
            assert_eq!(fast::parse_route("F", root.as_bytes()), None, "{root}");
            assert_eq!(
                msg(parse_route("F", root.as_bytes()).unwrap_err()),
                "expected a GraphQL answer (an object), found an array"
            );
        }
    }

    #[test]
    fn fast_route_path_reads_numbers_as_the_slow_path() {
        let base = full_route_answer();
        let with = |ptr: &str, raw: &str| splice(&base, ptr, raw.as_bytes());
        let direction = "/data/route/patterns/0/directionId";
        // A float is not an integer, even 1.0.
        for raw in ["1.0", "1e0", "-0"] {
            let body = with(direction, raw);
            assert_eq!(fast::parse_route("F", &body), None, "{raw}");
            assert_eq!(
                msg(parse_route("F", &body).unwrap_err()),
                "data.route.patterns[0].directionId: expected an integer, found a number"
            );
        }
        // Above i64::MAX is refused; i64::MAX itself is read, then refused as a type.
        let body = with("/data/route/type", "9223372036854775808");
        assert_eq!(fast::parse_route("F", &body), None);
        assert_eq!(
            msg(parse_route("F", &body).unwrap_err()),
            "data.route.type: expected an integer, found a number"
        );
        let body = with("/data/route/type", "9223372036854775807");
        assert_eq!(fast::parse_route("F", &body), None);
        assert_eq!(
            msg(parse_route("F", &body).unwrap_err()),
            "data.route.type: route type 9223372036854775807 is out of range"
        );
        // A sort order out of range is none, as in the slow path.
        let body = with("/data/route/sortOrder", "-9223372036854775808");
        let r = fast::parse_route("F", &body).unwrap().unwrap();
        assert_eq!(r.summary.sort_order, None);
        // Coordinates take integers, and refuse what f64 cannot hold.
        let lat = "/data/route/patterns/0/stops/0/lat";
        let r = fast::parse_route("F", &with(lat, "37")).unwrap().unwrap();
        assert_eq!(r.patterns[0].stops[0].lat, Some(37.0));
        assert_eq!(r.patterns[0].stops[0].lon, Some(-122.0));
        let r = fast::parse_route("F", &with(lat, "-0")).unwrap().unwrap();
        assert_eq!(format!("{:?}", r.patterns[0].stops[0].lat), "Some(-0.0)");
        let body = with(lat, "1e400");
        assert_eq!(fast::parse_route("F", &body), None);
        assert!(msg(parse_route("F", &body).unwrap_err()).starts_with("not JSON"));
        for raw in ["1.0", "-0", "37", "1e400", "18446744073709551615", "\"1\""] {
            for ptr in [direction, lat, "/data/route/type", "/data/route/sortOrder"] {
                same_as_slow("F", &with(ptr, raw), &format!("{ptr} = {raw}"));
            }
        }
    }
}
