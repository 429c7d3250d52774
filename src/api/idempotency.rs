//! `Idempotency-Key` on `POST /waybills`: the header's forms, and the canonical form of a
//! body that a key's fingerprint is taken over, so a retry of the same request (keys in
//! another order, other whitespace, `4234.0` for `4234`) is recognised as the same.
//! What is stored for a key, and when it expires, is in [`crate::db::waybills`].

use axum::http::HeaderMap;

use super::{ApiError, ApiResult};

/// What `Idempotency-Key` may be, as the OpenAPI document states it: 1 to 255 visible
/// ASCII characters other than `"`, bare or in double quotes (draft-ietf-httpapi-
/// idempotency-key-header sends a structured-field string, `"k"`; both are the key `k`).
/// No blanks: HTTP trims them at the ends, so a key made of them would arrive empty.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r#"^("[!#-~]{1,255}"|[!#-~]{1,255})$"#;

/// The idempotency key of a request, unquoted; exactly the forms of
/// [`IDEMPOTENCY_KEY_PATTERN`], anything else a 400.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let key = match bytes {
        [b'"', inner @ .., b'"'] => inner,
        _ => bytes,
    };
    if (1..=255).contains(&key.len())
        && key.iter().all(|&b| (b'!'..=b'~').contains(&b) && b != b'"')
    {
        // Visible ASCII only: always valid UTF-8.
        Ok(Some(String::from_utf8_lossy(key).into_owned()))
    } else {
        Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters other than \", \
             optionally in double quotes",
        ))
    }
}

/// The canonical form of a JSON body, what an idempotency key's fingerprint is taken
/// over: object keys sorted, no insignificant whitespace, and a whole number written the
/// same whether it came as `4234` or `4234.0` (both are the same request to the API). Two
/// bodies that mean the same request have the same form. Bytes that are not JSON (already
/// refused by [`JsonBody`](super::extract::JsonBody)) are returned as they are.
pub fn canonical_json(raw: &[u8]) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(&Value::String(k.clone()), out);
                    out.push(b':');
                    write(v, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(v, out);
                }
                out.push(b']');
            }
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    out.extend_from_slice((f as i64).to_string().as_bytes());
                }
                _ => out.extend_from_slice(n.to_string().as_bytes()),
            },
            other => out.extend_from_slice(other.to_string().as_bytes()),
        }
    }
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(value) => {
            let mut out = Vec::with_capacity(raw.len());
            write(&value, &mut out);
            out
        }
        Err(_) => raw.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    #[test]
    fn one_request_has_one_canonical_form() {
        let a = canonical_json(br#"{"b": [1, {"y": 2, "x": 4234.0}], "a": "\u00e9"}"#);
        let b = canonical_json("{\"a\":\"é\",\n \"b\":[1,{\"x\":4234,\"y\":2}]}".as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&a),
            r#"{"a":"é","b":[1,{"x":4234,"y":2}]}"#
        );
        assert_eq!(a, b);
        // Other values are other requests.
        assert_ne!(
            canonical_json(br#"{"a":1.5}"#),
            canonical_json(br#"{"a":1}"#)
        );
        assert_ne!(
            canonical_json(br#"{"a":"1"}"#),
            canonical_json(br#"{"a":1}"#)
        );
        assert_ne!(
            canonical_json(br#"{"a":[1,2]}"#),
            canonical_json(br#"{"a":[2,1]}"#)
        );
    }

    #[test]
    fn idempotency_key_forms() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        let long = "k".repeat(255);
        for (given, key) in [
            ("7f0c-2026-12-01-bus-117", "7f0c-2026-12-01-bus-117"),
            ("\"7f0c\"", "7f0c"),
            ("!#~", "!#~"),
            (long.as_str(), long.as_str()),
        ] {
            assert_eq!(idempotency_key(&h(given)).unwrap().as_deref(), Some(key));
        }
        // Everything IDEMPOTENCY_KEY_PATTERN refuses is a 400.
        let too_long = "k".repeat(256);
        for bad in [
            "",
            "\"\"",
            "\"",
            "a b",
            "a\"b",
            "\"a",
            "\"\"a\"\"",
            "\té",
            too_long.as_str(),
        ] {
            let Ok(value) = HeaderValue::from_str(bad) else {
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.insert("idempotency-key", value);
            assert_eq!(
                idempotency_key(&headers).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            "idempotency-key",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(idempotency_key(&headers).is_err());
    }
}
