//! What the core takes in (one event as delivered by a stream) and gives back (its outcome).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::ErrorType;

/// One event as delivered by JetStream (directly, or through the Lambda bridge).
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
    pub stream: String,
    pub stream_sequence: u64,
    pub consumer: String,
    /// How many times this message has been delivered, this time included (1 = first).
    pub delivered: u32,
    /// Which processing attempt this is (1 = first). Transports set it to `delivered`, an
    /// upper bound; [`crate::pipeline::Counted`] lowers it to the attempts really made, since a
    /// broker failover can spend deliveries that never reached the function.
    pub attempt: u32,
    /// When JetStream stored the message.
    pub published_at: DateTime<Utc>,
}

/// Why an event, or one item of a history batch, is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub error_type: ErrorType,
    pub error: String,
    /// 0-based index of the item within a history batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<usize>,
}

impl DeadLetter {
    /// The error is made printable: it may quote the event's data, and it is stored as text.
    pub fn new(error_type: ErrorType, error: impl Into<String>) -> Self {
        DeadLetter {
            error_type,
            error: crate::model::item::printable(error.into()),
            item_index: None,
        }
    }
}

/// What a transport must do with an event once the core is done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are committed (now or by an earlier delivery): acknowledge it.
    Ack,
    /// Committed, except these history items, each to be dead-lettered on its own; then ack.
    AckWithDeadItems(Vec<DeadLetter>),
    /// Transient failure: deliver it again after `delay`.
    Retry { delay: Duration },
    /// Not processed: its tenant cannot take events yet (its schema awaits adoption). Deliver
    /// it again after `delay`; this is not a processing attempt, so it never brings the event
    /// closer to `retry_exhausted`.
    Wait { delay: Duration },
    /// Permanent failure: publish to the DLQ, then terminate.
    DeadLetter(DeadLetter),
}

impl Outcome {
    pub fn is_ack(&self) -> bool {
        matches!(self, Outcome::Ack | Outcome::AckWithDeadItems(_))
    }

    /// A short label for logs and metrics.
    pub fn action(&self) -> &'static str {
        match self {
            Outcome::Ack | Outcome::AckWithDeadItems(_) => "ack",
            Outcome::Retry { .. } => "retry",
            Outcome::Wait { .. } => "wait",
            Outcome::DeadLetter(_) => "dead_letter",
        }
    }
}
