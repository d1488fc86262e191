//! Postgres: tenant schemas and migrations, one write function per table, the inbox.
//!
//! Every write is set-based (one statement per table per round of a batch) and runs inside the
//! tenant transaction of [`tenant_tx::begin`].

pub mod agents;
pub mod chats;
pub mod contacts;
pub mod exhausted;
pub mod inbox;
pub mod messages;
pub mod schema;
pub mod tenant_tx;

pub use schema::{SchemaError, Schemas, MIGRATIONS, SYSTEM_SCHEMA};

/// One column of a statement's rows, to bind as an array parameter (rows are built per event,
/// columns once per statement).
fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}
