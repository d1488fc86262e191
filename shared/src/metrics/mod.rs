//! Metrics under the earlier service's names, so its dashboards keep working.
//!
//! Counters are aggregated per batch (one increment per event type, tenant and action), not
//! per event. The series the shipped alert rules watch (`ops/prometheus/alerts.yaml`) are
//! registered at zero when a process starts, so that an alert never waits on a series that
//! appears only with the first failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::model::{ErrorType, Subject};
use crate::pipeline::{InboundEvent, Outcome};

mod cloudwatch;
mod tenant_counts;
pub use cloudwatch::CloudWatchSink;
pub use tenant_counts::TenantCounts;

/// Buckets of every `*_seconds` histogram: 0.5 ms to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of every `*_batch_size` histogram (events per batch): 1 to 10,000.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// How often the recorder folds histogram samples into their buckets (the exporter's own
/// default for the recorders it runs itself).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// `1` while the process is ready (what `/ready` answers 200 for), `0` otherwise; label
/// `process` (the binary). Kept current by [`crate::http::Readiness::spawn_ready_gauge`].
pub const READY: &str = "wa_events_ready";

/// Dead letters that dlq-retry recorded in `exhausted_events` (labels `consumer_type`,
/// `error_type`): each one waits for an operator.
pub const EXHAUSTED: &str = "dlq_exhausted_events_total";

/// The recorder's configuration: each histogram family gets buckets that fit it. A histogram
/// no matcher names would be rendered as a summary; the unit tests check that none is left out.
fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_SIZE_BUCKETS)
}

/// What `/metrics` renders: the recorder's metrics and the per-tenant event counters
/// ([`TenantCounts`], kept apart from the recorder because there are so many).
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
    tenants: &'static TenantCounts,
}

impl Exporter {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        self.tenants.render_into(&mut text);
        text
    }
}

/// Installs the Prometheus recorder and the per-tenant counters (once per process) and returns
/// the exporter that renders them.
///
/// Also starts its upkeep (on the current Tokio runtime, which must exist): the recorder
/// keeps every histogram sample in memory until upkeep or a scrape folds them into buckets,
/// so a process nobody scrapes (`HTTP_PORT=0`, CloudWatch only, an unscraped bridge) would
/// otherwise grow by every sample it ever recorded.
pub fn install_prometheus() -> Result<Exporter, BuildError> {
    let handle = prometheus_builder()?.install_recorder()?;
    let tenants = tenant_counts::install();
    let upkept = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            upkept.run_upkeep();
        }
    });
    Ok(Exporter { handle, tenants })
}

/// Registers at zero, for every error type, the exhausted-events counter (dlq-retry).
pub fn register_exhausted() {
    for error_type in ErrorType::ALL {
        exhausted_counter(error_type.as_str()).increment(0);
    }
}

/// Counts one dead letter recorded in `exhausted_events` (and, in Lambda mode, writes it as
/// an EMF line; see [`emf_from_handlers`]).
pub fn exhausted(error_type: &str) {
    exhausted_counter(error_type).increment(1);
    if let Some(namespace) = HANDLER_EMF.get() {
        println!(
            "{}",
            emf_line(
                namespace,
                &[("consumer_type", "dlq_retry"), ("error_type", error_type)],
                &[(EXHAUSTED, "Count", 1.into())],
            )
        );
    }
}

fn exhausted_counter(error_type: &str) -> metrics::Counter {
    counter!(EXHAUSTED, "consumer_type" => "dlq_retry", "error_type" => error_type.to_owned())
}

/// Lambda mode has no recorder: metrics that handlers count themselves (not per batch) are
/// written as EMF lines in `namespace` once this is called.
pub fn emf_from_handlers(namespace: &str) {
    let _ = HANDLER_EMF.set(namespace.to_owned());
}

static HANDLER_EMF: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The metric family of a function: `message_event_service` (realtime, historical), `dlq`,
/// `onboarding`.
#[derive(Clone)]
pub struct EventMetrics {
    consumer_type: &'static str,
    cloudwatch: Option<Arc<CloudWatchSink>>,
    /// The family's prefix: the per-tenant counters ([`TenantCounts`]) are named after it.
    prefix: Arc<str>,
    /// CloudWatch names of the received, processed and failed counts.
    received: String,
    processed: String,
    failed: String,
    duration: String,
    db_duration: String,
    batch_size: String,
    lag: String,
    held: String,
    dead_letters: String,
    /// The bridge's EMF namespace: lag, held batches and dead letters are also written as EMF
    /// lines (Lambda deployments have no Prometheus in the functions).
    emf: Option<Arc<str>>,
}

impl EventMetrics {
    pub fn new(prefix: &str, consumer_type: &'static str) -> Self {
        EventMetrics {
            consumer_type,
            cloudwatch: None,
            prefix: prefix.into(),
            received: format!("{prefix}_events_received_total"),
            processed: format!("{prefix}_events_processed_total"),
            failed: format!("{prefix}_events_failed_total"),
            duration: format!("{prefix}_event_processing_duration_seconds"),
            db_duration: format!("{prefix}_db_operation_duration_seconds"),
            batch_size: format!("{prefix}_batch_size"),
            lag: format!("{prefix}_consumer_lag"),
            held: format!("{prefix}_batches_held_total"),
            dead_letters: format!("{prefix}_dead_letters_total"),
            emf: None,
        }
    }

    /// Registers at zero the counters the alert rules watch (held batches, dead letters per
    /// error type), so they are exported from startup.
    pub fn register(&self) {
        counter!(self.held.clone(), "consumer_type" => self.consumer_type).increment(0);
        for error_type in ErrorType::ALL {
            self.dead_letter_counter(error_type).increment(0);
        }
    }

    /// Also writes consumer lag, held batches and dead letters as EMF lines on stdout, in
    /// this CloudWatch namespace (the bridge: the functions it invokes have no `/metrics`).
    pub fn with_emf(mut self, namespace: &str) -> Self {
        self.emf = Some(namespace.into());
        self
    }

    fn dead_letter_counter(&self, error_type: ErrorType) -> metrics::Counter {
        counter!(self.dead_letters.clone(), "consumer_type" => self.consumer_type, "error_type" => error_type.as_str())
    }

    /// One EMF line with the dimension `consumer_type`, if EMF is on.
    fn emf(&self, extra: Option<(&str, &str)>, name: &str, unit: &str, value: u64) {
        if let Some(namespace) = &self.emf {
            let mut dims = vec![("consumer_type", self.consumer_type)];
            dims.extend(extra);
            println!(
                "{}",
                emf_line(namespace, &dims, &[(name, unit, value.into())])
            );
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
        self.emf(None, &self.held, "Count", 1);
    }

    pub fn db_duration(&self, d: Duration) {
        histogram!(self.db_duration.clone(), "consumer_type" => self.consumer_type, "operation" => "batch").record(d.as_secs_f64());
    }

    pub fn lag(&self, pending: u64) {
        gauge!(self.lag.clone(), "consumer_type" => self.consumer_type).set(pending as f64);
        self.emf(None, &self.lag, "Count", pending);
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
            if let Some(tenants) = tenant_counts::installed() {
                tenants.add(
                    &self.prefix,
                    self.consumer_type,
                    event_type,
                    company,
                    action,
                    n,
                );
            }
            // One sample per event, so the histogram's count is the events processed.
            histogram!(self.duration.clone(), "event_type" => event_type.to_owned(), "consumer_type" => self.consumer_type).record_many(elapsed.as_secs_f64(), n as usize);
        }
        for (error_type, n) in dead_letters(outcomes) {
            self.dead_letter_counter(error_type).increment(n);
            self.emf(
                Some(("error_type", error_type.as_str())),
                &self.dead_letters,
                "Count",
                n,
            );
        }
    }
}

/// Dead letters of a settled batch (events and history items) per error type.
fn dead_letters(outcomes: &[Outcome]) -> Vec<(ErrorType, u64)> {
    let mut counts: Vec<(ErrorType, u64)> = Vec::new();
    let mut add = |t: ErrorType| match counts.iter_mut().find(|(e, _)| *e == t) {
        Some((_, n)) => *n += 1,
        None => counts.push((t, 1)),
    };
    for o in outcomes {
        match o {
            Outcome::DeadLetter(d) => add(d.error_type),
            Outcome::AckWithDeadItems(items) => items.iter().for_each(|d| add(d.error_type)),
            Outcome::Ack | Outcome::Retry { .. } | Outcome::Wait { .. } => {}
        }
    }
    counts
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

/// One CloudWatch Embedded Metric Format line: the log line is the metric. `dimensions` are
/// (name, value) pairs, all in one dimension set; `metrics` are (name, unit, value).
pub fn emf_line(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, &str, serde_json::Value)],
) -> String {
    use serde_json::{json, Map, Value};
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics
                    .iter()
                    .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        line.insert((*name).to_owned(), Value::from(*value));
    }
    for (name, _, value) in metrics {
        line.insert((*name).to_owned(), value.clone());
    }
    Value::Object(line).to_string()
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
        let names = [
            format!("{p}_events_received_total"),
            format!("{p}_events_processed_total"),
            format!("{p}_events_failed_total"),
            format!("{p}_event_processing_duration_seconds"),
        ];
        let mut types: Vec<_> = per_type.into_iter().collect();
        types.sort();
        types
            .into_iter()
            .map(|(event_type, (ok, failed))| {
                emf_line(
                    &self.namespace,
                    &[
                        ("consumer_type", self.consumer_type),
                        ("event_type", event_type),
                    ],
                    &[
                        (&names[0], "Count", (ok + failed).into()),
                        (&names[1], "Count", ok.into()),
                        (&names[2], "Count", failed.into()),
                        (&names[3], "Seconds", elapsed.as_secs_f64().into()),
                    ],
                )
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
    use super::*;
    use crate::pipeline::DeadLetter;

    #[test]
    fn event_types() {
        assert_eq!(super::event_type("v1.chats.upsert.CMP"), "chats.upsert");
        assert_eq!(super::event_type("v1.dlq.CMP"), "dlq.CMP");
        assert_eq!(super::event_type("x"), "unknown");
    }

    fn event(subject: &str) -> InboundEvent {
        InboundEvent {
            subject: subject.into(),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: Vec::new(),
            stream: "s".into(),
            stream_sequence: 1,
            consumer: "c".into(),
            delivered: 1,
            attempt: 1,
            published_at: chrono::Utc::now(),
        }
    }

    fn dead(error_type: ErrorType) -> DeadLetter {
        DeadLetter {
            error_type,
            error: "bad".into(),
            item_index: None,
        }
    }

    /// What a fresh recorder renders after `record` ran against it.
    fn rendered(record: impl FnOnce()) -> String {
        let recorder = prometheus_builder().unwrap().build_recorder();
        metrics::with_local_recorder(&recorder, record);
        recorder.handle().render()
    }

    fn metrics() -> EventMetrics {
        EventMetrics::new("message_event_service", "realtime")
    }

    #[test]
    fn every_histogram_has_buckets_that_fit_it() {
        let text = rendered(|| {
            let m = metrics();
            m.batch(3);
            m.db_duration(Duration::from_millis(2));
            m.settled(
                &[event("v1.chats.upsert.C")],
                &[Outcome::Ack],
                Duration::from_millis(3),
            );
        });
        assert!(
            text.contains(
                "message_event_service_batch_size_bucket{consumer_type=\"realtime\",le=\"5\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "message_event_service_batch_size_bucket{consumer_type=\"realtime\",le=\"2\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("message_event_service_db_operation_duration_seconds_bucket{consumer_type=\"realtime\",operation=\"batch\",le=\"0.0025\"} 1"), "{text}");
        assert!(text.contains("message_event_service_event_processing_duration_seconds_bucket{event_type=\"chats.upsert\",consumer_type=\"realtime\",le=\"10\"} 1"), "{text}");
        // A histogram without buckets of its own would be a summary.
        assert!(!text.contains("quantile="), "{text}");
        assert!(!text.contains(" summary"), "{text}");
    }

    #[test]
    fn durations_count_one_sample_per_event() {
        let text = rendered(|| {
            let events = [
                event("v1.chats.update.C"),
                event("v1.chats.update.C"),
                event("v1.chats.update.D"),
            ];
            metrics().settled(
                &events,
                &[Outcome::Ack, Outcome::Ack, Outcome::Ack],
                Duration::from_millis(1),
            );
        });
        assert!(text.contains("message_event_service_event_processing_duration_seconds_count{event_type=\"chats.update\",consumer_type=\"realtime\"} 3"), "{text}");
    }

    #[test]
    fn the_series_alerts_watch_exist_at_zero_from_the_start() {
        let text = rendered(|| {
            metrics().register();
            register_exhausted();
        });
        assert!(
            text.contains("message_event_service_batches_held_total{consumer_type=\"realtime\"} 0"),
            "{text}"
        );
        for t in ErrorType::ALL {
            let dead = format!(
                "message_event_service_dead_letters_total{{consumer_type=\"realtime\",error_type=\"{}\"}} 0",
                t.as_str()
            );
            assert!(text.contains(&dead), "{dead} in {text}");
            let exhausted = format!(
                "dlq_exhausted_events_total{{consumer_type=\"dlq_retry\",error_type=\"{}\"}} 0",
                t.as_str()
            );
            assert!(text.contains(&exhausted), "{exhausted} in {text}");
        }
        assert!(EXHAUSTED.starts_with(crate::functions::DLQ_RETRY.metrics_prefix));
    }

    #[test]
    fn dead_letters_are_counted_per_error_type_with_history_items() {
        let text = rendered(|| {
            let events = [
                event("v1.chats.upsert.C"),
                event("v1.history.contacts.C"),
                event("v1.chats.upsert.C"),
            ];
            let outcomes = [
                Outcome::DeadLetter(dead(ErrorType::Validation)),
                Outcome::AckWithDeadItems(vec![
                    dead(ErrorType::Validation),
                    dead(ErrorType::Malformed),
                ]),
                Outcome::Retry {
                    delay: Duration::from_secs(1),
                },
            ];
            metrics().settled(&events, &outcomes, Duration::from_millis(1));
        });
        assert!(text.contains("message_event_service_dead_letters_total{consumer_type=\"realtime\",error_type=\"validation\"} 2"), "{text}");
        assert!(text.contains("message_event_service_dead_letters_total{consumer_type=\"realtime\",error_type=\"malformed\"} 1"), "{text}");
        assert!(!text.contains("error_type=\"internal\""), "{text}");
    }

    #[test]
    fn emf_lines_name_their_dimensions_and_keep_counts_whole() {
        let line: serde_json::Value = serde_json::from_str(&emf_line(
            "NS",
            &[("consumer_type", "realtime")],
            &[
                ("message_event_service_consumer_lag", "Count", 42.into()),
                ("x_seconds", "Seconds", 0.5.into()),
            ],
        ))
        .unwrap();
        let m = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "NS");
        assert_eq!(m["Dimensions"], serde_json::json!([["consumer_type"]]));
        assert_eq!(
            m["Metrics"][0]["Name"],
            "message_event_service_consumer_lag"
        );
        assert_eq!(line["consumer_type"], "realtime");
        assert_eq!(
            line["message_event_service_consumer_lag"].as_i64(),
            Some(42)
        );
        assert_eq!(line["x_seconds"].as_f64(), Some(0.5));
        assert!(line["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
}
