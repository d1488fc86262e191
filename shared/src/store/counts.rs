//! Row counts of a tenant schema, for operators.

use serde::Serialize;
use sqlx::{PgPool, Postgres};

use crate::model::quote_ident;

/// How many rows a schema's tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TableCounts {
    pub chats: i64,
    pub messages: i64,
    pub contacts: i64,
    pub agents: i64,
    /// Exhausted events not resolved yet.
    pub unresolved_exhausted: i64,
}

/// The row counts of `schema` (a migrated tenant schema).
pub async fn table_counts(pool: &PgPool, schema: &str) -> Result<TableCounts, sqlx::Error> {
    let q = quote_ident(schema);
    let sql = format!(
        "SELECT (SELECT count(*) FROM {q}.chats) AS chats, (SELECT count(*) FROM {q}.messages) AS messages,
                (SELECT count(*) FROM {q}.contacts) AS contacts, (SELECT count(*) FROM {q}.agents) AS agents,
                (SELECT count(*) FROM {q}.exhausted_events WHERE NOT resolved) AS unresolved_exhausted"
    );
    sqlx::query_as::<Postgres, TableCounts>(&sql)
        .fetch_one(pool)
        .await
}
