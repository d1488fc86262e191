//! The core tier's one fixture: the test database, a fresh tenant, its events and a processor,
//! with the few things a core test does with them.

use bytes::Bytes;
use serde_json::Value;
use sqlx::PgPool;
use wa_shared::model::EventKind;
use wa_shared::pipeline::{InboundEvent, Outcome, Processor, ProcessorSettings};

use crate::{pool, processor_with, run, run_ok, schema_name, unique_tenant, Events};

pub struct Fixture {
    pub pool: PgPool,
    pub tenant: String,
    pub events: Events,
    pub processor: Processor,
}

impl Fixture {
    /// A fresh tenant `<prefix><random>` and a processor with the default settings.
    pub async fn new(prefix: &str) -> Self {
        Self::with(prefix, |_| {}).await
    }

    /// A fresh tenant and a processor with the settings `settings` changes.
    pub async fn with(prefix: &str, settings: impl FnOnce(&mut ProcessorSettings)) -> Self {
        let pool = pool().await;
        let tenant = unique_tenant(prefix);
        Fixture {
            events: Events::new(&tenant),
            processor: processor_with(&pool, settings),
            tenant,
            pool,
        }
    }

    /// The events of another fresh tenant, for the same database and processor.
    pub fn other_tenant(&self, prefix: &str) -> Events {
        Events::new(&unique_tenant(prefix))
    }

    pub fn json(&self, kind: EventKind, body: Value) -> InboundEvent {
        self.events.json(kind, body)
    }

    pub fn event(&self, kind: EventKind, body: impl Into<Bytes>) -> InboundEvent {
        self.events.event(kind, body)
    }

    pub fn on_subject(&self, subject: &str, body: impl Into<Bytes>) -> InboundEvent {
        self.events.on_subject(subject, body)
    }

    /// Runs a batch that must not hit an unavailable database.
    pub async fn run(&self, events: &[InboundEvent]) -> Vec<Outcome> {
        run(&self.processor, events).await
    }

    /// Runs a batch and asserts every event was acknowledged.
    pub async fn run_ok(&self, events: &[InboundEvent]) {
        run_ok(&self.processor, events).await
    }

    /// Rows of `sql` in the tenant's schema, as JSON objects.
    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        crate::rows(&self.pool, &self.tenant, sql).await
    }

    /// One row of `sql` in the tenant's schema, which must exist.
    pub async fn row(&self, sql: &str) -> Value {
        crate::row(&self.pool, &self.tenant, sql).await
    }

    /// The tenant's schema name (unquoted).
    pub fn schema(&self) -> String {
        schema_name(&self.tenant)
    }
}
