//! # gtfs-fetch
//!
//! A back-office service for a transit operator: it pulls GTFS data from
//! OpenTripPlanner instances, keeps routes in memory, answers route queries and records
//! waybills in PostgreSQL. `../shared/DESIGN.md` (and the README) give the big picture;
//! this page is the map of the code.
//!
//! ## A tour, in the order a request meets the code
//!
//! - [`cli`]: the command line (`serve`, `migrate`, `config`, `refresh`, which asks the
//!   running service) and exit codes. `main.rs` only calls [`cli::run`]. [`build`]: the
//!   git commit and build date `build.rs` recorded.
//! - [`config`]: the typed [`config::Config`], layered defaults → TOML file → environment
//!   by a pure function, with one error naming the key at fault. Its `mod.rs` holds the
//!   table of flat keys and the environment check; `shown` is the typed
//!   [`config::EffectiveConfig`] that `GET /config` answers; `instance` reads
//!   `[[instances]]`, `cors` the CORS lists, `value` reads and checks one value, `keys`
//!   refuses unknown keys (suggesting the one meant) and `types` holds what they share
//!   ([`config::ConfigError`], the secrets).
//! - [`app`]: start and stop. [`app::App::start`] turns a config into a running
//!   application: database, scheduler, background tasks.
//! - [`state`]: [`state::AppState`], the one cheap-to-clone handle every handler and task
//!   gets, each field saying what it is for and who changes it.
//! - [`server`]: the listener (SO_REUSEADDR, TCP_NODELAY), the front service that answers
//!   fresh route detail cache hits before the router, and graceful shutdown.
//! - [`api`]: the HTTP API, one `router()` per area, one error type
//!   ([`api::ApiError`], problem+json), request ids, metrics and `Server-Timing`.
//!   - [`api::routes`]: the route query API, answered from the cache.
//!   - [`api::feeds`]: `/feeds`, `/feeds/{gtfs_id}/fetches`, `/instances` and manual
//!     refreshes.
//!   - [`api::waybills`]: the waybill API (create with its retries, read, list, status
//!     moves); the rules themselves (status moves, odometers) are in [`waybill`].
//!   - [`api::ops`]: `/healthz`, `/readyz`, `/config`, `/memory-stats`, `/metrics`.
//!   - the stack under the areas, which hold handlers only: [`api::extract`] (JSON
//!     bodies, typed query parameters refusing unknown ones, `If-Match`), [`api::auth`]
//!     (bearer tokens, the write token, the ops guard), [`api::idempotency`]
//!     (`Idempotency-Key` and the canonical JSON of a body), [`api::cursor`] (paging),
//!     [`api::error`] (problem+json, `From<sqlx::Error>`), [`api::timing`],
//!     [`api::negotiate`] (`Accept-Encoding` and `If-None-Match` for cached answers),
//!     [`api::openapi`] and [`api::problems`] (the error answers each endpoint documents).
//!   - [`api::docs`]: `/docs`, the API explorer (Swagger UI, built into the binary).
//!   - [`api::cors`]: CORS for browser apps on other origins (tower-http's layer, added
//!     only when origins are configured).
//!   - [`api::console`]: `/ui`, the operator console (plain HTML, CSS and JavaScript in
//!     `src/api/console/`, built into the binary), behind the ops guard.
//! - [`otp`]: talking to OpenTripPlanner: the tuned, circuit-broken
//!   [`otp::client::OtpClient`], the adapters for OTP 2 (GraphQL) and OTP 1 (REST) with
//!   the serde helpers they share (`otp/de.rs`: errors name their JSON path), and
//!   [`otp::instance::InstanceRuntime`], one configured instance with its client and
//!   refresh status, whose methods ask either API for a caller (refresh, crawl, or a
//!   client's read-through, which passes on its request id and W3C `traceparent`:
//!   [`otp::trace`]).
//! - [`feed`]: the feed [`feed::model`] (with the one route order,
//!   [`feed::model::RouteSummary::order_key`]), snapshots built from GTFS zips, service
//!   calendars, and the [`feed::store::FeedStore`] that holds each feed's current version.
//!   A feed may also be a directory of `.txt` files ([`feed::dir`]: its version, and its
//!   files packed as a zip for the same reader). A large zip is spooled to a temporary
//!   file on its way from the download to the build and the store ([`feed::spool`]).
//!   A snapshot is made in three steps, a module each: [`feed::read`] (the zip's bytes to
//!   the tables used, with the repairs and [`feed::error::FeedError`]), [`feed::network`]
//!   (those tables to routes, patterns and trips) and [`feed::snapshot`] (the immutable
//!   [`feed::snapshot::FeedSnapshot`] and its queries).
//! - [`cache`]: the route cache (moka, weighted by size, keyed by feed version) of route
//!   details and list pages, with single-flight misses, stale-while-revalidate and
//!   stale-if-error; [`cache::encoded`] makes each entry's gzip and brotli forms once.
//! - [`refresh`]: the scheduler that keeps feeds fresh, one refresh per instance at a time;
//!   each new version is swapped in, then written to the feed store (`refresh/save.rs`).
//!   [`refresh::warm`] is the warm start: before the first refresh, each feed's current
//!   stored version is loaded, so a restart serves the last good data while OTP is down.
//!   Replicas sharing the database take turns: per instance, the holder of the refresh
//!   lease refreshes ([`refresh::lease`]) and the others load each version it stores when
//!   it is announced ([`refresh::follow`]), and a route detail one replica reads through
//!   on demand is stored and announced for the others ([`refresh::reads`]).
//! - [`db`]: the PostgreSQL pool, migrations (`migrations/`),
//!   [`db::embedded`], the private PostgreSQL used when no `DATABASE_URL` is set,
//!   [`db::fetches`], the `feed_fetch` history of refreshes, and [`db::feed_store`], the
//!   durable feed store: every fetched version, content-addressed by sha256, with its
//!   retention (`feed_versions_kept`), and [`db::replicas`], the refresh lease's SQL and
//!   the notifications replicas send each other.
//! - [`waybill`]: what a waybill is and the rules it must follow (trips of the route on
//!   the service date, status moves, odometers, text limits).
//! - [`telemetry`]: logs (tracing; JSON when stderr is not a terminal, or as
//!   `GTFS_LOG_FORMAT` says) and the metrics registry.
//!
//! The global allocator is jemalloc, so `/memory-stats` can report what the
//! application itself holds (allocated) next to what the process holds (RSS); [`memory`]
//! asks it for a feed build's peak and gives the build's freed pages back after a swap.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod app;
pub mod build;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod feed;
pub mod memory;
pub mod otp;
pub mod refresh;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod waybill;
