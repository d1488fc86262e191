//! Many tenants at once (SPEC §3: one batch routinely spans many tenants, and a burst of
//! brand-new tenants must not stall processing): fresh tenant ids by the hundred, publishing
//! their events pipelined, and reading back every tenant's rows with a few queries instead of
//! a few per tenant.

use std::collections::BTreeMap;

use async_nats::jetstream::Context;
use sqlx::PgPool;
use wa_shared::model::{EventKind, Subject};

use crate::{schema_ident, schema_name, unique_tenant};

/// Tenants read back per query (one `UNION ALL` arm each).
const PER_QUERY: usize = 250;

/// Stream acknowledgements awaited together while publishing.
const IN_FLIGHT: usize = 500;

/// `n` fresh tenant ids `<prefix><random>`.
pub fn fresh(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| unique_tenant(prefix)).collect()
}

/// One event to publish: its subject and its body.
#[derive(Debug, Clone)]
pub struct Publish {
    pub subject: String,
    pub body: Vec<u8>,
}

impl Publish {
    /// An event of `kind` for `tenant`.
    pub fn new(kind: EventKind, tenant: &str, body: impl Into<Vec<u8>>) -> Self {
        Publish {
            subject: Subject::format(kind, tenant),
            body: body.into(),
        }
    }

    /// An event of `kind` for `tenant` with a JSON body.
    pub fn json(kind: EventKind, tenant: &str, body: &serde_json::Value) -> Self {
        Self::new(kind, tenant, serde_json::to_vec(body).expect("json"))
    }
}

/// Publishes every event like the producer (no `Nats-Msg-Id`), in order and pipelined, and
/// returns the stream sequence of each once every one is stored.
pub async fn publish_all(js: &Context, events: &[Publish]) -> Vec<u64> {
    let mut sequences = Vec::with_capacity(events.len());
    for chunk in events.chunks(IN_FLIGHT) {
        let mut acks = Vec::with_capacity(chunk.len());
        for e in chunk {
            acks.push(
                js.publish(e.subject.clone(), e.body.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            sequences.push(ack.await.expect("stored by a stream").sequence);
        }
    }
    sequences
}

/// What one tenant's schema holds: row counts of its tables, its inbox (one row per applied
/// stream message), and rows whose `company_id` is not the tenant's (which must never exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub chats: i64,
    pub messages: i64,
    pub contacts: i64,
    pub inbox: i64,
    pub foreign: i64,
}

/// The tenants of `tenants` whose schema has its tables (the rest have no schema yet).
async fn with_tables(pool: &PgPool, tenants: &[String]) -> Vec<String> {
    let schemas: Vec<String> = tenants.iter().map(|t| schema_name(t)).collect();
    let ready: Vec<bool> = sqlx::query_scalar(
        "SELECT to_regclass(format('%I.inbox', s)) IS NOT NULL
           AND to_regclass(format('%I.contacts', s)) IS NOT NULL
         FROM unnest($1::text[]) WITH ORDINALITY AS u(s, i) ORDER BY i",
    )
    .bind(&schemas)
    .fetch_all(pool)
    .await
    .expect("look up the schemas");
    tenants
        .iter()
        .zip(ready)
        .filter(|(_, r)| *r)
        .map(|(t, _)| t.clone())
        .collect()
}

/// Every tenant's [`Counts`], for the tenants whose schema exists (absent: no schema yet).
pub async fn counts(pool: &PgPool, tenants: &[String]) -> BTreeMap<String, Counts> {
    let ready = with_tables(pool, tenants).await;
    let mut out = BTreeMap::new();
    for chunk in ready.chunks(PER_QUERY) {
        let arms: Vec<String> = chunk
            .iter()
            .map(|t| {
                // Tenant ids are `[A-Za-z0-9_-]` (SPEC §3): safe inside a literal.
                let s = schema_ident(t);
                format!(
                    "SELECT '{t}'::text AS tenant,
                        (SELECT count(*) FROM {s}.chats) AS chats,
                        (SELECT count(*) FROM {s}.messages) AS messages,
                        (SELECT count(*) FROM {s}.contacts) AS contacts,
                        (SELECT count(*) FROM {s}.inbox) AS inbox,
                        (SELECT count(*) FROM {s}.chats WHERE company_id IS DISTINCT FROM '{t}')
                          + (SELECT count(*) FROM {s}.messages WHERE company_id IS DISTINCT FROM '{t}')
                          + (SELECT count(*) FROM {s}.contacts WHERE company_id IS DISTINCT FROM '{t}')
                          AS foreign_rows"
                )
            })
            .collect();
        let sql = arms.join("\nUNION ALL\n");
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(&sql)
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("counting the rows of {} tenants: {e}", chunk.len()));
        for (tenant, chats, messages, contacts, inbox, foreign) in rows {
            out.insert(
                tenant,
                Counts {
                    chats,
                    messages,
                    contacts,
                    inbox,
                    foreign,
                },
            );
        }
    }
    out
}

/// Inbox rows (applied stream messages) summed over the tenants.
pub async fn applied(pool: &PgPool, tenants: &[String]) -> i64 {
    counts(pool, tenants).await.values().map(|c| c.inbox).sum()
}

/// How many schemas named like each tenant's exist, and how many `wa_system.tenants` rows own
/// each (both must be one per tenant, however many processes met it at once).
pub async fn schema_records(pool: &PgPool, tenants: &[String]) -> BTreeMap<String, (i64, i64)> {
    let schemas: Vec<String> = tenants.iter().map(|t| schema_name(t)).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT t,
                (SELECT count(*) FROM pg_namespace WHERE nspname = s),
                (SELECT count(*) FROM wa_system.tenants WHERE schema_name = s AND tenant_id = t)
         FROM unnest($1::text[], $2::text[]) AS u(t, s)",
    )
    .bind(tenants)
    .bind(&schemas)
    .fetch_all(pool)
    .await
    .expect("look up the schemas and their owners");
    rows.into_iter()
        .map(|(t, n, owners)| (t, (n, owners)))
        .collect()
}

/// The total of a counter over all its label sets in a Prometheus text exposition (0 when the
/// counter was never incremented and so is absent).
pub fn counter_total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0
}

#[cfg(test)]
mod tests {
    use super::counter_total;

    #[test]
    fn counters_are_summed_over_their_labels_and_absent_ones_are_zero() {
        let text = "# HELP x_total help\n# TYPE x_total counter\n\
                    x_total{consumer_type=\"realtime\"} 2\nx_total{consumer_type=\"other\"} 3\n\
                    x_total_more 7\ny_sum 1.5\n";
        assert_eq!(counter_total(text, "x_total"), 5.0);
        assert_eq!(counter_total(text, "y_sum"), 1.5);
        assert_eq!(counter_total(text, "absent_total"), 0.0);
    }
}
