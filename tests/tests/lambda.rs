//! Lambda mode end to end: the Runtime API served by `cargo lambda watch --only-lambda-apis`,
//! the real function binaries polling it, `wa-bridge` invoking them from real JetStream
//! consumers, real Postgres.

use std::time::Duration;

use serde_json::{json, Value};
use wa_integration_tests::expect::assert_fixture_state;
use wa_integration_tests::functions::HOLDING_WITHIN;
use wa_integration_tests::lambda::{start_bridge, LocalLambda};
use wa_integration_tests::servers::PrivatePostgres;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::workload::{self, Workload};
use wa_integration_tests::*;
use wa_shared::model::Category;
use wa_shared::model::EventKind::*;

const WAIT: Duration = Duration::from_secs(120);

async fn settled(s: &Stack, consumers: &[(&str, &str)]) {
    for (stream, durable) in consumers {
        s.wait_settled(WAIT, stream, durable).await;
    }
}

const BOTH: &[(&str, &str)] = &[
    ("wa_events_stream", "wa_realtime"),
    ("wa_history_events_stream", "wa_historical"),
];

#[tokio::test]
async fn every_fixture_lands_through_the_bridge_and_lambda() {
    let s = Stack::new("lfx").await;
    let rt = LocalLambda::start(&s, "wa-realtime", &[]);
    let hist = LocalLambda::start(&s, "wa-historical", &[]);
    let _b1 = start_bridge(&s, "realtime", &rt, &[]).await;
    let _b2 = start_bridge(&s, "historical", &hist, &[]).await;
    let published = s.publish_fixtures().await as i64;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", published)
        .await;
    settled(&s, BOTH).await;
    assert_fixture_state(&s.pool, &s.tenant).await;
    // The functions wrote their metrics as EMF log lines.
    let logs = rt.function.logs();
    let emf: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| serde_json::from_str(l).expect("EMF line is JSON"))
        .collect();
    assert!(!emf.is_empty(), "no EMF lines in:\n{logs}");
    for line in &emf {
        let m = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "WAEventsProcessor");
        assert!(line["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        for dims in m["Dimensions"].as_array().unwrap() {
            for d in dims.as_array().unwrap() {
                assert!(
                    line.get(d.as_str().unwrap()).is_some(),
                    "dimension {d} has no value"
                );
            }
        }
        for metric in m["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "metric {name} has no value: {line}");
            assert!(["Count", "Seconds"].contains(&metric["Unit"].as_str().unwrap()));
        }
    }
    let received: i64 = emf
        .iter()
        .map(|l| {
            l["message_event_service_events_received_total"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert!(received >= 29, "realtime EMF counted {received} events");
}

/// Fixtures, a realistic mix, duplicates, an update before its message, and poison. Realtime
/// events first, history once they are settled: the two streams are consumed independently, so
/// rows both touch would otherwise depend on timing rather than on the mode.
async fn parity_sequence(s: &Stack) {
    s.publish_fixtures_where(|k| k.category() == Category::Realtime)
        .await;
    Workload::generate(300, 12, 29)
        .publish(&s.js, &s.tenant)
        .await;
    let dup = json!({"chat_id": "AG_dup", "unread_count": 1});
    s.publish(ChatUpdate, dup.clone()).await;
    s.publish(ChatUpdate, dup).await;
    s.publish(MessageUpdate, json!({"message_id": "early", "status": "3"}))
        .await;
    s.publish(MessageUpsert, json!({"message_id": "early", "chat_id": "AG_628", "flow": "IN", "message_timestamp": 1718358000}))
        .await;
    s.publish_raw(&s.subject(ChatUpsert), "{oops").await;
    s.publish_raw(&s.subject(ContactUpsert), "").await;
    s.publish(
        ContactUpsert,
        json!({"agent_id": "AG", "phone_number": "1", "company_id": "NOT_ME"}),
    )
    .await;
    settled(s, &BOTH[..1]).await;
    s.publish_fixtures_where(|k| k.category() == Category::Historical)
        .await;
    s.publish(
        HistoryChats,
        json!({"chats": [{"chat_id": "AG_h1"}, {"push_name": "no id"}]}),
    )
    .await;
}

fn normalized(v: Value, tenant: &str) -> Value {
    serde_json::from_str(&v.to_string().replace(tenant, "TENANT")).unwrap()
}

async fn dlq_summary(s: &Stack) -> Vec<Value> {
    let mut out: Vec<Value> = s
        .dead_letters()
        .await
        .into_iter()
        .map(|d| {
            let e = d.envelope;
            normalized(
                json!({"error_type": e["error_type"], "source_subject": e["source_subject"], "company": e["company"],
                       "payload": e["original_payload"], "raw": e["original_payload_base64"], "item": e["item_index"]}),
                &s.tenant,
            )
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

#[tokio::test]
async fn standalone_and_lambda_leave_identical_tables_and_dead_letters() {
    let standalone = Stack::new("parsa").await;
    let _rt = standalone.start("wa-realtime", &[]).await;
    let _hist = standalone.start("wa-historical", &[]).await;

    let lambda = Stack::new("parla").await;
    let rt = LocalLambda::start(&lambda, "wa-realtime", &[]);
    let hist = LocalLambda::start(&lambda, "wa-historical", &[]);
    let _b1 = start_bridge(&lambda, "realtime", &rt, &[]).await;
    let _b2 = start_bridge(&lambda, "historical", &hist, &[]).await;

    parity_sequence(&standalone).await;
    parity_sequence(&lambda).await;
    for s in [&standalone, &lambda] {
        eventually(WAIT, "the dead letters", || async {
            (s.dead_letters().await.len() == 4).then_some(())
        })
        .await;
        settled(s, BOTH).await;
    }
    let a = normalized(
        snapshot(&standalone.pool, &standalone.tenant).await,
        &standalone.tenant,
    );
    let b = normalized(snapshot(&lambda.pool, &lambda.tenant).await, &lambda.tenant);
    assert_eq!(
        a["messages"].as_array().unwrap().len(),
        b["messages"].as_array().unwrap().len()
    );
    for table in ["chats", "messages", "contacts", "agents"] {
        let (ra, rb) = (a[table].as_array().unwrap(), b[table].as_array().unwrap());
        assert_eq!(ra.len(), rb.len(), "{table}: row counts differ");
        for (x, y) in ra.iter().zip(rb) {
            assert_eq!(x, y, "{table}: standalone and Lambda rows differ");
        }
    }
    assert_eq!(dlq_summary(&standalone).await, dlq_summary(&lambda).await);
}

#[tokio::test]
async fn a_failing_function_holds_the_batch_and_applies_it_once_after_recovery() {
    let mut pg = PrivatePostgres::start();
    let mut s = Stack::new("lfail").await;
    s.database_url = pg.url();
    let rt = LocalLambda::start(&s, "wa-realtime", &[]);
    let bridge = start_bridge(&s, "realtime", &rt, &[("BATCH_SIZE", "50")]).await;
    s.pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    let w = Workload::generate(400, 8, 31);
    let (head, tail) = w.events.split_at(100);
    workload::publish(&s.js, &s.tenant, head).await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 100).await;
    s.pool.close().await;
    pg.stop();
    workload::publish(&s.js, &s.tenant, tail).await;
    bridge.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    pg.restart();
    s.pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 400).await;
    settled(&s, &[("wa_events_stream", "wa_realtime")]).await;
    w.assert_applied(&s.pool, &s.tenant).await;
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_timed_out_invocation_is_retried_and_applied_once() {
    let s = Stack::new("ltime").await;
    let rt = LocalLambda::start(&s, "wa-realtime", &[("DB_LOCK_TIMEOUT", "30s")]);
    let bridge = start_bridge(&s, "realtime", &rt, &[("BRIDGE_INVOKE_TIMEOUT", "1s")]).await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1).await;
    let locker = lock_table(&s.pool, &s.tenant, "chats").await;
    for _ in 0..5 {
        s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
            .await;
    }
    // Hold the lock until an invocation has timed out and the batch is held for a retry.
    bridge.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    locker.rollback().await.unwrap();
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 6).await;
    settled(&s, &[("wa_events_stream", "wa_realtime")]).await;
    assert_eq!(
        row(&s.pool, &s.tenant, "SELECT unread_count FROM chats").await["unread_count"],
        6
    );
}

#[tokio::test]
async fn retry_and_dead_letter_answers_are_applied_to_exactly_those_messages() {
    let s = Stack::new("litems").await;
    let rt = LocalLambda::start(&s, "wa-realtime", &[]);
    let _bridge = start_bridge(&s, "realtime", &rt, &[]).await;
    s.publish(MessageUpdate, json!({"message_id": "m1", "status": "4"}))
        .await;
    let poison = s.publish_raw(&s.subject(MessageUpsert), "nope").await;
    s.publish(
        MessageUpsert,
        json!({"message_id": "m1", "chat_id": "AG_628", "flow": "IN"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages WHERE status = '4'", 1)
        .await;
    settled(&s, &[("wa_events_stream", "wa_realtime")]).await;
    let dead = s.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].msg_id.as_deref(),
        Some(format!("wa_events_stream:{poison}").as_str())
    );
    assert_eq!(dead[0].envelope["error_type"], "malformed");
}

#[tokio::test]
async fn killing_the_bridge_mid_invocation_loses_and_repeats_nothing() {
    let s = Stack::new("lkill").await;
    let rt = LocalLambda::start(&s, "wa-realtime", &[]);
    s.create_streams().await;
    let w = Workload::generate(1500, 20, 37);
    w.publish(&s.js, &s.tenant).await;
    let mut bridge = start_bridge(&s, "realtime", &rt, &[("BATCH_SIZE", "20")]).await;
    for threshold in [200, 600, 1000] {
        eventually(WAIT, "progress", || async {
            (s.count("SELECT count(*) FROM inbox").await >= threshold).then_some(())
        })
        .await;
        bridge.kill9();
        bridge.restart().unwrap();
    }
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1500).await;
    settled(&s, &[("wa_events_stream", "wa_realtime")]).await;
    w.assert_applied(&s.pool, &s.tenant).await;
}

/// SPEC §9: the bridge and the function may be configured with different `MAX_DELIVER`. The
/// bridge's consumer never drops a message itself (`max_deliver` -1), and the function counts
/// its own attempts: a receipt whose message never comes is dead-lettered once, after the
/// function's attempts, whatever the bridge was told.
#[tokio::test]
async fn a_bridge_and_function_with_different_max_deliver_still_dead_letter_once() {
    let s = Stack::new("lmaxdel").await;
    let rt = LocalLambda::start(
        &s,
        "wa-realtime",
        &[
            ("MAX_DELIVER", "3"),
            ("BACKOFF", "100ms"),
            ("RETRY_WINDOW", "0s"),
        ],
    );
    let _bridge = start_bridge(
        &s,
        "realtime",
        &rt,
        &[("MAX_DELIVER", "2"), ("BACKOFF", "100ms")],
    )
    .await;
    let info = s.consumer_info("wa_events_stream", "wa_realtime").await;
    assert_eq!(info.config.max_deliver, -1);
    s.publish(MessageUpdate, json!({"message_id": "ghost", "status": "4"}))
        .await;
    let dead = eventually(WAIT, "the receipt dead-lettered", || async {
        let d = s.dead_letters().await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    settled(&s, &[("wa_events_stream", "wa_realtime")]).await;
    let dead_after = s.dead_letters().await;
    assert_eq!(dead_after.len(), 1, "{dead_after:?}");
    assert_eq!(dead[0].envelope["error_type"], "retry_exhausted");
    assert_eq!(
        dead[0].envelope["retry_count"], 3,
        "the function's attempts"
    );
}
