//! WA Events Processor: the shared library behind every function binary.
//!
//! * [`model`]: subjects, tenants, the typed payload of each subject, the DLQ envelope.
//! * [`pipeline`]: `process_batch`, inbound events in, one `Outcome` per event out.
//! * [`store`]: Postgres: tenant schemas and migrations, set-based writes, the inbox.
//! * [`transport`]: the JetStream pull runner, streams and consumers, DLQ publishing.
//! * [`functions`]: the four functions (realtime, historical, dlq-retry, onboarding): spec and handler.
//! * [`settings`]: every variable, declared once; parsed and checked at startup.
//! * [`startup`]: what every long-running binary does from settings to shutdown.
//! * [`lambda`]: Lambda mode: the bridge's wire format and the Runtime API loop.
//! * [`telemetry`], [`metrics`], [`http`]: logs and traces, metrics, health.
//! * `aws` (feature `aws`): the AWS SDK configuration (the bridge, the CloudWatch sink).

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "runtime")]
pub mod functions;
#[cfg(feature = "runtime")]
pub mod http;
#[cfg(feature = "runtime")]
pub mod lambda;
#[cfg(feature = "runtime")]
pub mod metrics;
pub mod model;
#[cfg(feature = "runtime")]
pub mod pipeline;
#[cfg(feature = "runtime")]
pub mod settings;
#[cfg(feature = "runtime")]
pub mod startup;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "runtime")]
pub mod telemetry;
#[cfg(feature = "runtime")]
pub mod transport;
