//! SPEC §3 and §6: tenancy, outcomes, isolation of bad events, and failures of the database.

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use wa_integration_tests::*;
use wa_shared::model::{quote_ident, ErrorType, EventKind::*, Subject};
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
    let f = Fixture::with("poison", |s| s.max_payload_bytes = 4096).await;
    let good = |id: &str| {
        f.json(
            MessageUpsert,
            json!({"message_id":id,"chat_id":"AG_1","flow":"IN"}),
        )
    };
    let batch = vec![
        good("m1"),
        f.event(MessageUpsert, "{not json"),
        f.event(MessageUpsert, ""),
        f.event(MessageUpsert, vec![b' '; 5000]),
        f.json(
            MessageUpsert,
            json!({"message_id":"x","chat_id":"AG_1","flow":"IN","company_id":"SOMEONE_ELSE"}),
        ),
        f.json(MessageUpsert, json!({"message_id":"x","chat_id":"AG_1"})),
        f.json(
            MessageUpsert,
            json!({"message_id":"x","chat_id":"AG_1","flow":"IN","message_timestamp":"yesterday"}),
        ),
        f.on_subject(
            &Subject::format(MessageUpsert, "bad'tenant"),
            r#"{"message_id":"x","chat_id":"c","flow":"IN"}"#,
        ),
        f.on_subject(&format!("v1.messages.delete.{}", f.tenant), "{}"),
        good("m2"),
    ];
    let outcomes = f.run(&batch).await;
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
    let ids = f.rows("SELECT message_id FROM messages ORDER BY 1").await;
    assert_eq!(
        ids,
        vec![json!({"message_id":"m1"}), json!({"message_id":"m2"})]
    );
}

#[tokio::test]
async fn a_wrong_tenant_payload_writes_nothing_anywhere() {
    let f = Fixture::new("wrong").await;
    let other = unique_tenant("victim");
    let o = f
        .run(&[f.json(ChatUpsert, json!({"chat_id":"AG_1","company_id": other}))])
        .await;
    assert_eq!(dead(&o[0]), ErrorType::Tenant);
    assert!(!schema_exists(&f.pool, &f.schema()).await);
    assert!(!schema_exists(&f.pool, &schema_name(&other)).await);
}

#[tokio::test]
async fn invalid_tenant_ids_are_refused_and_create_no_schema() {
    let f = Fixture::new("unused").await;
    let before = schema::tenant_schemas(&f.pool).await.unwrap();
    let batch: Vec<_> = ["quo\"te", "it's", &"x".repeat(58), "", "caf\u{e9}"]
        .into_iter()
        .map(|t| f.on_subject(&Subject::format(ChatUpsert, t), r#"{"chat_id":"AG_1"}"#))
        .collect();
    for o in f.run(&batch).await {
        assert_eq!(dead(&o), ErrorType::Tenant);
    }
    // A dot splits the subject into more tokens: not a subject this system knows.
    let dotted = f.on_subject(&Subject::format(ChatUpsert, "a.b"), r#"{"chat_id":"AG_1"}"#);
    assert_eq!(dead(&f.run(&[dotted]).await[0]), ErrorType::Validation);
    // Other tests of this binary create schemas meanwhile, each of a tenant named by
    // `unique_tenant` (a 12-hex-digit suffix, which none of the refused ids has).
    let after = schema::tenant_schemas(&f.pool).await.unwrap();
    let made: Vec<_> = after
        .iter()
        .filter(|s| !before.contains(s))
        .filter(|s| {
            let tail = &s[s.len().saturating_sub(12)..];
            !(tail.len() == 12 && tail.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    assert!(made.is_empty(), "schemas made for refused ids: {made:?}");
}

#[tokio::test]
async fn tenants_outside_the_allowlist_are_dead_lettered_without_a_schema() {
    let f = Fixture::new("allowed").await;
    let other = f.other_tenant("other");
    let p = processor_with(&f.pool, |s| s.allowlist = Some([f.tenant.clone()].into()));
    let ok = f.json(ChatUpsert, json!({"chat_id":"AG_1"}));
    let refused = other.json(ChatUpsert, json!({"chat_id":"AG_1"}));
    let o = run(&p, &[ok, refused]).await;
    assert_eq!(o[0], Outcome::Ack);
    assert_eq!(dead(&o[1]), ErrorType::Tenant);
    assert!(schema_exists(&f.pool, &f.schema()).await);
    assert!(!schema_exists(&f.pool, &schema_name(&other.tenant)).await);
}

#[tokio::test]
async fn events_of_several_tenants_in_one_batch_stay_in_their_own_schemas() {
    let a = Fixture::new("ta").await;
    let b = a.other_tenant("tb");
    a.run_ok(&[
        a.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1})),
        b.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":2})),
        a.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1})),
    ])
    .await;
    assert_eq!(
        a.row("SELECT unread_count, company_id FROM chats").await,
        json!({"unread_count":2,"company_id":a.tenant})
    );
    assert_eq!(
        row(
            &a.pool,
            &b.tenant,
            "SELECT unread_count, company_id FROM chats"
        )
        .await,
        json!({"unread_count":2,"company_id":b.tenant})
    );
}

#[tokio::test]
async fn an_event_the_database_refuses_is_isolated_from_its_batch() {
    let f = Fixture::new("dbperm").await;
    // A number beyond `numeric`'s range passes validation, but `jsonb` refuses it: the
    // database refuses this one event.
    let poison = f.event(
        MessageUpsert,
        r#"{"message_id":"bad","chat_id":"AG_1","flow":"IN","message_obj":{"n":1e999999}}"#,
    );
    let mut batch: Vec<_> = (0..7)
        .map(|i| {
            f.json(
                ChatUpdate,
                json!({"chat_id": format!("AG_{i}"),"unread_count":1}),
            )
        })
        .collect();
    batch.insert(3, poison);
    let outcomes = f.run(&batch).await;
    for (i, o) in outcomes.iter().enumerate() {
        if i == 3 {
            assert_eq!(dead(o), ErrorType::DatabasePermanent);
        } else {
            assert_eq!(*o, Outcome::Ack, "event {i}");
        }
    }
    assert_eq!(
        f.row("SELECT count(*) AS n, sum(unread_count) AS s FROM chats")
            .await,
        json!({"n":7,"s":7})
    );
    assert!(f.rows("SELECT * FROM messages").await.is_empty());
}

#[tokio::test]
async fn a_history_item_the_database_refuses_is_dead_lettered_alone() {
    let f = Fixture::new("dbitem").await;
    let body = r#"{"chats":[
        {"chat_id":"AG_1","push_name":"ok"},
        {"chat_id":"AG_2","last_message":{"n":1e999999}},
        {"chat_id":"AG_3","push_name":"ok too"}
    ]}"#;
    let outcomes = f.run(&[f.event(HistoryChats, body)]).await;
    let Outcome::AckWithDeadItems(items) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].item_index, items[0].error_type),
        (Some(1), ErrorType::DatabasePermanent)
    );
    let ids = f.rows("SELECT chat_id FROM chats ORDER BY 1").await;
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
    let f = Fixture::with("lock", |s| s.lock_timeout = Duration::from_millis(200)).await;
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1}))])
        .await;

    let locker = lock_table(&f.pool, &f.tenant, "chats").await;
    let mut event = f.json(ChatUpdate, json!({"chat_id":"AG_1","unread_count":1}));
    event.delivered = 5;
    event.attempt = 5;
    assert!(
        f.processor
            .process_batch(std::slice::from_ref(&event))
            .await
            .is_err(),
        "held, not dead-lettered"
    );
    locker.rollback().await.unwrap();

    f.run_ok(&[event]).await;
    assert_eq!(
        f.row("SELECT unread_count FROM chats").await["unread_count"],
        2
    );
}

#[tokio::test]
async fn two_processes_meeting_a_new_tenant_at_once_both_succeed() {
    let f = Fixture::new("race").await;
    let processors: Vec<_> = (0..6).map(|_| processor(&f.pool)).collect();
    let batches: Vec<_> = (0..6)
        .map(|i| {
            vec![f.json(
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
    assert_eq!(f.row("SELECT count(*) AS n FROM chats").await["n"], 6);
    assert_eq!(
        f.row("SELECT max(version) AS v FROM schema_migrations")
            .await["v"],
        schema::latest_version()
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_the_same_messages_apply_once() {
    let f = Fixture::new("conc").await;
    let (p1, p2) = (&f.processor, processor(&f.pool));
    let batch: Vec<_> = (0..50)
        .map(|i| {
            f.json(
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
        f.row("SELECT sum(unread_count) AS s FROM chats").await["s"],
        50
    );
}

#[tokio::test]
async fn without_auto_migrate_an_unknown_tenant_is_retried_not_created() {
    let f = Fixture::with("nomig", |s| s.auto_migrate = false).await;
    let o = f
        .run(&[f.json(ChatUpdate, json!({"chat_id":"AG_1"}))])
        .await;
    assert!(matches!(o[0], Outcome::Retry { .. }), "{o:?}");
    assert!(!schema_exists(&f.pool, &f.schema()).await);
    schema::migrate(&f.pool, &f.schema()).await.unwrap();
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_1"}))])
        .await;
}

#[tokio::test]
async fn exhausted_events_are_recorded_once_per_dead_letter_even_when_sequences_repeat() {
    use wa_shared::store::exhausted::{record, NewExhausted};
    let f = Fixture::new("exh").await;
    let schema = f.schema();
    schema::migrate(&f.pool, &schema).await.unwrap();
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
    let mut conn = f.pool.acquire().await.unwrap();
    assert!(record(&mut conn, &schema, &row(b"first")).await.unwrap());
    assert!(
        !record(&mut conn, &schema, &row(b"first")).await.unwrap(),
        "a redelivery writes nothing"
    );
    // A recreated stream reuses sequence 1 for another dead letter: it is still recorded.
    assert!(record(&mut conn, &schema, &row(b"second")).await.unwrap());
    assert_eq!(
        f.row("SELECT count(*) AS n FROM exhausted_events").await["n"],
        2
    );
}

#[tokio::test]
async fn a_recreated_stream_reusing_sequences_is_not_taken_for_redeliveries() {
    let mut f = Fixture::new("recreate").await;
    let first = f.json(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 1}));
    f.run_ok(std::slice::from_ref(&first)).await;
    // The same stream name and sequence, stored later by a new incarnation of the stream.
    f.events.published_at += chrono::Duration::days(1);
    let reused = wa_shared::pipeline::InboundEvent {
        published_at: f.events.published_at,
        ..first.clone()
    };
    f.run_ok(&[reused]).await;
    assert_eq!(
        f.row("SELECT unread_count FROM chats").await["unread_count"],
        2
    );
    // A true redelivery still applies once.
    f.run_ok(&[redelivered(&first)]).await;
    assert_eq!(
        f.row("SELECT unread_count FROM chats").await["unread_count"],
        2
    );
}

#[tokio::test]
async fn a_message_delivered_twice_in_one_batch_is_applied_once() {
    let f = Fixture::new("twice").await;
    let delta = f.json(ChatUpdate, json!({"chat_id": "AG_1", "unread_count": 2}));
    let receipt = f.json(
        MessageUpdate,
        json!({"message_id": "missing", "status": "3"}),
    );
    let batch = [
        delta.clone(),
        redelivered(&delta),
        receipt.clone(),
        redelivered(&receipt),
    ];
    let outcomes = f.run(&batch).await;
    assert!(matches!(outcomes[0], Outcome::Ack), "{outcomes:?}");
    assert!(matches!(outcomes[1], Outcome::Ack), "{outcomes:?}");
    // The receipt's message does not exist yet: both copies are retried, neither is recorded.
    assert!(matches!(outcomes[2], Outcome::Retry { .. }), "{outcomes:?}");
    assert!(matches!(outcomes[3], Outcome::Retry { .. }), "{outcomes:?}");
    assert_eq!(
        f.row("SELECT unread_count FROM chats").await["unread_count"],
        2
    );
    assert_eq!(f.row("SELECT count(*) AS n FROM inbox").await["n"], 1);
}

#[tokio::test]
async fn a_value_too_big_for_an_index_fails_its_event_alone() {
    let f = Fixture::new("idxrow").await;
    // 12 000 characters that do not compress: no index row can hold them (SQLSTATE 54000).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let jid: String = (0..12_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let batch = vec![
        f.json(
            MessageUpsert,
            json!({"message_id":"ok1","chat_id":"AG_1","flow":"IN"}),
        ),
        f.json(
            MessageUpsert,
            json!({"message_id":"huge","chat_id":"AG_1","flow":"IN","jid": jid}),
        ),
        f.json(
            MessageUpsert,
            json!({"message_id":"ok2","chat_id":"AG_1","flow":"IN"}),
        ),
    ];
    let outcomes = f.run(&batch).await;
    assert_eq!(outcomes[0], Outcome::Ack);
    assert_eq!(outcomes[2], Outcome::Ack);
    // Its own fault: dead-lettered at once (validation or the database's refusal), not retried
    // with its neighbours.
    assert!(
        matches!(
            dead(&outcomes[1]),
            ErrorType::Validation | ErrorType::DatabasePermanent
        ),
        "{outcomes:?}"
    );
    let ids = f.rows("SELECT message_id FROM messages ORDER BY 1").await;
    assert_eq!(
        ids,
        vec![json!({"message_id":"ok1"}), json!({"message_id":"ok2"})]
    );
}

/// What a tenant schema is made of, with the schema's name taken out: every column (type,
/// nullability, default, position), index, constraint, sequence and function, and the
/// recorded migrations.
async fn schema_shape(pool: &sqlx::PgPool, schema: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT format('column %s.%s #%s %s %s %s', c.relname, a.attname, a.attnum,
                       format_type(a.atttypid, a.atttypmod), a.attnotnull,
                       pg_get_expr(d.adbin, d.adrelid))
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = $1 AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
         UNION ALL
         SELECT format('relation %s %s', c.relname, c.relkind)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
         UNION ALL
         SELECT format('index %s', pg_get_indexdef(i.indexrelid))
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
         UNION ALL
         SELECT format('constraint %s %s %s', t.relname, k.conname, pg_get_constraintdef(k.oid))
         FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
         JOIN pg_namespace n ON n.oid = k.connamespace WHERE n.nspname = $1
         UNION ALL
         SELECT format('function %s', p.proname)
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("catalog");
    let recorded: Vec<(i32, String)> = sqlx::query_as(&format!(
        "SELECT version, name FROM {}.schema_migrations ORDER BY version",
        quote_ident(schema)
    ))
    .fetch_all(pool)
    .await
    .expect("schema_migrations");
    let mut shape: Vec<String> = rows
        .into_iter()
        .map(|(s,)| s.replace(&format!("{schema}."), "S."))
        .chain(
            recorded
                .into_iter()
                .map(|(v, n)| format!("migration {v} {n}")),
        )
        .collect();
    shape.sort();
    shape
}

/// A new tenant's schema is created from the baseline in one pass (`migrations/baseline/`), not
/// migration by migration: it must be exactly what the migrations leave, one step at a time.
#[tokio::test]
async fn a_schema_created_from_the_baseline_is_the_one_the_migrations_make() {
    let pool = pool().await;
    let stepwise = schema_name(&unique_tenant("STEP"));
    let mut conn = pool.acquire().await.expect("connection");
    let ident = quote_ident(&stepwise);
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA {ident}; SET search_path TO {ident}; {}",
        schema::BOOKKEEPING
    ))
    .execute(&mut *conn)
    .await
    .expect("bookkeeping");
    for m in wa_shared::store::MIGRATIONS {
        sqlx::raw_sql(&format!(
            "BEGIN; {}\n;\nINSERT INTO schema_migrations (version, name) VALUES ({}, '{}'); COMMIT",
            m.sql, m.version, m.name
        ))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("migration {}: {e}", m.version));
    }
    sqlx::raw_sql("RESET search_path")
        .execute(&mut *conn)
        .await
        .expect("reset");
    drop(conn);

    let fresh = schema_name(&unique_tenant("BASE"));
    schema::migrate(&pool, &fresh).await.expect("migrate");
    let want = schema_shape(&pool, &stepwise).await;
    assert!(want.iter().any(|s| s.starts_with("index ")), "{want:?}");
    assert_eq!(schema_shape(&pool, &fresh).await, want);
}
