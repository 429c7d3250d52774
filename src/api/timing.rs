//! `Server-Timing`: handlers note the phases they spent (cache, otp, db, ...) in a
//! [`ServerTiming`] put into the response extensions; the `observe` middleware adds
//! `total` and writes the header on every response.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

static SERVER_TIMING: axum::http::HeaderName = axum::http::HeaderName::from_static("server-timing");

/// Phases of one request, in the order they were recorded.
#[derive(Clone, Debug, Default)]
pub struct ServerTiming {
    phases: Vec<(&'static str, Duration)>,
}

impl ServerTiming {
    /// Adds `elapsed` to `phase` (phases recorded twice are summed).
    pub fn record(&mut self, phase: &'static str, elapsed: Duration) {
        match self.phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, d)) => *d += elapsed,
            None => self.phases.push((phase, elapsed)),
        }
    }

    /// Writes `phase;dur=<ms>, ..., total;dur=<ms>`.
    pub fn write(&self, headers: &mut HeaderMap, total: Duration) {
        // One buffer for the whole value, digits written by hand: this runs for every
        // response, and `write!` was a tenth of a cache hit's instructions.
        let mut value = Vec::with_capacity(24 * (self.phases.len() + 1));
        for (phase, d) in self.phases.iter().chain(std::iter::once(&("total", total))) {
            if !value.is_empty() {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(phase.as_bytes());
            value.extend_from_slice(b";dur=");
            millis(&mut value, d);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            headers.insert(SERVER_TIMING.clone(), v);
        }
    }
}

/// `d` in milliseconds with three decimals (`12.345`), from whole microseconds.
fn millis(out: &mut Vec<u8>, d: &Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut digits = [0u8; 20];
    let mut n = us / 1000;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        let mut timing = ServerTiming::default();
        timing.record("cache", Duration::from_nanos(1_999));
        timing.record("otp", Duration::from_micros(12_345_678));
        timing.record("cache", Duration::from_micros(1));
        let mut headers = HeaderMap::new();
        timing.write(&mut headers, Duration::from_micros(1_000));
        assert_eq!(
            headers[&SERVER_TIMING],
            "cache;dur=0.002, otp;dur=12345.678, total;dur=1.000"
        );
        ServerTiming::default().write(&mut headers, Duration::ZERO);
        assert_eq!(headers[&SERVER_TIMING], "total;dur=0.000");
        ServerTiming::default().write(&mut headers, Duration::MAX);
        let big = headers[&SERVER_TIMING].to_str().unwrap().to_owned();
        assert!(big.starts_with("total;dur=18446744073709551."), "{big}");
    }
}
