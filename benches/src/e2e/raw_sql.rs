//! The raw Postgres limits: the same realtime and history writes as the functions make, as
//! plain SQL batches into tenant schemas of the same database (created by the product's
//! migrations, so the tables and indexes are the same), with the planner steered to index
//! lookups.
//!
//! The writes run on `connections` lanes at once, each lane a connection and a schema of its
//! own that gets the events of every n-th tenant (the functions, too, write tenants
//! concurrently). Every batch is turned into column arrays before the clock starts; the time
//! is the wall time of the lanes' transactions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use wa_shared::model::{EventKind, TenantId};
use wa_shared::store::schema::{migrate, Schemas};

use super::error::{Context, Result};
use super::raw_batch::{HistoryBatch, RealtimeBatch, Stamped};
use crate::report::per_sec;
use crate::Event;

/// What a raw baseline wrote, and the time its transactions took.
#[derive(Debug, Clone, Default)]
pub struct SqlLimit {
    pub events: u64,
    /// Row writes: one per realtime event, one per history item.
    pub rows: u64,
    pub transactions: u64,
    pub connections: usize,
    pub elapsed: Duration,
}

impl SqlLimit {
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.elapsed)
    }

    pub fn rows_per_sec(&self) -> f64 {
        per_sec(self.rows, self.elapsed)
    }

    pub fn to_json(&self, schema: &str) -> serde_json::Value {
        json!({
            "schema": schema,
            "connections": self.connections,
            "events": self.events,
            "rows": self.rows,
            "transactions": self.transactions,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_sec(),
            "rows_per_s": self.rows_per_sec(),
        })
    }
}

/// Tenants (and so schemas) of the two baselines; lanes after the first add `_<n>`.
pub const REALTIME_TENANT: &str = "RAW_REALTIME";
pub const HISTORY_TENANT: &str = "RAW_HISTORY";

/// What the baseline writes per transaction.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Transactions of this many realtime events.
    Realtime { batch: usize },
    /// Transactions of this many `history.messages` batches, each one bulk upsert.
    History { group: usize },
}

/// One transaction's statements, prepared.
enum Tx {
    Realtime(Box<RealtimeBatch>, u64),
    History(Vec<HistoryBatch>),
}

impl Tx {
    fn events(&self) -> u64 {
        match self {
            Tx::Realtime(_, n) => *n,
            Tx::History(b) => b.len() as u64,
        }
    }

    fn rows(&self) -> u64 {
        match self {
            Tx::Realtime(_, n) => *n,
            Tx::History(b) => b.iter().map(|b| b.items).sum(),
        }
    }

    async fn run(&self, conn: &mut PgConnection) -> Result<()> {
        let mut tx = conn.begin().await.context("raw begin")?;
        match self {
            Tx::Realtime(batch, _) => batch.write(&mut tx).await?,
            Tx::History(batches) => {
                for batch in batches {
                    batch.write(&mut tx).await?;
                }
            }
        }
        tx.commit().await.context("raw commit")
    }
}

/// A connection with its own schema and the transactions it will run.
struct Lane {
    conn: PgConnection,
    warmup: Vec<Tx>,
    timed: Vec<Tx>,
}

impl Lane {
    async fn new(
        pool: &PgPool,
        url: &str,
        tenant: &str,
        shape: Shape,
        warmup: &[&Event],
        timed: &[&Event],
    ) -> Result<Self> {
        let tenant = TenantId::parse(tenant).context("raw tenant")?;
        migrate(pool, &tenant.schema_name())
            .await
            .context(format_args!("creating schema {}", tenant.schema_name()))?;
        let mut conn = PgConnection::connect(url)
            .await
            .context("connecting for the raw SQL baseline")?;
        // Key lookups by index, as a DBA would steer them (and as the product does): young
        // tables have no statistics yet, on which the planner picks sequential scans.
        sqlx::raw_sql(&format!(
            "SET search_path TO {}; SET enable_seqscan = off; SET enable_hashjoin = off; \
             SET enable_mergejoin = off",
            tenant.schema_ident()
        ))
        .execute(&mut conn)
        .await
        .context("setting up the raw SQL connection")?;
        let mut sequence = 0;
        let warmup = prepare(shape, warmup, &mut sequence)?;
        let timed = prepare(shape, timed, &mut sequence)?;
        let schemas = Schemas::new(pool.clone(), true);
        for tx in warmup.iter().chain(&timed) {
            let dates: Vec<_> = match tx {
                Tx::Realtime(b, _) => b.dates().collect(),
                Tx::History(b) => b.iter().flat_map(HistoryBatch::dates).collect(),
            };
            schemas
                .ensure_partitions(&tenant, dates)
                .await
                .context("creating message partitions")?;
        }
        Ok(Lane {
            conn,
            warmup,
            timed,
        })
    }
}

/// The transactions of `events`, with stream sequences counted on from `sequence`.
fn prepare<'e>(shape: Shape, events: &[&'e Event], sequence: &mut i64) -> Result<Vec<Tx>> {
    let published = Utc::now();
    let mut stamp = |chunk: &[&'e Event]| -> Vec<Stamped<'e>> {
        chunk
            .iter()
            .map(|event| {
                *sequence += 1;
                Stamped {
                    event,
                    sequence: *sequence,
                    published,
                }
            })
            .collect()
    };
    match shape {
        Shape::Realtime { batch } => events
            .chunks(batch.max(1))
            .map(|chunk| {
                Ok(Tx::Realtime(
                    Box::new(RealtimeBatch::new(&stamp(chunk))?),
                    chunk.len() as u64,
                ))
            })
            .collect(),
        Shape::History { group } => {
            let messages: Vec<&Event> = events
                .iter()
                .copied()
                .filter(|e| e.kind == EventKind::HistoryMessages)
                .collect();
            messages
                .chunks(group.max(1))
                .map(|chunk| {
                    let batches = stamp(chunk)
                        .iter()
                        .map(HistoryBatch::new)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Tx::History(batches))
                })
                .collect()
        }
    }
}

/// Writes `warmup` (untimed), then times `timed`, on `connections` lanes at once.
pub async fn measure(
    pool: &PgPool,
    url: &str,
    tenant: &str,
    shape: Shape,
    connections: usize,
    warmup: &[Event],
    timed: &[Event],
) -> Result<SqlLimit> {
    let connections = connections.max(1);
    let split_warmup = split(warmup, connections);
    let split_timed = split(timed, connections);
    let mut lanes = Vec::with_capacity(connections);
    for (i, (w, t)) in split_warmup.iter().zip(&split_timed).enumerate() {
        let name = if i == 0 {
            tenant.to_owned()
        } else {
            format!("{tenant}_{i}")
        };
        lanes.push(Lane::new(pool, url, &name, shape, w, t).await?);
    }
    for lane in &mut lanes {
        for tx in &lane.warmup {
            tx.run(&mut lane.conn).await?;
        }
    }
    super::stack::checkpoint(pool).await;
    let start = Instant::now();
    let results = futures::future::join_all(lanes.iter_mut().map(|lane| async move {
        for tx in &lane.timed {
            tx.run(&mut lane.conn).await?;
        }
        Ok::<_, super::error::Error>(())
    }))
    .await;
    let elapsed = start.elapsed();
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let timed_txs = || lanes.iter().flat_map(|l| &l.timed);
    Ok(SqlLimit {
        events: timed_txs().map(Tx::events).sum(),
        rows: timed_txs().map(Tx::rows).sum(),
        transactions: timed_txs().count() as u64,
        connections,
        elapsed,
    })
}

/// `events` dealt to `n` lanes by tenant (the subject's last token), in order of appearance.
fn split(events: &[Event], n: usize) -> Vec<Vec<&Event>> {
    let mut lanes = vec![Vec::new(); n];
    let mut tenants: HashMap<&str, usize> = HashMap::new();
    for e in events {
        let tenant = e.subject.rsplit('.').next().unwrap_or_default();
        let next = tenants.len();
        let lane = *tenants.entry(tenant).or_insert(next) % n;
        lanes[lane].push(e);
    }
    lanes
}

/// The schema name of a baseline tenant (its first lane), for the report.
pub fn schema_of(tenant: &str) -> String {
    TenantId::parse(tenant).map_or_else(|_| tenant.to_owned(), |t| t.schema_name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mix, Workload, WorkloadSettings};

    #[test]
    fn lanes_get_whole_tenants() {
        let events: Vec<Event> = Workload::new(&WorkloadSettings {
            tenants: 4,
            agents_per_tenant: 2,
            company_prefix: "LANE".into(),
            mix: Mix::Realtime,
            seed: 1,
        })
        .unwrap()
        .take(400)
        .collect();
        let tenant = |e: &Event| e.subject.rsplit('.').next().unwrap().to_owned();
        let lanes = split(&events, 2);
        assert_eq!(lanes.iter().map(Vec::len).sum::<usize>(), 400);
        let mut seen = HashMap::new();
        for (i, lane) in lanes.iter().enumerate() {
            for e in lane {
                assert_eq!(*seen.entry(tenant(e)).or_insert(i), i);
            }
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(split(&events, 1)[0].len(), 400);
    }
}
