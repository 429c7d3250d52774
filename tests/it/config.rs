//! Configuration: layering, every environment name, validation errors, redaction.
//! All through the pure `Config::parse`, no process environment.

use gtfs_fetch::config::{Config, ConfigError, KEYS};
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
        "max_feed_bytes": 536870912u64, "data_dir": "./data", "database_url": null,
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
        v if v.ends_with("_TIMEOUT")
            || v.ends_with("_DELAY")
            || v.ends_with("_KEEPALIVE")
            || v.ends_with("_OPEN")
            || v.ends_with("_TTL")
            || v.ends_with("_LIFETIME")
            || v.ends_with("_DRAIN")
            || v.ends_with("_SPACING")
            || v.ends_with("_DEADLINE") =>
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
        "instances"
    );
    assert_eq!(
        err_key(&inst("name = \"a\"\nurl = \"not a url\""), &[]),
        "instances[0].url"
    );
    assert_eq!(
        err_key(&inst("name = \"a\"\nurl = \"ftp://h/x\""), &[]),
        "instances[0].url"
    );
    assert_eq!(
        err_key(&inst("name = \"City\"\nurl = \"http://h\""), &[]),
        "instances[0].name"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\nrefresh_interval = 0"),
            &[]
        ),
        "instances[0].refresh_interval"
    );
    assert_eq!(
        err_key(&inst("name = \"a\"\nurl = \"http://h\"\ncolour = 1"), &[]),
        "instances"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\ngraphql_path = \"otp\""),
            &[]
        ),
        "instances[0].graphql_path"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\napi = \"gtfs\""),
            &[]
        ),
        "instances[0].feeds"
    );
    assert_eq!(
        err_key(
            &inst("name = \"a\"\nurl = \"http://h\"\nheaders = { \"Bad Header\" = \"v\" }"),
            &[]
        ),
        "instances[0].headers"
    );
    let dup = format!(
        "{}{}",
        inst("name = \"a\"\nurl = \"http://h\""),
        inst("name = \"a\"\nurl = \"http://g\"")
    );
    assert_eq!(err_key(&dup, &[]), "instances[1].name");
    let feeds = format!(
        "{}[[instances.feeds]]\ngtfs_id = \"1\"\nzip_url = \"a.zip\"\n[[instances.feeds]]\ngtfs_id = \"1\"\nzip_url = \"b.zip\"\n",
        inst("name = \"a\"\nurl = \"http://h\"")
    );
    assert_eq!(err_key(&feeds, &[]), "instances[0].feeds[1].gtfs_id");
    // The message names the unknown field.
    let e = parse(&inst("name = \"a\"\nurl = \"http://h\"\ncolour = 1"), &[]).unwrap_err();
    assert!(e.problem.contains("colour"), "{e}");
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
