//! `process_batch`: inbound events in, one [`Outcome`] per event out. Knows nothing of NATS or
//! Lambda; the transports turn outcomes into acks.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use sqlx::PgPool;
use tracing::{debug, error};

use crate::http::Notices;
use crate::model::{decode, ErrorType, Payload, Subject, SubjectError, TenantId};
use crate::settings::values::Secret;
use crate::store::placement::Placements;
use crate::store::Schemas;

use super::batch_write::Part;
use super::inbound::{DeadLetter, InboundEvent, Outcome};
use super::plan::Decoded;
use super::prepare::Prepared;
use super::retry::RetryPolicy;

/// The core's settings (loaded once by the binary, never from the environment here).
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Deliveries of a message before a transient failure becomes `retry_exhausted`.
    pub max_deliver: u32,
    /// Delay before redelivery n (the last one repeats).
    pub backoff: Vec<Duration>,
    /// The earliest a transient failure is dead-lettered after its first attempt.
    pub retry_window: Duration,
    pub max_payload_bytes: usize,
    /// When set, only these tenants are served.
    pub allowlist: Option<HashSet<String>>,
    pub auto_migrate: bool,
    /// How long a write waits for a lock before the batch is held and retried.
    pub lock_timeout: Duration,
    /// `TENANT_DATABASES`: the placements besides the default (`DATABASE_URL`), SPEC §17.
    pub tenant_databases: BTreeMap<String, Secret>,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        ProcessorSettings {
            max_deliver: 5,
            backoff: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            retry_window: Duration::from_secs(45),
            max_payload_bytes: 1024 * 1024,
            allowlist: None,
            auto_migrate: true,
            lock_timeout: Duration::from_secs(5),
            tenant_databases: BTreeMap::new(),
        }
    }
}

/// A dependency (Postgres) is unavailable: nothing in the batch was decided. The transport
/// holds the batch and runs it again later, without spending deliveries.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dependency unavailable: {0}")]
pub struct Unavailable(pub String);

impl ProcessorSettings {
    /// The deliveries and backoff of these settings.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_deliver: self.max_deliver,
            backoff: self.backoff.clone(),
            window: self.retry_window,
        }
    }
}

/// The processing core.
pub struct Processor {
    pub(super) pool: PgPool,
    pub(super) schemas: Schemas,
    pub(super) settings: ProcessorSettings,
    pub(super) retry: RetryPolicy,
}

impl Processor {
    /// The core writing to `pool` (`DATABASE_URL`) and the placements of
    /// `settings.tenant_databases`.
    pub fn new(pool: PgPool, settings: ProcessorSettings) -> Self {
        let placements = Arc::new(Placements::new(pool.clone(), &settings.tenant_databases));
        Processor {
            schemas: Schemas::placed(placements, settings.auto_migrate),
            retry: settings.retry_policy(),
            pool,
            settings,
        }
    }

    /// The processor, showing the schemas awaiting adoption in `notices` (`/ready`).
    pub fn with_notices(mut self, notices: Notices) -> Self {
        self.schemas.set_notices(notices);
        self
    }

    /// The main database's pool (`DATABASE_URL`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The databases tenants are placed on.
    pub fn placements(&self) -> &Arc<Placements> {
        self.schemas.placements()
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
                    .map(|e| self.retry.transient(e, &format!("panic: {msg}")))
                    .collect())
            }
        }
    }

    async fn process(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut groups: Vec<(TenantId, Vec<Decoded>)> = Vec::new();
        let mut group_of: HashMap<TenantId, usize> = HashMap::new();
        // A stream message delivered twice within the batch is applied once: later copies
        // share the outcome of the first.
        let mut first_copy: HashMap<(&str, u64, i64), usize> = HashMap::with_capacity(events.len());
        let mut copies: Vec<(usize, usize)> = Vec::new();
        let processed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for (idx, event) in events.iter().enumerate() {
            let key = (
                event.stream.as_str(),
                event.stream_sequence,
                event.published_at.timestamp_micros(),
            );
            match first_copy.entry(key) {
                Entry::Occupied(first) => {
                    copies.push((idx, *first.get()));
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(idx);
                }
            }
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
        // Tenants whose schema is ready are written at once; the others are prepared
        // meanwhile (a few at a time, on connections of their own), then written.
        let mut ready: Vec<Part> = Vec::new();
        let mut new: Vec<(&TenantId, &[Decoded])> = Vec::new();
        for (tenant, decoded) in &groups {
            match self.ready_db(tenant, decoded) {
                Some(db) => ready.push(Part::new(tenant, decoded, db)),
                None => new.push((tenant, decoded)),
            }
        }
        let (written, prepared) =
            futures::join!(self.write_parts(events, ready), self.prepare_all(&new));
        let mut decided = written?;
        let mut later = Vec::new();
        for ((tenant, decoded), prepared) in new.into_iter().zip(prepared?) {
            match prepared {
                Prepared::Ready(db) => later.push(Part::new(tenant, decoded, db)),
                Prepared::Retry(reason) => {
                    decided.extend(self.all_transient(events, decoded, &reason))
                }
                Prepared::Wait(delay) => {
                    decided.extend(decoded.iter().map(|d| (d.idx, Outcome::Wait { delay })))
                }
                Prepared::Refused(dead) => decided.extend(
                    decoded
                        .iter()
                        .map(|d| (d.idx, Outcome::DeadLetter(dead.clone()))),
                ),
            }
        }
        if !later.is_empty() {
            decided.extend(self.write_parts(events, later).await?);
        }
        for (idx, outcome) in decided {
            outcomes[idx] = Some(outcome);
        }
        for (copy, first) in copies {
            debug!(
                seq = events[copy].stream_sequence,
                "delivered twice in one batch; applied once"
            );
            outcomes[copy] = outcomes[first].clone();
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
