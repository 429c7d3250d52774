//! The fixture zips, with `ETag`, `Last-Modified` and 304.

use super::*;

// ---------------------------------------------------------------------------------------
// Zips
// ---------------------------------------------------------------------------------------

pub(super) fn serve_zip(inner: &Inner, name: &str, headers: &HeaderMap) -> Prepared {
    let data = inner.data.read().unwrap();
    let Some(zip) = data.zips.get(name) else {
        return Prepared::text(StatusCode::NOT_FOUND, "404 Not Found");
    };
    let last_modified = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&zip.modified)
        .unwrap();
    let not_modified = if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2), weak comparison.
        inm.to_str().unwrap_or("").split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == zip.etag
        })
    } else if let Some(ims) = headers.get(header::IF_MODIFIED_SINCE) {
        ims.to_str()
            .ok()
            .and_then(|s| jiff::fmt::rfc2822::parse(s).ok())
            .is_some_and(|since| zip.modified <= since.timestamp())
    } else {
        false
    };
    let mut p = if not_modified {
        Prepared::new(StatusCode::NOT_MODIFIED, "application/zip", Bytes::new())
    } else {
        Prepared::new(StatusCode::OK, "application/zip", zip.bytes.clone())
    };
    p.headers.push((header::ETAG, zip.etag.clone()));
    p.headers.push((header::LAST_MODIFIED, last_modified));
    p
}
