//! The error answers the endpoints document, one `IntoResponses` type each: status,
//! description and headers said once, used by every `#[utoipa::path]` that can answer it
//! (`responses((status = 200, ...), NoSuchFeed, Internal)`). Each body is a [`Problem`]
//! (`application/problem+json`, built by [`super::ApiError`]); the types only document,
//! the handlers answer with `ApiError`.
//!
//! Grouped by area, shared ones first. `/readyz`'s 503 is not here: its body is a problem
//! with the checks (`ReadinessProblem` in [`super::ops`]).

use utoipa::IntoResponses;

use super::openapi::Problem;

// --- Shared -----------------------------------------------------------------------------

/// 500 of the handlers that can fail on our side; the cause is logged, never shown.
#[derive(IntoResponses)]
#[response(
    status = 500,
    description = "Internal error (logged with the request id).",
    content_type = "application/problem+json"
)]
pub struct Internal(pub Problem);

/// 503 of a read that needs the database.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Database unavailable.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64))
)]
pub struct DatabaseUnavailable(pub Problem);

/// 404 of `/feeds/{gtfs_id}/...`.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No feed of that id.",
    content_type = "application/problem+json"
)]
pub struct NoSuchFeed(pub Problem);

/// 503 of a route query on a feed whose data is not loaded.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "The feed has no data yet (first load not done or failed).",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds before asking again."))
)]
pub struct FeedNotLoaded(pub Problem);

// --- Ops --------------------------------------------------------------------------------

/// 403 of the ops endpoints behind the loopback-or-token guard.
#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "Not a loopback client, and no valid ops token.",
    content_type = "application/problem+json"
)]
pub struct OpsForbidden(pub Problem);

/// 404 of `/docs/{file}`.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such file of the explorer.",
    content_type = "application/problem+json"
)]
pub struct NoSuchDocsFile(pub Problem);

/// 404 of `/ui/{file}`.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such file of the console.",
    content_type = "application/problem+json"
)]
pub struct NoSuchConsoleFile(pub Problem);

// --- Feeds and instances ----------------------------------------------------------------

#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "A bad limit or cursor, or an unknown parameter.",
    content_type = "application/problem+json"
)]
pub struct BadFetchesQuery(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "A token is configured and the bearer token is missing or wrong.",
    content_type = "application/problem+json"
)]
pub struct RefreshUnauthorized(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 403,
    description = "No token is configured and the client is not on loopback.",
    content_type = "application/problem+json"
)]
pub struct RefreshForbidden(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No instance of that name.",
    content_type = "application/problem+json"
)]
pub struct NoSuchInstance(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 429,
    description = "The last manual refresh of this instance was less than \
        `refresh_min_spacing` ago.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds before asking again."))
)]
pub struct RefreshTooSoon(pub Problem);

// --- Routes -----------------------------------------------------------------------------

#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "An unknown parameter, a `type` or `limit` that is not a number in \
        range, or a cursor of other filters or not issued by this service.",
    content_type = "application/problem+json"
)]
pub struct BadRouteQuery(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such feed, or no such route in it.",
    content_type = "application/problem+json"
)]
pub struct NoSuchRoute(pub Problem);

/// 503 of a route's detail, which may read through to OTP.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "The feed has no data yet, or OTP cannot answer (breaker open, timeout, \
        error) and nothing is cached for this route.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds before asking again."))
)]
pub struct RouteUnavailable(pub Problem);

/// 406 of a negotiable answer (see [`super::negotiate`]) whose `Accept-Encoding` refuses
/// every form it has.
#[derive(IntoResponses)]
#[response(
    status = 406,
    description = "`Accept-Encoding` refuses identity (`identity;q=0`, or `*;q=0` without \
        naming it) and every coding this answer has (`gzip`, `br`).",
    content_type = "application/problem+json",
    headers(("Vary" = String, description = "`accept-encoding`."))
)]
pub struct NotAcceptable(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "`date` missing or not a real `YYYY-MM-DD` date, or an unknown parameter.",
    content_type = "application/problem+json"
)]
pub struct BadTripsQuery(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 501,
    description = "The feed was not loaded from a GTFS zip, so its trips are not known \
        (configure `[[instances.feeds]]`).",
    content_type = "application/problem+json"
)]
pub struct TripsNotKnown(pub Problem);

// --- Waybills ---------------------------------------------------------------------------

#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "api_token is set and the bearer token is missing or wrong.",
    content_type = "application/problem+json"
)]
pub struct WriteUnauthorized(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 413,
    description = "Body too large.",
    content_type = "application/problem+json"
)]
pub struct BodyTooLarge(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 415,
    description = "Not application/json.",
    content_type = "application/problem+json"
)]
pub struct NotJson(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "No such waybill.",
    content_type = "application/problem+json"
)]
pub struct NoSuchWaybill(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "A bad filter, limit or cursor.",
    content_type = "application/problem+json"
)]
pub struct BadWaybillQuery(pub Problem);

/// 400 of `POST /waybills`.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Not JSON, or a bad Idempotency-Key.",
    content_type = "application/problem+json"
)]
pub struct BadCreate(pub Problem);

/// 409 of `POST /waybills`.
#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "Vehicle or driver already booked for overlapping times, number taken, or \
        the key's first request still in flight.",
    content_type = "application/problem+json"
)]
pub struct CreateConflict(pub Problem);

/// 422 of `POST /waybills`.
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "Wrong shape, or does not fit the feed (the detail names the route or \
        trip), or the key was used for another body.",
    content_type = "application/problem+json"
)]
pub struct WaybillUnfit(pub Problem);

/// 503 of `POST /waybills`.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Database unavailable, the feed not loaded yet, or the write kept \
        colliding with concurrent ones.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64))
)]
pub struct CreateUnavailable(pub Problem);

/// 400 of `PATCH /waybills/{id}`.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "Not JSON, or a malformed If-Match.",
    content_type = "application/problem+json"
)]
pub struct BadChange(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 409,
    description = "That move is not allowed from the current status.",
    content_type = "application/problem+json"
)]
pub struct MoveNotAllowed(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 412,
    description = "If-Match names another version: read the waybill again.",
    content_type = "application/problem+json"
)]
pub struct VersionChanged(pub Problem);

/// 422 of `PATCH /waybills/{id}`.
#[derive(IntoResponses)]
#[response(
    status = 422,
    description = "Wrong shape, or readings missing or inconsistent.",
    content_type = "application/problem+json"
)]
pub struct BadReadings(pub Problem);

#[derive(IntoResponses)]
#[response(
    status = 428,
    description = "If-Match is missing.",
    content_type = "application/problem+json"
)]
pub struct IfMatchMissing(pub Problem);

/// 503 of `PATCH /waybills/{id}`.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "Database unavailable, or the write collided with concurrent ones.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64))
)]
pub struct ChangeUnavailable(pub Problem);
