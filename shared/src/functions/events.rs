//! The realtime and historical functions: events written through the core itself.

use super::{Defaults, FunctionKind, FunctionSpec, Scope};
use crate::transport::streams::{HISTORY_STREAM, REALTIME_STREAM};

pub const REALTIME: FunctionSpec = FunctionSpec {
    kind: FunctionKind::Events,
    name: "realtime",
    bin: "wa-realtime",
    about: "Consumes realtime WhatsApp events (chats, messages, contacts, agent status) into per-tenant Postgres schemas",
    consumer_type: "realtime",
    durable: "wa_realtime",
    stream: REALTIME_STREAM,
    scope: Scope::Stream,
    defaults: Defaults {
        http_port: "8081",
        max_deliver: Some("5"),
        backoff_var: "BACKOFF",
        backoff: "1s,2s,4s,8s",
    },
    metrics_prefix: "message_event_service",
};

pub const HISTORICAL: FunctionSpec = FunctionSpec {
    kind: FunctionKind::Events,
    name: "historical",
    bin: "wa-historical",
    about: "Consumes history syncs (batches of chats, messages, contacts) into per-tenant Postgres schemas",
    consumer_type: "historical",
    durable: "wa_historical",
    stream: HISTORY_STREAM,
    scope: Scope::Stream,
    defaults: Defaults {
        http_port: "8082",
        max_deliver: Some("3"),
        backoff_var: "BACKOFF",
        backoff: "2s,4s",
    },
    metrics_prefix: "message_event_service",
};
