//! `GET /openapi.json`: a valid OpenAPI 3.1 document, in step with the router, whose
//! statuses, headers and schemas describe what the service really answers.
//!
//! - [`ENDPOINTS`] is the list of every endpoint. The document must list exactly these
//!   `(method, path)` pairs, and the router must answer each of them (and no other method
//!   on their paths): a route added without documentation, or documentation without a
//!   route, fails here. `routes_are_registered_only_with_their_documentation` makes sure no
//!   route bypasses `utoipa_axum::routes!` (which is what ties a route to its docs).
//! - Real answers, from an empty service and from one with an OTP instance and a GTFS zip,
//!   are checked against the document: the status is documented for the endpoint, the
//!   documented headers are there, the content type is the documented one and the body
//!   matches the documented schema. The check is stricter than JSON Schema on purpose:
//!   an object may not carry a field its schema does not list. The bodies are the types
//!   the handlers serialize, each deriving its schema, so a schema lists what its type
//!   has; what the derive cannot see is checked here: serde attributes and hand-written
//!   schema overrides (`value_type`, `as`), statuses, headers and content types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Router;
use gtfs_fetch::config::Config;
use serde_json::{Value, json};

use crate::support::http::Answer;
use crate::support::otp_sim::OtpSim;
use crate::support::{TestApp, fresh_database, spawn_app, spawn_app_with, spawn_config};

/// Every endpoint of the service. Add a line here with the route and its docs.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/config"),
    ("GET", "/memory-stats"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/{file}"),
    ("GET", "/ui"),
    ("GET", "/ui/{file}"),
    ("GET", "/feeds"),
    ("GET", "/feeds/{gtfs_id}/fetches"),
    ("GET", "/instances"),
    ("POST", "/instances/{name}/refresh"),
    ("GET", "/feeds/{gtfs_id}/routes"),
    ("GET", "/feeds/{gtfs_id}/routes/{route_id}"),
    ("GET", "/feeds/{gtfs_id}/routes/{route_id}/trips"),
    ("GET", "/waybills"),
    ("POST", "/waybills"),
    ("GET", "/waybills/{id}"),
    ("PATCH", "/waybills/{id}"),
];

/// The writes that need `api_token` when it is set.
const WRITES: &[(&str, &str)] = &[("POST", "/waybills"), ("PATCH", "/waybills/{id}")];

/// The ops endpoints behind the loopback-or-token guard.
const GUARDED: &[&str] = &[
    "/readyz",
    "/config",
    "/memory-stats",
    "/metrics",
    "/ui",
    "/ui/{file}",
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

const PROBLEM_JSON: &str = "application/problem+json";

// ---------------------------------------------------------------------------------------
// The document itself
// ---------------------------------------------------------------------------------------

async fn document(app: &TestApp) -> Value {
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["content-type"], "application/json");
    res.json()
}

/// `(METHOD, path)` of every operation in the document.
fn documented_endpoints(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// `Ok` when the document lists exactly the expected endpoints; otherwise what differs.
fn same_endpoints(
    documented: &BTreeSet<(String, String)>,
    expected: &[(&str, &str)],
) -> Result<(), String> {
    let expected: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = expected.difference(documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not documented (route without docs?): {missing:?}; documented but not expected \
             (docs without a route, or add it to ENDPOINTS): {extra:?}"
        ))
    }
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op
}

/// Every `"$ref"` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_endpoints() {
    let app = spawn_app().await;
    let doc = document(&app).await;

    // It is an OpenAPI document utoipa itself reads back, unchanged, but for the links:
    // utoipa 5.5 reads and writes a link's fields in snake_case (`operation_id`), so the
    // service adds them to the JSON (openapi::add_links) and utoipa drops them on reading.
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("an OpenAPI document");
    let strip_links = |mut doc: Value| {
        for item in doc["paths"].as_object_mut().unwrap().values_mut() {
            for op in item.as_object_mut().unwrap().values_mut() {
                for response in op["responses"].as_object_mut().unwrap().values_mut() {
                    response.as_object_mut().unwrap().remove("links");
                }
            }
        }
        doc
    };
    assert_eq!(
        strip_links(serde_json::to_value(&parsed).unwrap()),
        strip_links(doc.clone()),
        "round trip"
    );
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "gtfs-fetch");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["info"]["description"].as_str().unwrap().len() > 100);

    // In step with the list of endpoints.
    same_endpoints(&documented_endpoints(&doc), ENDPOINTS).unwrap();

    let scheme = &doc["components"]["securitySchemes"]["ops_token"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert!(scheme["description"].as_str().unwrap().contains("Loopback"));

    let mut operation_ids = BTreeSet::new();
    for (method, path) in ENDPOINTS {
        let op = operation(&doc, method, path);
        let what = format!("{method} {path}");
        assert!(
            operation_ids.insert(op["operationId"].as_str().unwrap().to_owned()),
            "{what}: operationId not unique"
        );
        assert!(op["summary"].is_string(), "{what}: summary");
        assert_eq!(
            op["tags"].as_array().map(Vec::len),
            Some(1),
            "{what}: one tag"
        );

        // Path parameters: exactly those of the template, each a required string.
        let template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(in_path, template, "{what}: path parameters");
        for p in params.iter().filter(|p| p["in"] == "path") {
            assert_eq!(p["required"], true, "{what}: {p}");
            assert_eq!(p["schema"]["type"], "string", "{what}: {p}");
        }

        // Responses: a success, problem+json for errors, the common headers everywhere.
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no 2xx"
        );
        for (status, response) in responses {
            assert!(response["description"].is_string(), "{what} {status}");
            for header in ["x-request-id", "Server-Timing"] {
                assert!(
                    response["headers"][header].is_object(),
                    "{what} {status}: {header} not documented"
                );
            }
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object().unwrap();
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    [PROBLEM_JSON],
                    "{what} {status}"
                );
                let mut r = Vec::new();
                refs(&content[PROBLEM_JSON]["schema"], &mut r);
                let r = r.first().cloned().unwrap_or_default();
                let problem =
                    &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")];
                let mut inner = Vec::new();
                refs(problem, &mut inner);
                assert!(
                    r == "#/components/schemas/Problem"
                        || inner.contains(&"#/components/schemas/Problem".to_owned()),
                    "{what} {status}: not a Problem"
                );
            }
            if status.starts_with('5') && status != "500" && status != "501" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{what} {status}"
                );
            }
        }

        // The ops guard: documented as optional bearer (loopback needs none) with its 403.
        let guarded = GUARDED.contains(path);
        if guarded {
            assert_eq!(op["security"], json!([{}, {"ops_token": []}]), "{what}");
            assert!(op["responses"]["403"].is_object(), "{what}: 403");
        } else if *path == "/instances/{name}/refresh" {
            // Either token when one is set; loopback only when none is.
            assert_eq!(
                op["security"],
                json!([{}, {"ops_token": []}, {"api_token": []}]),
                "{what}"
            );
            for status in ["401", "403", "429"] {
                assert!(op["responses"][status].is_object(), "{what}: {status}");
            }
        } else if WRITES.contains(&(*method, *path)) {
            // Waybill writes: the api_token bearer when it is set.
            assert_eq!(op["security"], json!([{}, {"api_token": []}]), "{what}");
            assert!(op["responses"]["401"].is_object(), "{what}: 401");
        } else {
            assert!(op.get("security").is_none(), "{what}: open to all");
        }
    }

    // The parameters with limits and formats.
    let list = operation(&doc, "GET", "/feeds/{gtfs_id}/routes");
    let param = |op: &Value, name: &str| {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("parameter {name}"))
            .clone()
    };
    let limit = param(list, "limit");
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 1000);
    assert_eq!(limit["schema"]["default"], 100);
    for name in ["type", "agency", "q", "cursor"] {
        assert_eq!(param(list, name)["in"], "query", "{name}");
    }
    assert_eq!(param(list, "If-None-Match")["in"], "header");
    let trips = operation(&doc, "GET", "/feeds/{gtfs_id}/routes/{route_id}/trips");
    let date = param(trips, "date");
    assert_eq!(date["required"], true);
    assert_eq!(date["schema"]["format"], "date");
    let detail = operation(&doc, "GET", "/feeds/{gtfs_id}/routes/{route_id}");
    for header in ["ETag", "X-Cache", "Age", "Cache-Control"] {
        assert!(
            detail["responses"]["200"]["headers"][header].is_object(),
            "{header}"
        );
        assert!(
            detail["responses"]["304"]["headers"][header].is_object(),
            "{header}"
        );
    }
    assert!(trips["responses"]["501"].is_object());

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}: not a schema reference"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} is dangling"
        );
    }
    app.stop().await.unwrap();
}

/// No route may be registered in the API's modules other than with `utoipa_axum::routes!`
/// (which takes it from the handler's `#[utoipa::path]`): a bare `.route("/x", get(h))`
/// would serve an endpoint the document lacks. Reads the modules `src/api/mod.rs`
/// declares; flags axum's own routing (`axum::routing`, `Router::new()`, `.route("`...).
#[test]
fn routes_are_registered_only_with_their_documentation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let root = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let mut files = vec![dir.join("mod.rs")];
    for line in root.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'))
        {
            files.push(dir.join(format!("{name}.rs")));
        }
    }
    assert!(files.len() >= 5, "modules of src/api/mod.rs: {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for bypass in [
                ".route(\"",
                ".route_service(\"",
                ".nest(\"",
                ".nest_service(\"",
                "Router::new()",
                "axum::routing",
            ] {
                assert!(
                    !code.contains(bypass),
                    "{}:{}: `{bypass}` registers a route without its OpenAPI docs; use \
                     `.routes(routes!(handler))` with `#[utoipa::path]` on the handler \
                     (see src/api/mod.rs)",
                    path.display(),
                    n + 1
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Real answers against the document
// ---------------------------------------------------------------------------------------

async fn call(app: &TestApp, method: &str, path: &str) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method.clone(), app.url(path));
    if path.ends_with("/refresh") {
        // The configured ops token (ignored where none is configured: loopback suffices).
        request = request.bearer_auth("ops-secret");
    }
    if method == reqwest::Method::PATCH {
        // A well-formed status change, so that only the id can be wrong.
        request = request
            .header("content-type", "application/json")
            .header("if-match", "\"1\"")
            .body(r#"{"status":"cancelled"}"#);
    }
    Answer::send(request).await
}

/// Checks answers against the document's schemas, strictly (see the module doc).
struct Checker<'a> {
    doc: &'a Value,
}

/// An object schema with its `allOf` members merged: properties, required names, and the
/// schema of other keys if any.
#[derive(Default)]
struct Shape<'a> {
    properties: BTreeMap<String, &'a Value>,
    required: BTreeSet<String>,
    additional: Option<&'a Value>,
}

impl<'a> Checker<'a> {
    fn new(doc: &'a Value) -> Self {
        Self { doc }
    }

    /// Follows `$ref`s.
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                let target = &self.doc["components"]["schemas"][name];
                assert!(target.is_object(), "dangling {r}");
                self.resolve(target)
            }
            None => schema,
        }
    }

    fn shape(&self, schema: &'a Value, shape: &mut Shape<'a>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, s) in props {
                shape.properties.insert(name.clone(), s);
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            shape
                .required
                .extend(req.iter().map(|r| r.as_str().unwrap().to_owned()));
        }
        if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            shape.additional = Some(a);
        }
        for member in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.shape(self.resolve(member), shape);
        }
    }

    /// What is wrong with `value` under `schema` (empty: it matches).
    fn check(&self, schema: &'a Value, value: &Value, at: &str) -> Vec<String> {
        let schema = self.resolve(schema);
        let mut errors = Vec::new();
        for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let mut matched = 0;
                let mut why = Vec::new();
                for option in options {
                    let e = self.check(option, value, at);
                    if e.is_empty() {
                        matched += 1;
                    } else {
                        why.extend(e);
                    }
                }
                let ok = if exactly_one {
                    matched == 1
                } else {
                    matched > 0
                };
                if !ok {
                    errors.push(format!(
                        "{at}: matches {matched} of the {key} alternatives ({why:?})"
                    ));
                }
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => panic!("{at}: odd type {t}"),
            };
            let fits = |t: &str| match t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                other => panic!("{at}: unknown type {other}"),
            };
            if !types.iter().any(|t| fits(t)) {
                errors.push(format!("{at}: {value} is not of type {t}"));
                return errors;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        if let (Some(min), Some(v)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && v < min
        {
            errors.push(format!("{at}: {v} < minimum {min}"));
        }
        if let (Some(max), Some(v)) = (
            schema.get("maximum").and_then(Value::as_f64),
            value.as_f64(),
        ) && v > max
        {
            errors.push(format!("{at}: {v} > maximum {max}"));
        }
        if let (Some(format), Some(text)) =
            (schema.get("format").and_then(Value::as_str), value.as_str())
        {
            let ok = match format {
                "date-time" => text.parse::<jiff::Timestamp>().is_ok(),
                "date" => text.len() == 10 && text.parse::<jiff::civil::Date>().is_ok(),
                _ => true,
            };
            if !ok {
                errors.push(format!("{at}: {text:?} is not a {format}"));
            }
        }
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (i, v) in values.iter().enumerate() {
                errors.extend(self.check(items, v, &format!("{at}[{i}]")));
            }
        }
        let is_object_schema = schema.get("properties").is_some()
            || schema.get("allOf").is_some()
            || schema.get("additionalProperties").is_some();
        if is_object_schema {
            let Some(object) = value.as_object() else {
                errors.push(format!("{at}: {value} is not an object"));
                return errors;
            };
            let mut shape = Shape::default();
            self.shape(schema, &mut shape);
            for required in &shape.required {
                if !object.contains_key(required) {
                    errors.push(format!("{at}: required field {required:?} missing"));
                }
            }
            for (key, v) in object {
                let here = format!("{at}.{key}");
                match (shape.properties.get(key).copied(), shape.additional) {
                    (Some(s), _) | (None, Some(s)) => errors.extend(self.check(s, v, &here)),
                    (None, None) => errors.push(format!("{here}: field not in the schema")),
                }
            }
        }
        errors
    }

    /// Checks one answer of `method path` against the document; returns what is wrong.
    fn answer(&self, method: &str, path: &str, answer: &Answer) -> Vec<String> {
        let what = format!("{method} {path} -> {}", answer.status);
        let op = operation(self.doc, method, path);
        let Some(response) = op["responses"].get(answer.status.to_string()) else {
            let documented: Vec<_> = op["responses"].as_object().unwrap().keys().collect();
            return vec![format!(
                "{what}: status not documented (documented: {documented:?})"
            )];
        };
        let mut errors = Vec::new();
        for header in response["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|h| h.0)
        {
            if !answer.headers.contains_key(header.as_str()) {
                errors.push(format!("{what}: documented header {header} missing"));
            }
        }
        let content_type = answer
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        match response.get("content").and_then(Value::as_object) {
            None => {
                if !answer.body.is_empty() {
                    errors.push(format!("{what}: a body, none documented"));
                }
            }
            Some(content) => {
                let Some(content_type) = content_type else {
                    return vec![format!("{what}: no content-type")];
                };
                let Some(media) = content.get(&content_type) else {
                    return vec![format!(
                        "{what}: content-type {content_type}, documented {:?}",
                        content.keys().collect::<Vec<_>>()
                    )];
                };
                let value = if content_type.contains("json") {
                    match serde_json::from_slice(&answer.body) {
                        Ok(v) => v,
                        Err(e) => return vec![format!("{what}: body is not JSON: {e}")],
                    }
                } else {
                    Value::String(String::from_utf8_lossy(&answer.body).into_owned())
                };
                errors.extend(self.check(&media["schema"], &value, &what));
            }
        }
        errors
    }
}

#[tokio::test]
async fn every_endpoint_answers_as_documented_on_an_empty_service() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let checker = Checker::new(&doc);
    let mut errors = Vec::new();

    // Every GET without path parameters, for real.
    for (method, path) in ENDPOINTS
        .iter()
        .filter(|(m, p)| *m == "GET" && !p.contains('{'))
    {
        let answer = call(&app, method, path).await;
        assert!(answer.status < 300, "{method} {path}: {}", answer.status);
        errors.extend(checker.answer(method, path, &answer));
    }

    // The templated ones with ids that do not exist: the handler's 404, documented.
    for (method, path) in ENDPOINTS.iter().filter(|(_, p)| p.contains('{')) {
        let mut real = path
            .replace("{gtfs_id}", "no-such-feed")
            .replace("{route_id}", "no-such-route")
            .replace("{name}", "no-such-instance");
        if path.ends_with("/trips") {
            real.push_str("?date=2024-01-01");
        }
        let answer = call(&app, method, &real).await;
        assert_eq!(answer.status, 404, "{method} {real}");
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_ne!(
            body["detail"], "no such endpoint",
            "{method} {real}: the router's fallback"
        );
        assert!(
            operation(&doc, method, path)["responses"]["404"].is_object(),
            "{method} {path}: 404 not documented"
        );
        errors.extend(checker.answer(method, path, &answer));
    }

    // No method the document does not list is served on its paths.
    for path in documented_endpoints(&doc)
        .into_iter()
        .map(|(_, p)| p)
        .collect::<BTreeSet<_>>()
    {
        let real = path
            .replace("{gtfs_id}", "f")
            .replace("{route_id}", "r")
            .replace("{name}", "n");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if ENDPOINTS.contains(&(method, path.as_str())) {
                continue;
            }
            let answer = call(&app, method, &real).await;
            assert_eq!(
                answer.status, 405,
                "{method} {real}: served but not documented"
            );
        }
    }

    assert!(
        errors.is_empty(),
        "answers differ from the document:\n{}",
        errors.join("\n")
    );
    app.stop().await.unwrap();
}

/// The service with a GTFS zip feed (`sample-feed`) and one whose zip is missing (`broken`,
/// no data), from an instance `zips`, and an OTP 2 feed (`caltrain`, from an instance
/// `otp`); ops token and API token set.
async fn app_with_feeds(zip_sim: &OtpSim, otp_sim: &OtpSim) -> TestApp {
    let url = fresh_database().await;
    let file = format!(
        "[[instances]]\nname = \"zips\"\nurl = \"{}\"\napi = \"gtfs\"\n\
         headers = {{ \"X-Api-Key\" = \"secret\" }}\n\
         [[instances.feeds]]\ngtfs_id = \"sample-feed\"\nzip_url = \"/gtfs/sample-feed.zip\"\n\
         [[instances.feeds]]\ngtfs_id = \"broken\"\nzip_url = \"/gtfs/missing.zip\"\n\
         [[instances]]\nname = \"otp\"\nurl = \"{}\"\napi = \"otp2\"\nprefetch_routes = false\n",
        zip_sim.url(),
        otp_sim.url()
    );
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("GTFS_LISTEN", "127.0.0.1:0"),
        ("GTFS_OPS_TOKEN", "ops-secret"),
        ("GTFS_API_TOKEN", "api-secret"),
        ("GTFS_SHUTDOWN_DRAIN", "3"),
    ];
    let config = Config::parse(Some(("test.toml", &file)), |k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .expect("valid test config");
    let app = spawn_config(config, Router::new()).await;
    app.wait_ready_status(200, Duration::from_secs(60)).await;
    app
}

/// Calls `method real` (an instance of `template`), expects `status`, and checks the answer
/// against the document.
async fn expect(
    app: &TestApp,
    checker: &Checker<'_>,
    errors: &mut Vec<String>,
    (method, template, real): (&str, &str, &str),
    status: u16,
) -> Answer {
    let answer = call(app, method, real).await;
    assert_eq!(
        answer.status,
        status,
        "{method} {real}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    errors.extend(checker.answer(method, template, &answer));
    answer
}

#[tokio::test]
async fn schemas_describe_real_answers() {
    let zip_sim = OtpSim::start(&["sample-feed"]).await;
    let otp_sim = OtpSim::start(&["caltrain"]).await;
    let mut app = app_with_feeds(&zip_sim, &otp_sim).await;
    let doc = document(&app).await;
    let checker = Checker::new(&doc);
    let mut errors = Vec::new();
    let (c, e) = (&checker, &mut errors);

    for path in [
        "/healthz",
        "/readyz",
        "/config",
        "/memory-stats",
        "/metrics",
        "/feeds",
        "/instances",
        "/openapi.json",
    ] {
        expect(&app, c, e, ("GET", path, path), 200).await;
    }
    let refresh = "/instances/{name}/refresh";
    expect(
        &app,
        c,
        e,
        ("POST", refresh, "/instances/zips/refresh"),
        202,
    )
    .await;

    let list = "/feeds/{gtfs_id}/routes";
    for (real, status) in [
        ("/feeds/sample-feed/routes", 200),
        (
            "/feeds/caltrain/routes?type=2&agency=caltrain-ca-us&q=local",
            200,
        ),
        ("/feeds/sample-feed/routes?limit=0", 400),
        ("/feeds/sample-feed/routes?cursor=forged", 400),
        ("/feeds/sample-feed/routes?colour=red", 400),
    ] {
        expect(&app, c, e, ("GET", list, real), status).await;
    }
    let first = "/feeds/sample-feed/routes?limit=2";
    let page = expect(&app, c, e, ("GET", list, first), 200).await;
    let page: Value = serde_json::from_slice(&page.body).unwrap();
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let next = format!("{first}&cursor={cursor}");
    expect(&app, c, e, ("GET", list, &next), 200).await;

    let detail = "/feeds/{gtfs_id}/routes/{route_id}";
    let ab = "/feeds/sample-feed/routes/AB";
    expect(&app, c, e, ("GET", detail, ab), 200).await;
    let hit = expect(&app, c, e, ("GET", detail, ab), 200).await;
    assert_eq!(hit.headers["x-cache"], "HIT");
    let unknown = "/feeds/caltrain/routes/no-such-route";
    expect(&app, c, e, ("GET", detail, unknown), 404).await;
    // An OTP feed's route without prefetch: read through to OTP.
    let routes = call(&app, "GET", "/feeds/caltrain/routes?limit=1").await;
    let routes: Value = serde_json::from_slice(&routes.body).unwrap();
    let otp_route = routes["routes"][0]["route_id"].as_str().unwrap().to_owned();
    let otp_detail = format!("/feeds/caltrain/routes/{otp_route}");
    let miss = expect(&app, c, e, ("GET", detail, &otp_detail), 200).await;
    assert_eq!(miss.headers["x-cache"], "MISS");

    let trips = "/feeds/{gtfs_id}/routes/{route_id}/trips";
    for (real, status) in [
        ("/feeds/sample-feed/routes/CITY/trips?date=2008-06-02", 200),
        ("/feeds/sample-feed/routes/AB/trips?date=2008-06-02", 200),
        ("/feeds/sample-feed/routes/AB/trips", 400),
        ("/feeds/sample-feed/routes/AB/trips?date=2008-02-30", 400),
        (
            "/feeds/sample-feed/routes/AB/trips?date=2008-06-02&x=1",
            400,
        ),
        ("/feeds/sample-feed/routes/ZZ/trips?date=2008-06-02", 404),
    ] {
        expect(&app, c, e, ("GET", trips, real), status).await;
    }
    let otp_trips = format!("{otp_detail}/trips?date=2024-01-01");
    expect(&app, c, e, ("GET", trips, &otp_trips), 501).await;

    // 503s: a feed without data (its zip is missing).
    for (template, real) in [
        (list, "/feeds/broken/routes"),
        (detail, "/feeds/broken/routes/AB"),
        (trips, "/feeds/broken/routes/AB/trips?date=2008-06-02"),
    ] {
        expect(&app, c, e, ("GET", template, real), 503).await;
    }

    // 304s, with the ETag of the 200.
    for (template, real) in [
        (list, "/feeds/sample-feed/routes"),
        (detail, ab),
        (trips, "/feeds/sample-feed/routes/AB/trips?date=2008-06-02"),
    ] {
        let etag = call(&app, "GET", real).await.headers["etag"].clone();
        let answer =
            Answer::send(app.client.get(app.url(real)).header("if-none-match", etag)).await;
        assert_eq!(answer.status, 304, "{real}");
        e.extend(c.answer("GET", template, &answer));
    }

    // /readyz's 503, while draining on shutdown.
    app.signal_shutdown();
    app.wait_ready_status(503, Duration::from_secs(2)).await;
    expect(&app, c, e, ("GET", "/readyz", "/readyz"), 503).await;

    assert!(
        errors.is_empty(),
        "answers differ from the document:\n{}",
        errors.join("\n")
    );
    app.stop().await.unwrap();
}

/// Every link (OpenAPI 3.1, 4.8.20) names an operation of the document by its
/// operationId, with parameters that operation has, from answers that carry the value:
/// schemathesis's stateful phase follows them (scripts/schemathesis.sh).
#[tokio::test]
async fn links_lead_to_real_operations_and_their_parameters() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut by_id = BTreeMap::new();
    for (method, path) in ENDPOINTS {
        let op = operation(&doc, method, path);
        by_id.insert(op["operationId"].as_str().unwrap().to_owned(), op.clone());
    }
    let mut links = Vec::new();
    for (method, path) in ENDPOINTS {
        let op = operation(&doc, method, path);
        for (status, response) in op["responses"].as_object().unwrap() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let what = format!("{method} {path} {status} {name}");
                let target = link["operationId"].as_str().unwrap_or_else(|| {
                    panic!("{what}: no operationId (utoipa's snake_case?): {link}")
                });
                let target = by_id
                    .get(target)
                    .unwrap_or_else(|| panic!("{what}: no operation {target}"));
                for (parameter, expression) in link["parameters"].as_object().unwrap() {
                    let (location, parameter) = parameter
                        .split_once('.')
                        .unwrap_or(("path", parameter.as_str()));
                    assert!(
                        target["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| { p["name"] == parameter && p["in"] == location }),
                        "{what}: the target has no {location} parameter {parameter}"
                    );
                    assert!(
                        expression.as_str().unwrap().starts_with('$'),
                        "{what}: {expression}"
                    );
                }
                links.push(what);
            }
        }
    }
    // The waybill's life: created, then read and changed, changed again.
    for expected in [
        "POST /waybills 201 ReadWaybill",
        "POST /waybills 201 ChangeWaybill",
        "GET /waybills/{id} 200 ChangeWaybill",
        "PATCH /waybills/{id} 200 ChangeWaybill",
        "GET /feeds 200 ListRoutes",
        "GET /feeds/{gtfs_id}/routes 200 RouteDetail",
    ] {
        assert!(links.iter().any(|l| l == expected), "{expected}: {links:?}");
    }
    app.stop().await.unwrap();
}

/// With tokens configured the document says they are needed where they are: a write
/// needs `api_token`, a manual refresh one of the configured tokens, and neither lists
/// "no credentials" any more (schemathesis's `ignored_auth` check then verifies that the
/// service refuses a request without them). Ops endpoints keep `{}`: loopback clients
/// need no token.
#[tokio::test]
async fn security_says_which_configured_token_an_operation_needs() {
    let both = [("GTFS_API_TOKEN", "a"), ("GTFS_OPS_TOKEN", "o")];
    let ops_only = [("GTFS_OPS_TOKEN", "o")];
    let api_only = [("GTFS_API_TOKEN", "a")];
    let open = json!([{}, {"api_token": []}]);
    let write = json!([{"api_token": []}]);
    let ops = json!([{}, {"ops_token": []}]);
    for (vars, writes, refresh) in [
        (
            &both[..],
            &write,
            json!([{"ops_token": []}, {"api_token": []}]),
        ),
        (&ops_only[..], &open, json!([{"ops_token": []}])),
        (&api_only[..], &write, json!([{"api_token": []}])),
    ] {
        let app = spawn_app_with(vars, Router::new()).await;
        let doc = document(&app).await;
        for (method, path) in WRITES {
            assert_eq!(
                &operation(&doc, method, path)["security"],
                writes,
                "{vars:?} {path}"
            );
        }
        let op = operation(&doc, "POST", "/instances/{name}/refresh");
        assert_eq!(op["security"], refresh, "{vars:?}");
        for path in GUARDED {
            assert_eq!(
                operation(&doc, "GET", path)["security"],
                ops,
                "{vars:?} {path}"
            );
        }
        // And the service does refuse a write without the token when the document says so.
        let res = Answer::send(
            app.client
                .post(app.url("/waybills"))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
        let expected = if *writes == write { 401 } else { 422 };
        assert_eq!(res.status, expected, "{vars:?}");
        app.stop().await.unwrap();
    }
}

/// Found by schemathesis: `Idempotency-Key` and `If-Match` were documented as any string
/// while the service refused some (an empty key, `W/"!+$`3"`), and `trip_ids` without
/// `uniqueItems` while a trip listed twice is refused. Now each has a pattern in the
/// document, and the service takes exactly the values the pattern matches (checked with
/// the document's own pattern, compiled).
#[tokio::test]
async fn request_headers_and_lists_are_refused_exactly_as_documented() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let header_pattern = |method: &str, path: &str, name: &str| {
        let op = operation(&doc, method, path);
        let p = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name && p["in"] == "header")
            .unwrap_or_else(|| panic!("{method} {path}: header {name}"));
        let pattern = p["schema"]["pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: header {name} has no pattern: {p}"));
        regex::Regex::new(pattern).unwrap()
    };
    let key_rule = header_pattern("POST", "/waybills", "Idempotency-Key");
    assert_eq!(
        key_rule.as_str(),
        gtfs_fetch::api::waybills::IDEMPOTENCY_KEY_PATTERN
    );
    let if_match_rule = header_pattern("PATCH", "/waybills/{id}", "If-Match");
    assert_eq!(
        if_match_rule.as_str(),
        gtfs_fetch::api::waybills::IF_MATCH_PATTERN
    );

    // A well-formed body for a feed this service lacks: 422 once the key is taken, 400
    // when the key is refused.
    let body = json!({"service_date": "2024-01-01", "vehicle_id": "v", "driver_id": "d",
                      "gtfs_id": "nope", "route_id": "r", "trip_ids": ["t"]});
    let long = "k".repeat(255);
    let too_long = "k".repeat(256);
    let keys = [
        "7f0c-2026-12-01-bus-117",
        "\"quoted\"",
        "!#$%&'()*+,-./:;<=>?@[]^_`{|}~",
        long.as_str(),
        too_long.as_str(),
        "\"\"",
        "\"",
        "a\"b",
        "\"a",
        "two words",
    ];
    for key in keys {
        let res = Answer::send(
            app.client
                .post(app.url("/waybills"))
                .header("idempotency-key", key)
                .json(&body),
        )
        .await;
        let expected = if key_rule.is_match(key) { 422 } else { 400 };
        assert_eq!(res.status, expected, "Idempotency-Key {key:?}");
    }
    // The empty key, which an HTTP client sends as an empty header.
    let res = Answer::send(
        app.client
            .post(app.url("/waybills"))
            .header("idempotency-key", "")
            .json(&body),
    )
    .await;
    assert!(!key_rule.is_match(""));
    assert_eq!(res.status, 400, "an empty Idempotency-Key");

    // If-Match on a waybill that does not exist: 404 once the header is taken, 400 when
    // it is refused.
    let ghost = format!("/waybills/{}", uuid::Uuid::new_v4());
    for tag in [
        "*",
        "\"3\"",
        "W/\"3\"",
        "3",
        "\"123456789\"",
        "W/\"!+$`3\"",
        "\"x\"",
        "\"3",
        "W/3",
        "+3",
        "\"1234567890\"",
        "\"1\", \"2\"",
    ] {
        let res = Answer::send(
            app.client
                .patch(app.url(&ghost))
                .header("if-match", tag)
                .json(&json!({"status": "cancelled"})),
        )
        .await;
        let expected = if if_match_rule.is_match(tag) {
            404
        } else {
            400
        };
        assert_eq!(res.status, expected, "If-Match {tag}");
    }

    // trip_ids: unique items, refused before the feed is looked up.
    let trips = &doc["components"]["schemas"]["NewWaybill"]["properties"]["trip_ids"];
    assert_eq!(trips["uniqueItems"], true, "{trips}");
    let mut twice = body.clone();
    twice["trip_ids"] = json!(["t1", "t2", "t1"]);
    let res = Answer::send(app.client.post(app.url("/waybills")).json(&twice)).await;
    assert_eq!(res.status, 422);
    let problem: Value = res.json();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("\"t1\" is listed twice"), "{detail}");
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Negative controls: the checks above can fail
// ---------------------------------------------------------------------------------------

#[test]
fn a_route_without_docs_or_docs_without_a_route_are_reported() {
    let documented: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .filter(|(_, p)| *p != "/metrics")
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .chain([("DELETE".to_owned(), "/feeds".to_owned())])
        .collect();
    let err = same_endpoints(&documented, ENDPOINTS).unwrap_err();
    assert!(err.contains("\"/metrics\""), "{err}");
    assert!(err.contains("(\"DELETE\", \"/feeds\")"), "{err}");
    let all: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert!(same_endpoints(&all, ENDPOINTS).is_ok());
}

#[test]
fn answers_that_stray_from_the_schema_are_reported() {
    let doc = json!({
        "paths": {"/x": {"get": {"responses": {"200": {
            "description": "ok",
            "headers": {"ETag": {"schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}
        }}}}},
        "components": {"schemas": {
            "Base": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer", "minimum": 0}}},
            "Thing": {"allOf": [
                {"$ref": "#/components/schemas/Base"},
                {"type": "object", "required": ["state"], "properties": {
                    "state": {"type": "string", "enum": ["on", "off"]},
                    "note": {"type": ["string", "null"]},
                    "at": {"type": ["string", "null"], "format": "date-time"}
                }}
            ]}
        }}
    });
    let answer = |body: Value, etag: bool| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        if etag {
            headers.insert("etag", "\"1\"".parse().unwrap());
        }
        Answer::made(200, headers, serde_json::to_vec(&body).unwrap())
    };
    let checker = Checker::new(&doc);
    let good = json!({"id": 1, "state": "on", "note": null, "at": "2024-01-01T00:00:00Z"});
    assert_eq!(
        checker.answer("GET", "/x", &answer(good.clone(), true)),
        Vec::<String>::new()
    );
    for (bad, expected) in [
        (
            json!({"id": 1, "state": "on", "extra": 1}),
            "field not in the schema",
        ),
        (json!({"id": 1}), "required field \"state\" missing"),
        (json!({"id": -1, "state": "on"}), "minimum"),
        (json!({"id": "1", "state": "on"}), "is not of type"),
        (json!({"id": 1, "state": "up"}), "is not one of"),
        (
            json!({"id": 1, "state": "on", "at": "yesterday"}),
            "is not a date-time",
        ),
    ] {
        let errors = checker.answer("GET", "/x", &answer(bad.clone(), true));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{bad}: {errors:?}"
        );
    }
    let errors = checker.answer("GET", "/x", &answer(good, false));
    assert!(
        errors.iter().any(|e| e.contains("header ETag missing")),
        "{errors:?}"
    );
    let mut missing = answer(json!({}), true);
    missing.status = 404;
    let errors = checker.answer("GET", "/x", &missing);
    assert!(
        errors.iter().any(|e| e.contains("status not documented")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn every_string_a_client_sends_has_a_documented_length_and_character_rule() {
    use gtfs_fetch::waybill::limits;
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let id = json!({"min": 1, "max": limits::ID, "pattern": limits::ID_PATTERN});
    let gtfs = json!({"min": 1, "max": limits::GTFS_ID, "pattern": limits::ID_PATTERN});
    let notes = json!({"min": null, "max": limits::NOTES, "pattern": limits::NOTES_PATTERN});
    let rule = |s: &Value| json!({"min": s.get("minLength"), "max": s["maxLength"], "pattern": s["pattern"]});
    for (schema, field, want) in [
        ("NewWaybill", "vehicle_id", &id),
        ("NewWaybill", "driver_id", &id),
        ("NewWaybill", "number", &id),
        ("NewWaybill", "gtfs_id", &gtfs),
        ("NewWaybill", "route_id", &gtfs),
        ("NewWaybill", "notes", &notes),
        ("StatusChange", "notes", &notes),
    ] {
        let prop = &schemas[schema]["properties"][field];
        assert_eq!(&rule(prop), want, "{schema}.{field}: {prop}");
    }
    let trips = &schemas["NewWaybill"]["properties"]["trip_ids"];
    assert_eq!(trips["minItems"], 1, "{trips}");
    assert_eq!(trips["maxItems"], limits::TRIPS, "{trips}");
    assert_eq!(rule(&trips["items"]), gtfs, "{trips}");
    // Every string property of a request body has a maximum.
    for schema in ["NewWaybill", "StatusChange"] {
        for (name, prop) in schemas[schema]["properties"].as_object().unwrap() {
            let is_string = prop["type"] == "string"
                || prop["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("string")));
            let bounded = prop.get("maxLength").is_some()
                || prop.get("format").is_some()
                || prop.get("$ref").is_some()
                || prop.get("enum").is_some();
            assert!(
                !is_string || bounded,
                "{schema}.{name} has no maxLength: {prop}"
            );
        }
    }
    let waybill = operation(&doc, "GET", "/waybills/{id}");
    let id_param = &waybill["parameters"][0];
    assert_eq!(id_param["schema"]["format"], "uuid", "{id_param}");
    app.stop().await.unwrap();
}
