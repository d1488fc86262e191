//! Metrics under the earlier service's names, so its dashboards keep working.
//!
//! Counters are aggregated per batch (one increment per event type, tenant and action), not
//! per event.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::model::Subject;
use crate::pipeline::{InboundEvent, Outcome};

mod cloudwatch;
pub use cloudwatch::CloudWatchSink;

/// Installs the Prometheus recorder (once per process) and returns the handle that renders it.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()
}

/// The metric family of a function: `message_event_service` (realtime, historical), `dlq`,
/// `onboarding`.
#[derive(Clone)]
pub struct EventMetrics {
    consumer_type: &'static str,
    cloudwatch: Option<Arc<CloudWatchSink>>,
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
            cloudwatch: None,
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

    /// Also sends the counts to CloudWatch (low-cardinality dimensions only).
    pub fn with_cloudwatch(mut self, sink: Arc<CloudWatchSink>) -> Self {
        self.cloudwatch = Some(sink);
        self
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
        for ((event_type, company, action), n) in group(events, outcomes) {
            if let Some(cw) = &self.cloudwatch {
                let outcome = if action == "ack" {
                    &self.processed
                } else {
                    &self.failed
                };
                cw.add(&self.received, self.consumer_type, event_type, n as f64);
                cw.add(outcome, self.consumer_type, event_type, n as f64);
            }
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

/// Events counted by (event type, tenant, action).
fn group<'a>(
    events: &'a [InboundEvent],
    outcomes: &[Outcome],
) -> HashMap<(&'a str, &'a str, &'static str), u64> {
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
    groups
}

/// CloudWatch Embedded Metric Format lines (Lambda mode: the log line is the metric).
#[derive(Debug, Clone)]
pub struct Emf {
    pub namespace: String,
    pub prefix: String,
    pub consumer_type: &'static str,
}

impl Emf {
    /// One EMF line per event type of the batch, dimensions `consumer_type` and `event_type`.
    pub fn lines(
        &self,
        events: &[InboundEvent],
        outcomes: &[Outcome],
        elapsed: Duration,
    ) -> Vec<String> {
        let mut per_type: HashMap<&str, (u64, u64)> = HashMap::new();
        for ((event_type, _, action), n) in group(events, outcomes) {
            let e = per_type.entry(event_type).or_default();
            if action == "ack" {
                e.0 += n;
            } else {
                e.1 += n;
            }
        }
        let p = &self.prefix;
        let mut types: Vec<_> = per_type.into_iter().collect();
        types.sort();
        types
            .into_iter()
            .map(|(event_type, (ok, failed))| {
                let mut line = serde_json::json!({
                    "_aws": {
                        "Timestamp": chrono::Utc::now().timestamp_millis(),
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": [["consumer_type", "event_type"]],
                            "Metrics": [
                                {"Name": format!("{p}_events_received_total"), "Unit": "Count"},
                                {"Name": format!("{p}_events_processed_total"), "Unit": "Count"},
                                {"Name": format!("{p}_events_failed_total"), "Unit": "Count"},
                                {"Name": format!("{p}_event_processing_duration_seconds"), "Unit": "Seconds"},
                            ],
                        }],
                    },
                    "consumer_type": self.consumer_type,
                    "event_type": event_type,
                });
                let obj = line.as_object_mut().expect("object");
                obj.insert(format!("{p}_events_received_total"), (ok + failed).into());
                obj.insert(format!("{p}_events_processed_total"), ok.into());
                obj.insert(format!("{p}_events_failed_total"), failed.into());
                obj.insert(format!("{p}_event_processing_duration_seconds"), elapsed.as_secs_f64().into());
                line.to_string()
            })
            .collect()
    }

    /// Writes the lines to stdout, where Lambda's log capture turns them into metrics.
    pub fn emit(&self, events: &[InboundEvent], outcomes: &[Outcome], elapsed: Duration) {
        for line in self.lines(events, outcomes, elapsed) {
            println!("{line}");
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
