//! Chat payloads: `chats.upsert`, `chats.update` and the items of `history.chats`.

use serde::Deserialize;
use serde_json::value::RawValue;
use validator::Validate;

use super::fields::{timestamp, valid_id};

/// A chat as the producer sends it. `chats.update` uses the same shape as a patch, where
/// `unread_count` is a delta rather than an absolute value.
#[derive(Debug, Clone, Deserialize, Validate)]
pub struct ChatPayload {
    #[validate(custom(function = "valid_id"))]
    pub chat_id: String,
    pub jid: Option<String>,
    pub company_id: Option<String>,
    #[validate(custom(function = "valid_id"))]
    pub agent_id: Option<String>,
    pub push_name: Option<String>,
    pub custom_name: Option<String>,
    pub group_name: Option<String>,
    pub phone_number: Option<String>,
    pub assigned_to: Option<String>,
    pub is_group: Option<bool>,
    pub not_spam: Option<bool>,
    pub unread_count: Option<i32>,
    pub last_message: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "timestamp")]
    pub conversation_timestamp: Option<i64>,
}
