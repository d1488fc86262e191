//! Test harness: real Postgres (and, for end-to-end tests, real NATS), fresh tenants per test,
//! the producer fixtures, and helpers to build inbound events and read rows back.
//!
//! One fixture per tier, shared by every test of it: [`Fixture`] for the core against real
//! Postgres, [`stack::Stack`] for the function binaries end to end (started through
//! `wa-testkit`, which the benchmarks share).

pub mod broker;
pub mod expect;
mod fixture;
pub mod functions;
pub mod lambda;
pub mod ledger;
pub mod otlp;
pub mod publisher;
pub mod rng;
pub mod servers;
pub mod stack;
pub mod tenants;
pub mod two_clusters;
pub mod workload;

pub use fixture::Fixture;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use wa_shared::model::{EventKind, Subject, TenantId};
use wa_shared::pipeline::{InboundEvent, Outcome, Processor, ProcessorSettings};

/// The database tests write to (`TEST_DATABASE_URL`, default the local `test` database).
pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A pool of the library's own (each connection with the token by which the write path
/// keeps statements prepared on it, as in the functions).
pub async fn pool() -> PgPool {
    wa_shared::store::connect(&database_url(), 4)
        .await
        .expect("connect to the test database (is Postgres running?)")
}

/// A tenant id no other test uses.
pub fn unique_tenant(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// The tenant's schema name (unquoted), as the library derives it.
pub fn schema_name(tenant: &str) -> String {
    tenant_id(tenant).schema_name()
}

/// The tenant's schema as a quoted SQL identifier, as the library derives it.
pub fn schema_ident(tenant: &str) -> String {
    tenant_id(tenant).schema_ident()
}

fn tenant_id(tenant: &str) -> TenantId {
    TenantId::parse(tenant).unwrap_or_else(|e| panic!("{e}"))
}

/// The producer fixtures shipped with the repo.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/producer")
}

/// Loads the earlier service's schema and rows (`fixtures/dwep/`) into `schema`, as
/// `psql -v schema=…` would. Loads are serialised: the fixture creates the database-wide
/// publication `daisi_pub` once.
pub async fn load_dwep(pool: &PgPool, schema: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dwep");
    let mut sql =
        String::from("BEGIN;\nSELECT pg_advisory_xact_lock(hashtext('wa-tests:dwep'));\n");
    for file in ["tenant_schema.sql", "tenant_rows.sql"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("fixture");
        sql.push_str(&text.replace(":\"schema\"", &wa_shared::model::quote_ident(schema)));
        sql.push('\n');
    }
    sql.push_str("COMMIT;\nRESET search_path;\n");
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::raw_sql(&sql)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("loading the fixture into {schema}: {e}"));
}

/// Every line of the fixture file for `kind`, with company `CMP001` replaced by `tenant`.
pub fn fixture_lines(kind: EventKind, tenant: &str) -> Vec<String> {
    let path = fixtures_dir().join(format!("{}.jsonl", kind.base()));
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.replace("\"CMP001\"", &format!("\"{tenant}\"")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// Builds inbound events the way a stream would deliver them.
pub struct Events {
    pub stream: String,
    pub tenant: String,
    pub published_at: DateTime<Utc>,
}

impl Events {
    pub fn new(tenant: &str) -> Self {
        Events {
            stream: format!("test_{}", uuid::Uuid::new_v4().simple()),
            tenant: tenant.to_owned(),
            published_at: DateTime::from_timestamp(1_718_400_000, 0).expect("valid"),
        }
    }

    /// A new stream message (fresh sequence) for `kind` with this body.
    pub fn event(&self, kind: EventKind, body: impl Into<Bytes>) -> InboundEvent {
        self.on_subject(&Subject::format(kind, &self.tenant), body)
    }

    pub fn json(&self, kind: EventKind, body: Value) -> InboundEvent {
        self.event(kind, serde_json::to_vec(&body).expect("json"))
    }

    pub fn on_subject(&self, subject: &str, body: impl Into<Bytes>) -> InboundEvent {
        InboundEvent {
            subject: subject.to_owned(),
            payload: body.into(),
            headers: Vec::new(),
            stream: self.stream.clone(),
            stream_sequence: SEQ.fetch_add(1, Ordering::Relaxed),
            consumer: "test".into(),
            delivered: 1,
            attempt: 1,
            published_at: self.published_at,
        }
    }

    /// Every fixture of `kind`, as events.
    pub fn fixtures(&self, kind: EventKind) -> Vec<InboundEvent> {
        fixture_lines(kind, &self.tenant)
            .into_iter()
            .map(|l| self.event(kind, l.into_bytes()))
            .collect()
    }
}

/// The same stream message delivered (and processed) again.
pub fn redelivered(e: &InboundEvent) -> InboundEvent {
    InboundEvent {
        delivered: e.delivered + 1,
        attempt: e.attempt + 1,
        ..e.clone()
    }
}

pub fn processor(pool: &PgPool) -> Processor {
    Processor::new(pool.clone(), ProcessorSettings::default())
}

pub fn processor_with(pool: &PgPool, f: impl FnOnce(&mut ProcessorSettings)) -> Processor {
    let mut s = ProcessorSettings::default();
    f(&mut s);
    Processor::new(pool.clone(), s)
}

/// Runs a batch that must not hit an unavailable database.
pub async fn run(p: &Processor, events: &[InboundEvent]) -> Vec<Outcome> {
    p.process_batch(events).await.expect("database available")
}

/// Runs a batch and asserts every event was acknowledged.
pub async fn run_ok(p: &Processor, events: &[InboundEvent]) {
    let outcomes = run(p, events).await;
    for (e, o) in events.iter().zip(&outcomes) {
        assert_eq!(
            *o,
            Outcome::Ack,
            "{} {:?}",
            e.subject,
            String::from_utf8_lossy(&e.payload)
        );
    }
}

/// Rows of `sql` (run with the tenant's schema on the search path) as JSON objects.
pub async fn rows(pool: &PgPool, tenant: &str, sql: &str) -> Vec<Value> {
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query(&format!("SET search_path TO {}", schema_ident(tenant)))
        .execute(&mut *conn)
        .await
        .expect("search_path");
    let wrapped = format!("SELECT COALESCE(json_agg(t), '[]'::json) FROM ({sql}) t");
    let value: Value = sqlx::query_scalar(&wrapped)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .expect("reset");
    value.as_array().cloned().unwrap_or_default()
}

/// One row, which must exist.
pub async fn row(pool: &PgPool, tenant: &str, sql: &str) -> Value {
    let mut all = rows(pool, tenant, sql).await;
    assert_eq!(all.len(), 1, "{sql}: {all:?}");
    all.remove(0)
}

/// Every table's business columns (no ids, timestamps or metadata), for comparing states.
pub async fn snapshot(pool: &PgPool, tenant: &str) -> Value {
    let chats = rows(pool, tenant, "SELECT chat_id, jid, push_name, custom_name, group_name, phone_number, agent_id, company_id, assigned_to, is_group, not_spam, unread_count, last_message, conversation_timestamp FROM chats ORDER BY chat_id").await;
    let messages = rows(pool, tenant, "SELECT message_id, message_date, from_phone, to_phone, chat_id, jid, message_text, message_url, message_type, flow, agent_id, company_id, status, key, message_obj, edited_message_obj, is_deleted, message_timestamp FROM messages ORDER BY message_id").await;
    let contacts = rows(pool, tenant, "SELECT phone_number, agent_id, chat_id, push_name, custom_name, type, notes, tags, origin, avatar, assigned_to, pob, gender, company_id, dob, status, first_message_id, first_message_timestamp FROM contacts ORDER BY agent_id, phone_number").await;
    let agents = rows(pool, tenant, "SELECT agent_id, qr_code, status, agent_name, phone_number, host_name, version, company_id FROM agents ORDER BY agent_id").await;
    serde_json::json!({"chats": chats, "messages": messages, "contacts": contacts, "agents": agents})
}

/// A snapshot's rows without `company_id`, which names the tenant: for comparing the states of
/// two tenants.
pub fn without_company(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.remove("company_id");
            for value in map.values_mut() {
                *value = without_company(value.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = without_company(item.take());
            }
        }
        _ => {}
    }
    v
}

/// Holds an ACCESS EXCLUSIVE lock on the tenant's `table` until the returned transaction ends.
pub async fn lock_table(
    pool: &PgPool,
    tenant: &str,
    table: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut locker = pool.begin().await.expect("begin");
    let sql = format!(
        "LOCK TABLE {}.{table} IN ACCESS EXCLUSIVE MODE",
        schema_ident(tenant)
    );
    sqlx::query(&sql)
        .execute(&mut *locker)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    locker
}

/// Whether a schema exists.
pub async fn schema_exists(pool: &PgPool, schema: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .expect("query")
}

/// Polls `check` until it returns `Some`, or panics after `deadline` (the one poller of
/// `wa-testkit`).
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let found = wa_testkit::poll(deadline, || {
        let look = check();
        async move { Ok::<_, std::convert::Infallible>(look.await) }
    })
    .await;
    match found {
        Ok(Some(v)) => v,
        _ => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}
