//! Unknown keys: the check of a table's keys against a struct's own field names, and
//! the suggestion of the key (or variable) probably meant.

use super::types::ConfigError;

/// Refuses the first key of `table` that is not one of `known()`, naming it as `at.key`.
pub(super) fn check_keys<I: Iterator<Item = &'static str>>(
    at: &str,
    table: &toml::Table,
    known: impl Fn() -> I,
) -> Result<(), ConfigError> {
    match table.keys().find(|key| !known().any(|k| k == key.as_str())) {
        Some(key) => Err(unknown_key(format!("{at}.{key}"), key, known())),
        None => Ok(()),
    }
}

/// `urll: unknown key; did you mean "url"?`
pub(super) fn unknown_key<'a>(
    shown: String,
    key: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> ConfigError {
    let problem = match closest(key, known, typo_limit(key)) {
        Some(meant) => format!("unknown key; did you mean {meant:?}?"),
        None => "unknown key".to_owned(),
    };
    ConfigError::new(shown, problem)
}

/// A serde error from reading a table, on one line (`... in `refresh_interval``).
pub(super) fn toml_problem(e: &toml::de::Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The candidate nearest to `word` by edit distance (ignoring case), when it is within
/// `limit` edits: near enough to be what was meant.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    limit: usize,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&word, &c.to_lowercase()), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// How many edits a typo of `word` may have: half its length, at least 2.
pub(super) fn typo_limit(word: &str) -> usize {
    (word.chars().count() / 2).max(2)
}

/// The field names serde's derive gave `T` (a struct), read from the derive itself so
/// that the key checks and their suggestions never drift from the struct: serde passes
/// them to `Deserializer::deserialize_struct`, which this probe records and then fails.
pub(super) fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only structs are probed"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_near_misses_only() {
        let keys = ["url", "name", "refresh_interval", "graphql_path"];
        let near = |word: &str| closest(word, keys, typo_limit(word));
        assert_eq!(near("urll"), Some("url"));
        assert_eq!(near("URL"), Some("url"));
        assert_eq!(near("refresh_intervall"), Some("refresh_interval"));
        assert_eq!(near("graphql"), None);
        assert_eq!(near("colour"), None);
    }
}
