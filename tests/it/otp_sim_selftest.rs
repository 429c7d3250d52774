//! Self-tests of the OTP simulator (`support::otp_sim`), which double as examples of its use.

use std::io::Cursor;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::otp_sim::{Fault, OtpSim, fixture_zip};

/// The three operations the service sends to OTP 2, verbatim.
const FEEDS: &str = "query Feeds { feeds { feedId agencies { gtfsId name timezone } } }";
const ROUTES: &str = "query Routes($feeds: [String]) { routes(feeds: $feeds) { gtfsId shortName longName mode type color textColor sortOrder agency { gtfsId } } }";
const ROUTE: &str = "query Route($id: String!) { route(id: $id) { gtfsId shortName longName mode type color textColor sortOrder agency { gtfsId }
  patterns { code directionId headsign stops { gtfsId name code lat lon } trips { gtfsId } } } }";

const OTP1: &str = "/otp/routers/default/index";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POSTs a GraphQL request to `/otp/gtfs/v1`; returns the status and the JSON body.
async fn graphql(sim: &OtpSim, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/otp/gtfs/v1", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Rows of a fixture's GTFS file, counted with the csv and zip crates.
fn rows_in(feed: &str, file: &str) -> Vec<csv::StringRecord> {
    let mut archive = zip::ZipArchive::new(Cursor::new(fixture_zip(feed))).unwrap();
    let member = archive.by_name(file).unwrap();
    csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(member)
        .records()
        .map(Result::unwrap)
        .collect()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[tokio::test]
async fn one_client_reuses_one_connection() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = client();
    for _ in 0..100 {
        let resp = client
            .get(format!("{}{OTP1}/feeds", sim.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap(), json!(["caltrain"]));
    }
    assert_eq!(sim.connections(), 1);
    assert_eq!(sim.requests(), 100);
    assert_eq!(sim.requests_for(&format!("{OTP1}/feeds")), 100);
}

#[tokio::test]
async fn without_a_pool_every_request_opens_a_connection() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..100 {
        let resp = client
            .get(format!("{}{OTP1}/feeds", sim.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    assert_eq!(sim.connections(), 100);
}

#[tokio::test]
async fn graphql_feeds_and_routes_answer_like_otp() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;

    let (status, body) = graphql(&sim, json!({"query": FEEDS, "operationName": "Feeds"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"data": {"feeds": [
            {"feedId": "caltrain", "agencies": [{"gtfsId": "caltrain:caltrain-ca-us", "name": "Caltrain", "timezone": "America/Los_Angeles"}]},
            {"feedId": "bart", "agencies": [{"gtfsId": "bart:BART", "name": "Bay Area Rapid Transit", "timezone": "America/Los_Angeles"}]},
        ]}})
    );

    let routes_txt = rows_in("caltrain", "routes.txt");
    let (status, body) = graphql(
        &sim,
        json!({"query": ROUTES, "operationName": "Routes", "variables": {"feeds": ["caltrain"]}}),
    )
    .await;
    assert_eq!(status, 200);
    let routes = body["data"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), routes_txt.len());
    let bullet = routes
        .iter()
        .find(|r| r["gtfsId"] == "caltrain:Bu-130")
        .unwrap();
    assert_eq!(
        *bullet,
        json!({"gtfsId": "caltrain:Bu-130", "shortName": "Bullet", "longName": "Baby Bullet", "mode": "RAIL",
               "type": 2, "color": "E31837", "textColor": null, "sortOrder": null,
               "agency": {"gtfsId": "caltrain:caltrain-ca-us"}})
    );
    // Colours as written in routes.txt, lower case included.
    assert!(routes.iter().any(|r| r["color"] == "c5c5c5"));
    assert!(routes.iter().any(|r| r["mode"] == "BUS" && r["type"] == 3));

    // Both feeds without the variable; BART is SUBWAY.
    let (_, body) = graphql(&sim, json!({"query": ROUTES, "operationName": "Routes"})).await;
    let all = body["data"]["routes"].as_array().unwrap();
    assert_eq!(
        all.len(),
        routes_txt.len() + rows_in("bart", "routes.txt").len()
    );
    assert!(
        all.iter()
            .filter(|r| r["gtfsId"].as_str().unwrap().starts_with("bart:"))
            .all(|r| r["mode"] == "SUBWAY")
    );

    assert_eq!(sim.requests_for("Feeds"), 1);
    assert_eq!(sim.requests_for("Routes"), 2);
    assert_eq!(sim.requests_for("/otp/gtfs/v1"), 3);
}

#[tokio::test]
async fn graphql_route_has_otp_patterns() {
    let sim = OtpSim::start(&["bart"]).await;
    let (status, body) = graphql(
        &sim,
        json!({"query": ROUTE, "operationName": "Route", "variables": {"id": "bart:01"}}),
    )
    .await;
    assert_eq!(status, 200);
    let route = &body["data"]["route"];
    assert_eq!(route["gtfsId"], "bart:01");
    assert_eq!(route["mode"], "SUBWAY");
    assert_eq!(route["color"], "ffff33");
    let patterns = route["patterns"].as_array().unwrap();
    assert!(!patterns.is_empty());
    let mut trips = 0;
    for p in patterns {
        let code = p["code"].as_str().unwrap();
        let parts: Vec<&str> = code.split(':').collect();
        assert_eq!(parts.len(), 4, "{code}");
        assert_eq!(&parts[..2], ["bart", "01"]);
        assert_eq!(parts[2], p["directionId"].to_string());
        assert_eq!(parts[3].len(), 2);
        assert!(p["headsign"].is_string());
        let stops = p["stops"].as_array().unwrap();
        assert!(stops.len() >= 2);
        for s in stops {
            assert!(s["gtfsId"].as_str().unwrap().starts_with("bart:"));
            assert!(s["lat"].is_f64() && s["lon"].is_f64());
        }
        trips += p["trips"].as_array().unwrap().len();
    }
    // Every trip of route 01 in trips.txt (all have a service) is in exactly one pattern.
    let trips_txt = rows_in("bart", "trips.txt");
    assert_eq!(trips, trips_txt.iter().filter(|r| &r[0] == "01").count());
    assert_eq!(sim.requests_for("Route"), 1);
}

#[tokio::test]
async fn graphql_invalid_query_gets_errors_and_no_data() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let (status, body) = graphql(
        &sim,
        json!({"query": "query Routes { routes { gtfsIdd } }", "operationName": "Routes"}),
    )
    .await;
    assert_eq!(status, 200, "OTP answers an invalid query with 200");
    assert!(body.get("data").is_none(), "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("gtfsIdd")),
        "{body}"
    );
    assert_eq!(errors[0]["extensions"]["classification"], "ValidationError");
    assert!(errors[0]["locations"][0]["line"].is_u64());

    // A wrong argument type, a missing variable and a syntax error are errors too.
    let (_, body) = graphql(&sim, json!({"query": "{ route(id: 3) { gtfsId } }"})).await;
    assert!(
        body["errors"].is_array() && body.get("data").is_none(),
        "{body}"
    );
    let (_, body) = graphql(&sim, json!({"query": ROUTE, "operationName": "Route"})).await;
    assert!(
        body["errors"].is_array() && body.get("data").is_none(),
        "{body}"
    );
    let (_, body) = graphql(&sim, json!({"query": "{ routes { gtfsId "})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["classification"],
        "InvalidSyntax"
    );
    assert_eq!(sim.requests_for("Routes"), 1);
    assert_eq!(sim.requests_for("Route"), 1);

    // No query at all: 400 text/plain, as GtfsGraphQLAPI answers.
    let resp = client()
        .post(format!("{}/otp/gtfs/v1", sim.url()))
        .json(&json!({"variables": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), "No query found in body");
}

#[tokio::test]
async fn graphql_returns_only_the_selected_fields() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let (_, body) = graphql(
        &sim,
        json!({"query": "{ routes(feeds: [\"caltrain\"]) { gtfsId } }"}),
    )
    .await;
    let routes = body["data"]["routes"].as_array().unwrap();
    assert!(!routes.is_empty());
    for r in routes {
        assert_eq!(keys(r), ["gtfsId"]);
    }

    // Aliases, fragments and __typename, on the old endpoint path too.
    let query = "query Q($id: String!) { r: route(id: $id) { name: shortName ...F __typename } }
                 fragment F on Route { agency { tz: timezone } }";
    let body: Value = client()
        .post(format!("{}/otp/routers/default/index/graphql", sim.url()))
        .json(&json!({"query": query, "variables": {"id": "caltrain:Bu-130"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"data": {"r": {"name": "Bullet", "agency": {"tz": "America/Los_Angeles"}, "__typename": "Route"}}})
    );
    assert_eq!(sim.requests_for("Q"), 1);
}

#[tokio::test]
async fn graphql_filters_and_introspection_like_otp() {
    let sim = OtpSim::start(&["caltrain", "bart"]).await;
    let ask = |query: &str| graphql(&sim, json!({ "query": query }));
    let (_, body) =
        ask(r#"{ routes(ids: ["caltrain:Bu-130", "caltrain:nope"]) { gtfsId } }"#).await;
    assert_eq!(
        body,
        json!({"data": {"routes": [{"gtfsId": "caltrain:Bu-130"}, null]}})
    );
    let (_, body) = ask(r#"{ routes(name: "BAB") { gtfsId } }"#).await;
    assert_eq!(
        body,
        json!({"data": {"routes": [{"gtfsId": "caltrain:Bu-130"}]}})
    );
    let (_, body) = ask("{ routes(transportModes: [BUS]) { mode } }").await;
    let buses = rows_in("caltrain", "routes.txt")
        .iter()
        .filter(|r| &r[5] == "3")
        .count();
    assert_eq!(body["data"]["routes"].as_array().unwrap().len(), buses);
    let (_, body) = ask("{ __schema { queryType { name } } }").await;
    assert_eq!(
        body,
        json!({"data": {"__schema": {"queryType": {"name": "QueryType"}}}})
    );
}

#[tokio::test]
async fn graphql_unknown_route_is_null() {
    let sim = OtpSim::start(&["caltrain"]).await;
    for id in ["caltrain:no-such-route", "nofeed:Bu-130", ""] {
        let (status, body) = graphql(
            &sim,
            json!({"query": ROUTE, "operationName": "Route", "variables": {"id": id}}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({"data": {"route": null}}));
    }
    // An id that is not `feed:id` is an error next to the null, as OTP 2.5.0 and 2.9.0
    // answer.
    let (status, body) = graphql(
        &sim,
        json!({"query": ROUTE, "operationName": "Route", "variables": {"id": "no-colon"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"errors": [{
            "message": "Exception while fetching data (/route) : invalid feed-scoped-id: no-colon",
            "locations": [{"line": 1, "column": 29}],
            "path": ["route"],
            "extensions": {"classification": "DataFetchingException"},
        }], "data": {"route": null}})
    );
}

/// The shapes of OTP's own test expectations (shared/fixtures/otp/2.x) come back for the same
/// queries: the same keys at every level.
#[tokio::test]
async fn graphql_matches_otp_expectation_shapes() {
    fn same_shape(expected: &Value, actual: &Value, path: &str) {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                assert_eq!(keys(expected), keys(actual), "at {path}");
                for (k, v) in e {
                    same_shape(v, &a[k], &format!("{path}.{k}"));
                }
            }
            (Value::Array(e), Value::Array(a)) => {
                assert!(!a.is_empty(), "empty list at {path}");
                if let Some(first) = e.first() {
                    for item in a {
                        same_shape(first, item, &format!("{path}[]"));
                    }
                }
            }
            _ => {}
        }
    }
    let sim = OtpSim::start(&["bart"]).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/otp/2.x");
    for name in ["routes-tutorial", "feedinfo"] {
        let query = std::fs::read_to_string(format!("{dir}/queries/{name}.graphql")).unwrap();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{dir}/expectations/{name}.json")).unwrap(),
        )
        .unwrap();
        let (status, actual) = graphql(&sim, json!({"query": query})).await;
        assert_eq!(status, 200);
        same_shape(&expected, &actual, name);
    }
}

#[tokio::test]
async fn otp1_rest_index() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = client();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{}{OTP1}{path}", sim.url());
        async move { client.get(url).send().await.unwrap() }
    };

    let routes: Value = get("/routes".into()).await.json().await.unwrap();
    let routes = routes.as_array().unwrap();
    assert_eq!(routes.len(), rows_in("caltrain", "routes.txt").len());
    let bullet = routes
        .iter()
        .find(|r| r["id"] == "caltrain:Bu-130")
        .unwrap();
    // RouteShort; nulls are left out (textColor, sortOrder).
    assert_eq!(
        *bullet,
        json!({"id": "caltrain:Bu-130", "shortName": "Bullet", "longName": "Baby Bullet", "mode": "RAIL",
               "color": "E31837", "agencyName": "Caltrain"})
    );

    let resp = get("/routes/caltrain%3ABu-130".into()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let route: Value = resp.json().await.unwrap();
    assert_eq!(route["id"], "caltrain:Bu-130");
    assert_eq!(route["type"], 2);
    assert_eq!(route["sortOrder"], -999);
    assert_eq!(route["sortOrderSet"], false);
    assert_eq!(route["agency"]["id"], "caltrain-ca-us");
    // routes.txt has no text colour: OTP 1's graph builder gives one that contrasts.
    assert_eq!(route["textColor"], "FFFFFF");

    let patterns: Value = get("/routes/caltrain:Bu-130/patterns".into())
        .await
        .json()
        .await
        .unwrap();
    let patterns = patterns.as_array().unwrap();
    assert!(!patterns.is_empty());
    for p in patterns {
        assert_eq!(keys(p), ["desc", "id"]);
        assert!(p["desc"].as_str().unwrap().starts_with("Bullet"));
    }
    let id = patterns[0]["id"].as_str().unwrap();
    let detail: Value = get(format!("/patterns/{}", id.replace(':', "%3A")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["id"], id);
    assert_eq!(detail["routeId"], "caltrain:Bu-130");
    let stop = &detail["stops"][0];
    for k in ["id", "code", "name", "lat", "lon"] {
        assert!(stop.get(k).is_some(), "StopShort.{k}: {stop}");
    }
    let trip = &detail["trips"][0];
    assert!(trip["id"].as_str().unwrap().starts_with("caltrain:"));
    assert!(trip["serviceId"].as_str().unwrap().starts_with("caltrain:"));
    assert!(trip["direction"].is_u64());

    let stops: Value = get("/routes/caltrain:Bu-130/stops".into())
        .await
        .json()
        .await
        .unwrap();
    assert!(stops.as_array().unwrap().len() >= 2);

    let missing = get("/routes/caltrain:nope".into()).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "FOUR ZERO FOUR");
    assert_eq!(
        get("/patterns/caltrain:nope:0:01".into()).await.status(),
        404
    );
    let bad = get("/routes/no-colon".into()).await;
    assert_eq!(bad.status(), 500);
    assert_eq!(bad.headers()["connection"], "close");
    assert_eq!(
        bad.text().await.unwrap(),
        "java.lang.IllegalArgumentException: invalid agency-and-id: no-colon invalid agency-and-id: no-colon"
    );
    assert_eq!(get("/nope".into()).await.status(), 500);
}

#[tokio::test]
async fn zip_with_etag_and_304() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = client();
    let url = format!("{}/gtfs/caltrain.zip", sim.url());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let modified = resp.headers()["last-modified"].to_str().unwrap().to_owned();
    assert_eq!(resp.bytes().await.unwrap(), fixture_zip("caltrain"));
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(fixture_zip("caltrain")))
    };
    assert_eq!(etag, format!("\"{sha}\""));

    let resp = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = client
        .get(&url)
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    // A new version: new ETag, later Last-Modified, full answer to the old validators.
    sim.set_zip("caltrain", b"not really a zip".to_vec());
    let resp = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert_ne!(resp.headers()["last-modified"].to_str().unwrap(), modified);
    assert_eq!(&resp.bytes().await.unwrap()[..], b"not really a zip");
    let resp = client
        .get(&url)
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    assert_eq!(
        client
            .get(format!("{}/gtfs/nope.zip", sim.url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(sim.requests_for("/gtfs/caltrain.zip"), 5);
}

#[tokio::test]
async fn set_feed_changes_the_apis_too() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_feed("caltrain", fixture_zip("bart").to_vec())
        .unwrap();
    let (_, body) = graphql(
        &sim,
        json!({"query": ROUTES, "variables": {"feeds": ["caltrain"]}}),
    )
    .await;
    assert_eq!(
        body["data"]["routes"].as_array().unwrap().len(),
        rows_in("bart", "routes.txt").len()
    );
    assert!(sim.set_feed("broken", b"not a zip".to_vec()).is_err());
}

#[tokio::test]
async fn fault_delay() {
    let sim = OtpSim::start(&["caltrain"]).await;
    // A delay long enough that an undelayed answer on a busy machine stays well below it.
    let delay = Duration::from_secs(2);
    sim.set_fault(Fault::Delay(delay));
    let started = Instant::now();
    let (status, _) = graphql(&sim, json!({"query": FEEDS})).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= delay);
    sim.clear_fault();
    let started = Instant::now();
    graphql(&sim, json!({"query": FEEDS})).await;
    assert!(started.elapsed() < delay);
}

#[tokio::test]
async fn fault_status_and_retry_after() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let url = format!("{}/gtfs/caltrain.zip", sim.url());
    sim.set_fault(Fault::Status(500));
    assert_eq!(client().get(&url).send().await.unwrap().status(), 500);
    sim.set_fault(Fault::StatusRetryAfter(503, 7));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "7");
    sim.clear_fault();
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    assert_eq!(sim.requests(), 3);
}

#[tokio::test]
async fn fault_garbage() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_fault(Fault::Garbage);
    let resp = client()
        .post(format!("{}/otp/gtfs/v1", sim.url()))
        .json(&json!({"query": FEEDS, "operationName": "Feeds"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let err = resp.json::<Value>().await.unwrap_err();
    assert!(err.is_decode(), "{err:?}");
    assert_eq!(sim.requests_for("Feeds"), 1);
}

#[tokio::test]
async fn fault_truncated() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_fault(Fault::Truncated);
    let resp = client()
        .get(format!("{}/gtfs/caltrain.zip", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.content_length(),
        Some(fixture_zip("caltrain").len() as u64)
    );
    let err = resp.bytes().await.unwrap_err();
    assert!(err.is_body() || err.is_decode(), "{err:?}");
}

#[tokio::test]
async fn fault_close_without_answer() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_fault(Fault::CloseWithoutAnswer);
    let err = client()
        .post(format!("{}/otp/gtfs/v1", sim.url()))
        .json(&json!({"query": ROUTES, "operationName": "Routes"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_request() && !err.is_timeout(), "{err:?}");
    assert_eq!(sim.requests_for("Routes"), 1);
}

#[tokio::test]
async fn fault_hang() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_fault(Fault::Hang);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .get(format!("{}{OTP1}/routes", sim.url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn fault_slow_body() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let url = format!("{}{OTP1}/routes", sim.url());
    let normal = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    sim.set_fault(Fault::SlowBody {
        chunk: normal.len() / 10 + 1,
        every: Duration::from_millis(30),
    });
    let started = Instant::now();
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers_after = started.elapsed();
    let slow = resp.bytes().await.unwrap();
    // The headers come at once, then the body: 10 or 11 chunks, 30 ms apart.
    let body_time = started.elapsed() - headers_after;
    assert!(body_time >= Duration::from_millis(9 * 30), "{body_time:?}");
    assert_eq!(slow, normal);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = client();
    let url = format!("{}{OTP1}/feeds", sim.url());
    client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sim.connections(), 1, "OTP's idle timeout is 30 s");

    sim.set_idle_close(Some(Duration::from_millis(150)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.open_connections(), 0, "closed while idle");
    let resp = client.get(&url).send().await.unwrap();
    assert!(resp.headers().get("connection").is_none());
    resp.bytes().await.unwrap();
    assert_eq!(sim.connections(), 2, "the client had to open a new one");

    // A request in progress is not idle, however long it takes.
    sim.set_idle_close(Some(Duration::from_millis(250)));
    sim.set_fault(Fault::Delay(Duration::from_millis(600)));
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    assert_eq!(sim.connections(), 2);
}

#[tokio::test]
async fn like_otp1_a_connection_serves_257_requests() {
    // Measured on OTP 1.4.0: `Connection: close` on the 257th response (OTP 2: the 256th).
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = client();
    for i in 1..=258 {
        let resp = client
            .get(format!("{}{OTP1}/feeds", sim.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().contains_key("connection"),
            i == 257,
            "request {i}"
        );
        resp.bytes().await.unwrap();
    }
    assert_eq!(sim.connections(), 2);
}

#[tokio::test]
async fn connections_close_after_max_requests() {
    let sim = OtpSim::start(&["caltrain"]).await;
    sim.set_max_requests_per_connection(Some(10));
    let client = client();
    for i in 1..=25 {
        let resp = client
            .get(format!("{}{OTP1}/feeds", sim.url()))
            .send()
            .await
            .unwrap();
        let close = resp
            .headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            close.as_deref(),
            (i % 10 == 0).then_some("close"),
            "request {i}"
        );
        resp.bytes().await.unwrap();
    }
    assert_eq!(sim.connections(), 3);
}

#[tokio::test]
async fn stop_and_resume_listening() {
    let sim = OtpSim::start(&["caltrain"]).await;
    let client = client();
    let url = format!("{}{OTP1}/feeds", sim.url());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(sim.open_connections(), 1);

    sim.stop_listening().await;
    assert_eq!(sim.open_connections(), 0);
    let err = client.get(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let err = reqwest::get(&url).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    sim.resume_listening().await;
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert!(sim.url().ends_with(&sim.addr().port().to_string()));
    assert_eq!(sim.connections(), 2);
}

/// The feeds load, sample-feed's short stop_times rows included, each with as many routes
/// as its routes.txt has rows, some with patterns.
async fn feeds_load(feeds: &[&str]) {
    let sim = OtpSim::start(feeds).await;
    let (_, body) = graphql(
        &sim,
        json!({"query": "{ routes { gtfsId patterns { code } } }"}),
    )
    .await;
    let routes = body["data"]["routes"].as_array().unwrap();
    for feed in feeds {
        let ours: Vec<&Value> = routes
            .iter()
            .filter(|r| {
                r["gtfsId"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{feed}:"))
            })
            .collect();
        assert_eq!(ours.len(), rows_in(feed, "routes.txt").len(), "{feed}");
        assert!(
            ours.iter()
                .any(|r| !r["patterns"].as_array().unwrap().is_empty()),
            "{feed}"
        );
    }
}

#[tokio::test]
async fn fixture_feeds_load() {
    feeds_load(&["sample-feed", "caltrain", "bart", "cdmx"]).await;
}

/// wmata (352,668 stop_times) takes about 4 s to parse in a debug build; it is loaded once
/// per test process and shared.
#[tokio::test]
async fn wmata_loads() {
    feeds_load(&["wmata"]).await;
}
