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
        use std::fmt::Write;
        // One buffer for the whole value: this runs for every response.
        let mut value = String::with_capacity(24 * (self.phases.len() + 1));
        for (phase, d) in self.phases.iter().chain(std::iter::once(&("total", total))) {
            if !value.is_empty() {
                value.push_str(", ");
            }
            // Milliseconds with three decimals, from whole microseconds: integer formatting
            // costs a fraction of a float's.
            let us = d.as_micros();
            let _ = write!(value, "{phase};dur={}.{:03}", us / 1000, us % 1000);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            headers.insert(SERVER_TIMING.clone(), v);
        }
    }
}
