//! The event model: subjects and tenants, one typed payload per subject, the DLQ envelope.

pub mod agent;
pub mod chat;
pub mod contact;
pub mod dead_letter;
pub mod decode;
pub mod error_type;
pub mod fields;
pub mod history;
pub mod message;
pub mod subject;
pub mod tenant;

pub use agent::AgentPayload;
pub use chat::ChatPayload;
pub use contact::ContactPayload;
pub use dead_letter::{DeadLetterEnvelope, EnvelopeInput};
pub use decode::{decode, DecodeError, HistoryItem, Payload};
pub use error_type::ErrorType;
pub use message::{Campaign, Flow, MessagePatch, MessagePayload};
pub use subject::{Category, EventKind, Subject, SubjectError};
pub use tenant::{quote_ident, InvalidTenant, TenantId};
