//! Bytes → typed payload: size limit, JSON, field validation and the tenant check, in that order.

use serde::Deserialize;
use serde_json::value::RawValue;
use validator::Validate;

use super::agent::AgentPayload;
use super::chat::ChatPayload;
use super::contact::ContactPayload;
use super::error_type::ErrorType;
use super::fields::Text;
use super::history::{Batch, HistoryChats, HistoryContacts, HistoryMessages};
use super::message::{MessagePatch, MessagePayload};
use super::subject::{EventKind, Subject};

/// A permanent reason why an event (or a history item) cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct DecodeError {
    pub error_type: ErrorType,
    pub message: String,
}

impl DecodeError {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        DecodeError {
            error_type,
            message: message.into(),
        }
    }

    fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let error_type = match err.classify() {
            Category::Data => ErrorType::Validation,
            Category::Syntax | Category::Eof | Category::Io => ErrorType::Malformed,
        };
        DecodeError::new(error_type, err.to_string())
    }
}

/// One item of a history batch.
#[derive(Debug, Clone)]
pub enum HistoryItem<'a> {
    Chat(ChatPayload<'a>),
    Message(MessagePayload<'a>),
    Contact(ContactPayload<'a>),
}

/// A validated event, ready to be written. Its text borrows from the event's body.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    /// `chats.upsert` (`delta = false`) or `chats.update` (`delta = true`: unread is a delta).
    Chat {
        chat: ChatPayload<'a>,
        delta: bool,
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
    let tenant = subject.tenant.as_str();
    Ok(match subject.kind {
        EventKind::ChatUpsert => Payload::Chat {
            chat: item(body, tenant)?,
            delta: false,
        },
        EventKind::ChatUpdate => Payload::Chat {
            chat: item(body, tenant)?,
            delta: true,
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

/// The items of a history batch, each validated on its own. A batch whose items all parse is
/// read in one pass (`Typed`); otherwise it is read again as raw items (`Raw`) and each item
/// parsed alone, so that one bad item is refused without its batch.
fn history<'a, T, Typed, Raw>(
    body: &'a str,
    tenant: &str,
    wrap: fn(T) -> HistoryItem<'a>,
) -> Result<Vec<Result<HistoryItem<'a>, DecodeError>>, DecodeError>
where
    T: Item<'a>,
    Typed: Batch<'a, T> + Deserialize<'a>,
    Raw: Batch<'a, &'a RawValue> + Deserialize<'a>,
{
    let finish = |item: Result<T, DecodeError>, agent: &Option<Text<'a>>| {
        let mut item = checked(item?, tenant)?;
        if let Some(agent) = agent {
            item.inherit_agent(agent);
        }
        Ok(wrap(item))
    };
    Ok(match serde_json::from_str::<Typed>(body) {
        Ok(batch) => {
            let (items, agent) = batch.into_parts();
            items
                .into_iter()
                .map(|item| finish(Ok(item), &agent))
                .collect()
        }
        Err(_) => {
            let (items, agent) = parse::<Raw>(body)?.into_parts();
            items
                .into_iter()
                .map(|raw| finish(parse(raw.get()), &agent))
                .collect()
        }
    })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(body).map_err(|e| DecodeError::from_json(&e))
}

/// A payload, read as an event of its own or as a history item.
trait Item<'a>: Deserialize<'a> + Validate {
    /// The company it names, if any.
    fn company(&self) -> Option<&str>;

    /// Takes a history sync's top-level agent id when the item carries none.
    fn inherit_agent(&mut self, _agent: &Text<'a>) {}
}

macro_rules! item_with_company {
    ($($t:ident),*) => {$(
        impl<'a> Item<'a> for $t<'a> {
            fn company(&self) -> Option<&str> {
                self.company_id.as_deref()
            }
        }
    )*};
}
item_with_company!(ChatPayload, MessagePatch, ContactPayload, AgentPayload);

impl<'a> Item<'a> for MessagePayload<'a> {
    fn company(&self) -> Option<&str> {
        self.company_id.as_deref()
    }

    fn inherit_agent(&mut self, agent: &Text<'a>) {
        if self.agent_id.is_none() {
            self.agent_id = Some(agent.clone());
        }
    }
}

fn item<'a, T: Item<'a>>(body: &'a str, tenant: &str) -> Result<T, DecodeError> {
    checked(parse(body)?, tenant)
}

/// Field validation and the tenant check of a parsed payload.
fn checked<'a, T: Item<'a>>(value: T, tenant: &str) -> Result<T, DecodeError> {
    value
        .validate()
        .map_err(|e| DecodeError::new(ErrorType::Validation, e.to_string().replace('\n', "; ")))?;
    match value.company() {
        Some(company) if company != tenant => Err(DecodeError::new(
            ErrorType::Tenant,
            format!("company_id {company:?} does not match the subject's tenant {tenant:?}"),
        )),
        _ => Ok(value),
    }
}

/// A history body reduced to its item `index`, as a batch of one (`{"messages":[item], …}`),
/// so a dead-lettered item can be re-run through the same core on its own.
pub fn history_item_as_batch(
    source_subject: &str,
    body: &RawValue,
    index: usize,
) -> Option<Box<RawValue>> {
    let key = match Subject::parse(source_subject).ok()?.kind {
        EventKind::HistoryChats => "chats",
        EventKind::HistoryMessages => "messages",
        EventKind::HistoryContacts => "contacts",
        _ => return None,
    };
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(body.get()).ok()?;
    let item = match map.get_mut(key)? {
        serde_json::Value::Array(items) if index < items.len() => items.swap_remove(index),
        _ => return None,
    };
    map.insert(key.to_owned(), serde_json::Value::Array(vec![item]));
    serde_json::value::to_raw_value(&map).ok()
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

    #[test]
    fn absent_company_is_taken_from_the_subject_and_nulls_are_absent() {
        let p = decode(
            &subject("v1.chats.update.C"),
            br#"{"chat_id":"a","push_name":null,"x":{"y":1}}"#,
            1024,
        )
        .unwrap();
        let Payload::Chat { chat, delta } = p else {
            panic!()
        };
        assert!(delta);
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
