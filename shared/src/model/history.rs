//! History sync wrappers: `{"chats":[…]}`, `{"messages":[…], "is_last_batch"?, "agent_id"?}`,
//! `{"contacts":[…]}`. Items stay raw here; each is validated on its own.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Deserialize)]
pub struct HistoryChats<'a> {
    #[serde(borrow)]
    pub chats: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryMessages<'a> {
    #[serde(borrow)]
    pub messages: Vec<&'a RawValue>,
    /// Misnamed by the producer (it marks the first batch of a sync); carried, not relied on.
    pub is_last_batch: Option<bool>,
    /// Top-level agent id of a sync, used for items that carry none.
    pub agent_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryContacts<'a> {
    #[serde(borrow)]
    pub contacts: Vec<&'a RawValue>,
}
