//! Typed configuration: built-in defaults, then a TOML file, then the environment.
//!
//! [`Config::parse`] is a pure function: it takes the file's text and a lookup for
//! environment variables, so tests exercise every layer without touching the process
//! environment. [`Config::load`] is the thin impure wrapper `main` uses.
//!
//! The flat tuning keys keep the names (and environment variables) of the system this
//! service replaces, so its runbooks (`curl -s localhost:8000/config | jq .connection_limit`)
//! keep working. They are declared once, in the `settings!` table below; that table
//! generates the struct fields, the file and environment layering and the JSON shown by
//! `GET /config`. Durations are seconds; fractions are allowed; every number has a range
//! (the `bounds` module), and a value outside it is "out of range", however large.
//!
//! Errors name the key as written (`instances[1] ("bart").urll`) and suggest the key
//! probably meant. [`unknown_variables`] finds `GTFS_*` / `WAYBILLS_DB_*` variables that
//! are not ours to read; [`Config::load`] prints a warning for each.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value as Json, json};
use url::Url;

/// The file read when neither `--config` nor `GTFS_CONFIG` names one.
pub const DEFAULT_FILE: &str = "config/default.toml";

/// Shown instead of a secret.
pub const REDACTED: &str = "***";

/// A configuration problem: which key or variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    /// The file key (`connection_limit`, `instances[1].url`), the environment variable
    /// (`GTFS_CONNECTION_LIMIT`) or the file name for a syntax error.
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// A string that never shows itself in `Debug` output or in `GET /config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A PostgreSQL connection URL; its password is redacted wherever it is shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Url);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
    /// The URL with its password (and any `password` query parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some(REDACTED));
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        REDACTED.into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a value was refused; [`layer`] puts the key and the value in front of it.
enum Refused {
    /// Not the kind of value the key takes ([`Setting::EXPECTED`] says which).
    Kind,
    /// A number, but outside the key's range.
    Range(Range),
}

/// The numbers a numeric key accepts, both ends included, in the key's own unit.
///
/// Every count, size and duration has an upper bound: a typo such as
/// `GTFS_CONNECTION_LIMIT=99999999999` or `1e30` is refused at start-up, saying the range,
/// instead of turning into a pool nobody can open or a timer that overflows.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: f64,
    max: f64,
    unit: &'static str,
}

impl Range {
    /// Whole numbers from `min` to `max`.
    const fn count(min: u64, max: u64) -> Self {
        Range {
            min: min as f64,
            max: max as f64,
            unit: "",
        }
    }
    /// Seconds from `min` to `max`.
    const fn seconds(min: f64, max: f64) -> Self {
        Range {
            min,
            max,
            unit: " seconds",
        }
    }
    fn contains(&self, n: f64) -> bool {
        self.min <= n && n <= self.max
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from {} to {}{}", self.min, self.max, self.unit)
    }
}

/// Bounds shared by several keys (README, "Configuration", lists them per key).
mod bounds {
    use super::Range;

    /// One week: longer than any sensible timeout, interval or lifetime.
    pub const WEEK: f64 = 7.0 * 24.0 * 3600.0;
    /// Durations where 0 means "none".
    pub const SECONDS: Range = Range::seconds(0.0, WEEK);
    /// Durations that must not be 0: at least a millisecond (the finest unit used).
    pub const POSITIVE_SECONDS: Range = Range::seconds(0.001, WEEK);
    /// Connections (per OTP host, or in the database pool): far above what one process
    /// can use, far below what exhausts file descriptors by accident.
    pub const CONNECTIONS: Range = Range::count(1, 10_000);
    /// Byte sizes: 1 TiB.
    pub const BYTES: Range = Range::count(1, 1 << 40);
}

/// A number as written in the file: TOML integers and floats alike.
fn toml_number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A number as written in a variable (`50`, `0.25`, `1e30`).
fn text_number(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

/// A whole number within `range` (whole floats such as `50.0` included); a number
/// outside it, however large, is out of range rather than "not a number".
fn whole<T: TryFrom<u64>>(n: Option<f64>, range: Range) -> Result<T, Refused> {
    let n = n.filter(|n| !n.is_nan()).ok_or(Refused::Kind)?;
    if !range.contains(n) {
        return Err(Refused::Range(range));
    }
    if n.fract() != 0.0 {
        return Err(Refused::Kind);
    }
    // In range, so 0 <= n <= 2^53: exact as a u64.
    T::try_from(n as u64).map_err(|_| Refused::Range(range))
}

/// A number of seconds within `range`.
fn seconds(n: Option<f64>, range: Range) -> Result<Duration, Refused> {
    let n = n.filter(|n| !n.is_nan()).ok_or(Refused::Kind)?;
    if !range.contains(n) {
        return Err(Refused::Range(range));
    }
    Duration::try_from_secs_f64(n).map_err(|_| Refused::Range(range))
}

/// How a value is read from the file and from the environment, and shown in `/config`.
trait Setting: Sized {
    /// What the value should be, for error messages.
    const EXPECTED: &'static str;
    /// What is allowed beyond the type: a [`Range`] for numbers, `()` for the rest.
    type Allowed: Copy;
    fn from_toml(value: &toml::Value, allowed: Self::Allowed) -> Result<Self, Refused>;
    fn from_env(text: &str, allowed: Self::Allowed) -> Result<Self, Refused>;
    fn to_json(&self) -> Json;
}

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            const EXPECTED: &'static str = "a whole number";
            type Allowed = Range;
            fn from_toml(value: &toml::Value, range: Range) -> Result<Self, Refused> {
                whole(toml_number(value), range)
            }
            fn from_env(text: &str, range: Range) -> Result<Self, Refused> {
                whole(text_number(text), range)
            }
            fn to_json(&self) -> Json {
                json!(self)
            }
        }
    )*};
}
integer_setting!(u32, u64, usize);

impl Setting for Duration {
    const EXPECTED: &'static str = "a number of seconds (fractions allowed)";
    type Allowed = Range;
    fn from_toml(value: &toml::Value, range: Range) -> Result<Self, Refused> {
        seconds(toml_number(value), range)
    }
    fn from_env(text: &str, range: Range) -> Result<Self, Refused> {
        seconds(text_number(text), range)
    }
    fn to_json(&self) -> Json {
        json!(self.as_secs_f64())
    }
}

impl Setting for SocketAddr {
    const EXPECTED: &'static str = "an address and port such as 0.0.0.0:8000";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        text.trim().parse().map_err(|_| Refused::Kind)
    }
    fn to_json(&self) -> Json {
        json!(self.to_string())
    }
}

impl Setting for PathBuf {
    const EXPECTED: &'static str = "a non-empty path";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        (!text.is_empty())
            .then(|| PathBuf::from(text))
            .ok_or(Refused::Kind)
    }
    fn to_json(&self) -> Json {
        json!(self.display().to_string())
    }
}

impl Setting for Secret {
    const EXPECTED: &'static str = "a non-empty string";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        (!text.is_empty())
            .then(|| Secret(text.to_owned()))
            .ok_or(Refused::Kind)
    }
    fn to_json(&self) -> Json {
        json!(REDACTED)
    }
}

impl Setting for DatabaseUrl {
    const EXPECTED: &'static str = "a URL such as postgres://user:password@host:5432/dbname";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        Url::parse(text.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "postgres" | "postgresql"))
            .map(DatabaseUrl)
            .ok_or(Refused::Kind)
    }
    fn to_json(&self) -> Json {
        json!(self.redacted())
    }
}

/// Optional settings: absent by default; an empty environment variable also means unset.
impl<T: Setting> Setting for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    type Allowed = T::Allowed;
    fn from_toml(value: &toml::Value, allowed: T::Allowed) -> Result<Self, Refused> {
        T::from_toml(value, allowed).map(Some)
    }
    fn from_env(text: &str, allowed: T::Allowed) -> Result<Self, Refused> {
        if text.is_empty() {
            Ok(None)
        } else {
            T::from_env(text, allowed).map(Some)
        }
    }
    fn to_json(&self) -> Json {
        self.as_ref().map_or(Json::Null, T::to_json)
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $key:ident : $ty:ty = $default:expr, $env:literal, $allowed:expr; )*) => {
        /// The effective configuration. Field docs say what each key means; the
        /// environment variable that overrides it is listed in `config/default.toml`.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $key: $ty, )*
            /// The OpenTripPlanner instances to pull from (`[[instances]]` in the file).
            pub instances: Vec<Instance>,
        }

        /// Every flat key with the environment variable that sets it.
        pub const KEYS: &[(&str, &str)] = &[ $( (stringify!($key), $env), )* ];

        impl Config {
            fn layer_flat(
                file: &mut toml::Table,
                env: &dyn Fn(&str) -> Option<String>,
            ) -> Result<Self, ConfigError> {
                Ok(Config {
                    $( $key: layer::<$ty>(stringify!($key), $env, $default, $allowed, file, env)?, )*
                    instances: Vec::new(),
                })
            }

            /// The configuration as shown by `GET /config` and `gtfs-fetch config`:
            /// flat keys at the top level, secrets as `***`.
            pub fn to_redacted_json(&self) -> Json {
                let mut map = serde_json::Map::new();
                $( map.insert(stringify!($key).into(), Setting::to_json(&self.$key)); )*
                map.insert(
                    "instances".into(),
                    self.instances.iter().map(Instance::to_redacted_json).collect(),
                );
                Json::Object(map)
            }
        }
    };
}

settings! {
    /// Address the HTTP API listens on.
    listen: SocketAddr = "0.0.0.0:8000".parse().unwrap(), "GTFS_LISTEN", ();
    /// Max idle pooled connections per OTP host, and max in-flight requests per host.
    connection_limit: usize = 50, "GTFS_CONNECTION_LIMIT", bounds::CONNECTIONS;
    /// Idle pooled connection lifetime; keep it below OTP's 30 s keep-alive timeout.
    http_pool_idle_timeout: Duration = Duration::from_secs(20), "GTFS_HTTP_POOL_IDLE_TIMEOUT", bounds::POSITIVE_SECONDS;
    /// TCP keepalive on client sockets.
    http_tcp_keepalive: Duration = Duration::from_secs(60), "GTFS_HTTP_TCP_KEEPALIVE", bounds::POSITIVE_SECONDS;
    /// Connect timeout towards OTP.
    http_connect_timeout: Duration = Duration::from_secs(2), "GTFS_HTTP_CONNECT_TIMEOUT", bounds::POSITIVE_SECONDS;
    /// Timeout of one try of one OTP request.
    http_request_timeout: Duration = Duration::from_secs(30), "GTFS_HTTP_REQUEST_TIMEOUT", bounds::POSITIVE_SECONDS;
    /// Longest a client request waits on OTP (every try of a read-through miss, with the
    /// backoff between them); past it the request answers 503 and the call is dropped.
    read_deadline: Duration = Duration::from_secs(10), "GTFS_READ_DEADLINE", bounds::POSITIVE_SECONDS;
    /// Extra tries for idempotent requests, within a retry budget.
    retry_attempts: u32 = 2, "GTFS_RETRY_ATTEMPTS", Range::count(0, 10);
    /// Base of the jittered exponential backoff between tries.
    retry_delay: Duration = Duration::from_secs(1), "GTFS_RETRY_DELAY", bounds::SECONDS;
    /// Minimum spacing between crawl requests to one instance.
    rate_limit_delay: Duration = Duration::from_millis(50), "GTFS_RATE_LIMIT_DELAY", bounds::SECONDS;
    /// Consecutive failures that open an instance's circuit breaker.
    breaker_failures: u32 = 5, "GTFS_BREAKER_FAILURES", Range::count(1, 1_000_000);
    /// First open period of a breaker; grows with jitter, capped.
    breaker_open: Duration = Duration::from_secs(30), "GTFS_BREAKER_OPEN", bounds::POSITIVE_SECONDS;
    /// Route cache bound in bytes (entries weighted by serialized size).
    cache_max_bytes: u64 = 268_435_456, "GTFS_CACHE_MAX_BYTES", bounds::BYTES;
    /// Freshness of a read-through cache entry.
    cache_ttl: Duration = Duration::from_secs(3600), "GTFS_CACHE_TTL", bounds::POSITIVE_SECONDS;
    /// Larger feed downloads are refused.
    max_feed_bytes: u64 = 536_870_912, "GTFS_MAX_FEED_BYTES", bounds::BYTES;
    /// Where the embedded PostgreSQL keeps its files.
    data_dir: PathBuf = PathBuf::from("./data"), "GTFS_DATA_DIR", ();
    /// PostgreSQL URL; unset: an embedded local PostgreSQL under `data_dir`.
    database_url: Option<DatabaseUrl> = None, "DATABASE_URL", ();
    /// Upper bound of the database pool.
    db_max_connections: u32 = 20, "WAYBILLS_DB_MAX_CONNECTIONS", bounds::CONNECTIONS;
    /// Connections opened at start-up (pre-warmed) and kept open.
    db_min_connections: u32 = 5, "WAYBILLS_DB_MIN_CONNECTIONS", Range::count(0, 10_000);
    /// How long a request waits for a pooled database connection.
    db_acquire_timeout: Duration = Duration::from_secs(5), "WAYBILLS_DB_ACQUIRE_TIMEOUT", bounds::POSITIVE_SECONDS;
    /// Idle database connections above the minimum are closed after this.
    db_idle_timeout: Duration = Duration::from_secs(300), "WAYBILLS_DB_IDLE_TIMEOUT", bounds::POSITIVE_SECONDS;
    /// A database connection is replaced after this age.
    db_max_lifetime: Duration = Duration::from_secs(1800), "WAYBILLS_DB_MAX_LIFETIME", bounds::POSITIVE_SECONDS;
    /// When set, writes need `Authorization: Bearer <api_token>`.
    api_token: Option<Secret> = None, "GTFS_API_TOKEN", ();
    /// When set, ops endpoints accept non-loopback clients that send it as a bearer token.
    ops_token: Option<Secret> = None, "GTFS_OPS_TOKEN", ();
    /// Minimum spacing between two manual refreshes of one instance (`POST
    /// /instances/{name}/refresh`; sooner is a 429); 0: none.
    refresh_min_spacing: Duration = Duration::from_secs(10), "GTFS_REFRESH_MIN_SPACING", bounds::SECONDS;
    /// Days a `feed_fetch` row is kept; older ones are deleted hourly.
    feed_fetch_retention_days: u32 = 30, "GTFS_FEED_FETCH_RETENTION_DAYS", Range::count(1, 36_500);
    /// On SIGTERM/SIGINT, /readyz answers 503 for this long before the listener closes.
    shutdown_drain: Duration = Duration::ZERO, "GTFS_SHUTDOWN_DRAIN", bounds::SECONDS;
    /// Longest wait for requests in flight to finish once the listener is closed.
    shutdown_timeout: Duration = Duration::from_secs(30), "GTFS_SHUTDOWN_TIMEOUT", bounds::POSITIVE_SECONDS;
}

/// One flat key: the default, overridden by the file, overridden by the environment.
fn layer<T: Setting>(
    key: &str,
    var: &str,
    default: T,
    allowed: T::Allowed,
    file: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let mut value = default;
    if let Some(raw) = file.remove(key) {
        value = T::from_toml(&raw, allowed)
            .map_err(|why| ConfigError::new(key, refusal::<T>(&shown(&raw), why)))?;
    }
    if let Some(text) = env(var) {
        value = T::from_env(&text, allowed)
            .map_err(|why| ConfigError::new(var, refusal::<T>(&format!("{text:?}"), why)))?;
    }
    Ok(value)
}

/// A file value as it appears in messages: TOML prints `1e30` as thirty-one digits.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(f) if f.abs() >= 1e15 => format!("{f:e}"),
        other => other.to_string(),
    }
}

/// `"lots" is not a whole number`, `1e30 is out of range: must be from 1 to 10000`.
fn refusal<T: Setting>(shown: &dyn fmt::Display, why: Refused) -> String {
    match why {
        Refused::Kind => format!("{shown} is not {}", T::EXPECTED),
        Refused::Range(range) => format!("{shown} is out of range: must be {range}"),
    }
}

/// Which API an OTP instance speaks: `otp2` (GraphQL), `otp1` (REST index), `gtfs` (zips
/// only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = InstanceApi)]
pub enum Api {
    /// OTP 2's GTFS GraphQL API.
    Otp2,
    /// OTP 1's REST index API.
    Otp1,
    /// No OTP: only the configured GTFS zip feeds.
    Gtfs,
}

/// One `[[instances]]` table.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique, `[a-z0-9-]+`; used in URLs, metrics and logs.
    pub name: String,
    pub url: Url,
    pub api: Api,
    /// OTP 1 router id.
    pub router: String,
    /// Path of OTP 2's GraphQL endpoint.
    pub graphql_path: String,
    pub refresh_interval: Duration,
    /// Sent on every request to this instance; values are secrets.
    pub headers: BTreeMap<String, Secret>,
    /// Crawl every route's detail after a refresh.
    pub prefetch_routes: bool,
    /// `/readyz` may say ready while this instance serves no feed (a new OTP with no data
    /// yet); by default an instance that serves nothing keeps the service unready.
    pub allow_empty: bool,
    pub feeds: Vec<FeedSource>,
}

/// One `[[instances.feeds]]` table: where the full static data of a feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSource {
    pub gtfs_id: String,
    /// An absolute URL, a path relative to the instance URL, or a local file path.
    pub zip_url: String,
}

impl Instance {
    fn to_redacted_json(&self) -> Json {
        json!({
            "name": self.name,
            "url": self.url.as_str(),
            "api": self.api,
            "router": self.router,
            "graphql_path": self.graphql_path,
            "refresh_interval": self.refresh_interval.as_secs_f64(),
            "headers": self.headers.keys().map(|k| (k.clone(), json!(REDACTED))).collect::<serde_json::Map<_, _>>(),
            "prefetch_routes": self.prefetch_routes,
            "allow_empty": self.allow_empty,
            "feeds": self.feeds.iter().map(|f| json!({"gtfs_id": f.gtfs_id, "zip_url": f.zip_url})).collect::<Vec<_>>(),
        })
    }
}

/// `[[instances]]` as written in the file, before validation. Its keys are checked first
/// by [`read_instances`] (which names the instance and suggests the key meant), so serde
/// never sees an unknown one; `deny_unknown_fields` stays as the backstop.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    url: String,
    #[serde(default = "default_api")]
    api: Api,
    #[serde(default = "default_router")]
    router: String,
    #[serde(default = "default_graphql_path")]
    graphql_path: String,
    /// Read like the flat duration keys, with the same messages.
    #[serde(default = "default_refresh_interval")]
    refresh_interval: toml::Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    prefetch_routes: bool,
    #[serde(default)]
    allow_empty: bool,
    /// `[[instances.feeds]]`, read one by one by [`read_instances`] so that an error
    /// names its index.
    #[serde(skip)]
    feeds: Vec<RawFeed>,
}

/// The keys an `[[instances]]` table may have.
fn instance_keys() -> impl Iterator<Item = &'static str> {
    field_names::<RawInstance>()
        .iter()
        .copied()
        .chain(["feeds"])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    gtfs_id: String,
    zip_url: String,
}

fn default_api() -> Api {
    Api::Otp2
}
fn default_router() -> String {
    "default".into()
}
fn default_graphql_path() -> String {
    "/otp/gtfs/v1".into()
}
fn default_refresh_interval() -> toml::Value {
    toml::Value::Integer(900)
}

/// How often an instance is refreshed: more than a millisecond, at most a week.
const REFRESH_INTERVAL: Range = bounds::POSITIVE_SECONDS;

impl RawInstance {
    fn validate(self, at: &str) -> Result<Instance, ConfigError> {
        let err = |field: &str, problem: String| ConfigError::new(format!("{at}.{field}"), problem);
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(err(
                "name",
                format!("{:?} must match [a-z0-9-]+", self.name),
            ));
        }
        let url = Url::parse(&self.url)
            .map_err(|e| err("url", format!("{:?} is not a valid URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(err(
                "url",
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    self.url
                ),
            ));
        }
        if !self.graphql_path.starts_with('/') {
            return Err(err(
                "graphql_path",
                format!("{:?} must start with /", self.graphql_path),
            ));
        }
        let valid_router = !self.router.is_empty()
            && self
                .router
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_router {
            return Err(err(
                "router",
                format!("{:?} must match [A-Za-z0-9_-]+", self.router),
            ));
        }
        let refresh_interval = Duration::from_toml(&self.refresh_interval, REFRESH_INTERVAL)
            .map_err(|why| {
                err(
                    "refresh_interval",
                    refusal::<Duration>(&shown(&self.refresh_interval), why),
                )
            })?;
        let mut headers = BTreeMap::new();
        for (name, value) in self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(err(
                    "headers",
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            }
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(err(
                    "headers",
                    format!("the value of {name:?} is not a valid HTTP header value"),
                ));
            }
            headers.insert(name, Secret(value));
        }
        let mut seen = HashSet::new();
        let mut feeds = Vec::new();
        for (i, feed) in self.feeds.into_iter().enumerate() {
            let at = format!("feeds[{i}]");
            if feed.gtfs_id.is_empty() || !seen.insert(feed.gtfs_id.clone()) {
                return Err(err(
                    &format!("{at}.gtfs_id"),
                    format!(
                        "{:?} must be non-empty and unique within the instance",
                        feed.gtfs_id
                    ),
                ));
            }
            if feed.zip_url.is_empty() {
                return Err(err(&format!("{at}.zip_url"), "must not be empty".into()));
            }
            // Anything else that is not http(s):// or file:// would be read as a path.
            let scheme = feed.zip_url.split_once("://").map(|(scheme, _)| scheme);
            if scheme.is_some_and(|s| !matches!(s, "http" | "https" | "file")) {
                return Err(err(
                    &format!("{at}.zip_url"),
                    format!(
                        "{:?}: only http://, https:// and file:// URLs, or paths",
                        feed.zip_url
                    ),
                ));
            }
            feeds.push(FeedSource {
                gtfs_id: feed.gtfs_id,
                zip_url: feed.zip_url,
            });
        }
        if self.api == Api::Gtfs && feeds.is_empty() {
            return Err(err(
                "feeds",
                "api = \"gtfs\" needs at least one [[instances.feeds]]".into(),
            ));
        }
        Ok(Instance {
            name: self.name,
            url,
            api: self.api,
            router: self.router,
            graphql_path: self.graphql_path,
            refresh_interval,
            headers,
            prefetch_routes: self.prefetch_routes,
            allow_empty: self.allow_empty,
            feeds,
        })
    }
}

/// The `[[instances]]` list: each table's keys checked (naming the instance and the key
/// probably meant), then read and validated.
fn read_instances(raw: toml::Value) -> Result<Vec<Instance>, ConfigError> {
    let toml::Value::Array(items) = raw else {
        return Err(ConfigError::new(
            "instances",
            "must be a list of [[instances]] tables",
        ));
    };
    let mut instances: Vec<Instance> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let toml::Value::Table(mut table) = item else {
            return Err(ConfigError::new(
                format!("instances[{i}]"),
                "must be an [[instances]] table",
            ));
        };
        // `instances[1] ("bart")`: the index finds the table, the name is what people know.
        let at = match table.get("name").and_then(toml::Value::as_str) {
            Some(name) => format!("instances[{i}] ({name:?})"),
            None => format!("instances[{i}]"),
        };
        check_keys(&at, &table, instance_keys)?;
        let raw_feeds = table.remove("feeds");
        let mut raw: RawInstance = toml::Value::Table(table)
            .try_into()
            .map_err(|e| ConfigError::new(&at, toml_problem(&e)))?;
        if let Some(feeds) = raw_feeds {
            raw.feeds = read_feeds(&at, feeds)?;
        }
        let instance = raw.validate(&at)?;
        if instances.iter().any(|other| other.name == instance.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("{:?} is used by another instance", instance.name),
            ));
        }
        instances.push(instance);
    }
    Ok(instances)
}

/// An instance's `[[instances.feeds]]` tables.
fn read_feeds(at: &str, raw: toml::Value) -> Result<Vec<RawFeed>, ConfigError> {
    let toml::Value::Array(items) = raw else {
        return Err(ConfigError::new(
            format!("{at}.feeds"),
            "must be a list of [[instances.feeds]] tables",
        ));
    };
    let feed_keys = || field_names::<RawFeed>().iter().copied();
    items
        .into_iter()
        .enumerate()
        .map(|(j, item)| {
            let at = format!("{at}.feeds[{j}]");
            let toml::Value::Table(table) = item else {
                return Err(ConfigError::new(at, "must be an [[instances.feeds]] table"));
            };
            check_keys(&at, &table, feed_keys)?;
            toml::Value::Table(table)
                .try_into()
                .map_err(|e| ConfigError::new(&at, toml_problem(&e)))
        })
        .collect()
}

/// Refuses the first key of `table` that is not one of `known()`, naming it as `at.key`.
fn check_keys<I: Iterator<Item = &'static str>>(
    at: &str,
    table: &toml::Table,
    known: impl Fn() -> I,
) -> Result<(), ConfigError> {
    match table.keys().find(|key| !known().any(|k| k == key.as_str())) {
        Some(key) => Err(unknown_key(format!("{at}.{key}"), key, known())),
        None => Ok(()),
    }
}

/// `urll: unknown key; did you mean "url"?`
fn unknown_key<'a>(
    shown: String,
    key: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> ConfigError {
    let problem = match closest(key, known, typo_limit(key)) {
        Some(meant) => format!("unknown key; did you mean {meant:?}?"),
        None => "unknown key".to_owned(),
    };
    ConfigError::new(shown, problem)
}

/// A serde error from reading a table, on one line (`... in `refresh_interval``).
fn toml_problem(e: &toml::de::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The candidate nearest to `word` by edit distance (ignoring case), when it is within
/// `limit` edits: near enough to be what was meant.
fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    limit: usize,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&word, &c.to_lowercase()), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// How many edits a typo of `word` may have: half its length, at least 2.
fn typo_limit(word: &str) -> usize {
    (word.chars().count() / 2).max(2)
}

/// The field names serde's derive gave `T` (a struct), read from the derive itself so
/// that the key checks and their suggestions never drift from the struct: serde passes
/// them to `Deserializer::deserialize_struct`, which this probe records and then fails.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs are probed"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

impl Default for Config {
    /// The built-in defaults, with no file and no environment.
    fn default() -> Self {
        Config::parse(None, |_| None).expect("built-in defaults are valid")
    }
}

impl Config {
    /// Builds the configuration from the file's text (with its name, for messages) and an
    /// environment lookup. Pure: reads nothing else.
    pub fn parse(
        file: Option<(&str, &str)>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some((name, text)) => text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::new(name, e.to_string().trim_end().to_owned()))?,
            None => toml::Table::new(),
        };
        let raw_instances = table.remove("instances");
        let mut config = Config::layer_flat(&mut table, &env)?;
        if let Some(key) = table.keys().next() {
            let known = KEYS.iter().map(|(key, _)| *key).chain(["instances"]);
            return Err(unknown_key(key.clone(), key, known));
        }
        if let Some(raw) = raw_instances {
            config.instances = read_instances(raw)?;
        }
        if config.db_min_connections > config.db_max_connections {
            return Err(ConfigError::new(
                "db_min_connections",
                format!(
                    "{} is more than db_max_connections ({})",
                    config.db_min_connections, config.db_max_connections
                ),
            ));
        }
        Ok(config)
    }

    /// Reads `path` (or [`DEFAULT_FILE`] when present) and the process environment.
    /// A file named explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (name, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        path.display().to_string(),
                        format!("cannot read the file: {e}"),
                    )
                })?;
                (path.display().to_string(), Some(text))
            }
            None => match std::fs::read_to_string(DEFAULT_FILE) {
                Ok(text) => (DEFAULT_FILE.to_owned(), Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (DEFAULT_FILE.to_owned(), None)
                }
                Err(e) => {
                    return Err(ConfigError::new(
                        DEFAULT_FILE,
                        format!("cannot read the file: {e}"),
                    ));
                }
            },
        };
        let config = Config::parse(text.as_deref().map(|t| (name.as_str(), t)), |var| {
            std::env::var(var).ok()
        })?;
        // Logging is set up after (and from) the configuration, so these go to stderr
        // directly, as configuration errors do.
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        for warning in unknown_variables(names.iter().map(String::as_str)) {
            eprintln!("gtfs-fetch: warning: {warning}");
        }
        Ok(config)
    }
}

/// Prefixes of the environment variables this service reads: a variable with one of them
/// is taken to be meant for it.
pub const ENV_PREFIXES: &[&str] = &["GTFS_", "WAYBILLS_DB_"];

/// Variables with those prefixes that are ours but not configuration keys, so
/// [`unknown_variables`] leaves them alone: the command line's, and the test and bench
/// scripts' (`GTFS_OTP_*` from `scripts/real-otp.sh`). Add new ones here.
pub const OTHER_VARIABLES: &[&str] = &[
    "GTFS_CONFIG",
    "GTFS_LOG_FORMAT",
    "GTFS_FETCH_BIN",
    "GTFS_OTP_*",
    // Build metadata (build.rs); cargo also sets them when it runs tests or `cargo run`.
    "GTFS_FETCH_GIT_SHA",
    "GTFS_FETCH_BUILD_DATE",
];

/// A warning for each name in `names` that looks like one of ours ([`ENV_PREFIXES`]) but
/// is neither a configuration variable ([`KEYS`]) nor in [`OTHER_VARIABLES`], naming the
/// variable probably meant. Pure; [`Config::load`] prints them.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let known = || {
        KEYS.iter()
            .map(|(_, var)| *var)
            .chain(OTHER_VARIABLES.iter().copied())
    };
    let is_known = |name: &str| {
        known().any(|k| match k.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == k,
        })
    };
    let mut warnings: Vec<String> = names
        .into_iter()
        .filter(|name| !is_known(name))
        .filter_map(|name| {
            let prefix = ENV_PREFIXES.iter().find(|p| name.starts_with(*p))?;
            Some((name, prefix))
        })
        .map(|(name, prefix)| {
            let known = known().filter(|k| !k.ends_with('*'));
            // The shared prefix would make any two names look alike: the allowance for
            // typos comes from the rest of the name.
            let limit = typo_limit(&name[prefix.len()..]);
            match closest(name, known, limit) {
                Some(meant) => format!(
                    "{name} is set but is not a configuration variable; did you mean {meant}?"
                ),
                None => format!(
                    "{name} is set but is not a configuration variable \
                     (config/default.toml lists them)"
                ),
            }
        })
        .collect();
    warnings.sort();
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_refused_as_not_a_number_or_as_out_of_range() {
        let limit = Range::count(1, 10_000);
        let count = |text: &str| whole::<usize>(text_number(text), limit);
        assert!(matches!(count("50"), Ok(50)));
        assert!(matches!(count("10000"), Ok(10_000)));
        assert!(
            matches!(count("50.0"), Ok(50)),
            "a whole float is a whole number"
        );
        for huge in ["1e30", "99999999999", "10001", "-1", "0", "inf", "-inf"] {
            assert!(matches!(count(huge), Err(Refused::Range(_))), "{huge}");
        }
        for bad in ["lots", "2.5", "NaN", "", "0x10"] {
            assert!(matches!(count(bad), Err(Refused::Kind)), "{bad}");
        }
        let secs = |text: &str| seconds(text_number(text), bounds::POSITIVE_SECONDS);
        assert_eq!(secs("0.25").ok(), Some(Duration::from_millis(250)));
        assert_eq!(secs("604800").ok(), Some(Duration::from_secs(604_800)));
        for huge in ["1e30", "604801", "0", "0.0001", "-1", "inf"] {
            assert!(matches!(secs(huge), Err(Refused::Range(_))), "{huge}");
        }
        assert!(matches!(secs("NaN"), Err(Refused::Kind)));
        // The TOML side reads integers and floats alike.
        assert!(matches!(
            whole::<u32>(toml_number(&toml::Value::Float(1e30)), limit),
            Err(Refused::Range(_))
        ));
        assert!(matches!(
            whole::<u32>(toml_number(&toml::Value::Integer(i64::MIN)), limit),
            Err(Refused::Range(_))
        ));
        assert!(matches!(
            whole::<u32>(toml_number(&toml::Value::String("5".into())), limit),
            Err(Refused::Kind)
        ));
    }

    #[test]
    fn ranges_say_their_ends_and_unit() {
        assert_eq!(bounds::CONNECTIONS.to_string(), "from 1 to 10000");
        assert_eq!(
            bounds::POSITIVE_SECONDS.to_string(),
            "from 0.001 to 604800 seconds"
        );
        assert_eq!(bounds::BYTES.to_string(), "from 1 to 1099511627776");
    }

    #[test]
    fn every_default_is_within_its_range() {
        // Each default, written as its variable, passes the variable's own check.
        let defaults = Config::default().to_redacted_json();
        for (key, var) in KEYS {
            let text = match &defaults[key] {
                Json::Null => continue,
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            Config::parse(None, |v| (v == *var).then(|| text.clone()))
                .unwrap_or_else(|e| panic!("default of {key} as {var}={text}: {e}"));
        }
    }

    #[test]
    fn suggestions_are_near_misses_only() {
        let keys = ["url", "name", "refresh_interval", "graphql_path"];
        let near = |word: &str| closest(word, keys, typo_limit(word));
        assert_eq!(near("urll"), Some("url"));
        assert_eq!(near("URL"), Some("url"));
        assert_eq!(near("refresh_intervall"), Some("refresh_interval"));
        assert_eq!(near("graphql"), None);
        assert_eq!(near("colour"), None);
        let warn = |name: &str| unknown_variables([name]).join("\n");
        assert!(
            warn("GTFS_DB_MAX_CONNECTIONS").ends_with("did you mean WAYBILLS_DB_MAX_CONNECTIONS?")
        );
        assert!(warn("GTFS_CONFIG_FILE").ends_with("did you mean GTFS_CONFIG?"));
        assert!(!warn("GTFS_WHATEVER").contains("did you mean"));
    }

    #[test]
    fn field_names_are_the_structs_own() {
        assert_eq!(field_names::<RawFeed>(), ["gtfs_id", "zip_url"]);
        let keys: Vec<_> = instance_keys().collect();
        for key in [
            "name",
            "url",
            "api",
            "router",
            "graphql_path",
            "refresh_interval",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        for key in ["headers", "prefetch_routes", "allow_empty", "feeds"] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert_eq!(keys.len(), 10, "{keys:?}");
    }
}
