//! The four functions: what each consumes and how ([`FunctionSpec`]), with its handler.
//!
//! * [`events`]: realtime and historical, the core itself.
//! * [`dlq_retry`]: re-runs dead letters; records the exhausted ones.
//! * [`onboarding`]: onboards first-time contacts.

pub mod dlq_retry;
pub mod events;
pub mod onboarding;

use std::sync::Arc;

use clap::CommandFactory;

use crate::http::Notices;
use crate::model::{EventKind, Subject, TenantId};
use sqlx::PgPool;

use crate::pipeline::{
    Counted, Handler, InboundEvent, Outcome, Processor, ProcessorSettings, Unavailable,
};
use crate::settings::vars::FunctionVars;
use crate::settings::Settings;
use crate::telemetry::spans::EventSpans;
use crate::transport::streams::{tenant_subjects, ConsumerSpec};

pub use dlq_retry::{DlqRetry, DLQ_RETRY};
pub use events::{HISTORICAL, REALTIME};
pub use onboarding::{Onboarding, ONBOARDING};

/// Every function, in the order of their HTTP ports.
pub const ALL: [&FunctionSpec; 4] = [&REALTIME, &HISTORICAL, &DLQ_RETRY, &ONBOARDING];

/// What a function does with its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// Write events through the core (realtime, historical).
    Events,
    /// Re-run dead letters; record the exhausted ones.
    DlqRetry,
    /// Onboard first-time contacts.
    Onboarding,
}

/// Which subjects of its stream a function's consumer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole stream.
    Stream,
    /// One kind of event.
    Kind(EventKind),
    /// Dead letters.
    DeadLetters,
}

/// The defaults of the variables whose default depends on the function (`--help` shows them).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub http_port: &'static str,
    /// `None`: one more than the backoff's entries.
    pub max_deliver: Option<&'static str>,
    /// The variable the backoff is read from (`BACKOFF`, or dlq-retry's `DLQ_BACKOFF`).
    pub backoff_var: &'static str,
    pub backoff: &'static str,
}

/// A function: its binary, the stream and consumer it reads, its defaults.
#[derive(Debug, Clone, Copy)]
pub struct FunctionSpec {
    pub kind: FunctionKind,
    /// The name routes give it (`realtime`, `dlq-retry`, …).
    pub name: &'static str,
    pub bin: &'static str,
    pub about: &'static str,
    pub consumer_type: &'static str,
    pub durable: &'static str,
    pub stream: &'static str,
    pub scope: Scope,
    pub defaults: Defaults,
    pub metrics_prefix: &'static str,
}

impl FunctionSpec {
    /// The function named `name` (`realtime`, `historical`, `dlq-retry`, `onboarding`).
    pub fn named(name: &str) -> Option<&'static FunctionSpec> {
        ALL.into_iter().find(|f| f.name == name)
    }

    /// Its command line: every variable of [`FunctionVars`] with this function's defaults.
    pub fn command(&self) -> clap::Command {
        let d = self.defaults;
        let cmd = FunctionVars::command()
            .name(self.bin)
            .bin_name(self.bin)
            .about(self.about)
            .after_help(
                "With AWS_LAMBDA_RUNTIME_API set, the function runs as an AWS Lambda handler.",
            )
            .mut_arg("http_port", |a| a.default_value(d.http_port))
            .mut_arg("otel_service_name", |a| a.default_value(self.bin))
            .mut_arg("backoff", |a| {
                a.env(d.backoff_var)
                    .value_name(d.backoff_var)
                    .default_value(d.backoff)
            });
        match d.max_deliver {
            Some(n) => cmd.mut_arg("max_deliver", |a| a.default_value(n)),
            None => cmd.mut_arg("max_deliver", |a| {
                a.help(format!(
                    "processing attempts before a transient failure is recorded as exhausted [default: {} entries + 1]",
                    d.backoff_var
                ))
            }),
        }
    }

    /// The durable consumer this function binds; with `COMPANY_ID` it serves that tenant only.
    pub fn consumer(&self, settings: &Settings) -> ConsumerSpec {
        let (durable, filters) = match &settings.company {
            None => (self.durable.to_owned(), self.filters_all()),
            Some(t) => (format!("{}_{t}", self.durable), self.filters_of(t)),
        };
        ConsumerSpec {
            stream: self.stream,
            durable,
            filters,
            max_ack_pending: (settings.batch_size as i64 * 4).max(1000),
        }
    }

    fn filters_all(&self) -> Vec<String> {
        match self.scope {
            Scope::Stream => Vec::new(),
            Scope::Kind(kind) => vec![Subject::every_tenant(kind)],
            Scope::DeadLetters => vec![Subject::every_dead_letter()],
        }
    }

    /// One tenant's subjects: one per subject base of the stream (SPEC §1).
    fn filters_of(&self, tenant: &TenantId) -> Vec<String> {
        match self.scope {
            Scope::Stream => tenant_subjects(self.stream, tenant),
            Scope::Kind(kind) => vec![Subject::format(kind, tenant.as_str())],
            Scope::DeadLetters => vec![Subject::dead_letter(tenant.as_str())],
        }
    }
}

/// The handler of a function, whichever kind it is, with its processing attempts counted
/// ([`Counted`]): in standalone and Lambda mode alike, `MAX_DELIVER` bounds attempts, not
/// deliveries.
pub struct FunctionHandler(Counted<KindHandler>);

/// What a function of each kind runs its batches through.
pub enum KindHandler {
    Events(Arc<Processor>),
    DlqRetry(DlqRetry),
    Onboarding(Onboarding),
}

impl FunctionHandler {
    /// The handler of a `kind` function writing through `pool`.
    pub fn new(kind: FunctionKind, pool: PgPool, settings: ProcessorSettings) -> Self {
        Self::with_notices(kind, pool, settings, Notices::default())
    }

    /// [`FunctionHandler::new`], showing the tenant schemas awaiting adoption in `notices`
    /// (the process's `/ready`).
    pub fn with_notices(
        kind: FunctionKind,
        pool: PgPool,
        settings: ProcessorSettings,
        notices: Notices,
    ) -> Self {
        let core = || Processor::new(pool.clone(), settings.clone()).with_notices(notices.clone());
        let inner = match kind {
            FunctionKind::Events => KindHandler::Events(Arc::new(core())),
            FunctionKind::DlqRetry => KindHandler::DlqRetry(DlqRetry::with_notices(
                Arc::new(core()),
                pool.clone(),
                settings.clone(),
                notices.clone(),
            )),
            FunctionKind::Onboarding => KindHandler::Onboarding(
                Onboarding::new(pool.clone(), settings.clone()).with_notices(notices.clone()),
            ),
        };
        FunctionHandler(Counted::new(
            inner,
            pool,
            settings.auto_migrate,
            settings.retry_policy(),
        ))
    }
}

impl Handler for KindHandler {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        match self {
            KindHandler::Events(p) => p.handle(events).await,
            KindHandler::DlqRetry(h) => h.handle(events).await,
            KindHandler::Onboarding(h) => h.handle(events).await,
        }
    }
}

impl Handler for FunctionHandler {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let spans = EventSpans::open(events);
        let outcomes = self.0.handle(events).await;
        spans.close(&outcomes);
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_filter_by_scope_and_company() {
        let c = |spec: &FunctionSpec, args: &[&str]| {
            let settings = Settings::try_parse_from(spec, args).expect("settings");
            spec.consumer(&settings)
        };
        let one = ["x", "--company-id", "C1"];
        assert!(c(&REALTIME, &["x"]).filters.is_empty());
        let rt = c(&REALTIME, &one).filters;
        assert_eq!(rt.len(), 7);
        assert!(rt
            .iter()
            .all(|f| f.starts_with("v1.") && f.ends_with(".C1")));
        assert_eq!(c(&REALTIME, &one).durable, "wa_realtime_C1");
        assert_eq!(c(&HISTORICAL, &one).filters.len(), 3);
        assert_eq!(c(&ONBOARDING, &["x"]).filters, ["v1.messages.upsert.*"]);
        assert_eq!(c(&ONBOARDING, &one).filters, ["v1.messages.upsert.C1"]);
        assert_eq!(c(&DLQ_RETRY, &["x"]).filters, ["v1.dlq.*"]);
        assert_eq!(c(&DLQ_RETRY, &one).filters, ["v1.dlq.C1"]);
        assert_eq!(c(&DLQ_RETRY, &["x"]).max_ack_pending, 4096);
    }

    #[test]
    fn every_function_is_named() {
        for f in ALL {
            assert_eq!(FunctionSpec::named(f.name).map(|s| s.bin), Some(f.bin));
        }
        assert!(FunctionSpec::named("billing").is_none());
    }
}
