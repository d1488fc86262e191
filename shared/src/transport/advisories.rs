//! The safety net behind unlimited deliveries: messages the server gave up on anyway.
//!
//! Consumers are created with unlimited server-side deliveries, so the server never drops a
//! message on its own. An operator can still set a limit on a consumer, or terminate a message
//! by hand; the server then publishes an advisory and forgets the message. Every runner listens
//! to its consumer's max-deliveries and terminated advisories (one process of a queue group
//! handles each) and runs the message once more through the same handler: an event already
//! applied is found in the inbox and left alone, one that is not is applied, and one that still
//! fails is dead-lettered (`retry_exhausted` when it asked for a retry). Advisories are
//! best-effort, so this is a net under the unlimited deliveries, not a replacement for them.

use std::sync::Arc;

use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::Context;
use async_nats::Client;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::model::ErrorType;
use crate::pipeline::{DeadLetter, Handler, InboundEvent, Outcome};

use super::dead_letter::{dead_letter_message, publish_all, DeadLetterMessage};
use super::runner::{header_pairs, Runner};

/// The advisory subjects of one consumer: deliveries exhausted, message terminated.
pub fn subjects(stream: &str, consumer: &str) -> [String; 2] {
    [
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"),
        format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{consumer}"),
    ]
}

/// The fields of both advisories that matter here.
#[derive(Debug, Deserialize)]
pub struct Advisory {
    #[serde(rename = "type")]
    pub kind: String,
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

impl Advisory {
    fn is_max_deliveries(&self) -> bool {
        self.kind.ends_with(".max_deliver")
    }
}

impl<H: Handler> Runner<H> {
    /// Handles this consumer's advisories until shutdown.
    pub(super) async fn watch_advisories(
        self: Arc<Self>,
        stream: String,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let consumer = self.settings.consumer.clone();
        let mut subscriptions = Vec::new();
        for subject in subjects(&stream, &consumer) {
            match subscribe(&self.client, subject.clone(), &consumer).await {
                Ok(s) => subscriptions.push(s),
                Err(e) => {
                    warn!(%subject, error = %e, "cannot listen to consumer advisories");
                }
            }
        }
        let mut advisories = futures::stream::select_all(subscriptions);
        while !*shutdown.borrow() {
            let msg = tokio::select! {
                m = advisories.next() => match m { Some(m) => m, None => return },
                _ = shutdown.changed() => return,
            };
            match serde_json::from_slice::<Advisory>(&msg.payload) {
                Ok(a) => self.recover(&a, &shutdown).await,
                Err(e) => warn!(subject = %msg.subject, error = %e, "unreadable advisory"),
            }
        }
    }

    /// Runs a message the server gave up on through the handler once more; publishes its dead
    /// letter if it still fails.
    async fn recover(&self, advisory: &Advisory, shutdown: &watch::Receiver<bool>) {
        warn!(stream = %advisory.stream, consumer = %advisory.consumer, seq = advisory.stream_seq, deliveries = advisory.deliveries, kind = %advisory.kind, "the server gave up on a message; processing it once more");
        let Some(event) = self.load(advisory, shutdown).await else {
            return;
        };
        let Some(outcomes) = self
            .persist(shutdown, "the database is back", || {
                self.handler.handle(std::slice::from_ref(&event))
            })
            .await
        else {
            return;
        };
        let dead = recovered_dead_letters(
            &event,
            &outcomes[0],
            advisory,
            self.settings.max_deliver,
            self.client.server_info().max_payload,
        );
        if dead.is_empty() {
            info!(
                seq = advisory.stream_seq,
                "message applied (or found applied) after the server gave up on it"
            );
            return;
        }
        if self
            .persist(shutdown, "the dead letters are stored", || {
                publish_all(&self.js, &dead)
            })
            .await
            .is_some()
        {
            error!(
                seq = advisory.stream_seq,
                "message the server gave up on is dead-lettered"
            );
        }
    }

    /// The message of an advisory, read from its stream. `None` when it is gone (expired or
    /// deleted: nothing is left to recover) or at shutdown.
    async fn load(
        &self,
        advisory: &Advisory,
        shutdown: &watch::Receiver<bool>,
    ) -> Option<InboundEvent> {
        let js: &Context = &self.js;
        let stored = self
            .persist(shutdown, "the stream answers", || async {
                let stream = js
                    .get_stream(&advisory.stream)
                    .await
                    .map_err(|e| e.to_string())?;
                match stream.get_raw_message(advisory.stream_seq).await {
                    Ok(m) => Ok(Some(m)),
                    Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?;
        let Some(m) = stored else {
            error!(stream = %advisory.stream, seq = advisory.stream_seq, "the message the server gave up on is no longer in its stream");
            return None;
        };
        let delivered = u32::try_from(advisory.deliveries)
            .unwrap_or(u32::MAX)
            .max(1);
        Some(InboundEvent {
            subject: m.subject.to_string(),
            payload: m.payload,
            headers: header_pairs(&m.headers),
            stream: advisory.stream.clone(),
            stream_sequence: advisory.stream_seq,
            consumer: advisory.consumer.clone(),
            delivered,
            attempt: delivered,
            published_at: m.time,
        })
    }
}

async fn subscribe(
    client: &Client,
    subject: String,
    consumer: &str,
) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
    // One process of those running this consumer handles each advisory.
    client
        .queue_subscribe(subject, format!("wa-advisories-{consumer}"))
        .await
}

/// The dead letters for a recovered message's outcome: the server will not deliver it again,
/// so a retry it asked for is exhausted now.
pub fn recovered_dead_letters(
    event: &InboundEvent,
    outcome: &Outcome,
    advisory: &Advisory,
    max_retry: u32,
    max_payload: usize,
) -> Vec<DeadLetterMessage> {
    match outcome {
        Outcome::Ack => Vec::new(),
        Outcome::AckWithDeadItems(items) => items
            .iter()
            .map(|d| dead_letter_message(event, d, max_retry, max_payload))
            .collect(),
        Outcome::DeadLetter(d) => vec![dead_letter_message(event, d, max_retry, max_payload)],
        Outcome::Retry { .. } | Outcome::Wait { .. } => {
            let why = if advisory.is_max_deliveries() {
                format!(
                    "the server stopped delivering it after {} deliveries",
                    advisory.deliveries
                )
            } else {
                "it was terminated on the server while still failing".to_owned()
            };
            let dead = DeadLetter::new(ErrorType::RetryExhausted, why);
            vec![dead_letter_message(event, &dead, max_retry, max_payload)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_advisories() {
        let max: Advisory = serde_json::from_str(r#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-01-01T00:00:00Z","stream":"wa_events_stream","consumer":"wa_realtime","stream_seq":892,"deliveries":5}"#).unwrap();
        assert!(max.is_max_deliveries());
        assert_eq!((max.stream_seq, max.deliveries), (892, 5));
        let term: Advisory = serde_json::from_str(r#"{"type":"io.nats.jetstream.advisory.v1.terminated","id":"y","timestamp":"2026-01-01T00:00:00Z","stream":"s","consumer":"c","consumer_seq":3,"stream_seq":7,"deliveries":1,"reason":""}"#).unwrap();
        assert!(!term.is_max_deliveries());
        assert_eq!(
            subjects("s", "c")[0],
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.s.c"
        );
    }
}
