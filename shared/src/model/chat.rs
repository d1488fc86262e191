//! Chat payloads: `chats.upsert`, `chats.update` and the items of `history.chats`.

use serde::Deserialize;
use serde_json::value::RawValue;
use validator::Validate;

use super::fields::{timestamp, valid_id, valid_indexed, Text};

/// A chat as the producer sends it. `chats.update` uses the same shape as a patch, where
/// `unread_count` is a delta rather than an absolute value.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(bound(deserialize = "'de: 'a"))]
pub struct ChatPayload<'a> {
    #[validate(custom(function = "valid_id"))]
    pub chat_id: Text<'a>,
    #[validate(custom(function = "valid_indexed"))]
    pub jid: Option<Text<'a>>,
    pub company_id: Option<Text<'a>>,
    #[validate(custom(function = "valid_id"))]
    pub agent_id: Option<Text<'a>>,
    pub push_name: Option<Text<'a>>,
    pub custom_name: Option<Text<'a>>,
    pub group_name: Option<Text<'a>>,
    #[validate(custom(function = "valid_indexed"))]
    pub phone_number: Option<Text<'a>>,
    pub assigned_to: Option<Text<'a>>,
    pub is_group: Option<bool>,
    pub not_spam: Option<bool>,
    pub unread_count: Option<i32>,
    pub last_message: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "timestamp")]
    pub conversation_timestamp: Option<i64>,
}

/// What a chat write's `unread_count` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreadCount {
    /// `chats.upsert`: the count itself, applied when the event is not older than the row.
    Absolute,
    /// `chats.update`: a change to the stored count (composed in the store); the fields derived
    /// from the chat id only fill a newly created row.
    Delta,
}
