//! Hostile input and dead-letter edge cases end to end (SPEC §3, §6, §7, §14), against the real
//! binaries on a private NATS and the test database: the bad event is isolated with a clear
//! error type, its neighbours are applied, its dead letter is recorded whatever it holds, and a
//! dead letter re-run applies once, at its own time, through the function that refused it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::{self, *};
use wa_shared::model::{DeadLetterEnvelope, EnvelopeInput, ErrorType, SourcePosition, Subject};
use wa_shared::transport::streams::{DLQ_STREAM, REALTIME_STREAM};

const WAIT: Duration = Duration::from_secs(90);

/// dlq-retry re-runs on a short schedule.
const FAST_DLQ: &[(&str, &str)] = &[("DLQ_BACKOFF", "200ms,200ms"), ("RETRY_WINDOW", "0s")];

/// Exhausted rows of the tenant: what operators see.
async fn exhausted(s: &Stack) -> Vec<Value> {
    if s.count("SELECT count(*) FROM exhausted_events").await == 0 {
        return Vec::new();
    }
    rows(
        &s.pool,
        &s.tenant,
        "SELECT error_type, last_error, original_payload, original_payload_raw IS NOT NULL AS raw,
                dlq_payload IS NOT NULL AS has_envelope, item_index
         FROM exhausted_events ORDER BY id",
    )
    .await
}

/// A dead letter as a function would have published it for an event of `kind` at `position`.
fn dead_letter(
    s: &Stack,
    kind: EventKind,
    body: &Value,
    error_type: ErrorType,
    position: SourcePosition<'_>,
) -> Vec<u8> {
    let subject = s.subject(kind);
    let payload = serde_json::to_vec(body).expect("json");
    DeadLetterEnvelope::build(EnvelopeInput {
        source_subject: &subject,
        company: &s.tenant,
        payload: &payload,
        error_type,
        error: "failed before",
        retry_count: 5,
        max_retry: 5,
        item_index: None,
    })
    .at(position)
    .to_json()
}

fn position(sequence: u64, published_at: DateTime<Utc>, consumer: &str) -> SourcePosition<'_> {
    SourcePosition {
        stream: REALTIME_STREAM,
        sequence,
        published_at,
        consumer,
    }
}

/// SPEC §6: values the database would refuse are refused at the boundary as `validation`, one
/// event (or one history item) at a time, and dlq-retry records each, whatever it holds: what
/// `jsonb` cannot store is kept as raw bytes.
#[tokio::test]
async fn hostile_events_are_refused_alone_and_recorded_whatever_they_hold() {
    let s = Stack::new("hostile").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _hist = s.start("wa-historical", &[]).await;
    let _dlq = s.start("wa-dlq-retry", &[]).await;
    let message = |id: &str, extra: &str| {
        format!(r#"{{"message_id":"{id}","chat_id":"AG_62811","flow":"IN"{extra}}}"#)
    };
    let deep = format!(
        r#","message_obj":{}1{}"#,
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let hostile = [
        message(
            "jid",
            &format!(r#","jid":"{}@s.whatsapp.net""#, "6".repeat(12_000)),
        ),
        message("deep", &deep),
        message("nul", r#","message_text":"a\u0000b""#),
        message("surrogate", r#","message_obj":{"conversation":"\ud800"}"#),
    ];
    s.publish(
        ChatUpsert,
        json!({"chat_id": "AG_62811", "push_name": "Budi"}),
    )
    .await;
    for body in &hostile {
        s.publish_raw(&s.subject(MessageUpsert), body.clone()).await;
    }
    s.publish_raw(&s.subject(MessageUpsert), message("good", ""))
        .await;
    let history = format!(
        r#"{{"messages":[{},{{"message_id":"h-bad","chat_id":"AG_62811","flow":"\u0000"}},{}]}}"#,
        message("h1", ""),
        message("h2", "")
    );
    s.publish_raw(&s.subject(HistoryMessages), history).await;

    let rows = eventually(WAIT, "five exhausted rows", || async {
        let r = exhausted(&s).await;
        (r.len() == 5).then_some(r)
    })
    .await;
    assert_eq!(
        s.count("SELECT count(*) FROM messages WHERE message_id IN ('good', 'h1', 'h2')")
            .await,
        3,
        "the neighbours are applied"
    );
    assert_eq!(s.count("SELECT count(*) FROM messages").await, 3);
    assert_eq!(s.count("SELECT count(*) FROM chats").await, 1);
    for r in &rows {
        assert_eq!(r["error_type"], "validation", "{r}");
        let error = r["last_error"].as_str().expect("error text");
        assert!(!error.contains('\0'), "{r}");
    }
    let dead = s.dead_letters().await;
    assert_eq!(dead.len(), 5, "{dead:?}");
    assert!(dead
        .iter()
        .all(|d| d.envelope["error_type"] == "validation"));
    let item = dead
        .iter()
        .find(|d| d.envelope["item_index"] == 1)
        .expect("the history item's dead letter");
    assert_eq!(item.envelope["source_stream"], "wa_history_events_stream");
    // NUL and the lone surrogate cannot be `jsonb`, nor can 20,000 levels: kept as bytes.
    let stored_raw = rows.iter().filter(|r| r["raw"] == true).count();
    let stored_json = rows
        .iter()
        .filter(|r| r["original_payload"].is_object())
        .count();
    assert_eq!((stored_raw, stored_json), (4, 1), "{rows:?}");
    s.wait_settled(WAIT, DLQ_STREAM, "wa_dlq_retry").await;
}

/// SPEC §6: a monthly partition an operator dropped or detached is created again when a row
/// needs it, instead of dead-lettering the row.
#[tokio::test]
async fn a_dropped_or_detached_partition_is_created_again() {
    let s = Stack::new("partition").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let in_jan_2023 = |id: &str, day: u32| {
        let ts = chrono::NaiveDate::from_ymd_opt(2023, 1, day)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        json!({"message_id": id, "chat_id": "AG_1", "flow": "IN", "message_timestamp": ts})
    };
    s.publish(MessageUpsert, in_jan_2023("first", 10)).await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages", 1).await;

    sqlx::query(&format!(
        "DROP TABLE {}.messages_2023_01",
        schema_ident(&s.tenant)
    ))
    .execute(&s.pool)
    .await
    .expect("drop the partition");
    s.publish(MessageUpsert, in_jan_2023("after-drop", 11))
        .await;
    s.wait_count(
        WAIT,
        "SELECT count(*) FROM messages WHERE message_id = 'after-drop'",
        1,
    )
    .await;

    sqlx::query(&format!(
        "ALTER TABLE {s}.messages DETACH PARTITION {s}.messages_2023_01",
        s = schema_ident(&s.tenant)
    ))
    .execute(&s.pool)
    .await
    .expect("detach the partition");
    s.publish(MessageUpsert, in_jan_2023("after-detach", 12))
        .await;
    s.wait_count(
        WAIT,
        "SELECT count(*) FROM messages WHERE message_id = 'after-detach'",
        1,
    )
    .await;
    // The detached table keeps its row; the new partition takes the month's next rows.
    assert_eq!(s.count("SELECT count(*) FROM messages_2023_01").await, 1);
    assert_eq!(s.count("SELECT count(*) FROM messages_2023_01_1").await, 1);
    s.wait_settled(WAIT, REALTIME_STREAM, "wa_realtime").await;
    assert!(s.dead_letters().await.is_empty());
}

/// SPEC §7: dlq-retry re-runs an event with its original publish time: a stale agent status
/// does not overwrite a newer one, and a message's date is the day it was published.
#[tokio::test]
async fn a_dead_letter_is_rerun_at_its_original_publish_time() {
    let s = Stack::new("dlqtime").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _dlq = s.start("wa-dlq-retry", FAST_DLQ).await;
    s.publish(
        ConnectionUpdate,
        json!({"agent_id": "AG", "status": "open"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM agents", 1).await;

    let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
    let stale = dead_letter(
        &s,
        ConnectionUpdate,
        &json!({"agent_id": "AG", "status": "close"}),
        ErrorType::RetryExhausted,
        position(1_000_001, an_hour_ago, "wa_realtime"),
    );
    s.publish_raw(&Subject::dead_letter(&s.tenant), stale).await;
    let march = "2024-03-05T10:00:00.123456Z".parse().unwrap();
    let undated = dead_letter(
        &s,
        MessageUpsert,
        &json!({"message_id": "undated", "chat_id": "AG_1", "flow": "IN"}),
        ErrorType::RetryExhausted,
        position(1_000_002, march, "wa_realtime"),
    );
    s.publish_raw(&Subject::dead_letter(&s.tenant), undated)
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages", 1).await;
    s.wait_settled(WAIT, DLQ_STREAM, "wa_dlq_retry").await;

    assert_eq!(
        row(&s.pool, &s.tenant, "SELECT status FROM agents").await["status"],
        "open",
        "the older status lost"
    );
    assert_eq!(
        row(
            &s.pool,
            &s.tenant,
            "SELECT message_date::text AS d FROM messages"
        )
        .await["d"],
        "2024-03-05"
    );
    assert!(exhausted(&s).await.is_empty());
}

/// SPEC §7: two DLQ copies of one event (a crash between the DLQ publish and the term, with the
/// restart past the stream's duplicate window) are one re-run: a delta applies once.
#[tokio::test]
async fn dead_letter_copies_past_the_duplicate_window_apply_once() {
    let s = Stack::new("dlqcopy").await;
    let _dlq = s.start("wa-dlq-retry", FAST_DLQ).await;
    let copy = dead_letter(
        &s,
        ChatUpdate,
        &json!({"chat_id": "AG_1", "unread_count": 2}),
        ErrorType::RetryExhausted,
        position(77, Utc::now(), "wa_realtime"),
    );
    // Published without a message id: the stream keeps both, as it does past its window.
    s.publish_raw(&Subject::dead_letter(&s.tenant), copy.clone())
        .await;
    s.publish_raw(&Subject::dead_letter(&s.tenant), copy).await;
    s.wait_count(WAIT, "SELECT count(*) FROM chats", 1).await;
    s.wait_settled(WAIT, DLQ_STREAM, "wa_dlq_retry").await;
    assert_eq!(
        row(&s.pool, &s.tenant, "SELECT unread_count FROM chats").await["unread_count"],
        2
    );
    assert_eq!(s.count("SELECT count(*) FROM inbox").await, 1);
}

/// SPEC §7: a dead letter of onboarding goes back through onboarding (its log row and contact),
/// not through the core (which is realtime's, and writes the message instead).
#[tokio::test]
async fn onboarding_dead_letters_are_rerun_through_onboarding() {
    let s = Stack::new("dlqonb").await;
    let _dlq = s.start("wa-dlq-retry", FAST_DLQ).await;
    let first = json!({
        "message_id": "hello", "chat_id": "AG_62812", "flow": "IN", "agent_id": "AG",
        "jid": "62812@s.whatsapp.net", "from_phone": "+62 812", "message_timestamp": 1_718_358_000,
    });
    let dead = dead_letter(
        &s,
        MessageUpsert,
        &first,
        ErrorType::RetryExhausted,
        position(5, Utc::now(), "wa_onboarding"),
    );
    s.publish_raw(&Subject::dead_letter(&s.tenant), dead).await;
    s.wait_count(WAIT, "SELECT count(*) FROM onboarding_log", 1)
        .await;
    s.wait_settled(WAIT, DLQ_STREAM, "wa_dlq_retry").await;
    assert_eq!(
        row(
            &s.pool,
            &s.tenant,
            "SELECT phone_number, origin FROM contacts"
        )
        .await,
        json!({"phone_number": "62812", "origin": "DirectChat"})
    );
    assert_eq!(s.count("SELECT count(*) FROM messages").await, 0);
    assert!(exhausted(&s).await.is_empty());
}

/// SPEC §4: an unread count saturates at the largest integer, one delta at a time as in a
/// folded batch, instead of failing the event.
#[tokio::test]
async fn unread_counts_saturate_instead_of_overflowing() {
    let s = Stack::new("unreadmax").await;
    let _rt = s.start("wa-realtime", &[]).await;
    s.publish(
        ChatUpsert,
        json!({"chat_id": "AG_1", "unread_count": i32::MAX - 1}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1).await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 5}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 2).await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 5}))
        .await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 5}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 4).await;
    s.wait_settled(WAIT, REALTIME_STREAM, "wa_realtime").await;
    assert_eq!(
        row(&s.pool, &s.tenant, "SELECT unread_count FROM chats").await["unread_count"],
        i32::MAX
    );
    assert!(s.dead_letters().await.is_empty());
}

/// SPEC §3: ids that differ only in case map to one schema; the first owns it and the other is
/// refused (`tenant`): nothing of it is written into the owner's schema, its exhausted event
/// included.
#[tokio::test]
async fn tenant_ids_differing_only_in_case_never_share_a_schema() {
    let s = Stack::new("case").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _dlq = s.start("wa-dlq-retry", &[]).await;
    let other = s.tenant.to_uppercase();
    assert_ne!(other, s.tenant);
    s.publish(ChatUpsert, json!({"chat_id": "AG_1", "push_name": "Owner"}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM chats", 1).await;
    s.publish_raw(
        &Subject::format(ChatUpsert, &other),
        json!({"chat_id": "AG_2", "push_name": "Intruder"}).to_string(),
    )
    .await;
    let in_system = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT error_type FROM wa_system.exhausted_events WHERE company_id = $1",
        )
        .bind(&other)
        .fetch_all(&s.pool)
        .await
        .unwrap_or_default()
    };
    let types = eventually(WAIT, "the refused event recorded", || async {
        let t = in_system().await;
        (!t.is_empty()).then_some(t)
    })
    .await;
    assert_eq!(types, ["tenant"]);
    let dead = broker::dead_letters(&s.js, &Subject::dead_letter(&other)).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].envelope["error"]
            .as_str()
            .is_some_and(|e| e.contains(&s.tenant)),
        "names the owner: {:?}",
        dead[0].envelope
    );
    s.wait_settled(WAIT, REALTIME_STREAM, "wa_realtime").await;
    assert_eq!(s.count("SELECT count(*) FROM chats").await, 1);
    assert!(exhausted(&s).await.is_empty());
    let owner: String =
        sqlx::query_scalar("SELECT tenant_id FROM wa_system.tenants WHERE schema_name = $1")
            .bind(schema_name(&s.tenant))
            .fetch_one(&s.pool)
            .await
            .expect("the owner is recorded");
    assert_eq!(owner, s.tenant);
}
