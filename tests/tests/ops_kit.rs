//! The operations kit (`ops/`): the Grafana dashboard and the Prometheus alert rules are well
//! formed, and every metric they query is exported by the running processes — the series the
//! alerts watch from startup, before any event or failure, the rest once events flowed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use wa_integration_tests::eventually;
use wa_integration_tests::functions::Function;
use wa_integration_tests::lambda::{start_bridge, LocalLambda};
use wa_integration_tests::stack::Stack;
use wa_shared::model::EventKind::{MessageUpdate, MessageUpsert};

const WAIT: Duration = Duration::from_secs(120);

/// Series Prometheus makes itself for every target.
const FROM_PROMETHEUS: &[&str] = &["up"];

fn ops_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("ops")
        .join(path)
}

fn dashboard() -> Value {
    let path = ops_file("grafana/wa-events.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The alert rules as JSON, read by PyYAML (which `just tools` brings along with cfn-lint).
fn alert_rules() -> Value {
    let path = ops_file("prometheus/alerts.yaml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("python3 runs (with PyYAML: pip install pyyaml)");
    assert!(
        out.status.success(),
        "{} is not valid YAML (or PyYAML is missing):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

/// Every query of the dashboard: the panels' targets (rows included) and the variables'.
fn dashboard_queries(d: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("a target has an expr").to_owned());
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            out.push(q.expect("a query variable has a query").to_owned());
        }
    }
    out
}

/// Every alerting rule, checked for what an operator needs: a name, `for:`, a severity, a
/// summary and a description. Returns (alert name, expression) pairs.
fn checked_alerts(rules: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let groups = rules["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["name"].is_string(), "a group without a name: {g}");
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("not an alert: {r}"));
            assert!(
                !out.iter().any(|(n, _)| n == name),
                "alert {name} defined twice"
            );
            let duration = r["for"].as_str().unwrap_or_default();
            assert!(
                duration.len() >= 2
                    && duration[..duration.len() - 1].parse::<u32>().is_ok()
                    && duration.ends_with(['s', 'm', 'h']),
                "{name}: `for:` must be a duration, not {:?}",
                r["for"]
            );
            assert!(
                ["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap_or("")),
                "{name}: severity warning or critical"
            );
            for field in ["summary", "description"] {
                let text = r["annotations"][field].as_str().unwrap_or_default();
                assert!(text.trim().len() > 10, "{name}: no {field}");
            }
            let expr = r["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{name}: no expr");
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// PromQL words that are not metric names: operators, modifiers, and the aggregations (which
/// may be followed by `by (…)` rather than by their parenthesis).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
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
    "atan2",
    "inf",
    "nan",
];

/// The metric names a PromQL expression (or a Grafana `label_values(metric, label)`) selects.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out string literals, label matchers and range selectors.
    let mut cleaned = String::with_capacity(expr.len());
    let (mut quote, mut escaped, mut depth) = (None::<char>, false, 0usize);
    for c in expr.chars() {
        if let Some(q) = quote {
            escaped = !escaped && c == '\\';
            if c == q && !escaped {
                quote = None;
            }
            cleaned.push(' ');
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                cleaned.push(' ');
            }
            '{' | '[' => {
                depth += 1;
                cleaned.push(' ');
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                cleaned.push(' ');
            }
            _ if depth > 0 => cleaned.push(' '),
            _ => cleaned.push(c),
        }
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // A number or a duration (`5m`), all of it.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                // Its parenthesised label list follows.
                skip_list = next == Some(&'(');
            } else if next == Some(&'(') || word.starts_with('$') || KEYWORDS.contains(&&*lower) {
                // A function, a Grafana variable or an operator.
            } else {
                names.insert(word);
            }
            continue;
        }
        if c == '(' && skip_list {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_list = false;
        }
        i += 1;
    }
    // `label_values(metric, label)`: the metric only.
    if let Some(args) = expr.trim().strip_prefix("label_values(") {
        let metric = args.split([',', ')']).next().unwrap_or_default().trim();
        names.retain(|n| n == metric);
    }
    names
}

/// The names of the samples in a Prometheus text exposition.
fn exported(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, consumer_type) (rate(a_seconds_bucket{job=~"$job"}[$__rate_interval])))"#
        ),
        ["a_seconds_bucket"]
    );
    assert_eq!(
        names("up == 0\n  and on (job, instance)\nmax_over_time(wa_events_ready[1d]) >= 0"),
        ["up", "wa_events_ready"]
    );
    assert_eq!(
        names(
            r#"sum by (x) (rate(b_total{action!="ack", q="a}b"}[5m])) / sum(rate(c_count[5m])) > 0.05 or d offset 5m"#
        ),
        ["b_total", "c_count", "d"]
    );
    assert_eq!(
        names("label_values(wa_events_ready, job)"),
        ["wa_events_ready"]
    );
    assert_eq!(names("max by (job) (x) > bool 1e3"), ["x"]);
}

#[test]
fn the_alert_rules_are_well_formed_and_cover_what_operators_watch() {
    let alerts = checked_alerts(&alert_rules());
    let all: BTreeSet<String> = alerts.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for needed in [
        "message_event_service_consumer_lag",
        "message_event_service_dead_letters_total",
        "message_event_service_batches_held_total",
        "dlq_exhausted_events_total",
        "wa_events_ready",
    ] {
        assert!(all.contains(needed), "no alert on {needed}: {all:?}");
    }
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard_queries(&dashboard).len() > 10);
}

/// The union of what the processes export now, and which of `wanted` is missing from it.
async fn missing(processes: &[&Function], wanted: &BTreeSet<String>) -> (String, Vec<String>) {
    let mut bodies = String::new();
    for p in processes {
        if let Some((200, body)) = p.get("/metrics").await {
            bodies.push_str(&body);
        }
    }
    let have = exported(&bodies);
    let missing = wanted
        .iter()
        .filter(|n| !have.contains(*n) && !FROM_PROMETHEUS.contains(&n.as_str()))
        .cloned()
        .collect();
    (bodies, missing)
}

/// Waits until no name of `wanted` is missing from the processes' `/metrics`.
async fn wait_exported(processes: &[&Function], wanted: &BTreeSet<String>, when: &str) -> String {
    let found = wa_testkit::poll(WAIT, || async {
        let (bodies, missing) = missing(processes, wanted).await;
        Ok::<_, std::convert::Infallible>(missing.is_empty().then_some(bodies))
    })
    .await;
    match found {
        Ok(Some(bodies)) => bodies,
        _ => {
            let (bodies, missing) = missing(processes, wanted).await;
            panic!("{when}: not exported by any process: {missing:?}\n{bodies}")
        }
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let alerts: BTreeSet<String> = checked_alerts(&alert_rules())
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    let dashboard: BTreeSet<String> = dashboard_queries(&dashboard())
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    assert!(dashboard.len() > 20, "{dashboard:?}");

    // Every process: three standalone functions, and historical in Lambda mode behind the bridge.
    let s = Stack::new("opskit").await;
    let rt = s
        .start(
            "wa-realtime",
            &[
                ("MAX_DELIVER", "2"),
                ("BACKOFF", "100ms"),
                ("RETRY_WINDOW", "0s"),
            ],
        )
        .await;
    let dlq = s.start("wa-dlq-retry", &[]).await;
    let onboarding = s.start("wa-onboarding", &[]).await;
    let hist = LocalLambda::start(&s, "wa-historical", &[]);
    let bridge = start_bridge(&s, "historical", &hist, &[]).await;
    let all = [&rt, &dlq, &onboarding, &bridge];

    // Before any event: what the alerts watch is there already, and every process is ready.
    let bodies = wait_exported(&all, &alerts, "at startup").await;
    for process in ["wa-realtime", "wa-dlq-retry", "wa-onboarding", "wa-bridge"] {
        let line = format!("wa_events_ready{{process=\"{process}\"}}");
        assert!(bodies.contains(&line), "no {line} in:\n{bodies}");
    }
    eventually(WAIT, "every process's readiness gauge at 1", || async {
        let (bodies, _) = missing(&all, &alerts).await;
        let ready = bodies
            .lines()
            .filter(|l| l.starts_with("wa_events_ready{") && l.ends_with(" 1"))
            .count();
        (ready == all.len()).then_some(())
    })
    .await;

    // Events of every kind; a poison message that ends in exhausted_events; a receipt whose
    // message never comes, dead-lettered after realtime's two attempts and retried (a failure)
    // by dlq-retry.
    s.publish_fixtures().await;
    s.publish_raw(&s.subject(MessageUpsert), "{not json").await;
    s.publish(MessageUpdate, json!({"message_id": "ghost", "status": "4"}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM exhausted_events", 1)
        .await;
    s.wait_settled(WAIT, "wa_history_events_stream", "wa_historical")
        .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    let everything: BTreeSet<String> = alerts.union(&dashboard).cloned().collect();
    let bodies = wait_exported(&all, &everything, "after events").await;
    assert!(
        bodies.contains(
            "dlq_exhausted_events_total{consumer_type=\"dlq_retry\",error_type=\"malformed\"} 1"
        ),
        "{bodies}"
    );
}
