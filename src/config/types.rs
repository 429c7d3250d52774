//! The types the other files of `config` share: the error, and the two values that hide
//! themselves when shown. Imports no sibling, so every file of the folder may use it.

use std::fmt;

use url::Url;

/// Shown instead of a secret.
pub const REDACTED: &str = "***";

/// A configuration problem: which key or variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    /// The file key (`connection_limit`, `instances[1].url`), the environment variable
    /// (`GTFS_CONNECTION_LIMIT`) or the file name for a syntax error.
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub(super) fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// A string that never shows itself in `Debug` output or in `GET /config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A PostgreSQL connection URL; its password is redacted wherever it is shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(Url);

impl DatabaseUrl {
    /// A `postgres://` or `postgresql://` URL (surrounding blanks ignored).
    pub(super) fn parse(text: &str) -> Option<Self> {
        Url::parse(text.trim())
            .ok()
            .filter(|url| matches!(url.scheme(), "postgres" | "postgresql"))
            .map(DatabaseUrl)
    }
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
    /// The URL with its password (and any `password` query parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some(REDACTED));
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        REDACTED.into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_themselves() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), REDACTED);
        let url = DatabaseUrl::parse(" postgres://u:pw@db:5432/w?sslmode=require&password=pw2 ")
            .expect("a postgres URL");
        assert_eq!(
            url.redacted(),
            "postgres://u:***@db:5432/w?sslmode=require&password=***"
        );
        assert_eq!(format!("{url:?}"), url.redacted());
        assert!(DatabaseUrl::parse("mysql://u:pw@db/w").is_none());
        assert!(DatabaseUrl::parse("not a url").is_none());
    }
}
