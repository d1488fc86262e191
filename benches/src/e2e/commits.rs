//! What the functions have committed, read from the workload tenants' `inbox` tables (one row
//! per stream message, written in the transaction of its effects): counts for throughput, new
//! rows with their publish time for latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use wa_shared::model::{quote_ident, TenantId};

use super::error::{Context, Error, Result};
use crate::Event;

/// Tenant schemas one counting query reads at most: a query over thousands of schemas would be
/// one expression thousands of levels deep (the server's stack limit) and slow to plan.
const SCHEMAS_PER_QUERY: usize = 200;

/// The inbox tables of the workload's tenants.
#[derive(Debug, Clone)]
pub struct Inboxes {
    schemas: Vec<String>,
    /// Company id → index into `schemas`.
    index: HashMap<String, usize>,
}

impl Inboxes {
    pub fn new(companies: &[String]) -> Result<Self> {
        let schemas = companies
            .iter()
            .map(|c| TenantId::parse(c).map(|t| t.schema_name()))
            .collect::<Result<_, _>>()
            .context("workload tenant")?;
        let index = companies
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        Ok(Inboxes { schemas, index })
    }

    pub fn len(&self) -> usize {
        self.schemas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }

    /// The index of an event's tenant (the subject's last token), if it is one of these.
    pub fn tenant_of(&self, event: &Event) -> Option<usize> {
        let company = event.subject.rsplit('.').next()?;
        self.index.get(company).copied()
    }

    /// The tenant schemas that exist yet (the functions create them on first use).
    pub async fn existing(&self, pool: &PgPool) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1",
        )
        .bind(&self.schemas)
        .fetch_all(pool)
        .await
        .context("listing tenant schemas")
    }

    /// Messages of `stream` committed in every tenant schema that exists.
    pub async fn committed(&self, pool: &PgPool, stream: &str) -> Result<u64> {
        let existing = self.existing(pool).await?;
        let mut total = 0;
        for chunk in existing.chunks(SCHEMAS_PER_QUERY) {
            let sql = chunk
                .iter()
                .map(|s| {
                    format!(
                        "(SELECT count(*) FROM {}.inbox WHERE stream = $1)",
                        quote_ident(s)
                    )
                })
                .collect::<Vec<_>>()
                .join(" + ");
            let n: i64 = sqlx::query_scalar(&format!("SELECT {sql}"))
                .bind(stream)
                .fetch_one(pool)
                .await
                .context("counting inbox rows")?;
            total += n as u64;
        }
        Ok(total)
    }

    /// Waits until `count` messages of `stream` are committed and every tenant schema exists.
    pub async fn wait_for(
        &self,
        pool: &PgPool,
        stream: &str,
        count: u64,
        within: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        // Counting thousands of inboxes takes a while: look less often when there are many.
        let pause = Duration::from_millis(50).max(Duration::from_micros(250) * self.len() as u32);
        loop {
            let done = self.committed(pool, stream).await?;
            let schemas = self.existing(pool).await?.len();
            if done >= count && schemas == self.schemas.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{done} of {count} {stream} messages committed, {schemas} of {} tenant \
                     schemas created after {within:?}",
                    self.schemas.len()
                )));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// A reader of newly committed rows for the latency phase (all schemas must exist), over
    /// at most `sample` of the tenants, spread evenly over them.
    pub fn reader(&self, stream: &str, sample: usize) -> NewCommits {
        let n = self.schemas.len();
        let k = sample.clamp(1, n.max(1));
        let mut sampled = vec![false; n];
        for j in 0..k.min(n) {
            sampled[j * n / k] = true;
        }
        let sql = (0..n)
            .filter(|&i| sampled[i])
            .map(|i| {
                format!(
                    "SELECT stream_sequence, published_us FROM {}.inbox \
                     WHERE stream = $1 AND stream_sequence >= $2",
                    quote_ident(&self.schemas[i])
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        NewCommits {
            inboxes: self.clone(),
            stream: stream.to_owned(),
            sql,
            sampled,
            tracked: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Reads the rows committed since a sequence from the inboxes of a fixed sample of the tenants,
/// with one prepared statement: the poller's cost stays that of a few tenants however many
/// there are (every tenant's events are published; the sampled ones' are timed).
#[derive(Clone)]
pub struct NewCommits {
    inboxes: Inboxes,
    stream: String,
    sql: String,
    /// By tenant index: is it polled?
    sampled: Vec<bool>,
    /// Events of the sampled tenants taken by the publisher so far.
    tracked: Arc<AtomicU64>,
}

impl NewCommits {
    /// `events`, counting those of the sampled tenants as the publisher takes them.
    pub fn track<'a, I>(&'a self, events: &'a mut I) -> impl Iterator<Item = Event> + 'a
    where
        I: Iterator<Item = Event>,
    {
        events.inspect(move |e| {
            if self.inboxes.tenant_of(e).is_some_and(|i| self.sampled[i]) {
                self.tracked.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// Events of the sampled tenants published (taken by the publisher) so far.
    pub fn tracked(&self) -> u64 {
        self.tracked.load(Ordering::Relaxed)
    }

    /// How many tenants are polled.
    pub fn tenants(&self) -> usize {
        self.sampled.iter().filter(|&&s| s).count()
    }

    /// (stream sequence, publish time in µs) of the sampled tenants' rows committed from
    /// `sequence` on.
    pub async fn since(&self, pool: &PgPool, sequence: u64) -> Result<Vec<(u64, i64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&self.sql)
            .bind(&self.stream)
            .bind(sequence as i64)
            .fetch_all(pool)
            .await
            .context("reading new inbox rows")?;
        Ok(rows.into_iter().map(|(s, p)| (s as u64, p)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_sample_is_spread_over_the_tenants() {
        let companies: Vec<String> = (1..=256).map(|i| format!("S{i:03}")).collect();
        let inboxes = Inboxes::new(&companies).unwrap();
        let reader = inboxes.reader("st", 16);
        assert_eq!(reader.tenants(), 16);
        assert!(reader.sampled[0] && reader.sampled[16] && reader.sampled[240]);
        assert_eq!(reader.sql.matches("UNION ALL").count(), 15);
        assert_eq!(inboxes.reader("st", 16).tenants(), 16);
        let few = Inboxes::new(&companies[..4]).unwrap();
        assert_eq!(few.reader("st", 16).tenants(), 4);
        let events = [
            Event {
                kind: wa_shared::model::EventKind::ChatUpdate,
                subject: "v1.chats.update.S001".into(),
                body: Default::default(),
            },
            Event {
                kind: wa_shared::model::EventKind::ChatUpdate,
                subject: "v1.chats.update.S002".into(),
                body: Default::default(),
            },
        ];
        let mut it = events.into_iter();
        assert_eq!(reader.track(&mut it).count(), 2);
        assert_eq!(reader.tracked(), 1);
    }
}
