//! One payload read from JSON: parsing, field validation and the tenant check, whether it is
//! an event of its own or an item of a history batch.

use serde::Deserialize;
use serde_json::value::RawValue;
use validator::Validate;

use super::agent::AgentPayload;
use super::chat::ChatPayload;
use super::contact::ContactPayload;
use super::error_type::ErrorType;
use super::fields::{embedded_json_problem, holds_lone_surrogate, Text};
use super::message::{MessagePatch, MessagePayload};

/// A permanent reason why an event (or a history item) cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct DecodeError {
    pub error_type: ErrorType,
    pub message: String,
}

impl DecodeError {
    /// The message is made printable (see [`printable`]): it may quote the event's data.
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        DecodeError {
            error_type,
            message: printable(message.into()),
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

/// `message` with control characters escaped (`\u0000`): error messages quote the event's
/// data and are stored as text and inside JSON, which hold no NUL.
pub fn printable(message: String) -> String {
    if !message.contains(|c: char| c.is_control() && c != '\n') {
        return message;
    }
    message
        .chars()
        .map(|c| match c {
            '\n' => "\n".to_owned(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a str) -> Result<T, DecodeError> {
    serde_json::from_str(body).map_err(|e| {
        // A string escape naming a lone surrogate is grammatical JSON that no text can hold:
        // the field is invalid, as a NUL in it would be, not the body malformed.
        let escape = e.classify() == serde_json::error::Category::Syntax
            && e.to_string().contains(" escape");
        if escape && holds_lone_surrogate(body) {
            DecodeError::new(
                ErrorType::Validation,
                format!("a string holds a lone surrogate ({e})"),
            )
        } else {
            DecodeError::from_json(&e)
        }
    })
}

/// A payload, read as an event of its own or as a history item.
pub trait Item<'a>: Deserialize<'a> + Validate {
    /// The company it names, if any.
    fn company(&self) -> Option<&str>;

    /// Takes a history sync's top-level agent id when the item carries none.
    fn inherit_agent(&mut self, _agent: &Text<'a>) {}

    /// Its embedded JSON fields, by name (stored as `jsonb`).
    fn embedded(&self) -> Vec<(&'static str, &'a RawValue)> {
        Vec::new()
    }
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
item_with_company!(ContactPayload, AgentPayload);

impl<'a> Item<'a> for ChatPayload<'a> {
    fn company(&self) -> Option<&str> {
        self.company_id.as_deref()
    }

    fn embedded(&self) -> Vec<(&'static str, &'a RawValue)> {
        named([("last_message", self.last_message)])
    }
}

impl<'a> Item<'a> for MessagePatch<'a> {
    fn company(&self) -> Option<&str> {
        self.company_id.as_deref()
    }

    fn embedded(&self) -> Vec<(&'static str, &'a RawValue)> {
        named([("edited_message_obj", self.edited_message_obj)])
    }
}

/// The fields that are present.
fn named<'a, const N: usize>(
    fields: [(&'static str, Option<&'a RawValue>); N],
) -> Vec<(&'static str, &'a RawValue)> {
    fields
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .collect()
}

impl<'a> Item<'a> for MessagePayload<'a> {
    fn company(&self) -> Option<&str> {
        self.company_id.as_deref()
    }

    fn embedded(&self) -> Vec<(&'static str, &'a RawValue)> {
        named([
            ("key", self.key),
            ("message_obj", self.message_obj),
            ("edited_message_obj", self.edited_message_obj),
        ])
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
    for (name, json) in value.embedded() {
        if let Some(problem) = embedded_json_problem(json) {
            return Err(DecodeError::new(
                ErrorType::Validation,
                format!("{name}: {problem}"),
            ));
        }
    }
    match value.company() {
        Some(company) if company != tenant => Err(DecodeError::new(
            ErrorType::Tenant,
            format!("company_id {company:?} does not match the subject's tenant {tenant:?}"),
        )),
        _ => Ok(value),
    }
}
