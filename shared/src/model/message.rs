//! Message payloads: `messages.upsert`, `messages.update` and the items of `history.messages`.

use serde::Deserialize;
use serde_json::value::RawValue;
use validator::Validate;

use super::fields::{first_of, text_or_number, timestamp, valid_id, valid_indexed, Text};

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
#[serde(bound(deserialize = "'de: 'a"))]
pub struct MessagePayload<'a> {
    #[validate(custom(function = "valid_id"))]
    pub message_id: Text<'a>,
    #[validate(custom(function = "valid_id"))]
    pub chat_id: Text<'a>,
    pub flow: Flow,
    #[validate(custom(function = "valid_indexed"))]
    pub jid: Option<Text<'a>>,
    #[validate(custom(function = "valid_indexed"))]
    pub from_phone: Option<Text<'a>>,
    #[validate(custom(function = "valid_indexed"))]
    pub to_phone: Option<Text<'a>>,
    pub message_text: Option<Text<'a>>,
    pub message_url: Option<Text<'a>>,
    #[serde(default, deserialize_with = "first_of")]
    pub message_type: Option<Text<'a>>,
    #[validate(custom(function = "valid_id"))]
    pub agent_id: Option<Text<'a>>,
    pub company_id: Option<Text<'a>>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub status: Option<Text<'a>>,
    pub key: Option<&'a RawValue>,
    pub message_obj: Option<&'a RawValue>,
    pub edited_message_obj: Option<&'a RawValue>,
    pub is_deleted: Option<bool>,
    #[serde(default, deserialize_with = "timestamp")]
    pub message_timestamp: Option<i64>,
    /// Campaign attribution read by onboarding (never sent by the current producer).
    pub campaign: Option<Campaign<'a>>,
}

/// A patch to a stored message (`messages.update`): receipts, edits, deletes.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(bound(deserialize = "'de: 'a"))]
pub struct MessagePatch<'a> {
    #[validate(custom(function = "valid_id"))]
    pub message_id: Text<'a>,
    pub company_id: Option<Text<'a>>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub status: Option<Text<'a>>,
    pub edited_message_obj: Option<&'a RawValue>,
    pub message_url: Option<Text<'a>>,
    pub is_deleted: Option<bool>,
}

/// Optional campaign object on an incoming message (SPEC §8).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
pub struct Campaign<'a> {
    pub is_campaign: Option<bool>,
    #[serde(default, deserialize_with = "super::fields::comma_list")]
    pub tags: Option<Text<'a>>,
    pub assigned_to: Option<Text<'a>>,
    pub origin: Option<Text<'a>>,
}
