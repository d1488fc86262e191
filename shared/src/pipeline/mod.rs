//! The processing core: a batch of inbound events in, one outcome per event out.
//!
//! * [`process`]: the [`Processor`] and its settings; decoding and grouping by tenant.
//! * [`tenant_write`]: one tenant's events in one transaction, refused events isolated.
//! * [`plan`]: a tenant's events as rounds of set-based writes.
//! * [`inbound`]: events in, outcomes out; [`retry`]: retry or dead-letter a transient failure.
//! * [`failure`]: what a database error means for the events in it.

pub mod failure;
pub mod inbound;
pub mod plan;
pub mod process;
pub mod retry;
pub mod tenant_write;

pub use inbound::{DeadLetter, InboundEvent, Outcome};
pub use process::{Processor, ProcessorSettings, Unavailable};
pub use retry::RetryPolicy;

use futures::future::LocalBoxFuture;

/// What a transport runs a batch through: the core itself, or a function built on it
/// (dlq-retry, onboarding). Returns one outcome per event, or `Unavailable` to hold the batch.
///
/// The future is awaited by the runner in place (never spawned), so it need not be `Send`;
/// requiring it trips rustc's higher-ranked lifetime checks on sqlx executors.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        events: &'a [InboundEvent],
    ) -> LocalBoxFuture<'a, Result<Vec<Outcome>, Unavailable>>;

    /// Deliveries before the consumer gives up on a message (reported in dead letters).
    fn max_deliver(&self) -> u32;
}

impl Handler for Processor {
    fn handle<'a>(
        &'a self,
        events: &'a [InboundEvent],
    ) -> LocalBoxFuture<'a, Result<Vec<Outcome>, Unavailable>> {
        Box::pin(self.process_batch(events))
    }

    fn max_deliver(&self) -> u32 {
        self.settings().max_deliver
    }
}
