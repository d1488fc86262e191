//! The inbox: which stream messages already had their effects committed in this schema.

use std::collections::HashMap;

use sqlx::{PgConnection, Postgres};

use super::TenantTx;

/// A stream message: its stream position and the time the stream stored it (microseconds),
/// which together survive a stream being recreated and its sequences reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub stream: String,
    pub sequence: i64,
    pub published_us: i64,
}

/// Claims `keys` for this transaction: records each one not seen before (with the dead items
/// known so far, JSON text) and returns the ones already processed, each with its recorded
/// dead items. One statement in the usual case (nothing seen before); the tenant lock keeps
/// another writer from claiming the same keys meanwhile.
pub async fn claim(
    tx: &mut TenantTx,
    keys: &[(&StreamKey, Option<String>)],
) -> Result<HashMap<StreamKey, Option<String>>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (streams, seqs, published) = columns(keys.iter().map(|(k, _)| *k));
    let dead: Vec<Option<&str>> = keys.iter().map(|(_, d)| d.as_deref()).collect();
    let claimed: Vec<(String, i64, i64)> = sqlx::query_as::<Postgres, _>(
        "INSERT INTO inbox (stream, stream_sequence, published_us, dead_items)
         SELECT s, q, p, d::jsonb FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) AS u(s, q, p, d)
         ON CONFLICT DO NOTHING
         RETURNING stream, stream_sequence, published_us",
    )
    .bind(&streams)
    .bind(&seqs)
    .bind(&published)
    .bind(&dead)
    .fetch_all(tx.conn())
    .await?;
    if claimed.len() == keys.len() {
        return Ok(HashMap::new());
    }
    let claimed: std::collections::HashSet<(&str, i64, i64)> = claimed
        .iter()
        .map(|(stream, q, p)| (stream.as_str(), *q, *p))
        .collect();
    let seen: Vec<&StreamKey> = keys
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !claimed.contains(&(k.stream.as_str(), k.sequence, k.published_us)))
        .collect();
    let (streams, seqs, published) = columns(seen.iter().copied());
    let rows: Vec<(String, i64, i64, Option<String>)> = sqlx::query_as::<Postgres, _>(
        "SELECT i.stream, i.stream_sequence, i.published_us, i.dead_items::text
         FROM inbox i
         JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS k(stream, seq, published_us)
           ON i.stream = k.stream AND i.stream_sequence = k.seq AND i.published_us = k.published_us",
    )
    .bind(&streams)
    .bind(&seqs)
    .bind(&published)
    .fetch_all(tx.conn())
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

/// Takes back claims of this transaction (events that will be retried instead).
pub async fn release(tx: &mut TenantTx, keys: &[&StreamKey]) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let (streams, seqs, published) = columns(keys.iter().copied());
    sqlx::query::<Postgres>(
        "DELETE FROM inbox i USING unnest($1::text[], $2::int8[], $3::int8[]) AS k(stream, seq, published_us)
         WHERE i.stream = k.stream AND i.stream_sequence = k.seq AND i.published_us = k.published_us",
    )
    .bind(&streams)
    .bind(&seqs)
    .bind(&published)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Replaces the dead items recorded with claimed keys (JSON text).
pub async fn set_dead_items(
    tx: &mut TenantTx,
    keys: &[(&StreamKey, Option<String>)],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let (streams, seqs, published) = columns(keys.iter().map(|(k, _)| *k));
    let dead: Vec<Option<&str>> = keys.iter().map(|(_, d)| d.as_deref()).collect();
    sqlx::query::<Postgres>(
        "UPDATE inbox i SET dead_items = k.d::jsonb
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) AS k(stream, seq, published_us, d)
         WHERE i.stream = k.stream AND i.stream_sequence = k.seq AND i.published_us = k.published_us",
    )
    .bind(&streams)
    .bind(&seqs)
    .bind(&published)
    .bind(&dead)
    .execute(tx.conn())
    .await?;
    Ok(())
}

type KeyColumns<'a> = (Vec<&'a str>, Vec<i64>, Vec<i64>);

fn columns<'a>(keys: impl Iterator<Item = &'a StreamKey>) -> KeyColumns<'a> {
    let mut out: KeyColumns<'a> = Default::default();
    for k in keys {
        out.0.push(&k.stream);
        out.1.push(k.sequence);
        out.2.push(k.published_us);
    }
    out
}

/// Forgets inbox rows older than `max_age` (beyond the streams' retention nothing can be
/// redelivered). Returns how many rows were removed.
async fn prune(conn: &mut PgConnection, max_age: std::time::Duration) -> Result<u64, sqlx::Error> {
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
