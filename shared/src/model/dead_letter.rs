//! Dead letters: the JSON envelope published to `v1.dlq.<company>`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error_type::ErrorType;

/// How much of a body that is not JSON (or too large) the envelope keeps.
pub const RAW_KEEP_BYTES: usize = 64 * 1024;

/// The message published to the dead-letter stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterEnvelope {
    pub source_subject: String,
    pub company: String,
    /// The original body when it was JSON (for a history item: a one-item batch), else null.
    pub original_payload: Option<Box<RawValue>>,
    /// The original bytes (at most 64 KiB) when they were not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_payload_base64: Option<String>,
    /// Size of an oversized body, whose base64 holds only its first 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_size: Option<usize>,
    pub error: String,
    pub error_type: ErrorType,
    pub retry_count: u32,
    pub max_retry: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<usize>,
    /// Unix seconds when the envelope was made.
    pub ts: i64,
    /// The original's stream (absent in envelopes of earlier versions, as are the next three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stream: Option<String>,
    /// The original's sequence in its stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sequence: Option<u64>,
    /// When the stream stored the original (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    /// The durable consumer that dead-lettered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
}

/// Where the original of a dead letter was: its stream position, publish time and consumer.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition<'a> {
    pub stream: &'a str,
    pub sequence: u64,
    pub published_at: DateTime<Utc>,
    pub consumer: &'a str,
}

/// What the envelope is built from.
#[derive(Clone)]
pub struct EnvelopeInput<'a> {
    pub source_subject: &'a str,
    pub company: &'a str,
    pub payload: &'a [u8],
    pub error_type: ErrorType,
    pub error: &'a str,
    pub retry_count: u32,
    pub max_retry: u32,
    pub item_index: Option<usize>,
}

impl DeadLetterEnvelope {
    pub fn build(input: EnvelopeInput<'_>) -> Self {
        let json = (input.error_type != ErrorType::TooLarge)
            .then(|| std::str::from_utf8(input.payload).ok())
            .flatten()
            .and_then(|s| serde_json::from_str::<Box<RawValue>>(s).ok())
            // A body of `null` would read back as no payload at all: it is kept as bytes.
            .filter(|raw| raw.get() != "null");
        let item_payload = match (&json, input.item_index) {
            (Some(raw), Some(index)) => {
                super::history::history_item_as_batch(input.source_subject, raw, index)
            }
            _ => None,
        };
        let (original_payload, base64, size) = match (item_payload, json) {
            (Some(item), _) => (Some(item), None, None),
            (None, Some(raw)) => (Some(raw), None, None),
            (None, None) => {
                let keep = &input.payload[..input.payload.len().min(RAW_KEEP_BYTES)];
                let size = (input.payload.len() > RAW_KEEP_BYTES).then_some(input.payload.len());
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(keep)),
                    size,
                )
            }
        };
        DeadLetterEnvelope {
            source_subject: input.source_subject.to_owned(),
            company: input.company.to_owned(),
            original_payload,
            original_payload_base64: base64,
            original_size: size
                .or((input.error_type == ErrorType::TooLarge).then_some(input.payload.len())),
            error: input.error.to_owned(),
            error_type: input.error_type,
            retry_count: input.retry_count,
            max_retry: input.max_retry,
            item_index: input.item_index,
            ts: chrono::Utc::now().timestamp(),
            source_stream: None,
            source_sequence: None,
            published_at: None,
            consumer: None,
        }
    }

    /// This envelope with the original's position: dlq-retry re-runs the original as the
    /// stream message it was (its inbox key and publish time), through the consumer's function.
    pub fn at(self, source: SourcePosition<'_>) -> Self {
        DeadLetterEnvelope {
            source_stream: Some(source.stream.to_owned()),
            source_sequence: Some(source.sequence),
            published_at: Some(source.published_at),
            consumer: Some(source.consumer.to_owned()),
            ..self
        }
    }

    /// This envelope, or, when its JSON would be longer than `max_bytes` (the server's
    /// `max_payload`, less room for headers), the same with the body cut to its first
    /// [`RAW_KEEP_BYTES`] in `original_payload_base64` and its size in `original_size`: a dead
    /// letter the server would refuse could never be stored, and its original never settled.
    pub fn within(mut self, payload: &[u8], max_bytes: usize) -> Self {
        if self.to_json().len() <= max_bytes {
            return self;
        }
        let keep = &payload[..payload.len().min(RAW_KEEP_BYTES)];
        self.original_payload = None;
        self.original_payload_base64 = Some(base64::engine::general_purpose::STANDARD.encode(keep));
        self.original_size = Some(payload.len());
        self
    }

    /// The bytes to re-run: the JSON payload, or the decoded raw bytes.
    pub fn original_bytes(&self) -> Option<Vec<u8>> {
        if let Some(raw) = &self.original_payload {
            return Some(raw.get().as_bytes().to_vec());
        }
        let b64 = self.original_payload_base64.as_ref()?;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelope serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        payload: &'a [u8],
        error_type: ErrorType,
        item_index: Option<usize>,
    ) -> EnvelopeInput<'a> {
        EnvelopeInput {
            source_subject: "v1.history.messages.CMP001",
            company: "CMP001",
            payload,
            error_type,
            error: "boom",
            retry_count: 1,
            max_retry: 5,
            item_index,
        }
    }

    #[test]
    fn json_payload_is_kept_as_json() {
        let env = DeadLetterEnvelope::build(input(br#"{"a":1}"#, ErrorType::Validation, None));
        let v: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(v["original_payload"], serde_json::json!({"a":1}));
        assert!(v.get("original_payload_base64").is_none());
        assert_eq!(v["error_type"], "validation");
        assert_eq!(v["company"], "CMP001");
    }

    #[test]
    fn raw_bytes_are_base64_and_round_trip() {
        let env = DeadLetterEnvelope::build(input(b"not json\xff", ErrorType::Malformed, None));
        assert!(env.original_payload.is_none());
        assert_eq!(env.original_bytes().unwrap(), b"not json\xff");
        let back: DeadLetterEnvelope = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(back.original_bytes().unwrap(), b"not json\xff");
        assert_eq!(back.error_type, ErrorType::Malformed);
    }

    #[test]
    fn oversized_bodies_keep_their_head_and_size() {
        let body = vec![b'{'; RAW_KEEP_BYTES * 3];
        let env = DeadLetterEnvelope::build(input(&body, ErrorType::TooLarge, None));
        assert_eq!(env.original_size, Some(body.len()));
        assert_eq!(env.original_bytes().unwrap().len(), RAW_KEEP_BYTES);
    }

    #[test]
    fn an_envelope_too_long_for_the_server_keeps_the_first_bytes_only() {
        let body = format!("{{\"message_text\":\"{}\"}}", "x".repeat(200_000));
        let input = EnvelopeInput {
            source_subject: "v1.messages.upsert.ACME",
            company: "ACME",
            payload: body.as_bytes(),
            error_type: ErrorType::Validation,
            error: "message_id is missing",
            retry_count: 1,
            max_retry: 5,
            item_index: None,
        };
        let whole = DeadLetterEnvelope::build(input.clone()).within(body.as_bytes(), 1 << 20);
        assert!(whole.original_payload.is_some(), "fits: kept whole");
        let cut = DeadLetterEnvelope::build(input).within(body.as_bytes(), 100_000);
        assert!(cut.original_payload.is_none());
        assert_eq!(cut.original_size, Some(body.len()));
        assert_eq!(
            cut.original_bytes().unwrap(),
            body.as_bytes()[..RAW_KEEP_BYTES]
        );
        assert!(cut.to_json().len() <= 100_000);
    }

    #[test]
    fn a_history_item_is_cut_out_whatever_its_neighbours_hold() {
        // A lone surrogate and a number no float holds, in items other than the dead one.
        let body = br#"{"messages":[{"message_id":"a\ud800"},{"message_id":"b","n":1e400}],"agent_id":"AG","x":1}"#;
        let env = DeadLetterEnvelope::build(input(body, ErrorType::Validation, Some(1)));
        assert_eq!(
            env.original_payload.unwrap().get(),
            r#"{"messages":[{"message_id":"b","n":1e400}],"agent_id":"AG"}"#
        );
        let chats = br#"{"chats":[{"chat_id":"a"},{"chat_id":"b\ud800"}]}"#;
        let env = DeadLetterEnvelope::build(EnvelopeInput {
            source_subject: "v1.history.chats.CMP001",
            ..input(chats, ErrorType::Validation, Some(1))
        });
        assert_eq!(
            env.original_payload.unwrap().get(),
            r#"{"chats":[{"chat_id":"b\ud800"}]}"#
        );
    }

    #[test]
    fn a_body_of_null_reads_back() {
        let env = DeadLetterEnvelope::build(input(b" null ", ErrorType::Validation, None));
        let back: DeadLetterEnvelope = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(back.original_bytes().unwrap(), b" null ");
    }

    #[test]
    fn history_item_becomes_a_one_item_batch() {
        let body = br#"{"messages":[{"message_id":"a"},{"message_id":"b"}],"agent_id":"AG"}"#;
        let env = DeadLetterEnvelope::build(input(body, ErrorType::Validation, Some(1)));
        let v: serde_json::Value =
            serde_json::from_str(env.original_payload.unwrap().get()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"messages":[{"message_id":"b"}],"agent_id":"AG"})
        );
    }
}
