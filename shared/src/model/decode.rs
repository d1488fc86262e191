//! Bytes → typed payload: size limit, JSON, field validation and the tenant check, in that order.

use super::agent::AgentPayload;
use super::chat::{ChatPayload, UnreadCount};
use super::contact::ContactPayload;
use super::error_type::ErrorType;
use super::history::{history, HistoryChats, HistoryContacts, HistoryItem, HistoryMessages};
use super::item::item;
use super::message::{MessagePatch, MessagePayload};
use super::subject::{EventKind, Subject};

pub use super::item::DecodeError;

/// A validated event, ready to be written. Its text borrows from the event's body.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    /// `chats.upsert` (absolute unread count) or `chats.update` (unread count is a delta).
    Chat {
        chat: ChatPayload<'a>,
        unread: UnreadCount,
    },
    Message(MessagePayload<'a>),
    MessagePatch(MessagePatch<'a>),
    Contact(ContactPayload<'a>),
    Agent(AgentPayload<'a>),
    /// Items in batch order, each validated on its own.
    History(Vec<Result<HistoryItem<'a>, DecodeError>>),
}

/// Decodes and validates the body of an event published on `subject`.
pub fn decode<'a>(
    subject: &Subject,
    body: &'a [u8],
    max_payload_bytes: usize,
) -> Result<Payload<'a>, DecodeError> {
    if body.len() > max_payload_bytes {
        return Err(DecodeError::new(
            ErrorType::TooLarge,
            format!(
                "body of {} bytes exceeds the limit of {max_payload_bytes}",
                body.len()
            ),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::new(ErrorType::Malformed, "empty body"));
    }
    // Checked once here, so that no string of the body is checked again while it is parsed.
    let body = std::str::from_utf8(body)
        .map_err(|e| DecodeError::new(ErrorType::Malformed, format!("body is not UTF-8: {e}")))?;
    // Every payload is a JSON object: serde would also read a struct from an array of its
    // fields in order, and an array body would then be taken for an event.
    if !body.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(body) {
            Err(e) => DecodeError::from_json(&e),
            Ok(_) => DecodeError::new(ErrorType::Validation, "the body is not a JSON object"),
        });
    }
    let tenant = subject.tenant.as_str();
    Ok(match subject.kind {
        EventKind::ChatUpsert => Payload::Chat {
            chat: item(body, tenant)?,
            unread: UnreadCount::Absolute,
        },
        EventKind::ChatUpdate => Payload::Chat {
            chat: item(body, tenant)?,
            unread: UnreadCount::Delta,
        },
        EventKind::MessageUpsert => Payload::Message(item(body, tenant)?),
        EventKind::MessageUpdate => Payload::MessagePatch(item(body, tenant)?),
        EventKind::ContactUpsert | EventKind::ContactUpdate => {
            Payload::Contact(item(body, tenant)?)
        }
        EventKind::ConnectionUpdate => Payload::Agent(item(body, tenant)?),
        EventKind::HistoryChats => Payload::History(
            history::<_, HistoryChats<_>, HistoryChats<_>>(body, tenant, HistoryItem::Chat)?,
        ),
        EventKind::HistoryMessages => {
            Payload::History(history::<_, HistoryMessages<_>, HistoryMessages<_>>(
                body,
                tenant,
                HistoryItem::Message,
            )?)
        }
        EventKind::HistoryContacts => {
            Payload::History(history::<_, HistoryContacts<_>, HistoryContacts<_>>(
                body,
                tenant,
                HistoryItem::Contact,
            )?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(s: &str) -> Subject {
        Subject::parse(s).unwrap()
    }

    fn err(s: &str, body: &[u8]) -> ErrorType {
        decode(&subject(s), body, 1024).unwrap_err().error_type
    }

    #[test]
    fn classifies_bad_bodies() {
        let s = "v1.chats.upsert.CMP001";
        assert_eq!(err(s, b""), ErrorType::Malformed);
        assert_eq!(err(s, b"  \n"), ErrorType::Malformed);
        assert_eq!(err(s, b"{\"chat_id\":"), ErrorType::Malformed);
        assert_eq!(err(s, b"not json"), ErrorType::Malformed);
        assert_eq!(err(s, b"{\"chat_id\":\"a\xff\"}"), ErrorType::Malformed);
        assert_eq!(err(s, &[b' '; 1025]), ErrorType::TooLarge);
        assert_eq!(err(s, b"{}"), ErrorType::Validation);
        assert_eq!(err(s, b"[]"), ErrorType::Validation);
        assert_eq!(
            err(s, br#"["AG_1"]"#),
            ErrorType::Validation,
            "not by position"
        );
        assert_eq!(
            err("v1.history.chats.C", br#"[[{"chat_id":"a"}]]"#),
            ErrorType::Validation
        );
        assert_eq!(err(s, b"null"), ErrorType::Validation);
        assert_eq!(err(s, b"[1,"), ErrorType::Malformed);
        assert_eq!(err(s, br#"{"chat_id":5}"#), ErrorType::Validation);
        assert_eq!(err(s, br#"{"chat_id":null}"#), ErrorType::Validation);
        assert_eq!(err(s, br#"{"chat_id":""}"#), ErrorType::Validation);
        assert_eq!(err(s, br#"{"chat_id":"a\u0001"}"#), ErrorType::Validation);
        assert_eq!(
            err(s, br#"{"chat_id":"a","unread_count":"1"}"#),
            ErrorType::Validation
        );
        assert_eq!(
            err(s, br#"{"chat_id":"a","company_id":"OTHER"}"#),
            ErrorType::Tenant
        );
        assert_eq!(
            err(
                "v1.messages.upsert.C",
                br#"{"message_id":"m","chat_id":"c","flow":"SIDEWAYS"}"#
            ),
            ErrorType::Validation
        );
        assert_eq!(
            err(
                "v1.messages.upsert.C",
                br#"{"message_id":"m","chat_id":"c"}"#
            ),
            ErrorType::Validation
        );
        assert_eq!(
            err("v1.contacts.upsert.C", br#"{"phone_number":"1"}"#),
            ErrorType::Validation
        );
        assert_eq!(
            err("v1.connection.update.C", br#"{"status":"QR"}"#),
            ErrorType::Validation
        );
        assert_eq!(
            err("v1.history.chats.C", br#"{"items":[]}"#),
            ErrorType::Validation
        );
    }

    /// SPEC §6: what the database would refuse because of one event's data is refused at the
    /// boundary, as `validation`, with a message that is safe to store.
    #[test]
    fn limits_the_database_would_refuse_are_validation_errors() {
        let msg = |extra: &str| {
            format!(r#"{{"message_id":"m","chat_id":"c","flow":"IN"{extra}}}"#).into_bytes()
        };
        let check = |body: Vec<u8>| {
            decode(&subject("v1.messages.upsert.C"), &body, 1 << 20)
                .map(drop)
                .map_err(|e| e.clone())
        };
        let nested = |n: usize| format!(r#","message_obj":{}1{}"#, "[".repeat(n), "]".repeat(n));
        assert!(check(msg(&nested(128))).is_ok(), "128 levels are fine");
        let long = "6".repeat(257);
        for (what, extra) in [
            (
                "a 257-char jid",
                format!(r#","jid":"{long}@s.whatsapp.net""#),
            ),
            (
                "a 257-char from_phone",
                format!(r#","from_phone":"{long}""#),
            ),
            ("a 257-char to_phone", format!(r#","to_phone":"{long}""#)),
            ("message_obj 129 levels deep", nested(129)),
            ("message_obj 20,000 levels deep", nested(20_000)),
            (
                "NUL in message_text",
                r#","message_text":"a\u0000b""#.into(),
            ),
            (
                "NUL in message_obj",
                r#","message_obj":{"a":"\u0000"}"#.into(),
            ),
            (
                "a lone surrogate in message_text",
                r#","message_text":"\ud800""#.into(),
            ),
            (
                "a lone surrogate in key",
                r#","key":{"id":"\udc00x"}"#.into(),
            ),
            ("a NUL in flow", r#","flow":"\u0000""#.into()),
            ("a negative timestamp", r#","message_timestamp":-1"#.into()),
            (
                "a timestamp after 9999",
                r#","message_timestamp":253402300800000"#.into(),
            ),
        ] {
            let e = check(msg(&extra)).expect_err(what);
            assert_eq!(e.error_type, ErrorType::Validation, "{what}: {e}");
            assert!(!e.message.contains('\0'), "{what}: {e:?}");
        }
        let e = decode(
            &subject("v1.chats.upsert.C"),
            format!(r#"{{"chat_id":"c","phone_number":"{long}"}}"#).as_bytes(),
            1 << 20,
        )
        .expect_err("a long chat phone");
        assert_eq!(e.error_type, ErrorType::Validation);
    }

    #[test]
    fn absent_company_is_taken_from_the_subject_and_nulls_are_absent() {
        let p = decode(
            &subject("v1.chats.update.C"),
            br#"{"chat_id":"a","push_name":null,"x":{"y":1}}"#,
            1024,
        )
        .unwrap();
        let Payload::Chat { chat, unread } = p else {
            panic!()
        };
        assert_eq!(unread, UnreadCount::Delta);
        assert!(chat.push_name.is_none());
        assert!(chat.company_id.is_none());
    }

    #[test]
    fn message_type_array_keeps_the_first_and_millis_become_seconds() {
        let body = br#"{"message_id":"m","chat_id":"c","flow":"IN","message_type":["a","b"],"message_timestamp":1718358000123,"status":4}"#;
        let Payload::Message(m) = decode(&subject("v1.messages.upsert.C"), body, 1024).unwrap()
        else {
            panic!()
        };
        assert_eq!(m.message_type.as_deref(), Some("a"));
        assert_eq!(m.message_timestamp, Some(1_718_358_000));
        assert_eq!(m.status.as_deref(), Some("4"));
    }

    #[test]
    fn history_items_are_validated_one_by_one() {
        let body = br#"{"messages":[{"message_id":"m1","chat_id":"c","flow":"IN"},{"message_id":"m2"},{"message_id":"m3","chat_id":"c","flow":"OUT","agent_id":"OWN"}],"agent_id":"TOP"}"#;
        let Payload::History(items) =
            decode(&subject("v1.history.messages.C"), body, 4096).unwrap()
        else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        let Ok(HistoryItem::Message(m1)) = &items[0] else {
            panic!()
        };
        assert_eq!(m1.agent_id.as_deref(), Some("TOP"));
        assert_eq!(
            items[1].as_ref().unwrap_err().error_type,
            ErrorType::Validation
        );
        let Ok(HistoryItem::Message(m3)) = &items[2] else {
            panic!()
        };
        assert_eq!(m3.agent_id.as_deref(), Some("OWN"));
    }

    #[test]
    fn items_that_parse_but_fail_their_checks_are_refused_alone() {
        // Every item parses, so the batch is read in one pass; the checks still run per item.
        let body = br#"{"agent_id":"TOP","messages":[{"message_id":"m1","chat_id":"c","flow":"IN"},{"message_id":"","chat_id":"c","flow":"IN"},{"message_id":"m3","chat_id":"c","flow":"IN","company_id":"OTHER"},{"message_id":"m4","chat_id":"c","flow":"OUT"}]}"#;
        let Payload::History(items) =
            decode(&subject("v1.history.messages.C"), body, 4096).unwrap()
        else {
            panic!()
        };
        let kinds: Vec<Result<&str, ErrorType>> = items
            .iter()
            .map(|r| match r {
                Ok(HistoryItem::Message(m)) => Ok(m.agent_id.as_deref().unwrap_or("-")),
                Ok(_) => panic!("not a message"),
                Err(e) => Err(e.error_type),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                Ok("TOP"),
                Err(ErrorType::Validation),
                Err(ErrorType::Tenant),
                Ok("TOP")
            ]
        );
    }

    #[test]
    fn a_batch_read_in_one_pass_gives_what_reading_items_one_by_one_gives() {
        let fixtures = [
            (
                "v1.history.chats.CMP001",
                "chats",
                include_str!("../../../tests/fixtures/producer/v1.history.chats.jsonl"),
            ),
            (
                "v1.history.messages.CMP001",
                "messages",
                include_str!("../../../tests/fixtures/producer/v1.history.messages.jsonl"),
            ),
            (
                "v1.history.contacts.CMP001",
                "contacts",
                include_str!("../../../tests/fixtures/producer/v1.history.contacts.jsonl"),
            ),
        ];
        for (s, key, fixture) in fixtures {
            let mut batch: serde_json::Value = serde_json::from_str(fixture.trim()).unwrap();
            let one_pass = serde_json::to_vec(&batch).unwrap();
            // An item that does not parse sends the whole batch down the item-by-item path.
            batch[key]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!(["not an item"]));
            let by_item = serde_json::to_vec(&batch).unwrap();
            let items = |body: &[u8]| match decode(&subject(s), body, 1 << 20).unwrap() {
                Payload::History(items) => format!("{items:?}"),
                other => panic!("{other:?}"),
            };
            let (fast, slow) = (items(&one_pass), items(&by_item));
            let fast = fast.strip_suffix(']').unwrap();
            assert!(slow.starts_with(fast), "{s}:\n{fast}\n{slow}");
            assert!(
                slow[fast.len()..].starts_with(", Err(DecodeError { error_type: Validation"),
                "{s}: {}",
                &slow[fast.len()..]
            );
        }
    }

    #[test]
    fn a_malformed_history_body_is_refused_whole() {
        for (body, expected) in [
            (&br#"{"chats":[{"chat_id":"a"},"#[..], ErrorType::Malformed),
            (br#"{"chats":[{"chat_id":"a"}"#, ErrorType::Malformed),
            (br#"{"chats":{"chat_id":"a"}}"#, ErrorType::Validation),
            (br#"{"messages":[{"chat_id":"a"}]}"#, ErrorType::Validation),
        ] {
            let e = decode(&subject("v1.history.chats.C"), body, 4096).unwrap_err();
            assert_eq!(e.error_type, expected, "{e}");
        }
    }
}
