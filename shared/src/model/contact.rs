//! Contact payloads: `contacts.upsert`, `contacts.update` and the items of `history.contacts`.

use serde::Deserialize;
use validator::Validate;

use super::fields::{comma_list, timestamp, valid_id, Text};

/// A contact, keyed by (`agent_id`, `phone_number`). Updates use the same shape as a patch.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(bound(deserialize = "'de: 'a"))]
pub struct ContactPayload<'a> {
    #[validate(custom(function = "valid_id"))]
    pub phone_number: Text<'a>,
    #[validate(custom(function = "valid_id"))]
    pub agent_id: Text<'a>,
    pub chat_id: Option<Text<'a>>,
    pub company_id: Option<Text<'a>>,
    pub push_name: Option<Text<'a>>,
    pub custom_name: Option<Text<'a>>,
    #[serde(rename = "type")]
    pub contact_type: Option<Text<'a>>,
    pub notes: Option<Text<'a>>,
    #[serde(default, deserialize_with = "comma_list")]
    pub tags: Option<Text<'a>>,
    pub origin: Option<Text<'a>>,
    pub avatar: Option<Text<'a>>,
    pub assigned_to: Option<Text<'a>>,
    pub pob: Option<Text<'a>>,
    pub gender: Option<Text<'a>>,
    pub dob: Option<chrono::NaiveDate>,
    pub status: Option<Text<'a>>,
    pub first_message_id: Option<Text<'a>>,
    #[serde(default, deserialize_with = "timestamp")]
    pub first_message_timestamp: Option<i64>,
}
