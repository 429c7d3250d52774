//! Panic hunting in the OTP answer parsers ([`otp1`] and [`otp2`]), through the library's
//! public API.
//!
//! Every public parser is fed the real fixture answers under `shared/fixtures/otp/`,
//! valid answers derived from them, and thousands of deterministic mutations of those
//! (fixed-seed [`StdRng`]): truncations, byte flips, deletions and insertions, and
//! JSON-aware ones (a value swapped for `null`, out-of-range numbers, deep nesting, odd
//! strings and ids, arrays for objects and back, keys removed or duplicated). Each call
//! runs under [`catch_unwind`] so a panic names the input; every `Err` must carry a
//! non-empty message of bounded length.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use gtfs_fetch::otp::{AdapterError, otp1, otp2};

const OTP1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/otp/1.x");
const OTP2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/otp/2.x");

/// An error message longer than this, counting each `\u{..}` escape as one character,
/// is a failure: bodies and values are echoed at most 200 characters, paths are short.
const MAX_MESSAGE: usize = 2_000;

/// The hard cap in bytes. Echoes escape with `{:?}`, so one echoed character can take up
/// to 10 bytes (`\u{10ffff}`), and a message holds at most three echoes (`local_id`: the
/// id, its feed and the expected feed): 3 * 200 * 10 plus the path and wording.
const MAX_MESSAGE_BYTES: usize = 6_500;

/// `text`'s length with each `\u{..}` escape counted as one byte.
fn collapsed_len(text: &str) -> usize {
    let mut len = text.len();
    let mut rest = text;
    while let Some(at) = rest.find("\\u{") {
        match rest[at..].find('}') {
            Some(end) => {
                len -= end;
                rest = &rest[at + end + 1..];
            }
            None => break,
        }
    }
    len
}

/// Ids that are not `feedId:localId`, or barely.
const ODD_IDS: &[&str] = &[
    "",
    ":",
    "::",
    "F:",
    ":x",
    "x",
    "F:a:b:c:d",
    "TriMet:",
    "4:",
    "4::",
    ":::::::::",
    "F:\u{0}",
    "é:é",
    "\u{10ffff}:\u{10ffff}",
];

/// The text a panic carried (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}

fn read(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("fixture is JSON")
}

/// The start of `body`, printable, for a failure message.
fn show(body: &[u8]) -> String {
    let cut = body.len().min(2_000);
    format!(
        "{} bytes, starting {:?}",
        body.len(),
        String::from_utf8_lossy(&body[..cut])
    )
}

thread_local! {
    // Inputs a parser accepted on this thread: mutants that pass validation reach the
    // deeper code, so the fuzz tests check that enough do.
    static ACCEPTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn accepted() -> usize {
    ACCEPTED.with(std::cell::Cell::get)
}

/// Runs `parse` on `body`: a panic or a bad error message fails the test, naming the
/// parser, the case and the input.
fn check<T>(
    parser: &str,
    case: &str,
    body: &[u8],
    parse: impl FnOnce() -> Result<T, AdapterError>,
) {
    match catch_unwind(AssertUnwindSafe(parse)) {
        Err(payload) => {
            let why = panic_message(&*payload);
            panic!("{parser} panicked ({why}) on {case}: {}", show(body));
        }
        Ok(Ok(_)) => {
            if parser != "otp2::refuses_sort_order" {
                ACCEPTED.with(|n| n.set(n.get() + 1));
            }
        }
        Ok(Err(err)) => {
            let AdapterError::Malformed(msg) = &err;
            let text = err.to_string();
            assert!(
                !msg.trim().is_empty(),
                "{parser}: empty error message on {case}: {}",
                show(body)
            );
            assert!(
                collapsed_len(&text) < MAX_MESSAGE && text.len() < MAX_MESSAGE_BYTES,
                "{parser}: {}-byte error message on {case}: {}\ninput: {}",
                text.len(),
                &text[..text.floor_char_boundary(500)],
                show(body)
            );
        }
    }
}

/// Every OTP 1 parser on `body`, reading ids of feed `gtfs_id`.
fn otp1_all(gtfs_id: &str, case: &str, body: &[u8]) {
    check("otp1::parse_feeds", case, body, || otp1::parse_feeds(body));
    check("otp1::parse_routes", case, body, || {
        otp1::parse_routes(gtfs_id, body, &[])
    });
    check("otp1::parse_route", case, body, || {
        otp1::parse_route(gtfs_id, body)
    });
    check("otp1::parse_pattern_ids", case, body, || {
        otp1::parse_pattern_ids(body)
    });
    check("otp1::parse_pattern", case, body, || {
        otp1::parse_pattern(gtfs_id, body)
    });
}

/// Every OTP 2 parser on `body`, reading ids of feed `gtfs_id`.
fn otp2_all(gtfs_id: &str, case: &str, body: &[u8]) {
    check("otp2::parse_feeds", case, body, || otp2::parse_feeds(body));
    check("otp2::parse_routes", case, body, || {
        otp2::parse_routes(gtfs_id, body)
    });
    check("otp2::parse_route", case, body, || {
        otp2::parse_route(gtfs_id, body)
    });
    check("otp2::refuses_sort_order", case, body, || {
        Ok::<_, AdapterError>(otp2::refuses_sort_order(body))
    });
}

fn both_all(gtfs_id: &str, case: &str, body: &[u8]) {
    otp1_all(gtfs_id, case, body);
    otp2_all(gtfs_id, case, body);
}

// ---- Seeds: fixtures and valid answers derived from them ----

/// OTP 1 seeds: (name, feed id, body).
fn otp1_seeds() -> Vec<(String, &'static str, Vec<u8>)> {
    let index = read(OTP1, "mock-otp-transit-index-data.json");
    let route = read(OTP1, "mock-route.json");
    let index_v = value(&index);
    let route_v = value(&route);
    let mut seeds = vec![
        (
            "1.x/mock-otp-transit-index-data.json".to_owned(),
            "TriMet",
            index,
        ),
        ("1.x/mock-route.json".to_owned(), "TriMet", route),
        (
            "feeds".to_owned(),
            "TriMet",
            br#"["TriMet","C-TRAN"]"#.to_vec(),
        ),
        (
            "routes".to_owned(),
            "TriMet",
            index_v["routes"].to_string().into_bytes(),
        ),
    ];
    let patterns = route_v["patterns"].as_object().expect("patterns");
    let shorts: Vec<Value> = patterns
        .values()
        .map(|p| json!({"id": p["id"], "desc": p["desc"]}))
        .collect();
    seeds.push((
        "pattern ids".to_owned(),
        "TriMet",
        json!(shorts).to_string().into_bytes(),
    ));
    // A pattern detail the parser accepts: feed-scoped stop ids, trips with directions.
    let p = patterns.values().next().expect("a pattern");
    let stops: Vec<Value> = p["stops"]
        .as_array()
        .expect("stops")
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s["id"] = json!(format!("TriMet:{}", s["id"].as_str().unwrap_or("0")));
            s
        })
        .collect();
    let detail = json!({"id": p["id"], "desc": p["desc"], "routeId": "TriMet:90",
        "stops": stops, "trips": [
            {"id": "TriMet:1", "tripHeadsign": "A", "serviceId": "TriMet:W", "direction": 0},
            {"id": "TriMet:2", "tripHeadsign": "B", "direction": 0},
            {"id": "TriMet:3", "tripHeadsign": "A", "direction": 0}]});
    seeds.push((
        "pattern".to_owned(),
        "TriMet",
        detail.to_string().into_bytes(),
    ));
    seeds
}

/// OTP 2 seeds: (name, feed id, body).
fn otp2_seeds() -> Vec<(String, &'static str, Vec<u8>)> {
    let mut seeds = vec![(
        "2.x/mock-route-otp2.json".to_owned(),
        "4",
        read(OTP2, "mock-route-otp2.json"),
    )];
    let mut names: Vec<String> = std::fs::read_dir(format!("{OTP2}/expectations"))
        .expect("expectations")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let body = read(&format!("{OTP2}/expectations"), &name);
        seeds.push((format!("2.x/expectations/{name}"), "F", body));
    }
    // A `Route` answer `parse_route` accepts, from the CobbLinc mock.
    let mock = value(&read(OTP2, "mock-route-otp2.json"));
    let patterns: Vec<Value> = mock["patterns"]
        .as_object()
        .expect("patterns")
        .values()
        .take(3)
        .enumerate()
        .map(|(i, p)| {
            let stops: Vec<Value> = p["stops"]
                .as_array()
                .expect("stops")
                .iter()
                .take(6)
                .map(|s| {
                    json!({"gtfsId": s["id"], "name": s["name"], "code": s["code"],
                           "lat": s["lat"], "lon": s["lon"]})
                })
                .collect();
            json!({"code": format!("4:101:{}:0{i}", i % 2), "directionId": i % 2,
                   "headsign": "Marietta", "stops": stops,
                   "trips": [{"gtfsId": "4:t1"}, {"gtfsId": "4:t2"}]})
        })
        .collect();
    let route = json!({"data": {"route": {
        "gtfsId": mock["id"], "shortName": mock["shortName"], "longName": mock["longName"],
        "mode": mock["mode"], "type": mock["type"], "color": mock["color"],
        "textColor": mock["textColor"], "sortOrder": 3,
        "agency": {"gtfsId": mock["agency"]["id"]}, "patterns": patterns}}});
    seeds.push((
        "route answer".to_owned(),
        "4",
        route.to_string().into_bytes(),
    ));
    seeds.push((
        "feeds answer".to_owned(),
        "F",
        json!({"data": {"feeds": [
            {"feedId": "F", "agencies": [
                {"gtfsId": "F:A1", "name": "speedtransit", "timezone": "Europe/Berlin"}]},
            {"feedId": "G", "agencies": null}]}})
        .to_string()
        .into_bytes(),
    ));
    seeds.push((
        "sortOrder refusal".to_owned(),
        "F",
        br#"{"errors":[{"message":"Validation error (FieldUndefined@[routes/sortOrder]) : Field 'sortOrder' in type 'Route' is undefined"}],"data":null}"#
            .to_vec(),
    ));
    seeds.push((
        "no such route".to_owned(),
        "F",
        br#"{"data":{"route":null}}"#.to_vec(),
    ));
    seeds
}

// ---- Mutations ----

/// Raw JSON texts put in place of values (some are not valid JSON values on purpose).
fn raw_values() -> Vec<Vec<u8>> {
    let mut raws: Vec<Vec<u8>> = [
        "null",
        "true",
        "false",
        "0",
        "-1",
        "-2",
        "2",
        "256",
        "-999",
        "1.0",
        "0.5",
        "-0",
        "1e400",
        "-1e400",
        "1e-400",
        "18446744073709551616",
        "-9223372036854775809",
        "9223372036854775807",
        "-9223372036854775808",
        "4294967296",
        "2147483648",
        "1E2",
        "\"\"",
        "\" \"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"\\ud800\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"#\"",
        "\"#é\"",
        "\"é\"",
        "\"\\\\\"",
        "\"\\\"\"",
        "{}",
        "[]",
        "[null]",
        "[{}]",
        "[[]]",
        "{\"a\":1}",
        "{\"id\":null}",
        "{\"gtfsId\":null}",
        "{\"gtfsId\":\"F:x\",\"gtfsId\":1}",
        "\"\\u0001\\u007f\\u009f\"",
        "\"BUS\"",
        "\"TRAM\"",
        "\"\\u00e9\"",
        "NaN",
        "Infinity",
        "undefined",
        "",
        "-",
        "\"",
        "{",
        "[",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for id in ODD_IDS {
        raws.push(json!(id).to_string().into_bytes());
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    raws.push(deep(127));
    raws.push(deep(129));
    raws.push(deep(5_000));
    let deep_obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes();
    raws.push(deep_obj(200));
    raws.push(deep_obj(5_000));
    raws.push(format!("\"{}\"", "a".repeat(20_000)).into_bytes());
    raws.push(format!("\"{}\"", "\\u0001".repeat(1_000)).into_bytes());
    raws.push(format!("\"{}:{}\"", "\u{10ffff}".repeat(300), "x").into_bytes());
    raws.push(format!("[{}null]", "null,".repeat(5_000)).into_bytes());
    raws
}

/// JSON pointers of every value in `v` (the root is `""`).
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_owned());
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(item, &format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

const MARK: &str = "@@robustness-mark@@";

/// `base` with the value at `ptr` replaced by the raw text `raw`.
fn splice(base: &Value, ptr: &str, raw: &[u8]) -> Vec<u8> {
    let mut v = base.clone();
    match v.pointer_mut(ptr) {
        Some(slot) => *slot = json!(MARK),
        None => return raw.to_vec(),
    }
    let text = v.to_string();
    let at = text.find(&format!("\"{MARK}\"")).expect("mark");
    let mut out = text.as_bytes()[..at].to_vec();
    out.extend_from_slice(raw);
    out.extend_from_slice(&text.as_bytes()[at + MARK.len() + 2..]);
    out
}

/// `base` with the value at `ptr` changed by `f`.
fn edit(base: &Value, ptr: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = base.clone();
    if let Some(slot) = v.pointer_mut(ptr) {
        f(slot);
    }
    v.to_string().into_bytes()
}

/// Variants of an id string.
fn id_variants(id: &str) -> Vec<String> {
    let mut out: Vec<String> = ODD_IDS.iter().map(|s| (*s).to_owned()).collect();
    out.push(id.replace(':', ""));
    out.push(format!("{id}:"));
    out.push(format!(":{id}"));
    out.push(id.replace(':', "::"));
    out.push(format!("{id}:{id}:{id}"));
    if let Some((_, local)) = id.split_once(':') {
        out.push(format!("OTHER:{local}"));
        out.push(format!(":{local}"));
    }
    out
}

/// One JSON-aware mutation of `base` (pointers precomputed).
fn json_mutation(rng: &mut StdRng, base: &Value, ptrs: &[String], raws: &[Vec<u8>]) -> Vec<u8> {
    let ptr = &ptrs[rng.random_range(0..ptrs.len())];
    let current = base.pointer(ptr).cloned().unwrap_or(Value::Null);
    match rng.random_range(0..8) {
        0..=2 => splice(base, ptr, &raws[rng.random_range(0..raws.len())]),
        3 => match &current {
            // Ids and other strings: odd ids.
            Value::String(s) => {
                let variants = id_variants(s);
                let new = variants[rng.random_range(0..variants.len())].clone();
                edit(base, ptr, |v| *v = json!(new))
            }
            _ => splice(base, ptr, b"null"),
        },
        4 => edit(base, ptr, |v| {
            // Arrays for objects and objects for arrays; scalars wrapped.
            *v = match v.take() {
                Value::Object(map) => Value::Array(map.into_iter().map(|(_, x)| x).collect()),
                Value::Array(items) => Value::Object(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| (i.to_string(), x))
                        .collect(),
                ),
                other => json!([other]),
            }
        }),
        5 => edit(base, ptr, |v| match v {
            // A key removed, or an item removed.
            Value::Object(map) if !map.is_empty() => {
                let keys: Vec<String> = map.keys().cloned().collect();
                map.remove(&keys[keys.len() / 2]);
            }
            Value::Array(items) if !items.is_empty() => {
                items.pop();
            }
            other => *other = Value::Null,
        }),
        6 => match &current {
            // A duplicated key with another type of value.
            Value::Object(map) if !map.is_empty() => {
                let (k, _) = map.iter().next().expect("a key");
                let mut text = current.to_string();
                text.insert_str(1, &format!("{}:[],", json!(k)));
                splice(base, ptr, text.as_bytes())
            }
            _ => splice(base, ptr, b"{}"),
        },
        _ => {
            // Two replacements at once.
            let first = splice(base, ptr, &raws[rng.random_range(0..raws.len())]);
            match serde_json::from_slice::<Value>(&first) {
                Ok(v) => {
                    let ptr2 = &ptrs[rng.random_range(0..ptrs.len())];
                    splice(&v, ptr2, &raws[rng.random_range(0..raws.len())])
                }
                Err(_) => first,
            }
        }
    }
}

/// One byte-level mutation of `base`.
fn byte_mutation(rng: &mut StdRng, base: &[u8]) -> Vec<u8> {
    const SIGNIFICANT: &[u8] = b"{}[]\":,\\-0.eE nul\x00\xff\xc3\xed";
    let mut b = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if b.is_empty() {
            b.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..5) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => {
                let end = (at + rng.random_range(1..=16)).min(b.len());
                b.drain(at..end);
            }
            3 => b.insert(at, SIGNIFICANT[rng.random_range(0..SIGNIFICANT.len())]),
            _ => b.insert(at, rng.random()),
        }
    }
    b
}

/// Truncations, byte mutations and JSON mutations of every seed through `run`; the
/// number of inputs tried.
fn fuzz(
    seeds: &[(String, &'static str, Vec<u8>)],
    seed: u64,
    per_seed: usize,
    run: impl Fn(&str, &str, &[u8]),
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let raws = raw_values();
    let mut tried = 0;
    for (name, gtfs_id, body) in seeds {
        run(gtfs_id, &format!("seed {name}"), body);
        // Truncated at about 150 places, plus the first and last bytes.
        let step = (body.len() / 150).max(1);
        for cut in (0..body.len()).step_by(step).chain([1, body.len() - 1]) {
            run(gtfs_id, &format!("{name} cut at {cut}"), &body[..cut]);
            tried += 1;
        }
        for i in 0..per_seed {
            let mutant = byte_mutation(&mut rng, body);
            run(gtfs_id, &format!("{name} byte mutant {i}"), &mutant);
        }
        let base = value(body);
        let mut ptrs = Vec::new();
        pointers(&base, "", &mut ptrs);
        for i in 0..per_seed {
            let mutant = json_mutation(&mut rng, &base, &ptrs, &raws);
            run(gtfs_id, &format!("{name} json mutant {i}"), &mutant);
        }
        tried += 1 + 2 * per_seed;
    }
    tried
}

#[test]
fn otp1_parsers_survive_fixture_mutations() {
    let seeds = otp1_seeds();
    let tried = fuzz(&seeds, 0x0791, 1_000, |id, case, body| {
        otp1_all(id, case, body)
    });
    eprintln!("otp1: {tried} inputs, {} accepted parses", accepted());
    assert!(tried > 12_000, "{tried}");
    assert!(
        accepted() > tried / 5,
        "{tried} inputs, {} accepted",
        accepted()
    );
}

#[test]
fn otp2_parsers_survive_fixture_mutations() {
    let seeds = otp2_seeds();
    let tried = fuzz(&seeds, 0x0792, 500, |id, case, body| {
        otp2_all(id, case, body)
    });
    eprintln!("otp2: {tried} inputs, {} accepted parses", accepted());
    assert!(tried > 12_000, "{tried}");
    assert!(
        accepted() > tried / 20,
        "{tried} inputs, {} accepted",
        accepted()
    );
}

/// Each API's answers fed to the other API's parsers, and every seed read as of odd
/// feeds, so that ids meet feed ids they do not belong to.
#[test]
fn every_parser_takes_every_seed_and_odd_feed_ids() {
    let seeds: Vec<_> = otp1_seeds().into_iter().chain(otp2_seeds()).collect();
    for (name, gtfs_id, body) in &seeds {
        for id in std::iter::once(*gtfs_id).chain(ODD_IDS.iter().copied()) {
            both_all(id, &format!("seed {name} as feed {id:?}"), body);
        }
    }
}

/// Small hand-made answers at the parsers' edges, each with odd values in each field.
#[test]
fn hand_made_edge_answers() {
    let raws = raw_values();
    let templates: Vec<(&str, Value)> = vec![
        (
            "otp1 route",
            json!({"id": "F:1", "type": 3, "agency": {"id": "A"},
            "color": "FF0000", "textColor": "#000000", "sortOrder": -999, "sortOrderSet": true,
            "shortName": "1", "longName": "One", "mode": "BUS"}),
        ),
        (
            "otp1 routes",
            json!([{"id": "F:1", "mode": "BUS"}, {"id": "G:2", "mode": "RAIL"}]),
        ),
        (
            "otp1 pattern",
            json!({"id": "F:1:0:01", "desc": "d", "routeId": "F:1",
            "stops": [{"id": "F:s", "name": "S", "code": "c", "lat": 1.5, "lon": -2}],
            "trips": [{"id": "F:t", "direction": -1, "tripHeadsign": "h"},
                      {"id": "F:u", "direction": 1}]}),
        ),
        ("otp1 pattern ids", json!([{"id": "F:1:0:01", "desc": "d"}])),
        ("otp1 feeds", json!(["F", "G"])),
        (
            "otp2 feeds",
            json!({"data": {"feeds": [{"feedId": "F", "agencies": [
            {"gtfsId": "F:a", "name": "A", "timezone": "UTC"}]}]}}),
        ),
        (
            "otp2 routes",
            json!({"data": {"routes": [{"gtfsId": "F:1", "mode": "BUS",
            "type": 3, "color": "#fff", "textColor": null, "sortOrder": 1,
            "agency": {"gtfsId": "F:a"}, "shortName": "1", "longName": null}]}}),
        ),
        (
            "otp2 route",
            json!({"data": {"route": {"gtfsId": "F:1", "mode": "BUS", "type": 3,
            "color": "", "textColor": "#fff", "sortOrder": 0, "agency": {"gtfsId": "F:a"},
            "shortName": "s", "longName": "l", "patterns": [{"code": "F:1:0:01",
            "directionId": 0, "headsign": "h",
            "stops": [{"gtfsId": "G:s", "name": "n", "code": "c", "lat": 0, "lon": 0.5}],
            "trips": [{"gtfsId": "F:t"}]}]}}, "errors": null, "extensions": {"x": [1]}}),
        ),
        (
            "otp2 errors",
            json!({"errors": [{"message": "sortOrder"}, {"message": 1}],
            "data": {"route": null}}),
        ),
    ];
    let mut tried = 0;
    for (name, template) in &templates {
        let mut ptrs = Vec::new();
        pointers(template, "", &mut ptrs);
        for ptr in &ptrs {
            for (i, raw) in raws.iter().enumerate() {
                let body = splice(template, ptr, raw);
                both_all("F", &format!("{name} with {ptr} = raw value {i}"), &body);
                tried += 1;
            }
        }
    }
    eprintln!("hand-made: {tried} inputs, {} accepted parses", accepted());
    assert!(tried > 5_000, "{tried}");
}

/// Garbage and huge bodies: errors, not panics or stack overflows, and short messages.
#[test]
fn garbage_and_huge_bodies() {
    let mut rng = StdRng::seed_from_u64(0x6a7b);
    const MB: usize = 1 << 20;
    let random: Vec<u8> = (0..MB).map(|_| rng.random()).collect();
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("whitespace", b" \t\r\n ".to_vec()),
        ("random 1 MB", random.clone()),
        ("random ascii 1 MB", random.iter().map(|b| b % 95 + 32).collect()),
        ("1 MB of [", vec![b'['; MB]),
        ("1 MB of {\"a\":", "{\"a\":".repeat(MB / 5).into_bytes()),
        ("unterminated 1 MB string", format!("\"{}", "a".repeat(MB)).into_bytes()),
        ("1 MB string", format!("\"{}\"", "é".repeat(MB / 2)).into_bytes()),
        ("1 MB of nulls", format!("[{}null]", "null,".repeat(MB / 5)).into_bytes()),
        ("1 MB of \\u0001", format!("\"{}", "\\u0001".repeat(MB / 6)).into_bytes()),
        ("html", format!("<html><body>{}</body></html>", "Bad gateway ".repeat(90_000)).into_bytes()),
        ("bom json", b"\xef\xbb\xbf{\"data\":{\"route\":null}}".to_vec()),
        ("utf-16 json", "{\"data\":null}".encode_utf16().flat_map(u16::to_le_bytes).collect()),
        ("null", b"null".to_vec()),
        ("number", b"1e400".to_vec()),
        ("string", b"\"\\ud800\"".to_vec()),
        ("trailing garbage", b"{\"data\":{\"route\":null}} x".to_vec()),
        ("two answers", b"{\"data\":{\"route\":null}}{\"data\":{\"route\":null}}".to_vec()),
        ("errors of depth 1 MB", format!("{{\"errors\":{}", "[".repeat(MB)).into_bytes()),
        (
            "deep errors",
            format!("{{\"data\":{{\"route\":null}},\"errors\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000))
                .into_bytes(),
        ),
        (
            "deep extensions",
            format!("{{\"data\":{{\"route\":null}},\"extensions\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000))
                .into_bytes(),
        ),
        (
            "deep trips",
            format!(
                "{{\"data\":{{\"route\":{{\"gtfsId\":\"F:1\",\"mode\":\"BUS\",\"patterns\":[{{\"code\":\"c\",\"trips\":{}{}}}]}}}}}}",
                "[".repeat(10_000),
                "]".repeat(10_000)
            )
            .into_bytes(),
        ),
        (
            "error message of 1 MB",
            json!({"errors": [{"message": "\u{1}".repeat(MB)}]}).to_string().into_bytes(),
        ),
        (
            "id of 1 MB",
            json!({"data": {"route": {"gtfsId": format!("G:{}", "\u{10ffff}".repeat(MB / 4)), "mode": "BUS"}}})
                .to_string()
                .into_bytes(),
        ),
        (
            "otp1 id of 1 MB",
            json!({"id": format!("{}:x", "\u{7f}".repeat(MB)), "type": 3}).to_string().into_bytes(),
        ),
    ];
    // Every 64 KiB prefix of the random body, too.
    for cut in (0..MB).step_by(MB / 16) {
        bodies.push(("random prefix", random[..cut].to_vec()));
    }
    for (name, body) in &bodies {
        both_all("F", name, body);
        both_all("G", name, body);
    }
}

/// Escaping can make a capped echo ten times longer in bytes: the longest message the
/// parsers can give is a few KB, not 200 characters. Bounded, which is what matters.
#[test]
fn escaped_echoes_stay_bounded() {
    let id = format!("{}:x", "\u{10ffff}".repeat(300));
    let body = json!({"id": id, "type": 3}).to_string();
    let AdapterError::Malformed(msg) = otp1::parse_route("F", body.as_bytes()).unwrap_err();
    assert!(msg.len() > MAX_MESSAGE, "{}", msg.len());
    assert!(msg.len() < MAX_MESSAGE_BYTES, "{}", msg.len());
    assert!(collapsed_len(&msg) < 600, "{}", collapsed_len(&msg));
    assert_eq!(collapsed_len("a\\u{10ffff}b\\u{1}"), 4);
}
