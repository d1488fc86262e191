//! The standalone functions end to end: real binaries, a private NATS, real Postgres.

use std::time::Duration;

use serde_json::json;
use wa_integration_tests::broker::{self, consumer_backlog};
use wa_integration_tests::expect::{assert_fixture_state, FIXTURE_MESSAGES};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;
use wa_shared::model::Subject;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_fixture_published_on_its_subject_lands() {
    let s = Stack::new("e2efx").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _hist = s.start("wa-historical", &[]).await;
    let published = s.publish_fixtures().await as i64;
    eventually(WAIT, "fixture messages", || async {
        (s.count("SELECT count(*) FROM messages").await == FIXTURE_MESSAGES
            && s.count("SELECT count(*) FROM contacts").await == 5
            && s.count("SELECT count(*) FROM inbox").await == published)
            .then_some(())
    })
    .await;
    // Updates published before their messages arrive land on redelivery; wait for every one.
    eventually(WAIT, "all stream messages settled", || async {
        let rt = consumer_backlog(&s.js, "wa_events_stream", "wa_realtime").await?;
        let hist = consumer_backlog(&s.js, "wa_history_events_stream", "wa_historical").await?;
        (rt == (0, 0) && hist == (0, 0)).then_some(())
    })
    .await;
    assert_fixture_state(&s.pool, &s.tenant).await;
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_once_with_their_bytes_and_block_nothing() {
    let s = Stack::new("poison").await;
    let rt = s
        .start("wa-realtime", &[("MAX_PAYLOAD_BYTES", "2048")])
        .await;
    let subject = s.subject(MessageUpsert);
    let good = |id: &str| {
        serde_json::to_vec(&json!({"message_id": id, "chat_id": "AG_628", "flow": "IN"})).unwrap()
    };
    s.publish_raw(&subject, good("m1")).await;
    let malformed = s.publish_raw(&subject, "{not json").await;
    let empty = s.publish_raw(&subject, "").await;
    let oversized = s.publish_raw(&subject, vec![b'x'; 5000]).await;
    let wrong = s.publish(MessageUpsert, json!({"message_id": "w", "chat_id": "AG_628", "flow": "IN", "company_id": "SOMEONE_ELSE"})).await;
    let invalid = s
        .publish_raw(&Subject::format(MessageUpsert, "bad'id"), good("x"))
        .await;
    s.publish_raw(&subject, good("m2")).await;

    s.wait_count(WAIT, "SELECT count(*) FROM messages", 2).await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;

    let dead = s.dead_letters().await;
    let by_seq = |seq: u64| {
        let id = format!("wa_events_stream:{seq}");
        let found: Vec<_> = dead
            .iter()
            .filter(|d| d.msg_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "exactly one dead letter for {id}: {dead:?}");
        found[0].envelope.clone()
    };
    assert_eq!(dead.len(), 4, "{dead:?}");
    let b64 =
        |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let m = by_seq(malformed);
    assert_eq!(
        (
            m["error_type"].as_str(),
            m["original_payload_base64"].as_str()
        ),
        (Some("malformed"), Some(b64(b"{not json").as_str()))
    );
    assert!(m["original_payload"].is_null());
    assert_eq!(m["source_subject"], subject.as_str());
    assert_eq!(m["company"], s.tenant.as_str());
    assert_eq!(m["retry_count"], 1);
    assert_eq!(m["max_retry"], 5);
    let e = by_seq(empty);
    assert_eq!(
        (
            e["error_type"].as_str(),
            e["original_payload_base64"].as_str()
        ),
        (Some("malformed"), Some(""))
    );
    let o = by_seq(oversized);
    assert_eq!(
        (o["error_type"].as_str(), o["original_size"].as_u64()),
        (Some("too_large"), Some(5000))
    );
    assert_eq!(
        o["original_payload_base64"].as_str(),
        Some(b64(&[b'x'; 5000]).as_str())
    );
    let w = by_seq(wrong);
    assert_eq!(w["error_type"], "tenant");
    assert_eq!(w["original_payload"]["company_id"], "SOMEONE_ELSE");

    let invalid_dead = broker::dead_letters(&s.js, Subject::INVALID_TENANT_DLQ).await;
    assert_eq!(invalid_dead.len(), 1, "{invalid_dead:?}");
    assert_eq!(
        invalid_dead[0].msg_id.as_deref(),
        Some(format!("wa_events_stream:{invalid}").as_str())
    );
    assert_eq!(invalid_dead[0].envelope["error_type"], "tenant");
    assert_eq!(
        invalid_dead[0].envelope["original_payload"]["message_id"],
        "x"
    );

    // Terminated, not redelivered.
    let info = s.consumer_info("wa_events_stream", "wa_realtime").await;
    assert_eq!(info.num_redelivered, 0);
    drop(rt);
}

#[tokio::test]
async fn an_update_published_before_its_message_lands_once_the_message_arrives() {
    let s = Stack::new("ooo").await;
    let _rt = s.start("wa-realtime", &[]).await;
    s.publish(MessageUpdate, json!({"message_id": "m1", "status": "4"}))
        .await;
    eventually(WAIT, "the update to be tried", || async {
        (consumer_backlog(&s.js, "wa_events_stream", "wa_realtime")
            .await?
            .0
            == 0)
            .then_some(())
    })
    .await;
    s.publish(
        MessageUpsert,
        json!({"message_id": "m1", "chat_id": "AG_628", "flow": "OUT", "status": "1"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages WHERE status = '4'", 1)
        .await;
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test]
async fn history_batches_with_a_bad_item_dead_letter_that_item_alone() {
    let s = Stack::new("histdlq").await;
    let _h = s.start("wa-historical", &[]).await;
    let seq = s
        .publish(
            HistoryContacts,
            json!({"contacts": [
                {"agent_id": "AG", "phone_number": "1"},
                {"agent_id": "AG"},
                {"agent_id": "AG", "phone_number": "3"}
            ]}),
        )
        .await;
    eventually(WAIT, "the dead item", || async {
        let d = s.dead_letters().await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM contacts", 2).await;
    let dead = s.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].msg_id.as_deref(),
        Some(format!("wa_history_events_stream:{seq}:1").as_str())
    );
    assert_eq!(dead[0].envelope["item_index"], 1);
    assert_eq!(dead[0].envelope["error_type"], "validation");
    assert_eq!(
        dead[0].envelope["original_payload"],
        json!({"contacts": [{"agent_id": "AG"}]})
    );
}

#[tokio::test]
async fn company_id_serves_one_tenant_with_its_own_consumer() {
    let s = Stack::new("single").await;
    let other = unique_tenant("other");
    let _rt = s.start("wa-realtime", &[("COMPANY_ID", &s.tenant)]).await;
    s.publish_raw(
        &Subject::format(ChatUpdate, &other),
        r#"{"chat_id":"AG_1","unread_count":1}"#,
    )
    .await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM chats", 1).await;
    let durable = format!("wa_realtime_{}", s.tenant);
    let info = s.consumer_info("wa_events_stream", &durable).await;
    // nats-server 2.9 refuses `v1.*.*.<company>` on this stream (not a subset of its subjects):
    // the consumer then takes the whole stream and acknowledges other tenants' events unprocessed.
    assert!(
        ["".to_string(), format!("v1.*.*.{}", s.tenant)].contains(&info.config.filter_subject),
        "{}",
        info.config.filter_subject
    );
    assert_eq!(info.num_pending, 0);
    assert!(
        !schema_exists(&s.pool, &schema_name(&other)).await,
        "the other tenant is not served"
    );
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let s = Stack::new("http").await;
    let rt = s.start("wa-realtime", &[]).await;
    assert_eq!(rt.get("/health").await.map(|r| r.0), Some(200));
    assert_eq!(rt.get("/ready").await.map(|r| r.0), Some(200));
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    let body = eventually(WAIT, "metrics of the processed event", || async {
        let (_, body) = rt.get("/metrics").await?;
        body.contains("message_event_service_events_processed_total")
            .then_some(body)
    })
    .await;
    for name in [
        "message_event_service_events_received_total",
        "message_event_service_event_processing_actions_total",
        "message_event_service_event_processing_duration_seconds",
        "message_event_service_db_operation_duration_seconds",
        "message_event_service_batch_size",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    // The per-tenant counters are rendered beside the recorder, in its format.
    for line in [
        "# TYPE message_event_service_events_processed_total counter".to_owned(),
        format!("message_event_service_events_received_total{{event_type=\"chats.update\",company_id=\"{}\",consumer_type=\"realtime\"}} 1", s.tenant),
        format!("message_event_service_events_processed_total{{event_type=\"chats.update\",company_id=\"{}\",consumer_type=\"realtime\"}} 1", s.tenant),
        format!("message_event_service_event_processing_actions_total{{event_type=\"chats.update\",company_id=\"{}\",consumer_type=\"realtime\",action=\"ack\"}} 1", s.tenant),
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing from:\n{body}");
    }
    assert!(
        !body.contains("message_event_service_events_failed_total{"),
        "no event failed:\n{body}"
    );
}

#[test]
fn help_lists_every_variable_and_bad_configuration_names_the_variable() {
    let bin = wa_integration_tests::functions::binary("wa-realtime");
    let help = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for var in [
        "NATS_URL",
        "DATABASE_URL",
        "POSTGRES_DSN",
        "COMPANY_ID",
        "TENANT_ALLOWLIST",
        "DB_AUTO_MIGRATE",
        "BATCH_SIZE",
        "BATCH_MAX_WAIT",
        "MAX_DELIVER",
        "BACKOFF",
        "DLQ_MAX_AGE",
        "MAX_PAYLOAD_BYTES",
        "HTTP_PORT",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "STREAM_REPLICAS",
        "NATS_CREDS",
        "NATS_TOKEN",
        "NATS_USER",
    ] {
        assert!(text.contains(var), "--help does not mention {var}");
    }
    for (var, value) in [
        ("BATCH_SIZE", "lots"),
        ("BACKOFF", "1s,soon"),
        ("LOG_FORMAT", "xml"),
        ("COMPANY_ID", "a.b"),
        ("DATABASE_URL", "mysql://x"),
    ] {
        let out = std::process::Command::new(&bin)
            .env(var, value)
            .env("HTTP_PORT", "0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(var),
            "error for {var}={value} does not name it: {err}"
        );
    }
}
