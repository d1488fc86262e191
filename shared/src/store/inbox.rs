//! The inbox: which stream messages already had their effects committed in this schema.

use std::collections::{HashMap, HashSet};

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row};

use super::script::Statement;

/// A stream message: its stream position and the time the stream stored it (microseconds),
/// which together survive a stream being recreated and its sequences reused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub stream: String,
    pub sequence: i64,
    pub published_us: i64,
}

/// The statement claiming `keys` (each with the dead items known so far, JSON text): it records
/// each key not seen before and returns the keys it recorded (read them with [`claimed`]); the
/// others were processed before. The tenant lock keeps another writer from claiming the same
/// keys meanwhile. A plain insert: a quarter of the server's work of one that also looks up
/// the keys already there, which only a redelivery needs ([`recorded`]).
pub fn claim<'a>(keys: &'a [(&'a StreamKey, Option<String>)]) -> Option<Statement<'a>> {
    if keys.is_empty() {
        return None;
    }
    let (streams, seqs, published) = columns(keys.iter().map(|(k, _)| *k));
    let dead: Vec<Option<&str>> = keys.iter().map(|(_, d)| d.as_deref()).collect();
    Some(
        Statement::new(CLAIM)
            .bind(streams)
            .bind(seqs)
            .bind(published)
            .bind(dead),
    )
}

const CLAIM: &str = "
INSERT INTO inbox (stream, stream_sequence, published_us, dead_items)
SELECT stream, seq, published_us, d::jsonb
FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[]) AS k(stream, seq, published_us, d)
ON CONFLICT DO NOTHING
RETURNING stream, stream_sequence, published_us";

/// The keys a [`claim`] recorded, from its rows.
pub fn claimed(rows: &[PgRow]) -> Result<HashSet<StreamKey>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok(StreamKey {
                stream: r.try_get(0)?,
                sequence: r.try_get(1)?,
                published_us: r.try_get(2)?,
            })
        })
        .collect()
}

/// The statement reading the recorded rows of `keys` (processed before), with their dead
/// items: read them with [`seen`].
pub fn recorded<'a>(keys: &[&'a StreamKey]) -> Option<Statement<'a>> {
    if keys.is_empty() {
        return None;
    }
    let (streams, seqs, published) = columns(keys.iter().copied());
    Some(
        Statement::new(
            "SELECT i.stream, i.stream_sequence, i.published_us, i.dead_items::text
             FROM inbox i JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS k(stream, seq, published_us)
               ON i.stream = k.stream AND i.stream_sequence = k.seq AND i.published_us = k.published_us",
        )
        .bind(streams)
        .bind(seqs)
        .bind(published),
    )
}

/// The keys processed before, with their recorded dead items, from the rows of [`recorded`].
pub fn seen(rows: &[PgRow]) -> Result<HashMap<StreamKey, Option<String>>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok((
                StreamKey {
                    stream: r.try_get(0)?,
                    sequence: r.try_get(1)?,
                    published_us: r.try_get(2)?,
                },
                r.try_get(3)?,
            ))
        })
        .collect()
}

/// The statement taking back claims of this transaction (events that will be retried instead).
pub fn release<'a>(keys: &[&'a StreamKey]) -> Option<Statement<'a>> {
    if keys.is_empty() {
        return None;
    }
    let (streams, seqs, published) = columns(keys.iter().copied());
    Some(
        Statement::new(
            "DELETE FROM inbox i USING unnest($1::text[], $2::int8[], $3::int8[]) AS k(stream, seq, published_us)
             WHERE i.stream = k.stream AND i.stream_sequence = k.seq AND i.published_us = k.published_us",
        )
        .bind(streams)
        .bind(seqs)
        .bind(published),
    )
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

/// [`prune`] in every tenant schema: the rows removed, per schema.
pub async fn prune_all(
    pool: &sqlx::PgPool,
    max_age: std::time::Duration,
) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let mut removed = Vec::new();
    for schema in with_inbox(pool).await? {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('search_path', $1, true)")
            .bind(crate::model::quote_ident(&schema))
            .execute(&mut *tx)
            .await?;
        let n = prune(&mut tx, max_age).await?;
        tx.commit().await?;
        removed.push((schema, n));
    }
    Ok(removed)
}

/// The tenant schemas that have an inbox. The others await adoption (the earlier service's,
/// see [`super::adopt`]) or have no tables yet: they are skipped, with one line for all of them.
/// Fenced schemas are skipped too: a tenant moved away, paused, or being copied here, whose rows
/// must not change ([`super::placement`]).
async fn with_inbox(pool: &sqlx::PgPool) -> Result<Vec<String>, sqlx::Error> {
    let fenced: Vec<String> = match sqlx::query_scalar("SELECT schema_name FROM wa_system.fences")
        .fetch_all(pool)
        .await
    {
        Err(e) if super::failure::sqlstate(&e).as_deref() == Some("42P01") => Vec::new(),
        other => other?,
    };
    let mut all = super::schema::tenant_schemas(pool).await?;
    all.retain(|s| !fenced.contains(s));
    let with: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_namespace n
         WHERE n.nspname = ANY($1)
           AND EXISTS (SELECT 1 FROM pg_class c
                       WHERE c.relnamespace = n.oid AND c.relname = 'inbox' AND c.relkind = 'r')
         ORDER BY 1",
    )
    .bind(&all)
    .fetch_all(pool)
    .await?;
    if with.len() < all.len() {
        tracing::info!(
            skipped = all.len() - with.len(),
            "inbox pruning skips tenant schemas without an inbox (awaiting adoption, or not created yet)"
        );
    }
    Ok(with)
}
