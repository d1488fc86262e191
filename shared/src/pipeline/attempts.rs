//! Processing attempts, counted by the functions themselves (SPEC §1, §6).
//!
//! A delivery is not an attempt: during a broker failover the server can deliver a message
//! several times (pull responses lost, in-progress acks sent to a dead leader) without the
//! function ever processing it. [`Counted`] gives each event its attempt number from the ledger
//! in `wa_system.delivery_attempts` before the batch runs, and records the attempts that ended
//! in a retry after it, so only real attempts bring a message closer to `retry_exhausted`.
//!
//! Only redelivered events are looked up and only retried events are recorded: a first
//! delivery that succeeds costs nothing here.
//!
//! The last attempt never comes sooner than the retry window (`RETRY_WINDOW`, 45 s) after the
//! first: an event that waits for another one (a receipt for a message not stored yet) must
//! outlast a fault that delays that other event, and a message held by a crashed process or lost
//! in a failover comes back within one ack wait (30 s). Until then the last attempt is retried
//! with the last backoff delay.

use std::borrow::Cow;

use sqlx::PgPool;
use tracing::warn;

use crate::model::ErrorType;
use crate::store::attempts::{self, AttemptKey};
use crate::store::failure::{classify, DbFailure};
use crate::store::{Schemas, SYSTEM_SCHEMA};

use super::inbound::{DeadLetter, InboundEvent, Outcome};
use super::retry::RetryPolicy;
use super::{Handler, Unavailable};

/// A handler whose events carry their processing attempt, counted in the ledger.
pub struct Counted<H> {
    inner: H,
    pool: PgPool,
    schemas: Schemas,
    retry: RetryPolicy,
}

impl<H> Counted<H> {
    pub fn new(inner: H, pool: PgPool, auto_migrate: bool, retry: RetryPolicy) -> Self {
        Counted {
            inner,
            schemas: Schemas::new(pool.clone(), auto_migrate),
            pool,
            retry,
        }
    }

    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The ledger is usable (the system schema is migrated).
    async fn ready(&self) -> Result<(), sqlx::Error> {
        self.schemas
            .ensure_schema(SYSTEM_SCHEMA)
            .await
            .map_err(|e| match e {
                crate::store::SchemaError::Db(e) => e,
                other => sqlx::Error::Configuration(other.to_string().into()),
            })
    }

    /// `events` with `attempt` lowered to the attempts recorded plus this one. Events delivered
    /// once need no look-up: their first delivery is their first attempt.
    async fn numbered<'a>(
        &self,
        events: &'a [InboundEvent],
    ) -> Result<Cow<'a, [InboundEvent]>, Unavailable> {
        let again: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].delivered > 1)
            .collect();
        if again.is_empty() {
            return Ok(Cow::Borrowed(events));
        }
        let keys: Vec<AttemptKey> = again.iter().map(|&i| key(&events[i])).collect();
        let recorded = match self.ready().await {
            Ok(()) => attempts::recorded(&self.pool, &keys).await,
            Err(e) => Err(e),
        };
        let recorded = match recorded {
            Ok(r) => r,
            Err(e) if classify(&e) == DbFailure::Unavailable => {
                return Err(Unavailable(format!("reading processing attempts: {e}")))
            }
            Err(e) => {
                // Without the ledger, deliveries bound the attempts (the old, safe count).
                warn!(error = %e, "processing attempts cannot be read; counting deliveries instead");
                return Ok(Cow::Borrowed(events));
            }
        };
        let mut out = events.to_vec();
        let last = self.retry.max_deliver;
        for (&i, done) in again.iter().zip(recorded) {
            let e = &mut out[i];
            e.attempt = e.delivered.min(done.attempts.saturating_add(1)).max(1);
            if e.attempt >= last && last > 1 && done.since_first < self.retry.window {
                // Too soon for the last attempt: one more with the last backoff delay.
                e.attempt = last - 1;
            }
        }
        Ok(Cow::Owned(out))
    }

    /// Records the attempts that ended in a retry. When the ledger cannot take them (and the
    /// database is not simply unavailable), deliveries decide: a retry on the last delivery
    /// becomes `retry_exhausted`, so nothing is retried forever.
    async fn record(
        &self,
        events: &[InboundEvent],
        outcomes: &mut [Outcome],
    ) -> Result<(), Unavailable> {
        let retried: Vec<(AttemptKey, u32)> = events
            .iter()
            .zip(outcomes.iter())
            .filter(|(_, o)| matches!(o, Outcome::Retry { .. }))
            .map(|(e, _)| (key(e), e.attempt))
            .collect();
        if retried.is_empty() {
            return Ok(());
        }
        let done = match self.ready().await {
            Ok(()) => attempts::record(&self.pool, &retried).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => Ok(()),
            Err(e) if classify(&e) == DbFailure::Unavailable => {
                Err(Unavailable(format!("recording processing attempts: {e}")))
            }
            Err(e) => {
                warn!(error = %e, "processing attempts cannot be recorded; counting deliveries instead");
                for (event, outcome) in events.iter().zip(outcomes.iter_mut()) {
                    if matches!(outcome, Outcome::Retry { .. })
                        && event.delivered >= self.retry.max_deliver
                    {
                        *outcome = Outcome::DeadLetter(DeadLetter::new(
                            ErrorType::RetryExhausted,
                            format!(
                                "still failing after {} deliveries (attempts not recorded: {e})",
                                event.delivered
                            ),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

fn key(e: &InboundEvent) -> AttemptKey {
    AttemptKey {
        consumer: e.consumer.clone(),
        stream: e.stream.clone(),
        sequence: e.stream_sequence as i64,
        published_us: e.published_at.timestamp_micros(),
    }
}

impl<H: Handler> Handler for Counted<H> {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let events = self.numbered(events).await?;
        let mut outcomes = self.inner.handle(&events).await?;
        self.record(&events, &mut outcomes).await?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_window_outlasts_an_ack_wait() {
        let slack = crate::transport::streams::ACK_WAIT + crate::transport::streams::KEEPALIVE;
        assert!(crate::pipeline::ProcessorSettings::default().retry_window > slack);
    }
}
