//! `replica_id`: the name one replica of the service goes by among those sharing a
//! database (the refresh lease's holder, `GET /instances`, the log of who stored a
//! version). Unset, the service makes one at start-up (`crate::replica`).

use serde::Serialize;

use super::value::{Refused, Setting};

/// The longest replica id accepted.
pub const REPLICA_ID_MAX: usize = 64;

/// A replica's id as configured: 1 to 64 (`REPLICA_ID_MAX`) characters among ASCII letters,
/// digits and `.`, `_`, `:`, `-` (a host name, a pod name, `host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaId(String);

impl ReplicaId {
    /// `text` when it is a valid id.
    pub fn parse(text: &str) -> Option<ReplicaId> {
        let ok = !text.is_empty()
            && text.len() <= REPLICA_ID_MAX
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        ok.then(|| ReplicaId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Setting for ReplicaId {
    const EXPECTED: &'static str =
        "1 to 64 characters among ASCII letters, digits and . _ : - (such as api-2)";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        ReplicaId::parse(text).ok_or(Refused::Kind)
    }
    type Shown = String;
    fn show(&self) -> String {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_plain_names() {
        for ok in ["a", "api-2", "node1.example:8000", "pod_7"] {
            assert!(ReplicaId::parse(ok).is_some(), "{ok}");
        }
        let long = "x".repeat(REPLICA_ID_MAX + 1);
        for bad in ["", " a", "a b", "é", "a/b", "a\u{0}", long.as_str()] {
            assert!(ReplicaId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
