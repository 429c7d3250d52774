//! Logs and metrics.
//!
//! Logs go through `tracing` to stderr. Their format follows the stream they go to:
//! readable text (coloured) when stderr is a terminal, JSON lines when it is not
//! (containers, systemd, `serve 2>file`). `GTFS_LOG_FORMAT=json|text` overrides that
//! ([`LogFormat::choose`]; text off a terminal is never coloured, nor with `NO_COLOR`); any
//! other value is a configuration error (exit 2), as for every other setting. `RUST_LOG`
//! filters them (default `info`); PostgreSQL notices (`relation ... already exists,
//! skipping`, which sqlx logs at INFO) are kept at WARN and above unless `RUST_LOG` names
//! `sqlx` itself. Every request runs in a span that carries its request id, so each line a
//! request causes names it.
//!
//! Metrics are a `prometheus-client` registry owned by the application state (not a global:
//! two services in one test process do not mix their counts), rendered by `GET /metrics`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::cache::RouteCache;
use crate::config::ConfigError;
use crate::feed::store::FeedStore;
use crate::otp::instance::InstanceRuntime;

/// The environment variable that picks the log format.
pub const LOG_FORMAT_VAR: &str = "GTFS_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; `ansi`: with colours (only ever on a terminal).
    Text { ansi: bool },
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format for `GTFS_LOG_FORMAT`'s value (`None` or empty: unset) when stderr is,
    /// or is not, a terminal (and colours are allowed there: `NO_COLOR` unset). Unset:
    /// text on a terminal, JSON otherwise. An unknown value is refused, naming the
    /// variable, as other settings are.
    pub fn choose(var: Option<&str>, colour_terminal: bool) -> Result<LogFormat, ConfigError> {
        match var.map(str::trim).unwrap_or("") {
            "" if colour_terminal => Ok(LogFormat::Text { ansi: true }),
            "" => Ok(LogFormat::Json),
            v if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            v if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text {
                ansi: colour_terminal,
            }),
            other => Err(ConfigError {
                key: LOG_FORMAT_VAR.to_owned(),
                problem: format!("{other:?} is not a log format: use json or text"),
            }),
        }
    }

    /// [`LogFormat::choose`] for this process: its `GTFS_LOG_FORMAT`, its stderr.
    pub fn from_env() -> Result<LogFormat, ConfigError> {
        let var = std::env::var(LOG_FORMAT_VAR).ok();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        LogFormat::choose(var.as_deref(), std::io::stderr().is_terminal() && !no_color)
    }
}

/// The log filter: `RUST_LOG` (default `info`), with PostgreSQL notices held at WARN
/// unless `RUST_LOG` says something about `sqlx`.
pub fn log_filter(rust_log: Option<&str>) -> EnvFilter {
    let spec = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let mut filter = spec
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    if !spec.is_some_and(|s| s.contains("sqlx")) {
        filter = filter.add_directive(
            "sqlx::postgres::notice=warn"
                .parse()
                .expect("a valid directive"),
        );
    }
    filter
}

/// Installs the global log subscriber writing to stderr ([`init_logging_to`]).
pub fn init_logging(format: LogFormat) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    init_logging_to(format, std::io::stderr())
}

/// Installs the global log subscriber, writing to `out` through a background thread so
/// that no request waits on stderr. Keep the returned guard until exit: dropping it
/// flushes. Safe to call more than once (later calls install nothing and return `None`).
pub fn init_logging_to(
    format: LogFormat,
    out: impl Write + Send + 'static,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(out);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text { ansi } => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.ok().map(|()| guard)
}

/// The labels of one answered request. `&'static str`s, so that counting a request
/// allocates nothing: see [`method_label`] and [`route_label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    /// The route template (`/feeds/{gtfs_id}/routes`), never the raw path.
    pub route: &'static str,
    pub status: u16,
}

/// The method as a label: the standard ones by name, any other as `OTHER`, so that a
/// client inventing methods cannot grow the label set.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// A route template as a label. Templates come from the router, a fixed set, so each is
/// copied once for the life of the process and then found by a read-locked lookup.
pub fn route_label(template: &str) -> &'static str {
    static SEEN: LazyLock<RwLock<foldhash::HashSet<&'static str>>> = LazyLock::new(RwLock::default);
    if let Some(&known) = SEEN.read().unwrap_or_else(|e| e.into_inner()).get(template) {
        return known;
    }
    let mut seen = SEEN.write().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = seen.get(template) {
        return known;
    }
    let kept: &'static str = Box::leak(template.into());
    seen.insert(kept);
    kept
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<HttpLabels, Histogram>,
    /// Each label set's counter and histogram (shared handles into the two families),
    /// found with one foldhash lookup: the families hash with SipHash, one lookup each,
    /// which was a measurable share of a cache hit.
    http_series: RwLock<foldhash::HashMap<HttpLabels, (Counter, Histogram)>>,
    process_rss: Gauge,
    allocator_allocated: Gauge,
    db_pool_size: Gauge,
    db_pool_idle: Gauge,
    ready: Gauge,
    waybill_writes: Family<WriteLabels, Counter>,
    db_duration: Family<DbLabels, Histogram>,
    feed_store_writes: Family<StoreLabels, Counter>,
}

/// A new feed version written to the database's feed store: `stored` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub outcome: &'static str,
}

/// A waybill write: `create` or `change`, and the status it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub op: &'static str,
    pub status: u16,
}

/// A request's database work: `create`, `change`, `read`, `list`, `fetches`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    git_sha: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// The registry, with collectors that read the instances' client counters, the cache
    /// and the feeds' status at scrape time.
    pub fn new(
        instances: Vec<Arc<InstanceRuntime>>,
        cache: RouteCache,
        feeds: Arc<FeedStore>,
    ) -> Self {
        let mut registry = Registry::with_prefix("gtfs_fetch");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<HttpLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests answered",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head",
            http_duration.clone(),
        );
        let waybill_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "waybill_writes",
            "Waybill writes (POST and PATCH /waybills) by operation and answered status",
            waybill_writes.clone(),
        );
        let db_duration = Family::<DbLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "db_duration_seconds",
            "Database time of a request (all its statements), by operation",
            db_duration.clone(),
        );
        let feed_store_writes = Family::<StoreLabels, Counter>::default();
        registry.register(
            "feed_store_writes",
            "New feed versions written to the database's feed store, by outcome \
             (stored, failed); a failure never stops serving the version",
            feed_store_writes.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                git_sha: crate::build::GIT_SHA,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which build runs",
            build_info,
        );
        let intervals = instances
            .iter()
            .map(|i| (i.name().to_owned(), i.config.refresh_interval.as_secs_f64()))
            .collect();
        registry.register_collector(Box::new(InstanceCollector(instances)));
        registry.register_collector(Box::new(CacheCollector(cache)));
        registry.register_collector(Box::new(FeedCollector { feeds, intervals }));
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        Self {
            process_rss: gauge(
                &mut registry,
                "process_resident_memory_bytes",
                "Resident set size",
            ),
            allocator_allocated: gauge(
                &mut registry,
                "allocator_allocated_bytes",
                "Bytes allocated by the application (jemalloc)",
            ),
            db_pool_size: gauge(
                &mut registry,
                "db_pool_connections",
                "Open database connections",
            ),
            db_pool_idle: gauge(
                &mut registry,
                "db_pool_idle_connections",
                "Idle database connections",
            ),
            ready: gauge(
                &mut registry,
                "ready",
                "1 when GET /readyz would answer 200 (database and every instance ready), \
                 else 0; evaluated at each scrape",
            ),
            registry,
            http_requests,
            http_duration,
            http_series: RwLock::default(),
            waybill_writes,
            db_duration,
            feed_store_writes,
        }
    }
}

/// Values sampled at scrape time.
pub struct Sample {
    pub rss: u64,
    pub allocated: u64,
    pub db_pool_size: u32,
    pub db_pool_idle: usize,
    /// What `GET /readyz` would answer now: ready or not.
    pub ready: bool,
}

impl Metrics {
    pub fn observe_http(&self, labels: HttpLabels, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let series = self.http_series.read().unwrap_or_else(|e| e.into_inner());
        if let Some((requests, duration)) = series.get(&labels) {
            duration.observe(seconds);
            requests.inc();
            return;
        }
        drop(series);
        // The first request with these labels: made in the families (so that they are
        // exported), then remembered.
        let requests = self.http_requests.get_or_create(&labels).clone();
        let duration = self.http_duration.get_or_create(&labels).clone();
        duration.observe(seconds);
        requests.inc();
        self.http_series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels, (requests, duration));
    }

    /// A waybill write, answered with `status`.
    pub fn observe_waybill_write(&self, op: &'static str, status: u16) {
        self.waybill_writes
            .get_or_create(&WriteLabels { op, status })
            .inc();
    }

    /// A new feed version written to the feed store (`stored`) or not (`failed`).
    pub fn observe_feed_store(&self, outcome: &'static str) {
        self.feed_store_writes
            .get_or_create(&StoreLabels { outcome })
            .inc();
    }

    /// The database time of one request.
    pub fn observe_db(&self, op: &'static str, elapsed: Duration) {
        self.db_duration
            .get_or_create(&DbLabels { op })
            .observe(elapsed.as_secs_f64());
    }

    /// The registry in the text exposition format, after updating the sampled gauges.
    pub fn render(&self, sample: Sample) -> String {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.process_rss.set(clamp(sample.rss));
        self.allocator_allocated.set(clamp(sample.allocated));
        self.db_pool_size.set(sample.db_pool_size.into());
        self.db_pool_idle.set(clamp(sample.db_pool_idle as u64));
        self.ready.set(sample.ready.into());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics text, for scrapers and tools that
/// read only that (promtool, older agents). The two differ in little: a counter family is
/// named with its `_total` suffix in `# HELP`/`# TYPE`, `unknown` is `untyped`, and there is
/// no `# UNIT` or `# EOF` line.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), kind),
                "unknown" => (name.to_owned(), "untyped"),
                _ => (name.to_owned(), kind),
            };
            if let Some(text) = help.take() {
                let text = text.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Process and allocator memory, for `/memory-stats` and `/metrics`.
#[derive(Debug, serde::Serialize)]
pub struct MemorySample {
    pub rss_bytes: u64,
    pub virtual_bytes: u64,
    pub allocated_bytes: u64,
    pub resident_bytes: u64,
}

pub fn memory_sample() -> MemorySample {
    let process = memory_stats::memory_stats();
    // jemalloc caches its statistics: advance the epoch to refresh them.
    let _ = tikv_jemalloc_ctl::epoch::advance();
    MemorySample {
        rss_bytes: process.map_or(0, |p| p.physical_mem as u64),
        virtual_bytes: process.map_or(0, |p| p.virtual_mem as u64),
        allocated_bytes: tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64,
        resident_bytes: tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0) as u64,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    instance: String,
}

/// Per-instance HTTP client and breaker figures, read at scrape time.
#[derive(Debug)]
struct InstanceCollector(Vec<Arc<InstanceRuntime>>);

impl Collector for InstanceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reports: Vec<(InstanceLabel, crate::otp::client::ClientReport)> = self
            .0
            .iter()
            .map(|i| {
                (
                    InstanceLabel {
                        instance: i.name().to_owned(),
                    },
                    i.client.report(),
                )
            })
            .collect();
        type Pick = fn(&crate::otp::client::ClientReport) -> u64;
        let counters: [(&str, &str, Pick); 8] = [
            (
                "otp_connections_opened",
                "TCP connections opened to the instance",
                |r| r.connections_opened,
            ),
            (
                "otp_requests_sent",
                "HTTP requests sent to the instance (tries)",
                |r| r.requests_sent,
            ),
            (
                "otp_calls",
                "Calls made (each may make several tries)",
                |r| r.calls,
            ),
            ("otp_retries", "Retries after a failed try", |r| r.retries),
            (
                "otp_stale_retries",
                "Immediate retries after a pooled connection turned out closed",
                |r| r.stale_retries,
            ),
            (
                "otp_failures",
                "Tries that failed (count towards the breaker)",
                |r| r.failures,
            ),
            ("otp_breaker_opened", "Times the breaker opened", |r| {
                r.breaker.opened
            }),
            (
                "otp_breaker_rejected",
                "Calls refused by the open breaker",
                |r| r.breaker.rejected,
            ),
        ];
        for (name, help, pick) in counters {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (label, report) in &reports {
                ConstCounter::new(pick(report)).encode(metric.encode_family(label)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "otp_connection_reuse_ratio",
            "Share of tries sent on an already open connection",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (label, report) in &reports {
            ConstGauge::new(report.reuse_ratio).encode(metric.encode_family(label)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "otp_breaker_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (label, report) in &reports {
            ConstGauge::new(report.breaker.state.as_gauge())
                .encode(metric.encode_family(label)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "otp_in_flight",
            "Requests to the instance in flight",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (label, report) in &reports {
            ConstGauge::new(report.in_flight as i64).encode(metric.encode_family(label)?)?;
        }
        // Summed over the replicas sharing a database, 1 per instance: one refreshes it.
        let mut metric = encoder.encode_descriptor(
            "refresh_lease_held",
            "1 while this replica holds the instance's refresh lease (refreshes it from upstream), else 0",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for ((label, _), instance) in reports.iter().zip(&self.0) {
            let held = instance.role() == Some(crate::otp::instance::RefreshRole::Holder);
            ConstGauge::new(i64::from(held)).encode(metric.encode_family(label)?)?;
        }
        Ok(())
    }
}

/// Route cache figures, read at scrape time.
#[derive(Debug)]
struct CacheCollector(RouteCache);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Collectors are synchronous; the figures moka keeps lag a little without
        // `run_pending_tasks`, which /memory-stats runs.
        let s = self.0.stats_now();
        let counters = [
            (
                "route_cache_hits",
                "Route lookups answered fresh from the cache",
                s.hits,
            ),
            (
                "route_cache_misses",
                "Route lookups that built the answer",
                s.misses,
            ),
            (
                "route_cache_stale",
                "Route lookups answered with a stale entry",
                s.stale,
            ),
            (
                "route_cache_evictions",
                "Entries evicted to stay within cache_max_bytes",
                s.evictions,
            ),
        ];
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            ConstCounter::new(value).encode(metric)?;
        }
        let gauges = [
            (
                "route_cache_entries",
                "Entries in the route cache",
                s.entries as f64,
            ),
            (
                "route_cache_bytes",
                "Weighted size of the route cache in bytes",
                s.weighted_bytes as f64,
            ),
            (
                "route_cache_max_bytes",
                "Bound of the route cache (cache_max_bytes)",
                s.max_bytes as f64,
            ),
            (
                "route_cache_hit_ratio",
                "Share of lookups answered from the cache",
                s.hit_ratio,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(value).encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    feed: String,
    instance: String,
}

/// Per feed, what operators alert on, read at scrape time: when it last refreshed well,
/// how old the data it serves is, whether its last refresh failed, and its instance's
/// `refresh_interval` (with the same labels, so an alert can divide the time since the
/// last success by it without joining on labels).
#[derive(Debug)]
struct FeedCollector {
    feeds: Arc<FeedStore>,
    /// `refresh_interval` in seconds by instance name.
    intervals: std::collections::HashMap<String, f64>,
}

impl Collector for FeedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = jiff::Timestamp::now();
        let feeds: Vec<_> = self
            .feeds
            .all()
            .into_iter()
            .map(|f| {
                let label = FeedLabels {
                    feed: f.gtfs_id.clone(),
                    instance: f.instance.clone(),
                };
                let interval = self.intervals.get(&f.instance).copied();
                let fetched = f.current().map(|c| c.fetched_at);
                (label, f.status(), fetched, interval)
            })
            .collect();
        type Pick = fn(
            &crate::feed::store::FeedStatus,
            Option<jiff::Timestamp>,
            jiff::Timestamp,
            Option<f64>,
        ) -> Option<f64>;
        let gauges: [(&str, &str, Pick); 4] = [
            (
                "feed_last_success_timestamp_seconds",
                "Unix time of the feed's last successful refresh (updated or unchanged); \
                 absent before the first",
                |s, _, _, _| {
                    s.last_success_at
                        .map(|t| t.as_millisecond() as f64 / 1000.0)
                },
            ),
            (
                "feed_data_age_seconds",
                "Seconds since the version served was fetched (unchanged refreshes do not \
                 reset it); absent while nothing is served",
                |_, fetched, now, _| {
                    fetched.map(|t| (now.as_millisecond() - t.as_millisecond()) as f64 / 1000.0)
                },
            ),
            (
                "feed_last_refresh_failed",
                "1 when the feed's last refresh failed (the last good data is still served)",
                |s, _, _, _| {
                    Some(match (s.last_error_at, s.last_success_at) {
                        (Some(e), Some(ok)) if e <= ok => 0.0,
                        (Some(_), _) => 1.0,
                        (None, _) => 0.0,
                    })
                },
            ),
            (
                "feed_refresh_interval_seconds",
                "The refresh_interval of the feed's instance (alerts compare the time since \
                 the last success with it)",
                |_, _, _, interval| interval,
            ),
        ];
        for (name, help, pick) in gauges {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (label, status, fetched, interval) in &feeds {
                if let Some(value) = pick(status, *fetched, now, *interval) {
                    ConstGauge::new(value).encode(metric.encode_family(label)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP x_requests Requests.\n# TYPE x_requests counter\n\
                  x_requests_total{a=\"b\"} 3\n# HELP x_age Age.\n# TYPE x_age gauge\n\
                  # UNIT x_age seconds\nx_age 1.5\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
             x_requests_total{a=\"b\"} 3\n# HELP x_age Age.\n# TYPE x_age gauge\nx_age 1.5\n"
        );
    }

    #[test]
    fn log_format_follows_stderr_unless_told() {
        use LogFormat::*;
        assert_eq!(LogFormat::choose(None, true), Ok(Text { ansi: true }));
        assert_eq!(LogFormat::choose(None, false), Ok(Json));
        assert_eq!(LogFormat::choose(Some(""), false), Ok(Json));
        assert_eq!(LogFormat::choose(Some("json"), true), Ok(Json));
        assert_eq!(LogFormat::choose(Some(" JSON "), false), Ok(Json));
        // Text into a file or pipe: never ANSI escapes.
        assert_eq!(
            LogFormat::choose(Some("text"), false),
            Ok(Text { ansi: false })
        );
        assert_eq!(
            LogFormat::choose(Some("Text"), true),
            Ok(Text { ansi: true })
        );
        let err = LogFormat::choose(Some("jsno"), true).unwrap_err();
        assert_eq!(err.key, "GTFS_LOG_FORMAT");
        assert!(err.problem.contains("\"jsno\""), "{err}");
    }

    #[test]
    fn postgres_notices_stay_below_info_unless_asked_for() {
        let shown = |rust_log: Option<&str>| {
            let text = log_filter(rust_log).to_string();
            !text.contains("sqlx::postgres::notice=warn")
        };
        assert!(!shown(None));
        assert!(!shown(Some("info")));
        assert!(!shown(Some("debug,tower_http=warn")));
        assert!(shown(Some("info,sqlx=info")));
    }
}
