//! WA Events Processor: the shared library behind every function binary.
//!
//! * [`model`]: subjects, tenants, the typed payload of each subject, the DLQ envelope.
//! * [`pipeline`]: `process_batch`, inbound events in, one `Outcome` per event out.
//! * [`store`]: Postgres: tenant schemas and migrations, set-based writes, the inbox.
//! * [`config`]: settings read once from the environment by the binaries.

pub mod config;
pub mod model;
pub mod pipeline;
pub mod store;
