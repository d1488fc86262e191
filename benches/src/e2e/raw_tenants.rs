//! The raw SQL rate of the tenant sweep's realtime writes: the same events as the function
//! drains, written by hand into the same number of tenant schemas, four ways, of which the
//! report takes the fastest (SPEC §13: a baseline is honest only when it is the best plain SQL
//! can do):
//!
//! * [`Variant::TxPerTenant`]: a transaction per tenant slice of a batch (`BEGIN` with the
//!   slice's `search_path`, the bound `UNNEST` statements of [`raw_statements`], `COMMIT`),
//!   as the functions write;
//! * [`Variant::TxPerBatch`]: a transaction per batch, with one simple-query round trip per
//!   schema carrying that schema's statements, values rendered as SQL literals;
//! * [`Variant::OneRoundTrip`]: a transaction per batch sent as ONE simple query: `BEGIN`,
//!   every schema's statements, `COMMIT`;
//! * [`Variant::OneRoundTripDollar`]: the same with the text values dollar-quoted instead of in
//!   `E''` strings (no escape processing in the server's lexer: long JSON parses faster).
//!
//! A transaction of the last three covers at most `schemas_per_tx` of the batch's schemas (a
//! batch spanning more is several transactions): a transaction holds a lock on every relation
//! it touches (some 30 per schema) until it ends, and hundreds of schemas in one would fill the
//! server's shared lock table ("out of shared memory", for every session on the server).
//!
//! A batch is `batch` consecutive events of a connection's share of the tenants (the function
//! fetches batches of `BATCH_SIZE` from the stream); its slices are its tenants' events, each
//! merged into one statement per table by [`RealtimeBatch`]. The connections (`--raw-connections`,
//! at most one per tenant) write at once, each with every n-th tenant.
//!
//! Every variant starts from the same state: the schemas are created by the product's
//! migrations in a template database, the warm-up events written into it, and each variant runs
//! on a fresh copy of it (`CREATE DATABASE … TEMPLATE`). Statements are built (and rendered)
//! before the clock starts; the time is the wall time of the connections' transactions.
//!
//! [`raw_statements`]: super::raw_statements

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use wa_shared::model::TenantId;
use wa_shared::store::schema::{migrate, Schemas};

use super::error::{Context, Error, Result};
use super::raw_batch::{Quoting, RealtimeBatch, Stamped};
use super::stack;
use crate::report::per_sec;
use crate::Event;

/// The ways of writing a batch that are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    TxPerTenant,
    TxPerBatch,
    OneRoundTrip,
    OneRoundTripDollar,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::TxPerTenant,
        Variant::TxPerBatch,
        Variant::OneRoundTrip,
        Variant::OneRoundTripDollar,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::TxPerTenant => "tx per tenant",
            Variant::TxPerBatch => "tx per batch",
            Variant::OneRoundTrip => "one round trip",
            Variant::OneRoundTripDollar => "one round trip $",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Variant::TxPerTenant => {
                "a transaction per tenant slice of a batch, bound UNNEST statements"
            }
            Variant::TxPerBatch => {
                "a transaction per batch (or per so many of its schemas), one simple-query round \
                 trip per schema (literals)"
            }
            Variant::OneRoundTrip => {
                "a transaction per batch (or per so many of its schemas) as one multi-statement \
                 simple query (literals)"
            }
            Variant::OneRoundTripDollar => {
                "the same as one round trip with the text values dollar-quoted instead of E''"
            }
        }
    }
}

/// What one variant wrote and the time it took.
#[derive(Debug, Clone)]
pub struct VariantRate {
    pub variant: Variant,
    pub events: u64,
    pub transactions: u64,
    pub round_trips: u64,
    pub connections: usize,
    pub batch: usize,
    /// Schemas per transaction at most (the literal variants).
    pub schemas_per_tx: usize,
    pub elapsed: Duration,
}

impl VariantRate {
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.elapsed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "variant": self.variant.name(),
            "description": self.variant.description(),
            "events": self.events,
            "transactions": self.transactions,
            "round_trips": self.round_trips,
            "connections": self.connections,
            "batch": self.batch,
            "schemas_per_tx": self.schemas_per_tx,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_sec(),
        })
    }
}

/// The fastest of the variants measured.
pub fn fastest(rates: &[VariantRate]) -> Option<&VariantRate> {
    rates
        .iter()
        .max_by(|a, b| a.events_per_sec().total_cmp(&b.events_per_sec()))
}

/// One tenant's events of a batch.
struct Slice {
    /// `BEGIN` with the tenant's `search_path`, one simple query ([`Variant::TxPerTenant`]).
    begin: String,
    /// `SET LOCAL search_path TO <schema>` (the literal variants).
    set_path: String,
    batch: RealtimeBatch,
}

struct Batch {
    slices: Vec<Slice>,
    events: u64,
}

/// One connection's share of the tenants: their warm-up and timed batches.
struct Lane {
    warmup: Vec<Batch>,
    timed: Vec<Batch>,
}

/// Where the baseline writes and how much at once.
pub struct Target<'a> {
    /// Admin connection: the template and the copies are created through it.
    pub admin_url: &'a str,
    /// Name of the template database; each variant's copy is this plus `_copy`.
    pub database: &'a str,
    pub connections: usize,
    pub batch: usize,
    /// Schemas one transaction of the literal variants covers at most.
    pub schemas_per_tx: usize,
    /// Checkpoint before each variant's timed writes.
    pub checkpoint: bool,
}

/// Writes `warmup` (untimed, into the template) and then `timed` once per variant, each on a
/// fresh copy of the template; returns each variant's rate. `companies` are the tenants
/// (events for others are not written).
pub async fn measure(
    target: &Target<'_>,
    companies: &[String],
    warmup: &[Event],
    timed: &[Event],
) -> Result<Vec<VariantRate>> {
    let tenants: Vec<TenantId> = companies
        .iter()
        .map(|c| TenantId::parse(c))
        .collect::<Result<_, _>>()
        .context("raw tenant")?;
    let connections = target.connections.clamp(1, tenants.len().max(1));
    let lanes = prepare(&tenants, warmup, timed, connections, target.batch)?;

    // The template: every schema migrated, partitions made, the warm-up written.
    let template = stack::fresh_database(target.admin_url, target.database).await?;
    futures::stream::iter(tenants.iter())
        .map(|t| {
            let pool = template.pool.clone();
            async move {
                migrate(&pool, &t.schema_name())
                    .await
                    .context(format_args!("creating schema {}", t.schema_name()))
            }
        })
        .buffer_unordered(2)
        .try_collect::<Vec<()>>()
        .await?;
    let schemas = Schemas::new(template.pool.clone(), true);
    let mut dates: HashMap<String, BTreeSet<NaiveDate>> = HashMap::new();
    for lane in &lanes {
        for batch in lane.warmup.iter().chain(&lane.timed) {
            for slice in &batch.slices {
                dates
                    .entry(slice.set_path.clone())
                    .or_default()
                    .extend(slice.batch.dates());
            }
        }
    }
    let by_path: HashMap<String, &TenantId> = tenants.iter().map(|t| (set_path(t), t)).collect();
    for (path, days) in dates {
        let tenant = by_path
            .get(&path)
            .context("a raw slice of an unknown tenant")?;
        schemas
            .ensure_partitions(tenant, days)
            .await
            .context("creating message partitions")?;
    }
    drop(schemas);
    let mut conns = connect(&template.url, lanes.len()).await?;
    for (lane, conn) in lanes.iter().zip(&mut conns) {
        for unit in units(&lane.warmup, Variant::TxPerTenant, 1) {
            unit.run(conn).await?;
        }
    }
    for conn in conns {
        let _ = conn.close().await;
    }
    template.pool.close().await;
    super::done(format!(
        "raw SQL: {} schemas made and warmed up in the template",
        tenants.len()
    ));

    let copy_name = format!("{}_copy", target.database);
    let per_tx = target.schemas_per_tx.max(1);
    let mut rates = Vec::new();
    let mut reference: Option<(Variant, Vec<i64>)> = None;
    for variant in Variant::ALL {
        let copy = stack::copy_database(target.admin_url, target.database, &copy_name).await?;
        // Every transaction's text is made before the clock starts.
        let work: Vec<Vec<Unit<'_>>> = lanes
            .iter()
            .map(|lane| units(&lane.timed, variant, per_tx))
            .collect();
        let mut conns = connect(&copy.url, lanes.len()).await?;
        if target.checkpoint {
            stack::checkpoint(&copy.pool).await;
        }
        let start = Instant::now();
        let results = futures::future::join_all(work.iter().zip(&mut conns).map(
            |(units, conn)| async move {
                for unit in units {
                    unit.run(conn).await?;
                }
                Ok::<_, Error>(())
            },
        ))
        .await;
        let elapsed = start.elapsed();
        results.into_iter().collect::<Result<Vec<()>>>()?;
        for conn in conns {
            let _ = conn.close().await;
        }
        // Every variant must write the same rows (else its rate means nothing).
        let print = fingerprint(&copy.pool, &tenants).await?;
        match &reference {
            None => reference = Some((variant, print)),
            Some((first, expected)) if *expected != print => {
                return Err(Error::new(format!(
                    "raw SQL: {} wrote other rows than {} ({print:?} against {expected:?})",
                    variant.name(),
                    first.name()
                )));
            }
            Some(_) => {}
        }
        copy.pool.close().await;
        stack::drop_database(target.admin_url, &copy_name).await?;
        let all = || work.iter().flatten();
        let rate = VariantRate {
            variant,
            events: lanes.iter().flat_map(|l| &l.timed).map(|b| b.events).sum(),
            transactions: all().count() as u64,
            round_trips: all().map(Unit::round_trips).sum(),
            connections: lanes.len(),
            batch: target.batch,
            schemas_per_tx: per_tx,
            elapsed,
        };
        super::done(format!(
            "raw SQL, {}: {} events/s",
            variant.name(),
            super::n(rate.events_per_sec())
        ));
        rates.push(rate);
    }
    stack::drop_database(target.admin_url, target.database).await?;
    Ok(rates)
}

/// What each table holds, over all the schemas: per table a row count and a sum of hashes of
/// the columns the writes set (not the clock's or generated ones), so that two variants that
/// wrote the same rows have the same fingerprint.
async fn fingerprint(pool: &sqlx::PgPool, tenants: &[TenantId]) -> Result<Vec<i64>> {
    const TABLES: [(&str, &str); 5] = [
        (
            "messages",
            "message_id || '|' || message_date || '|' || coalesce(status, '') || '|' || \
             coalesce(message_obj::text, '') || '|' || coalesce(edited_message_obj::text, '') || \
             '|' || is_deleted || '|' || coalesce(last_metadata::text, '')",
        ),
        (
            "chats",
            "chat_id || '|' || coalesce(unread_count, -1) || '|' || \
             coalesce(last_message::text, '') || '|' || coalesce(conversation_timestamp, -1)",
        ),
        (
            "contacts",
            "agent_id || '|' || phone_number || '|' || coalesce(push_name, '')",
        ),
        ("agents", "agent_id || '|' || coalesce(status, '')"),
        (
            "inbox",
            "stream || '|' || stream_sequence || '|' || published_us",
        ),
    ];
    let mut print = vec![0_i64; TABLES.len() * 2];
    for chunk in tenants.chunks(40) {
        let sql = chunk
            .iter()
            .flat_map(|t| {
                TABLES.iter().enumerate().map(move |(i, (table, key))| {
                    format!(
                        "SELECT {i}, count(*), coalesce(sum(hashtext({key})), 0)::int8 \
                         FROM {}.{table}",
                        t.schema_ident()
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let rows: Vec<(i32, i64, i64)> = sqlx::query_as(&sql)
            .persistent(false)
            .fetch_all(pool)
            .await
            .context("fingerprinting the raw SQL's rows")?;
        for (i, count, hash) in rows {
            let i = i as usize * 2;
            print[i] += count;
            print[i + 1] = print[i + 1].wrapping_add(hash);
        }
    }
    Ok(print)
}

/// Connections with the planner steered to index lookups, as the functions do (young tables
/// have no statistics, on which the planner picks sequential scans).
async fn connect(url: &str, n: usize) -> Result<Vec<PgConnection>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = PgConnection::connect(url)
            .await
            .context("connecting for the raw SQL baseline")?;
        sqlx::raw_sql(
            "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off",
        )
        .execute(&mut conn)
        .await
        .context("setting up the raw SQL connection")?;
        conns.push(conn);
    }
    Ok(conns)
}

/// One transaction of a variant, ready to send.
enum Unit<'a> {
    /// A tenant slice: `BEGIN` with its `search_path`, its bound statements, `COMMIT`.
    Slice(&'a Slice),
    /// `BEGIN`, one simple query per schema (the texts), `COMMIT`.
    PerSchema(Vec<String>),
    /// `BEGIN; …; COMMIT;` as one simple query.
    OneTrip(String),
}

impl Unit<'_> {
    async fn run(&self, conn: &mut PgConnection) -> Result<()> {
        match self {
            Unit::Slice(slice) => {
                let mut tx = conn
                    .begin_with(slice.begin.clone())
                    .await
                    .context("raw begin")?;
                slice.batch.write(&mut tx).await?;
                tx.commit().await.context("raw commit")?;
            }
            Unit::PerSchema(parts) => {
                let mut tx = conn.begin().await.context("raw begin")?;
                for part in parts {
                    sqlx::raw_sql(part)
                        .execute(&mut *tx)
                        .await
                        .context("raw statements of a schema")?;
                }
                tx.commit().await.context("raw commit")?;
            }
            Unit::OneTrip(sql) => {
                sqlx::raw_sql(sql)
                    .execute(&mut *conn)
                    .await
                    .context("raw transaction in one round trip")?;
            }
        }
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        match self {
            Unit::Slice(slice) => 2 + slice.batch.statements(),
            Unit::PerSchema(parts) => 2 + parts.len() as u64,
            Unit::OneTrip(_) => 1,
        }
    }
}

/// The transactions that write `batches` the variant's way: a slice each
/// ([`Variant::TxPerTenant`]), or each batch's slices `per_tx` at a time, rendered as SQL
/// text with each slice after its `SET LOCAL search_path`.
fn units(batches: &[Batch], variant: Variant, per_tx: usize) -> Vec<Unit<'_>> {
    let slices = batches.iter().map(|b| b.slices.as_slice());
    match variant {
        Variant::TxPerTenant => slices.flatten().map(Unit::Slice).collect(),
        Variant::TxPerBatch => slices
            .flat_map(|s| s.chunks(per_tx.max(1)))
            .map(|group| {
                Unit::PerSchema(
                    group
                        .iter()
                        .map(|slice| {
                            let mut sql = slice.set_path.clone();
                            slice.batch.sql(&mut sql, Quoting::Escape);
                            sql
                        })
                        .collect(),
                )
            })
            .collect(),
        Variant::OneRoundTrip | Variant::OneRoundTripDollar => slices
            .flat_map(|s| s.chunks(per_tx.max(1)))
            .map(|group| {
                let quoting = if variant == Variant::OneRoundTrip {
                    Quoting::Escape
                } else {
                    Quoting::Dollar
                };
                let mut sql = String::from("BEGIN;\n");
                for slice in group {
                    sql.push_str(&slice.set_path);
                    slice.batch.sql(&mut sql, quoting);
                }
                sql.push_str("COMMIT;\n");
                Unit::OneTrip(sql)
            })
            .collect(),
    }
}

fn set_path(tenant: &TenantId) -> String {
    format!("SET LOCAL search_path TO {};\n", tenant.schema_ident())
}

/// The lanes' batches: events dealt to `connections` lanes by tenant (tenant i to lane
/// i mod n), each lane's events in order cut into batches of `batch`, each batch cut into its
/// tenants' slices (in order of first appearance). Stream sequences count warm-up then timed.
fn prepare<'e>(
    tenants: &[TenantId],
    warmup: &'e [Event],
    timed: &'e [Event],
    connections: usize,
    batch: usize,
) -> Result<Vec<Lane>> {
    let index: HashMap<&str, usize> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let published = Utc::now();
    let stamp = |events: &'e [Event], first: i64| -> Vec<Vec<(usize, Stamped<'e>)>> {
        let mut lanes: Vec<Vec<(usize, Stamped<'e>)>> =
            (0..connections).map(|_| Vec::new()).collect();
        for (i, event) in events.iter().enumerate() {
            let company = event.subject.rsplit('.').next().unwrap_or_default();
            if let Some(&t) = index.get(company) {
                lanes[t % connections].push((
                    t,
                    Stamped {
                        event,
                        sequence: first + i as i64,
                        published,
                    },
                ));
            }
        }
        lanes
    };
    let to_batches = |events: Vec<(usize, Stamped<'e>)>| -> Result<Vec<Batch>> {
        let mut out = Vec::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<(usize, Stamped<'e>)> = events.by_ref().take(batch.max(1)).collect();
            let mut order: Vec<usize> = Vec::new();
            let mut by_tenant: HashMap<usize, Vec<Stamped<'e>>> = HashMap::new();
            for (t, e) in chunk.iter().map(|(t, e)| (*t, e)) {
                let slot = by_tenant.entry(t).or_insert_with(|| {
                    order.push(t);
                    Vec::new()
                });
                slot.push(Stamped {
                    event: e.event,
                    sequence: e.sequence,
                    published: e.published,
                });
            }
            let mut slices = Vec::with_capacity(order.len());
            for t in order {
                let events = by_tenant.remove(&t).unwrap_or_default();
                slices.push(Slice {
                    begin: begin_statement(&tenants[t]),
                    set_path: set_path(&tenants[t]),
                    batch: RealtimeBatch::new(&events)?,
                });
            }
            out.push(Batch {
                slices,
                events: chunk.len() as u64,
            });
        }
        Ok(out)
    };
    let warm = stamp(warmup, 1);
    let timed = stamp(timed, 1 + warmup.len() as i64);
    warm.into_iter()
        .zip(timed)
        .map(|(w, t)| {
            Ok(Lane {
                warmup: to_batches(w)?,
                timed: to_batches(t)?,
            })
        })
        .collect()
}

/// `BEGIN` and the tenant's `search_path` for the transaction, in one simple query.
fn begin_statement(tenant: &TenantId) -> String {
    format!(
        "BEGIN; SELECT set_config('search_path', '{}', true)",
        tenant.schema_ident().replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mix, Workload, WorkloadSettings};

    fn workload(tenants: usize) -> (Vec<TenantId>, Vec<Event>) {
        let w = Workload::new(&WorkloadSettings {
            tenants,
            agents_per_tenant: 2,
            company_prefix: "RT".into(),
            mix: Mix::Realtime,
            seed: 5,
        })
        .unwrap();
        let tenants = w
            .companies()
            .iter()
            .map(|c| TenantId::parse(c).unwrap())
            .collect();
        (tenants, w.take(1000).collect())
    }

    #[test]
    fn batches_are_cut_into_tenant_slices_on_whole_tenant_lanes() {
        let (tenants, events) = workload(8);
        let (warm, timed) = events.split_at(200);
        let lanes = prepare(&tenants, warm, timed, 2, 64).unwrap();
        assert_eq!(lanes.len(), 2);
        let mut total = 0;
        for (i, lane) in lanes.iter().enumerate() {
            for batch in lane.warmup.iter().chain(&lane.timed) {
                assert!(batch.events <= 64);
                total += batch.events;
                let mut seen = BTreeSet::new();
                for slice in &batch.slices {
                    // Each tenant once per batch, and always on its own lane.
                    assert!(seen.insert(slice.set_path.clone()));
                    let t = tenants
                        .iter()
                        .position(|t| set_path(t) == slice.set_path)
                        .unwrap();
                    assert_eq!(t % 2, i);
                }
            }
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn the_literal_variants_send_a_query_per_schema_or_one_per_transaction() {
        let (tenants, events) = workload(8);
        let lanes = prepare(&tenants, &[], &events, 1, 256).unwrap();
        let batches = &lanes[0].timed;
        let slices: usize = batches.iter().map(|b| b.slices.len()).sum();
        assert_eq!(units(batches, Variant::TxPerTenant, 3).len(), slices);
        // Three schemas per transaction at most: each batch of up to 8 tenants is 3 of them.
        let per_schema = units(batches, Variant::TxPerBatch, 3);
        let one = units(batches, Variant::OneRoundTrip, 3);
        let dollar = units(batches, Variant::OneRoundTripDollar, 3);
        assert_eq!(dollar.len(), one.len());
        let Some(Unit::OneTrip(d)) = dollar.first() else {
            panic!("wrong unit");
        };
        assert!(d.contains("$v$") && !d.contains("E'"));
        let expected: usize = batches.iter().map(|b| b.slices.len().div_ceil(3)).sum();
        assert_eq!((per_schema.len(), one.len()), (expected, expected));
        for (a, b) in per_schema.iter().zip(&one) {
            let (Unit::PerSchema(parts), Unit::OneTrip(sql)) = (a, b) else {
                panic!("wrong units");
            };
            assert!(parts.len() <= 3);
            assert!(parts.iter().all(|p| p.starts_with("SET LOCAL search_path")));
            assert!(sql.starts_with("BEGIN;\n") && sql.ends_with("COMMIT;\n"));
            assert_eq!(sql.matches("SET LOCAL search_path").count(), parts.len());
            assert_eq!(a.round_trips(), 2 + parts.len() as u64);
            assert_eq!(b.round_trips(), 1);
        }
        assert_eq!(
            begin_statement(&tenants[0]),
            "BEGIN; SELECT set_config('search_path', '\"daisi_rt001\"', true)"
        );
    }
}
