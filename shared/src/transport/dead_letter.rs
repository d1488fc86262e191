//! Publishing dead letters: the envelope of SPEC §7 to `v1.dlq.<company>`, deduplicated by
//! `Nats-Msg-Id`, confirmed by the stream before the original is terminated.

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::model::{DeadLetterEnvelope, EnvelopeInput, SourcePosition, Subject, TenantId};
use crate::pipeline::{DeadLetter, InboundEvent};
use crate::telemetry::spans;
use tracing::Instrument;

/// One dead letter ready to publish.
#[derive(Debug, Clone)]
pub struct DeadLetterMessage {
    pub subject: String,
    pub msg_id: String,
    pub body: Bytes,
}

/// Room left in a message for its headers (`Nats-Msg-Id` and the protocol's own).
const HEADER_ROOM: usize = 1024;

/// Builds the DLQ message for `event` (or one item of it) with the given reason, no longer
/// than the server's `max_payload` allows.
pub fn dead_letter_message(
    event: &InboundEvent,
    dead: &DeadLetter,
    max_retry: u32,
    max_payload: usize,
) -> DeadLetterMessage {
    let token = Subject::last_token(&event.subject);
    let (subject, company) = match TenantId::parse(token) {
        Ok(t) => (Subject::dead_letter(t.as_str()), t.as_str().to_owned()),
        Err(_) => (Subject::INVALID_TENANT_DLQ.to_owned(), token.to_owned()),
    };
    let envelope = DeadLetterEnvelope::build(EnvelopeInput {
        source_subject: &event.subject,
        company: &company,
        payload: &event.payload,
        error_type: dead.error_type,
        error: &dead.error,
        retry_count: event.attempt,
        max_retry,
        item_index: dead.item_index,
    })
    .at(SourcePosition {
        stream: &event.stream,
        sequence: event.stream_sequence,
        published_at: event.published_at,
        consumer: &event.consumer,
    })
    .within(&event.payload, max_payload.saturating_sub(HEADER_ROOM));
    let msg_id = match dead.item_index {
        Some(i) => format!("{}:{}:{i}", event.stream, event.stream_sequence),
        None => format!("{}:{}", event.stream, event.stream_sequence),
    };
    DeadLetterMessage {
        subject,
        msg_id,
        body: envelope.to_json().into(),
    }
}

/// Publishes dead letters and waits for the stream to store each of them. With traces, each
/// carries the `traceparent` of the publishing span, so dlq-retry continues the trace.
pub async fn publish_all(
    js: &Context,
    messages: &[DeadLetterMessage],
) -> Result<(), async_nats::Error> {
    let span = spans::dlq_publish(messages.len());
    let trace = spans::trace_headers(&span);
    let published = async {
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
            if let Some(t) = &trace {
                headers.insert(spans::TRACEPARENT, t.traceparent.as_str());
                if let Some(state) = &t.tracestate {
                    headers.insert(spans::TRACESTATE, state.as_str());
                }
            }
            pending.push(
                js.publish_with_headers(m.subject.clone(), headers, m.body.clone())
                    .await?,
            );
        }
        for ack in pending {
            ack.await?;
        }
        Ok(())
    }
    .instrument(span.clone())
    .await;
    if published.is_err() {
        spans::failed(&span);
    }
    published
}
