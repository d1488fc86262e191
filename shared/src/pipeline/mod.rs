//! The processing core: a batch of inbound events in, one outcome per event out.
//!
//! * [`process`]: the [`Processor`] and its settings; decoding and grouping by tenant.
//! * [`batch_write`]: every tenant's events in one transaction of a few round trips, refused
//!   events isolated; [`prepare`]: schemas of new tenants made ready off the write path.
//! * [`plan`]: a tenant's events as rounds of set-based writes.
//! * [`inbound`]: events in, outcomes out; [`retry`]: retry or dead-letter a transient failure.
//! * [`attempts`]: processing attempts counted by the function, not by the broker's deliveries.

pub mod attempts;
pub mod batch_write;
pub mod inbound;
pub mod plan;
pub mod prepare;
pub mod process;
pub mod retry;

pub use attempts::Counted;
pub use batch_write::HELD_RECHECK;
pub use inbound::{DeadLetter, InboundEvent, Outcome};
pub use process::{Processor, ProcessorSettings, Unavailable};
pub use retry::RetryPolicy;

/// What a transport runs a batch through: the core itself, or a function built on it
/// (dlq-retry, onboarding, the bridge's Lambda invoker). Returns one outcome per event, or
/// `Unavailable` to hold the batch.
///
/// The future is awaited by the runner in place (never spawned), so it need not be `Send`;
/// requiring it trips rustc's higher-ranked lifetime checks on sqlx executors. That is also
/// why the trait is not object-safe and callers are generic over it.
#[allow(async_fn_in_trait)]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable>;
}

impl Handler for Processor {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        self.process_batch(events).await
    }
}
