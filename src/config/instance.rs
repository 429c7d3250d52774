//! `[[instances]]` and `[[instances.feeds]]`: the OTP instances to pull from, read
//! table by table and validated, each error naming the instance.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::keys::{check_keys, field_names, toml_problem};
use super::types::{ConfigError, Secret};
use super::value::{Range, Setting, bounds, refusal, shown};

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
    /// An absolute URL, a path relative to the instance URL, or a local path: a zip
    /// file, or a directory of GTFS `.txt` files.
    pub zip_url: String,
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
            headers.insert(name, Secret::new(value));
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
pub(super) fn read_instances(raw: toml::Value) -> Result<Vec<Instance>, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
