//! dlq-retry and the operator CLI end to end: real binaries, a private NATS, real Postgres.

use std::time::Duration;

use serde_json::json;
use wa_integration_tests::broker::consumer_backlog;
use wa_integration_tests::functions::binary;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;
use wa_shared::model::Subject;

const WAIT: Duration = Duration::from_secs(90);

/// realtime gives up fast on a missing message; dlq-retry retries on a short schedule.
/// Exhausted within a second: two attempts, no window before the last one.
const FAST_REALTIME: &[(&str, &str)] = &[
    ("MAX_DELIVER", "2"),
    ("BACKOFF", "100ms"),
    ("RETRY_WINDOW", "0s"),
];

async fn exhausted(s: &Stack) -> Vec<serde_json::Value> {
    if s.count("SELECT count(*) FROM exhausted_events").await == 0 {
        return Vec::new();
    }
    rows(&s.pool, &s.tenant, "SELECT id, source_subject, error_type, last_error, retry_count, original_payload, encode(original_payload_raw, 'escape') AS raw, dlq_payload FROM exhausted_events ORDER BY id").await
}

fn admin(s: &Stack, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary("wa-admin"))
        .args(args)
        .env("DATABASE_URL", &s.database_url)
        .env("NATS_URL", s.nats.url())
        .output()
        .expect("run wa-admin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_transient_failure_is_retried_on_schedule_then_exhausted_once() {
    let s = Stack::new("dlqex").await;
    let _rt = s.start("wa-realtime", FAST_REALTIME).await;
    let _dlq = s
        .start(
            "wa-dlq-retry",
            &[("DLQ_BACKOFF", "300ms,300ms"), ("RETRY_WINDOW", "0s")],
        )
        .await;
    s.publish(MessageUpdate, json!({"message_id": "ghost", "status": "4"}))
        .await;
    let rows = eventually(WAIT, "one exhausted row", || async {
        let r = exhausted(&s).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    s.wait_settled(WAIT, "dlq_stream", "wa_dlq_retry").await;
    let rows_after = exhausted(&s).await;
    assert_eq!(rows_after.len(), 1, "{rows_after:?}");
    let r = &rows[0];
    assert_eq!(r["error_type"], "retry_exhausted");
    assert_eq!(r["source_subject"], s.subject(MessageUpdate));
    assert_eq!(
        r["original_payload"],
        json!({"message_id": "ghost", "status": "4"})
    );
    // 2 attempts by realtime, then 3 attempts by dlq-retry (DLQ_BACKOFF has 2 entries).
    assert_eq!(r["retry_count"], 5);
    assert_eq!(r["dlq_payload"]["error_type"], "retry_exhausted");
}

#[tokio::test]
async fn a_retry_succeeds_when_the_cause_goes_away_and_records_nothing() {
    let s = Stack::new("dlqok").await;
    let _rt = s.start("wa-realtime", FAST_REALTIME).await;
    let _dlq = s
        .start("wa-dlq-retry", &[("DLQ_BACKOFF", "1s,1s,1s,1s")])
        .await;
    s.publish(MessageUpdate, json!({"message_id": "late", "status": "4"}))
        .await;
    eventually(WAIT, "the dead letter", || async {
        (!s.dead_letters().await.is_empty()).then_some(())
    })
    .await;
    s.publish(
        MessageUpsert,
        json!({"message_id": "late", "chat_id": "AG_628", "flow": "OUT", "status": "1"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages WHERE status = '4'", 1)
        .await;
    s.wait_settled(WAIT, "dlq_stream", "wa_dlq_retry").await;
    assert!(exhausted(&s).await.is_empty());
}

#[tokio::test]
async fn permanent_errors_are_exhausted_without_retries_and_keep_raw_bytes() {
    let s = Stack::new("dlqperm").await;
    let _rt = s.start("wa-realtime", &[]).await;
    // The default schedule (1m, 2m, …) would take minutes: rows appearing now prove no retry.
    let _dlq = s.start("wa-dlq-retry", &[]).await;
    s.publish_raw(&s.subject(ChatUpsert), "{broken").await;
    s.publish(ChatUpsert, json!({"unread_count": 1})).await;
    let rows = eventually(WAIT, "two exhausted rows", || async {
        let r = exhausted(&s).await;
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(rows[0]["error_type"], "malformed");
    assert!(rows[0]["original_payload"].is_null());
    assert_eq!(rows[0]["raw"], "{broken");
    assert_eq!(rows[1]["error_type"], "validation");
    assert_eq!(rows[1]["original_payload"], json!({"unread_count": 1}));
    assert_eq!(rows[1]["retry_count"], 1);
}

#[tokio::test]
async fn dead_letters_of_two_tenants_end_in_their_own_schemas() {
    let a = Stack::new("dlqa").await;
    let b_tenant = unique_tenant("dlqb");
    let _rt = a.start("wa-realtime", &[]).await;
    let _dlq = a.start("wa-dlq-retry", &[]).await;
    a.publish_raw(&a.subject(ContactUpsert), "not json A").await;
    a.publish_raw(&Subject::format(ContactUpsert, &b_tenant), "not json B")
        .await;
    let b_rows = || async {
        rows(&a.pool, &b_tenant, "SELECT company_id, encode(original_payload_raw, 'escape') AS raw FROM exhausted_events").await
    };
    eventually(WAIT, "both recorded", || async {
        (a.count("SELECT count(*) FROM exhausted_events").await == 1
            && schema_exists(&a.pool, &schema_name(&b_tenant)).await
            && b_rows().await.len() == 1)
            .then_some(())
    })
    .await;
    assert_eq!(row(&a.pool, &a.tenant, "SELECT company_id, encode(original_payload_raw, 'escape') AS raw FROM exhausted_events").await, json!({"company_id": a.tenant, "raw": "not json A"}));
    assert_eq!(
        b_rows().await,
        vec![json!({"company_id": b_tenant, "raw": "not json B"})]
    );
}

#[tokio::test]
async fn invalid_tenants_and_unreadable_dead_letters_go_to_the_system_schema() {
    let s = Stack::new("dlqsys").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _dlq = s.start("wa-dlq-retry", &[]).await;
    let marker = unique_tenant("m");
    s.publish_raw(&Subject::format(ChatUpsert, &format!("bad'{marker}")), "{}")
        .await;
    s.publish_raw(
        &Subject::dead_letter(&s.tenant),
        format!("garbage {marker}"),
    )
    .await;
    let count = |pattern: String| {
        let pool = s.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM wa_system.exhausted_events WHERE source_subject LIKE $1 OR convert_from(original_payload_raw, 'UTF8') LIKE $1")
                .bind(pattern)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
        }
    };
    eventually(WAIT, "both in wa_system", || async {
        (count(format!("%{marker}%")).await == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failing_exhausted_write_keeps_the_dead_letter_until_it_succeeds() {
    let s = Stack::new("dlqlock").await;
    let _rt = s.start("wa-realtime", &[]).await;
    // Make the tenant's schema exist, then lock its exhausted_events table.
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1).await;
    let locker = lock_table(&s.pool, &s.tenant, "exhausted_events").await;

    let _dlq = s
        .start("wa-dlq-retry", &[("DB_LOCK_TIMEOUT", "200ms")])
        .await;
    s.publish_raw(&s.subject(ChatUpsert), "locked out").await;
    eventually(WAIT, "the dead letter held, not acknowledged", || async {
        let (pending, ack_pending) = consumer_backlog(&s.js, "dlq_stream", "wa_dlq_retry").await?;
        (pending == 0 && ack_pending == 1).then_some(())
    })
    .await;
    locker.rollback().await.unwrap();
    eventually(WAIT, "the row after the lock", || async {
        (exhausted(&s).await.len() == 1).then_some(())
    })
    .await;
    s.wait_settled(WAIT, "dlq_stream", "wa_dlq_retry").await;
    assert_eq!(exhausted(&s).await.len(), 1);
}

#[tokio::test]
async fn admin_lists_replays_once_and_resolves_exhausted_events() {
    let s = Stack::new("admin").await;
    let _rt = s.start("wa-realtime", FAST_REALTIME).await;
    let _dlq = s
        .start(
            "wa-dlq-retry",
            &[("DLQ_BACKOFF", "200ms"), ("RETRY_WINDOW", "0s")],
        )
        .await;
    s.publish(MessageUpdate, json!({"message_id": "m1", "status": "3"}))
        .await;
    let rows = eventually(WAIT, "the exhausted update", || async {
        let r = exhausted(&s).await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    let id_num = rows[0]["id"].as_i64().unwrap();
    let id = id_num.to_string();

    let (ok, out, err) = admin(&s, &["exhausted", "list", "--tenant", &s.tenant]);
    assert!(ok, "{err}");
    assert!(
        out.contains("retry_exhausted") && out.contains(&s.subject(MessageUpdate)),
        "{out}"
    );
    let (ok, out, _) = admin(&s, &["--json", "exhausted", "list", "--resolved", "false"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == id_num && e["schema"] == schema_name(&s.tenant)));
    let (ok, out, _) = admin(&s, &["tenants"]);
    assert!(ok && out.contains(&schema_name(&s.tenant)), "{out}");

    // Fix the cause (the message arrives), then replay: the update lands.
    s.publish(
        MessageUpsert,
        json!({"message_id": "m1", "chat_id": "AG_628", "flow": "OUT", "status": "1"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages", 1).await;
    let (ok, _, err) = admin(&s, &["exhausted", "replay", &id, "--tenant", &s.tenant]);
    assert!(ok, "{err}");
    assert!(err.contains("[1/1]"), "progress is shown: {err}");
    s.wait_count(WAIT, "SELECT count(*) FROM messages WHERE status = '3'", 1)
        .await;
    // A second replay is refused.
    let (ok, _, err) = admin(&s, &["exhausted", "replay", &id, "--tenant", &s.tenant]);
    assert!(ok && err.contains("already replayed"), "{err}");

    let (ok, _, err) = admin(
        &s,
        &[
            "exhausted",
            "resolve",
            &id,
            "--tenant",
            &s.tenant,
            "--note",
            "fixed upstream",
        ],
    );
    assert!(ok, "{err}");
    let r = row(
        &s.pool,
        &s.tenant,
        "SELECT resolved, notes, replayed_at IS NOT NULL AS replayed FROM exhausted_events",
    )
    .await;
    assert_eq!(r["resolved"], true);
    assert_eq!(r["replayed"], true);
    assert!(r["notes"].as_str().unwrap().contains("fixed upstream"));
    let (ok, out, _) = admin(
        &s,
        &["--json", "exhausted", "show", &id, "--tenant", &s.tenant],
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["resolved"],
        true
    );
}

#[tokio::test]
async fn replaying_an_exhausted_delta_twice_applies_it_once() {
    let s = Stack::new("replay2").await;
    let _rt = s.start("wa-realtime", &[]).await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1).await;
    // An exhausted unread delta, as dlq-retry records it.
    sqlx::query(&format!(
        "INSERT INTO {}.exhausted_events (company_id, source_subject, error_type, last_error, retry_count, original_payload)
         VALUES ($1, $2, 'retry_exhausted', 'database was down', 5, '{{\"chat_id\":\"AG_1\",\"unread_count\":2}}')",
        schema_ident(&s.tenant)
    ))
    .bind(&s.tenant)
    .bind(s.subject(ChatUpdate))
    .execute(&s.pool)
    .await
    .unwrap();
    let (ok, _, err) = admin(&s, &["exhausted", "replay", "--tenant", &s.tenant]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&s, &["exhausted", "replay", "--tenant", &s.tenant]);
    assert!(ok, "{err}");
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 2).await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    assert_eq!(
        row(&s.pool, &s.tenant, "SELECT unread_count FROM chats").await["unread_count"],
        3
    );
}
