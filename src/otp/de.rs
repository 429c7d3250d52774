//! Reading OTP's JSON answers with serde: the field types the answers' structs are made
//! of, and the error message of an answer that does not fit them.
//!
//! [`decode`] reads an answer in one pass into structs that borrow its strings. Only when
//! that fails is the body read again, with `serde_path_to_error`, to name the JSON path
//! of what was wrong: `{path}: {reason}`, the reason one of "missing", "is null",
//! "expected an integer, found a string" and the like, or what a post-parse check says.
//! A body that is not JSON at all is said so, with its start.
//!
//! The field types keep the rules the answers are read by:
//! - [`Object`]: a struct read from a JSON object only (a derived struct also takes a
//!   JSON array, fields by position);
//! - a required field is a plain field: missing is "missing", and `null` is "is null"
//!   for [`Text`] and [`List`]; an optional one is an `Option`, missing or `null` is none;
//! - [`Text`]: a string, borrowed from the body unless it has escapes; an optional text
//!   that is empty counts as absent ([`text`]);
//! - [`Int`]: an integer that fits `i64` (`1.0` is not one); [`Num`]: any number, as `f64`;
//! - [`List`], [`TopList`]: an array; [`Count`]: an array whose items are checked and
//!   counted, not kept;
//! - unknown fields are skipped; a field given twice is refused.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_path_to_error::Segment;

use super::{AdapterError, ECHO_CHARS, echo, malformed};

/// `body` read as `T`, or why not: the JSON path of the first value that does not fit,
/// named from `root` (what the top-level value is called, or "" for nothing).
pub(super) fn decode<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    root: &str,
) -> Result<T, AdapterError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("empty body"));
    }
    let text = std::str::from_utf8(body).map_err(|e| not_json(&e, body))?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => explain::<T>(text, root, &e),
        _ => not_json(&e, body),
    })
}

fn not_json(e: &dyn fmt::Display, body: &[u8]) -> AdapterError {
    let text = String::from_utf8_lossy(&body[..body.len().min(4 * ECHO_CHARS)]);
    malformed(format!("not JSON ({e}); body starts {}", echo(&text)))
}

/// Why `text` (JSON that does not fit `T`, as `first` says) was refused. A body that is
/// not JSON further on is "not JSON", as if it had been read whole first.
#[cold]
fn explain<'a, T: Deserialize<'a>>(
    text: &'a str,
    root: &str,
    first: &serde_json::Error,
) -> AdapterError {
    if let Err(e) = serde_json::from_str::<IgnoredAny>(text) {
        return not_json(&e, text.as_bytes());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(err) => err,
        // Not met: the same bytes read the same way fail the same way.
        Ok(_) => return describe(root.to_owned(), first),
    };
    let mut path = root.to_owned();
    for segment in err.path().iter() {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(path, "[{index}]");
            }
            Segment::Map { key } => push_key(&mut path, key),
            Segment::Enum { variant } => push_key(&mut path, variant),
            Segment::Unknown => push_key(&mut path, "?"),
        }
    }
    describe(path, err.inner())
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    if key.len() <= ECHO_CHARS {
        path.push_str(key);
    } else {
        path.push_str(&echo(key));
    }
}

/// The message of serde_json's error `e` at `path`, in the parsers' words.
fn describe(mut path: String, e: &serde_json::Error) -> AdapterError {
    let full = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&at).unwrap_or(&full);
    let field = |prefix: &str| msg.strip_prefix(prefix)?.strip_suffix('`');
    let reason = if let Some(name) = field("missing field `") {
        push_key(&mut path, name);
        "missing".to_owned()
    } else if let Some(name) = field("duplicate field `") {
        push_key(&mut path, name);
        "given twice".to_owned()
    } else if let Some((unexpected, expected)) = msg
        .strip_prefix("invalid type: ")
        .and_then(|m| m.rsplit_once(", expected "))
    {
        format!("expected {expected}, found {}", kind(unexpected))
    } else {
        match msg.char_indices().nth(ECHO_CHARS) {
            Some((cut, _)) => format!("{}...", &msg[..cut]),
            None => msg.to_owned(),
        }
    };
    malformed(if path.is_empty() {
        reason
    } else {
        format!("{path}: {reason}")
    })
}

/// What a value serde_json describes as `unexpected` is, in JSON's terms.
fn kind(unexpected: &str) -> &'static str {
    match unexpected {
        "null" | "unit value" => "null",
        "sequence" => "an array",
        "map" => "an object",
        u if u.starts_with("boolean") => "a boolean",
        u if u.starts_with("integer") || u.starts_with("floating point") => "a number",
        u if u.starts_with("string") || u.starts_with("character") => "a string",
        _ => "another value",
    }
}

/// A struct `T` (derived) read from a JSON object only: derived `Deserialize` asks for
/// `deserialize_struct`, which serde_json also answers from an array (fields by
/// position); `deserialize_map` takes `{` only.
pub(super) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d, "an object").map(Object)
    }
}

/// Reads `T` (derived) from a JSON object; anything else is "expected {expecting}".
pub(super) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<T, D::Error> {
    d.deserialize_map(ObjectVisitor(expecting, PhantomData))
}

struct ObjectVisitor<T>(&'static str, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// A required field that may be `null` (`None`) or an object `T`. (`Option<T>` would also
/// take a missing field as `None`.)
pub(super) struct NullOrObject<T>(pub Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NullOrObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NullOrVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for NullOrVisitor<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
                ObjectVisitor("an object", PhantomData)
                    .visit_map(map)
                    .map(Some)
            }
        }
        // Not `deserialize_option`: serde fills a missing field by asking for an option,
        // which answers `None`; asked for anything else, it is "missing".
        d.deserialize_any(NullOrVisitor(PhantomData))
            .map(NullOrObject)
    }
}

/// A JSON string, borrowed from the body unless it has escapes.
pub(super) struct Text<'a>(Cow<'a, str>);

impl Text<'_> {
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(s))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("is null"))
            }
        }
        d.deserialize_any(TextVisitor).map(Text)
    }
}

/// An optional text: empty counts as absent.
pub(super) fn text<'t>(t: &'t Option<Text<'_>>) -> Option<&'t str> {
    t.as_ref().map(Text::as_str).filter(|s| !s.is_empty())
}

/// [`text`], owned.
pub(super) fn owned(t: &Option<Text<'_>>) -> Option<String> {
    text(t).map(str::to_owned)
}

/// A JSON string, checked (valid escapes) but not kept.
pub(super) struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyStringVisitor;
        impl Visitor<'_> for AnyStringVisitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
            fn visit_unit<E: de::Error>(self) -> Result<AnyString, E> {
                Err(E::custom("is null"))
            }
        }
        d.deserialize_any(AnyStringVisitor)
    }
}

/// A JSON integer that fits `i64`; a float is not one, even `1.0`.
#[derive(Clone, Copy)]
pub(super) struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Int, E> {
                Ok(Int(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Int, E> {
                i64::try_from(n)
                    .map(Int)
                    .map_err(|_| E::invalid_type(Unexpected::Unsigned(n), &self))
            }
        }
        d.deserialize_any(IntVisitor)
    }
}

/// Any JSON number, as `f64`.
#[derive(Clone, Copy)]
pub(super) struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NumVisitor;
        impl Visitor<'_> for NumVisitor {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Num, E> {
                Ok(Num(n as f64))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Num, E> {
                Ok(Num(n as f64))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Num, E> {
                Ok(Num(n))
            }
        }
        d.deserialize_any(NumVisitor)
    }
}

/// A JSON boolean; any other value is read and taken as none.
pub(super) struct AnyBool(pub Option<bool>);

impl<'de> Deserialize<'de> for AnyBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnyBoolVisitor;
        impl<'de> Visitor<'de> for AnyBoolVisitor {
            type Value = AnyBool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<AnyBool, E> {
                Ok(AnyBool(Some(b)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<AnyBool, E> {
                Ok(AnyBool(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<AnyBool, E> {
                Ok(AnyBool(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<AnyBool, E> {
                Ok(AnyBool(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyBool, E> {
                Ok(AnyBool(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<AnyBool, E> {
                Ok(AnyBool(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyBool, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AnyBool(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyBool, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyBool(None))
            }
        }
        d.deserialize_any(AnyBoolVisitor)
    }
}

/// A JSON array of `T` as a field: `null` is "is null".
pub(super) struct List<T>(pub Vec<T>);

/// A JSON array of `T` as the whole answer: `null` is not an array.
pub(super) struct TopList<T>(pub Vec<T>);

struct SeqVisitor<T> {
    field: bool,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // Not the announced size: serde_json does not know it, and a hostile one must
        // not reserve memory.
        let mut out = Vec::new();
        while let Some(item) = seq.next_element()? {
            out.push(item);
        }
        Ok(out)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
        Err(if self.field {
            E::custom("is null")
        } else {
            E::invalid_type(Unexpected::Unit, &self)
        })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = SeqVisitor {
            field: true,
            item: PhantomData,
        };
        d.deserialize_any(visitor).map(List)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TopList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = SeqVisitor {
            field: false,
            item: PhantomData,
        };
        d.deserialize_any(visitor).map(TopList)
    }
}

/// The items of an optional list: missing or `null` is none.
pub(super) fn items<T>(list: Option<List<T>>) -> Vec<T> {
    list.map_or_else(Vec::new, |l| l.0)
}

/// The number of items of a JSON array of `T`, each read (checked) and dropped.
pub(super) struct Count<T>(pub usize, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Count<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for CountVisitor<T> {
            type Value = Count<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count<T>, A::Error> {
                let mut n = 0;
                while seq.next_element::<T>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n, PhantomData))
            }
        }
        d.deserialize_any(CountVisitor(PhantomData))
    }
}

/// A required field checked after the parse ([`Required::get`]), for when its absence
/// must be reported after fields that follow it in the answer: with `#[serde(default)]`,
/// a missing one is [`Required::Missing`].
#[derive(Default)]
pub(super) enum Required<T> {
    #[default]
    Missing,
    Null,
    Given(T),
}

impl<T> Required<T> {
    /// The value, or the error at `path`.
    pub(super) fn get(self, path: &dyn fmt::Display) -> Result<T, AdapterError> {
        match self {
            Required::Given(v) => Ok(v),
            Required::Missing => Err(malformed(format!("{path}: missing"))),
            Required::Null => Err(malformed(format!("{path}: is null"))),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Required<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequiredVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for RequiredVisitor<T> {
            type Value = Required<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_none<E: de::Error>(self) -> Result<Required<T>, E> {
                Ok(Required::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Required<T>, D::Error> {
                T::deserialize(d).map(Required::Given)
            }
        }
        d.deserialize_option(RequiredVisitor(PhantomData))
    }
}
