//! Configuration: layering, every environment name, validation errors, redaction.
//! All through the pure `Config::parse`, no process environment.

use gtfs_fetch::config::{Config, ConfigError, ENV_PREFIXES, KEYS, unknown_variables};
use serde_json::{Value, json};

fn parse(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::parse(Some(("test.toml", file)), |name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

fn shown(config: &Config) -> Value {
    config.to_redacted_json()
}

fn err_key(file: &str, env: &[(&str, &str)]) -> String {
    match parse(file, env) {
        Ok(_) => panic!("expected an error for file {file:?} env {env:?}"),
        Err(e) => {
            assert!(e.to_string().contains(&e.key), "message names the key: {e}");
            e.key
        }
    }
}

#[test]
fn built_in_defaults_are_the_design_table() {
    let c = shown(&Config::parse(None, |_| None).unwrap());
    let expected = json!({
        "listen": "0.0.0.0:8000", "connection_limit": 50, "http_pool_idle_timeout": 20.0,
        "http_tcp_keepalive": 60.0, "http_connect_timeout": 2.0, "http_request_timeout": 30.0,
        "retry_attempts": 2, "retry_delay": 1.0, "rate_limit_delay": 0.05, "breaker_failures": 5,
        "breaker_open": 30.0, "cache_max_bytes": 268435456u64, "cache_ttl": 3600.0,
        "max_feed_bytes": 536870912u64, "max_build_bytes": 2147483648u64, "data_dir": "./data", "database_url": null,
        "db_max_connections": 20, "db_min_connections": 5, "db_acquire_timeout": 5.0,
        "db_idle_timeout": 300.0, "db_max_lifetime": 1800.0, "api_token": null, "ops_token": null,
    });
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&c[key], value, "default of {key}");
    }
    assert_eq!(c["instances"], json!([]));
}

#[test]
fn shipped_default_file_equals_the_built_in_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))
        .expect("config/default.toml exists");
    let from_file = Config::parse(Some(("config/default.toml", &text)), |_| None).unwrap();
    assert_eq!(
        shown(&from_file),
        shown(&Config::parse(None, |_| None).unwrap())
    );
    for (key, var) in KEYS {
        assert!(text.contains(key), "config/default.toml documents {key}");
        assert!(text.contains(var), "config/default.toml names {var}");
    }
}

/// A value for each variable, and how `/config` shows it.
fn sample(var: &str) -> (&'static str, Value) {
    match var {
        "GTFS_LISTEN" => ("127.0.0.1:9999", json!("127.0.0.1:9999")),
        "GTFS_DATA_DIR" => ("/var/lib/gtfs", json!("/var/lib/gtfs")),
        "DATABASE_URL" => (
            "postgres://u:pw@db:5432/x",
            json!("postgres://u:***@db:5432/x"),
        ),
        "GTFS_API_TOKEN" | "GTFS_OPS_TOKEN" => ("tok-123", json!("***")),
        "WAYBILLS_DB_MIN_CONNECTIONS" => ("3", json!(3)),
        "GTFS_RETRY_ATTEMPTS" => ("7", json!(7)),
        "GTFS_REPLICA_ID" => ("api-2", json!("api-2")),
        "GTFS_CORS_ALLOWED_ORIGINS" => ("https://a.example", json!(["https://a.example"])),
        "GTFS_CORS_ALLOWED_METHODS" => ("get,PUT", json!(["GET", "PUT"])),
        "GTFS_CORS_ALLOWED_HEADERS" => ("X-A", json!(["x-a"])),
        v if v.ends_with("_TIMEOUT")
            || v.ends_with("_DELAY")
            || v.ends_with("_KEEPALIVE")
            || v.ends_with("_OPEN")
            || v.ends_with("_TTL")
            || v.ends_with("_LIFETIME")
            || v.ends_with("_DRAIN")
            || v.ends_with("_SPACING")
            || v.ends_with("_DEADLINE")
            || v.ends_with("_MAX_AGE") =>
        {
            ("0.25", json!(0.25))
        }
        _ => ("77", json!(77)),
    }
}

#[test]
fn every_environment_variable_overrides_its_key() {
    for (key, var) in KEYS {
        let (text, expected) = sample(var);
        let c = parse("", &[(var, text)]).unwrap_or_else(|e| panic!("{var}={text}: {e}"));
        assert_eq!(shown(&c)[key], expected, "{var} sets {key}");
    }
}

#[test]
fn the_original_systems_variable_names_work() {
    let c = parse(
        "",
        &[
            ("WAYBILLS_DB_MAX_CONNECTIONS", "40"),
            ("WAYBILLS_DB_MIN_CONNECTIONS", "10"),
            ("WAYBILLS_DB_ACQUIRE_TIMEOUT", "2.5"),
            ("WAYBILLS_DB_IDLE_TIMEOUT", "120"),
            ("WAYBILLS_DB_MAX_LIFETIME", "600"),
            ("GTFS_CONNECTION_LIMIT", "77"),
            ("GTFS_HTTP_POOL_IDLE_TIMEOUT", "15"),
            ("GTFS_HTTP_TCP_KEEPALIVE", "30"),
            ("GTFS_RETRY_DELAY", "0.5"),
            ("GTFS_RATE_LIMIT_DELAY", "0.01"),
        ],
    )
    .unwrap();
    assert_eq!(c.db_max_connections, 40);
    assert_eq!(c.db_min_connections, 10);
    assert_eq!(c.db_acquire_timeout.as_millis(), 2500);
    assert_eq!(c.db_idle_timeout.as_secs(), 120);
    assert_eq!(c.db_max_lifetime.as_secs(), 600);
    assert_eq!(c.connection_limit, 77);
    assert_eq!(c.http_pool_idle_timeout.as_secs(), 15);
    assert_eq!(c.http_tcp_keepalive.as_secs(), 30);
    assert_eq!(c.retry_delay.as_millis(), 500);
    assert_eq!(c.rate_limit_delay.as_millis(), 10);
}

#[test]
fn layers_apply_in_order_defaults_file_env() {
    let file = "connection_limit = 60\nretry_attempts = 4\n";
    let c = parse(file, &[("GTFS_CONNECTION_LIMIT", "70")]).unwrap();
    assert_eq!(c.connection_limit, 70, "env beats file");
    assert_eq!(c.retry_attempts, 4, "file beats default");
    assert_eq!(c.breaker_failures, 5, "default stays");
    let c = parse("rate_limit_delay = 0.2\nretry_delay = 3", &[]).unwrap();
    assert_eq!(c.rate_limit_delay.as_millis(), 200);
    assert_eq!(c.retry_delay.as_secs(), 3);
    // An empty variable for an optional key means unset.
    let c = parse("api_token = \"from-file\"", &[("GTFS_API_TOKEN", "")]).unwrap();
    assert!(c.api_token.is_none());
}

#[test]
fn instances_are_read_with_their_feeds_and_defaults() {
    let file = r#"
        [[instances]]
        name = "city"
        url = "http://otp.city.internal:8080"
        headers = { "X-Api-Key" = "k-123" }
        prefetch_routes = true
        [[instances.feeds]]
        gtfs_id = "1"
        zip_url = "/gtfs/city.zip"

        [[instances]]
        name = "old-town"
        url = "https://otp.old.example"
        api = "otp1"
        router = "metro"
        refresh_interval = 60.5
    "#;
    let c = parse(file, &[]).unwrap();
    assert_eq!(c.instances.len(), 2);
    let city = &c.instances[0];
    assert_eq!(city.api, gtfs_fetch::config::Api::Otp2);
    assert_eq!(city.graphql_path, "/otp/gtfs/v1");
    assert_eq!(city.refresh_interval.as_secs(), 900);
    assert_eq!(city.headers["X-Api-Key"].expose(), "k-123");
    assert_eq!(city.feeds[0].zip_url, "/gtfs/city.zip");
    assert!(city.prefetch_routes);
    let old = &c.instances[1];
    assert_eq!(old.api, gtfs_fetch::config::Api::Otp1);
    assert_eq!(old.router, "metro");
    assert_eq!(old.refresh_interval.as_millis(), 60_500);
}

#[test]
fn bad_values_are_refused_naming_the_key_or_variable() {
    // Unparsable numbers, from the environment and from the file.
    assert_eq!(
        err_key("", &[("GTFS_CONNECTION_LIMIT", "lots")]),
        "GTFS_CONNECTION_LIMIT"
    );
    assert_eq!(
        err_key("", &[("GTFS_RETRY_DELAY", "1s")]),
        "GTFS_RETRY_DELAY"
    );
    assert_eq!(
        err_key("", &[("WAYBILLS_DB_MAX_CONNECTIONS", "2.5")]),
        "WAYBILLS_DB_MAX_CONNECTIONS"
    );
    assert_eq!(
        err_key("connection_limit = \"50\"", &[]),
        "connection_limit"
    );
    assert_eq!(err_key("cache_ttl = \"long\"", &[]), "cache_ttl");
    // Negative, or zero where zero makes no sense.
    assert_eq!(
        err_key("", &[("GTFS_CONNECTION_LIMIT", "-1")]),
        "GTFS_CONNECTION_LIMIT"
    );
    assert_eq!(
        err_key("", &[("GTFS_CONNECTION_LIMIT", "0")]),
        "GTFS_CONNECTION_LIMIT"
    );
    assert_eq!(err_key("retry_delay = -1.0", &[]), "retry_delay");
    assert_eq!(
        err_key("http_request_timeout = 0", &[]),
        "http_request_timeout"
    );
    assert_eq!(
        err_key("", &[("GTFS_BREAKER_FAILURES", "0")]),
        "GTFS_BREAKER_FAILURES"
    );
    assert_eq!(
        err_key("", &[("WAYBILLS_DB_MAX_CONNECTIONS", "0")]),
        "WAYBILLS_DB_MAX_CONNECTIONS"
    );
    assert_eq!(err_key("", &[("GTFS_CACHE_TTL", "NaN")]), "GTFS_CACHE_TTL");
    assert_eq!(
        err_key("", &[("GTFS_HTTP_CONNECT_TIMEOUT", "inf")]),
        "GTFS_HTTP_CONNECT_TIMEOUT"
    );
    // Zero is fine where it means "none".
    assert!(
        parse(
            "",
            &[("GTFS_RATE_LIMIT_DELAY", "0"), ("GTFS_RETRY_ATTEMPTS", "0")]
        )
        .is_ok()
    );
    // Cross-key rule.
    assert_eq!(
        err_key(
            "",
            &[
                ("WAYBILLS_DB_MIN_CONNECTIONS", "30"),
                ("WAYBILLS_DB_MAX_CONNECTIONS", "10")
            ]
        ),
        "db_min_connections"
    );
    // Malformed addresses and URLs.
    assert_eq!(err_key("", &[("GTFS_LISTEN", "localhost")]), "GTFS_LISTEN");
    assert_eq!(
        err_key("", &[("DATABASE_URL", "not a url")]),
        "DATABASE_URL"
    );
    assert_eq!(
        err_key("", &[("DATABASE_URL", "mysql://x@y/z")]),
        "DATABASE_URL"
    );
    // Unknown keys, and broken TOML.
    assert_eq!(err_key("conection_limit = 5", &[]), "conection_limit");
    assert_eq!(err_key("connection_limit = ", &[]), "test.toml");
}

#[test]
fn bad_instances_are_refused_naming_the_key() {
    let inst = |body: &str| format!("[[instances]]\n{body}\n");
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\napi = \"otp3\""),
            &[]
        ),
        "instances[0] (\"a\")"
    );
    assert_eq!(
        err_key(&inst("name = \"a\"\nurl = \"not a url\""), &[]),
        "instances[0] (\"a\").url"
    );
    assert_eq!(
        err_key(&inst("name = \"a\"\nurl = \"ftp://h/x\""), &[]),
        "instances[0] (\"a\").url"
    );
    assert_eq!(
        err_key(&inst("name = \"City\"\nurl = \"http://h\""), &[]),
        "instances[0] (\"City\").name"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\nrefresh_interval = 0"),
            &[]
        ),
        "instances[0] (\"a\").refresh_interval"
    );
    assert_eq!(
        err_key(&inst("name = \"a\"\nurl = \"http://h\"\ncolour = 1"), &[]),
        "instances[0] (\"a\").colour"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\ngraphql_path = \"otp\""),
            &[]
        ),
        "instances[0] (\"a\").graphql_path"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\napi = \"gtfs\""),
            &[]
        ),
        "instances[0] (\"a\").feeds"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\nheaders = { \"Bad Header\" = \"v\" }"),
            &[]
        ),
        "instances[0] (\"a\").headers"
    );
    let dup = format!(
        "{}{}",
        inst("name = \"a\"\nurl = \"http://h\""),
        inst("name = \"a\"\nurl = \"http://g\"")
    );
    assert_eq!(err_key(&dup, &[]), "instances[1] (\"a\").name");
    let feeds = format!(
        "{}[[instances.feeds]]\ngtfs_id = \"1\"\nzip_url = \"a.zip\"\n[[instances.feeds]]\ngtfs_id = \"1\"\nzip_url = \"b.zip\"\n",
        inst("name = \"a\"\nurl = \"http://h\"")
    );
    assert_eq!(
        err_key(&feeds, &[]),
        "instances[0] (\"a\").feeds[1].gtfs_id"
    );
    // A type error names the instance, and serde's text names the field.
    let e = parse(
        &inst("name = \"a\"\nurl = \"http://h\"\napi = \"otp3\""),
        &[],
    )
    .unwrap_err();
    assert!(e.problem.contains("api"), "{e}");
}

#[test]
fn secrets_never_show() {
    let file = r#"
        ops_token = "ops-secret-1"
        [[instances]]
        name = "city"
        url = "http://otp.city.internal:8080"
        headers = { "X-Api-Key" = "header-secret-2" }
    "#;
    let c = parse(
        file,
        &[
            (
                "DATABASE_URL",
                "postgres://gtfs:db-secret-3@db:5432/gtfs?sslmode=require",
            ),
            ("GTFS_API_TOKEN", "api-secret-4"),
        ],
    )
    .unwrap();
    let json = shown(&c).to_string();
    let debug = format!("{c:?}");
    for secret in [
        "ops-secret-1",
        "header-secret-2",
        "db-secret-3",
        "api-secret-4",
    ] {
        assert!(!json.contains(secret), "{secret} in /config: {json}");
        assert!(!debug.contains(secret), "{secret} in Debug output");
    }
    let shown = shown(&c);
    assert_eq!(
        shown["database_url"],
        "postgres://gtfs:***@db:5432/gtfs?sslmode=require"
    );
    assert_eq!(shown["instances"][0]["headers"]["X-Api-Key"], "***");
    assert_eq!(shown["api_token"], "***");
    // The real values stay usable by the code.
    assert!(c.database_url.unwrap().expose().contains("db-secret-3"));
    // A password given as a query parameter is redacted too.
    let c = parse(
        "",
        &[(
            "DATABASE_URL",
            "postgres://db/gtfs?user=u&password=q-secret",
        )],
    )
    .unwrap();
    assert!(!shown_text(&c).contains("q-secret"));
}

fn shown_text(c: &Config) -> String {
    shown(c).to_string()
}

fn err_text(file: &str, env: &[(&str, &str)]) -> String {
    match parse(file, env) {
        Ok(_) => panic!("expected an error for file {file:?} env {env:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_unknown_key_names_its_instance_and_the_key_meant() {
    let file = r#"
        [[instances]]
        name = "city"
        url = "http://otp.city.internal:8080"

        [[instances]]
        name = "bart"
        urll = "http://otp.bart.internal:8080"
    "#;
    assert_eq!(
        err_text(file, &[]),
        r#"invalid configuration: instances[1] ("bart").urll: unknown key; did you mean "url"?"#
    );
    let feed = r#"
        [[instances]]
        name = "city"
        url = "http://h"
        [[instances.feeds]]
        gtfs_id = "1"
        zip_ur = "/gtfs/city.zip"
    "#;
    assert_eq!(
        err_text(feed, &[]),
        r#"invalid configuration: instances[0] ("city").feeds[0].zip_ur: unknown key; did you mean "zip_url"?"#
    );
    // Without a name the index alone says which; far from every key, no guess.
    assert_eq!(
        err_text("[[instances]]\nurl = \"http://h\"\ncolour = 1\n", &[]),
        "invalid configuration: instances[0].colour: unknown key"
    );
    // Flat keys get the same help.
    assert_eq!(
        err_text("conection_limit = 5", &[]),
        r#"invalid configuration: conection_limit: unknown key; did you mean "connection_limit"?"#
    );
    // A wrong type inside an instance names the instance too.
    let e = err_text(
        "[[instances]]\nname = \"city\"\nurl = \"http://h\"\nprefetch_routes = \"yes\"\n",
        &[],
    );
    assert!(e.contains(r#"instances[0] ("city")"#), "{e}");
    assert!(e.contains("prefetch_routes"), "{e}");
    // `[instances]` instead of `[[instances]]`.
    assert_eq!(err_key("[instances]\nname = \"city\"\n", &[]), "instances");
}

#[test]
fn huge_numbers_are_out_of_range_saying_the_range() {
    // (file, environment, the key named, the range said)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "connection_limit = 1e30",
            &[],
            "connection_limit",
            "from 1 to 10000",
        ),
        (
            "",
            &[("GTFS_CONNECTION_LIMIT", "1e30")],
            "GTFS_CONNECTION_LIMIT",
            "from 1 to 10000",
        ),
        (
            "cache_ttl = 1e30",
            &[],
            "cache_ttl",
            "from 0.001 to 604800 seconds",
        ),
        (
            "",
            &[("GTFS_CACHE_TTL", "1e30")],
            "GTFS_CACHE_TTL",
            "from 0.001 to 604800 seconds",
        ),
        (
            "",
            &[("GTFS_RETRY_DELAY", "-1")],
            "GTFS_RETRY_DELAY",
            "from 0 to 604800 seconds",
        ),
        (
            "db_max_connections = 99999999999",
            &[],
            "db_max_connections",
            "from 1 to 10000",
        ),
        (
            "max_feed_bytes = 1e30",
            &[],
            "max_feed_bytes",
            "from 1 to 1099511627776",
        ),
        ("retry_attempts = -1", &[], "retry_attempts", "from 0 to 10"),
        (
            "[[instances]]\nname = \"city\"\nurl = \"http://h\"\nrefresh_interval = 1e30\n",
            &[],
            r#"instances[0] ("city").refresh_interval"#,
            "from 0.001 to 604800 seconds",
        ),
    ];
    for (file, env, key, range) in cases {
        let e = parse(file, env).expect_err(&format!("{file:?} {env:?} is refused"));
        assert_eq!(&e.key, key, "{e}");
        assert!(
            e.problem
                .contains(&format!("is out of range: must be {range}")),
            "{e}"
        );
        assert!(!e.problem.contains("is not"), "{e}");
    }
    assert_eq!(
        err_text("connection_limit = 1e30", &[]),
        "invalid configuration: connection_limit: 1e30 is out of range: must be from 1 to 10000"
    );
    // What is not a number still says so.
    let e = parse("", &[("GTFS_CONNECTION_LIMIT", "lots")]).unwrap_err();
    assert_eq!(e.problem, r#""lots" is not a whole number"#);
}

#[test]
fn counts_have_sane_upper_bounds() {
    assert_eq!(
        err_text("", &[("GTFS_CONNECTION_LIMIT", "99999999999")]),
        r#"invalid configuration: GTFS_CONNECTION_LIMIT: "99999999999" is out of range: must be from 1 to 10000"#
    );
    // The ends themselves are allowed.
    let c = parse(
        "",
        &[
            ("GTFS_CONNECTION_LIMIT", "10000"),
            ("WAYBILLS_DB_MAX_CONNECTIONS", "10000"),
            ("GTFS_RETRY_ATTEMPTS", "10"),
            ("GTFS_BREAKER_FAILURES", "1000000"),
            ("GTFS_CACHE_MAX_BYTES", "1099511627776"),
        ],
    )
    .unwrap();
    assert_eq!(c.connection_limit, 10_000);
    assert_eq!(c.cache_max_bytes, 1 << 40);
    for (var, over) in [
        ("GTFS_CONNECTION_LIMIT", "10001"),
        ("WAYBILLS_DB_MAX_CONNECTIONS", "10001"),
        ("WAYBILLS_DB_MIN_CONNECTIONS", "10001"),
        ("GTFS_RETRY_ATTEMPTS", "11"),
        ("GTFS_BREAKER_FAILURES", "1000001"),
        ("GTFS_CACHE_MAX_BYTES", "1099511627777"),
        ("GTFS_MAX_FEED_BYTES", "18446744073709551616"),
        ("GTFS_HTTP_REQUEST_TIMEOUT", "604801"),
    ] {
        assert_eq!(err_key("", &[(var, over)]), var, "{var}={over}");
    }
}

#[test]
fn a_variable_that_looks_like_ours_but_is_unknown_is_warned_about() {
    let warnings = unknown_variables([
        "GTFS_CONECTION_LIMIT",
        "WAYBILLS_DB_MAX_CONECTIONS",
        "GTFS_FROBNICATE",
        // Known keys, our other variables, and other programs' variables: no warning.
        "GTFS_CONNECTION_LIMIT",
        "DATABASE_URL",
        "GTFS_CONFIG",
        "GTFS_LOG_FORMAT",
        "GTFS_OTP_CMD",
        "PATH",
        "RUST_LOG",
    ]);
    assert_eq!(
        warnings,
        [
            "GTFS_CONECTION_LIMIT is set but is not a configuration variable; did you mean GTFS_CONNECTION_LIMIT?",
            "GTFS_FROBNICATE is set but is not a configuration variable (config/default.toml lists them)",
            "WAYBILLS_DB_MAX_CONECTIONS is set but is not a configuration variable; did you mean WAYBILLS_DB_MAX_CONNECTIONS?",
        ]
    );
}

/// Every `GTFS_*` / `WAYBILLS_DB_*` name the repository's code, scripts and docs use as a
/// variable is one the warning knows: a new variable must be added to `KEYS` (a
/// configuration key) or to `OTHER_VARIABLES`.
#[test]
fn every_variable_the_repository_uses_is_known() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("config/default.toml")];
    for dir in ["src", "tests", "scripts", "benches", ".ci"] {
        collect_files(&root.join(dir), &mut files);
    }
    // The registry itself and its tests name unknown variables on purpose.
    let skip = [
        root.join("src/config/mod.rs"),
        root.join("tests/it/config.rs"),
    ];
    let mut names = std::collections::BTreeSet::new();
    for file in files.iter().filter(|f| !skip.contains(f)) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let rust = file.extension().is_some_and(|e| e == "rs");
        for (at, _) in text
            .match_indices("GTFS_")
            .chain(text.match_indices("WAYBILLS_DB_"))
        {
            // In Rust only string literals are variables (`limits::GTFS_ID` is a const).
            if rust && !text[..at].ends_with('"') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.ends_with('_') || name == "GTFS_CONECTION_LIMIT" {
                continue; // a prefix such as `WAYBILLS_DB_*`, or the README's typo example
            }
            names.insert((name, file.strip_prefix(root).unwrap().display().to_string()));
        }
    }
    assert!(
        names.iter().any(|(n, _)| n == "GTFS_CONFIG"),
        "the scan finds names"
    );
    let unknown: Vec<_> = names
        .iter()
        .filter(|(name, _)| !unknown_variables([name.as_str()]).is_empty())
        .collect();
    assert!(
        unknown.is_empty(),
        "add these to KEYS or OTHER_VARIABLES: {unknown:?}"
    );
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_warning_is_printed_by_the_executable_and_the_configuration_still_loads() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gtfs-fetch"));
        cmd.arg("config").current_dir(env!("CARGO_MANIFEST_DIR"));
        // Only the variables this test sets, so the caller's own cannot interfere.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if config_vars_prefix(&name) {
                cmd.env_remove(&*name);
            }
        }
        cmd.envs(env.iter().copied())
            .output()
            .expect("run gtfs-fetch")
    };
    let out = run(&[
        ("GTFS_CONECTION_LIMIT", "5"),
        ("GTFS_CONFIG", "config/default.toml"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "gtfs-fetch: warning: GTFS_CONECTION_LIMIT is set but is not a configuration variable; did you mean GTFS_CONNECTION_LIMIT?"
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["connection_limit"], 50,
        "the misspelt variable sets nothing"
    );
    let out = run(&[("GTFS_CONNECTION_LIMIT", "5"), ("GTFS_LOG_FORMAT", "json")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no warning");
}

fn config_vars_prefix(name: &str) -> bool {
    ENV_PREFIXES.iter().any(|p| name.starts_with(p)) || name == "DATABASE_URL"
}

/// A database that cannot be reached at start-up: the error `/readyz` and the log show.
async fn unreachable_database_error(url: &str) -> String {
    let config = parse(
        "",
        &[
            ("DATABASE_URL", url),
            ("WAYBILLS_DB_ACQUIRE_TIMEOUT", "0.5"),
        ],
    )
    .unwrap();
    let options =
        gtfs_fetch::db::options_from_url(config.database_url.as_ref().unwrap().expose()).unwrap();
    let db = gtfs_fetch::db::Db::new_lazy(&config, options);
    let prepared = db.prepare().await.expect_err("nothing to connect to");
    let shown = db.check().await.expect_err("not ready");
    assert_eq!(shown, format!("{prepared:#}"), "/readyz says the same");
    assert!(!shown.contains("s3cret"), "no password: {shown}");
    shown
}

#[tokio::test]
async fn an_unreachable_database_says_where_and_why() {
    // A closed port: connection refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let e =
        unreachable_database_error(&format!("postgres://gtfs:s3cret@127.0.0.1:{port}/waybills"))
            .await;
    assert!(
        e.starts_with(&format!(
            r#"cannot reach the database at 127.0.0.1:{port} (database "waybills", user "gtfs"): connection refused"#
        )),
        "{e}"
    );
    // A port that accepts and never answers: a timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let e =
        unreachable_database_error(&format!("postgres://gtfs:s3cret@127.0.0.1:{port}/waybills"))
            .await;
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.contains("no answer within 0.5 s"), "{e}");
    held.abort();
    // A name that does not resolve (.invalid never does, RFC 6761).
    let e =
        unreachable_database_error("postgres://gtfs:s3cret@no-such-db.invalid:5432/waybills").await;
    assert!(e.contains("no-such-db.invalid:5432"), "{e}");
    assert!(e.contains("does not resolve"), "{e}");
}

/// The service with one `api = "gtfs"` instance at `url` whose feed is `zip_url`, after
/// its first refresh: that feed as `/feeds` shows it.
async fn zip_feed_after_refresh(url: &str, zip_url: &str) -> Value {
    use crate::support::{fresh_database, spawn_config};
    let file = format!(
        "[[instances]]\nname = \"sim\"\nurl = \"{url}\"\napi = \"gtfs\"\n\
         [[instances.feeds]]\ngtfs_id = \"f\"\nzip_url = \"{zip_url}\"\n"
    );
    let db = fresh_database().await;
    let config = parse(
        &file,
        &[
            ("DATABASE_URL", &db),
            ("GTFS_LISTEN", "127.0.0.1:0"),
            ("GTFS_RETRY_ATTEMPTS", "0"),
        ],
    )
    .unwrap();
    let app = spawn_config(config, axum::Router::new()).await;
    app.wait_refreshes(1).await;
    let body: Value = app.get("/feeds").await.json();
    app.stop().await.unwrap();
    body["feeds"]
        .as_array()
        .and_then(|feeds| feeds.iter().find(|f| f["gtfs_id"] == "f"))
        .cloned()
        .unwrap_or_else(|| panic!("feed f in {body}"))
}

#[test]
fn zip_urls_are_urls_or_paths() {
    let feed = |zip_url: &str| {
        format!(
            "[[instances]]\nname = \"a\"\nurl = \"http://h\"\n\
             [[instances.feeds]]\ngtfs_id = \"1\"\nzip_url = \"{zip_url}\"\n"
        )
    };
    for ok in [
        "https://data.example/city.zip",
        "/gtfs/city.zip",
        "file:///srv/gtfs/city.zip",
        "feeds/city.zip",
    ] {
        assert!(parse(&feed(ok), &[]).is_ok(), "{ok}");
    }
    assert_eq!(
        err_key(&feed("ftp://data.example/city.zip"), &[]),
        r#"instances[0] ("a").feeds[0].zip_url"#
    );
}

#[tokio::test]
async fn an_absolute_zip_path_is_a_local_file_and_a_failed_fetch_names_its_source() {
    // Nothing listens at the instance URL: only a local file can load.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let zip = std::fs::canonicalize(crate::support::fixture_path("sample-feed")).unwrap();
    let feed = zip_feed_after_refresh(&closed, zip.to_str().unwrap()).await;
    assert_eq!(feed["last_error"], Value::Null, "{feed}");
    assert!(feed["version"].is_string(), "{feed}");

    // No such file: the path under the instance URL is tried, and the error says both.
    let feed = zip_feed_after_refresh(&closed, "/nonexistent/gtfs/city.zip").await;
    let error = feed["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{feed}"));
    assert!(
        error.starts_with(&format!("GET {closed}/nonexistent/gtfs/city.zip: ")),
        "{error}"
    );
    assert!(
        error.ends_with("(and there is no local file /nonexistent/gtfs/city.zip)"),
        "{error}"
    );

    // A relative path is a local file from the working directory, named in full.
    let feed = zip_feed_after_refresh(&closed, "no/such/city.zip").await;
    let error = feed["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{feed}"));
    let full = std::env::current_dir().unwrap().join("no/such/city.zip");
    assert!(
        error.starts_with(&format!("cannot read {}: ", full.display())),
        "{error}"
    );
}
