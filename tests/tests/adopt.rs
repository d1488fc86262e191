//! Taking over the earlier service's tenant schemas (SPEC §16): the functions never run DDL on
//! such a schema and hold its events without spending their attempts; `wa-admin adopt` brings
//! it to the current migrations without losing a row; the held events then land.
//!
//! The schema is the earlier service's as its fixture (`tests/fixtures/dwep/`) reproduces it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use wa_integration_tests::functions::binary;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::functions::{FunctionHandler, FunctionKind};
use wa_shared::model::quote_ident;
use wa_shared::model::EventKind::*;
use wa_shared::pipeline::{Handler, InboundEvent, Outcome, ProcessorSettings};
use wa_shared::store::adopt::{self, AdoptError, Standing};
use wa_shared::store::schema;

const WAIT: Duration = Duration::from_secs(90);

/// The tables the earlier service's schema holds rows in.
const FIXTURE_TABLES: [&str; 6] = [
    "chats",
    "messages",
    "contacts",
    "agents",
    "onboarding_log",
    "exhausted_events",
];

/// Everything the schema is made of: relations, columns (type, NULLs, default), constraints
/// and what publications publish of it.
async fn fingerprint(pool: &PgPool, schema: &str) -> String {
    sqlx::query_scalar(
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
             SELECT 'rel ' || c.relname || ' ' || c.relkind::text AS x
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
             UNION ALL
             SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                    || ' ' || a.attnotnull || ' ' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
             WHERE n.nspname = $1
             UNION ALL
             SELECT 'con ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
             FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE n.nspname = $1
             UNION ALL
             SELECT 'idx ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = $1
             UNION ALL
             SELECT 'pub ' || pubname || ' ' || tablename FROM pg_publication_tables WHERE schemaname = $1
         ) f",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .expect("fingerprint")
}

/// Every row of `schema.table` as JSON, by id.
async fn table_rows(pool: &PgPool, schema: &str, table: &str) -> Vec<Value> {
    let sql = format!(
        "SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM {}.{} t",
        quote_ident(schema),
        quote_ident(table)
    );
    let v: Value = sqlx::query_scalar(&sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    v.as_array().cloned().unwrap_or_default()
}

async fn fixture_rows(pool: &PgPool, schema: &str) -> BTreeMap<&'static str, Vec<Value>> {
    let mut out = BTreeMap::new();
    for t in FIXTURE_TABLES {
        out.insert(t, table_rows(pool, schema, t).await);
    }
    out
}

/// `row` with only the fields of `like` (the columns the earlier schema had).
fn projected(row: &Value, like: &Value) -> Value {
    let keys = like.as_object().expect("row object");
    Value::Object(
        keys.keys()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

/// Asserts that every row of `before` is still there, unchanged in the columns it had: in its
/// table, or (a duplicate removed for a new unique key) in `adopt_duplicates`.
async fn assert_no_row_lost(pool: &PgPool, schema: &str, before: &BTreeMap<&str, Vec<Value>>) {
    let removed = table_rows(pool, schema, "adopt_duplicates").await;
    for (table, rows) in before {
        let now = table_rows(pool, schema, table).await;
        let mut found: Vec<Value> = Vec::new();
        for old in rows {
            let id = &old["id"];
            let kept = now.iter().find(|r| &r["id"] == id);
            let gone = removed
                .iter()
                .filter(|r| r["table_name"] == json!(table))
                .map(|r| &r["removed"])
                .find(|r| &r["id"] == id);
            match (kept, gone) {
                (Some(r), None) | (None, Some(r)) => found.push(projected(r, old)),
                (Some(_), Some(_)) => panic!("{table} {id}: both kept and removed"),
                (None, None) => panic!("{table} {id}: lost by the adoption"),
            }
        }
        assert_eq!(&found, rows, "{table}: rows changed by the adoption");
    }
}

/// Runs `wa-admin` on the test database: (success, stdout, stderr).
fn admin(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary("wa-admin"))
        .args(args)
        .env("DATABASE_URL", database_url())
        .output()
        .expect("run wa-admin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `wa-admin --json <args>`, parsed.
fn admin_json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = admin(&all);
    assert!(ok, "wa-admin {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The partition that holds message `id` of `schema`.
async fn partition_of(pool: &PgPool, schema: &str, message_id: &str) -> String {
    sqlx::query_scalar(&format!(
        "SELECT tableoid::regclass::text FROM {}.messages WHERE message_id = $1",
        quote_ident(schema)
    ))
    .bind(message_id)
    .fetch_one(pool)
    .await
    .expect("message")
}

/// Partitions of `schema` a publication publishes.
async fn published(pool: &PgPool, publication: &str, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_publication_tables
         WHERE pubname = $1 AND schemaname = $2 ORDER BY 1",
    )
    .bind(publication)
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("publication tables")
}

/// 2027-03-02 and 2025-06-04: a month neither the earlier service's partitions nor its DEFAULT
/// partition hold, and one of its `messages_y2025m06`.
const MARCH_2027: i64 = 1_803_945_600;
const JUNE_2025: i64 = 1_749_000_000;

fn message(id: &str, chat: &str, ts: i64) -> Value {
    json!({
        "message_id": id, "chat_id": chat, "jid": "628111000001@s.whatsapp.net",
        "flow": "IN", "from_phone": "628111000001", "to_phone": "AGT001", "agent_id": "AGT001",
        "message_type": "conversation", "message_text": "halo", "message_timestamp": ts, "status": "2"
    })
}

#[tokio::test]
async fn held_events_of_the_earlier_services_schema_land_once_wa_admin_adopts_it() {
    let s = Stack::new("legacy").await;
    let schema = schema_name(&s.tenant);
    load_dwep(&s.pool, &schema).await;
    let shape = fingerprint(&s.pool, &schema).await;
    let before = fixture_rows(&s.pool, &schema).await;

    // MAX_DELIVER 2: had waiting spent attempts, every event would be dead-lettered by now.
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
    let chat = "AGT001_628111000001";
    let held = [
        (
            ChatUpdate,
            json!({"chat_id": chat, "agent_id": "AGT001", "unread_count": 1}),
        ),
        (
            MessageUpsert,
            message("3B0000000000000000B1", chat, MARCH_2027),
        ),
        (
            MessageUpsert,
            message("3B0000000000000000B2", chat, JUNE_2025),
        ),
        (
            ContactUpsert,
            json!({"agent_id": "AGT002", "phone_number": "628222000002", "push_name": "Rina"}),
        ),
        (
            ConnectionUpdate,
            json!({"agent_id": "AGT009", "status": "READY"}),
        ),
    ];
    for (kind, body) in &held {
        s.publish(*kind, body.clone()).await;
    }

    // Held: refused with a notice, redelivered past MAX_DELIVER, nothing dead-lettered or changed.
    let notice = eventually(WAIT, "the adoption notice on /ready", || async {
        let (_, body) = rt.get("/ready").await?;
        body.lines()
            .find(|l| l.contains(&schema) && l.contains("awaits adoption"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        notice.contains(&format!("wa-admin adopt --tenant {}", s.tenant)),
        "{notice}"
    );
    let deliveries = 3 * held.len() as u64;
    eventually(WAIT, "each held event delivered three times", || async {
        let info = s.consumer_info("wa_events_stream", "wa_realtime").await;
        (info.delivered.consumer_sequence >= deliveries).then_some(())
    })
    .await;
    assert!(
        s.dead_letters().await.is_empty(),
        "{:?}",
        s.dead_letters().await
    );
    assert_eq!(
        fingerprint(&s.pool, &schema).await,
        shape,
        "DDL ran on the schema"
    );
    assert_eq!(fixture_rows(&s.pool, &schema).await, before);
    let refusals = rt
        .logs()
        .lines()
        .filter(|l| l.contains("events refused until the schema is adopted"))
        .count();
    assert_eq!(
        refusals,
        1,
        "the refusal is logged once, not per event:\n{}",
        rt.logs()
    );

    // The dry run reports every change and makes none.
    let (ok, report, err) = admin(&["adopt", "--tenant", &s.tenant, "--dry-run"]);
    assert!(ok, "{err}");
    eprintln!("{report}");
    for expected in [
        "dry run, nothing changed",
        "custom_name text",
        "company_id: character varying -> text",
        "retry_count: bigint -> integer",
        "contacts_agent_id_phone_number_key",
        "onboarding_log_phone_number_key",
        "idx_contacts_chat_id: unique (chat_id) made a plain index",
        "inbox as in the current migrations",
        "status_rank from status (3 rows)",
        "detach the DEFAULT partition messages_default (2 rows)",
        "create messages_2024_12 for 2024-12",
        "create messages_2027_01 for 2027-01",
        "daisi_pub",
        "migrations 1-",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from\n{report}"
        );
    }
    let dry = admin_json(&["adopt", "--tenant", &s.tenant, "--dry-run"]);
    let dry = &dry[0];
    assert_eq!(
        (&dry["dry_run"], &dry["adopted"]),
        (&json!(true), &json!(false))
    );
    let onboarded_first = before["onboarding_log"]
        .iter()
        .find(|r| r["message_id"] == "3A0000000000000000A1")
        .expect("fixture row")["id"]
        .clone();
    let removed: Vec<(Value, Value)> = dry["duplicates"]
        .as_array()
        .expect("duplicates")
        .iter()
        .map(|d| (d["table"].clone(), d["removed_key"]["id"].clone()))
        .collect();
    assert_eq!(
        removed,
        [
            (json!("contacts"), json!("c-1")),
            (json!("onboarding_log"), onboarded_first),
        ]
    );
    // Without --tenant, every schema awaiting adoption: ours among them (whatever becomes of
    // the other tests' schemas meanwhile).
    let (_, all, _) = admin(&["--json", "adopt", "--dry-run"]);
    let all: Value = serde_json::from_str(&all).unwrap_or_else(|e| panic!("{e}: {all}"));
    assert!(
        all.as_array()
            .expect("reports")
            .iter()
            .any(|r| r["schema"] == json!(schema)),
        "{all}"
    );
    assert_eq!(
        fingerprint(&s.pool, &schema).await,
        shape,
        "the dry run changed the schema"
    );
    assert_eq!(fixture_rows(&s.pool, &schema).await, before);

    // Adopted: nothing lost, the held events land without a restart.
    let (ok, out, err) = admin(&["adopt", "--tenant", &s.tenant]);
    assert!(ok && out.contains("adopted with"), "{out}\n{err}");
    assert_no_row_lost(&s.pool, &schema, &before).await;
    let q = quote_ident(&schema);
    let landed = format!("SELECT count(*) FROM {q}.messages WHERE message_id LIKE '3B%'");
    eventually(WAIT, "the held events to land", || async {
        let messages = count(&s.pool, &landed).await;
        let others = count(
            &s.pool,
            &format!(
                "SELECT (SELECT count(*) FROM {q}.chats WHERE chat_id = '{chat}')
                      + (SELECT count(*) FROM {q}.contacts WHERE phone_number = '628222000002')
                      + (SELECT count(*) FROM {q}.agents WHERE agent_id = 'AGT009')"
            ),
        )
        .await;
        (messages == 2 && others == 3).then_some(())
    })
    .await;
    let deliveries: i64 = count(
        &s.pool,
        &format!("SELECT min((last_metadata->>'delivered')::int8) FROM {q}.messages WHERE message_id LIKE '3B%'"),
    )
    .await;
    assert!(
        deliveries > 2,
        "landed on delivery {deliveries}, within MAX_DELIVER 2"
    );
    assert_eq!(
        count(
            &s.pool,
            &format!("SELECT unread_count::int8 FROM {q}.chats WHERE chat_id = '{chat}'")
        )
        .await,
        1
    );
    assert!(
        s.dead_letters().await.is_empty(),
        "{:?}",
        s.dead_letters().await
    );
    eventually(WAIT, "the notice to clear", || async {
        let (_, body) = rt.get("/ready").await?;
        (!body.contains("awaits adoption")).then_some(())
    })
    .await;

    // DEFAULT partition emptied into monthly ones; old partitions kept; all published.
    assert_eq!(
        count(
            &s.pool,
            &format!(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = '{q}.messages'::regclass AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'"
            )
        )
        .await,
        0
    );
    for (id, partition) in [
        ("3A0000000000000000A1", "messages_2024_12"),
        ("3A0000000000000000A2", "messages_y2025m12"),
        ("3A0000000000000000A3", "messages_2027_01"),
        ("3B0000000000000000B1", "messages_2027_03"),
        ("3B0000000000000000B2", "messages_y2025m06"),
    ] {
        assert_eq!(
            partition_of(&s.pool, &schema, id).await,
            format!("{schema}.{partition}")
        );
    }
    let publishes = published(&s.pool, "daisi_pub", &schema).await;
    for p in [
        "messages_2024_12",
        "messages_2027_01",
        "messages_2027_03",
        "messages_y2025m01",
    ] {
        assert!(
            publishes.iter().any(|t| t == p),
            "daisi_pub lacks {p}: {publishes:?}"
        );
    }
    assert!(
        !publishes.iter().any(|t| t == "messages_default"),
        "{publishes:?}"
    );
    assert_eq!(
        count(
            &s.pool,
            &format!("SELECT count(*) FROM {q}.adopt_duplicates")
        )
        .await,
        2
    );

    // A second adoption has nothing to do.
    let (ok, out, err) = admin(&["adopt", "--tenant", &s.tenant]);
    assert!(ok && out.contains("nothing to do"), "{out}\n{err}");
    let again = admin_json(&["adopt", "--tenant", &s.tenant]);
    assert!(again[0]["nothing_to_do"].is_string(), "{again}");
    assert_eq!(again[0]["steps"], json!([]));
    let (_, all, _) = admin(&["--json", "adopt", "--dry-run"]);
    assert!(!all.contains(&format!("\"{schema}\"")), "{all}");

    // The adopted schema behaves as the service's own: an old message's status never
    // regresses (its rank was filled in), a newer one applies.
    s.publish(
        MessageUpdate,
        json!({"message_id": "3A0000000000000000A1", "status": "2"}),
    )
    .await;
    s.publish(
        MessageUpdate,
        json!({"message_id": "3A0000000000000000A2", "status": "5"}),
    )
    .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    let statuses = rows(
        &s.pool,
        &s.tenant,
        "SELECT message_id, status FROM messages WHERE message_id LIKE '3A%' ORDER BY 1",
    )
    .await;
    assert_eq!(
        statuses,
        [
            json!({"message_id": "3A0000000000000000A1", "status": "4"}),
            json!({"message_id": "3A0000000000000000A2", "status": "5"}),
            json!({"message_id": "3A0000000000000000A3", "status": "2"}),
        ]
    );
    assert!(
        s.dead_letters().await.is_empty(),
        "{:?}",
        s.dead_letters().await
    );
}

/// The handler of a function kind with `MAX_DELIVER` 2, as a standalone function builds it.
fn handler(kind: FunctionKind, pool: &PgPool) -> FunctionHandler {
    let settings = ProcessorSettings {
        max_deliver: 2,
        retry_window: Duration::ZERO,
        ..ProcessorSettings::default()
    };
    FunctionHandler::new(kind, pool.clone(), settings)
}

/// `e` delivered for the `n`th time.
fn delivered(e: InboundEvent, n: u32) -> InboundEvent {
    InboundEvent {
        delivered: n,
        attempt: n,
        ..e
    }
}

#[tokio::test]
async fn the_functions_run_no_ddl_on_the_earlier_services_schema_and_its_events_wait() {
    let f = Fixture::new("goera").await;
    let schema = f.schema();
    load_dwep(&f.pool, &schema).await;
    let shape = fingerprint(&f.pool, &schema).await;
    let before = fixture_rows(&f.pool, &schema).await;
    assert!(matches!(
        adopt::standing(&f.pool, &schema).await.unwrap(),
        Standing::Foreign(why) if why.contains("no migration bookkeeping")
    ));

    // Every kind of event waits; nothing is written, no DDL runs.
    let mut batch = Vec::new();
    for kind in [
        ChatUpsert,
        ChatUpdate,
        MessageUpsert,
        MessageUpdate,
        ContactUpsert,
        ConnectionUpdate,
        HistoryMessages,
    ] {
        batch.extend(f.events.fixtures(kind));
    }
    for o in f.run(&batch).await {
        assert!(matches!(o, Outcome::Wait { .. }), "{o:?}");
    }
    // Far past MAX_DELIVER, through the attempt ledger: still waiting, no attempt recorded.
    let events = handler(FunctionKind::Events, &f.pool);
    let late: Vec<InboundEvent> = batch
        .iter()
        .take(3)
        .cloned()
        .map(|e| delivered(e, 9))
        .collect();
    for o in events.handle(&late).await.expect("database available") {
        assert!(matches!(o, Outcome::Wait { .. }), "{o:?}");
    }
    let recorded = count(
        &f.pool,
        &format!(
            "SELECT count(*) FROM wa_system.delivery_attempts WHERE stream = '{}'",
            f.events.stream
        ),
    )
    .await;
    assert_eq!(recorded, 0, "waiting counted as a processing attempt");
    // Lambda mode answers `retry` with a delay, marked as no attempt.
    let records: Vec<_> = late
        .iter()
        .enumerate()
        .map(|(i, e)| wa_shared::lambda::Record::from_event(i.to_string(), e))
        .collect();
    let answer = serde_json::to_value(wa_shared::lambda::to_response(
        &records,
        &events.handle(&late).await.expect("database available"),
    ))
    .unwrap();
    for failure in answer["batchItemFailures"].as_array().expect("failures") {
        assert_eq!(
            (&failure["action"], &failure["wait"]),
            (&json!("retry"), &json!(true))
        );
        assert!(
            failure["delay_ms"].as_u64().is_some_and(|d| d > 0),
            "{failure}"
        );
    }
    // Onboarding waits too; and dlq-retry neither re-runs nor records into the schema.
    let incoming = f.json(
        MessageUpsert,
        message("3C0000000000000000C1", "AGT001_628111000001", JUNE_2025),
    );
    let o = handler(FunctionKind::Onboarding, &f.pool)
        .handle(&[incoming])
        .await
        .expect("database available");
    assert!(matches!(o[0], Outcome::Wait { .. }), "{o:?}");
    let envelope = json!({
        "source_subject": format!("v1.chats.upsert.{}", f.tenant), "company": f.tenant,
        "original_payload": {"chat_id": 5}, "error": "chat_id: invalid type", "error_type": "validation",
        "retry_count": 1, "max_retry": 5, "ts": 1_750_000_000,
    });
    let dlq = f.on_subject(
        &format!("v1.dlq.{}", f.tenant),
        serde_json::to_vec(&envelope).unwrap(),
    );
    let o = handler(FunctionKind::DlqRetry, &f.pool)
        .handle(&[dlq])
        .await
        .expect("database available");
    assert!(matches!(o[0], Outcome::Wait { .. }), "{o:?}");
    // Neither a migration nor inbox pruning touches it.
    let refused = schema::migrate(&f.pool, &schema).await.unwrap_err();
    assert!(refused.to_string().contains("awaits adoption"), "{refused}");
    let pruned = wa_shared::store::inbox::prune_all(&f.pool, Duration::from_secs(86_400))
        .await
        .expect("pruning skips schemas without an inbox");
    assert!(!pruned.iter().any(|(s, _)| s == &schema));
    assert_eq!(
        fingerprint(&f.pool, &schema).await,
        shape,
        "DDL ran on the schema"
    );
    assert_eq!(fixture_rows(&f.pool, &schema).await, before);

    // Adopted while the processor runs: its events go through, without a new processor.
    let report = adopt::adopt(&f.pool, &schema, false)
        .await
        .expect("adopted");
    assert!(report.adopted && report.changes() > 0);
    assert_no_row_lost(&f.pool, &schema, &before).await;
    eventually(WAIT, "the processor to see the schema adopted", || async {
        let outcomes = f.run(&batch).await;
        (!outcomes.iter().any(|o| matches!(o, Outcome::Wait { .. }))).then_some(())
    })
    .await;
    assert!(
        count(
            &f.pool,
            &format!("SELECT count(*) FROM {}.inbox", quote_ident(&schema))
        )
        .await
            > 0
    );
    assert_eq!(
        adopt::standing(&f.pool, &schema).await.unwrap(),
        Standing::Ours
    );
}

#[tokio::test]
async fn partitions_published_one_by_one_get_their_new_siblings_and_other_bookkeeping_is_kept() {
    let f = Fixture::new("gopub").await;
    let schema = f.schema();
    load_dwep(&f.pool, &schema).await;
    let q = quote_ident(&schema);
    // A publication of two partitions (not of `messages`), and golang-migrate's bookkeeping.
    let publication = format!(
        "wa_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqlx::raw_sql(&format!(
        "CREATE PUBLICATION {p} FOR TABLE {q}.messages_y2025m01, {q}.messages_y2025m02;
         CREATE TABLE {q}.schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO {q}.schema_migrations VALUES (20240101, false);",
        p = quote_ident(&publication)
    ))
    .execute(&f.pool)
    .await
    .expect("setup");
    assert!(matches!(
        adopt::standing(&f.pool, &schema).await.unwrap(),
        Standing::Foreign(why) if why.contains("not this service's")
    ));

    let report = adopt::adopt(&f.pool, &schema, false)
        .await
        .expect("adopted");
    assert!(report
        .steps
        .iter()
        .any(|s| s.detail.contains("schema_migrations_earlier")));
    assert_eq!(
        count(
            &f.pool,
            &format!("SELECT version FROM {q}.schema_migrations_earlier")
        )
        .await,
        20_240_101
    );
    assert_eq!(
        count(
            &f.pool,
            &format!("SELECT max(version)::int8 FROM {q}.schema_migrations")
        )
        .await,
        i64::from(schema::latest_version())
    );
    let mut want = vec![
        "messages_2024_12",
        "messages_2027_01",
        "messages_y2025m01",
        "messages_y2025m02",
    ];
    assert_eq!(published(&f.pool, &publication, &schema).await, want);

    // A partition the processor creates later is published like its siblings.
    f.run_ok(&[f.json(
        MessageUpsert,
        message("3D0000000000000000D1", "AGT001_628111000001", MARCH_2027),
    )])
    .await;
    want.insert(2, "messages_2027_03");
    assert_eq!(published(&f.pool, &publication, &schema).await, want);
    sqlx::raw_sql(&format!("DROP PUBLICATION {}", quote_ident(&publication)))
        .execute(&f.pool)
        .await
        .expect("drop publication");
}

#[tokio::test]
async fn a_failing_step_leaves_the_schema_as_it_was_and_is_named() {
    let f = Fixture::new("gofail").await;
    let schema = f.schema();
    load_dwep(&f.pool, &schema).await;
    // A retry count that the current column type (integer) cannot hold.
    sqlx::raw_sql(&format!(
        "UPDATE {}.exhausted_events SET retry_count = 5000000000",
        quote_ident(&schema)
    ))
    .execute(&f.pool)
    .await
    .expect("update");
    let shape = fingerprint(&f.pool, &schema).await;
    let before = fixture_rows(&f.pool, &schema).await;
    match adopt::adopt(&f.pool, &schema, false).await {
        Err(e @ AdoptError::Step { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("exhausted_events column type: retry_count"),
                "{text}"
            );
            assert!(text.contains("out of range"), "{text}");
        }
        other => panic!("expected a failed step, got {other:?}"),
    }
    assert_eq!(fingerprint(&f.pool, &schema).await, shape);
    assert_eq!(fixture_rows(&f.pool, &schema).await, before);
    // The CLI says the same and fails.
    let (ok, _, err) = admin(&["adopt", "--tenant", &f.tenant]);
    assert!(
        !ok && err.contains("retry_count") && err.contains("as it was"),
        "{err}"
    );
    // Not left behind for the commands that adopt every schema awaiting adoption.
    sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", quote_ident(&schema)))
        .execute(&f.pool)
        .await
        .expect("drop schema");
}

#[tokio::test]
async fn the_status_rank_adoption_fills_in_is_the_write_paths() {
    let f = Fixture::new("gorank").await;
    let statuses = [
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        " 4 ",
        "pending",
        "SENT",
        "server_ack",
        "Delivered",
        "delivery_ack",
        "read",
        "played",
        "error",
        "",
        "7",
        "unknown",
    ];
    let list: Vec<String> = statuses
        .iter()
        .map(|s| format!("('{}')", s.replace('\'', "''")))
        .collect();
    let sql = format!(
        "SELECT COALESCE(jsonb_agg({} ORDER BY n), '[]') FROM (SELECT row_number() OVER () AS n, status FROM (VALUES {}) v(status)) t",
        adopt::STATUS_RANK_SQL,
        list.join(", ")
    );
    let ranks: Value = sqlx::query_scalar(&sql)
        .fetch_one(&f.pool)
        .await
        .expect(&sql);
    let expected: Vec<i16> = statuses
        .iter()
        .map(|s| wa_shared::model::fields::status_rank(s))
        .collect();
    assert_eq!(ranks, json!(expected));
}
