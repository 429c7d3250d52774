//! Who may call what: the API token for writes, the ops rule for ops endpoints (loopback,
//! or the ops token; [`require_ops_access`] is their route layer), either token for a
//! manual refresh.
//!
//! Tokens travel as `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC
//! 9110, 11.1) and tokens are compared in constant time, lengths included.
//! [`WriteAccess`] is an extractor: a handler that takes it before its body refuses an
//! unauthenticated client before the body is read, so such a client learns nothing of
//! the schema from validation errors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::state::AppState;

/// Whether an `Authorization` header value is `Bearer <token>`. Both sides are hashed
/// first, so neither the content nor the length of the token shows in the timing.
pub(crate) fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some((scheme, given)) = authorization.and_then(|h| h.trim_start().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (given, token) = (Sha256::digest(given.trim()), Sha256::digest(token));
    given
        .iter()
        .zip(token.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Proof that the request may write: the API token when one is configured. Put it before
/// the body among a handler's arguments.
#[derive(Debug, Clone, Copy)]
pub struct WriteAccess;

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = &state.config.api_token else {
            return Ok(WriteAccess);
        };
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if bearer_matches(authorization, token.expose()) {
            Ok(WriteAccess)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "writes need Authorization: Bearer <api_token>",
            )
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
        }
    }
}

/// Who may start a refresh by hand (it costs OTP a crawl): with `ops_token` or
/// `api_token` set, a client sending either as its bearer token, wherever it is; with
/// neither set, loopback clients only, as for the ops endpoints. `Err` is the status
/// and why.
pub fn refresh_access(
    loopback: bool,
    authorization: Option<&str>,
    ops_token: Option<&str>,
    api_token: Option<&str>,
) -> Result<(), (StatusCode, &'static str)> {
    let tokens: Vec<&str> = [ops_token, api_token].into_iter().flatten().collect();
    if tokens.is_empty() {
        return if loopback {
            Ok(())
        } else {
            Err((
                StatusCode::FORBIDDEN,
                "refreshes are started by loopback clients only (set ops_token to allow others)",
            ))
        };
    }
    // Both compared, so the timing does not say which token matched.
    let matched = tokens
        .iter()
        .fold(false, |any, t| bearer_matches(authorization, t) | any);
    if matched {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "a refresh needs Authorization: Bearer <ops_token> (or <api_token>)",
        ))
    }
}

/// Proof that the request may start a refresh ([`refresh_access`]).
#[derive(Debug, Clone, Copy)]
pub struct RefreshAccess;

impl FromRequestParts<AppState> for RefreshAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|c| c.0.ip().to_canonical().is_loopback());
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let config = &state.config;
        refresh_access(
            loopback,
            authorization,
            config.ops_token.as_ref().map(|t| t.expose()),
            config.api_token.as_ref().map(|t| t.expose()),
        )
        .map(|()| RefreshAccess)
        .map_err(|(status, why)| {
            let error = ApiError::new(status, why);
            if status == StatusCode::UNAUTHORIZED {
                error.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            } else {
                error
            }
        })
    }
}

/// Whether a client may call the ops endpoints. Pure, so it is tested on its own.
pub fn ops_access(
    peer: Option<IpAddr>,
    authorization: Option<&str>,
    ops_token: Option<&str>,
) -> Result<(), &'static str> {
    if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) {
        return Ok(());
    }
    let Some(token) = ops_token else {
        return Err("ops endpoints answer loopback clients only (set ops_token to allow others)");
    };
    if bearer_matches(authorization, token) {
        Ok(())
    } else {
        Err("ops endpoints need Authorization: Bearer <ops_token> from non-loopback clients")
    }
}

/// The guard of the ops endpoints ([`ops_access`]), as a route layer: 403 when refused.
pub async fn require_ops_access(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = state.config.ops_token.as_ref().map(|t| t.expose());
    match ops_access(peer, authorization, token) {
        Ok(()) => next.run(req).await,
        Err(why) => ApiError::forbidden(why).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        // RFC 9110: the scheme is case-insensitive.
        assert!(bearer_matches(Some("bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("BEARER s3cret"), "s3cret"));
        assert!(bearer_matches(Some("Bearer  s3cret "), "s3cret"));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("s3cret"),
            Some("Bearers3cret"),
        ] {
            assert!(!bearer_matches(bad, "s3cret"), "{bad:?}");
        }
    }

    #[test]
    fn who_may_refresh() {
        use StatusCode as S;
        let deny = |r: Result<(), (S, &str)>| r.unwrap_err().0;
        // No token configured: loopback only.
        assert!(refresh_access(true, None, None, None).is_ok());
        assert_eq!(deny(refresh_access(false, None, None, None)), S::FORBIDDEN);
        // A token configured: needed from everyone, loopback included; either one works.
        for (ops, api) in [(Some("o"), None), (None, Some("a")), (Some("o"), Some("a"))] {
            for loopback in [true, false] {
                assert_eq!(
                    deny(refresh_access(loopback, None, ops, api)),
                    S::UNAUTHORIZED
                );
                assert_eq!(
                    deny(refresh_access(loopback, Some("Bearer x"), ops, api)),
                    S::UNAUTHORIZED
                );
                for t in [ops, api].into_iter().flatten() {
                    let h = format!("Bearer {t}");
                    assert!(refresh_access(loopback, Some(&h), ops, api).is_ok());
                }
            }
        }
    }

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)));

    #[test]
    fn loopback_needs_no_token() {
        assert!(ops_access(LOOPBACK, None, None).is_ok());
        assert!(ops_access(LOOPBACK, None, Some("s3cret")).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(ops_access(Some(mapped), None, None).is_ok());
        assert!(ops_access(Some("::1".parse().unwrap()), None, None).is_ok());
    }

    #[test]
    fn remote_clients_need_the_token() {
        assert!(ops_access(REMOTE, None, None).is_err());
        assert!(ops_access(REMOTE, Some("Bearer s3cret"), None).is_err());
        assert!(ops_access(REMOTE, None, Some("s3cret")).is_err());
        assert!(ops_access(REMOTE, Some("Bearer wrong"), Some("s3cret")).is_err());
        assert!(ops_access(REMOTE, Some("s3cret"), Some("s3cret")).is_err());
        assert!(ops_access(REMOTE, Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert!(ops_access(None, Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert!(ops_access(None, None, Some("s3cret")).is_err());
    }
}
