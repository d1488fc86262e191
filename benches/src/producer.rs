//! The producer's JSON bodies, field for field as in `tests/fixtures/producer/` (order included).

use serde::Serialize;
use serde_json::Value;

/// A chat: `chats.upsert` and the items of `history.chats`.
#[derive(Debug, Clone, Serialize)]
pub struct Chat<'a> {
    pub chat_id: String,
    pub jid: String,
    pub phone_number: &'a str,
    pub company_id: &'a str,
    pub agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_spam: Option<bool>,
    pub is_group: bool,
    pub conversation_timestamp: i64,
    pub last_message: Option<Value>,
    pub group_name: Option<&'a str>,
    pub push_name: &'a str,
}

/// A `chats.update`: a patch whose `unread_count` is a delta. `last_message: Some(Null)` is
/// sent as `null` (mark unread); `None` leaves the key out (read receipts send four keys).
#[derive(Debug, Clone, Serialize)]
pub struct ChatUpdate<'a> {
    pub chat_id: String,
    pub company_id: &'a str,
    pub agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_name: Option<&'a str>,
    pub unread_count: i32,
}

/// The WhatsApp message key.
#[derive(Debug, Clone, Serialize)]
pub struct Key<'a> {
    #[serde(rename = "remoteJid")]
    pub remote_jid: &'a str,
    #[serde(rename = "fromMe")]
    pub from_me: bool,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
}

/// A message: `messages.upsert` and the items of `history.messages` (which have no
/// `message_url`, and for edits an array `message_type` and an unwrapped `edited_message_obj`).
#[derive(Debug, Clone, Serialize)]
pub struct Message<'a> {
    pub message_id: &'a str,
    pub chat_id: &'a str,
    pub jid: &'a str,
    pub key: Key<'a>,
    pub message_obj: &'a Value,
    pub message_type: Value,
    pub message_text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_url: Option<String>,
    pub company_id: &'a str,
    pub agent_id: &'a str,
    pub to_phone: &'a str,
    pub from_phone: &'a str,
    pub flow: &'static str,
    pub message_timestamp: i64,
    pub status: &'static str,
    pub created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_message_obj: Option<&'a Value>,
}

/// A `messages.update`: a status receipt, an edit or a delete.
#[derive(Debug, Clone, Serialize)]
pub struct MessageUpdate<'a> {
    pub message_id: &'a str,
    pub company_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_message_obj: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_deleted: Option<bool>,
}

/// A contact: `contacts.upsert`, `contacts.update` and the items of `history.contacts`.
#[derive(Debug, Clone, Serialize)]
pub struct Contact<'a> {
    pub chat_id: String,
    pub company_id: &'a str,
    pub agent_id: &'a str,
    pub phone_number: &'a str,
    pub push_name: &'a str,
}

/// A `connection.update`.
#[derive(Debug, Clone, Serialize)]
pub struct Connection<'a> {
    pub status: &'static str,
    pub version: &'static str,
    pub host_name: &'a str,
    pub company_id: &'a str,
    pub agent_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_code: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HistoryChats<'a> {
    pub chats: Vec<Chat<'a>>,
}

/// `is_last_batch` and `agent_id` are sent on the first batch of a sync only.
#[derive(Debug, Serialize)]
pub struct HistoryMessages<'a> {
    pub messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_last_batch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct HistoryContacts<'a> {
    pub contacts: Vec<Contact<'a>>,
}

/// The JSON body of `value`.
pub fn body(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("producer bodies serialise")
}
