//! Lambda mode: the batch request the bridge sends, the `batchItemFailures` response, the
//! scheduled pruning request, and the handler loop on the Lambda Runtime API. The same core
//! decides every outcome; only its wire form differs from the standalone runner's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::functions::{FunctionHandler, FunctionSpec};
use crate::metrics::Emf;
use crate::model::ErrorType;
use crate::pipeline::{DeadLetter, Handler, InboundEvent, Outcome};
use crate::settings::{DbSettings, Settings};
use crate::startup::{lazy_pool, StartupError};
use crate::store::placement::Placements;
use crate::telemetry::spans;
use tracing::Instrument;

/// One JetStream message, as the bridge hands it to the function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub subject: String,
    /// The body, base64.
    pub data: String,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    pub stream: String,
    pub stream_sequence: u64,
    pub delivered: u32,
    pub published_at: DateTime<Utc>,
    /// The durable consumer it was fetched from (for `last_metadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchRequest {
    pub records: Vec<Record>,
    /// The W3C trace context of the bridge's invoke span: the handler's span continues it.
    /// Each record's own `traceparent` header (its producer's) stays in its headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// What an invocation asks for: a batch of messages from the bridge, or the scheduled pruning
/// of the inboxes (`{"prune": {}}`, sent by the schedule in `template.yaml`).
#[derive(Debug, Clone)]
pub enum Invocation {
    Batch(BatchRequest),
    Prune,
}

/// The request of the scheduled pruning.
pub const PRUNE_REQUEST: &str = r#"{"prune": {}}"#;

impl Invocation {
    /// Reads an invocation's payload; anything else is refused with an error that says what is
    /// expected.
    pub fn parse(payload: serde_json::Value) -> Result<Self, String> {
        const EXPECTED: &str = r#"expected {"records": […]} (a batch from wa-bridge) or {"prune": {}} (the scheduled pruning)"#;
        let serde_json::Value::Object(fields) = &payload else {
            return Err(format!("the invocation is not a JSON object: {EXPECTED}"));
        };
        if fields.contains_key("records") {
            return serde_json::from_value(payload)
                .map(Invocation::Batch)
                .map_err(|e| format!("invalid batch: {e}"));
        }
        match fields.get("prune") {
            Some(serde_json::Value::Object(options)) if fields.len() == 1 && options.is_empty() => {
                Ok(Invocation::Prune)
            }
            Some(_) => Err(format!(
                r#"invalid pruning request: expected exactly {PRUNE_REQUEST} (the retention is INBOX_RETENTION)"#
            )),
            None => Err(format!("unrecognised invocation: {EXPECTED}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Retry,
    DeadLetter,
}

/// A record that did not simply succeed. A `dead_letter` entry with `item_index` is one item
/// of a history batch; the record itself succeeded unless it has an entry without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<usize>,
    /// A `retry` that is no processing attempt: the record's tenant cannot take events yet
    /// (its schema awaits adoption), so it waits without spending the delivery budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<ItemFailure>,
}

/// A record whose data is not base64: the bridge sent something it never sends.
#[derive(Debug, thiserror::Error)]
#[error("record {id}: data is not base64: {source}")]
pub struct BadRecord {
    pub id: String,
    pub source: base64::DecodeError,
}

impl Record {
    pub fn from_event(id: String, e: &InboundEvent) -> Self {
        Record {
            id,
            subject: e.subject.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&e.payload),
            headers: e.headers.iter().cloned().collect(),
            stream: e.stream.clone(),
            stream_sequence: e.stream_sequence,
            delivered: e.delivered,
            published_at: e.published_at,
            consumer: Some(e.consumer.clone()),
        }
    }

    pub fn to_event(&self) -> Result<InboundEvent, BadRecord> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|source| BadRecord {
                id: self.id.clone(),
                source,
            })?;
        Ok(InboundEvent {
            subject: self.subject.clone(),
            payload: payload.into(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            stream: self.stream.clone(),
            stream_sequence: self.stream_sequence,
            consumer: self.consumer.clone().unwrap_or_default(),
            delivered: self.delivered,
            attempt: self.delivered,
            published_at: self.published_at,
        })
    }
}

/// Outcomes in their Lambda form.
pub fn to_response(records: &[Record], outcomes: &[Outcome]) -> BatchResponse {
    let mut failures = Vec::new();
    for (r, o) in records.iter().zip(outcomes) {
        let entry = |action, d: Option<&DeadLetter>, delay: Option<Duration>| ItemFailure {
            item_identifier: r.id.clone(),
            action,
            delay_ms: delay.map(|d| d.as_millis() as u64),
            error_type: d.map(|d| d.error_type),
            error: d.map(|d| d.error.clone()),
            item_index: d.and_then(|d| d.item_index),
            wait: false,
        };
        match o {
            Outcome::Ack => {}
            Outcome::AckWithDeadItems(items) => failures.extend(
                items
                    .iter()
                    .map(|d| entry(Action::DeadLetter, Some(d), None)),
            ),
            Outcome::Retry { delay } => failures.push(entry(Action::Retry, None, Some(*delay))),
            Outcome::Wait { delay } => failures.push(ItemFailure {
                wait: true,
                ..entry(Action::Retry, None, Some(*delay))
            }),
            Outcome::DeadLetter(d) => failures.push(entry(Action::DeadLetter, Some(d), None)),
        }
    }
    BatchResponse {
        batch_item_failures: failures,
    }
}

/// The outcomes a response stands for, one per record (the bridge's side).
pub fn from_response(records: &[Record], response: &BatchResponse) -> Vec<Outcome> {
    let index: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut outcomes = vec![Outcome::Ack; records.len()];
    for f in &response.batch_item_failures {
        let Some(&i) = index.get(f.item_identifier.as_str()) else {
            tracing::warn!(id = %f.item_identifier, "response names an unknown record; ignored");
            continue;
        };
        let dead = DeadLetter {
            error_type: f.error_type.unwrap_or(ErrorType::Internal),
            error: f.error.clone().unwrap_or_default(),
            item_index: f.item_index,
        };
        outcomes[i] = match (
            f.action,
            f.item_index,
            std::mem::replace(&mut outcomes[i], Outcome::Ack),
        ) {
            (Action::Retry, _, _) if f.wait => Outcome::Wait {
                delay: Duration::from_millis(f.delay_ms.unwrap_or(1000)),
            },
            (Action::Retry, _, _) => Outcome::Retry {
                delay: Duration::from_millis(f.delay_ms.unwrap_or(1000)),
            },
            (Action::DeadLetter, None, _) => Outcome::DeadLetter(dead),
            (Action::DeadLetter, Some(_), Outcome::AckWithDeadItems(mut items)) => {
                items.push(dead);
                Outcome::AckWithDeadItems(items)
            }
            (Action::DeadLetter, Some(_), Outcome::Ack) => Outcome::AckWithDeadItems(vec![dead]),
            // A record-level outcome already decided wins over its items.
            (Action::DeadLetter, Some(_), other) => other,
        };
    }
    outcomes
}

/// Runs a function as an AWS Lambda handler: resources are built once per instance, the
/// Postgres pool holds one or two connections, the bridge does the acking.
pub async fn run(spec: &FunctionSpec, settings: Settings) -> Result<(), StartupError> {
    let pool = lazy_pool(&DbSettings {
        pool_size: settings.db.pool_size.clamp(1, 2),
        ..settings.db.clone()
    })?;
    let handler = Arc::new(FunctionHandler::new(
        spec.kind,
        pool.clone(),
        settings.processor.clone(),
    ));
    let emf = Emf {
        namespace: settings.metrics.namespace().to_owned(),
        prefix: spec.metrics_prefix.to_owned(),
        consumer_type: spec.consumer_type,
    };
    crate::metrics::emf_from_handlers(&emf.namespace);
    tracing::info!(bin = spec.bin, "serving Lambda invocations");
    let pruning = Pruning {
        placements: Arc::new(Placements::new(pool, &settings.processor.tenant_databases)),
        retention: settings.inbox_retention,
    };
    serve(handler, emf, pruning)
        .await
        .map_err(|e| StartupError::Lambda(e.to_string()))
}

/// What the scheduled pruning prunes: the databases of every placement, rows older than
/// `INBOX_RETENTION`.
pub struct Pruning {
    pub placements: Arc<Placements>,
    pub retention: Duration,
}

/// Serves invocations on the Lambda Runtime API until the runtime stops. An unavailable
/// database fails the invocation, so the bridge retries the whole batch (and the schedule
/// prunes again next time).
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    emf: Emf,
    pruning: Pruning,
) -> Result<(), lambda_runtime::Error> {
    let emf = Arc::new(emf);
    let pruning = Arc::new(pruning);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let handler = handler.clone();
            let emf = emf.clone();
            let pruning = pruning.clone();
            async move {
                let batch = match Invocation::parse(event.payload)? {
                    Invocation::Batch(batch) => batch,
                    Invocation::Prune => return prune(&pruning).await,
                };
                let span = spans::lambda_handler(
                    emf.consumer_type,
                    batch.records.len(),
                    batch.traceparent.as_deref(),
                    batch.tracestate.as_deref(),
                );
                let answer = handle_batch(&*handler, &emf, &batch.records)
                    .instrument(span.clone())
                    .await;
                if answer.is_err() {
                    spans::failed(&span);
                }
                drop(span);
                // The runtime is frozen between invocations: this one's spans leave now.
                crate::telemetry::flush().await;
                answer
            }
        },
    ))
    .await
}

/// One batch of an invocation: its outcomes in their Lambda form.
async fn handle_batch<H: Handler>(
    handler: &H,
    emf: &Emf,
    records: &[Record],
) -> Result<serde_json::Value, lambda_runtime::Error> {
    let started = std::time::Instant::now();
    let events = records
        .iter()
        .map(Record::to_event)
        .collect::<Result<Vec<_>, _>>()?;
    let span = tracing::info_span!("batch", size = events.len());
    spans::link_producers(&span, events.iter().map(|e| e.headers.as_slice()));
    async {
        let outcomes = handler.handle(&events).await.map_err(|e| e.to_string())?;
        emf.emit(&events, &outcomes, started.elapsed());
        Ok(serde_json::to_value(to_response(records, &outcomes))?)
    }
    .instrument(span)
    .await
}

/// The scheduled pruning: the same pass as a standalone function's every six hours; the answer
/// says what it removed (`{"pruned": …}`).
async fn prune(pruning: &Pruning) -> Result<serde_json::Value, lambda_runtime::Error> {
    let pruned = crate::startup::prune_once(&pruning.placements, pruning.retention)
        .await
        .map_err(|e| format!("pruning: {e}"))?;
    pruned.log();
    Ok(serde_json::json!({ "pruned": pruned }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: id.into(),
            subject: "v1.chats.update.C".into(),
            data: base64::engine::general_purpose::STANDARD.encode(b"{}"),
            headers: HashMap::new(),
            stream: "s".into(),
            stream_sequence: 1,
            delivered: 1,
            published_at: Utc::now(),
            consumer: None,
        }
    }

    #[test]
    fn outcomes_survive_the_round_trip() {
        let records: Vec<_> = ["a", "b", "c", "d"].map(record).to_vec();
        let dead = |i: Option<usize>| DeadLetter {
            error_type: ErrorType::Validation,
            error: "bad".into(),
            item_index: i,
        };
        let outcomes = vec![
            Outcome::Ack,
            Outcome::Retry {
                delay: Duration::from_millis(2000),
            },
            Outcome::DeadLetter(dead(None)),
            Outcome::AckWithDeadItems(vec![dead(Some(1)), dead(Some(3))]),
        ];
        let response = to_response(&records, &outcomes);
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["batchItemFailures"][0]["itemIdentifier"], "b");
        assert_eq!(json["batchItemFailures"][0]["action"], "retry");
        assert_eq!(json["batchItemFailures"][0]["delay_ms"], 2000);
        assert_eq!(json["batchItemFailures"][1]["action"], "dead_letter");
        assert_eq!(json["batchItemFailures"][1]["error_type"], "validation");
        let back: BatchResponse = serde_json::from_value(json).unwrap();
        assert_eq!(from_response(&records, &back), outcomes);
    }

    #[test]
    fn a_wait_is_a_retry_marked_as_no_attempt() {
        let records = vec![record("a")];
        let outcomes = vec![Outcome::Wait {
            delay: Duration::from_secs(5),
        }];
        let json = serde_json::to_value(to_response(&records, &outcomes)).unwrap();
        let failure = &json["batchItemFailures"][0];
        assert_eq!(
            (&failure["action"], &failure["delay_ms"], &failure["wait"]),
            (&"retry".into(), &5000.into(), &true.into())
        );
        let back: BatchResponse = serde_json::from_value(json).unwrap();
        assert_eq!(from_response(&records, &back), outcomes);
        // A plain retry carries no flag.
        let retry = to_response(
            &records,
            &[Outcome::Retry {
                delay: Duration::from_secs(1),
            }],
        );
        assert!(serde_json::to_value(retry).unwrap()["batchItemFailures"][0]
            .get("wait")
            .is_none());
    }

    #[test]
    fn invocations_are_batches_or_the_pruning() {
        let batch = serde_json::to_value(BatchRequest {
            records: vec![record("a")],
            ..BatchRequest::default()
        })
        .unwrap();
        assert!(
            matches!(Invocation::parse(batch), Ok(Invocation::Batch(b)) if b.records.len() == 1)
        );
        let prune = serde_json::from_str(PRUNE_REQUEST).unwrap();
        assert!(matches!(Invocation::parse(prune), Ok(Invocation::Prune)));
        for bad in [
            r#"{"prune": {"older_than": "1s"}}"#,
            r#"{"prune": true}"#,
            r#"{"hello": 1}"#,
            r#"[]"#,
            r#"{"records": [{"id": 1}]}"#,
        ] {
            let err = Invocation::parse(serde_json::from_str(bad).unwrap()).unwrap_err();
            assert!(
                err.contains("expected") || err.contains("invalid batch"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn records_decode_their_data() {
        let e = record("x").to_event().unwrap();
        assert_eq!(&e.payload[..], b"{}");
        let mut bad = record("y");
        bad.data = "***".into();
        assert!(bad.to_event().is_err());
    }
}
