//! Message payloads: `messages.upsert`, `messages.update` and the items of `history.messages`.

use serde::Deserialize;
use serde_json::value::RawValue;
use validator::Validate;

use super::fields::{first_of, text_or_number, timestamp, valid_id};

/// Direction of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Flow {
    #[serde(rename = "IN")]
    In,
    #[serde(rename = "OUT")]
    Out,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::In => "IN",
            Flow::Out => "OUT",
        }
    }
}

/// A whole message.
#[derive(Debug, Clone, Deserialize, Validate)]
pub struct MessagePayload {
    #[validate(custom(function = "valid_id"))]
    pub message_id: String,
    #[validate(custom(function = "valid_id"))]
    pub chat_id: String,
    pub flow: Flow,
    pub jid: Option<String>,
    pub from_phone: Option<String>,
    pub to_phone: Option<String>,
    pub message_text: Option<String>,
    pub message_url: Option<String>,
    #[serde(default, deserialize_with = "first_of")]
    pub message_type: Option<String>,
    #[validate(custom(function = "valid_id"))]
    pub agent_id: Option<String>,
    pub company_id: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub status: Option<String>,
    pub key: Option<Box<RawValue>>,
    pub message_obj: Option<Box<RawValue>>,
    pub edited_message_obj: Option<Box<RawValue>>,
    pub is_deleted: Option<bool>,
    #[serde(default, deserialize_with = "timestamp")]
    pub message_timestamp: Option<i64>,
    /// Campaign attribution read by onboarding (never sent by the current producer).
    pub campaign: Option<Campaign>,
}

/// A patch to a stored message (`messages.update`): receipts, edits, deletes.
#[derive(Debug, Clone, Deserialize, Validate)]
pub struct MessagePatch {
    #[validate(custom(function = "valid_id"))]
    pub message_id: String,
    pub company_id: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub status: Option<String>,
    pub edited_message_obj: Option<Box<RawValue>>,
    pub message_url: Option<String>,
    pub is_deleted: Option<bool>,
}

/// Optional campaign object on an incoming message (SPEC §8).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Campaign {
    pub is_campaign: Option<bool>,
    #[serde(default, deserialize_with = "super::fields::comma_list")]
    pub tags: Option<String>,
    pub assigned_to: Option<String>,
    pub origin: Option<String>,
}
