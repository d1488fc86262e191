//! WA Events Processor: the shared library behind every function binary.
//!
//! * [`model`]: subjects, tenants, the typed payload of each subject, the DLQ envelope.
//! * [`pipeline`]: `process_batch`, inbound events in, one `Outcome` per event out.
//! * [`store`]: Postgres: tenant schemas and migrations, set-based writes, the inbox.
//! * [`transport`]: the JetStream pull runner, streams and consumers, DLQ publishing.
//! * [`dlq_retry`], [`onboarding`]: the functions built on the core.
//! * [`app`]: what every function binary does, from settings to shutdown; [`lambda`]: Lambda mode.
//! * [`config`], [`telemetry`], [`metrics`], [`http`]: settings, logs, metrics, health.

pub mod app;
pub mod config;
pub mod dlq_retry;
pub mod http;
pub mod lambda;
pub mod metrics;
pub mod model;
pub mod onboarding;
pub mod pipeline;
pub mod store;
pub mod telemetry;
pub mod transport;
