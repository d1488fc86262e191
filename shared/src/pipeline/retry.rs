//! When a transient failure is retried, and when it becomes a dead letter.

use std::time::Duration;

use crate::model::ErrorType;

use super::inbound::{DeadLetter, InboundEvent, Outcome};

/// Deliveries and backoff of a consumer.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Processing attempts of a message before a transient failure becomes `retry_exhausted`.
    pub max_deliver: u32,
    /// Delay before redelivery n (the last one repeats).
    pub backoff: Vec<Duration>,
    /// The earliest the last attempt may come after the first (see [`super::attempts`]).
    pub window: Duration,
}

impl RetryPolicy {
    /// The outcome of a transient failure: retry with backoff, or dead-letter on the last
    /// attempt.
    pub fn transient(&self, event: &InboundEvent, reason: &str) -> Outcome {
        if event.attempt >= self.max_deliver {
            Outcome::DeadLetter(DeadLetter::new(
                ErrorType::RetryExhausted,
                format!("{reason} (after {} attempts)", event.attempt),
            ))
        } else {
            Outcome::Retry {
                delay: self.backoff(event.attempt),
            }
        }
    }

    /// Delay before the attempt that follows attempt `attempt`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let b = &self.backoff;
        let i = (attempt.max(1) as usize - 1).min(b.len().saturating_sub(1));
        b.get(i).copied().unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_its_last_delay() {
        let p = RetryPolicy {
            max_deliver: 5,
            backoff: [1, 2].map(Duration::from_secs).to_vec(),
            window: Duration::ZERO,
        };
        let delays: Vec<u64> = (0..4).map(|d| p.backoff(d).as_secs()).collect();
        assert_eq!(delays, [1, 1, 2, 2]);
    }
}
