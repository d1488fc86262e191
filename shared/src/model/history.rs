//! History sync wrappers: `{"chats":[…]}`, `{"messages":[…], "is_last_batch"?, "agent_id"?}`,
//! `{"contacts":[…]}`, generic over their items: typed payloads when a batch is read in one
//! pass, raw values when its items have to be read (and refused) one by one.

use serde::Deserialize;

use super::fields::Text;

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
