//! Metrics under the earlier service's names, so its dashboards keep working.
//!
//! Counters are aggregated per batch (one increment per event type, tenant and action), not
//! per event.

use std::collections::HashMap;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::Subject;
use crate::pipeline::{InboundEvent, Outcome};

/// Installs the Prometheus recorder (once per process) and returns the handle that renders it.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The metric family of a function: `message_event_service` (realtime, historical), `dlq`,
/// `onboarding`.
#[derive(Debug, Clone)]
pub struct EventMetrics {
    consumer_type: &'static str,
    received: String,
    processed: String,
    failed: String,
    duration: String,
    actions: String,
    db_duration: String,
    batch_size: String,
    lag: String,
    held: String,
}

impl EventMetrics {
    pub fn new(prefix: &str, consumer_type: &'static str) -> Self {
        EventMetrics {
            consumer_type,
            received: format!("{prefix}_events_received_total"),
            processed: format!("{prefix}_events_processed_total"),
            failed: format!("{prefix}_events_failed_total"),
            duration: format!("{prefix}_event_processing_duration_seconds"),
            actions: format!("{prefix}_event_processing_actions_total"),
            db_duration: format!("{prefix}_db_operation_duration_seconds"),
            batch_size: format!("{prefix}_batch_size"),
            lag: format!("{prefix}_consumer_lag"),
            held: format!("{prefix}_batches_held_total"),
        }
    }

    pub fn batch(&self, size: usize) {
        histogram!(self.batch_size.clone(), "consumer_type" => self.consumer_type)
            .record(size as f64);
    }

    pub fn held(&self) {
        counter!(self.held.clone(), "consumer_type" => self.consumer_type).increment(1);
    }

    pub fn db_duration(&self, d: Duration) {
        histogram!(self.db_duration.clone(), "consumer_type" => self.consumer_type, "operation" => "batch").record(d.as_secs_f64());
    }

    pub fn lag(&self, pending: u64) {
        gauge!(self.lag.clone(), "consumer_type" => self.consumer_type).set(pending as f64);
    }

    /// Records a settled batch: received, processed or failed, and the action taken.
    pub fn settled(&self, events: &[InboundEvent], outcomes: &[Outcome], elapsed: Duration) {
        let mut groups: HashMap<(&str, &str, &'static str), u64> = HashMap::new();
        for (e, o) in events.iter().zip(outcomes) {
            *groups
                .entry((
                    event_type(&e.subject),
                    Subject::last_token(&e.subject),
                    o.action(),
                ))
                .or_default() += 1;
        }
        for ((event_type, company, action), n) in groups {
            let labels = [
                ("event_type", event_type.to_owned()),
                ("company_id", company.to_owned()),
                ("consumer_type", self.consumer_type.to_owned()),
            ];
            counter!(self.received.clone(), &labels).increment(n);
            match action {
                "ack" => counter!(self.processed.clone(), &labels).increment(n),
                _ => counter!(self.failed.clone(), &labels).increment(n),
            }
            let mut with_action = labels.to_vec();
            with_action.push(("action", action.to_owned()));
            counter!(self.actions.clone(), &with_action).increment(n);
            histogram!(self.duration.clone(), "event_type" => event_type.to_owned(), "consumer_type" => self.consumer_type).record(elapsed.as_secs_f64());
        }
    }
}

/// `chats.upsert`, … or `unknown`.
fn event_type(subject: &str) -> &str {
    let mut parts = subject.splitn(4, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(family), Some(action)) => {
            let end = 3 + family.len() + 1 + action.len();
            subject.get(3..end).unwrap_or("unknown")
        }
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_types() {
        assert_eq!(super::event_type("v1.chats.upsert.CMP"), "chats.upsert");
        assert_eq!(super::event_type("v1.dlq.CMP"), "dlq.CMP");
        assert_eq!(super::event_type("x"), "unknown");
    }
}
