//! The inbox: which stream messages already had their effects committed in this schema.

use std::collections::HashMap;

use sqlx::{PgConnection, Postgres};

/// A stream message: its stream position and the time the stream stored it (microseconds),
/// which together survive a stream being recreated and its sequences reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub stream: String,
    pub sequence: i64,
    pub published_us: i64,
}

/// Returns the keys already processed, with the dead items recorded for each (JSON text).
pub async fn processed(
    conn: &mut PgConnection,
    keys: &[StreamKey],
) -> Result<HashMap<StreamKey, Option<String>>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let streams: Vec<&str> = keys.iter().map(|k| k.stream.as_str()).collect();
    let seqs: Vec<i64> = keys.iter().map(|k| k.sequence).collect();
    let published: Vec<i64> = keys.iter().map(|k| k.published_us).collect();
    let rows: Vec<(String, i64, i64, Option<String>)> = sqlx::query_as::<Postgres, _>(
        "SELECT i.stream, i.stream_sequence, i.published_us, i.dead_items::text
         FROM inbox i
         JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS k(stream, seq, published_us)
           ON i.stream = k.stream AND i.stream_sequence = k.seq AND i.published_us = k.published_us",
    )
    .bind(&streams)
    .bind(&seqs)
    .bind(&published)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(stream, sequence, published_us, dead)| {
            (
                StreamKey {
                    stream,
                    sequence,
                    published_us,
                },
                dead,
            )
        })
        .collect())
}

/// Records keys as processed, each with its dead items (JSON text) if any.
pub async fn record(
    conn: &mut PgConnection,
    keys: &[(&StreamKey, Option<String>)],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let streams: Vec<&str> = keys.iter().map(|(k, _)| k.stream.as_str()).collect();
    let seqs: Vec<i64> = keys.iter().map(|(k, _)| k.sequence).collect();
    let published: Vec<i64> = keys.iter().map(|(k, _)| k.published_us).collect();
    let dead: Vec<Option<&str>> = keys.iter().map(|(_, d)| d.as_deref()).collect();
    sqlx::query::<Postgres>(
        "INSERT INTO inbox (stream, stream_sequence, published_us, dead_items)
         SELECT s, q, p, d::jsonb FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) AS u(s, q, p, d)",
    )
    .bind(&streams)
    .bind(&seqs)
    .bind(&published)
    .bind(&dead)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets inbox rows older than `max_age` (beyond the streams' retention nothing can be
/// redelivered). Returns how many rows were removed.
pub async fn prune(
    conn: &mut PgConnection,
    max_age: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let secs = max_age.as_secs_f64();
    let done = sqlx::query::<Postgres>(
        "DELETE FROM inbox WHERE processed_at < now() - make_interval(secs => $1)",
    )
    .bind(secs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// [`prune`] in every tenant schema.
pub async fn prune_all(
    pool: &sqlx::PgPool,
    max_age: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for schema in super::schema::tenant_schemas(pool).await? {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('search_path', $1, true)")
            .bind(crate::model::quote_ident(&schema))
            .execute(&mut *tx)
            .await?;
        total += prune(&mut tx, max_age).await?;
        tx.commit().await?;
    }
    Ok(total)
}
