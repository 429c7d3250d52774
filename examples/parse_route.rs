//! Parses one OTP 2 `Route` answer of bart route 01's shape (20 patterns of 25 stops,
//! 402 trips, 64,848 bytes) `N` times (first argument, default 1,000), for instruction counts:
//!
//! ```sh
//! cargo build --release --example parse_route
//! valgrind --tool=callgrind --toggle-collect=gtfs_fetch::otp::otp2::parse_route \
//!     target/release/examples/parse_route 100   # instructions of 100 parses
//! ```
//!
//! Or timed without valgrind: it prints the median of `N` parses.

use std::time::{Duration, Instant};

use gtfs_fetch::otp::otp2;
use serde_json::{Value, json};

fn answer() -> Vec<u8> {
    let patterns: Vec<Value> = (0..20)
        .map(|p| {
            let stops: Vec<Value> = (0..25)
                .map(|s| {
                    json!({"gtfsId": format!("bart:{}", 900 + s), "name": format!("Station {s}"),
                           "code": null, "lat": 37.5 + f64::from(s) / 97.0,
                           "lon": -122.25 - f64::from(s) / 89.0})
                })
                .collect();
            let trips: Vec<Value> = (0..if p < 2 { 21 } else { 20 })
                .map(|t| json!({"gtfsId": format!("bart:{:04}{t:02}WKDY", 1000 + p)}))
                .collect();
            json!({"code": format!("bart:01:{}:{p:02}", p % 2), "directionId": p % 2,
                   "headsign": "Richmond", "stops": stops, "trips": trips})
        })
        .collect();
    let answer = json!({"data": {"route": {
        "gtfsId": "bart:01", "shortName": null, "longName": "Richmond - Millbrae",
        "mode": "SUBWAY", "type": 1, "color": "ff0000", "textColor": null,
        "sortOrder": null, "agency": {"gtfsId": "bart:BART"}, "patterns": patterns
    }}});
    serde_json::to_vec(&answer).expect("encode")
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let body = answer();
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    let mut trips = 0;
    for _ in 0..n {
        let t = Instant::now();
        let route = otp2::parse_route("bart", std::hint::black_box(&body));
        times.push(t.elapsed());
        trips = route.expect("parse").expect("route").trip_count;
    }
    times.sort();
    println!(
        "{} bytes, {trips} trips, {n} parses, median {:?}",
        body.len(),
        times[n / 2]
    );
}
