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

use crate::model::{EventKind, Subject, TenantId};
use sqlx::PgPool;

use crate::pipeline::{
    Counted, Handler, InboundEvent, Outcome, Processor, ProcessorSettings, Unavailable,
};
use crate::settings::vars::FunctionVars;
use crate::settings::Settings;
use crate::transport::streams::ConsumerSpec;

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
        let (durable, filter) = match &settings.company {
            None => (self.durable.to_owned(), self.filter_all()),
            Some(t) => (format!("{}_{t}", self.durable), self.filter_of(t)),
        };
        ConsumerSpec {
            stream: self.stream,
            durable,
            filter,
            max_ack_pending: (settings.batch_size as i64 * 4).max(1000),
        }
    }

    fn filter_all(&self) -> String {
        match self.scope {
            Scope::Stream => String::new(),
            Scope::Kind(kind) => Subject::every_tenant(kind),
            Scope::DeadLetters => Subject::every_dead_letter(),
        }
    }

    fn filter_of(&self, tenant: &TenantId) -> String {
        match self.scope {
            Scope::Stream => Subject::every_kind_of(tenant),
            Scope::Kind(kind) => Subject::format(kind, tenant.as_str()),
            Scope::DeadLetters => Subject::dead_letter(tenant.as_str()),
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
        let inner = match kind {
            FunctionKind::Events => {
                KindHandler::Events(Arc::new(Processor::new(pool.clone(), settings.clone())))
            }
            FunctionKind::DlqRetry => {
                let core = Arc::new(Processor::new(pool.clone(), settings.clone()));
                KindHandler::DlqRetry(DlqRetry::new(core, pool.clone(), settings.clone()))
            }
            FunctionKind::Onboarding => {
                KindHandler::Onboarding(Onboarding::new(pool.clone(), settings.clone()))
            }
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
        self.0.handle(events).await
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
        assert_eq!(c(&REALTIME, &["x"]).filter, "");
        assert_eq!(c(&REALTIME, &one).filter, "v1.*.*.C1");
        assert_eq!(c(&REALTIME, &one).durable, "wa_realtime_C1");
        assert_eq!(c(&ONBOARDING, &["x"]).filter, "v1.messages.upsert.*");
        assert_eq!(c(&ONBOARDING, &one).filter, "v1.messages.upsert.C1");
        assert_eq!(c(&DLQ_RETRY, &["x"]).filter, "v1.dlq.*");
        assert_eq!(c(&DLQ_RETRY, &one).filter, "v1.dlq.C1");
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
