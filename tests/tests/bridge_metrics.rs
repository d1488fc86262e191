//! In Lambda deployments the bridge reports what only it knows — consumer lag, held batches,
//! dead letters — as EMF lines on stdout (CloudWatch metrics without Prometheus) and on its own
//! `/metrics`, under the names the standalone functions export.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use wa_integration_tests::functions::{Function, HOLDING_WITHIN};
use wa_integration_tests::lambda::{start_bridge, LocalLambda};
use wa_integration_tests::servers::free_port;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::{ChatUpdate, MessageUpsert};

const WAIT: Duration = Duration::from_secs(120);
const LAG: &str = "message_event_service_consumer_lag";
const HELD: &str = "message_event_service_batches_held_total";
const DEAD: &str = "message_event_service_dead_letters_total";

/// The EMF lines a process wrote so far (its stdout, captured in its log), each checked
/// against the format: namespace, timestamp, a value for every dimension and metric (a whole
/// number for a count).
fn emf_lines(process: &Function) -> Vec<Value> {
    let lines: Vec<Value> = process
        .logs()
        .lines()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("EMF line {l:?}: {e}")))
        .collect();
    for line in &lines {
        let m = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "WAEventsProcessor", "{line}");
        assert!(line["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        for dims in m["Dimensions"].as_array().unwrap() {
            for d in dims.as_array().unwrap() {
                assert!(
                    line[d.as_str().unwrap()].is_string(),
                    "dimension {d}: {line}"
                );
            }
        }
        for metric in m["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            match metric["Unit"].as_str() {
                Some("Count") => assert!(line[name].is_u64(), "{name} without a count: {line}"),
                Some("Seconds") => assert!(line[name].is_f64(), "{name} without seconds: {line}"),
                other => panic!("{name}: unit {other:?}"),
            }
        }
    }
    lines
}

/// The values of `metric` in the EMF lines, in order.
fn values(lines: &[Value], metric: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l[metric].as_u64())
        .collect::<Vec<_>>()
}

/// The metric names of the EMF lines.
fn emf_names(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .flat_map(|l| {
            l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
        })
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect()
}

/// The sample names of a `/metrics` body.
fn prometheus_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_bridge_reports_lag_and_dead_letters_as_emf_and_on_its_metrics() {
    let s = Stack::new("bremf").await;
    s.create_streams().await;
    // A backlog before the bridge starts: its first lag report sees it.
    for i in 0..300 {
        s.publish(
            ChatUpdate,
            json!({"chat_id": format!("AG_{}", i % 7), "unread_count": 1}),
        )
        .await;
    }
    let poison = s.publish_raw(&s.subject(MessageUpsert), "{not json").await;
    let rt = LocalLambda::start(&s, "wa-realtime", &[]);
    let bridge = start_bridge(&s, "realtime", &rt, &[("BATCH_SIZE", "10")]).await;
    s.wait_count(WAIT, "SELECT sum(unread_count) FROM chats", 300)
        .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    assert_eq!(s.dead_letters().await.len(), 1, "{poison}");

    // Lag: the backlog, then drained (a report every 5 s).
    let lines = eventually(WAIT, "an EMF lag line of 0 after the drain", || async {
        let lines = emf_lines(&bridge);
        (values(&lines, LAG).last() == Some(&0)).then_some(lines)
    })
    .await;
    let lag = values(&lines, LAG);
    assert!(
        lag.iter().any(|v| *v > 0),
        "no lag line saw the backlog: {lag:?}"
    );
    for line in lines.iter().filter(|l| l.get(LAG).is_some()) {
        assert_eq!(line["consumer_type"], "realtime");
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["consumer_type"]])
        );
    }
    // The dead letter, once, with its error type.
    let dead: Vec<&Value> = lines.iter().filter(|l| l.get(DEAD).is_some()).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0][DEAD], 1);
    assert_eq!(dead[0]["error_type"], "malformed");
    assert_eq!(
        dead[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["consumer_type", "error_type"]])
    );

    // The same on /metrics, under the same names.
    let (_, body) = bridge.get("/metrics").await.expect("/metrics");
    assert!(
        body.contains(&format!("{LAG}{{consumer_type=\"realtime\"}} 0")),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "{DEAD}{{consumer_type=\"realtime\",error_type=\"malformed\"}} 1"
        )),
        "{body}"
    );
    // Registered at startup, before anything was held.
    assert!(
        body.contains(&format!("{HELD}{{consumer_type=\"realtime\"}} ")),
        "{body}"
    );
    let exported = prometheus_names(&body);
    for name in emf_names(&lines) {
        assert!(exported.contains(&name), "EMF {name} is not on /metrics");
    }
}

#[tokio::test]
async fn the_bridge_reports_held_batches_as_emf_and_on_its_metrics() {
    let s = Stack::new("bremfheld").await;
    s.create_streams().await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    // No Lambda API answers there: every invocation fails and the batch is held.
    let mut env = s.env();
    env.extend([
        ("BRIDGE_ROUTES", "realtime=_".to_owned()),
        (
            "LAMBDA_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
    ]);
    let mut bridge = functions::start("wa-bridge", &env);
    bridge
        .wait_ready(functions::READY_WITHIN)
        .await
        .expect("ready");
    bridge.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    let lines = eventually(WAIT, "two EMF held-batch lines", || async {
        let lines = emf_lines(&bridge);
        (values(&lines, HELD).len() >= 2).then_some(lines)
    })
    .await;
    for line in lines.iter().filter(|l| l.get(HELD).is_some()) {
        assert_eq!(line[HELD], 1, "one line per hold: {line}");
        assert_eq!(line["consumer_type"], "realtime");
    }
    assert!(
        !values(&lines, LAG).is_empty(),
        "lag is reported while holding"
    );
    let (_, body) = bridge.get("/metrics").await.expect("/metrics");
    let held_line = body
        .lines()
        .find(|l| l.starts_with(&format!("{HELD}{{consumer_type=\"realtime\"}}")))
        .unwrap_or_else(|| panic!("{body}"));
    let held: u64 = held_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(held >= 2, "{held_line}");
    assert!(prometheus_names(&body).contains(HELD));
}

/// dlq-retry in Lambda mode has no `/metrics`: each event it records in `exhausted_events` is an
/// EMF line of its own, under the standalone name.
#[tokio::test]
async fn dlq_retry_in_lambda_mode_writes_exhausted_events_as_emf() {
    let s = Stack::new("bremfexh").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let dlq = LocalLambda::start(&s, "wa-dlq-retry", &[]);
    let _bridge = start_bridge(&s, "dlq-retry", &dlq, &[]).await;
    s.publish_raw(&s.subject(MessageUpsert), "{not json").await;
    s.wait_count(WAIT, "SELECT count(*) FROM exhausted_events", 1)
        .await;
    let lines = eventually(WAIT, "the exhausted event's EMF line", || async {
        let lines = emf_lines(&dlq.function);
        let exhausted: Vec<Value> = lines
            .into_iter()
            .filter(|l| l.get("dlq_exhausted_events_total").is_some())
            .collect();
        (!exhausted.is_empty()).then_some(exhausted)
    })
    .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["dlq_exhausted_events_total"], 1);
    assert_eq!(lines[0]["error_type"], "malformed");
    assert_eq!(lines[0]["consumer_type"], "dlq_retry");
}
