//! Agent status payloads: `connection.update`.

use serde::Deserialize;
use validator::Validate;

use super::fields::valid_id;

/// The connection state of one WhatsApp agent (`CONNECTING`, `QR`, `READY`, `CLOSE`, `LOGOUT`).
#[derive(Debug, Clone, Deserialize, Validate)]
pub struct AgentPayload {
    #[validate(custom(function = "valid_id"))]
    pub agent_id: String,
    pub company_id: Option<String>,
    pub status: Option<String>,
    pub qr_code: Option<String>,
    pub agent_name: Option<String>,
    pub phone_number: Option<String>,
    pub host_name: Option<String>,
    pub version: Option<String>,
}

impl AgentPayload {
    pub const QR: &'static str = "QR";
}
