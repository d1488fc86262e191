//! Load generation and benchmarks for the WA Events Processor.
//!
//! * [`workload`]: a deterministic stream of producer-shaped events over tenants and agents.
//! * [`event`]: one event to publish, what the others pass around.
//! * [`agent`], [`scene`], [`sync`]: one simulated phone, its realtime scenes, its history syncs.
//! * [`producer`], [`content`]: the producer's JSON bodies and message contents.
//! * [`publisher`], [`report`]: publishing to JetStream with pipelined acks, and what it measured.
//! * [`rng`]: the seeded random numbers behind `--seed`.
//! * [`e2e`]: the end-to-end benchmark (`wa-bench-e2e`): functions, load and raw limits.

pub mod agent;
pub mod content;
pub mod e2e;
pub mod event;
pub mod producer;
pub mod publisher;
pub mod report;
pub mod rng;
pub mod scene;
pub mod sync;
pub mod workload;

pub use event::Event;
pub use publisher::{publish, PublishSettings, DEFAULT_RETRY_FOR};
pub use report::Report;
pub use workload::{Mix, Workload, WorkloadSettings};
