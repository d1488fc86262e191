//! `process_batch`: inbound events in, one [`Outcome`] per event out. Knows nothing of NATS or
//! Lambda; the transports turn outcomes into acks.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use sqlx::PgPool;
use tracing::{debug, error, warn};

use crate::model::{decode, ErrorType, Payload, Subject, SubjectError, TenantId};
use crate::store::inbox::{self, StreamKey};
use crate::store::{tenant_tx, SchemaError, Schemas};

use super::failure::{classify, DbFailure};
use super::inbound::{DeadLetter, InboundEvent, Outcome};
use super::plan::{Decoded, Plan};

/// The core's settings (loaded once by the binary, never from the environment here).
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Deliveries of a message before a transient failure becomes `retry_exhausted`.
    pub max_deliver: u32,
    /// Delay before redelivery n (the last one repeats).
    pub backoff: Vec<Duration>,
    pub max_payload_bytes: usize,
    /// When set, only these tenants are served.
    pub allowlist: Option<HashSet<String>>,
    pub auto_migrate: bool,
    /// How long a write waits for a lock before the batch is held and retried.
    pub lock_timeout: Duration,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        ProcessorSettings {
            max_deliver: 5,
            backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            max_payload_bytes: 1024 * 1024,
            allowlist: None,
            auto_migrate: true,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// A dependency (Postgres) is unavailable: nothing in the batch was decided. The transport
/// holds the batch and runs it again later, without spending deliveries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dependency unavailable: {0}")]
pub struct Unavailable(pub String);

/// How a tenant transaction failed.
enum TxError {
    Failure(DbFailure, String),
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        TxError::Failure(classify(&e), e.to_string())
    }
}

/// The processing core.
pub struct Processor {
    pool: PgPool,
    schemas: Schemas,
    settings: ProcessorSettings,
}

const CONFLICT_ATTEMPTS: usize = 3;

impl Processor {
    pub fn new(pool: PgPool, settings: ProcessorSettings) -> Self {
        Processor {
            schemas: Schemas::new(pool.clone(), settings.auto_migrate),
            pool,
            settings,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    pub fn settings(&self) -> &ProcessorSettings {
        &self.settings
    }

    /// Processes a batch; returns one outcome per event, in order. A panic anywhere inside is
    /// caught and treated as a transient failure of the whole batch.
    pub async fn process_batch(
        &self,
        events: &[InboundEvent],
    ) -> Result<Vec<Outcome>, Unavailable> {
        match AssertUnwindSafe(self.process(events)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                error!(events = events.len(), panic = %msg, "panic while processing a batch");
                Ok(events
                    .iter()
                    .map(|e| self.transient(e, &format!("panic: {msg}")))
                    .collect())
            }
        }
    }

    /// The outcome of a transient failure: retry with backoff, or dead-letter on the last
    /// delivery.
    pub fn transient(&self, event: &InboundEvent, reason: &str) -> Outcome {
        if event.delivered >= self.settings.max_deliver {
            Outcome::DeadLetter(DeadLetter::new(
                ErrorType::RetryExhausted,
                format!("{reason} (after {} deliveries)", event.delivered),
            ))
        } else {
            Outcome::Retry {
                delay: self.backoff(event.delivered),
            }
        }
    }

    /// Delay before the redelivery that follows delivery `delivered`.
    pub fn backoff(&self, delivered: u32) -> Duration {
        let b = &self.settings.backoff;
        let i = (delivered.max(1) as usize - 1).min(b.len().saturating_sub(1));
        b.get(i).copied().unwrap_or(Duration::from_secs(1))
    }

    async fn process(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut groups: Vec<(TenantId, Vec<Decoded>)> = Vec::new();
        let mut group_of: HashMap<TenantId, usize> = HashMap::new();
        let processed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for (idx, event) in events.iter().enumerate() {
            match self.decode_event(event) {
                Ok((subject, payload)) => {
                    let g = *group_of.entry(subject.tenant.clone()).or_insert_with(|| {
                        groups.push((subject.tenant.clone(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(Decoded {
                        idx,
                        published_at: event.published_at,
                        payload,
                        meta: metadata(event, &processed_at),
                    });
                }
                Err(dead) => {
                    debug!(subject = %event.subject, seq = event.stream_sequence, error_type = %dead.error_type, "event refused");
                    outcomes[idx] = Some(Outcome::DeadLetter(dead));
                }
            }
        }
        let results = futures::future::join_all(
            groups
                .iter()
                .map(|(tenant, decoded)| self.write_tenant(events, tenant, decoded)),
        )
        .await;
        for result in results {
            for (idx, outcome) in result? {
                outcomes[idx] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every event has an outcome"))
            .collect())
    }

    fn decode_event<'a>(
        &self,
        event: &'a InboundEvent,
    ) -> Result<(Subject, Payload<'a>), DeadLetter> {
        let subject = Subject::parse(&event.subject).map_err(|e| match e {
            SubjectError::Tenant(t) => DeadLetter::new(ErrorType::Tenant, t.to_string()),
            SubjectError::Unknown(_) => DeadLetter::new(ErrorType::Validation, e.to_string()),
        })?;
        if let Some(allow) = &self.settings.allowlist {
            if !allow.contains(subject.tenant.as_str()) {
                return Err(DeadLetter::new(
                    ErrorType::Tenant,
                    format!("tenant {} is not in TENANT_ALLOWLIST", subject.tenant),
                ));
            }
        }
        let payload = decode(&subject, &event.payload, self.settings.max_payload_bytes)
            .map_err(|e| DeadLetter::new(e.error_type, e.message))?;
        Ok((subject, payload))
    }

    /// Writes one tenant's events, isolating events that the database refuses.
    async fn write_tenant(
        &self,
        events: &[InboundEvent],
        tenant: &TenantId,
        decoded: &[Decoded<'_>],
    ) -> Result<Vec<(usize, Outcome)>, Unavailable> {
        if let Err(reason) = self.prepare(tenant, decoded).await? {
            return Ok(self.all_transient(events, decoded, &reason));
        }
        let mut out = Vec::with_capacity(decoded.len());
        // Ranges still to write, in stream order (a stack: last pushed is next).
        let mut todo = vec![(0, decoded.len(), false)];
        while let Some((lo, hi, item_by_item)) = todo.pop() {
            let part = &decoded[lo..hi];
            match self
                .write_with_conflict_retries(events, tenant, part, item_by_item)
                .await
            {
                Ok(outcomes) => out.extend(outcomes),
                Err(TxError::Failure(DbFailure::Unavailable, e)) => {
                    warn!(tenant = %tenant, error = %e, "database unavailable; holding the batch");
                    return Err(Unavailable(e));
                }
                Err(TxError::Failure(DbFailure::Permanent, e)) => {
                    if hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        todo.push((mid, hi, false));
                        todo.push((lo, mid, false));
                    } else if !item_by_item
                        && matches!(&part[0].payload, Payload::History(items) if items.len() > 1)
                    {
                        todo.push((lo, hi, true));
                    } else {
                        warn!(tenant = %tenant, seq = events[part[0].idx].stream_sequence, error = %e, "database refused the event");
                        out.push((
                            part[0].idx,
                            Outcome::DeadLetter(DeadLetter::new(ErrorType::DatabasePermanent, e)),
                        ));
                    }
                }
                Err(TxError::Failure(_, e)) => {
                    warn!(tenant = %tenant, error = %e, "transient write failure");
                    out.extend(self.all_transient(events, part, &e));
                }
            }
        }
        Ok(out)
    }

    /// Schema and partitions; `Ok(Err(reason))` is a transient failure of these events.
    async fn prepare(
        &self,
        tenant: &TenantId,
        decoded: &[Decoded<'_>],
    ) -> Result<Result<(), String>, Unavailable> {
        let schema = match self.schemas.ensure(tenant).await {
            Ok(()) => Ok(()),
            Err(SchemaError::NotMigrated(s)) => {
                return Ok(Err(format!("schema {s} is not migrated")))
            }
            Err(SchemaError::Db(e)) => Err(e),
        };
        let result = match schema {
            Ok(()) => {
                self.schemas
                    .ensure_partitions(tenant, decoded.iter().flat_map(Decoded::message_dates))
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(Ok(())),
            Err(e) => match classify(&e) {
                DbFailure::Unavailable => Err(Unavailable(e.to_string())),
                _ => {
                    self.schemas.forget(tenant);
                    Ok(Err(format!("preparing schema of {tenant}: {e}")))
                }
            },
        }
    }

    fn all_transient(
        &self,
        events: &[InboundEvent],
        part: &[Decoded<'_>],
        reason: &str,
    ) -> Vec<(usize, Outcome)> {
        part.iter()
            .map(|d| (d.idx, self.transient(&events[d.idx], reason)))
            .collect()
    }

    async fn write_with_conflict_retries(
        &self,
        events: &[InboundEvent],
        tenant: &TenantId,
        part: &[Decoded<'_>],
        item_by_item: bool,
    ) -> Result<Vec<(usize, Outcome)>, TxError> {
        let mut attempt = 1;
        loop {
            match self.write_tx(events, tenant, part, item_by_item).await {
                Err(TxError::Failure(DbFailure::Conflict, e)) if attempt < CONFLICT_ATTEMPTS => {
                    debug!(tenant = %tenant, attempt, error = %e, "write conflict; running again");
                    attempt += 1;
                }
                Err(TxError::Failure(DbFailure::Conflict, e)) => {
                    return Err(TxError::Failure(DbFailure::Transient, e))
                }
                other => return other,
            }
        }
    }

    /// One tenant transaction: claim the events in the inbox (skipping those it has seen),
    /// write the fresh ones, take back the claims of events that must be retried, commit.
    async fn write_tx(
        &self,
        events: &[InboundEvent],
        tenant: &TenantId,
        part: &[Decoded<'_>],
        item_by_item: bool,
    ) -> Result<Vec<(usize, Outcome)>, TxError> {
        let mut tx = tenant_tx::begin(&self.pool, tenant, self.settings.lock_timeout).await?;
        let keys: Vec<StreamKey> = part.iter().map(|d| stream_key(&events[d.idx])).collect();
        // A stream message delivered twice within the batch is applied once: later copies
        // share the outcome of the first.
        let mut first_copy: HashMap<&StreamKey, usize> = HashMap::with_capacity(keys.len());
        let copy_of: Vec<Option<usize>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| match first_copy.entry(k) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                    None
                }
            })
            .collect();
        let mut dead_items: Vec<Vec<DeadLetter>> =
            part.iter().map(Decoded::invalid_items).collect();
        let claims: Vec<(&StreamKey, Option<String>)> = keys
            .iter()
            .zip(&dead_items)
            .zip(&copy_of)
            .filter(|(_, copy)| copy.is_none())
            .map(|((k, items), _)| (k, dead_items_json(items)))
            .collect();
        let seen = inbox::claim(&mut tx, &claims).await?;
        let fresh: Vec<(usize, &Decoded)> = part
            .iter()
            .enumerate()
            .filter(|(i, _)| copy_of[*i].is_none() && !seen.contains_key(&keys[*i]))
            .collect();

        let not_found: HashSet<usize> = if item_by_item {
            // One history event whose batch write the database refused: find the items to blame.
            let mut found_dead = false;
            for &(i, d) in &fresh {
                for (item, unit) in d.units() {
                    sqlx::query("SAVEPOINT item").execute(&mut *tx).await?;
                    match Plan::new([(d, unit)])
                        .execute(&mut tx, tenant.as_str())
                        .await
                    {
                        Ok(_) => {
                            sqlx::query("RELEASE SAVEPOINT item")
                                .execute(&mut *tx)
                                .await?;
                        }
                        Err(e) if classify(&e) == DbFailure::Permanent => {
                            sqlx::query("ROLLBACK TO SAVEPOINT item")
                                .execute(&mut *tx)
                                .await?;
                            found_dead = true;
                            dead_items[i].push(DeadLetter {
                                error_type: ErrorType::DatabasePermanent,
                                error: e.to_string(),
                                item_index: item,
                            });
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if found_dead {
                let update: Vec<(&StreamKey, Option<String>)> = fresh
                    .iter()
                    .map(|&(i, _)| (&keys[i], dead_items_json(&dead_items[i])))
                    .collect();
                inbox::set_dead_items(&mut tx, &update).await?;
            }
            HashSet::new()
        } else {
            let plan = Plan::new(
                fresh
                    .iter()
                    .flat_map(|&(_, d)| d.units().map(move |(_, u)| (d, u))),
            );
            plan.execute(&mut tx, tenant.as_str())
                .await?
                .into_iter()
                .collect()
        };

        let mut retried = Vec::new();
        let mut out: Vec<(usize, Outcome)> = Vec::with_capacity(part.len());
        for (i, d) in part.iter().enumerate() {
            let event = &events[d.idx];
            let outcome = if let Some(first) = copy_of[i] {
                debug!(
                    seq = event.stream_sequence,
                    "delivered twice in one batch; applied once"
                );
                out[first].1.clone()
            } else if let Some(dead) = seen.get(&keys[i]) {
                debug!(
                    seq = event.stream_sequence,
                    "duplicate delivery; effects already committed"
                );
                let items: Vec<DeadLetter> = dead
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default();
                ack(items)
            } else if not_found.contains(&d.idx) {
                retried.push(&keys[i]);
                self.transient(event, "message to update not found yet")
            } else {
                ack(std::mem::take(&mut dead_items[i]))
            };
            out.push((d.idx, outcome));
        }
        inbox::release(&mut tx, &retried).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Dead items as recorded in the inbox: JSON text, or nothing when there are none.
fn dead_items_json(items: &[DeadLetter]) -> Option<String> {
    (!items.is_empty()).then(|| serde_json::to_string(items).expect("dead items serialise"))
}

fn ack(dead_items: Vec<DeadLetter>) -> Outcome {
    if dead_items.is_empty() {
        Outcome::Ack
    } else {
        Outcome::AckWithDeadItems(dead_items)
    }
}

fn stream_key(e: &InboundEvent) -> StreamKey {
    StreamKey {
        stream: e.stream.clone(),
        sequence: e.stream_sequence as i64,
        published_us: e.published_at.timestamp_micros(),
    }
}

/// The `last_metadata` of every row an event writes.
#[derive(Debug, serde::Serialize)]
pub struct Metadata<'a> {
    pub stream: &'a str,
    pub stream_sequence: u64,
    pub consumer: &'a str,
    pub subject: &'a str,
    pub delivered: u32,
    pub processed_at: &'a str,
}

impl Metadata<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metadata serialises")
    }
}

/// The `last_metadata` JSON of an event.
pub fn metadata(e: &InboundEvent, processed_at: &str) -> String {
    Metadata {
        stream: &e.stream,
        stream_sequence: e.stream_sequence,
        consumer: &e.consumer,
        subject: &e.subject,
        delivered: e.delivered,
        processed_at,
    }
    .to_json()
}
