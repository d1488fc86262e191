//! Processing attempts of messages whose processing asked for a retry, in the system schema.
//!
//! Deliveries are not attempts: a broker failover can deliver a message several times without
//! any of those deliveries reaching the function. Counting attempts here keeps a failover from
//! bringing a message closer to `retry_exhausted` (SPEC §1, §6).

use std::time::Duration;

use sqlx::{PgPool, Postgres};

use super::SYSTEM_SCHEMA;

/// A message as one consumer sees it: the consumer, the stream position and the time the
/// stream stored the message (so a recreated stream's reused sequences start afresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptKey {
    pub consumer: String,
    pub stream: String,
    pub sequence: i64,
    pub published_us: i64,
}

type Columns<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<i64>);

fn columns<'a>(keys: impl Iterator<Item = &'a AttemptKey>) -> Columns<'a> {
    let mut out: Columns<'a> = Default::default();
    for k in keys {
        out.0.push(&k.consumer);
        out.1.push(&k.stream);
        out.2.push(k.sequence);
        out.3.push(k.published_us);
    }
    out
}

/// What the ledger knows of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// Attempts recorded so far (0: none).
    pub attempts: u32,
    /// Time since the first recorded attempt (zero when none is recorded).
    pub since_first: Duration,
}

/// What is recorded for each of `keys`, in order.
pub async fn recorded(pool: &PgPool, keys: &[AttemptKey]) -> Result<Vec<Recorded>, sqlx::Error> {
    let (consumers, streams, seqs, published) = columns(keys.iter());
    let sql = format!(
        "SELECT COALESCE(a.attempts, 0),
                COALESCE(EXTRACT(EPOCH FROM now() - a.first_at)::float8, 0)
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY
              AS k(consumer, stream, seq, published_us, i)
         LEFT JOIN {SYSTEM_SCHEMA}.delivery_attempts a
           ON a.consumer = k.consumer AND a.stream = k.stream
          AND a.stream_sequence = k.seq AND a.published_us = k.published_us
         ORDER BY k.i"
    );
    let rows: Vec<(i32, f64)> = sqlx::query_as::<Postgres, (i32, f64)>(&sql)
        .bind(&consumers)
        .bind(&streams)
        .bind(&seqs)
        .bind(&published)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(n, secs)| Recorded {
            attempts: n.max(0) as u32,
            since_first: Duration::from_secs_f64(secs.max(0.0)),
        })
        .collect())
}

/// Records that attempt `attempt` of each message was made (a count never goes down, so two
/// processes recording the same attempt count it once).
pub async fn record(pool: &PgPool, attempts: &[(AttemptKey, u32)]) -> Result<(), sqlx::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let (consumers, streams, seqs, published) = columns(attempts.iter().map(|(k, _)| k));
    let counts: Vec<i32> = attempts
        .iter()
        .map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
        .collect();
    let sql = format!(
        "INSERT INTO {SYSTEM_SCHEMA}.delivery_attempts
             (consumer, stream, stream_sequence, published_us, attempts)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int4[])
         ON CONFLICT (consumer, stream, stream_sequence, published_us) DO UPDATE
           SET attempts = GREATEST(delivery_attempts.attempts, EXCLUDED.attempts),
               updated_at = now()"
    );
    sqlx::query::<Postgres>(&sql)
        .bind(&consumers)
        .bind(&streams)
        .bind(&seqs)
        .bind(&published)
        .bind(&counts)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets attempts not updated for `max_age` (the messages are long settled or expired).
/// Without a system schema nothing was ever retried, and there is nothing to forget.
pub async fn prune(pool: &PgPool, max_age: Duration) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "DELETE FROM {SYSTEM_SCHEMA}.delivery_attempts
         WHERE updated_at < now() - make_interval(secs => $1)"
    );
    match sqlx::query::<Postgres>(&sql)
        .bind(max_age.as_secs_f64())
        .execute(pool)
        .await
    {
        Ok(done) => Ok(done.rows_affected()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(e),
    }
}

const UNDEFINED_TABLE: &str = "42P01";
