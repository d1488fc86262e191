//! Contact payloads: `contacts.upsert`, `contacts.update` and the items of `history.contacts`.

use serde::Deserialize;
use validator::Validate;

use super::fields::{comma_list, timestamp, valid_id};

/// A contact, keyed by (`agent_id`, `phone_number`). Updates use the same shape as a patch.
#[derive(Debug, Clone, Deserialize, Validate)]
pub struct ContactPayload {
    #[validate(custom(function = "valid_id"))]
    pub phone_number: String,
    #[validate(custom(function = "valid_id"))]
    pub agent_id: String,
    pub chat_id: Option<String>,
    pub company_id: Option<String>,
    pub push_name: Option<String>,
    pub custom_name: Option<String>,
    #[serde(rename = "type")]
    pub contact_type: Option<String>,
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "comma_list")]
    pub tags: Option<String>,
    pub origin: Option<String>,
    pub avatar: Option<String>,
    pub assigned_to: Option<String>,
    pub pob: Option<String>,
    pub gender: Option<String>,
    pub dob: Option<chrono::NaiveDate>,
    pub status: Option<String>,
    pub first_message_id: Option<String>,
    #[serde(default, deserialize_with = "timestamp")]
    pub first_message_timestamp: Option<i64>,
}
