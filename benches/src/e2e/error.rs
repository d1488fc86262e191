//! The benchmark's one error type — the test kit's: what failed, as a sentence for the operator —
//! and a way to say what was being done when it happened.

use std::fmt;

pub use wa_testkit::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Says what was being done when an error happened.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(format!("{what}: {e}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::new(what.to_string()))
    }
}
