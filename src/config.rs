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
//! `GET /config`. Durations are seconds; fractions are allowed.

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

/// How a value is read from the file and from the environment, and shown in `/config`.
trait Setting: Sized {
    /// What the value should be, for error messages.
    const EXPECTED: &'static str;
    fn from_toml(value: &toml::Value) -> Option<Self>;
    fn from_env(text: &str) -> Option<Self>;
    fn to_json(&self) -> Json;
}

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            const EXPECTED: &'static str = "a whole number, 0 or more";
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_integer().and_then(|i| <$t>::try_from(i).ok())
            }
            fn from_env(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
            fn to_json(&self) -> Json {
                json!(self)
            }
        }
    )*};
}
integer_setting!(u32, u64, usize);

impl Setting for Duration {
    const EXPECTED: &'static str = "a number of seconds, 0 or more (fractions allowed)";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        let secs = match value {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok()
    }
    fn from_env(text: &str) -> Option<Self> {
        let secs: f64 = text.trim().parse().ok()?;
        Duration::try_from_secs_f64(secs).ok()
    }
    fn to_json(&self) -> Json {
        json!(self.as_secs_f64())
    }
}

impl Setting for SocketAddr {
    const EXPECTED: &'static str = "an address and port such as 0.0.0.0:8000";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        Self::from_env(value.as_str()?)
    }
    fn from_env(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
    fn to_json(&self) -> Json {
        json!(self.to_string())
    }
}

impl Setting for PathBuf {
    const EXPECTED: &'static str = "a non-empty path";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        Self::from_env(value.as_str()?)
    }
    fn from_env(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| PathBuf::from(text))
    }
    fn to_json(&self) -> Json {
        json!(self.display().to_string())
    }
}

impl Setting for Secret {
    const EXPECTED: &'static str = "a non-empty string";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        Self::from_env(value.as_str()?)
    }
    fn from_env(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| Secret(text.to_owned()))
    }
    fn to_json(&self) -> Json {
        json!(REDACTED)
    }
}

impl Setting for DatabaseUrl {
    const EXPECTED: &'static str = "a URL such as postgres://user:password@host:5432/dbname";
    fn from_toml(value: &toml::Value) -> Option<Self> {
        Self::from_env(value.as_str()?)
    }
    fn from_env(text: &str) -> Option<Self> {
        let url = Url::parse(text.trim()).ok()?;
        matches!(url.scheme(), "postgres" | "postgresql").then_some(DatabaseUrl(url))
    }
    fn to_json(&self) -> Json {
        json!(self.redacted())
    }
}

/// Optional settings: absent by default; an empty environment variable also means unset.
impl<T: Setting> Setting for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_toml(value: &toml::Value) -> Option<Self> {
        T::from_toml(value).map(Some)
    }
    fn from_env(text: &str) -> Option<Self> {
        if text.is_empty() {
            Some(None)
        } else {
            T::from_env(text).map(Some)
        }
    }
    fn to_json(&self) -> Json {
        self.as_ref().map_or(Json::Null, T::to_json)
    }
}

/// Value checks used in the settings table.
mod check {
    use std::time::Duration;

    pub fn any<T>(_: &T) -> Result<(), &'static str> {
        Ok(())
    }
    pub fn positive_int<T: PartialEq + Default>(v: &T) -> Result<(), &'static str> {
        if *v == T::default() {
            Err("must be greater than 0")
        } else {
            Ok(())
        }
    }
    pub fn positive_secs(v: &Duration) -> Result<(), &'static str> {
        if v.is_zero() {
            Err("must be greater than 0 seconds")
        } else {
            Ok(())
        }
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $key:ident : $ty:ty = $default:expr, $env:literal, $check:path; )*) => {
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
                    $( $key: layer::<$ty>(stringify!($key), $env, $default, $check, file, env)?, )*
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
    listen: SocketAddr = "0.0.0.0:8000".parse().unwrap(), "GTFS_LISTEN", check::any;
    /// Max idle pooled connections per OTP host, and max in-flight requests per host.
    connection_limit: usize = 50, "GTFS_CONNECTION_LIMIT", check::positive_int;
    /// Idle pooled connection lifetime; keep it below OTP's 30 s keep-alive timeout.
    http_pool_idle_timeout: Duration = Duration::from_secs(20), "GTFS_HTTP_POOL_IDLE_TIMEOUT", check::positive_secs;
    /// TCP keepalive on client sockets.
    http_tcp_keepalive: Duration = Duration::from_secs(60), "GTFS_HTTP_TCP_KEEPALIVE", check::positive_secs;
    /// Connect timeout towards OTP.
    http_connect_timeout: Duration = Duration::from_secs(2), "GTFS_HTTP_CONNECT_TIMEOUT", check::positive_secs;
    /// Timeout of one try of one OTP request.
    http_request_timeout: Duration = Duration::from_secs(30), "GTFS_HTTP_REQUEST_TIMEOUT", check::positive_secs;
    /// Longest a client request waits on OTP (every try of a read-through miss, with the
    /// backoff between them); past it the request answers 503 and the call is dropped.
    read_deadline: Duration = Duration::from_secs(10), "GTFS_READ_DEADLINE", check::positive_secs;
    /// Extra tries for idempotent requests, within a retry budget.
    retry_attempts: u32 = 2, "GTFS_RETRY_ATTEMPTS", check::any;
    /// Base of the jittered exponential backoff between tries.
    retry_delay: Duration = Duration::from_secs(1), "GTFS_RETRY_DELAY", check::any;
    /// Minimum spacing between crawl requests to one instance.
    rate_limit_delay: Duration = Duration::from_millis(50), "GTFS_RATE_LIMIT_DELAY", check::any;
    /// Consecutive failures that open an instance's circuit breaker.
    breaker_failures: u32 = 5, "GTFS_BREAKER_FAILURES", check::positive_int;
    /// First open period of a breaker; grows with jitter, capped.
    breaker_open: Duration = Duration::from_secs(30), "GTFS_BREAKER_OPEN", check::positive_secs;
    /// Route cache bound in bytes (entries weighted by serialized size).
    cache_max_bytes: u64 = 268_435_456, "GTFS_CACHE_MAX_BYTES", check::positive_int;
    /// Freshness of a read-through cache entry.
    cache_ttl: Duration = Duration::from_secs(3600), "GTFS_CACHE_TTL", check::positive_secs;
    /// Larger feed downloads are refused.
    max_feed_bytes: u64 = 536_870_912, "GTFS_MAX_FEED_BYTES", check::positive_int;
    /// Where the embedded PostgreSQL keeps its files.
    data_dir: PathBuf = PathBuf::from("./data"), "GTFS_DATA_DIR", check::any;
    /// PostgreSQL URL; unset: an embedded local PostgreSQL under `data_dir`.
    database_url: Option<DatabaseUrl> = None, "DATABASE_URL", check::any;
    /// Upper bound of the database pool.
    db_max_connections: u32 = 20, "WAYBILLS_DB_MAX_CONNECTIONS", check::positive_int;
    /// Connections opened at start-up (pre-warmed) and kept open.
    db_min_connections: u32 = 5, "WAYBILLS_DB_MIN_CONNECTIONS", check::any;
    /// How long a request waits for a pooled database connection.
    db_acquire_timeout: Duration = Duration::from_secs(5), "WAYBILLS_DB_ACQUIRE_TIMEOUT", check::positive_secs;
    /// Idle database connections above the minimum are closed after this.
    db_idle_timeout: Duration = Duration::from_secs(300), "WAYBILLS_DB_IDLE_TIMEOUT", check::positive_secs;
    /// A database connection is replaced after this age.
    db_max_lifetime: Duration = Duration::from_secs(1800), "WAYBILLS_DB_MAX_LIFETIME", check::positive_secs;
    /// When set, writes need `Authorization: Bearer <api_token>`.
    api_token: Option<Secret> = None, "GTFS_API_TOKEN", check::any;
    /// When set, ops endpoints accept non-loopback clients that send it as a bearer token.
    ops_token: Option<Secret> = None, "GTFS_OPS_TOKEN", check::any;
    /// Minimum spacing between two manual refreshes of one instance (`POST
    /// /instances/{name}/refresh`; sooner is a 429); 0: none.
    refresh_min_spacing: Duration = Duration::from_secs(10), "GTFS_REFRESH_MIN_SPACING", check::any;
    /// Days a `feed_fetch` row is kept; older ones are deleted hourly.
    feed_fetch_retention_days: u32 = 30, "GTFS_FEED_FETCH_RETENTION_DAYS", check::positive_int;
    /// On SIGTERM/SIGINT, /readyz answers 503 for this long before the listener closes.
    shutdown_drain: Duration = Duration::ZERO, "GTFS_SHUTDOWN_DRAIN", check::any;
    /// Longest wait for requests in flight to finish once the listener is closed.
    shutdown_timeout: Duration = Duration::from_secs(30), "GTFS_SHUTDOWN_TIMEOUT", check::positive_secs;
}

/// One flat key: the default, overridden by the file, overridden by the environment.
fn layer<T: Setting>(
    key: &str,
    var: &str,
    default: T,
    check: fn(&T) -> Result<(), &'static str>,
    file: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let mut value = default;
    if let Some(raw) = file.remove(key) {
        value = T::from_toml(&raw)
            .ok_or_else(|| ConfigError::new(key, format!("{raw} is not {}", T::EXPECTED)))?;
        check(&value).map_err(|p| ConfigError::new(key, format!("{raw} {p}")))?;
    }
    if let Some(text) = env(var) {
        value = T::from_env(&text)
            .ok_or_else(|| ConfigError::new(var, format!("{text:?} is not {}", T::EXPECTED)))?;
        check(&value).map_err(|p| ConfigError::new(var, format!("{text:?} {p}")))?;
    }
    Ok(value)
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

/// `[[instances]]` as written in the file, before validation.
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
    #[serde(default = "default_refresh_interval")]
    refresh_interval: f64,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    prefetch_routes: bool,
    #[serde(default)]
    allow_empty: bool,
    #[serde(default)]
    feeds: Vec<RawFeed>,
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
fn default_refresh_interval() -> f64 {
    900.0
}

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
        let refresh_interval = Duration::try_from_secs_f64(self.refresh_interval)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                err(
                    "refresh_interval",
                    format!(
                        "{} must be a number of seconds greater than 0",
                        self.refresh_interval
                    ),
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
            return Err(ConfigError::new(key.clone(), "unknown key"));
        }
        if let Some(raw) = raw_instances {
            let raws: Vec<RawInstance> = raw.try_into().map_err(|e: toml::de::Error| {
                ConfigError::new("instances", e.message().to_owned())
            })?;
            let mut names = HashSet::new();
            for (i, raw) in raws.into_iter().enumerate() {
                let instance = raw.validate(&format!("instances[{i}]"))?;
                if !names.insert(instance.name.clone()) {
                    return Err(ConfigError::new(
                        format!("instances[{i}].name"),
                        format!("{:?} is used by another instance", instance.name),
                    ));
                }
                config.instances.push(instance);
            }
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
        Config::parse(text.as_deref().map(|t| (name.as_str(), t)), |var| {
            std::env::var(var).ok()
        })
    }
}
