//! SPEC §14 against real servers: crashes, restarts and outages of every piece. Tests that
//! stop a server start a private one.

use std::time::Duration;

use serde_json::json;
use wa_integration_tests::functions::{HOLDING_WITHIN, READY_WITHIN};
use wa_integration_tests::servers::PrivatePostgres;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::workload::{self, Workload};
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;

const WAIT: Duration = Duration::from_secs(120);

async fn inbox_count(s: &Stack) -> i64 {
    s.count("SELECT count(*) FROM inbox").await
}

async fn wait_all_applied(s: &Stack, w: &Workload) {
    let n = w.events.len() as i64;
    eventually(WAIT, "every event applied", || async {
        (inbox_count(s).await == n).then_some(())
    })
    .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    w.assert_applied(&s.pool, &s.tenant).await;
    assert!(
        s.dead_letters().await.is_empty(),
        "nothing is dead-lettered"
    );
}

#[tokio::test]
async fn kill_9_mid_stream_then_restart_applies_every_event_exactly_once() {
    let s = Stack::new("kill").await;
    let w = Workload::generate(3000, 40, 7);
    s.create_streams().await;
    w.publish(&s.js, &s.tenant).await;
    let mut rt = s.start("wa-realtime", &[("BATCH_SIZE", "25")]).await;
    let mut at_kill = Vec::new();
    for threshold in [300, 900, 1500, 2100] {
        eventually(WAIT, "progress before the next kill", || async {
            (inbox_count(&s).await >= threshold).then_some(())
        })
        .await;
        rt.kill9();
        at_kill.push(inbox_count(&s).await);
        rt.restart().unwrap();
    }
    eprintln!("applied at each kill: {at_kill:?}");
    assert!(
        at_kill.iter().all(|n| *n < 3000),
        "every kill lands mid-stream: {at_kill:?}"
    );
    wait_all_applied(&s, &w).await;
}

#[tokio::test]
async fn two_processes_on_one_durable_apply_every_event_once() {
    let s = Stack::new("twin").await;
    let w = Workload::generate(2000, 20, 11);
    s.create_streams().await;
    w.publish(&s.js, &s.tenant).await;
    let a = s.start("wa-realtime", &[("BATCH_SIZE", "32")]).await;
    let b = s.start("wa-realtime", &[("BATCH_SIZE", "32")]).await;
    wait_all_applied(&s, &w).await;
    drop((a, b));
}

#[tokio::test]
async fn sigterm_under_load_exits_0_and_loses_or_repeats_nothing() {
    let s = Stack::new("term").await;
    let w = Workload::generate(3000, 30, 13);
    s.create_streams().await;
    w.publish(&s.js, &s.tenant).await;
    let mut rt = s.start("wa-realtime", &[("BATCH_SIZE", "25")]).await;
    eventually(WAIT, "some progress", || async {
        (inbox_count(&s).await >= 500).then_some(())
    })
    .await;
    let status = rt.terminate(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "graceful exit; logs:\n{}",
        rt.logs()
    );
    let done = inbox_count(&s).await;
    assert!(done < 3000, "stopped mid-stream ({done})");
    rt.restart().unwrap();
    wait_all_applied(&s, &w).await;
}

#[tokio::test]
async fn a_nats_restart_resumes_consumption_and_loses_nothing() {
    let mut s = Stack::new("natsrs").await;
    let first = Workload::generate(400, 10, 17);
    let mut rt = s.start("wa-realtime", &[]).await;
    first.publish(&s.js, &s.tenant).await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 400).await;
    s.nats.stop();
    s.nats.restart();
    rt.wait_ready(READY_WITHIN).await.unwrap();
    s.js = wa_integration_tests::broker::jetstream(&s.nats.url()).await;
    // The second half continues the same chats and messages.
    let both = Workload::generate(800, 10, 17);
    workload::publish(&s.js, &s.tenant, &both.events[400..]).await;
    wait_all_applied(&s, &both).await;
}

#[tokio::test]
async fn a_postgres_outage_dead_letters_nothing_and_everything_lands_after_recovery() {
    let mut pg = PrivatePostgres::start();
    let mut s = Stack::new("pgdown").await;
    s.database_url = pg.url();
    s.pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    let w = Workload::generate(600, 10, 19);
    let rt = s.start("wa-realtime", &[("BATCH_SIZE", "50")]).await;
    let (head, tail) = w.events.split_at(200);
    workload::publish(&s.js, &s.tenant, head).await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 200).await;
    s.pool.close().await;

    pg.stop();
    workload::publish(&s.js, &s.tenant, tail).await;
    rt.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    assert_eq!(
        rt.get("/ready").await.map(|r| r.0),
        Some(503),
        "not ready without Postgres"
    );
    pg.restart();

    s.pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pg.url())
        .await
        .unwrap();
    wait_all_applied(&s, &w).await;
}

#[tokio::test]
async fn a_long_table_lock_holds_batches_until_it_is_released() {
    let s = Stack::new("locked").await;
    let rt = s
        .start("wa-realtime", &[("DB_LOCK_TIMEOUT", "300ms")])
        .await;
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1).await;

    let locker = lock_table(&s.pool, &s.tenant, "chats").await;
    for _ in 0..20 {
        s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}))
            .await;
    }
    rt.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    locker.rollback().await.unwrap();

    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 21).await;
    assert_eq!(
        row(&s.pool, &s.tenant, "SELECT unread_count FROM chats").await["unread_count"],
        21
    );
    assert!(s.dead_letters().await.is_empty());
}

#[tokio::test]
async fn streams_are_reconciled_and_their_backlog_is_consumed() {
    let s = Stack::new("recon").await;
    // An existing stream with an older shape and a message already in it.
    s.js.create_stream(async_nats::jetstream::stream::Config {
        name: "wa_events_stream".into(),
        subjects: vec!["v1.chats.update.*".into()],
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    s.publish(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 3}))
        .await;
    let rt = s.start("wa-realtime", &[]).await;
    let mut stream = s.js.get_stream("wa_events_stream").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    // Missing subjects are added; a max age below ours is reported, never changed (SPEC §1).
    assert_eq!(config.subjects.len(), 7, "{:?}", config.subjects);
    assert_eq!(config.max_age, Duration::from_secs(3600));
    let (_, ready) = rt.get("/ready").await.expect("/ready");
    assert!(ready.contains("max_age is 1h (configured 30d)"), "{ready}");
    s.wait_count(WAIT, "SELECT count(*) FROM inbox", 1).await;
}

#[tokio::test]
async fn a_consumer_of_the_old_shape_is_updated_in_place_keeping_its_pending_messages() {
    let s = Stack::new("cfgchg").await;
    s.create_streams().await;
    // The shape earlier releases gave the consumer: the server gave up after 5 deliveries,
    // with an ack wait of one backoff step.
    let stream = s.js.get_stream("wa_events_stream").await.unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("wa_realtime".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_deliver: 5,
            backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let w = Workload::generate(300, 5, 23);
    w.publish(&s.js, &s.tenant).await;
    let rt = s
        .start(
            "wa-realtime",
            &[("MAX_DELIVER", "7"), ("BACKOFF", "1s,1s,2s")],
        )
        .await;
    wait_all_applied(&s, &w).await;
    let info = s.consumer_info("wa_events_stream", "wa_realtime").await;
    // The server never gives up on a message; the function counts its attempts (MAX_DELIVER)
    // and retries with NAK delays, so the ack wait no longer follows the backoff.
    assert_eq!(info.config.max_deliver, -1);
    assert!(info.config.backoff.is_empty(), "{:?}", info.config.backoff);
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    drop(rt);
}

#[tokio::test]
async fn a_message_the_server_gives_up_on_is_dead_lettered_not_lost() {
    let s = Stack::new("gaveup").await;
    let _rt = s
        .start("wa-realtime", &[("BACKOFF", "100ms,100ms,100ms,100ms")])
        .await;
    // An operator limits the consumer's deliveries by hand: the server now drops a message
    // after its first delivery, whatever the function asked for.
    let stream = s.js.get_stream("wa_events_stream").await.unwrap();
    let mut config = s
        .consumer_info("wa_events_stream", "wa_realtime")
        .await
        .config;
    config.max_deliver = 1;
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: config.durable_name.clone(),
            ack_policy: config.ack_policy,
            ack_wait: config.ack_wait,
            max_deliver: 1,
            max_ack_pending: config.max_ack_pending,
            ..Default::default()
        })
        .await
        .unwrap();
    // A receipt for a message that never comes asks for a retry the server will not make.
    let seq = s
        .publish(MessageUpdate, json!({"message_id":"ghost","status":"4"}))
        .await;
    let dead = eventually(WAIT, "the dropped message to be dead-lettered", || async {
        let dead = s.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].envelope["error_type"], "retry_exhausted");
    // Dead-lettered by the advisory watcher (the runner never saw a last attempt).
    let error = dead[0].envelope["error"].as_str().unwrap_or_default();
    assert!(error.contains("server stopped delivering"), "{error}");
    assert_eq!(
        dead[0].msg_id.as_deref(),
        Some(format!("wa_events_stream:{seq}").as_str())
    );
}

#[tokio::test]
async fn a_dead_letter_too_long_for_the_server_is_cut_not_retried_forever() {
    let s = Stack::new("bigdl").await;
    let _rt = s.start("wa-realtime", &[]).await;
    // Just under the server's 1 MiB max_payload, and invalid (no message_id): its envelope, with
    // the body embedded whole, would be a little longer than the server accepts.
    let filler = 1_048_500 - r#"{"chat_id":"AG_1","flow":"IN","message_text":""}"#.len();
    let body = format!(
        r#"{{"chat_id":"AG_1","flow":"IN","message_text":"{}"}}"#,
        "x".repeat(filler)
    );
    assert_eq!(body.len(), 1_048_500);
    s.publish_raw(&s.subject(MessageUpsert), body.clone()).await;
    s.publish(
        MessageUpsert,
        json!({"message_id":"after","chat_id":"AG_1","flow":"IN"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages", 1).await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    let dead = s.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let envelope = &dead[0].envelope;
    assert_eq!(envelope["error_type"], "validation");
    assert!(envelope["original_payload"].is_null());
    assert_eq!(envelope["original_size"], 1_048_500);
    let kept = envelope["original_payload_base64"].as_str().unwrap();
    use base64::Engine;
    let kept = base64::engine::general_purpose::STANDARD
        .decode(kept)
        .unwrap();
    assert_eq!(kept, body.as_bytes()[..64 * 1024]);
}
