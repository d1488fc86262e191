//! The event model: subjects and tenants, one typed payload per subject, the DLQ envelope.

pub mod agent;
pub mod chat;
pub mod contact;
pub mod dead_letter;
pub mod decode;
pub mod error_type;
pub mod fields;
pub mod history;
pub mod item;
pub mod message;
pub mod subject;
pub mod tenant;
pub mod text;

pub use agent::AgentPayload;
pub use chat::{ChatPayload, UnreadCount};
pub use contact::ContactPayload;
pub use dead_letter::{DeadLetterEnvelope, EnvelopeInput, SourcePosition};
pub use decode::{decode, Payload};
pub use error_type::ErrorType;
pub use history::HistoryItem;
pub use item::DecodeError;
pub use message::{Campaign, Flow, MessagePatch, MessagePayload};
pub use subject::{Category, EventKind, Subject, SubjectError};
pub use tenant::{quote_ident, InvalidTenant, TenantId};
