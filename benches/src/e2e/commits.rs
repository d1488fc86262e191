//! What the functions have committed, read from the workload tenants' `inbox` tables (one row
//! per stream message, written in the transaction of its effects): counts for throughput, new
//! rows with their publish time for latency.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use wa_shared::model::{quote_ident, TenantId};

use super::error::{Context, Error, Result};

/// The inbox tables of the workload's tenants.
#[derive(Debug, Clone)]
pub struct Inboxes {
    schemas: Vec<String>,
}

impl Inboxes {
    pub fn new(companies: &[String]) -> Result<Self> {
        let schemas = companies
            .iter()
            .map(|c| TenantId::parse(c).map(|t| t.schema_name()))
            .collect::<Result<_, _>>()
            .context("workload tenant")?;
        Ok(Inboxes { schemas })
    }

    /// How many of the tenant schemas exist yet (the functions create them on first use).
    async fn existing(&self, pool: &PgPool) -> Result<Vec<String>> {
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
        if existing.is_empty() {
            return Ok(0);
        }
        let sql = existing
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
        Ok(n as u64)
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A reader of newly committed rows, for the latency phase (all schemas must exist).
    pub fn reader(&self, stream: &str) -> NewCommits {
        let sql = self
            .schemas
            .iter()
            .map(|s| {
                format!(
                    "SELECT stream_sequence, published_us FROM {}.inbox \
                     WHERE stream = '{stream}' AND stream_sequence >= $1",
                    quote_ident(s)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        NewCommits { sql }
    }
}

/// One query over every tenant's inbox for rows at or after a sequence (an index range scan).
pub struct NewCommits {
    sql: String,
}

impl NewCommits {
    /// (stream sequence, publish time in µs) of the committed rows from `sequence` on.
    pub async fn since(&self, pool: &PgPool, sequence: u64) -> Result<Vec<(u64, i64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&self.sql)
            .bind(sequence as i64)
            .fetch_all(pool)
            .await
            .context("reading new inbox rows")?;
        Ok(rows.into_iter().map(|(s, p)| (s as u64, p)).collect())
    }
}
