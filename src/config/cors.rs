//! The values of the CORS keys (`cors_allowed_origins`, `cors_allowed_methods`,
//! `cors_allowed_headers`): lists, written in the file as TOML arrays of strings and in
//! the environment as comma-separated text, each entry checked when the configuration is
//! read, so that a typo is refused at start-up naming the key and the entry instead of
//! silently never matching a browser's `Origin`.
//!
//! What the service does with them is in `crate::api::cors`.

use http::{HeaderName, Method};

use super::value::{Refused, Setting};

/// `cors_allowed_origins`: the origins whose scripts may call the API, each normalized
/// as browsers send `Origin` (`https://dispatch.example`, lower case, no default port),
/// or the single entry `*` for any origin. Empty (the default): no CORS at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(Vec<String>);

impl Origins {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `*`: any origin.
    pub fn is_any(&self) -> bool {
        self.0.iter().any(|o| o == "*")
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// `cors_allowed_methods`: the methods a preflight allows, upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Methods(Vec<Method>);

impl Methods {
    pub fn new(methods: &[Method]) -> Self {
        Self(methods.to_vec())
    }
    pub fn iter(&self) -> impl Iterator<Item = &Method> {
        self.0.iter()
    }
}

/// `cors_allowed_headers`: the request headers a preflight allows, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames(Vec<HeaderName>);

impl HeaderNames {
    /// From names known to be valid (the built-in defaults).
    pub fn from_static(names: &[&'static str]) -> Self {
        Self(names.iter().map(|n| HeaderName::from_static(n)).collect())
    }
    pub fn iter(&self) -> impl Iterator<Item = &HeaderName> {
        self.0.iter()
    }
}

/// The entries of a list: a TOML array of strings; `None` when it is something else.
fn toml_entries(value: &toml::Value) -> Option<Vec<&str>> {
    value.as_array()?.iter().map(toml::Value::as_str).collect()
}

/// The entries of a comma-separated variable, trimmed, empty ones skipped (so an empty
/// variable is an empty list).
fn env_entries(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect()
}

/// Each entry checked by `one`, duplicates dropped, order kept.
fn checked<T: PartialEq>(
    entries: Vec<&str>,
    one: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Refused> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let value = one(entry).map_err(Refused::Part)?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

/// One origin, `scheme://host[:port]` with no path, as a browser serializes it.
pub(super) fn origin(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_owned());
    }
    let not = |why: &str| format!("{text:?} is not an origin ({why})");
    let url = url::Url::parse(text).map_err(|e| not(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(not("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(not("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(not("an origin has no user or password"));
    }
    // `Url` makes the empty path "/": only the text tells `https://a.example/` apart.
    if url.path() != "/" || text.ends_with('/') || url.query().is_some() || url.fragment().is_some()
    {
        return Err(not(&format!(
            "an origin has no path, query or fragment: write {:?}",
            url.origin().ascii_serialization()
        )));
    }
    Ok(url.origin().ascii_serialization())
}

fn method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{text:?} is not an HTTP method"))
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| format!("{text:?} is not a valid HTTP header name"))
}

impl Origins {
    fn checked(entries: Vec<&str>) -> Result<Self, Refused> {
        let origins = checked(entries, origin)?;
        if origins.len() > 1 && origins.iter().any(|o| o == "*") {
            return Err(Refused::Part(
                "\"*\" (any origin) must be the only entry".to_owned(),
            ));
        }
        Ok(Self(origins))
    }
}

impl Setting for Origins {
    const EXPECTED: &'static str = "a list of origins such as [\"https://dispatch.example\"]";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        Self::checked(toml_entries(value).ok_or(Refused::Kind)?)
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        Self::checked(env_entries(text))
    }
    type Shown = Vec<String>;
    fn show(&self) -> Vec<String> {
        self.0.clone()
    }
}

impl Setting for Methods {
    const EXPECTED: &'static str = "a list of HTTP methods such as [\"GET\", \"POST\"]";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        checked(toml_entries(value).ok_or(Refused::Kind)?, method).map(Self)
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        checked(env_entries(text), method).map(Self)
    }
    type Shown = Vec<String>;
    fn show(&self) -> Vec<String> {
        self.0.iter().map(|m| m.as_str().to_owned()).collect()
    }
}

impl Setting for HeaderNames {
    const EXPECTED: &'static str = "a list of HTTP header names such as [\"content-type\"]";
    type Allowed = ();
    fn from_toml(value: &toml::Value, (): ()) -> Result<Self, Refused> {
        checked(toml_entries(value).ok_or(Refused::Kind)?, header_name).map(Self)
    }
    fn from_env(text: &str, (): ()) -> Result<Self, Refused> {
        checked(env_entries(text), header_name).map(Self)
    }
    type Shown = Vec<String>;
    fn show(&self) -> Vec<String> {
        self.0.iter().map(|h| h.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_as_browsers_send_them() {
        assert_eq!(
            origin("https://Dispatch.Example").unwrap(),
            "https://dispatch.example"
        );
        assert_eq!(
            origin("https://a.example:443").unwrap(),
            "https://a.example"
        );
        assert_eq!(
            origin("http://localhost:5173").unwrap(),
            "http://localhost:5173"
        );
        assert_eq!(origin("http://[::1]:3000").unwrap(), "http://[::1]:3000");
        assert_eq!(origin("*").unwrap(), "*");
        for (bad, why) in [
            ("https://a.example/", "write \"https://a.example\""),
            ("https://a.example/app", "no path"),
            ("https://a.example?x=1", "no path, query"),
            ("ftp://a.example", "http or https"),
            ("a.example", "relative URL without a base"),
            ("https://user:pw@a.example", "no user"),
            ("", "not an origin"),
        ] {
            let err = origin(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("{bad:?} is not an origin")),
                "{err}"
            );
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn lists_come_from_arrays_or_comma_separated_text() {
        let origins = Origins::from_env(" https://a.example , http://localhost:8080,", ()).unwrap();
        assert_eq!(
            origins.show(),
            ["https://a.example", "http://localhost:8080"]
        );
        assert!(Origins::from_env("", ()).unwrap().is_empty());
        let toml: toml::Value =
            toml::from_str::<toml::Table>("v = [\"https://a.example\"]").unwrap()["v"].clone();
        assert_eq!(
            Origins::from_toml(&toml, ()).unwrap().show(),
            ["https://a.example"]
        );
        assert!(matches!(
            Origins::from_toml(&toml::Value::String("https://a.example".into()), ()),
            Err(Refused::Kind)
        ));
        assert!(matches!(
            Origins::from_env("*,https://a.example", ()),
            Err(Refused::Part(why)) if why.contains("only entry")
        ));
        assert!(Origins::from_env("*", ()).unwrap().is_any());

        let methods = Methods::from_env("get, PATCH,patch", ()).unwrap();
        assert_eq!(
            methods.show(),
            ["GET", "PATCH"],
            "upper case, no duplicates"
        );
        assert!(matches!(
            Methods::from_env("GET,P O", ()),
            Err(Refused::Part(_))
        ));
        let headers = HeaderNames::from_env("If-Match,traceparent", ()).unwrap();
        assert_eq!(headers.show(), ["if-match", "traceparent"]);
        assert!(matches!(
            HeaderNames::from_env("bad header", ()),
            Err(Refused::Part(why)) if why == "\"bad header\" is not a valid HTTP header name"
        ));
    }
}
