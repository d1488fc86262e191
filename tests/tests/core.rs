//! SPEC §3 and §6: tenancy, outcomes, isolation of bad events, and failures of the database.

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use wa_integration_tests::*;
use wa_shared::model::{ErrorType, EventKind::*};
use wa_shared::pipeline::{DeadLetter, Outcome, Processor, ProcessorSettings};
use wa_shared::store::schema;

fn dead(o: &Outcome) -> ErrorType {
    match o {
        Outcome::DeadLetter(DeadLetter { error_type, .. }) => *error_type,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_events_are_dead_lettered_without_blocking_their_neighbours() {
    let pool = pool().await;
    let t = unique_tenant("poison");
    let ev = Events::new(&t);
    let p = processor_with(&pool, |s| s.max_payload_bytes = 4096);
    let good = |id: &str| {
        ev.json(
            MessageUpsert,
            json!({"message_id":id,"chat_id":"AG_1","flow":"IN"}),
        )
    };
    let batch = vec![
        good("m1"),
        ev.event(MessageUpsert, "{not json"),
        ev.event(MessageUpsert, ""),
        ev.event(MessageUpsert, vec![b' '; 5000]),
        ev.json(
            MessageUpsert,
            json!({"message_id":"x","chat_id":"AG_1","flow":"IN","company_id":"SOMEONE_ELSE"}),
        ),
        ev.json(MessageUpsert, json!({"message_id":"x","chat_id":"AG_1"})),
        ev.json(
            MessageUpsert,
            json!({"message_id":"x","chat_id":"AG_1","flow":"IN","message_timestamp":"yesterday"}),
        ),
        ev.on_subject(
            "v1.messages.upsert.bad'tenant",
            r#"{"message_id":"x","chat_id":"c","flow":"IN"}"#,
        ),
        ev.on_subject(&format!("v1.messages.delete.{t}"), "{}"),
        good("m2"),
    ];
    let outcomes = run(&p, &batch).await;
    assert_eq!(outcomes[0], Outcome::Ack);
    let types: Vec<_> = outcomes[1..9].iter().map(dead).collect();
    assert_eq!(
        types,
        [
            ErrorType::Malformed,
            ErrorType::Malformed,
            ErrorType::TooLarge,
            ErrorType::Tenant,
            ErrorType::Validation,
            ErrorType::Validation,
            ErrorType::Tenant,
            ErrorType::Validation,
        ]
    );
    assert_eq!(outcomes[9], Outcome::Ack);
    let ids = rows(&pool, &t, "SELECT message_id FROM messages ORDER BY 1").await;
    assert_eq!(
        ids,
        vec![json!({"message_id":"m1"}), json!({"message_id":"m2"})]
    );
}

#[tokio::test]
async fn a_wrong_tenant_payload_writes_nothing_anywhere() {
    let pool = pool().await;
    let t = unique_tenant("wrong");
    let other = unique_tenant("victim");
    let ev = Events::new(&t);
    let p = processor(&pool);
    let o = run(
        &p,
        &[ev.json(ChatUpsert, json!({"chat_id":"AG_1","company_id": other}))],
    )
    .await;
    assert_eq!(dead(&o[0]), ErrorType::Tenant);
    assert!(!schema_exists(&pool, &format!("daisi_{t}")).await);
    assert!(!schema_exists(&pool, &format!("daisi_{other}")).await);
}

#[tokio::test]
async fn invalid_tenant_ids_are_refused_and_create_no_schema() {
    let pool = pool().await;
    let ev = Events::new("unused");
    let p = processor(&pool);
    let before = schema::tenant_schemas(&pool).await.unwrap();
    let subjects = [
        "v1.chats.upsert.quo\"te".to_string(),
        "v1.chats.upsert.it's".to_string(),
        format!("v1.chats.upsert.{}", "x".repeat(58)),
        "v1.chats.upsert.".to_string(),
        "v1.chats.upsert.caf\u{e9}".to_string(),
    ];
    let batch: Vec<_> = subjects
        .iter()
        .map(|s| ev.on_subject(s, r#"{"chat_id":"AG_1"}"#))
        .collect();
    for o in run(&p, &batch).await {
        assert_eq!(dead(&o), ErrorType::Tenant);
    }
    // A dot splits the subject into more tokens: not a subject this system knows.
    assert_eq!(
        dead(
            &run(
                &p,
                &[ev.on_subject("v1.chats.upsert.a.b", r#"{"chat_id":"AG_1"}"#)]
            )
            .await[0]
        ),
        ErrorType::Validation
    );
    assert_eq!(schema::tenant_schemas(&pool).await.unwrap(), before);
}

#[tokio::test]
async fn tenants_outside_the_allowlist_are_dead_lettered_without_a_schema() {
    let pool = pool().await;
    let allowed = unique_tenant("allowed");
    let other = unique_tenant("other");
    let p = processor_with(&pool, |s| s.allowlist = Some([allowed.clone()].into()));
    let ok = Events::new(&allowed).json(ChatUpsert, json!({"chat_id":"AG_1"}));
    let refused = Events::new(&other).json(ChatUpsert, json!({"chat_id":"AG_1"}));
    let o = run(&p, &[ok, refused]).await;
    assert_eq!(o[0], Outcome::Ack);
    assert_eq!(dead(&o[1]), ErrorType::Tenant);
    assert!(schema_exists(&pool, &format!("daisi_{allowed}")).await);
    assert!(!schema_exists(&pool, &format!("daisi_{other}")).await);
}

#[tokio::test]
async fn events_of_several_tenants_in_one_batch_stay_in_their_own_schemas() {
    let pool = pool().await;
    let (a, b) = (unique_tenant("ta"), unique_tenant("tb"));
    let (ea, eb) = (Events::new(&a), Events::new(&b));
    let p = processor(&pool);
    run_ok(
        &p,
        &[
            ea.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1})),
            eb.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":2})),
            ea.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1})),
        ],
    )
    .await;
    assert_eq!(
        row(&pool, &a, "SELECT unread_count, company_id FROM chats").await,
        json!({"unread_count":2,"company_id":a})
    );
    assert_eq!(
        row(&pool, &b, "SELECT unread_count, company_id FROM chats").await,
        json!({"unread_count":2,"company_id":b})
    );
}

#[tokio::test]
async fn an_event_the_database_refuses_is_isolated_from_its_batch() {
    let pool = pool().await;
    let t = unique_tenant("dbperm");
    let ev = Events::new(&t);
    let p = processor(&pool);
    // Postgres text cannot hold NUL: the database refuses this one event.
    let poison = ev.json(
        MessageUpsert,
        json!({"message_id":"bad","chat_id":"AG_1","flow":"IN","message_text":"a\u{0}b"}),
    );
    let mut batch: Vec<_> = (0..7)
        .map(|i| {
            ev.json(
                ChatUpdate,
                json!({"chat_id": format!("AG_{i}"),"unread_count":1}),
            )
        })
        .collect();
    batch.insert(3, poison);
    let outcomes = run(&p, &batch).await;
    for (i, o) in outcomes.iter().enumerate() {
        if i == 3 {
            assert_eq!(dead(o), ErrorType::DatabasePermanent);
        } else {
            assert_eq!(*o, Outcome::Ack, "event {i}");
        }
    }
    assert_eq!(
        row(
            &pool,
            &t,
            "SELECT count(*) AS n, sum(unread_count) AS s FROM chats"
        )
        .await,
        json!({"n":7,"s":7})
    );
    assert!(rows(&pool, &t, "SELECT * FROM messages").await.is_empty());
}

#[tokio::test]
async fn a_history_item_the_database_refuses_is_dead_lettered_alone() {
    let pool = pool().await;
    let t = unique_tenant("dbitem");
    let ev = Events::new(&t);
    let p = processor(&pool);
    let body = json!({"chats":[
        {"chat_id":"AG_1","push_name":"ok"},
        {"chat_id":"AG_2","last_message":{"text":"nul \u{0} inside"}},
        {"chat_id":"AG_3","push_name":"ok too"}
    ]});
    let outcomes = run(&p, &[ev.json(HistoryChats, body)]).await;
    let Outcome::AckWithDeadItems(items) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].item_index, items[0].error_type),
        (Some(1), ErrorType::DatabasePermanent)
    );
    let ids = rows(&pool, &t, "SELECT chat_id FROM chats ORDER BY 1").await;
    assert_eq!(
        ids,
        vec![json!({"chat_id":"AG_1"}), json!({"chat_id":"AG_3"})]
    );
}

#[tokio::test]
async fn an_unreachable_database_holds_the_batch_instead_of_failing_events() {
    let dead_pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/test")
        .unwrap();
    let p = Processor::new(dead_pool, ProcessorSettings::default());
    let ev = Events::new(&unique_tenant("down"));
    let mut last = ev.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1}));
    last.delivered = 5; // even on its last delivery nothing is dead-lettered
    assert!(p.process_batch(&[last]).await.is_err());
}

#[tokio::test]
async fn a_long_table_lock_holds_the_batch_until_it_is_released() {
    let pool = pool().await;
    let t = unique_tenant("lock");
    let ev = Events::new(&t);
    let p = processor_with(&pool, |s| s.lock_timeout = Duration::from_millis(200));
    run_ok(
        &p,
        &[ev.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1}))],
    )
    .await;

    let mut locker = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "LOCK TABLE \"daisi_{t}\".chats IN ACCESS EXCLUSIVE MODE"
    ))
    .execute(&mut *locker)
    .await
    .unwrap();
    let mut event = ev.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1}));
    event.delivered = 5;
    assert!(
        p.process_batch(std::slice::from_ref(&event)).await.is_err(),
        "held, not dead-lettered"
    );
    locker.rollback().await.unwrap();

    run_ok(&p, &[event]).await;
    assert_eq!(
        row(&pool, &t, "SELECT unread_count FROM chats").await["unread_count"],
        2
    );
}

#[tokio::test]
async fn two_processes_meeting_a_new_tenant_at_once_both_succeed() {
    let pool = pool().await;
    let t = unique_tenant("race");
    let ev = Events::new(&t);
    let processors: Vec<_> = (0..6).map(|_| processor(&pool)).collect();
    let batches: Vec<_> = (0..6)
        .map(|i| {
            vec![ev.json(
                ChatUpdate,
                json!({"chat_id": format!("AG_{i}"),"unread_count":1}),
            )]
        })
        .collect();
    let results = futures::future::join_all(
        processors
            .iter()
            .zip(&batches)
            .map(|(p, b)| p.process_batch(b)),
    )
    .await;
    for r in results {
        assert_eq!(r.unwrap(), vec![Outcome::Ack]);
    }
    assert_eq!(
        row(&pool, &t, "SELECT count(*) AS n FROM chats").await["n"],
        6
    );
    assert_eq!(
        row(&pool, &t, "SELECT max(version) AS v FROM schema_migrations").await["v"],
        schema::latest_version()
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_the_same_messages_apply_once() {
    let pool = pool().await;
    let t = unique_tenant("conc");
    let ev = Events::new(&t);
    let (p1, p2) = (processor(&pool), processor(&pool));
    let batch: Vec<_> = (0..50)
        .map(|i| {
            ev.json(
                ChatUpdate,
                json!({"chat_id": format!("AG_{}", i % 5),"unread_count":1}),
            )
        })
        .collect();
    let again: Vec<_> = batch.iter().rev().map(redelivered).collect();
    let (a, b) = tokio::join!(p1.process_batch(&batch), p2.process_batch(&again));
    assert!(a
        .unwrap()
        .iter()
        .chain(b.unwrap().iter())
        .all(|o| *o == Outcome::Ack));
    assert_eq!(
        row(&pool, &t, "SELECT sum(unread_count) AS s FROM chats").await["s"],
        50
    );
}

#[tokio::test]
async fn without_auto_migrate_an_unknown_tenant_is_retried_not_created() {
    let pool = pool().await;
    let t = unique_tenant("nomig");
    let p = processor_with(&pool, |s| s.auto_migrate = false);
    let o = run(
        &p,
        &[Events::new(&t).json(ChatUpdate, json!({"chat_id":"AG_1"}))],
    )
    .await;
    assert!(matches!(o[0], Outcome::Retry { .. }), "{o:?}");
    assert!(!schema_exists(&pool, &format!("daisi_{t}")).await);
    schema::migrate(&pool, &format!("daisi_{t}")).await.unwrap();
    run_ok(
        &p,
        &[Events::new(&t).json(ChatUpdate, json!({"chat_id":"AG_1"}))],
    )
    .await;
}

#[tokio::test]
async fn exhausted_events_are_recorded_once_per_dead_letter_even_when_sequences_repeat() {
    use wa_shared::store::exhausted::{record, NewExhausted};
    let pool = pool().await;
    let t = unique_tenant("exh");
    let schema = format!("daisi_{t}");
    schema::migrate(&pool, &schema).await.unwrap();
    let row = |msg: &'static [u8]| NewExhausted {
        company_id: "C",
        source_subject: "v1.chats.upsert.C",
        error_type: "malformed",
        last_error: "x",
        retry_count: 1,
        event_timestamp: None,
        dlq_payload: None,
        original_payload: None,
        original_payload_raw: Some(msg),
        dlq_stream: "dlq_stream",
        dlq_sequence: 1,
        item_index: None,
        dlq_message: msg,
    };
    let mut conn = pool.acquire().await.unwrap();
    assert!(record(&mut conn, &schema, &row(b"first")).await.unwrap());
    assert!(
        !record(&mut conn, &schema, &row(b"first")).await.unwrap(),
        "a redelivery writes nothing"
    );
    // A recreated stream reuses sequence 1 for another dead letter: it is still recorded.
    assert!(record(&mut conn, &schema, &row(b"second")).await.unwrap());
    assert_eq!(row_count(&pool, &t).await, 2);
}

async fn row_count(pool: &sqlx::PgPool, tenant: &str) -> i64 {
    row(pool, tenant, "SELECT count(*) AS n FROM exhausted_events").await["n"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_recreated_stream_reusing_sequences_is_not_taken_for_redeliveries() {
    let pool = pool().await;
    let t = unique_tenant("recreate");
    let mut ev = Events::new(&t);
    let p = processor(&pool);
    let first = ev.json(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}));
    run_ok(&p, std::slice::from_ref(&first)).await;
    // The same stream name and sequence, stored later by a new incarnation of the stream.
    ev.published_at += chrono::Duration::days(1);
    let reused = wa_shared::pipeline::InboundEvent {
        published_at: ev.published_at,
        ..first.clone()
    };
    run_ok(&p, &[reused]).await;
    assert_eq!(
        row(&pool, &t, "SELECT unread_count FROM chats").await["unread_count"],
        2
    );
    // A true redelivery still applies once.
    run_ok(&p, &[redelivered(&first)]).await;
    assert_eq!(
        row(&pool, &t, "SELECT unread_count FROM chats").await["unread_count"],
        2
    );
}

#[tokio::test]
async fn a_message_delivered_twice_in_one_batch_is_applied_once() {
    let pool = pool().await;
    let t = unique_tenant("twice");
    let ev = Events::new(&t);
    let p = processor(&pool);
    let delta = ev.json(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 2}));
    let receipt = ev.json(
        MessageUpdate,
        json!({"message_id": "missing", "status": "3"}),
    );
    let batch = [
        delta.clone(),
        redelivered(&delta),
        receipt.clone(),
        redelivered(&receipt),
    ];
    let outcomes = run(&p, &batch).await;
    assert!(matches!(outcomes[0], Outcome::Ack), "{outcomes:?}");
    assert!(matches!(outcomes[1], Outcome::Ack), "{outcomes:?}");
    // The receipt's message does not exist yet: both copies are retried, neither is recorded.
    assert!(matches!(outcomes[2], Outcome::Retry { .. }), "{outcomes:?}");
    assert!(matches!(outcomes[3], Outcome::Retry { .. }), "{outcomes:?}");
    assert_eq!(
        row(&pool, &t, "SELECT unread_count FROM chats").await["unread_count"],
        2
    );
    assert_eq!(
        row(&pool, &t, "SELECT count(*) AS n FROM inbox").await["n"],
        1
    );
}
