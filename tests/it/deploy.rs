//! The observability files in `deploy/` against the service itself: every metric the
//! Grafana dashboard (`deploy/grafana/gtfs-fetch.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) name is in `/metrics` after some traffic. The rules
//! themselves are checked by promtool in `scripts/check-deploy.sh`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::otp_sim::OtpSim;
use crate::support::{sim_config, spawn_loaded, zip_feeds};

/// Series Prometheus makes itself, not the service.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Words of PromQL that look like names but are not metrics.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names, not an expression.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the quoted string starting at `i` (backslash escapes honoured).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        j += if chars[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// The index just past the bracket closing the one at `i`, strings inside skipped.
fn skip_group(chars: &[char], i: usize, close: char) -> usize {
    let open = chars[i];
    let (mut depth, mut j) = (0, i);
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_string(chars, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// The metric names a PromQL expression selects: identifiers that are not functions
/// or aggregations (followed by `(`, or by `by (...)`/`without (...)`), keywords, label names (inside `{...}` or a `by (...)` list), or
/// parts of strings, durations (`[5m]`) and numbers. Grafana variables (`$job`,
/// `$__rate_interval`, `${x}`) are dropped first.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(&chars, i, '}'),
            '[' => i = skip_group(&chars, i, ']'),
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i, '}');
                } else {
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if ident(c) => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let rest: String = chars[next..].iter().collect();
                // `sum by (x) (...)`: an aggregation with its grouping first.
                let grouped = ["by", "without"].iter().any(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|r| r.trim_start().starts_with('('))
                });
                let call = chars.get(next) == Some(&'(') || grouped;
                if call && LABEL_LISTS.contains(&word.as_str()) {
                    i = skip_group(&chars, next, ')');
                } else if !call && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// A Grafana template query: `label_values(expr, label)` selects from `expr`;
/// `label_values(label)` selects no metric; anything else is PromQL.
fn template_names(query: &str) -> BTreeSet<String> {
    let Some(inner) = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    else {
        return metric_names(query);
    };
    match inner.rsplit_once(',') {
        Some((expr, _label)) => metric_names(expr),
        None => BTreeSet::new(),
    }
}

/// Every PromQL expression of the dashboard: panel targets (rows' panels too) and
/// template variable queries, each with where it is.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, BTreeSet<String>)> {
    fn panels(list: &Value, out: &mut Vec<(String, BTreeSet<String>)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel {title:?}: {expr}"), metric_names(expr)));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &var["query"] {
            Value::String(q) if var["type"] == "query" => q.as_str(),
            Value::Object(q) => q.get("query").and_then(Value::as_str).unwrap_or(""),
            _ => continue,
        };
        let name = var["name"].as_str().unwrap_or("?");
        out.push((format!("variable {name}: {query}"), template_names(query)));
    }
    out
}

/// Every `expr:` of a rules file, one line (`expr: ...`) or a block (`expr: |`).
fn rule_exprs(yaml: &str) -> Vec<(String, BTreeSet<String>)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() && indent.trim() != "-" {
            continue;
        }
        let rest = rest.trim();
        let expr = if rest == "|" || rest == ">" || rest.starts_with("|-") {
            let width = indent.len();
            lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > width)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            rest.to_owned()
        };
        out.push((
            format!("line {}: {}", n + 1, expr.trim()),
            metric_names(&expr),
        ));
    }
    out
}

/// The names a `/metrics` text (Prometheus text format) offers: sample names, and family
/// names with their type.
struct Offered {
    samples: BTreeSet<String>,
    families: Vec<(String, String)>,
}

impl Offered {
    fn parse(text: &str) -> Self {
        let mut samples = BTreeSet::new();
        let mut families = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                families.push((name.to_owned(), kind.to_owned()));
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                samples.insert(line[..end].to_owned());
            }
        }
        Self { samples, families }
    }

    /// Whether `name` is a series of the service: a sample seen, a family declared, or a
    /// histogram family's `_bucket`, `_sum` or `_count`.
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.iter().any(|(f, _)| f == name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|family| {
                self.families
                    .iter()
                    .any(|(f, kind)| f == family && kind == "histogram")
            })
        })
    }

    /// The names of `exprs` that are not offered, with the expression naming them.
    fn missing(&self, exprs: &[(String, BTreeSet<String>)]) -> Vec<String> {
        exprs
            .iter()
            .flat_map(|(place, names)| {
                names
                    .iter()
                    .filter(|n| !self.has(n) && !PROMETHEUS_OWN.contains(&n.as_str()))
                    .map(move |n| format!("{n} (in {place})"))
            })
            .collect()
    }
}

#[test]
fn promql_names_are_told_from_functions_labels_and_durations() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job="$job", route=~"/x{1}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("(time() - b) > 3 * c and on(job) d offset 5m unless bool e"),
        ["b", "c", "d", "e"]
    );
    assert_eq!(
        names("sum without (instance) (rate(f[5m])) / ignoring(x) group_left(y) g"),
        ["f", "g"]
    );
    assert_eq!(
        names(r#"up{job="gtfs-fetch"} == 0 or 1e3 > h"#),
        ["h", "up"]
    );
    assert_eq!(
        template_names(r#"label_values(i{job="$job"}, instance)"#)
            .into_iter()
            .collect::<Vec<_>>(),
        ["i"]
    );
    assert!(template_names("label_values(job)").is_empty());
    let rules = "  - alert: A\n    expr: j > 0\n  - alert: B\n    expr: |\n      k\n      / l\n    for: 5m\n";
    let found: BTreeSet<String> = rule_exprs(rules).into_iter().flat_map(|e| e.1).collect();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["j", "k", "l"]);
}

#[tokio::test]
async fn dashboard_and_alerts_use_only_metrics_the_service_exports() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/gtfs-fetch.json"
        ))
        .expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = dashboard_exprs(&dashboard);
    let panel_exprs = exprs.len();
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .expect("the rules");
    exprs.extend(rule_exprs(&rules));
    let all: BTreeSet<&String> = exprs.iter().flat_map(|(_, n)| n).collect();
    // Enough found that the check means something: every panel and rule names metrics.
    assert!(panel_exprs >= 20, "{exprs:#?}");
    assert!(exprs.len() >= panel_exprs + 5, "{exprs:#?}");
    assert!(exprs.iter().all(|(_, n)| !n.is_empty()), "{exprs:#?}");
    assert!(all.len() >= 25, "{all:#?}");

    // Traffic that makes every family show: a feed refreshed from the simulator, route
    // queries, a waybill write and a read.
    let sim = OtpSim::start(&["caltrain"]).await;
    let app = spawn_loaded(sim_config(
        &sim.url(),
        "gtfs",
        &zip_feeds(&["caltrain"]),
        &[],
    ))
    .await;
    app.refresh_now().await;
    assert_eq!(app.get("/feeds/caltrain/routes").await.status, 200);
    assert_eq!(app.post_waybill(&serde_json::json!({})).await.status, 422);
    assert_eq!(app.get("/waybills").await.status, 200);
    let offered = Offered::parse(&app.get("/metrics").await.text());

    let missing = offered.missing(&exprs);
    assert!(missing.is_empty(), "not in /metrics: {missing:#?}");
    // The same check refuses a name the service does not export.
    let bogus = metric_names("rate(gtfs_fetch_http_requests_totl[5m])");
    assert_eq!(
        offered.missing(&[("bogus".into(), bogus)]),
        ["gtfs_fetch_http_requests_totl (in bogus)"]
    );
    app.stop().await.unwrap();
}
