//! Agent status payloads: `connection.update`.

use serde::Deserialize;
use validator::Validate;

use super::fields::{valid_id, Text};

/// The connection state of one WhatsApp agent (`CONNECTING`, `QR`, `READY`, `CLOSE`, `LOGOUT`).
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(bound(deserialize = "'de: 'a"))]
pub struct AgentPayload<'a> {
    #[validate(custom(function = "valid_id"))]
    pub agent_id: Text<'a>,
    pub company_id: Option<Text<'a>>,
    pub status: Option<Text<'a>>,
    pub qr_code: Option<Text<'a>>,
    pub agent_name: Option<Text<'a>>,
    pub phone_number: Option<Text<'a>>,
    pub host_name: Option<Text<'a>>,
    pub version: Option<Text<'a>>,
}

impl AgentPayload<'_> {
    pub const QR: &'static str = "QR";
}
