//! The processing core: a batch of inbound events in, one outcome per event out.

pub mod failure;
pub mod inbound;
pub mod plan;
pub mod process;

pub use inbound::{DeadLetter, InboundEvent, Outcome};
pub use process::{Processor, ProcessorSettings, Unavailable};
