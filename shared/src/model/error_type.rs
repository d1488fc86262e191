//! Why an event is dead-lettered: the error types of SPEC §7.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an event was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// Not JSON, or an empty body.
    Malformed,
    /// Over `MAX_PAYLOAD_BYTES`.
    TooLarge,
    /// A missing or invalid field, or a wrong type.
    Validation,
    /// Tenant mismatch, invalid tenant id, or a tenant outside the allowlist.
    Tenant,
    /// A transient failure that outlived its redeliveries.
    RetryExhausted,
    /// A constraint or data error raised by the database for this event alone.
    DatabasePermanent,
    /// Anything else (a bug, a panic that kept recurring).
    Internal,
}

impl ErrorType {
    pub const ALL: [ErrorType; 7] = [
        ErrorType::Malformed,
        ErrorType::TooLarge,
        ErrorType::Validation,
        ErrorType::Tenant,
        ErrorType::RetryExhausted,
        ErrorType::DatabasePermanent,
        ErrorType::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Malformed => "malformed",
            ErrorType::TooLarge => "too_large",
            ErrorType::Validation => "validation",
            ErrorType::Tenant => "tenant",
            ErrorType::RetryExhausted => "retry_exhausted",
            ErrorType::DatabasePermanent => "database_permanent",
            ErrorType::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown error type {s:?}"))
    }
}
