//! `gtfs-fetch refresh`: refresh feeds now and say how it went, in words.
//!
//! By default it asks the running service, so that the service's own data is refreshed
//! (and the embedded database, which the service holds locked, is not needed here):
//!
//! 1. `GET {url}/instances`: the instances, and each one's count of finished refreshes;
//!    `GET {url}/feeds`: each feed's version before.
//! 2. `POST {url}/instances/{name}/refresh` for each selected instance, with
//!    `Authorization: Bearer` the configured `ops_token` (else `api_token`) when one is
//!    set. 202 `started` or `already_running`: the refresh to wait for is the next one to
//!    finish. 429 (spaced manual refreshes) or 401/403 fail that instance with the
//!    service's reason.
//! 3. `GET {url}/instances` every [`POLL_EVERY`] until the instance's `status.refreshes`
//!    has grown, for at most `--timeout` seconds (the refresh goes on in the service
//!    after that; `GET /instances` shows it).
//! 4. `GET {url}/feeds` again: each of the instance's feeds attempted by that refresh
//!    (`last_attempt_at` not before the instance's `last_started_at`) is `failed` (an
//!    error recorded since the attempt), `updated` (its version changed) or `unchanged`.
//!
//! `--url` defaults to the configured `listen` address (0.0.0.0 and :: are asked on
//! loopback). `--local` refreshes in this process instead, as a one-off without a
//! service; it starts the embedded database when `DATABASE_URL` is unset, so it cannot
//! run beside a service using the same `data_dir`. There, each zip download has a
//! progress bar that ends when the download does; checking and parsing the zip, and
//! reading and crawling an OTP instance's route index, are steps of their own. Log lines
//! are printed through the bars ([`BarWriter`]) so they do not tear them.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use jiff::Timestamp;
use serde_json::Value;
use url::Url;

use super::UsageError;
use crate::app::App;
use crate::config::{Api, Config};
use crate::db::fetches::{FeedOutcome, Outcome};
use crate::otp::instance::InstanceRuntime;
use crate::refresh::{self as refresher, RefreshSummary};
use crate::state::AppState;

/// How often the service is asked whether the refresh has finished.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Only this instance.
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// The running service to ask [default: http://<listen>, 0.0.0.0 as 127.0.0.1].
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    pub url: Option<Url>,
    /// Refresh in this process instead of asking the service (not beside a running
    /// service that uses the same embedded database).
    #[arg(long)]
    pub local: bool,
    /// Longest wait for each instance's refresh in the service, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
}

/// Writes log lines above the progress bars instead of through them.
pub struct BarWriter(pub MultiProgress);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub async fn run(config: Config, args: RefreshArgs, bars: MultiProgress) -> Result<()> {
    if let Some(name) = &args.instance
        && !config.instances.is_empty()
        && !config.instances.iter().any(|i| &i.name == name)
    {
        return Err(UsageError(format!(
            "no instance named {name:?} in the configuration (instances: {})",
            names(config.instances.iter().map(|i| i.name.as_str()))
        ))
        .into());
    }
    let failed = if args.local {
        if config.instances.is_empty() {
            return Err(UsageError(
                "no [[instances]] in the configuration: nothing to refresh".into(),
            )
            .into());
        }
        local(config, args.instance, &bars).await?
    } else {
        let url = match args.url {
            Some(url) => url,
            None => default_url(config.listen)?,
        };
        let token = config
            .ops_token
            .as_ref()
            .or(config.api_token.as_ref())
            .map(|t| t.expose().to_owned());
        Remote::new(url, token, Duration::from_secs(args.timeout))?
            .run(args.instance, &bars)
            .await?
    };
    if failed > 0 {
        anyhow::bail!("{failed} instance(s) did not refresh cleanly");
    }
    Ok(())
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// `http://<listen>`, asking loopback when the service listens on every address.
pub fn default_url(listen: SocketAddr) -> Result<Url> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Url::parse(&format!("http://{addr}")).context("the listen address does not make a URL")
}

/// A spinner on stderr (hidden when stderr is not a terminal).
fn spinner(bars: &MultiProgress, text: String) -> ProgressBar {
    let bar = bars.add(ProgressBar::new_spinner());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>16} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(text);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `1.2 MB`, `850 kB`, `312 B`.
fn size(bytes: u64) -> String {
    indicatif::DecimalBytes(bytes).to_string()
}

/// `1a2b3c4d5e6f`: enough of a sha256 to tell versions apart.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

// ---------------------------------------------------------------------------------
// Asking the running service
// ---------------------------------------------------------------------------------

struct Remote {
    base: Url,
    token: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
}

/// One feed as `GET /feeds` shows it.
#[derive(Debug, Clone, Default)]
struct FeedView {
    instance: String,
    version: Option<String>,
    counts: Option<Value>,
    last_attempt_at: Option<Timestamp>,
    last_error: Option<String>,
    last_error_at: Option<Timestamp>,
}

fn timestamp(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

impl Remote {
    fn new(mut base: Url, token: Option<String>, timeout: Duration) -> Result<Self> {
        // Paths are joined relative to the base, so a service behind a path prefix works.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base,
            token,
            timeout,
            http,
        })
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("bad --url {}", self.base))
    }

    /// A JSON document from the service; a non-2xx answer is an error with its detail.
    async fn get(&self, path: &str) -> Result<Value> {
        let url = self.url(path)?;
        let res = self.http.get(url.clone()).send().await.with_context(|| {
            format!(
                "cannot reach the service at {url} (is it running? --url, or --local without it)"
            )
        })?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .with_context(|| format!("{url}: the answer is not JSON"))?;
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}: {}", detail(&body));
        }
        Ok(body)
    }

    /// Every instance of the service, by name.
    async fn instances(&self) -> Result<Vec<Value>> {
        let body = self.get("instances").await?;
        Ok(body
            .get("instances")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    async fn instance(&self, name: &str) -> Result<Value> {
        self.instances()
            .await?
            .into_iter()
            .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
            .with_context(|| format!("instance {name:?} is gone from the service"))
    }

    /// The service's feeds, by `gtfs_id`.
    async fn feeds(&self) -> Result<HashMap<String, FeedView>> {
        let body = self.get("feeds").await?;
        let list = body
            .get("feeds")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(list
            .iter()
            .filter_map(|f| {
                let id = f.get("gtfs_id")?.as_str()?.to_owned();
                Some((
                    id,
                    FeedView {
                        instance: f.get("instance").and_then(text).unwrap_or_default(),
                        version: f.get("version").and_then(text),
                        counts: f.get("counts").filter(|c| !c.is_null()).cloned(),
                        last_attempt_at: f.get("last_attempt_at").and_then(timestamp),
                        last_error: f.get("last_error").and_then(text),
                        last_error_at: f.get("last_error_at").and_then(timestamp),
                    },
                ))
            })
            .collect())
    }

    /// Refreshes the selected instances one after the other; the count of failed ones.
    async fn run(&self, only: Option<String>, bars: &MultiProgress) -> Result<usize> {
        let instances = self.instances().await?;
        let available: Vec<&str> = instances
            .iter()
            .filter_map(|i| i.get("name").and_then(Value::as_str))
            .collect();
        let selected: Vec<String> = match &only {
            Some(name) if available.contains(&name.as_str()) => vec![name.clone()],
            Some(name) => {
                return Err(UsageError(format!(
                    "the service at {} has no instance named {name:?} (instances: {})",
                    self.base,
                    names(available.into_iter())
                ))
                .into());
            }
            None => available.iter().map(|s| (*s).to_owned()).collect(),
        };
        if selected.is_empty() {
            return Err(UsageError(format!(
                "the service at {} has no instances: nothing to refresh",
                self.base
            ))
            .into());
        }
        let mut failed = 0;
        for name in &selected {
            let bar = spinner(bars, name.clone());
            bar.set_message("refreshing in the service");
            let lines = match self.refresh(name).await {
                Ok(lines) => lines,
                Err(e) => vec![(false, format!("{name}: failed: {e:#}"))],
            };
            bar.finish_and_clear();
            if lines.iter().any(|(ok, _)| !ok) {
                failed += 1;
            }
            for (_, line) in lines {
                bars.suspend(|| println!("{line}"));
            }
        }
        Ok(failed)
    }

    /// One instance: ask, wait, read the outcome. Lines to print, each saying if it is ok.
    async fn refresh(&self, name: &str) -> Result<Vec<(bool, String)>> {
        let before = self.instance(name).await?;
        let refreshes = |i: &Value| {
            i.pointer("/status/refreshes")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let done_before = refreshes(&before);
        let feeds_before = self.feeds().await?;

        let url = self.url(&format!("instances/{name}/refresh"))?;
        let mut post = self.http.post(url.clone());
        if let Some(token) = &self.token {
            post = post.bearer_auth(token);
        }
        let res = post
            .send()
            .await
            .with_context(|| format!("cannot reach the service at {url}"))?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = res.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            202 => {}
            429 => anyhow::bail!(
                "not refreshed: {} (retry after {} s)",
                detail(&body),
                retry_after.as_deref().unwrap_or("?")
            ),
            401 | 403 => anyhow::bail!(
                "the service refused: {} (the token comes from ops_token or api_token, \
                 GTFS_OPS_TOKEN / GTFS_API_TOKEN)",
                detail(&body)
            ),
            _ => anyhow::bail!("{url} answered {status}: {}", detail(&body)),
        }

        let start = Instant::now();
        let after = loop {
            let now = self.instance(name).await?;
            if refreshes(&now) > done_before {
                break now;
            }
            if start.elapsed() >= self.timeout {
                anyhow::bail!(
                    "still running after {} s (it goes on in the service: GET /instances)",
                    self.timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        };
        let feeds_after = self.feeds().await?;
        Ok(outcomes(name, &after, &feeds_before, &feeds_after))
    }
}

/// The `detail` of a problem+json answer, else the body as text.
fn detail(body: &Value) -> String {
    match body.get("detail").and_then(Value::as_str) {
        Some(d) => d.to_owned(),
        None => body.to_string(),
    }
}

/// What a finished refresh of `name` did to each of its feeds, from the service's view
/// after it (and the versions before). Pure, so it is tested on its own.
fn outcomes(
    name: &str,
    instance: &Value,
    before: &HashMap<String, FeedView>,
    after: &HashMap<String, FeedView>,
) -> Vec<(bool, String)> {
    let started = instance
        .pointer("/status/last_started_at")
        .and_then(timestamp);
    let mut ids: Vec<&String> = after
        .iter()
        .filter(|(_, f)| f.instance == name)
        .filter(|(_, f)| match (f.last_attempt_at, started) {
            (Some(attempt), Some(started)) => attempt >= started,
            _ => false,
        })
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    let mut lines = Vec::new();
    for id in ids {
        let feed = &after[id];
        let failed = match (feed.last_error_at, feed.last_attempt_at) {
            (Some(error), Some(attempt)) => error >= attempt,
            _ => false,
        };
        let line = if failed {
            let why = feed.last_error.as_deref().unwrap_or("no reason recorded");
            format!("{name}/{id}: failed: {why}")
        } else {
            let version = feed.version.as_deref().map(short).unwrap_or("none");
            let previous = before.get(id).and_then(|f| f.version.as_deref());
            let word = if previous == feed.version.as_deref() {
                "unchanged"
            } else {
                "updated"
            };
            let routes = feed
                .counts
                .as_ref()
                .and_then(|c| c.get("routes"))
                .and_then(Value::as_u64)
                .map_or(String::new(), |n| format!(", {n} routes"));
            format!("{name}/{id}: {word}, version {version}{routes}")
        };
        lines.push((!failed, line));
    }
    let error = instance
        .pointer("/status/last_error")
        .and_then(Value::as_str);
    if let Some(error) = error
        && lines.iter().all(|(ok, _)| *ok)
    {
        // A failure that is no feed's (the instance's feed list could not be read).
        lines.push((false, format!("{name}: failed: {error}")));
    }
    if lines.is_empty() {
        lines.push((true, format!("{name}: no feeds")));
    }
    lines
}

// ---------------------------------------------------------------------------------
// Refreshing in this process (--local)
// ---------------------------------------------------------------------------------

/// The local refresh of the selected instances; the count of failed ones.
async fn local(config: Config, only: Option<String>, bars: &MultiProgress) -> Result<usize> {
    let app = App::start(config, false).await?;
    // Fetches are recorded in the database: have it ready first.
    if let Err(e) = app.state.db.prepare().await {
        tracing::warn!("the database is not ready, fetches will not be recorded: {e:#}");
    }
    let mut failed = 0;
    for instance in app
        .state
        .instances
        .iter()
        .filter(|i| only.as_ref().is_none_or(|n| n == i.name()))
    {
        let steps = Steps::new(bars.clone(), &app.state, instance);
        let progress = |gtfs_id: &str, done: u64, total: Option<u64>| {
            steps.downloaded(gtfs_id, done, total);
        };
        let refresh = refresher::refresh_instance(&app.state, instance, Some(&progress));
        tokio::pin!(refresh);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let summary = loop {
            tokio::select! {
                summary = &mut refresh => break summary,
                _ = tick.tick() => steps.watch(),
            }
        };
        steps.finish();
        if !summary.ok() {
            failed += 1;
        }
        for line in local_lines(&summary) {
            bars.suspend(|| println!("{line}"));
        }
    }
    app.stop().await?;
    Ok(failed)
}

/// The outcome of each feed of a local refresh, in words.
fn local_lines(summary: &RefreshSummary) -> Vec<String> {
    summary
        .feeds
        .iter()
        .map(|feed: &FeedOutcome| {
            let name = match &feed.gtfs_id {
                Some(id) => format!("{}/{id}", summary.instance),
                None => summary.instance.clone(),
            };
            let version = feed
                .version
                .as_deref()
                .map_or(String::new(), |v| format!(", version {}", short(v)));
            let bytes = feed
                .bytes
                .map_or(String::new(), |b| format!(", {}", size(b)));
            match feed.outcome {
                Outcome::Failed => format!(
                    "{name}: failed: {}",
                    feed.error.as_deref().unwrap_or("no reason recorded")
                ),
                o => format!("{name}: {}{version}{bytes}", o.as_str()),
            }
        })
        .collect()
}

/// The steps of one instance's local refresh, drawn as bars and spinners.
///
/// The refresh reports download progress only; the other steps are read from the
/// feeds' status as the refresh records it (polled by [`Steps::watch`]): a zip feed is
/// finished when it records a success or an error after its attempt began, and its
/// check-and-parse step lies between the end of its download and that moment. An OTP
/// instance's route index and crawl follow its zips; that step counts requests sent.
struct Steps<'a> {
    bars: MultiProgress,
    state: &'a AppState,
    instance: &'a InstanceRuntime,
    started: Timestamp,
    requests_before: u64,
    feeds: Mutex<HashMap<String, FeedSteps>>,
    crawl: Mutex<Option<ProgressBar>>,
}

#[derive(Default)]
struct FeedSteps {
    download: Option<ProgressBar>,
    parse: Option<ProgressBar>,
    finished: bool,
}

impl<'a> Steps<'a> {
    fn new(bars: MultiProgress, state: &'a AppState, instance: &'a InstanceRuntime) -> Self {
        Self {
            bars,
            state,
            instance,
            started: Timestamp::now(),
            requests_before: instance.client.report().requests_sent,
            feeds: Mutex::new(HashMap::new()),
            crawl: Mutex::new(None),
        }
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<String, FeedSteps>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A chunk of `gtfs_id`'s zip arrived; the bar ends when the announced size is in.
    fn downloaded(&self, gtfs_id: &str, done: u64, total: Option<u64>) {
        let mut feeds = self.feeds();
        let steps = feeds.entry(gtfs_id.to_owned()).or_default();
        if steps.finished || steps.parse.is_some() {
            return;
        }
        let bar = steps.download.get_or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(total.unwrap_or(0)));
            bar.set_style(
                ProgressStyle::with_template(
                    "  {prefix:>16} download {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(gtfs_id.to_owned());
            bar
        });
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
        if total == Some(done) {
            bar.finish();
            steps.parse = Some(self.parse_spinner(gtfs_id));
        }
    }

    fn parse_spinner(&self, gtfs_id: &str) -> ProgressBar {
        let bar = spinner(&self.bars, gtfs_id.to_owned());
        bar.set_message("check and parse");
        bar
    }

    /// Moves the steps on from what the feeds' status says.
    fn watch(&self) {
        let zips: Vec<&str> = self
            .instance
            .config
            .feeds
            .iter()
            .map(|f| f.gtfs_id.as_str())
            .collect();
        let mut all_done = true;
        {
            let mut feeds = self.feeds();
            for id in &zips {
                let status = self.state.feeds.get(id).map(|e| e.status());
                let attempt = status
                    .as_ref()
                    .and_then(|s| s.last_attempt_at)
                    .filter(|a| *a >= self.started);
                let finished = status.as_ref().is_some_and(|s| {
                    attempt.is_some_and(|a| {
                        s.last_success_at.is_some_and(|t| t >= a)
                            || s.last_error_at.is_some_and(|t| t >= a)
                    })
                });
                let steps = feeds.entry((*id).to_owned()).or_default();
                if finished && !steps.finished {
                    steps.finished = true;
                    // A download whose size was not announced ends here at the latest.
                    if let Some(bar) = &steps.download
                        && !bar.is_finished()
                    {
                        bar.finish();
                    }
                    if let Some(bar) = steps.parse.take() {
                        bar.finish_and_clear();
                    }
                }
                all_done &= steps.finished;
            }
        }
        if all_done && matches!(self.instance.config.api, Api::Otp1 | Api::Otp2) {
            let mut crawl = self.crawl.lock().unwrap_or_else(|e| e.into_inner());
            let bar = crawl.get_or_insert_with(|| {
                let bar = spinner(&self.bars, self.instance.name().to_owned());
                bar.set_message("route index and crawl");
                bar
            });
            let sent = self
                .instance
                .client
                .report()
                .requests_sent
                .saturating_sub(self.requests_before);
            bar.set_message(format!("route index and crawl: {sent} requests"));
        }
    }

    /// The refresh returned: every step is over.
    fn finish(&self) {
        for steps in self.feeds().values_mut() {
            if let Some(bar) = &steps.download
                && !bar.is_finished()
            {
                bar.finish();
            }
            if let Some(bar) = steps.parse.take() {
                bar.finish_and_clear();
            }
        }
        if let Some(bar) = self.crawl.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Option<Timestamp> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn outcomes_in_words() {
        let instance = json!({
            "name": "city",
            "status": { "refreshes": 3, "last_started_at": "2025-01-01T10:00:00Z", "last_error": null },
        });
        let feed = |version: &str, attempt: &str| FeedView {
            instance: "city".into(),
            version: Some(version.into()),
            counts: Some(json!({ "routes": 12 })),
            last_attempt_at: at(attempt),
            ..FeedView::default()
        };
        let before = HashMap::from([
            (
                "a".to_owned(),
                feed("aaaaaaaaaaaaaaaa", "2025-01-01T09:00:00Z"),
            ),
            (
                "b".to_owned(),
                feed("bbbbbbbbbbbbbbbb", "2025-01-01T09:00:00Z"),
            ),
            (
                "c".to_owned(),
                feed("cccccccccccccccc", "2025-01-01T09:00:00Z"),
            ),
        ]);
        let mut after = HashMap::from([
            (
                "a".to_owned(),
                feed("aaaaaaaaaaaaaaaa", "2025-01-01T10:00:01Z"),
            ),
            (
                "b".to_owned(),
                feed("dddddddddddddddd", "2025-01-01T10:00:02Z"),
            ),
            (
                "c".to_owned(),
                feed("cccccccccccccccc", "2025-01-01T10:00:03Z"),
            ),
            // Another instance's feed, and one this refresh did not try: not shown.
            (
                "x".to_owned(),
                FeedView {
                    instance: "other".into(),
                    ..feed("x", "2025-01-01T10:00:03Z")
                },
            ),
            ("old".to_owned(), feed("eeee", "2025-01-01T09:00:00Z")),
        ]);
        after.get_mut("c").unwrap().last_error = Some("HTTP 500".into());
        after.get_mut("c").unwrap().last_error_at = at("2025-01-01T10:00:04Z");
        let lines = outcomes("city", &instance, &before, &after);
        assert_eq!(
            lines,
            vec![
                (
                    true,
                    "city/a: unchanged, version aaaaaaaaaaaa, 12 routes".to_owned()
                ),
                (
                    true,
                    "city/b: updated, version dddddddddddd, 12 routes".to_owned()
                ),
                (false, "city/c: failed: HTTP 500".to_owned()),
            ]
        );

        // The feed list itself could not be read: the instance's error.
        let instance = json!({
            "status": { "last_started_at": "2025-01-01T10:00:00Z", "last_error": "cannot list the instance's feeds: refused" },
        });
        let lines = outcomes("city", &instance, &before, &HashMap::new());
        assert_eq!(
            lines,
            vec![(
                false,
                "city: failed: cannot list the instance's feeds: refused".to_owned()
            )]
        );
    }

    #[test]
    fn the_default_url_is_the_listen_address_on_loopback() {
        let url = |s: &str| default_url(s.parse().unwrap()).unwrap().to_string();
        assert_eq!(url("0.0.0.0:8000"), "http://127.0.0.1:8000/");
        assert_eq!(url("[::]:8000"), "http://[::1]:8000/");
        assert_eq!(url("10.1.2.3:9000"), "http://10.1.2.3:9000/");
    }
}
