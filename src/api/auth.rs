//! Who may call what: the API token for writes, the ops rule for ops endpoints.
//!
//! Tokens travel as `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC
//! 9110, 11.1) and tokens are compared in constant time, lengths included.
//! [`WriteAccess`] is an extractor: a handler that takes it before its body refuses an
//! unauthenticated client before the body is read, so such a client learns nothing of
//! the schema from validation errors.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
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
}
