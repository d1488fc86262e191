//! History sync wrappers: `{"chats":[…]}`, `{"messages":[…], "is_last_batch"?, "agent_id"?}`,
//! `{"contacts":[…]}`, generic over their items: typed payloads when a batch is read in one
//! pass, raw values when its items have to be read (and refused) one by one.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::chat::ChatPayload;
use super::contact::ContactPayload;
use super::fields::Text;
use super::item::{checked, parse, DecodeError, Item};
use super::message::MessagePayload;
use super::subject::{EventKind, Subject};

/// A history wrapper, taken apart.
pub trait Batch<'a, T> {
    /// The items, and the sync's top-level agent id for items that carry none.
    fn into_parts(self) -> (Vec<T>, Option<Text<'a>>);
}

#[derive(Debug, Deserialize)]
pub struct HistoryChats<T> {
    pub chats: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "'de: 'a, T: Deserialize<'de>"))]
pub struct HistoryMessages<'a, T> {
    pub messages: Vec<T>,
    /// Misnamed by the producer (it marks the first batch of a sync); carried, not relied on.
    pub is_last_batch: Option<bool>,
    /// Top-level agent id of a sync, used for items that carry none.
    pub agent_id: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryContacts<T> {
    pub contacts: Vec<T>,
}

impl<'a, T> Batch<'a, T> for HistoryChats<T> {
    fn into_parts(self) -> (Vec<T>, Option<Text<'a>>) {
        (self.chats, None)
    }
}

impl<'a, T> Batch<'a, T> for HistoryMessages<'a, T> {
    fn into_parts(self) -> (Vec<T>, Option<Text<'a>>) {
        (self.messages, self.agent_id)
    }
}

impl<'a, T> Batch<'a, T> for HistoryContacts<T> {
    fn into_parts(self) -> (Vec<T>, Option<Text<'a>>) {
        (self.contacts, None)
    }
}

/// One item of a history batch.
#[derive(Debug, Clone)]
pub enum HistoryItem<'a> {
    Chat(ChatPayload<'a>),
    Message(MessagePayload<'a>),
    Contact(ContactPayload<'a>),
}

/// The items of a history batch, each validated on its own. A batch whose items all parse is
/// read in one pass (`Typed`); otherwise it is read again as raw items (`Raw`) and each item
/// parsed alone, so that one bad item is refused without its batch.
pub fn history<'a, T, Typed, Raw>(
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

/// A history body reduced to its item `index`, as a batch of one (`{"messages":[item], …}`,
/// with the sync's `agent_id` and `is_last_batch`), so a dead-lettered item can be re-run
/// through the same core on its own. The item and the fields are copied as they were written,
/// byte for byte: whatever the item holds (a lone surrogate, a number no float can hold), its
/// dead letter holds it too, and nothing of the other items.
pub fn history_item_as_batch<'a>(
    source_subject: &str,
    body: &'a RawValue,
    index: usize,
) -> Option<Box<RawValue>> {
    /// The parts of a history body a batch of one keeps, unparsed.
    #[derive(Deserialize, serde::Serialize)]
    struct Parts<'a> {
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        chats: Option<Vec<&'a RawValue>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        messages: Option<Vec<&'a RawValue>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        contacts: Option<Vec<&'a RawValue>>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        is_last_batch: Option<&'a RawValue>,
        #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<&'a RawValue>,
    }
    let kind = Subject::parse(source_subject).ok()?.kind;
    let parts: Parts = serde_json::from_str(body.get()).ok()?;
    let one = |items: Option<Vec<&'a RawValue>>| -> Option<Option<Vec<&'a RawValue>>> {
        Some(Some(vec![*items?.get(index)?]))
    };
    let batch = match kind {
        EventKind::HistoryChats => Parts {
            chats: one(parts.chats)?,
            messages: None,
            contacts: None,
            is_last_batch: None,
            agent_id: None,
        },
        EventKind::HistoryMessages => Parts {
            messages: one(parts.messages)?,
            chats: None,
            contacts: None,
            ..parts
        },
        EventKind::HistoryContacts => Parts {
            contacts: one(parts.contacts)?,
            chats: None,
            messages: None,
            is_last_batch: None,
            agent_id: None,
        },
        _ => return None,
    };
    serde_json::value::to_raw_value(&batch).ok()
}
