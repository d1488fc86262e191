//! One event to publish: what a simulated phone produces ([`crate::agent`]), a workload
//! yields ([`crate::workload`]) and the publisher sends ([`crate::publisher`]).

use bytes::Bytes;
use wa_shared::model::EventKind;

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub subject: String,
    pub body: Bytes,
}
