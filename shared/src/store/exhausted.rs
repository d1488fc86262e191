//! `exhausted_events`: dead letters that outlived their retries, kept for operators.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::model::{quote_ident, TenantId};

use super::failure::{classify, DbFailure};
use super::{tenant_tx, SYSTEM_SCHEMA};

/// Where an exhausted event is recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Home {
    Tenant(TenantId),
    /// `wa_system`: invalid or refused tenants, and dead letters that cannot be read.
    System,
}

impl Home {
    /// The schema (unquoted name) that holds the home's `exhausted_events`.
    pub fn schema_name(&self) -> String {
        match self {
            Home::Tenant(t) => t.schema_name(),
            Home::System => SYSTEM_SCHEMA.to_owned(),
        }
    }
}

/// A row to record; `(dlq_stream, dlq_sequence, item_index)` makes recording idempotent.
#[derive(Debug, Clone, Copy)]
pub struct NewExhausted<'a> {
    pub company_id: &'a str,
    pub source_subject: &'a str,
    pub error_type: &'a str,
    pub last_error: &'a str,
    pub retry_count: i32,
    pub event_timestamp: Option<DateTime<Utc>>,
    /// The DLQ envelope (JSON text), or null when it was not JSON.
    pub dlq_payload: Option<&'a str>,
    /// The original event when it was JSON.
    pub original_payload: Option<&'a str>,
    /// The original bytes when they were not JSON.
    pub original_payload_raw: Option<&'a [u8]>,
    pub dlq_stream: &'a str,
    pub dlq_sequence: i64,
    pub item_index: Option<i32>,
    /// The DLQ message's bytes: with the stream position, they identify a redelivery.
    pub dlq_message: &'a [u8],
}

/// Records the row in `schema` (already migrated); a second recording of the same DLQ message is
/// a no-op. Returns whether a row was written.
pub async fn record(
    conn: &mut PgConnection,
    schema: &str,
    e: &NewExhausted<'_>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO {}.exhausted_events (company_id, source_subject, error_type, last_error, retry_count,
             event_timestamp, dlq_payload, original_payload, original_payload_raw, dlq_stream, dlq_sequence, item_index,
             dlq_digest)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12, md5($13))
         ON CONFLICT (dlq_stream, dlq_sequence, COALESCE(item_index, -1), dlq_digest) DO NOTHING",
        quote_ident(schema)
    );
    let done = sqlx::query::<Postgres>(&sql)
        .bind(storable_text(e.company_id))
        .bind(storable_text(e.source_subject))
        .bind(e.error_type)
        .bind(storable_text(e.last_error))
        .bind(e.retry_count)
        .bind(e.event_timestamp)
        .bind(e.dlq_payload)
        .bind(e.original_payload)
        .bind(e.original_payload_raw)
        .bind(e.dlq_stream)
        .bind(e.dlq_sequence)
        .bind(e.item_index)
        .bind(e.dlq_message)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Text as a `text` column can hold it: NUL written as `\u0000` (the rest as it is).
fn storable_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\\u0000").into()
    } else {
        s.into()
    }
}

/// Records `rows` in the schema of `home` (already migrated) in one transaction: all of them or
/// none. A long lock surfaces as an error after `lock_timeout`. Any content is stored: a row
/// whose JSON `jsonb` refuses keeps its original as raw bytes, with the JSON columns null.
pub async fn record_all(
    pool: &PgPool,
    home: &Home,
    rows: &[NewExhausted<'_>],
    lock_timeout: Duration,
) -> Result<(), sqlx::Error> {
    let schema = home.schema_name();
    let mut tx = tenant_tx::begin_plain(pool, lock_timeout).await?;
    if let Home::Tenant(tenant) = home {
        // Under the tenant's lock, and never into a schema fenced here (moved or paused).
        sqlx::raw_sql(&tenant_tx::enter_statement(tenant))
            .execute(&mut *tx)
            .await?;
    }
    for row in rows {
        sqlx::query("SAVEPOINT exhausted").execute(&mut *tx).await?;
        match record(&mut tx, &schema, row).await {
            Ok(_) => {}
            // The JSON holds what `jsonb` refuses (a NUL, a lone surrogate, a number out of
            // range, nesting too deep): the row is kept with its bytes instead.
            Err(e) if classify(&e) == DbFailure::Permanent => {
                sqlx::query("ROLLBACK TO SAVEPOINT exhausted")
                    .execute(&mut *tx)
                    .await?;
                let raw = row.original_payload.map(str::as_bytes);
                let as_bytes = NewExhausted {
                    dlq_payload: None,
                    original_payload: None,
                    original_payload_raw: row.original_payload_raw.or(raw),
                    ..*row
                };
                record(&mut tx, &schema, &as_bytes).await?;
            }
            Err(e) => return Err(e),
        }
        sqlx::query("RELEASE SAVEPOINT exhausted")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// A stored exhausted event, as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Exhausted {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub company_id: Option<String>,
    pub source_subject: Option<String>,
    pub error_type: Option<String>,
    pub last_error: Option<String>,
    pub retry_count: Option<i32>,
    pub event_timestamp: Option<DateTime<Utc>>,
    pub original_payload: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_payload_raw_base64: Option<String>,
    pub resolved: bool,
    pub resolved_at: Option<DateTime<Utc>>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub notes: Option<String>,
    pub item_index: Option<i32>,
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub subject: Option<String>,
    pub resolved: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub ids: Option<Vec<i64>>,
    pub limit: i64,
}

const COLUMNS: &str = "id, created_at, company_id, source_subject, error_type, last_error, retry_count,
    event_timestamp, original_payload, encode(original_payload_raw, 'base64') AS original_payload_raw_base64,
    resolved, resolved_at, replayed_at, notes, item_index";

/// Exhausted events of one schema, newest first.
pub async fn list(pool: &PgPool, schema: &str, f: &Filter) -> Result<Vec<Exhausted>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {}.exhausted_events
         WHERE ($1::text IS NULL OR source_subject LIKE $1)
           AND ($2::bool IS NULL OR resolved = $2)
           AND ($3::timestamptz IS NULL OR created_at >= $3)
           AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::int8[] IS NULL OR id = ANY($5))
         ORDER BY id DESC LIMIT $6",
        quote_ident(schema)
    );
    sqlx::query_as::<Postgres, Exhausted>(&sql)
        .bind(f.subject.as_ref().map(|s| s.replace('*', "%")))
        .bind(f.resolved)
        .bind(f.since)
        .bind(f.until)
        .bind(&f.ids)
        .bind(f.limit)
        .fetch_all(pool)
        .await
}

/// The original bytes of an exhausted event (JSON text or raw bytes).
pub async fn original_bytes(
    pool: &PgPool,
    schema: &str,
    id: i64,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let sql = format!(
        "SELECT COALESCE(convert_to(original_payload::text, 'UTF8'), original_payload_raw) FROM {}.exhausted_events WHERE id = $1",
        quote_ident(schema)
    );
    Ok(sqlx::query_scalar::<Postgres, Option<Vec<u8>>>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .flatten())
}

pub async fn mark_replayed(pool: &PgPool, schema: &str, id: i64) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE {}.exhausted_events SET replayed_at = now(),
             notes = concat_ws(E'\\n', notes, 'replayed at ' || now()::text) WHERE id = $1",
        quote_ident(schema)
    );
    sqlx::query::<Postgres>(&sql).bind(id).execute(pool).await?;
    Ok(())
}

/// Marks events resolved with a note; returns how many were changed.
pub async fn resolve(
    pool: &PgPool,
    schema: &str,
    ids: &[i64],
    note: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "UPDATE {}.exhausted_events SET resolved = true, resolved_at = now(),
             notes = concat_ws(E'\\n', notes, $2::text) WHERE id = ANY($1) AND NOT resolved",
        quote_ident(schema)
    );
    Ok(sqlx::query::<Postgres>(&sql)
        .bind(ids)
        .bind(note)
        .execute(pool)
        .await?
        .rows_affected())
}
