//! Moving tenants between two Postgres clusters with `wa-admin tenants` (SPEC §17), end to end:
//! the real `wa-realtime` with `TENANT_DATABASES`, a private NATS, the main database (a fresh
//! one on the shared Postgres, holding `wa_system.tenants`) and a private second cluster.
//!
//! A moved tenant is compared with a control tenant that stays where it is and is fed the same
//! events: a move may delay events, never lose, double or reorder their effects.
//!
//! `MOVE_MESSAGES` (default 2,000) is how many messages the moved tenant holds before its move
//! (`just test-move-long` moves 100,000 and prints the step timings).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use serde_json::{json, Value};
use sqlx::PgPool;
use wa_integration_tests::functions::{binary, Function};
use wa_integration_tests::two_clusters::{waited, TwoClusters, SECOND};
use wa_integration_tests::workload::{self, Workload};
use wa_integration_tests::*;
use wa_shared::model::EventKind::{self, *};
use wa_shared::model::{quote_ident, TenantId};
use wa_shared::store::moves::{self, MoveRecord};
use wa_shared::store::placement::{self, TenantState, DEFAULT_PLACEMENT};
use wa_shared::store::tenants::{self, TenantRecord};
use wa_shared::transport::streams::{DLQ_STREAM, REALTIME_STREAM};

const WAIT: Duration = Duration::from_secs(90);

/// The realtime function's durable consumer.
const REALTIME: &str = "wa_realtime";

/// The signal `std::process::abort` raises.
const SIGABRT: i32 = 6;

/// Events published per tenant and chunk by the publisher, and its pace while a move runs.
const CHUNK: usize = 10;
const PACE: Duration = Duration::from_millis(20);

/// The two clusters, and what these tests do with them.
struct World(TwoClusters);

impl std::ops::Deref for World {
    type Target = TwoClusters;
    fn deref(&self) -> &TwoClusters {
        &self.0
    }
}

impl World {
    async fn new(prefix: &str) -> Self {
        World(TwoClusters::new(prefix, "wa_move_").await)
    }

    async fn realtime(&self, extra: &[(&'static str, &str)]) -> Function {
        self.start("wa-realtime", extra).await
    }

    /// Runs `wa-admin` on the main database with `TENANT_DATABASES`, plus `env`.
    async fn admin(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        tokio::process::Command::new(binary("wa-admin"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &self.s.database_url)
            .env("TENANT_DATABASES", self.tenant_databases())
            .envs(env.iter().copied())
            .output()
            .await
            .expect("run wa-admin")
    }

    /// `wa-admin <args>`, which must succeed: its stdout.
    async fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args, &[]).await;
        let (stdout, stderr) = texts(&out);
        assert!(
            out.status.success(),
            "wa-admin {args:?} failed:\n{stderr}\n{stdout}"
        );
        stdout
    }

    /// `wa-admin <args>`, which must fail: its stderr.
    async fn admin_refused(&self, args: &[&str]) -> String {
        let out = self.admin(args, &[]).await;
        let (stdout, stderr) = texts(&out);
        assert!(
            !out.status.success(),
            "wa-admin {args:?} succeeded:\n{stdout}"
        );
        stderr
    }

    /// `wa-admin tenants move <args>`, stopped by the test hook right after recording `step`.
    async fn move_killed_after(&self, step: &str, args: &[&str]) {
        let mut all = vec!["tenants", "move"];
        all.extend_from_slice(args);
        let out = self.admin(&all, &[("WA_MOVE_ABORT_AFTER", step)]).await;
        let (_, stderr) = texts(&out);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "wa-admin {all:?} was to stop after {step}: {:?}\n{stderr}",
            out.status
        );
    }

    fn pool(&self, placement: &str) -> &PgPool {
        match placement {
            DEFAULT_PLACEMENT => &self.s.pool,
            SECOND => &self.second_pool,
            other => panic!("no database for placement {other}"),
        }
    }

    async fn record(&self, tenant: &str) -> TenantRecord {
        tenants::by_schema(&self.s.pool, &schema_name(tenant))
            .await
            .unwrap()
            .expect("recorded")
    }

    async fn move_of(&self, tenant: &str) -> Option<MoveRecord> {
        moves::recorded(&self.s.pool, &schema_name(tenant))
            .await
            .unwrap()
    }

    /// The tenant's inbox rows on `placement`; None while it has no schema there.
    async fn inbox(&self, placement: &str, tenant: &str) -> Option<i64> {
        wa_integration_tests::tenants::counts(self.pool(placement), &[tenant.to_owned()])
            .await
            .get(tenant)
            .map(|c| c.inbox)
    }

    /// Waits until the tenant has at least `n` inbox rows on `placement`.
    async fn wait_inbox(&self, placement: &str, tenant: &str, n: i64) -> i64 {
        eventually(
            WAIT,
            &format!("{n} events of {tenant} on {placement}"),
            || async {
                self.inbox(placement, tenant)
                    .await
                    .filter(|&have| have >= n)
            },
        )
        .await
    }

    async fn settled(&self) {
        self.s.wait_settled(WAIT, REALTIME_STREAM, REALTIME).await;
    }

    /// Messages in the DLQ stream (0 while it does not exist).
    async fn dead_letters(&self) -> u64 {
        match self.s.js.get_stream(DLQ_STREAM).await {
            Ok(mut stream) => stream.info().await.expect("dlq info").state.messages,
            Err(_) => 0,
        }
    }

    /// `wa-admin --json tenants`, by tenant id.
    async fn listed(&self) -> BTreeMap<String, Value> {
        let out = self.admin_ok(&["--json", "tenants"]).await;
        let rows: Vec<Value> = serde_json::from_str(&out).expect("JSON");
        rows.into_iter()
            .filter_map(|r| Some((r["tenant"].as_str()?.to_owned(), r)))
            .collect()
    }
}

fn texts(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `n` events whose effects do not depend on the order they are applied in (a move delays a
/// tenant's events and they come back in another order): unread deltas, messages and their
/// receipts ([`Workload`]), plus every tenth a `chats.upsert` (guarded by its timestamp, with
/// the same name each time) and every tenth a `contacts.upsert` of a new contact.
fn mix(n: usize, seed: u64) -> Vec<(EventKind, Value)> {
    let chats = 30;
    let base = Workload::generate(n * 8 / 10, chats, seed);
    let mut out = Vec::with_capacity(n);
    for (i, e) in base.events.into_iter().enumerate() {
        out.push(e);
        if i % 4 == 1 {
            let c = format!("62810{:04}", i % chats);
            out.push((
                ChatUpsert,
                json!({"chat_id": format!("AG_{c}"), "agent_id": "AG", "jid": format!("{c}@s.whatsapp.net"),
                       "push_name": format!("Chat {c}"), "conversation_timestamp": 1_718_360_000 + i,
                       "last_message": {"text": format!("message {i}")}}),
            ));
        } else if i % 4 == 3 {
            out.push((
                ContactUpsert,
                json!({"agent_id": "AG", "phone_number": format!("62899{i:08}"),
                       "push_name": format!("Contact {i}")}),
            ));
        }
    }
    out
}

/// Publishes events for several tenants (the same events for each), a chunk at a time, at
/// [`PACE`] until told to hurry.
struct Publisher {
    published: Arc<AtomicUsize>,
    hurry: Arc<AtomicBool>,
    total: usize,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(js: Context, tenants: Vec<String>, events: Vec<(EventKind, Value)>) -> Self {
        let published = Arc::new(AtomicUsize::new(0));
        let hurry = Arc::new(AtomicBool::new(false));
        let total = events.len();
        let task = tokio::spawn({
            let (published, hurry) = (published.clone(), hurry.clone());
            async move {
                let mut pace = tokio::time::interval(PACE);
                for chunk in events.chunks(CHUNK) {
                    if !hurry.load(Ordering::Relaxed) {
                        pace.tick().await;
                    }
                    for t in &tenants {
                        workload::publish(&js, t, chunk).await;
                    }
                    published.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            }
        });
        Publisher {
            published,
            hurry,
            total,
            task,
        }
    }

    /// Events published so far, per tenant.
    fn published(&self) -> usize {
        self.published.load(Ordering::Relaxed)
    }

    /// Publishes the rest at once; returns how many were published per tenant.
    async fn finish(self) -> usize {
        self.hurry.store(true, Ordering::Relaxed);
        let published = self.published.clone();
        self.task.await.expect("publisher");
        assert_eq!(published.load(Ordering::Relaxed), self.total);
        self.total
    }
}

/// Adds `n` messages to the tenant's schema directly (spread over January to June 2024, in
/// monthly partitions named as the functions name them): a tenant with history, fast.
async fn preload(pool: &PgPool, tenant: &str, n: i64) {
    let s = schema_ident(tenant);
    for month in 1..=6 {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.messages_2024_{month:02} PARTITION OF {s}.messages
             FOR VALUES FROM ('2024-{month:02}-01') TO ('{}')",
            if month == 12 {
                "2025-01-01".to_owned()
            } else {
                format!("2024-{:02}-01", month + 1)
            }
        ))
        .execute(pool)
        .await
        .expect("partition");
    }
    sqlx::query(&format!(
        "INSERT INTO {s}.messages (message_id, chat_id, jid, from_phone, to_phone, message_text,
             message_type, flow, agent_id, company_id, status, status_rank, key, message_obj,
             message_timestamp, message_date)
         SELECT 'PRE' || i, 'AG_62811' || lpad((i % 200)::text, 4, '0'),
                '62811' || lpad((i % 200)::text, 4, '0') || '@s.whatsapp.net',
                '62811' || lpad((i % 200)::text, 4, '0'), '6281100000001',
                'preloaded message ' || i || ' ' || repeat('x', (i % 120)::int), 'text', 'IN', 'AG', $1,
                '2', 2, jsonb_build_object('id', 'PRE' || i, 'fromMe', false),
                jsonb_build_object('conversation', 'preloaded ' || i), ts,
                (to_timestamp(ts) AT TIME ZONE 'UTC')::date
         FROM generate_series(1, $2) i,
              LATERAL (SELECT 1704067200 + i * (15552000 / $2) AS ts) t"
    ))
    .bind(tenant)
    .bind(n)
    .execute(pool)
    .await
    .expect("preload messages");
}

/// Every table of the tenant's schema, row by row (as JSON text, sorted), without what differs
/// between two tenants fed the same events: ids, times, stream positions, and the tenant id.
async fn tables(pool: &PgPool, tenant: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for table in [
        "chats",
        "messages",
        "contacts",
        "agents",
        "onboarding_log",
        "exhausted_events",
        "inbox",
    ] {
        let sql = format!(
            "SELECT (to_jsonb(t) - ARRAY['id', 'created_at', 'updated_at', 'last_metadata',
                     'processed_at', 'stream_sequence', 'published_us', 'event_published_at'])::text
             FROM {}.{table} t",
            schema_ident(tenant)
        );
        let mut rows: Vec<String> = sqlx::query_scalar(&sql)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|r: String| r.replace(tenant, "TENANT"))
            .collect();
        rows.sort();
        out.insert(table.to_owned(), rows);
    }
    out
}

/// Asserts two tenants' tables hold the same rows, naming the first difference.
fn assert_same(moved: &BTreeMap<String, Vec<String>>, control: &BTreeMap<String, Vec<String>>) {
    for (table, rows) in control {
        let other = &moved[table];
        assert_eq!(
            other.len(),
            rows.len(),
            "{table}: {} rows moved, {} in the control",
            other.len(),
            rows.len()
        );
        if let Some((a, b)) = other.iter().zip(rows).find(|(a, b)| a != b) {
            panic!("{table} differs:\n moved:   {a}\n control: {b}");
        }
    }
}

/// `MOVE_MESSAGES`: the moved tenant's messages before its move.
fn move_messages() -> i64 {
    std::env::var("MOVE_MESSAGES")
        .ok()
        .map(|v| v.parse().expect("MOVE_MESSAGES is a number"))
        .unwrap_or(2_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_moved_while_its_events_arrive_ends_like_one_that_stayed() {
    let w = World::new("mva").await;
    let moved = unique_tenant("mvam");
    let control = unique_tenant("mvac");
    let both = vec![moved.clone(), control.clone()];
    let preloaded = move_messages();
    let events = mix(3_000.max(preloaded as usize / 5), 71);
    let _rt = w.realtime(&[]).await;

    // Both tenants written once (recorded on the default placement, known to the function),
    // then given the same history.
    let (first, rest) = events.split_at(300);
    for t in &both {
        workload::publish(&w.s.js, t, first).await;
    }
    for t in &both {
        w.wait_inbox(DEFAULT_PLACEMENT, t, first.len() as i64).await;
        preload(&w.s.pool, t, preloaded).await;
    }

    let publisher = Publisher::start(w.s.js.clone(), both.clone(), rest.to_vec());
    eventually(WAIT, "the publisher under way", || async {
        (publisher.published() > 0).then_some(())
    })
    .await;
    let before = publisher.published();
    let started = Instant::now();
    let out = w
        .admin_ok(&["tenants", "move", &moved, SECOND, "--drop-source"])
        .await;
    let took = started.elapsed();
    let during = publisher.published() - before;
    println!("{out}");
    println!(
        "move of a tenant with {preloaded} preloaded messages took {took:?}; {during} events per tenant published meanwhile"
    );
    assert!(
        during > 0 && publisher.published() < rest.len(),
        "events arrive through the whole move ({during} during it, {} of {} in all)",
        publisher.published(),
        rest.len()
    );
    assert!(out.contains("moved from default to second"), "{out}");
    let published = (first.len() + publisher.finish().await) as i64;

    w.wait_inbox(SECOND, &moved, published).await;
    w.wait_inbox(DEFAULT_PLACEMENT, &control, published).await;
    w.settled().await;
    assert_eq!(
        w.inbox(SECOND, &moved).await,
        Some(published),
        "no duplicate"
    );
    assert_eq!(w.inbox(DEFAULT_PLACEMENT, &control).await, Some(published));
    assert_eq!(w.dead_letters().await, 0, "nothing dead-lettered");
    assert_same(
        &tables(&w.second_pool, &moved).await,
        &tables(&w.s.pool, &control).await,
    );

    // Placed on the second cluster, active, its old schema gone from the main database.
    assert!(!schema_exists(&w.s.pool, &schema_name(&moved)).await);
    let record = w.record(&moved).await;
    assert_eq!(
        (record.placement.as_str(), record.state()),
        (SECOND, TenantState::Active)
    );
    assert_eq!(w.move_of(&moved).await.expect("recorded").step, "done");
    let listed = w.listed().await;
    let row = &listed[&moved];
    assert_eq!(
        (&row["placement"], &row["state"], &row["move"]),
        (&json!(SECOND), &json!("active"), &Value::Null),
        "{row}"
    );
    let messages = tables(&w.second_pool, &moved).await["messages"].len();
    assert_eq!(
        row["messages"],
        json!(messages),
        "counts are read on the second cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_killed_after_any_step_resumes_or_is_undone_without_losing_an_event() {
    let w = World::new("mvk").await;
    let moved = unique_tenant("mvkm");
    let control = unique_tenant("mvkc");
    let both = vec![moved.clone(), control.clone()];
    let events = mix(6_000, 73);
    let _rt = w.realtime(&[]).await;
    let (first, rest) = events.split_at(100);
    for t in &both {
        workload::publish(&w.s.js, t, first).await;
    }
    for t in &both {
        w.wait_inbox(DEFAULT_PLACEMENT, t, first.len() as i64).await;
    }
    let publisher = Publisher::start(w.s.js.clone(), both.clone(), rest.to_vec());
    let schema = schema_name(&moved);

    // Killed before the switch, then undone: back where it was, its events flowing there.
    for step in ["begin", "fenced", "copied", "verified"] {
        w.move_killed_after(step, &[&moved, SECOND]).await;
        assert_eq!(w.move_of(&moved).await.expect("recorded").step, step);
        assert_eq!(w.record(&moved).await.state(), TenantState::Moving);
        let out = w.admin_ok(&["tenants", "move", &moved, "--abort"]).await;
        assert!(out.contains("undone"), "{out}");
        let record = w.record(&moved).await;
        assert_eq!(
            (record.placement.as_str(), record.state()),
            (DEFAULT_PLACEMENT, TenantState::Active),
            "after an abort at {step}"
        );
        assert!(w.move_of(&moved).await.is_none());
        assert!(!schema_exists(&w.second_pool, &schema).await, "{step}");
        assert_eq!(placement::fenced(&w.s.pool, &schema).await.unwrap(), None);
        let now = w.inbox(DEFAULT_PLACEMENT, &moved).await.unwrap();
        w.wait_inbox(DEFAULT_PLACEMENT, &moved, now + 20).await;
    }
    let refused = w
        .admin_refused(&["tenants", "move", &moved, "--abort"])
        .await;
    assert!(refused.contains("no move in progress"), "{refused}");

    // Killed after each step in turn, each run resuming the last: on the second cluster.
    for step in ["begin", "fenced", "copied", "verified", "switched"] {
        w.move_killed_after(step, &[&moved, SECOND]).await;
        assert_eq!(w.move_of(&moved).await.expect("recorded").step, step);
    }
    let refused = w
        .admin_refused(&["tenants", "move", &moved, "--abort"])
        .await;
    assert!(refused.contains("already switched"), "{refused}");
    let other = w
        .admin_refused(&["tenants", "move", &moved, DEFAULT_PLACEMENT])
        .await;
    assert!(other.contains("is being moved to second"), "{other}");
    let out = w.admin_ok(&["tenants", "move", &moved, SECOND]).await;
    assert!(out.contains("resumed after its step switched"), "{out}");
    assert_eq!(w.record(&moved).await.placement, SECOND);
    assert!(
        placement::fenced(&w.s.pool, &schema)
            .await
            .unwrap()
            .is_some(),
        "the source stays fenced"
    );
    let now = w.inbox(SECOND, &moved).await.unwrap();
    w.wait_inbox(SECOND, &moved, now + 20).await;

    // And back, killed after the copy: the copy is made again, then the source dropped.
    w.move_killed_after("copied", &[&moved, DEFAULT_PLACEMENT])
        .await;
    w.admin_ok(&[
        "tenants",
        "move",
        &moved,
        DEFAULT_PLACEMENT,
        "--drop-source",
    ])
    .await;
    assert!(!schema_exists(&w.second_pool, &schema).await);
    let record = w.record(&moved).await;
    assert_eq!(
        (record.placement.as_str(), record.state()),
        (DEFAULT_PLACEMENT, TenantState::Active)
    );
    assert_eq!(placement::fenced(&w.s.pool, &schema).await.unwrap(), None);

    // Every event applied once: published = applied, nothing dead-lettered.
    let published = (first.len() + publisher.finish().await) as i64;
    w.wait_inbox(DEFAULT_PLACEMENT, &moved, published).await;
    w.wait_inbox(DEFAULT_PLACEMENT, &control, published).await;
    w.settled().await;
    assert_eq!(w.inbox(DEFAULT_PLACEMENT, &moved).await, Some(published));
    assert_eq!(w.dead_letters().await, 0);
    assert_same(
        &tables(&w.s.pool, &moved).await,
        &tables(&w.s.pool, &control).await,
    );
}

/// Realtime settings under which two attempts dead-letter an event within a second: events
/// that wait many rounds without a dead letter spent no attempt.
const FEW_ATTEMPTS: &[(&str, &str)] = &[
    ("MAX_DELIVER", "2"),
    ("BACKOFF", "100ms"),
    ("RETRY_WINDOW", "0s"),
];

#[tokio::test]
async fn a_paused_tenant_holds_its_events_until_resumed() {
    let w = World::new("mvp").await;
    let paused = unique_tenant("mvpp");
    let other = unique_tenant("mvpo");
    // The paused tenant lives on the second cluster: its fence is there.
    let id = TenantId::parse(&paused).unwrap();
    tenants::claim(&w.s.pool, &id).await.unwrap();
    tenants::set_placement(&w.s.pool, &id.schema_name(), SECOND, TenantState::Active)
        .await
        .unwrap();
    let rt = w.realtime(FEW_ATTEMPTS).await;
    // No receipts: one redelivered before its message would be retried, and these settings
    // dead-letter it at once.
    let events: Vec<_> = mix(70, 79)
        .into_iter()
        .filter(|(kind, _)| *kind != MessageUpdate)
        .collect();
    let (first, later) = events.split_at(20);
    for t in [&paused, &other] {
        workload::publish(&w.s.js, t, first).await;
    }
    w.wait_inbox(SECOND, &paused, 20).await;
    w.wait_inbox(DEFAULT_PLACEMENT, &other, 20).await;

    let out = w.admin_ok(&["tenants", "pause", &paused]).await;
    assert!(out.contains("active -> paused"), "{out}");
    assert!(placement::fenced(&w.second_pool, &id.schema_name())
        .await
        .unwrap()
        .is_some());
    for t in [&paused, &other] {
        workload::publish(&w.s.js, t, later).await;
    }
    let all = events.len() as i64;
    w.wait_inbox(DEFAULT_PLACEMENT, &other, all).await;
    let rounds = (later.len() * 3) as f64;
    eventually(
        WAIT,
        "the paused tenant's events waiting three rounds",
        || async { (waited(&rt, &paused).await >= rounds).then_some(()) },
    )
    .await;
    assert_eq!(w.inbox(SECOND, &paused).await, Some(20), "held");
    assert_eq!(w.dead_letters().await, 0, "waiting is no attempt");
    let row = &w.listed().await[&paused];
    assert_eq!(
        (&row["placement"], &row["state"]),
        (&json!(SECOND), &json!("paused")),
        "{row}"
    );
    let refused = w
        .admin_refused(&["tenants", "move", &paused, DEFAULT_PLACEMENT])
        .await;
    assert!(refused.contains("is paused"), "{refused}");

    let out = w.admin_ok(&["tenants", "resume", &paused]).await;
    assert!(out.contains("paused -> active"), "{out}");
    w.wait_inbox(SECOND, &paused, all).await;
    w.settled().await;
    assert_eq!(w.inbox(SECOND, &paused).await, Some(all));
    assert_eq!(w.dead_letters().await, 0);
    assert_same(
        &tables(&w.second_pool, &paused).await,
        &tables(&w.s.pool, &other).await,
    );
}

/// Everything a schema holds, for comparing a moved schema with its source: each table's
/// columns and rows (all of them, ids and times included), the partitions with their bounds,
/// and the sequences' values.
async fn contents(pool: &PgPool, schema: &str) -> BTreeMap<String, Value> {
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::raw_sql("SET TimeZone = 'UTC'")
        .execute(&mut *conn)
        .await
        .expect("time zone");
    let mut out = BTreeMap::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname <> 'schema_migrations' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .expect("tables");
    for table in tables {
        let t = format!("{}.{}", quote_ident(schema), quote_ident(&table));
        let rows: Value = sqlx::query_scalar(&format!(
            "SELECT COALESCE(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') FROM {t} t"
        ))
        .fetch_one(&mut *conn)
        .await
        .expect("rows");
        let columns: Value = sqlx::query_scalar(
            "SELECT jsonb_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                              || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                              ORDER BY a.attname)
             FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0
               AND NOT a.attisdropped",
        )
        .bind(&t)
        .fetch_one(&mut *conn)
        .await
        .expect("columns");
        out.insert(table, json!({"columns": columns, "rows": rows}));
    }
    let partitions: Value = sqlx::query_scalar(
        "SELECT COALESCE(jsonb_agg(p.relname || ' of ' || r.relname || ' ' ||
                pg_get_expr(p.relpartbound, p.oid) ORDER BY p.relname), '[]')
         FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
         JOIN pg_class r ON r.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
         WHERE n.nspname = $1",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .expect("partitions");
    out.insert("(partitions)".into(), partitions);
    let sequences: Value = sqlx::query_scalar(
        "SELECT COALESCE(jsonb_object_agg(sequencename, last_value), '{}')
         FROM pg_sequences WHERE schemaname = $1",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .expect("sequences");
    out.insert("(sequences)".into(), sequences);
    out
}

/// The schema's index definitions without their names.
async fn index_shapes(pool: &PgPool, schema: &str) -> Vec<String> {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes i JOIN pg_class c ON c.relname = i.tablename
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname
         WHERE i.schemaname = $1 AND NOT c.relispartition AND i.tablename <> 'schema_migrations'",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("indexes");
    let mut shapes: Vec<String> = defs
        .into_iter()
        .map(|d| {
            let (head, rest) = d.split_once(" ON ").expect("index definition");
            let unique = if head.contains("UNIQUE") {
                "UNIQUE "
            } else {
                ""
            };
            format!("{unique}ON {}", rest.trim_start_matches("ONLY "))
        })
        .collect();
    shapes.sort();
    shapes.dedup();
    shapes
}

#[tokio::test]
async fn a_schema_taken_over_from_the_earlier_service_moves_whole() {
    let w = World::new("mvd").await;
    let tenant = unique_tenant("mvdd");
    let schema = schema_name(&tenant);
    // The earlier service's schema, adopted: Go-era partitions and indexes, extra columns and
    // tables (the removed duplicates, the earlier bookkeeping) beside the current migrations.
    load_dwep(&w.s.pool, &schema).await;
    w.admin_ok(&["adopt", "--tenant", &tenant]).await;
    tenants::claim(&w.s.pool, &TenantId::parse(&tenant).unwrap())
        .await
        .unwrap();
    let before = contents(&w.s.pool, &schema).await;
    assert!(before.contains_key("adopt_duplicates"), "{before:?}");
    let shapes = index_shapes(&w.s.pool, &schema).await;

    w.admin_ok(&["tenants", "move", &tenant, SECOND, "--drop-source"])
        .await;
    let after = contents(&w.second_pool, &schema).await;
    for (what, was) in &before {
        assert_eq!(after.get(what), Some(was), "{what} differs after the move");
    }
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    let moved_shapes = index_shapes(&w.second_pool, &schema).await;
    for shape in &shapes {
        assert!(
            moved_shapes.contains(shape),
            "index {shape} missing after the move"
        );
    }
    assert!(!schema_exists(&w.s.pool, &schema).await);

    // The same database under two names is refused before anything changes.
    let out = w
        .admin(
            &["tenants", "move", &tenant, "again"],
            &[(
                "TENANT_DATABASES",
                &format!("{SECOND}={0},again={0}", w.second_url),
            )],
        )
        .await;
    let (_, stderr) = texts(&out);
    assert!(
        !out.status.success() && stderr.contains("are the same database"),
        "{stderr}"
    );
    let record = w.record(&tenant).await;
    assert_eq!(
        (record.placement.as_str(), record.state()),
        (SECOND, TenantState::Active)
    );
}
