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
//!
//! The folder, each file importing only those listed after it:
//! - this file: the `settings!` table, [`Config`] (parse and load) and the check of
//!   environment variables;
//! - `shown`: [`EffectiveConfig`], the configuration as `GET /config` shows it;
//! - `instance`: `[[instances]]` and their feeds, read and validated;
//! - `cors`: the CORS keys' lists (origins, methods, header names), each entry checked;
//! - `replica`: `replica_id`, the name a replica goes by among those sharing a database;
//! - `value`: how one value is read, checked, layered and refused; the `bounds`;
//! - `keys`: unknown keys, and the name probably meant;
//! - `types`: what they all share: [`ConfigError`], [`Secret`], [`DatabaseUrl`].

mod cors;
mod instance;
mod keys;
mod replica;
mod shown;
mod types;
mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

pub use cors::{HeaderNames, Methods, Origins};
pub use instance::{Api, FeedSource, Instance};
pub use replica::ReplicaId;
pub use shown::{EffectiveConfig, InstanceConfig, ZipFeedConfig};
pub use types::{ConfigError, DatabaseUrl, REDACTED, Secret};

use instance::read_instances;
use keys::{closest, typo_limit, unknown_key};
use value::{Range, Setting, bounds, layer};

/// The file read when neither `--config` nor `GTFS_CONFIG` names one.
pub const DEFAULT_FILE: &str = "config/default.toml";

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
            pub fn shown(&self) -> EffectiveConfig {
                EffectiveConfig {
                    $( $key: Setting::show(&self.$key), )*
                    instances: self.instances.iter().map(InstanceConfig::from).collect(),
                }
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
    /// Memory one feed build may hold beyond the zip (what it reads, the rows it folds);
    /// a feed that needs more is refused and the last good snapshot stays.
    max_build_bytes: u64 = 2_147_483_648, "GTFS_MAX_BUILD_BYTES", bounds::BYTES;
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
    /// Versions of each feed kept in the database's feed store (the current one
    /// included); older ones are deleted, except those a live waybill was checked against.
    feed_versions_kept: u32 = 3, "GTFS_FEED_VERSIONS_KEPT", Range::count(1, 1000);
    /// This replica's name among the replicas sharing the database (who holds an
    /// instance's refresh lease); unset: host name, process id and a random suffix,
    /// made at start-up.
    replica_id: Option<ReplicaId> = None, "GTFS_REPLICA_ID", ();
    /// On SIGTERM/SIGINT, /readyz answers 503 for this long before the listener closes.
    shutdown_drain: Duration = Duration::ZERO, "GTFS_SHUTDOWN_DRAIN", bounds::SECONDS;
    /// Longest wait for requests in flight to finish once the listener is closed.
    shutdown_timeout: Duration = Duration::from_secs(30), "GTFS_SHUTDOWN_TIMEOUT", bounds::POSITIVE_SECONDS;
    /// Origins whose browser scripts may call the API (CORS); empty: no CORS headers at
    /// all, and no CORS layer.
    cors_allowed_origins: Origins = Origins::default(), "GTFS_CORS_ALLOWED_ORIGINS", ();
    /// Methods a CORS preflight allows.
    cors_allowed_methods: Methods = Methods::new(&[http::Method::GET, http::Method::HEAD, http::Method::POST, http::Method::PATCH]), "GTFS_CORS_ALLOWED_METHODS", ();
    /// Request headers a CORS preflight allows.
    cors_allowed_headers: HeaderNames = HeaderNames::from_static(&CORS_DEFAULT_HEADERS), "GTFS_CORS_ALLOWED_HEADERS", ();
    /// How long a browser may keep a preflight's answer (`Access-Control-Max-Age`, whole
    /// seconds).
    cors_max_age: Duration = Duration::from_secs(600), "GTFS_CORS_MAX_AGE", bounds::SECONDS;
}

/// The request headers the API reads, allowed to scripts by default.
const CORS_DEFAULT_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "if-match",
    "if-none-match",
    "traceparent",
    "x-request-id",
];

impl Config {
    /// [`Config::shown`] as a JSON value (keys sorted), for `gtfs-fetch config`.
    pub fn to_redacted_json(&self) -> Json {
        // Strings, numbers, booleans and string-keyed maps always serialize.
        serde_json::to_value(self.shown()).unwrap_or_default()
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
    fn every_default_is_within_its_range() {
        // Each default, written as its variable, passes the variable's own check.
        let defaults = Config::default().to_redacted_json();
        for (key, var) in KEYS {
            let text = match &defaults[key] {
                Json::Null => continue,
                Json::String(s) => s.clone(),
                Json::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            Config::parse(None, |v| (v == *var).then(|| text.clone()))
                .unwrap_or_else(|e| panic!("default of {key} as {var}={text}: {e}"));
        }
    }

    #[test]
    fn variables_suggest_near_misses_only() {
        let warn = |name: &str| unknown_variables([name]).join("\n");
        assert!(
            warn("GTFS_DB_MAX_CONNECTIONS").ends_with("did you mean WAYBILLS_DB_MAX_CONNECTIONS?")
        );
        assert!(warn("GTFS_CONFIG_FILE").ends_with("did you mean GTFS_CONFIG?"));
        assert!(!warn("GTFS_WHATEVER").contains("did you mean"));
    }
}
