//! Transports: the JetStream pull runner, stream and consumer setup, dead-letter publishing.
//! The runner is the only code that acks, naks or terminates messages in standalone mode.

pub mod advisories;
pub mod dead_letter;
pub mod held;
pub mod nats;
pub mod pull;
pub mod reconcile;
pub mod runner;
pub mod streams;
