//! One cursor codec for every paged list (`GET /waybills`, `GET /feeds/{gtfs_id}/fetches`,
//! `GET /feeds/{gtfs_id}/routes`).
//!
//! A cursor is a list position (the last row id of a page; for routes, the last route's
//! sort key with the query's filters), base64url-encoded with a
//! checksum over the list's name and the position, so a cursor made up by hand, or one of
//! another list, is refused with 400 instead of silently paging from somewhere else. It is
//! not a secret: the checksum guards against mistakes, not against attackers, and every
//! position it can name is one the client could read anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiResult};

/// The cursor for the page after `position` in the list named `list`.
pub fn encode(list: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{position}.{}", checksum(list, position)))
}

/// The position a cursor of `list` names; 400 when it is not one this service issued for
/// that list.
pub fn decode(list: &str, cursor: &str) -> ApiResult<String> {
    let forged =
        || ApiError::bad_request("cursor is not one this service issued; start again without it");
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| forged())?)
        .map_err(|_| forged())?;
    let (position, sum) = raw.rsplit_once('.').ok_or_else(forged)?;
    if sum != checksum(list, position) {
        return Err(forged());
    }
    Ok(position.to_owned())
}

/// `limit=` of a paged list: `default` when absent, else a whole number from 1 to `max`.
pub fn limit(text: Option<&str>, default: i64, max: i64) -> ApiResult<i64> {
    match text {
        None => Ok(default),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit={l:?} must be a whole number from 1 to {max}"
                ))
            }),
    }
}

fn checksum(list: &str, position: &str) -> String {
    hex::encode(Sha256::digest(format!("gtfs-fetch {list} v1 {position}")))[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let c = encode("waybills", "0190f0c4-7a7e-7000-8000-000000000000");
        assert_eq!(
            decode("waybills", &c).unwrap(),
            "0190f0c4-7a7e-7000-8000-000000000000"
        );
        // Another list's cursor, a made-up one, one with a wrong checksum.
        assert!(decode("fetches bart", &c).is_err());
        assert!(decode("waybills", "nonsense").is_err());
        let forged = URL_SAFE_NO_PAD.encode("42.00000000");
        assert!(decode("waybills", &forged).is_err());
        // Positions holding dots survive.
        let c = encode("x", "a.b.c");
        assert_eq!(decode("x", &c).unwrap(), "a.b.c");
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert_eq!(limit(Some("1000"), 100, 1000).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(limit(Some(bad), 100, 1000).is_err(), "{bad}");
        }
    }
}
