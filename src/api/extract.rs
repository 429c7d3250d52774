//! What handlers take from a request, each refusal already a problem+json answer:
//! [`JsonBody`] (413, 415, 400, 422, and NUL characters by field), [`Query`] (typed query
//! parameters, unknown ones refused) and [`if_match`] (the version a write expects).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::value::{Error as ValueError, MapDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};

use super::{ApiError, ApiResult};

/// Largest request body (the waybill routes set it with `DefaultBodyLimit`).
pub const MAX_BODY: usize = 256 * 1024;

/// A JSON body, with every way it can be wrong answered as problem+json: 413 too large,
/// 415 not JSON, 400 not parseable, 422 the wrong shape (types, missing or unknown fields).
/// Keeps the raw bytes (the idempotency fingerprint is computed over them).
pub struct JsonBody<T>(pub T, pub Bytes);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read the body: {e}"))
            }
        })?;
        if let Some(field) = nul_field(&bytes) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "invalid body: {field} holds a NUL character (\\u0000), which no field may"
                ),
            ));
        }
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(JsonBody(value, bytes)),
            Err(e) if e.is_data() => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid body: {e}"),
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }
}

/// The JSON path (`notes`, `trip_ids[2]`) of a string holding a NUL character, which
/// PostgreSQL cannot store in text. Bodies without the escape `\u0000` (nearly all) are
/// not parsed a second time.
pub(crate) fn nul_field(body: &[u8]) -> Option<String> {
    if !body.windows(6).any(|w| w == br"\u0000") {
        return None;
    }
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        use serde_json::Value as V;
        match v {
            V::String(s) if s.contains('\0') => Some(path.to_owned()),
            V::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            V::Object(map) => map.iter().find_map(|(k, v)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.contains('\0') {
                    Some(here.replace('\0', "\\u0000"))
                } else {
                    walk(v, &here)
                }
            }),
            _ => None,
        }
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    walk(&value, "")
}

/// Query parameters deserialized into `T`, a struct with one field per parameter (the
/// same struct, with `#[derive(IntoParams)]`, documents them). A parameter that is not a
/// field of `T`, or a value holding a NUL character (`%00`: no id or text here may
/// contain one, and PostgreSQL refuses it in text), is a 400 naming it. A parameter given
/// twice counts once, the last. Values are text: a field is a `String`, or is parsed by a
/// `deserialize_with` function (see [`parse_value`]) whose error is the 400's detail.
///
/// The allowed names are the struct's own: serde's derive hands its field list to
/// `Deserializer::deserialize_struct`, and [`field_names`] asks for it, so the list
/// cannot drift from the fields.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let allowed = field_names::<T>();
        if let Some(unknown) = pairs.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {unknown:?}; allowed: {}",
                allowed.join(", ")
            )));
        }
        if let Some((name, _)) = pairs.iter().find(|(_, v)| v.contains('\0')) {
            return Err(ApiError::bad_request(format!(
                "query parameter {name:?} holds a NUL character"
            )));
        }
        let values = pairs.iter().map(|(k, v)| (k.as_str(), Text(v)));
        T::deserialize(MapDeserializer::new(values))
            .map(Query)
            .map_err(|e: ValueError| ApiError::bad_request(e.to_string()))
    }
}

/// A query value parsed by `parse`; when it does not parse, the error (a 400's detail)
/// is `{name}="{text}" {why}`. For `#[serde(default, deserialize_with = ...)]` on an
/// `Option` field of a [`Query`] struct.
pub fn parse_value<'de, D: Deserializer<'de>, T>(
    d: D,
    name: &str,
    why: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text)
        .map(Some)
        .ok_or_else(|| de::Error::custom(format!("{name}={text:?} {why}")))
}

/// The field names of a struct deriving `Deserialize`, as serde's derive names them
/// (`r#type` is `type`, renames applied). Empty for a type that is not such a struct,
/// which a [`Query`] then refuses every parameter of (tests check each query struct).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or_default()
}

/// A deserializer that only records the field list it is asked for, then fails.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ValueError> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, ValueError> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names only"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// One query value: text, which is also `Some(text)` for an `Option` field.
struct Text<'a>(&'a str);

impl<'de> Deserializer<'de> for Text<'_> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_some(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, 'a> IntoDeserializer<'de, ValueError> for Text<'a> {
    type Deserializer = Text<'a>;

    fn into_deserializer(self) -> Text<'a> {
        self
    }
}

/// What `If-Match` may be, as the OpenAPI document states it: `*`, or the waybill's ETag
/// (`"3"`), also weakened by a proxy (`W/"3"`), or the bare version (`3`, DESIGN.md's
/// `If-Match: <version>`). Lists of tags are not taken: a waybill has one version. Nine
/// digits at most, so a version always fits an i32.
pub const IF_MATCH_PATTERN: &str = r#"^(\*|(W/)?"[0-9]{1,9}"|[0-9]{1,9})$"#;

/// The version `If-Match` names; `None` for `*`, which matches any current version (RFC
/// 9110, 13.1.1). Exactly the forms of [`IF_MATCH_PATTERN`]; anything else is a 400.
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i32>> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match with the waybill's ETag (its version)",
        )
    })?;
    let malformed =
        || ApiError::bad_request("If-Match must be the waybill's ETag, such as \"3\", or *");
    let text = value.to_str().map_err(|_| malformed())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').ok_or_else(malformed)?,
        // A bare version, but not the rest of a weak tag (`W/3`).
        None if tag.len() == text.len() => tag,
        None => return Err(malformed()),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    // At most nine ASCII digits: always an i32.
    digits.parse().map(Some).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn nul_characters_are_found_by_their_field() {
        assert_eq!(nul_field(br#"{"notes":"fine"}"#), None);
        // A backslash followed by u0000 is text, not a NUL.
        assert_eq!(nul_field(br#"{"notes":"\\u0000"}"#), None);
        assert_eq!(
            nul_field(br#"{"notes":"a\u0000b"}"#).as_deref(),
            Some("notes")
        );
        assert_eq!(
            nul_field(br#"{"trip_ids":["x","\u0000"]}"#).as_deref(),
            Some("trip_ids[1]")
        );
        assert_eq!(nul_field(br#"{"a\u0000":1}"#).as_deref(), Some("a\\u0000"));
    }

    #[test]
    fn if_match_forms() {
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_static(v));
            h
        };
        assert_eq!(if_match(&h("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&h("W/\"4\"")).unwrap(), Some(4));
        assert_eq!(if_match(&h("5")).unwrap(), Some(5));
        assert_eq!(if_match(&h("*")).unwrap(), None);
        assert_eq!(
            if_match(&HeaderMap::new()).unwrap_err().status(),
            StatusCode::PRECONDITION_REQUIRED
        );
        // Exactly the documented forms (IF_MATCH_PATTERN): anything else is a 400,
        // including what a lenient parser would read as a number.
        for bad in [
            "\"x\"",
            "W/\"!+$`3\"",
            "\"3",
            "3\"",
            "\"\"3\"\"",
            "W/3",
            "W/W/\"3\"",
            "+3",
            "-3",
            "\"\"",
            "\"1234567890\"",
            "\"1\", \"2\"",
        ] {
            assert_eq!(
                if_match(&h(bad)).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(if_match(&h("\"999999999\"")).unwrap(), Some(999_999_999));
    }

    #[derive(Debug, Deserialize)]
    struct Sample {
        r#type: Option<String>,
        #[serde(default, deserialize_with = "small")]
        limit: Option<u8>,
        name: Option<String>,
    }

    fn small<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        parse_value(d, "limit", "is not a small number", |t| t.parse().ok())
    }

    async fn query(uri: &str) -> ApiResult<Sample> {
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        Query::<Sample>::from_request_parts(&mut parts, &())
            .await
            .map(|Query(q)| q)
    }

    #[tokio::test]
    async fn queries_are_typed_and_refuse_what_they_do_not_name() {
        assert_eq!(field_names::<Sample>(), ["type", "limit", "name"]);
        assert_eq!(field_names::<String>(), [] as [&str; 0]);
        let q = query("/x?type=3&limit=7&name=a+b%C3%A9").await.unwrap();
        assert_eq!(
            (q.r#type.as_deref(), q.limit, q.name.as_deref()),
            (Some("3"), Some(7), Some("a bé"))
        );
        let q = query("/x").await.unwrap();
        assert_eq!((q.r#type, q.limit, q.name), (None, None, None));
        // Empty is a value; the last of a repeated parameter counts.
        let q = query("/x?name=&type=1&type=2").await.unwrap();
        assert_eq!(
            (q.name.as_deref(), q.r#type.as_deref()),
            (Some(""), Some("2"))
        );
        for (uri, status) in [
            ("/x?colour=red", StatusCode::BAD_REQUEST),
            ("/x?name=a%00", StatusCode::BAD_REQUEST),
            ("/x?limit=300", StatusCode::BAD_REQUEST),
            ("/x?limit=", StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(query(uri).await.unwrap_err().status(), status, "{uri}");
        }
    }
}
