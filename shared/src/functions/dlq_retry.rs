//! dlq-retry: re-runs dead-lettered events through the core under their own tenant, and records
//! the ones that cannot be saved in `exhausted_events` before their DLQ message is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::DateTime;
use sqlx::PgPool;
use tracing::{error, info};

use super::{Defaults, FunctionKind, FunctionSpec, Onboarding, Scope, ONBOARDING};
use crate::http::Notices;
use crate::model::{DeadLetterEnvelope, ErrorType, Subject, TenantId};
use crate::pipeline::HELD_RECHECK;
use crate::pipeline::{
    DeadLetter, Handler, InboundEvent, Outcome, Processor, ProcessorSettings, RetryPolicy,
    Unavailable,
};
use crate::store::exhausted::{self, Home, NewExhausted};
use crate::store::failure::{classify, DbFailure};
use crate::store::schema::ADOPTION_RECHECK;
use crate::store::{SchemaError, Schemas};
use crate::transport::streams::DLQ_STREAM;

/// The dlq-retry function: consumes `dlq_stream` with its own, slower backoff.
pub const DLQ_RETRY: FunctionSpec = FunctionSpec {
    kind: FunctionKind::DlqRetry,
    name: "dlq-retry",
    bin: "wa-dlq-retry",
    about: "Re-runs dead-lettered events under their own tenant; records the ones that cannot be saved in exhausted_events",
    consumer_type: "dlq_retry",
    durable: "wa_dlq_retry",
    stream: DLQ_STREAM,
    scope: Scope::DeadLetters,
    defaults: Defaults {
        http_port: "8083",
        max_deliver: None,
        backoff_var: "DLQ_BACKOFF",
        backoff: "1m,2m,4m,8m,15m",
    },
    metrics_prefix: "dlq",
};

/// The dlq-retry handler: re-runs events through the core (or onboarding, for its dead
/// letters), records the rest in the store. Its settings carry dlq-retry's own `max_deliver`
/// and backoff.
pub struct DlqRetry {
    /// Runs re-tried events (only its `process_batch`).
    core: Arc<Processor>,
    /// Runs re-tried events that onboarding dead-lettered.
    onboarding: Box<Onboarding>,
    pool: PgPool,
    schemas: Schemas,
    settings: ProcessorSettings,
    retry: RetryPolicy,
}

/// What happens to one DLQ message.
enum Disposition {
    /// Run the original event again, through the function that dead-lettered it.
    Rerun {
        envelope: DeadLetterEnvelope,
        event: InboundEvent,
        route: Route,
    },
    /// Record it as exhausted now.
    Exhaust(ExhaustedRow),
}

/// Which function a dead letter goes back through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Core,
    Onboarding,
}

impl Route {
    /// Onboarding's dead letters (its durable, or one of its `COMPANY_ID` durables) go back
    /// through onboarding; the rest through the core.
    fn of(envelope: &DeadLetterEnvelope) -> Self {
        let durable = ONBOARDING.durable;
        match envelope.consumer.as_deref() {
            Some(c)
                if c == durable || c.strip_prefix(durable).is_some_and(|t| t.starts_with('_')) =>
            {
                Route::Onboarding
            }
            _ => Route::Core,
        }
    }
}

/// The original of a dead letter, as the stream message it was: the same stream position and
/// publish time (so its inbox key makes a re-run apply once, however many DLQ copies there are,
/// and time-ordered writes see its own time), delivered by dlq-retry. A history item's re-run
/// is a unit of its own, keyed apart from its batch. Envelopes of earlier versions carry no
/// position: the DLQ message's stands in.
fn original_event(
    envelope: &DeadLetterEnvelope,
    payload: Vec<u8>,
    dlq: &InboundEvent,
) -> InboundEvent {
    let stream = match (&envelope.source_stream, envelope.item_index) {
        (Some(s), Some(i)) => format!("{s}#item{i}"),
        (Some(s), None) => s.clone(),
        (None, _) => dlq.stream.clone(),
    };
    InboundEvent {
        subject: envelope.source_subject.clone(),
        payload: payload.into(),
        headers: Vec::new(),
        stream,
        stream_sequence: envelope.source_sequence.unwrap_or(dlq.stream_sequence),
        consumer: dlq.consumer.clone(),
        delivered: dlq.delivered,
        attempt: dlq.attempt,
        published_at: envelope.published_at.unwrap_or(dlq.published_at),
    }
}

/// An exhausted event to record, before it is bound to its DLQ message.
struct ExhaustedRow {
    home: Home,
    company: String,
    source_subject: String,
    error_type: String,
    error: String,
    retry_count: i32,
    ts: Option<i64>,
    envelope: Option<String>,
    original_json: Option<String>,
    original_raw: Option<Vec<u8>>,
    item_index: Option<i32>,
}

impl ExhaustedRow {
    /// The row for a dead letter whose envelope could be read.
    fn of(
        home: Home,
        envelope: &DeadLetterEnvelope,
        dlq: &InboundEvent,
        error_type: &str,
        error: String,
        attempts: u32,
        item_index: Option<usize>,
    ) -> Self {
        ExhaustedRow {
            home,
            company: envelope.company.clone(),
            source_subject: envelope.source_subject.clone(),
            error_type: error_type.to_owned(),
            error,
            retry_count: attempts as i32,
            ts: Some(envelope.ts),
            envelope: std::str::from_utf8(&dlq.payload).ok().map(str::to_owned),
            original_json: envelope
                .original_payload
                .as_ref()
                .map(|r| r.get().to_owned()),
            original_raw: envelope
                .original_payload
                .is_none()
                .then(|| envelope.original_bytes())
                .flatten(),
            item_index: item_index.map(|i| i as i32),
        }
    }
}

impl DlqRetry {
    /// `core` re-runs events; `pool` and `settings` (dlq-retry's own) are for recording.
    pub fn new(core: Arc<Processor>, pool: PgPool, settings: ProcessorSettings) -> Self {
        Self::with_notices(core, pool, settings, Notices::default())
    }

    /// [`DlqRetry::new`], showing the schemas awaiting adoption in `notices` (`/ready`).
    pub fn with_notices(
        core: Arc<Processor>,
        pool: PgPool,
        settings: ProcessorSettings,
        notices: Notices,
    ) -> Self {
        // The core's placements: one pool per database for the three.
        let placements = core.placements().clone();
        let mut schemas = Schemas::placed(placements.clone(), settings.auto_migrate);
        schemas.set_notices(notices.clone());
        DlqRetry {
            core,
            onboarding: Box::new(
                Onboarding::placed(placements, settings.clone()).with_notices(notices),
            ),
            schemas,
            retry: settings.retry_policy(),
            pool,
            settings,
        }
    }

    fn disposition(&self, dlq: &InboundEvent) -> Disposition {
        let token = Subject::last_token(&dlq.subject);
        let envelope = match serde_json::from_slice::<DeadLetterEnvelope>(&dlq.payload) {
            Ok(e) => e,
            Err(e) => {
                return Disposition::Exhaust(ExhaustedRow {
                    home: Home::System,
                    company: token.to_owned(),
                    source_subject: dlq.subject.clone(),
                    error_type: ErrorType::Malformed.as_str().into(),
                    error: format!("unreadable dead letter: {e}"),
                    retry_count: dlq.attempt as i32,
                    ts: None,
                    envelope: None,
                    original_json: None,
                    original_raw: Some(dlq.payload.to_vec()),
                    item_index: None,
                })
            }
        };
        let original = envelope.original_bytes();
        let record = |home: Home, error_type: &str, error: String| {
            ExhaustedRow::of(
                home,
                &envelope,
                dlq,
                error_type,
                error,
                envelope.retry_count,
                envelope.item_index,
            )
        };
        // The tenant is the DLQ subject's; the envelope must agree, or nothing is re-run.
        let tenant = match TenantId::parse(token) {
            Ok(t) => t,
            Err(_) => {
                return Disposition::Exhaust(record(
                    Home::System,
                    envelope.error_type.as_str(),
                    envelope.error.clone(),
                ))
            }
        };
        let source_tenant = Subject::parse(&envelope.source_subject)
            .ok()
            .map(|s| s.tenant);
        if envelope.company != tenant.as_str() || source_tenant.as_ref() != Some(&tenant) {
            let why = format!(
                "dead letter on {} names company {:?} and subject {:?}",
                dlq.subject, envelope.company, envelope.source_subject
            );
            return Disposition::Exhaust(record(Home::System, ErrorType::Tenant.as_str(), why));
        }
        if let Some(allow) = &self.settings.allowlist {
            if !allow.contains(tenant.as_str()) {
                return Disposition::Exhaust(record(
                    Home::System,
                    envelope.error_type.as_str(),
                    envelope.error.clone(),
                ));
            }
        }
        let retryable = matches!(
            envelope.error_type,
            ErrorType::RetryExhausted | ErrorType::Internal
        );
        match (retryable, original) {
            (true, Some(payload)) => Disposition::Rerun {
                event: original_event(&envelope, payload, dlq),
                route: Route::of(&envelope),
                envelope,
            },
            // Permanent errors are not retried again.
            _ => Disposition::Exhaust(record(
                Home::Tenant(tenant),
                envelope.error_type.as_str(),
                envelope.error.clone(),
            )),
        }
    }

    /// Commits the exhausted rows, one transaction per schema; only then are their DLQ
    /// messages acknowledged.
    async fn record(
        &self,
        events: &[InboundEvent],
        records: Vec<(usize, ExhaustedRow)>,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<(), Unavailable> {
        let mut by_home: BTreeMap<Home, Vec<(usize, ExhaustedRow)>> = BTreeMap::new();
        for (i, mut r) in records {
            // A tenant refused because another id owns its schema (SPEC §3) is never written
            // into that schema: its exhausted events go to the system schema.
            if let Home::Tenant(t) = &r.home {
                match self.schemas.ensure(t).await {
                    Err(SchemaError::Owned { .. }) => r.home = Home::System,
                    // Recorded once the schema is adopted, or the tenant is written again
                    // (resumed, moved, its database back); waiting is no attempt.
                    Err(SchemaError::AwaitingAdoption(_)) => {
                        outcomes[i] = Some(Outcome::Wait {
                            delay: ADOPTION_RECHECK,
                        });
                        continue;
                    }
                    Err(SchemaError::Held { .. }) => {
                        outcomes[i] = Some(Outcome::Wait {
                            delay: HELD_RECHECK,
                        });
                        continue;
                    }
                    _ => {}
                }
            }
            by_home.entry(r.home.clone()).or_default().push((i, r));
        }
        for (home, rows) in by_home {
            let schema = home.schema_name();
            match self.write(&home, events, &rows).await {
                Ok(()) => {
                    for (i, r) in &rows {
                        error!(schema, subject = %r.source_subject, error_type = %r.error_type, error = %r.error, "event exhausted; recorded for operators");
                        crate::metrics::exhausted(&r.error_type);
                        outcomes[*i] = Some(Outcome::Ack);
                    }
                }
                Err(e) => match classify(&e) {
                    DbFailure::Unavailable if !self.on_other_placement(&home) => {
                        return Err(Unavailable(e.to_string()))
                    }
                    // Paused or moved since, or another placement down: only this tenant's
                    // events wait.
                    DbFailure::Unavailable | DbFailure::Fenced => {
                        if let Home::Tenant(t) = &home {
                            self.schemas.forget(t);
                        }
                        for (i, _) in &rows {
                            outcomes[*i] = Some(Outcome::Wait {
                                delay: HELD_RECHECK,
                            });
                        }
                    }
                    _ => {
                        for (i, _) in &rows {
                            outcomes[*i] = Some(self.retry.transient(
                                &events[*i],
                                &format!("recording exhausted event: {e}"),
                            ));
                            // Never give up on recording: retry on the last delivery too.
                            if let Some(Outcome::DeadLetter(_)) = outcomes[*i] {
                                outcomes[*i] = Some(Outcome::Retry {
                                    delay: self.retry.backoff(events[*i].attempt),
                                });
                            }
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Whether `home` is a tenant written on a database other than the main one.
    fn on_other_placement(&self, home: &Home) -> bool {
        match home {
            Home::Tenant(t) => self.schemas.db_of(t).is_some_and(|db| !db.is_main()),
            Home::System => false,
        }
    }

    async fn write(
        &self,
        home: &Home,
        events: &[InboundEvent],
        rows: &[(usize, ExhaustedRow)],
    ) -> Result<(), sqlx::Error> {
        let ready = match home {
            Home::Tenant(t) => self.schemas.ensure(t).await.map(|db| db.pool.clone()),
            Home::System => self
                .schemas
                .ensure_schema(&home.schema_name())
                .await
                .map(|()| self.pool.clone()),
        };
        let pool = ready.map_err(|e| match e {
            SchemaError::Db(e) => e,
            other => sqlx::Error::Configuration(other.to_string().into()),
        })?;
        let rows: Vec<NewExhausted> = rows.iter().map(|(i, r)| r.bound_to(&events[*i])).collect();
        exhausted::record_all(&pool, home, &rows, self.settings.lock_timeout).await
    }
}

impl ExhaustedRow {
    /// The row to store for the DLQ message `dlq`.
    fn bound_to<'a>(&'a self, dlq: &'a InboundEvent) -> NewExhausted<'a> {
        NewExhausted {
            company_id: &self.company,
            source_subject: &self.source_subject,
            error_type: &self.error_type,
            last_error: &self.error,
            retry_count: self.retry_count,
            event_timestamp: self.ts.and_then(|t| DateTime::from_timestamp(t, 0)),
            dlq_payload: self.envelope.as_deref(),
            original_payload: self.original_json.as_deref(),
            original_payload_raw: self.original_raw.as_deref(),
            dlq_stream: &dlq.stream,
            dlq_sequence: dlq.stream_sequence as i64,
            item_index: self.item_index,
            dlq_message: &dlq.payload,
        }
    }
}

impl Handler for DlqRetry {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut records: Vec<(usize, ExhaustedRow)> = Vec::new();
        let mut reruns: Vec<(Route, usize, DeadLetterEnvelope, InboundEvent)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match self.disposition(e) {
                Disposition::Rerun {
                    envelope,
                    event,
                    route,
                } => reruns.push((route, i, envelope, event)),
                Disposition::Exhaust(r) => records.push((i, r)),
            }
        }
        // Each function's re-runs go through it in one batch.
        let mut results = Vec::with_capacity(reruns.len());
        for route in [Route::Core, Route::Onboarding] {
            let (mine, rest): (Vec<_>, Vec<_>) = reruns.into_iter().partition(|r| r.0 == route);
            reruns = rest;
            if mine.is_empty() {
                continue;
            }
            let batch: Vec<InboundEvent> = mine.iter().map(|r| r.3.clone()).collect();
            let outcomes = match route {
                Route::Core => self.core.process_batch(&batch).await?,
                Route::Onboarding => self.onboarding.handle(&batch).await?,
            };
            results.extend(mine.into_iter().map(|(_, i, e, _)| (i, e)).zip(outcomes));
        }
        for ((i, envelope), outcome) in results {
            let dlq = &events[i];
            let exhaust = |d: &DeadLetter| {
                let tenant = TenantId::parse(&envelope.company).expect("checked in disposition");
                let attempts = envelope.retry_count + dlq.attempt;
                let item = envelope.item_index.or(d.item_index);
                ExhaustedRow::of(
                    Home::Tenant(tenant),
                    &envelope,
                    dlq,
                    d.error_type.as_str(),
                    d.error.clone(),
                    attempts,
                    item,
                )
            };
            match outcome {
                Outcome::Ack => {
                    info!(subject = %envelope.source_subject, dlq_seq = dlq.stream_sequence, "dead letter applied on retry");
                    outcomes[i] = Some(Outcome::Ack);
                }
                Outcome::Retry { delay } => outcomes[i] = Some(Outcome::Retry { delay }),
                Outcome::Wait { delay } => outcomes[i] = Some(Outcome::Wait { delay }),
                Outcome::DeadLetter(d) => records.push((i, exhaust(&d))),
                Outcome::AckWithDeadItems(items) => {
                    for d in &items {
                        records.push((i, exhaust(d)));
                    }
                }
            }
        }
        self.record(events, records, &mut outcomes).await?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Ack))
            .collect())
    }
}
