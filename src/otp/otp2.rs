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

use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::{Value, json};

use super::de::{
    AnyString, Count, Int, List, NullOrObject, Num, Object, Required, Text, decode, items, object,
    owned, text,
};
use super::{
    AdapterError, SummaryFields, direction, echo, local_id, malformed, route_summary, split_id,
    stop_id,
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
    let Object(data) = answer::<Object<FeedsData<'_>>>(body)?;
    data.feeds
        .0
        .into_iter()
        .enumerate()
        .map(|(i, Object(feed))| {
            let gtfs_id = feed.feed_id.as_str();
            let agencies = items(feed.agencies)
                .into_iter()
                .enumerate()
                .map(|(j, Object(agency))| {
                    let path = format_args!("data.feeds[{i}].agencies[{j}]");
                    let id = agency.gtfs_id.get(&format_args!("{path}.gtfsId"))?;
                    let id_path = format_args!("{path}.gtfsId");
                    Ok(AgencyInfo {
                        agency_id: Some(local_id(id.as_str(), gtfs_id, &id_path)?.into()),
                        name: agency.name.get(&format_args!("{path}.name"))?.into_string(),
                        timezone: owned(&agency.timezone),
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
    let Object(data) = answer::<Object<RoutesData<'_>>>(body)?;
    let mut out = Vec::with_capacity(data.routes.0.len());
    for (i, Object(route)) in data.routes.0.iter().enumerate() {
        let id_path = format_args!("data.routes[{i}].gtfsId");
        let (feed, route_id) = split_id(route.gtfs_id.as_str(), &id_path)?;
        if feed == gtfs_id {
            let path = format_args!("data.routes[{i}]");
            out.push(summary(route, &path, gtfs_id, route_id)?);
        }
    }
    Ok(out)
}

/// The answer to [`route_request`]: `Ok(None)` when OTP knows no such route
/// (`data.route` is null).
pub fn parse_route(gtfs_id: &str, body: &[u8]) -> Result<Option<RouteDetail>, AdapterError> {
    let Object(data) = answer::<Object<RouteData<'_>>>(body)?;
    let Some(route) = data.route.0 else {
        return Ok(None);
    };
    let route_id = local_id(route.gtfs_id.as_str(), gtfs_id, "data.route.gtfsId")?;
    let summary = summary(&route, &"data.route", gtfs_id, route_id)?;
    let patterns = items(route.patterns)
        .into_iter()
        .enumerate()
        .map(|(i, Object(p))| pattern(p, i, gtfs_id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(RouteDetail {
        summary,
        trip_count: patterns.iter().map(|p| p.trip_count).sum(),
        patterns,
    }))
}

/// `data` of a GraphQL answer, after checking there are no `errors`.
///
/// GraphQL nulls out the fields that failed, so an answer with errors is reported by its
/// first error whatever its `data` looks like: when the answer does not fit `D`, it is
/// read again for its `errors` alone before the misfit is reported.
fn answer<'a, D: Deserialize<'a>>(body: &'a [u8]) -> Result<D, AdapterError> {
    match decode::<GraphQl<Answer<D>>>(body, "") {
        Ok(GraphQl(Answer { data, errors })) => match graphql_errors(errors) {
            Some(err) => Err(err),
            None => Ok(data),
        },
        Err(misfit) => match decode::<GraphQl<ErrorsOnly>>(body, "") {
            Ok(GraphQl(ErrorsOnly { errors })) => Err(graphql_errors(errors).unwrap_or(misfit)),
            // The errors do not fit (`errors` is not an array, the root not an object),
            // or the body is not JSON further on.
            Err(err) => Err(err),
        },
    }
}

fn graphql_errors(errors: Option<List<GraphQlError>>) -> Option<AdapterError> {
    let errors = errors?.0;
    let first = errors.first()?;
    Some(malformed(format!(
        "GraphQL errors ({}), first: {}",
        errors.len(),
        echo(first.0.as_deref().unwrap_or("(no message)"))
    )))
}

/// A GraphQL answer `T`: a JSON object.
struct GraphQl<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for GraphQl<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d, "a GraphQL answer (an object)").map(GraphQl)
    }
}

/// `{"data": D, "errors": [...]}`; other keys, such as `extensions`, are skipped.
#[derive(Deserialize)]
struct Answer<D> {
    data: D,
    errors: Option<List<GraphQlError>>,
}

/// The same answer read for its `errors` alone.
#[derive(Deserialize)]
struct ErrorsOnly {
    errors: Option<List<GraphQlError>>,
}

/// An entry of `errors`: its `message`, if it is an object with a string one.
struct GraphQlError(Option<String>);

impl<'de> Deserialize<'de> for GraphQlError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entry = Value::deserialize(d)?;
        let message = entry.get("message").and_then(Value::as_str);
        Ok(GraphQlError(message.map(str::to_owned)))
    }
}

#[derive(Deserialize)]
struct FeedsData<'a> {
    #[serde(borrow)]
    feeds: List<Object<FeedIn<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedIn<'a> {
    #[serde(borrow)]
    feed_id: Text<'a>,
    #[serde(borrow)]
    agencies: Option<List<Object<AgencyIn<'a>>>>,
}

/// An agency of a feed: `gtfsId` and `name` are required, checked after the feed's
/// `feedId` (as if they were read in that order).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgencyIn<'a> {
    #[serde(borrow, default)]
    gtfs_id: Required<Text<'a>>,
    #[serde(borrow, default)]
    name: Required<Text<'a>>,
    #[serde(borrow)]
    timezone: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RoutesData<'a> {
    #[serde(borrow)]
    routes: List<Object<RouteIn<'a>>>,
}

#[derive(Deserialize)]
struct RouteData<'a> {
    /// Required: `null` is "no such route", missing is a wrong answer.
    #[serde(borrow)]
    route: NullOrObject<RouteIn<'a>>,
}

/// A route of `Routes` or `Route` (`Routes` selects no `patterns`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteIn<'a> {
    #[serde(borrow)]
    gtfs_id: Text<'a>,
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
    #[serde(borrow)]
    agency: Option<Object<AgencyRef<'a>>>,
    #[serde(borrow)]
    patterns: Option<List<Object<PatternIn<'a>>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgencyRef<'a> {
    #[serde(borrow)]
    gtfs_id: Text<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PatternIn<'a> {
    #[serde(borrow)]
    code: Text<'a>,
    direction_id: Option<Int>,
    #[serde(borrow)]
    headsign: Option<Text<'a>>,
    #[serde(borrow)]
    stops: Option<List<Object<StopIn<'a>>>>,
    /// Counted, not kept: the model has no trips.
    trips: Option<Count<Object<Trip>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopIn<'a> {
    #[serde(borrow)]
    gtfs_id: Text<'a>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    code: Option<Text<'a>>,
    lat: Option<Num>,
    lon: Option<Num>,
}

/// A trip: checked (an object with a string `gtfsId`), not kept.
#[derive(Deserialize)]
struct Trip {
    #[serde(rename = "gtfsId")]
    _gtfs_id: AnyString,
}

/// The summary of a route (`Routes` and `Route` select the same fields) found at `path`.
fn summary(
    route: &RouteIn<'_>,
    path: &dyn std::fmt::Display,
    gtfs_id: &str,
    route_id: &str,
) -> Result<RouteSummary, AdapterError> {
    let agency_id = match &route.agency {
        Some(Object(agency)) => {
            let id_path = format_args!("{path}.agency.gtfsId");
            Some(local_id(agency.gtfs_id.as_str(), gtfs_id, &id_path)?.to_owned())
        }
        None => None,
    };
    let fields = SummaryFields {
        short_name: text(&route.short_name),
        long_name: text(&route.long_name),
        mode: text(&route.mode),
        route_type: route.route_type.map(|t| t.0),
        color: text(&route.color),
        text_color: text(&route.text_color),
        sort_order: route.sort_order.map(|n| n.0),
    };
    route_summary(&fields, path, route_id, agency_id, mode_of_route_type)
}

/// Pattern `i` of `data.route`.
fn pattern(p: PatternIn<'_>, i: usize, gtfs_id: &str) -> Result<Pattern, AdapterError> {
    let stops = items(p.stops)
        .into_iter()
        .enumerate()
        .map(|(j, Object(s))| {
            let path = format_args!("data.route.patterns[{i}].stops[{j}].gtfsId");
            Ok(StopRef {
                stop_id: stop_id(s.gtfs_id.as_str(), gtfs_id, &path)?,
                name: owned(&s.name),
                code: owned(&s.code),
                lat: s.lat.map(|n| n.0),
                lon: s.lon.map(|n| n.0),
            })
        })
        .collect::<Result<_, AdapterError>>()?;
    let direction_path = format_args!("data.route.patterns[{i}].directionId");
    Ok(Pattern {
        pattern_id: p.code.into_string(),
        direction_id: direction(p.direction_id.map(|d| d.0), &direction_path)?,
        headsign: owned(&p.headsign),
        stops,
        trip_count: p.trips.map_or(0, |t| t.0),
    })
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

    // ---- `parse_route` at the edges ----

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

    #[test]
    fn route_takes_real_answers() {
        // An answer of bart route 01's shape (20 patterns, 400 trips) and a much larger
        // one, compact and formatted as OTP writes it, with spaces and newlines.
        for (patterns, trips) in [(20, 20), (12, 3000)] {
            let big = big_route_answer(patterns, trips);
            let route = parse_route("bart", big.to_string().as_bytes())
                .unwrap()
                .unwrap();
            assert_eq!(route.trip_count, patterns * trips);
            assert_eq!(route.patterns.len(), patterns);
            assert_eq!(route.patterns[1].stops[24].stop_id, "S24");
            let pretty = serde_json::to_string_pretty(&big).unwrap();
            assert_eq!(
                parse_route("bart", pretty.as_bytes()).unwrap().unwrap(),
                route
            );
        }
        // Short answers; `errors` null or empty and `extensions` are no errors.
        for body in [
            r#"{"data":{"route":null}}"#,
            r#"{"data":{"route":null},"errors":null,"extensions":{"cost":[1,{"a":null}]}}"#,
            r#"{"errors":[],"data":{"route":null}}"#,
        ] {
            assert_eq!(parse_route("F", body.as_bytes()).unwrap(), None, "{body}");
        }
        let r = parse_route("F", br#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS"}}}"#)
            .unwrap()
            .unwrap();
        assert_eq!((r.summary.route_type, r.trip_count), (3, 0));
        // Unknown fields are skipped, whatever they hold.
        let body = r#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","x":[{"y":"\ud800"}],
            "patterns":[{"code":"c","new":1e3,"trips":[{"gtfsId":"F:t","z":null}]}]}}}"#;
        assert_eq!(
            parse_route("F", body.as_bytes())
                .unwrap()
                .unwrap()
                .trip_count,
            1
        );
        // Escaped strings are read (owned, not borrowed).
        let escaped = r#"{"data":{"route":{"gtfsId":"\u0046:\u0072","mode":"B\u0055S",
            "longName":"a\"b","patterns":[{"code":"c\n","stops":[{"gtfsId":"F:s\u00e9"}],
            "trips":[{"gtfsId":"F:\ud83d\ude8c"}]}]}}}"#;
        let r = parse_route("F", escaped.as_bytes()).unwrap().unwrap();
        assert_eq!(r.summary.route_id, "r");
        assert_eq!(r.summary.mode, "BUS");
        assert_eq!(r.summary.long_name.as_deref(), Some("a\"b"));
        assert_eq!(r.patterns[0].pattern_id, "c\n");
        assert_eq!(r.patterns[0].stops[0].stop_id, "s\u{e9}");
        assert_eq!(r.trip_count, 1);
        // A key given twice is refused, naming it.
        let twice = br#"{"data":{"route":{"gtfsId":"F:r","mode":"BUS","mode":"RAIL"}}}"#;
        assert_eq!(
            msg(parse_route("F", twice).unwrap_err()),
            "data.route.mode: given twice"
        );
    }

    #[test]
    fn route_refuses_arrays_for_objects() {
        // The trap: a derived struct takes a JSON array, fields by position.
        #[derive(serde::Deserialize)]
        struct Derived {
            a: String,
        }
        let derived: Derived = serde_json::from_str(r#"["x"]"#).unwrap();
        assert_eq!(derived.a, "x");

        // Each object of an answer as the array of its values: refused, naming it.
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
            assert_eq!(msg(parse_route("F", &body).unwrap_err()), want);
        }
        // The root as the array of all three of its fields (data, errors, extensions),
        // which a derived struct would read by position.
        for root in [
            r#"[{"route":{"gtfsId":"F:r","mode":"BUS"}},null,null]"#,
            r#"[{"route":null},null,null]"#,
        ] {
            assert_eq!(
                msg(parse_route("F", root.as_bytes()).unwrap_err()),
                "expected a GraphQL answer (an object), found an array"
            );
        }
    }

    #[test]
    fn route_reads_numbers_strictly() {
        let base = full_route_answer();
        let with = |ptr: &str, raw: &str| splice(&base, ptr, raw.as_bytes());
        let direction = "/data/route/patterns/0/directionId";
        // A float is not an integer, even 1.0.
        for raw in ["1.0", "1e0", "-0"] {
            let body = with(direction, raw);
            assert_eq!(
                msg(parse_route("F", &body).unwrap_err()),
                "data.route.patterns[0].directionId: expected an integer, found a number"
            );
        }
        // Above i64::MAX is refused; i64::MAX itself is read, then refused as a type.
        let body = with("/data/route/type", "9223372036854775808");
        assert_eq!(
            msg(parse_route("F", &body).unwrap_err()),
            "data.route.type: expected an integer, found a number"
        );
        let body = with("/data/route/type", "9223372036854775807");
        assert_eq!(
            msg(parse_route("F", &body).unwrap_err()),
            "data.route.type: route type 9223372036854775807 is out of range"
        );
        // A sort order out of range is none.
        let body = with("/data/route/sortOrder", "-9223372036854775808");
        let r = parse_route("F", &body).unwrap().unwrap();
        assert_eq!(r.summary.sort_order, None);
        // Coordinates take integers, and refuse what f64 cannot hold.
        let lat = "/data/route/patterns/0/stops/0/lat";
        let r = parse_route("F", &with(lat, "37")).unwrap().unwrap();
        assert_eq!(r.patterns[0].stops[0].lat, Some(37.0));
        assert_eq!(r.patterns[0].stops[0].lon, Some(-122.0));
        let r = parse_route("F", &with(lat, "-0")).unwrap().unwrap();
        assert_eq!(format!("{:?}", r.patterns[0].stops[0].lat), "Some(-0.0)");
        let body = with(lat, "1e400");
        assert!(msg(parse_route("F", &body).unwrap_err()).starts_with("not JSON"));
    }
}
