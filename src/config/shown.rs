//! The effective configuration as `GET /config` and `gtfs-fetch config` show it: flat
//! keys at the top level, named as in `config/default.toml`, durations in seconds,
//! secrets as `***`.
//!
//! [`EffectiveConfig`] lists every flat key of the `settings!` table with the type its
//! [`super::value::Setting::show`] gives; the table fills it in
//! (`Config::shown`), so a key missing here, or shown with another type, does not compile.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::instance::{Api, FeedSource, Instance};
use super::types::REDACTED;

/// `GET /config`: every flat setting, then the instances. Durations are seconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EffectiveConfig {
    #[schema(example = "0.0.0.0:8000")]
    pub listen: String,
    pub connection_limit: u64,
    pub http_pool_idle_timeout: f64,
    pub http_tcp_keepalive: f64,
    pub http_connect_timeout: f64,
    pub http_request_timeout: f64,
    pub read_deadline: f64,
    pub retry_attempts: u32,
    pub retry_delay: f64,
    pub rate_limit_delay: f64,
    pub breaker_failures: u32,
    pub breaker_open: f64,
    pub cache_max_bytes: u64,
    pub cache_ttl: f64,
    pub max_feed_bytes: u64,
    /// Memory one feed build may hold beyond the zip.
    pub max_build_bytes: u64,
    pub data_dir: String,
    /// `null`: the embedded PostgreSQL. The password is `***`.
    #[schema(example = "postgres://app:***@db:5432/waybills")]
    pub database_url: Option<String>,
    pub db_max_connections: u32,
    pub db_min_connections: u32,
    pub db_acquire_timeout: f64,
    pub db_idle_timeout: f64,
    pub db_max_lifetime: f64,
    /// `***` when set.
    #[schema(example = "***")]
    pub api_token: Option<&'static str>,
    /// `***` when set.
    #[schema(example = "***")]
    pub ops_token: Option<&'static str>,
    /// Seconds between two manual refreshes of one instance.
    pub refresh_min_spacing: f64,
    pub feed_fetch_retention_days: u32,
    /// Versions of each feed kept in the feed store.
    pub feed_versions_kept: u32,
    /// This replica's id as configured; `null`: made at start-up (`GET /instances`
    /// shows the one in use).
    #[schema(example = "api-2")]
    pub replica_id: Option<String>,
    pub shutdown_drain: f64,
    pub shutdown_timeout: f64,
    /// Origins allowed to call from a browser (CORS); empty: none, no CORS headers.
    #[schema(example = json!(["https://dispatch.example"]))]
    pub cors_allowed_origins: Vec<String>,
    #[schema(example = json!(["GET", "HEAD", "POST", "PATCH"]))]
    pub cors_allowed_methods: Vec<String>,
    #[schema(example = json!(["content-type", "if-match"]))]
    pub cors_allowed_headers: Vec<String>,
    /// Seconds a browser may keep a preflight's answer.
    pub cors_max_age: f64,
    pub instances: Vec<InstanceConfig>,
}

/// One `[[instances]]` table.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceConfig {
    pub name: String,
    pub url: String,
    pub api: Api,
    /// OTP 1 router id.
    pub router: String,
    pub graphql_path: String,
    /// Seconds.
    pub refresh_interval: f64,
    /// Header names, each value `***`.
    #[schema(example = json!({"X-Api-Key": "***"}))]
    pub headers: BTreeMap<String, &'static str>,
    pub prefetch_routes: bool,
    /// `/readyz` may say ready while this instance serves no feed.
    pub allow_empty: bool,
    pub feeds: Vec<ZipFeedConfig>,
}

/// One `[[instances.feeds]]` table.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZipFeedConfig {
    pub gtfs_id: String,
    /// As configured: an absolute URL, a path under the instance's URL, or a local zip
    /// file or directory of GTFS `.txt` files.
    pub zip_url: String,
}

impl From<&Instance> for InstanceConfig {
    fn from(instance: &Instance) -> Self {
        Self {
            name: instance.name.clone(),
            url: instance.url.as_str().to_owned(),
            api: instance.api,
            router: instance.router.clone(),
            graphql_path: instance.graphql_path.clone(),
            refresh_interval: instance.refresh_interval.as_secs_f64(),
            headers: instance
                .headers
                .keys()
                .map(|k| (k.clone(), REDACTED))
                .collect(),
            prefetch_routes: instance.prefetch_routes,
            allow_empty: instance.allow_empty,
            feeds: instance.feeds.iter().map(ZipFeedConfig::from).collect(),
        }
    }
}

impl From<&FeedSource> for ZipFeedConfig {
    fn from(feed: &FeedSource) -> Self {
        Self {
            gtfs_id: feed.gtfs_id.clone(),
            zip_url: feed.zip_url.clone(),
        }
    }
}
