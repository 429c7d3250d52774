//! How one value is read and checked: the [`Setting`] trait (file, environment, shown),
//! the numeric [`Range`]s and the shared [`bounds`], [`layer`] (default → file →
//! environment) and the wording of a refusal.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::types::{ConfigError, DatabaseUrl, REDACTED, Secret};

/// Why a value was refused; [`layer`] puts the key and the value in front of it.
#[derive(Debug)]
pub(super) enum Refused {
    /// Not the kind of value the key takes ([`Setting::EXPECTED`] says which).
    Kind,
    /// A number, but outside the key's range.
    Range(Range),
    /// The kind is right but a part of it is not (one entry of a list): the whole
    /// message, naming that part.
    Part(String),
}

/// The numbers a numeric key accepts, both ends included, in the key's own unit.
///
/// Every count, size and duration has an upper bound: a typo such as
/// `GTFS_CONNECTION_LIMIT=99999999999` or `1e30` is refused at start-up, saying the range,
/// instead of turning into a pool nobody can open or a timer that overflows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    min: f64,
    max: f64,
    unit: &'static str,
}

impl Range {
    /// Whole numbers from `min` to `max`.
    pub(super) const fn count(min: u64, max: u64) -> Self {
        Range {
            min: min as f64,
            max: max as f64,
            unit: "",
        }
    }
    /// Seconds from `min` to `max`.
    const fn seconds(min: f64, max: f64) -> Self {
        Range {
            min,
            max,
            unit: " seconds",
        }
    }
    fn contains(&self, n: f64) -> bool {
        self.min <= n && n <= self.max
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from {} to {}{}", self.min, self.max, self.unit)
    }
}

/// Bounds shared by several keys (README, "Configuration", lists them per key).
pub(super) mod bounds {
    use super::Range;

    /// One week: longer than any sensible timeout, interval or lifetime.
    pub const WEEK: f64 = 7.0 * 24.0 * 3600.0;
    /// Durations where 0 means "none".
    pub const SECONDS: Range = Range::seconds(0.0, WEEK);
    /// Durations that must not be 0: at least a millisecond (the finest unit used).
    pub const POSITIVE_SECONDS: Range = Range::seconds(0.001, WEEK);
    /// Connections (per OTP host, or in the database pool): far above what one process
    /// can use, far below what exhausts file descriptors by accident.
    pub const CONNECTIONS: Range = Range::count(1, 10_000);
    /// Byte sizes: 1 TiB.
    pub const BYTES: Range = Range::count(1, 1 << 40);
}

/// A number as written in the file: TOML integers and floats alike.
fn toml_number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A number as written in a variable (`50`, `0.25`, `1e30`).
fn text_number(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

/// A whole number within `range` (whole floats such as `50.0` included); a number
/// outside it, however large, is out of range rather than "not a number".
fn whole<T: TryFrom<u64>>(n: Option<f64>, range: Range) -> Result<T, Refused> {
    let n = n.filter(|n| !n.is_nan()).ok_or(Refused::Kind)?;
    if !range.contains(n) {
        return Err(Refused::Range(range));
    }
    if n.fract() != 0.0 {
        return Err(Refused::Kind);
    }
    // In range, so 0 <= n <= 2^53: exact as a u64.
    T::try_from(n as u64).map_err(|_| Refused::Range(range))
}

/// A number of seconds within `range`.
fn seconds(n: Option<f64>, range: Range) -> Result<Duration, Refused> {
    let n = n.filter(|n| !n.is_nan()).ok_or(Refused::Kind)?;
    if !range.contains(n) {
        return Err(Refused::Range(range));
    }
    Duration::try_from_secs_f64(n).map_err(|_| Refused::Range(range))
}

/// How a value is read from the file and from the environment, and shown in `/config`.
pub(super) trait Setting: Sized {
    /// What the value should be, for error messages.
    const EXPECTED: &'static str;
    /// What is allowed beyond the type: a [`Range`] for numbers, `()` for the rest.
    type Allowed: Copy;
    fn from_toml(value: &toml::Value, allowed: Self::Allowed) -> Result<Self, Refused>;
    fn from_env(text: &str, allowed: Self::Allowed) -> Result<Self, Refused>;
    /// How `GET /config` shows the value (secrets redacted, durations in seconds).
    type Shown: Serialize;
    fn show(&self) -> Self::Shown;
}

macro_rules! integer_setting {
    ($($t:ty => $shown:ty),*) => {$(
        impl Setting for $t {
            const EXPECTED: &'static str = "a whole number";
            type Allowed = Range;
            fn from_toml(value: &toml::Value, range: Range) -> Result<Self, Refused> {
                whole(toml_number(value), range)
            }
            fn from_env(text: &str, range: Range) -> Result<Self, Refused> {
                whole(text_number(text), range)
            }
            type Shown = $shown;
            fn show(&self) -> $shown {
                *self as $shown
            }
        }
    )*};
}
integer_setting!(u32 => u32, u64 => u64, usize => u64);

impl Setting for Duration {
    const EXPECTED: &'static str = "a number of seconds (fractions allowed)";
    type Allowed = Range;
    fn from_toml(value: &toml::Value, range: Range) -> Result<Self, Refused> {
        seconds(toml_number(value), range)
    }
    fn from_env(text: &str, range: Range) -> Result<Self, Refused> {
        seconds(text_number(text), range)
    }
    type Shown = f64;
    fn show(&self) -> f64 {
        self.as_secs_f64()
    }
}

impl Setting for SocketAddr {
    const EXPECTED: &'static str = "an address and port such as 0.0.0.0:8000";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        text.trim().parse().map_err(|_| Refused::Kind)
    }
    type Shown = String;
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Setting for PathBuf {
    const EXPECTED: &'static str = "a non-empty path";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        (!text.is_empty())
            .then(|| PathBuf::from(text))
            .ok_or(Refused::Kind)
    }
    type Shown = String;
    fn show(&self) -> String {
        self.display().to_string()
    }
}

impl Setting for Secret {
    const EXPECTED: &'static str = "a non-empty string";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        (!text.is_empty())
            .then(|| Secret::new(text))
            .ok_or(Refused::Kind)
    }
    type Shown = &'static str;
    fn show(&self) -> &'static str {
        REDACTED
    }
}

impl Setting for DatabaseUrl {
    const EXPECTED: &'static str = "a URL such as postgres://user:password@host:5432/dbname";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::from_env(value.as_str().ok_or(Refused::Kind)?, ())
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        DatabaseUrl::parse(text).ok_or(Refused::Kind)
    }
    type Shown = String;
    fn show(&self) -> String {
        self.redacted()
    }
}

/// Optional settings: absent by default; an empty environment variable also means unset.
impl<T: Setting> Setting for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    type Allowed = T::Allowed;
    fn from_toml(value: &toml::Value, allowed: T::Allowed) -> Result<Self, Refused> {
        T::from_toml(value, allowed).map(Some)
    }
    fn from_env(text: &str, allowed: T::Allowed) -> Result<Self, Refused> {
        if text.is_empty() {
            Ok(None)
        } else {
            T::from_env(text, allowed).map(Some)
        }
    }
    type Shown = Option<T::Shown>;
    fn show(&self) -> Self::Shown {
        self.as_ref().map(T::show)
    }
}

/// One flat key: the default, overridden by the file, overridden by the environment.
pub(super) fn layer<T: Setting>(
    key: &str,
    var: &str,
    default: T,
    allowed: T::Allowed,
    file: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let mut value = default;
    if let Some(raw) = file.remove(key) {
        value = T::from_toml(&raw, allowed)
            .map_err(|why| ConfigError::new(key, refusal::<T>(&shown(&raw), why)))?;
    }
    if let Some(text) = env(var) {
        value = T::from_env(&text, allowed)
            .map_err(|why| ConfigError::new(var, refusal::<T>(&format!("{text:?}"), why)))?;
    }
    Ok(value)
}

/// A file value as it appears in messages: TOML prints `1e30` as thirty-one digits.
pub(super) fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::Float(f) if f.abs() >= 1e15 => format!("{f:e}"),
        other => other.to_string(),
    }
}

/// `"lots" is not a whole number`, `1e30 is out of range: must be from 1 to 10000`.
pub(super) fn refusal<T: Setting>(shown: &dyn fmt::Display, why: Refused) -> String {
    match why {
        Refused::Kind => format!("{shown} is not {}", T::EXPECTED),
        Refused::Range(range) => format!("{shown} is out of range: must be {range}"),
        Refused::Part(why) => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_refused_as_not_a_number_or_as_out_of_range() {
        let limit = Range::count(1, 10_000);
        let count = |text: &str| whole::<usize>(text_number(text), limit);
        assert!(matches!(count("50"), Ok(50)));
        assert!(matches!(count("10000"), Ok(10_000)));
        assert!(
            matches!(count("50.0"), Ok(50)),
            "a whole float is a whole number"
        );
        for huge in ["1e30", "99999999999", "10001", "-1", "0", "inf", "-inf"] {
            assert!(matches!(count(huge), Err(Refused::Range(_))), "{huge}");
        }
        for bad in ["lots", "2.5", "NaN", "", "0x10"] {
            assert!(matches!(count(bad), Err(Refused::Kind)), "{bad}");
        }
        let secs = |text: &str| seconds(text_number(text), bounds::POSITIVE_SECONDS);
        assert_eq!(secs("0.25").ok(), Some(Duration::from_millis(250)));
        assert_eq!(secs("604800").ok(), Some(Duration::from_secs(604_800)));
        for huge in ["1e30", "604801", "0", "0.0001", "-1", "inf"] {
            assert!(matches!(secs(huge), Err(Refused::Range(_))), "{huge}");
        }
        assert!(matches!(secs("NaN"), Err(Refused::Kind)));
        // The TOML side reads integers and floats alike.
        assert!(matches!(
            whole::<u32>(toml_number(&toml::Value::Float(1e30)), limit),
            Err(Refused::Range(_))
        ));
        assert!(matches!(
            whole::<u32>(toml_number(&toml::Value::Integer(i64::MIN)), limit),
            Err(Refused::Range(_))
        ));
        assert!(matches!(
            whole::<u32>(toml_number(&toml::Value::String("5".into())), limit),
            Err(Refused::Kind)
        ));
    }

    #[test]
    fn ranges_say_their_ends_and_unit() {
        assert_eq!(bounds::CONNECTIONS.to_string(), "from 1 to 10000");
        assert_eq!(
            bounds::POSITIVE_SECONDS.to_string(),
            "from 0.001 to 604800 seconds"
        );
        assert_eq!(bounds::BYTES.to_string(), "from 1 to 1099511627776");
    }
}
