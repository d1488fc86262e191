//! One payload read from JSON: parsing, field validation and the tenant check, whether it is
//! an event of its own or an item of a history batch.

use serde::Deserialize;
use validator::Validate;

use super::agent::AgentPayload;
use super::chat::ChatPayload;
use super::contact::ContactPayload;
use super::error_type::ErrorType;
use super::fields::Text;
use super::message::{MessagePatch, MessagePayload};

/// A permanent reason why an event (or a history item) cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct DecodeError {
    pub error_type: ErrorType,
    pub message: String,
}

impl DecodeError {
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        DecodeError {
            error_type,
            message: message.into(),
        }
    }

    pub fn from_json(err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let error_type = match err.classify() {
            Category::Data => ErrorType::Validation,
            Category::Syntax | Category::Eof | Category::Io => ErrorType::Malformed,
        };
        DecodeError::new(error_type, err.to_string())
    }
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(body).map_err(|e| DecodeError::from_json(&e))
}

/// A payload, read as an event of its own or as a history item.
pub trait Item<'a>: Deserialize<'a> + Validate {
    /// The company it names, if any.
    fn company(&self) -> Option<&str>;

    /// Takes a history sync's top-level agent id when the item carries none.
    fn inherit_agent(&mut self, _agent: &Text<'a>) {}
}

macro_rules! item_with_company {
    ($($t:ident),*) => {$(
        impl<'a> Item<'a> for $t<'a> {
            fn company(&self) -> Option<&str> {
                self.company_id.as_deref()
            }
        }
    )*};
}
item_with_company!(ChatPayload, MessagePatch, ContactPayload, AgentPayload);

impl<'a> Item<'a> for MessagePayload<'a> {
    fn company(&self) -> Option<&str> {
        self.company_id.as_deref()
    }

    fn inherit_agent(&mut self, agent: &Text<'a>) {
        if self.agent_id.is_none() {
            self.agent_id = Some(agent.clone());
        }
    }
}

pub fn item<'a, T: Item<'a>>(body: &'a str, tenant: &str) -> Result<T, DecodeError> {
    checked(parse(body)?, tenant)
}

/// Field validation and the tenant check of a parsed payload.
pub fn checked<'a, T: Item<'a>>(value: T, tenant: &str) -> Result<T, DecodeError> {
    value
        .validate()
        .map_err(|e| DecodeError::new(ErrorType::Validation, e.to_string().replace('\n', "; ")))?;
    match value.company() {
        Some(company) if company != tenant => Err(DecodeError::new(
            ErrorType::Tenant,
            format!("company_id {company:?} does not match the subject's tenant {tenant:?}"),
        )),
        _ => Ok(value),
    }
}
