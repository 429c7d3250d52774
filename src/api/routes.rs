//! The route query API.
//!
//! - `GET /feeds/{gtfs_id}/routes?type=&agency=&q=&limit=&cursor=`: route summaries in a
//!   stable order (sort_order, missing last, then route_id), filtered, cursor-paged.
//! - `GET /feeds/{gtfs_id}/routes/{route_id}`: summary, patterns and trip count, through
//!   the [`RouteCache`](crate::cache::RouteCache): built from the feed's snapshot or
//!   index, or read through to OTP, passing on the request's `x-request-id` and
//!   `traceparent` ([`crate::otp::trace`]).
//! - `GET /feeds/{gtfs_id}/routes/{route_id}/trips?date=YYYY-MM-DD`: the trips running on
//!   that service date (feeds loaded from a GTFS zip).
//!
//! Cacheable answers carry a weak `ETag` (304 on `If-None-Match`) and `Cache-Control`;
//! route details also `X-Cache` (HIT, MISS, STALE) and `Age`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{self, Query};
use super::negotiate::{self, Conditional};
use super::problems::{
    BadRouteQuery, BadTripsQuery, FeedNotLoaded, Internal, NoSuchFeed, NoSuchRoute, NotAcceptable,
    RouteUnavailable, TripsNotKnown,
};
use super::{ApiError, ApiResult, ServerTiming, cursor};
use crate::cache::{CachedRoute, LoadError, Loader, Lookup, RouteKey, etag_of};
use crate::feed::model::{RouteDetail, RouteSummary};
use crate::feed::store::{FeedData, Loaded};
use crate::otp::client::OtpError;
use crate::otp::instance::Caller;
use crate::otp::trace::TraceContext;
use crate::refresh::reads;
use crate::state::AppState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Route details and list pages are served from the cache with their compressed forms
/// made once (see [`negotiate`]); trips are built per request, so the compression layer
/// compresses them.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_routes))
        .routes(routes!(route_detail))
        .merge(
            OpenApiRouter::default()
                .routes(routes!(route_trips))
                .layer(super::compression()),
        )
}

/// The feed's current data, or 404/503.
fn current_feed(
    state: &AppState,
    gtfs_id: &str,
) -> ApiResult<(Arc<crate::feed::store::FeedEntry>, Arc<Loaded>)> {
    let entry = state
        .feeds
        .get(gtfs_id)
        .ok_or_else(|| ApiError::not_found(format!("no feed {gtfs_id:?}")))?;
    let loaded = entry.current().ok_or_else(|| {
        let why = entry
            .status()
            .last_error
            .unwrap_or_else(|| "not loaded yet".into());
        ApiError::unavailable(format!("feed {gtfs_id:?} has no data yet: {why}"), 30)
    })?;
    Ok((entry, loaded))
}

/// `body` as a cacheable JSON answer with no compressed forms kept (those that are
/// computed per request: the compression layer may compress them): see
/// [`negotiate::answer`].
fn cacheable(request: &Conditional, body: Bytes, etag: &HeaderValue) -> Response {
    negotiate::answer(request, &body, etag, None)
}

fn json_bytes<T: Serialize>(value: &T) -> ApiResult<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.into()))
}

/// Lowercase ASCII transliteration, for case- and accent-insensitive matching.
fn fold(text: &str) -> String {
    deunicode::deunicode(text).to_lowercase()
}

/// A page position: after the route with this sort key, for the query with these filters.
/// Encoded with the one cursor codec ([`cursor`]); the filters are part of the position,
/// so a cursor of other filters is told apart from one this service never issued.
struct Cursor {
    filters: String,
    sort: u64,
    route_id: String,
}

impl Cursor {
    /// The list's name in the codec's checksum.
    const LIST: &str = "routes";

    fn encode(&self) -> String {
        let position = format!("{}\n{}\n{}", self.filters, self.sort, self.route_id);
        cursor::encode(Self::LIST, &position)
    }

    fn decode(text: &str, filters: &str) -> ApiResult<Cursor> {
        let forged = || {
            ApiError::bad_request(
                "cursor is not one this service issued for this query; start again without it",
            )
        };
        let position = cursor::decode(Self::LIST, text).map_err(|_| forged())?;
        let mut parts = position.splitn(3, '\n');
        let (Some(f), Some(sort), Some(route_id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(forged());
        };
        if f != filters {
            return Err(ApiError::bad_request(
                "cursor belongs to a query with other filters; start again without it",
            ));
        }
        Ok(Cursor {
            filters: f.to_owned(),
            sort: sort.parse().map_err(|_| forged())?,
            route_id: route_id.to_owned(),
        })
    }
}

/// A page of `GET /feeds/{gtfs_id}/routes`.
#[derive(Serialize, ToSchema)]
struct RouteList<'a> {
    gtfs_id: &'a str,
    /// The feed version the page was read from.
    version: &'a str,
    routes: Vec<&'a RouteSummary>,
    /// Pass as `cursor` for the next page (same filters); `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of `GET /feeds/{gtfs_id}/routes`. Any other parameter is a 400.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RouteListQuery {
    /// Only routes of this GTFS `route_type` (0 tram, 1 subway, 2 rail, 3 bus, ... and
    /// extended types such as 700).
    #[serde(default, deserialize_with = "route_type")]
    r#type: Option<i32>,
    /// Only routes of this `agency_id`.
    agency: Option<String>,
    /// Only routes whose short or long name contains this text, ignoring case and accents.
    q: Option<String>,
    /// Page size.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, for the same filters; opaque. A cursor of other
    /// filters, or not issued by this service, is a 400; an empty one is the first page.
    cursor: Option<String>,
}

fn route_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    extract::parse_value(d, "type", "is not a GTFS route_type number", |t| {
        t.parse().ok()
    })
}

/// Route summaries of a feed, filtered, in a stable order, cursor-paged.
///
/// Order: `sort_order` (missing last), then `route_id`. The page carries a weak `ETag`;
/// `If-None-Match` with it gives 304. Pages are cached per feed version, with their gzip
/// and brotli forms made once.
#[utoipa::path(
    get,
    path = "/feeds/{gtfs_id}/routes",
    tag = "routes",
    params(
        ("gtfs_id" = String, Path, description = "The feed id (OTP's feed id)."),
        RouteListQuery,
        Conditional,
    ),
    responses(
        (status = 200, description = "A page of routes, as identity, or gzip or brotli \
            (with `Content-Encoding`) as `Accept-Encoding` asks (RFC 9110: q-values, \
            `identity`, `*`).", body = RouteList,
            headers(
                ("ETag" = String, description = "Weak ETag of the body, the same for every \
                    coding."),
                ("Vary" = String, description = "`accept-encoding`."),
                ("Content-Length" = u64, description = "Length of the body as sent."),
                ("Cache-Control" = String, description = "`public, max-age=60`."),
            )),
        (status = 304, description = "`If-None-Match` matched the current ETag.",
            headers(
                ("ETag" = String, description = "Weak ETag of the body, the same for every \
                    coding."),
                ("Vary" = String, description = "`accept-encoding`."),
                ("Cache-Control" = String, description = "`public, max-age=60`."),
            )),
        BadRouteQuery,
        NoSuchFeed,
        NotAcceptable,
        FeedNotLoaded,
        Internal,
    ),
)]
async fn list_routes(
    State(state): State<AppState>,
    Path(gtfs_id): Path<String>,
    Query(q): Query<RouteListQuery>,
    conditional: Conditional,
) -> ApiResult<Response> {
    let limit = cursor::limit(q.limit.as_deref(), DEFAULT_LIMIT as i64, MAX_LIMIT as i64)? as usize;
    let needle = q.q.as_ref().map(|s| fold(s.trim()));
    let filters = hex::encode(
        &Sha256::digest(format!(
            "{gtfs_id}\n{:?}\n{:?}\n{needle:?}",
            q.r#type, q.agency
        ))[..6],
    );
    // An empty `cursor=` is the first page.
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| Cursor::decode(c, &filters))
        .transpose()?;
    let page = Arc::new(ListPage {
        route_type: q.r#type,
        agency: q.agency,
        needle,
        limit,
        after: after.map(|c| (c.sort, c.route_id)),
        filters,
    });

    let (_, loaded) = current_feed(&state, &gtfs_id)?;
    let key = RouteKey::list(&gtfs_id, &page.canonical(), &loaded.version);
    let loader = || -> Loader {
        let gtfs_id: Arc<str> = gtfs_id.as_str().into();
        Arc::new(move || {
            let (page, loaded, gtfs_id) = (page.clone(), loaded.clone(), gtfs_id.clone());
            Box::pin(async move {
                let started = Instant::now();
                let body = page
                    .build(&gtfs_id, &loaded)
                    .map_err(|e| LoadError::Internal(e.to_string()))?;
                // A page of a version never changes: fresh for the life of its key.
                Ok(Some(CachedRoute::new(body, None, started.elapsed(), false)))
            })
        })
    };
    let lookup = state
        .cache
        .get(key.clone(), loader)
        .await
        .map_err(|e| match e {
            LoadError::Internal(e) => ApiError::internal(anyhow::anyhow!(e)),
            other => ApiError::internal(anyhow::anyhow!("building a route list page: {other}")),
        })?;
    Ok(negotiated(&state, &conditional, &key, lookup.entry()).await)
}

/// One page of a route list as a request asks for it: the filters, the page size and
/// where it starts. Equal queries give equal [`ListPage::canonical`] texts, which key the
/// page in the cache.
struct ListPage {
    route_type: Option<i32>,
    agency: Option<String>,
    /// The name filter, folded (see [`fold`]).
    needle: Option<String>,
    limit: usize,
    /// After the route with this order key (from the cursor).
    after: Option<(u64, String)>,
    /// Digest of the filters, carried by the cursors of this query.
    filters: String,
}

impl ListPage {
    /// The page's cache key text: the filters' digest already covers type, agency and
    /// name; then the size and the start.
    fn canonical(&self) -> String {
        match &self.after {
            None => format!("{}&limit={}", self.filters, self.limit),
            Some((sort, route_id)) => {
                format!(
                    "{}&limit={}&after={sort}:{route_id}",
                    self.filters, self.limit
                )
            }
        }
    }

    /// The page's JSON from the feed's routes (in their one order, see
    /// [`RouteSummary::order_key`]).
    fn build(&self, gtfs_id: &str, loaded: &Loaded) -> serde_json::Result<Bytes> {
        let mut matching = loaded.routes().iter().filter(|r| {
            self.route_type.is_none_or(|t| r.route_type == t)
                && self
                    .agency
                    .as_ref()
                    .is_none_or(|a| r.agency_id.as_deref() == Some(a.as_str()))
                && self.needle.as_ref().is_none_or(|n| {
                    [&r.short_name, &r.long_name]
                        .into_iter()
                        .flatten()
                        .any(|name| fold(name).contains(n.as_str()))
                })
        });
        let start = self.after.as_ref().map(|(sort, id)| (*sort, id.as_str()));
        let mut page: Vec<&RouteSummary> = Vec::with_capacity(self.limit.min(256));
        for route in matching.by_ref() {
            if start.is_some_and(|s| route.order_key() <= s) {
                continue;
            }
            page.push(route);
            if page.len() == self.limit {
                break;
            }
        }
        let next_cursor = match (page.last(), matching.next()) {
            (Some(last), Some(_)) => {
                let (sort, route_id) = last.order_key();
                Some(
                    Cursor {
                        filters: self.filters.clone(),
                        sort,
                        route_id: route_id.to_owned(),
                    }
                    .encode(),
                )
            }
            _ => None,
        };
        serde_json::to_vec(&RouteList {
            gtfs_id,
            version: &loaded.version,
            routes: page,
            next_cursor,
        })
        .map(Bytes::from)
    }
}

/// A cached answer for `request`: the identity bytes, or a compressed form, made now
/// (once per entry) only if the request can take one, so the others never wait.
async fn negotiated(
    state: &AppState,
    request: &Conditional,
    key: &RouteKey,
    cached: &Arc<CachedRoute>,
) -> Response {
    let encoded = if negotiate::wants_coding(request) {
        Some(state.cache.encodings(key, cached).await)
    } else {
        cached.encoded()
    };
    negotiate::answer(request, &cached.body, &cached.etag, encoded)
}

/// A route: its summary, patterns (ordered stops) and trip count.
///
/// Served from the route cache: built from the feed's zip or prefetched index, or read
/// through to OTP (then cached for `cache_ttl`; served stale while OTP fails). Weak
/// `ETag`; `If-None-Match` with it gives 304. Its gzip and brotli forms are made once per
/// cache entry, not per request.
#[utoipa::path(
    get,
    path = "/feeds/{gtfs_id}/routes/{route_id}",
    tag = "routes",
    params(
        ("gtfs_id" = String, Path, description = "The feed id (OTP's feed id)."),
        ("route_id" = String, Path, description = "GTFS `route_id` inside the feed \
            (percent-encoded as a path segment)."),
        Conditional,
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context. When \
            the route is read through to OTP, OTP is sent this trace (with a new parent \
            id) if it is valid, else a new one, and the request's `x-request-id`."),
    ),
    responses(
        (status = 200, description = "The route, as identity, or gzip or brotli \
            (with `Content-Encoding`) as `Accept-Encoding` asks (RFC 9110: q-values, \
            `identity`, `*`).", body = RouteDetail,
            headers(
                ("ETag" = String, description = "Weak ETag of the body, the same for every \
                    coding."),
                ("Vary" = String, description = "`accept-encoding`."),
                ("Content-Length" = u64, description = "Length of the body as sent."),
                ("Cache-Control" = String, description = "`public, max-age=60`."),
                ("X-Cache" = String, description = "`HIT`, `MISS` (built now) or `STALE` \
                    (past its freshness, being refreshed or OTP failing)."),
                ("Age" = u64, description = "Seconds since the answer was built."),
            )),
        (status = 304, description = "`If-None-Match` matched the current ETag.",
            headers(
                ("ETag" = String, description = "Weak ETag of the body, the same for every \
                    coding."),
                ("Vary" = String, description = "`accept-encoding`."),
                ("Cache-Control" = String, description = "`public, max-age=60`."),
                ("X-Cache" = String, description = "`HIT`, `MISS` or `STALE`."),
                ("Age" = u64, description = "Seconds since the answer was built."),
            )),
        NoSuchRoute,
        NotAcceptable,
        RouteUnavailable,
        Internal,
    ),
)]
async fn route_detail(
    State(state): State<AppState>,
    Path((gtfs_id, route_id)): Path<(String, String)>,
    conditional: Conditional,
    trace: TraceContext,
) -> ApiResult<Response> {
    let started = Instant::now();
    let (entry, loaded) = current_feed(&state, &gtfs_id)?;
    let key = RouteKey::new(&gtfs_id, &route_id, &loaded.version);
    let loader = || route_loader(&state, &entry.instance, loaded, &gtfs_id, &route_id, trace);
    let lookup = state
        .cache
        .get(key.clone(), loader)
        .await
        .map_err(|e| match e {
            LoadError::NotFound => {
                ApiError::not_found(format!("no route {route_id:?} in feed {gtfs_id:?}"))
            }
            LoadError::Upstream(OtpError::BreakerOpen(_)) => ApiError::unavailable(
                format!(
                    "OTP instance {} is failing; nothing cached for this route",
                    entry.instance
                ),
                30,
            ),
            LoadError::Upstream(e) => ApiError::unavailable(
                format!("OTP could not answer and nothing is cached: {e}"),
                10,
            ),
            LoadError::Internal(e) => ApiError::internal(anyhow::anyhow!(e)),
        })?;
    let cached = lookup.entry();
    let mut timing = ServerTiming::default();
    if let Lookup::Miss(_) = lookup {
        timing.record(
            if cached.from_otp { "otp" } else { "build" },
            cached.load_time,
        );
    }
    timing.record("cache", started.elapsed().saturating_sub(cached.load_time));
    let mut response = negotiated(&state, &conditional, &key, cached).await;
    detail_headers(&mut response, &lookup);
    response.extensions_mut().insert(timing);
    Ok(response)
}

static X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

/// The route template [`route_detail`] answers, for the metrics of [`detail_hit`].
pub const DETAIL_ROUTE: &str = "/feeds/{gtfs_id}/routes/{route_id}";

/// The headers saying how a route detail was found.
fn detail_headers(response: &mut Response, lookup: &Lookup) {
    let h = response.headers_mut();
    h.insert(&X_CACHE, HeaderValue::from_static(lookup.label()));
    h.insert(header::AGE, HeaderValue::from(lookup.entry().age()));
}

/// [`route_detail`]'s answer to `req` when it is a plain `GET` of a route detail that is
/// cached, fresh and already has the form the client asks for: the same answer (its
/// `Server-Timing` phases apart, rather than in its extensions), without the router, the
/// extractors and the middleware (the front service in `crate::server`
/// calls this before the router; `crate::api::layers::Observation` does the middleware's
/// part). `None` for anything else, which the router then answers: other methods, a
/// segment with a percent sign, a feed or route not cached, a stale entry, a compressed
/// form still to be made.
pub async fn detail_hit(state: &AppState, req: &Parts) -> Option<(Response, ServerTiming)> {
    if req.method != axum::http::Method::GET {
        return None;
    }
    let (gtfs_id, route_id) = detail_path(req.uri.path())?;
    let started = Instant::now();
    let loaded = state.feeds.get(gtfs_id)?.current()?;
    let key = RouteKey::new(gtfs_id, route_id, &loaded.version);
    let cached = state.cache.fresh(&key).await?;
    let conditional = Conditional::from_headers(&req.headers);
    let encoded = cached.encoded();
    if encoded.is_none() && negotiate::wants_coding(&conditional) {
        return None;
    }
    let mut timing = ServerTiming::default();
    timing.record("cache", started.elapsed());
    let mut response = negotiate::answer(&conditional, &cached.body, &cached.etag, encoded);
    detail_headers(&mut response, &Lookup::Hit(cached));
    Some((response, timing))
}

/// `(gtfs_id, route_id)` of `/feeds/{gtfs_id}/routes/{route_id}`, when both segments are
/// non-empty and need no percent-decoding.
fn detail_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/feeds/")?;
    let (gtfs_id, rest) = rest.split_once('/')?;
    let route_id = rest.strip_prefix("routes/")?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    (plain(gtfs_id) && plain(route_id)).then_some((gtfs_id, route_id))
}

/// Builds a route's answer: from the snapshot or the prefetched index when the feed has
/// it, otherwise from OTP (cached for `cache_ttl`), passing on the request's id and
/// trace (`trace`; a background revalidation carries those of the request that started it).
fn route_loader(
    state: &AppState,
    instance: &str,
    loaded: Arc<Loaded>,
    gtfs_id: &str,
    route_id: &str,
    trace: TraceContext,
) -> Loader {
    let state = state.clone();
    let (instance, gtfs_id, route_id) =
        (instance.to_owned(), gtfs_id.to_owned(), route_id.to_owned());
    Arc::new(move || {
        let (state, loaded, trace) = (state.clone(), loaded.clone(), trace.clone());
        let (instance, gtfs_id, route_id) = (instance.clone(), gtfs_id.clone(), route_id.clone());
        Box::pin(async move {
            let started = Instant::now();
            if let Some(detail) = loaded.route_detail(&route_id) {
                let body =
                    serde_json::to_vec(detail).map_err(|e| LoadError::Internal(e.to_string()))?;
                return Ok(Some(CachedRoute::new(
                    body.into(),
                    None,
                    started.elapsed(),
                    false,
                )));
            }
            // A snapshot knows all its routes; an index knows which routes exist.
            let known = loaded.routes().iter().any(|r| r.route_id == route_id);
            if matches!(loaded.data, FeedData::Snapshot(_)) || !known {
                return Ok(None);
            }
            let Some(instance) = state.instance(&instance) else {
                return Ok(None);
            };
            // The client's request waits `read_deadline` at most, whatever the timeouts,
            // retries and backoff of the call would add up to.
            let deadline = state.config.read_deadline;
            let upstream = trace.upstream();
            tracing::debug!(
                instance = instance.name(),
                trace_id = upstream.trace_id(),
                "route {route_id:?} of feed {gtfs_id:?} is not cached: asking OTP"
            );
            let call = instance.route(&gtfs_id, &route_id, Caller::Client(&upstream));
            let detail = tokio::time::timeout(deadline, call)
                .await
                .map_err(|_| LoadError::Upstream(OtpError::Timeout(deadline)))?
                .map_err(LoadError::Upstream)?;
            let Some(detail) = detail else {
                return Ok(None);
            };
            let body: Bytes = serde_json::to_vec(&detail)
                .map_err(|e| LoadError::Internal(e.to_string()))?
                .into();
            // The other replicas on the database cache it too, rather than ask OTP.
            reads::share(
                &state,
                instance.name(),
                &gtfs_id,
                &loaded.version,
                &route_id,
                body.clone(),
            );
            Ok(Some(CachedRoute::new(
                body,
                Some(state.config.cache_ttl),
                started.elapsed(),
                true,
            )))
        })
    })
}

/// A `YYYY-MM-DD` date, strictly.
fn service_date(text: Option<&String>) -> ApiResult<jiff::civil::Date> {
    let text = text.ok_or_else(|| ApiError::bad_request("date=YYYY-MM-DD is required"))?;
    crate::feed::model::parse_iso_date(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "date={text:?} is not a date of the form YYYY-MM-DD"
        ))
    })
}

/// `GET /feeds/{gtfs_id}/routes/{route_id}/trips`.
#[derive(Serialize, ToSchema)]
struct TripList<'a> {
    gtfs_id: &'a str,
    route_id: &'a str,
    /// The service date asked for.
    #[schema(format = Date, example = "2024-03-15")]
    date: String,
    /// Sorted by `start_time`.
    trips: Vec<&'a crate::feed::model::TripInfo>,
}

/// Query parameters of `GET /feeds/{gtfs_id}/routes/{route_id}/trips`. Any other
/// parameter is a 400.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TripsQuery {
    /// The service date, `YYYY-MM-DD`.
    #[param(value_type = String, required = true, format = Date, pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", example = "2024-03-15")]
    date: Option<String>,
}

/// The trips of a route running on a service date.
///
/// The date's service comes from `calendar.txt` and its `calendar_dates.txt` exceptions;
/// times past 24:00:00 belong to the date the trip starts from. Only for feeds loaded from
/// a GTFS zip. Weak `ETag`; `If-None-Match` with it gives 304.
#[utoipa::path(
    get,
    path = "/feeds/{gtfs_id}/routes/{route_id}/trips",
    tag = "routes",
    params(
        ("gtfs_id" = String, Path, description = "The feed id (OTP's feed id)."),
        ("route_id" = String, Path, description = "GTFS `route_id` inside the feed \
            (percent-encoded as a path segment)."),
        TripsQuery,
        Conditional,
    ),
    responses(
        (status = 200, description = "The trips running that date, by start time.",
            body = TripList,
            headers(
                ("ETag" = String, description = "Weak ETag of the body."),
                ("Cache-Control" = String, description = "`public, max-age=60`."),
            )),
        (status = 304, description = "`If-None-Match` matched the current ETag.",
            headers(
                ("ETag" = String, description = "Weak ETag of the body."),
                ("Cache-Control" = String, description = "`public, max-age=60`."),
            )),
        BadTripsQuery,
        NoSuchRoute,
        TripsNotKnown,
        FeedNotLoaded,
        Internal,
    ),
)]
async fn route_trips(
    State(state): State<AppState>,
    Path((gtfs_id, route_id)): Path<(String, String)>,
    Query(q): Query<TripsQuery>,
    conditional: Conditional,
) -> ApiResult<Response> {
    let date = service_date(q.date.as_ref())?;
    let (_, loaded) = current_feed(&state, &gtfs_id)?;
    let snapshot = loaded.snapshot().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("trips are known only for feeds loaded from a GTFS zip; configure [[instances.feeds]] for {gtfs_id:?}"),
        )
    })?;
    if snapshot.route(&route_id).is_none() {
        return Err(ApiError::not_found(format!(
            "no route {route_id:?} in feed {gtfs_id:?}"
        )));
    }
    let trips = snapshot.trips_on(&route_id, date);
    let body = json_bytes(&TripList {
        gtfs_id: &gtfs_id,
        route_id: &route_id,
        date: date.to_string(),
        trips,
    })?;
    let etag = etag_of(&body);
    Ok(cacheable(&conditional, body, &etag))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let c = Cursor {
            filters: "abc".into(),
            sort: 7,
            route_id: "R:1\nx".into(),
        };
        let text = c.encode();
        let back = Cursor::decode(&text, "abc").unwrap();
        assert_eq!((back.sort, back.route_id.as_str()), (7, "R:1\nx"));
        assert!(Cursor::decode(&text, "other").is_err(), "other filters");
        assert!(Cursor::decode("garbage!", "abc").is_err());
        let forged = URL_SAFE_NO_PAD.encode("abc\n7\nR9\n0000000000000000");
        assert!(Cursor::decode(&forged, "abc").is_err());
    }

    #[test]
    fn dates_are_strict() {
        let d = |s: &str| service_date(Some(&s.to_owned()));
        assert!(d("2024-02-29").is_ok());
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "20240101",
            "yesterday",
            "2024-1-01",
            "",
        ] {
            assert!(d(bad).is_err(), "{bad}");
        }
        assert!(service_date(None).is_err());
    }

    #[test]
    fn matching_folds_case_and_accents() {
        assert_eq!(fold("Metrobús Línea 1"), "metrobus linea 1");
        assert!(fold("METROBÚS").contains(&fold("metrobus")));
    }
}
