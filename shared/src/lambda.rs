//! Lambda mode: the batch request the bridge sends, the `batchItemFailures` response, and the
//! handler loop on the Lambda Runtime API. The same core decides every outcome; only its
//! wire form differs from the standalone runner's.

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
        };
        match o {
            Outcome::Ack => {}
            Outcome::AckWithDeadItems(items) => failures.extend(
                items
                    .iter()
                    .map(|d| entry(Action::DeadLetter, Some(d), None)),
            ),
            Outcome::Retry { delay } => failures.push(entry(Action::Retry, None, Some(*delay))),
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
        pool,
        settings.processor.clone(),
    ));
    let emf = Emf {
        namespace: settings.metrics.namespace().to_owned(),
        prefix: spec.metrics_prefix.to_owned(),
        consumer_type: spec.consumer_type,
    };
    tracing::info!(bin = spec.bin, "serving Lambda invocations");
    serve(handler, emf)
        .await
        .map_err(|e| StartupError::Lambda(e.to_string()))
}

/// Serves invocations on the Lambda Runtime API until the runtime stops. An unavailable
/// database fails the invocation, so the bridge retries the whole batch.
pub async fn serve<H: Handler>(handler: Arc<H>, emf: Emf) -> Result<(), lambda_runtime::Error> {
    let emf = Arc::new(emf);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<BatchRequest>| {
            let handler = handler.clone();
            let emf = emf.clone();
            async move {
                let started = std::time::Instant::now();
                let records = event.payload.records;
                let events = records
                    .iter()
                    .map(Record::to_event)
                    .collect::<Result<Vec<_>, _>>()?;
                let outcomes = handler.handle(&events).await.map_err(|e| e.to_string())?;
                emf.emit(&events, &outcomes, started.elapsed());
                Ok::<_, lambda_runtime::Error>(to_response(&records, &outcomes))
            }
        },
    ))
    .await
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
    fn records_decode_their_data() {
        let e = record("x").to_event().unwrap();
        assert_eq!(&e.payload[..], b"{}");
        let mut bad = record("y");
        bad.data = "***".into();
        assert!(bad.to_event().is_err());
    }
}
