//! What the fuzz targets share: the subject a selector byte picks, and the invariants every
//! decoded event and every dead letter must keep, whatever its bytes.

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use wa_shared::model::{
    decode, Category, DeadLetterEnvelope, DecodeError, EnvelopeInput, ErrorType, EventKind,
    Payload, SourcePosition, Subject, UnreadCount,
};

/// The tenant of every fuzzed subject: the fixtures' company, so that seeds pass the tenant check.
pub const TENANT: &str = "CMP001";

/// The default `MAX_PAYLOAD_BYTES` (SPEC §2) and the server's `max_payload` a dead letter fits in.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// What a dead letter keeps of a body that is not JSON (SPEC §7: its first 64 KiB).
pub const RAW_KEEP_BYTES: usize = 64 * 1024;

/// The error types decoding may return (SPEC §7): the others come from retries, the database
/// or a bug, never from a body.
pub const DECODE_ERROR_TYPES: [ErrorType; 4] = [
    ErrorType::Malformed,
    ErrorType::TooLarge,
    ErrorType::Validation,
    ErrorType::Tenant,
];

/// The subjects a target's selector byte picks from, in `subjects.txt`'s order. Panics (on the
/// first input) unless they are exactly the library's subjects of `category`, so a new event
/// kind cannot go unfuzzed.
pub fn subjects(target: &str, category: Category) -> Vec<Subject> {
    let subjects: Vec<Subject> = include_str!("../subjects.txt")
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(t, _)| *t == target)
        .map(|(_, base)| Subject::parse(&format!("{base}.{TENANT}")).expect("a known subject"))
        .collect();
    let mut listed: Vec<&str> = subjects.iter().map(|s| s.kind.base()).collect();
    let mut expected: Vec<&str> = EventKind::ALL
        .into_iter()
        .filter(|k| k.category() == category)
        .map(EventKind::base)
        .collect();
    listed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(
        listed, expected,
        "fuzz/subjects.txt must list every {category:?} subject of the library for {target}"
    );
    subjects
}

/// The subject picked by an input's first byte, and the body: the rest.
pub fn split<'a>(subjects: &'a [Subject], data: &'a [u8]) -> Option<(&'a Subject, &'a [u8])> {
    let (&selector, body) = data.split_first()?;
    Some((&subjects[usize::from(selector) % subjects.len()], body))
}

/// Whether `body` is UTF-8 text that serde_json reads as one JSON value (with its nesting
/// limit): what the library calls JSON when it keeps a body as JSON in a dead letter. (Read
/// from bytes, serde_json does not check the UTF-8 of strings it skips.)
pub fn is_json(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// Decodes `body` as realtime or historical processing does and checks what holds for any
/// body: no panic, a closed error type, empty and non-UTF-8 bodies malformed, only JSON
/// accepted, the payload shaped by the subject, the size limit honoured.
pub fn decode_checked<'a>(subject: &Subject, body: &'a [u8]) -> Result<Payload<'a>, DecodeError> {
    let result = decode(subject, body, MAX_PAYLOAD_BYTES);
    match &result {
        Err(e) => {
            assert!(
                DECODE_ERROR_TYPES.contains(&e.error_type),
                "decoding returned error type {} ({})",
                e.error_type,
                e.message
            );
            assert_eq!(e.error_type.as_str().parse(), Ok(e.error_type));
            assert!(
                !e.message.is_empty(),
                "a {} error without a message",
                e.error_type
            );
        }
        Ok(payload) => {
            assert!(is_json(body), "a body that is not JSON was accepted");
            check_shape(subject.kind, payload);
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) || std::str::from_utf8(body).is_err() {
        assert_eq!(
            result.as_ref().err().map(|e| e.error_type),
            Some(ErrorType::Malformed),
            "an empty or non-UTF-8 body must be malformed"
        );
    }
    if let Some(limit) = body.len().checked_sub(1) {
        let too_large = decode(subject, body, limit).map(drop);
        assert_eq!(
            too_large.map_err(|e| e.error_type),
            Err(ErrorType::TooLarge),
            "a body over the limit must be too_large"
        );
    }
    result
}

fn check_shape(kind: EventKind, payload: &Payload<'_>) {
    let ok = match (kind, payload) {
        (EventKind::ChatUpsert, Payload::Chat { unread, .. }) => *unread == UnreadCount::Absolute,
        (EventKind::ChatUpdate, Payload::Chat { unread, .. }) => *unread == UnreadCount::Delta,
        (EventKind::MessageUpsert, Payload::Message(_))
        | (EventKind::MessageUpdate, Payload::MessagePatch(_))
        | (EventKind::ContactUpsert | EventKind::ContactUpdate, Payload::Contact(_))
        | (EventKind::ConnectionUpdate, Payload::Agent(_)) => true,
        (kind, Payload::History(_)) => kind.category() == Category::Historical,
        _ => false,
    };
    assert!(ok, "{kind} decoded into {payload:?}");
}

/// Builds the dead letter of `body` as the runner does (fitted to the server's `max_payload`),
/// checks that its JSON reads back as the same envelope, and returns the envelope read back:
/// what dlq-retry gets.
pub fn dead_letter(
    subject: &Subject,
    body: &[u8],
    error_type: ErrorType,
    error: &str,
    item_index: Option<usize>,
    max_bytes: usize,
) -> DeadLetterEnvelope {
    let source_subject = subject.to_string();
    let built = DeadLetterEnvelope::build(EnvelopeInput {
        source_subject: &source_subject,
        company: TENANT,
        payload: body,
        error_type,
        error,
        retry_count: 1,
        max_retry: 5,
        item_index,
    })
    .at(SourcePosition {
        stream: "wa_events_stream",
        sequence: 42,
        published_at: "2024-06-14T09:40:00.123456Z".parse().expect("a time"),
        consumer: "wa_realtime",
    })
    .within(body, max_bytes);
    let json = built.to_json();
    let back: DeadLetterEnvelope = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "a dead letter does not read back: {e}: {}",
            String::from_utf8_lossy(&json)
        )
    });
    let what = "a field of the dead letter read back";
    assert_eq!(back.source_subject, source_subject, "{what}");
    assert_eq!(back.company, TENANT, "{what}");
    assert_eq!(back.error, error, "{what}");
    assert_eq!(back.error_type, error_type, "{what}");
    assert_eq!(back.item_index, item_index, "{what}");
    assert_eq!(back.source_sequence, Some(42), "{what}");
    assert_eq!(back.published_at, built.published_at, "{what}");
    assert_eq!(
        back.original_bytes(),
        built.original_bytes(),
        "the dead letter read back has other original bytes than the one published: {}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(
        back.to_json(),
        json,
        "a dead letter read back writes other JSON"
    );
    back
}

/// The dead letter of a whole event keeps its body (SPEC §7): as JSON when it is JSON (the
/// value, without the whitespace around it), else as base64; a body over 64 KiB or an envelope
/// over `max_bytes` only as its first 64 KiB, with its size.
pub fn check_whole_event(envelope: &DeadLetterEnvelope, body: &[u8], error_type: ErrorType) {
    let bytes = envelope
        .original_bytes()
        .expect("a dead letter without its original bytes");
    match &envelope.original_payload {
        Some(raw) => {
            assert!(
                error_type != ErrorType::TooLarge,
                "a too_large body kept as JSON"
            );
            assert_eq!(
                raw.get().as_bytes(),
                body.trim_ascii(),
                "original_payload is not the body"
            );
            assert!(
                envelope.original_payload_base64.is_none(),
                "a body kept both as JSON and as base64"
            );
        }
        None => {
            // A body of `null` is the one JSON kept as bytes: as original_payload it would
            // read back as no payload at all.
            assert!(
                error_type == ErrorType::TooLarge
                    || !is_json(body)
                    || body.trim_ascii() == b"null"
                    || envelope.original_size == Some(body.len()),
                "a JSON body kept as base64 although it fits"
            );
            assert_eq!(
                bytes,
                body[..body.len().min(RAW_KEEP_BYTES)],
                "original_payload_base64 is not the body (or its first 64 KiB)"
            );
            let cut = body.len() > RAW_KEEP_BYTES || error_type == ErrorType::TooLarge;
            if cut || envelope.original_size.is_some() {
                assert_eq!(
                    envelope.original_size,
                    Some(body.len()),
                    "original_size is not the body's"
                );
            }
        }
    }
}

/// Every check of a whole event: decoding, its dead letter as published (and as it would be
/// if the server's limit forced the body out), and that re-running the dead letter's bytes,
/// as dlq-retry does, decodes the same way.
pub fn check_event<'a>(subject: &Subject, body: &'a [u8]) -> Result<Payload<'a>, DecodeError> {
    let result = decode_checked(subject, body);
    let (error_type, error) = match &result {
        Err(e) => (e.error_type, e.message.as_str()),
        // A valid event is still dead-lettered when the database refuses it.
        Ok(_) => (ErrorType::DatabasePermanent, "refused by the database"),
    };
    let envelope = dead_letter(subject, body, error_type, error, None, MAX_PAYLOAD_BYTES);
    check_whole_event(&envelope, body, error_type);
    let cut = dead_letter(subject, body, error_type, error, None, 0);
    assert!(
        cut.original_payload.is_none(),
        "an envelope over the limit kept its JSON"
    );
    check_whole_event(&cut, body, error_type);
    let too_large = dead_letter(
        subject,
        body,
        ErrorType::TooLarge,
        "too large",
        None,
        MAX_PAYLOAD_BYTES,
    );
    check_whole_event(&too_large, body, ErrorType::TooLarge);

    // dlq-retry re-runs the dead letter's bytes under the same subject.
    if body.len() <= RAW_KEEP_BYTES {
        let again = decode(
            subject,
            &envelope.original_bytes().unwrap_or_default(),
            MAX_PAYLOAD_BYTES,
        )
        .map(drop)
        .map_err(|e| e.error_type);
        assert_eq!(
            again,
            result.as_ref().map(drop).map_err(|e| e.error_type),
            "the dead letter's bytes decode otherwise than the event"
        );
    }
    result
}

/// The items of a history batch, whatever their content.
#[derive(serde::Deserialize)]
struct BatchItems<'a> {
    #[serde(borrow)]
    chats: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    contacts: Option<Vec<&'a RawValue>>,
}

impl<'a> BatchItems<'a> {
    /// The items of a batch of `kind`.
    fn of(self, kind: EventKind) -> Option<Vec<&'a RawValue>> {
        match kind {
            EventKind::HistoryChats => self.chats,
            EventKind::HistoryMessages => self.messages,
            _ => self.contacts,
        }
    }
}

/// A dead history item is published alone (SPEC §7, `item_index`): its envelope's payload is
/// the batch reduced to that item, with the batch's other fields, and re-running it decodes
/// one item, which is valid if the item was.
pub fn check_history_item(
    subject: &Subject,
    body: &[u8],
    index: usize,
    item: &Result<wa_shared::model::HistoryItem<'_>, DecodeError>,
) {
    let (error_type, error) = match item {
        Err(e) => (e.error_type, e.message.as_str()),
        Ok(_) => (ErrorType::DatabasePermanent, "refused by the database"),
    };
    let envelope = dead_letter(
        subject,
        body,
        error_type,
        error,
        Some(index),
        MAX_PAYLOAD_BYTES,
    );
    let payload = envelope
        .original_payload
        .as_ref()
        .unwrap_or_else(|| panic!("item {index}: a dead history item without original_payload"));
    // Counted as raw items, so that text serde_json cannot hold in a value (a lone surrogate) does
    // not hide a batch of one.
    let items = serde_json::from_str::<BatchItems<'_>>(payload.get())
        .ok()
        .and_then(|b| b.of(subject.kind));
    assert_eq!(
        items.as_ref().map(Vec::len),
        Some(1),
        "item {index}: original_payload is not a one-item batch: {}",
        payload.get()
    );
    // The item itself, byte for byte as the body holds it (whatever it holds).
    let body_text = std::str::from_utf8(body).expect("a decoded body is UTF-8");
    if let Some(all) = serde_json::from_str::<BatchItems<'_>>(body_text)
        .ok()
        .and_then(|b| b.of(subject.kind))
    {
        assert!(
            index < all.len(),
            "item {index} of a batch of {}",
            all.len()
        );
        assert_eq!(
            items.as_ref().map(|one| one[0].get()),
            Some(all[index].get()),
            "item {index}: original_payload does not hold the item as it was"
        );
    }
    let bytes = envelope.original_bytes().unwrap_or_default();
    match decode(subject, &bytes, MAX_PAYLOAD_BYTES) {
        Ok(Payload::History(again)) => {
            assert_eq!(
                again.len(),
                1,
                "item {index}: the one-item batch decodes into {} items",
                again.len()
            );
            if item.is_ok() {
                assert!(
                    again[0].is_ok(),
                    "item {index}: valid in its batch, refused alone: {:?}",
                    again[0]
                );
            }
        }
        other => panic!("item {index}: the one-item batch does not decode: {other:?}"),
    }
}
