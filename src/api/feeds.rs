//! Feeds and instances: what the service knows and where it comes from.
//!
//! - `GET /feeds`: every feed with its instance, source, version, fetch time, counts and
//!   last error.
//! - `GET /feeds/{gtfs_id}/fetches`: the feed's fetch history (`feed_fetch`), newest
//!   first, cursor-paged; rows older than `feed_fetch_retention_days` are gone.
//! - `GET /instances`: every OTP instance with its refresh status and HTTP client figures
//!   (connections opened, requests sent, reuse ratio, breaker state), which replica holds
//!   its refresh lease, and this replica's id.
//! - `POST /instances/{name}/refresh`: starts a refresh now (202); when one is running,
//!   202 too, saying so: there is never more than one refresh of an instance at a time.
//!   On a replica that does not hold the instance's refresh lease, the request is passed
//!   on to the one that does (`crate::refresh::lease`): one refresh for all replicas.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::RefreshAccess;
use super::extract::Query;
use super::problems::{
    BadFetchesQuery, DatabaseUnavailable, NoSuchFeed, NoSuchInstance, RefreshForbidden,
    RefreshTooSoon, RefreshUnauthorized,
};
use super::{ApiError, ApiResult, cursor};
use crate::db::fetches::{self, FeedOutcome};
use crate::feed::store::FeedReport;
use crate::otp::instance::InstanceReport;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_feeds))
        .routes(routes!(list_fetches))
        .routes(routes!(list_instances))
        .routes(routes!(refresh))
}

/// Every feed: instance, source, version, fetch time, counts, last error.
#[utoipa::path(
    get,
    path = "/feeds",
    tag = "feeds",
    responses((status = 200, description = "Every feed known, by `gtfs_id`.", body = FeedList)),
)]
async fn list_feeds(State(state): State<AppState>) -> Json<FeedList> {
    let feeds = state.feeds.all().iter().map(|f| f.report()).collect();
    Json(FeedList { feeds })
}

/// `GET /feeds`.
#[derive(Serialize, ToSchema)]
struct FeedList {
    feeds: Vec<FeedReport>,
}

/// Page sizes of `GET /feeds/{gtfs_id}/fetches`.
const FETCHES_DEFAULT_LIMIT: i64 = 50;
const FETCHES_MAX_LIMIT: i64 = 500;

/// Query parameters of `GET /feeds/{gtfs_id}/fetches`. Any other parameter is a 400.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FetchesParams {
    /// Page size, 1 to 500; default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Opaque: the `next_cursor` of the previous page. Empty: the first page.
    #[param(max_length = 400)]
    cursor: Option<String>,
}

/// A feed's fetch history, newest first.
///
/// One entry per refresh that looked at the feed: its outcome (`updated`, `unchanged`,
/// `failed`), HTTP status, version, bytes and error. Kept `feed_fetch_retention_days`
/// (default 30).
#[utoipa::path(
    get,
    path = "/feeds/{gtfs_id}/fetches",
    tag = "feeds",
    params(
        ("gtfs_id" = String, Path, description = "The feed's id, as in `GET /feeds`."),
        FetchesParams,
    ),
    responses(
        (status = 200, description = "A page of fetches, newest first.", body = FetchList),
        BadFetchesQuery,
        NoSuchFeed,
        DatabaseUnavailable,
    ),
)]
async fn list_fetches(
    State(state): State<AppState>,
    Path(gtfs_id): Path<String>,
    Query(q): Query<FetchesParams>,
) -> ApiResult<Json<FetchList>> {
    if state.feeds.get(&gtfs_id).is_none() {
        return Err(ApiError::not_found(format!("no feed {gtfs_id:?}")));
    }
    let list = format!("fetches {gtfs_id}");
    let limit = cursor::limit(q.limit.as_deref(), FETCHES_DEFAULT_LIMIT, FETCHES_MAX_LIMIT)?;
    let forged =
        || ApiError::bad_request("cursor is not one this service issued; start again without it");
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            cursor::decode(&list, c)?
                .parse::<i64>()
                .map_err(|_| forged())?,
        ),
    };
    // One more than asked: whether there is a next page.
    let mut rows = fetches::list(&state.db, &gtfs_id, before, limit + 1).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|(id, _)| cursor::encode(&list, &id.to_string()))
    } else {
        None
    };
    Ok(Json(FetchList {
        fetches: rows.into_iter().map(|(_, f)| f).collect(),
        next_cursor,
    }))
}

/// `GET /feeds/{gtfs_id}/fetches`.
#[derive(Serialize, ToSchema)]
struct FetchList {
    /// Newest first.
    fetches: Vec<FeedOutcome>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Every OTP instance: refresh status and HTTP client figures.
#[utoipa::path(
    get,
    path = "/instances",
    tag = "feeds",
    responses((status = 200, description = "Every configured instance, in configuration order.",
        body = InstanceList)),
)]
async fn list_instances(State(state): State<AppState>) -> Json<InstanceList> {
    let instances = state.instances.iter().map(|i| i.report()).collect();
    Json(InstanceList {
        replica_id: state.replica_id.clone(),
        instances,
    })
}

/// `GET /instances`.
#[derive(Serialize, ToSchema)]
struct InstanceList {
    /// The id of the replica that answered (`replica_id`, or made at start-up): each
    /// instance's `refresh_lease.holder` is one such id.
    #[schema(example = "api-2")]
    replica_id: String,
    instances: Vec<InstanceReport>,
}

/// Starts a refresh of an instance now.
///
/// There is never more than one refresh of an instance at a time: when one is running,
/// the answer is 202 too, saying so. Among replicas sharing a database, the replica
/// holding the instance's refresh lease refreshes; asked of another, the refresh is passed
/// on to it, and every replica then loads the new version from the database. Manual refreshes of one instance are spaced by
/// `refresh_min_spacing` (429 with `Retry-After` when asked sooner). With `ops_token` or
/// `api_token` set, the client must send either as its bearer token; with neither,
/// only loopback clients may ask.
#[utoipa::path(
    post,
    path = "/instances/{name}/refresh",
    tag = "feeds",
    params(("name" = String, Path, description = "The instance's `name`.", pattern = "^[a-z0-9-]+$")),
    security((), ("ops_token" = []), ("api_token" = [])),
    responses(
        (status = 202, description = "A refresh was started, or one is already running.",
            body = RefreshAccepted),
        RefreshUnauthorized,
        RefreshForbidden,
        NoSuchInstance,
        RefreshTooSoon,
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    _access: RefreshAccess,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<RefreshAccepted>)> {
    let instance = state
        .instance(&name)
        .ok_or_else(|| ApiError::not_found(format!("no instance named {name:?}")))?;
    let refresh = match instance.trigger_manual(state.config.refresh_min_spacing) {
        Ok(true) => RefreshState::Started,
        Ok(false) => RefreshState::AlreadyRunning,
        Err(wait) => {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "instance {name:?} was refreshed by hand less than {} s ago; ask again in {secs} s",
                    state.config.refresh_min_spacing.as_secs_f64()
                ),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs)));
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(RefreshAccepted {
            instance: name,
            refresh,
        }),
    ))
}

/// `POST /instances/{name}/refresh`.
#[derive(Serialize, ToSchema)]
struct RefreshAccepted {
    instance: String,
    /// `started`, or `already_running` (that refresh's result is the one to wait for).
    refresh: RefreshState,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum RefreshState {
    Started,
    AlreadyRunning,
}
