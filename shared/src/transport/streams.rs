//! The three streams and the durable pull consumers, created or reconciled at startup.
//!
//! Streams are never deleted or recreated: a configuration that differs is updated in place,
//! and a difference the server refuses to update is reported as a startup error. Consumers
//! are created or updated the same way, so pending messages survive restarts and changes.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;

use crate::model::{Category, EventKind, Subject};

pub const REALTIME_STREAM: &str = "wa_events_stream";
pub const HISTORY_STREAM: &str = "wa_history_events_stream";
pub const DLQ_STREAM: &str = "dlq_stream";

/// The shape a stream must have.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: Vec<String>,
    pub max_age: Duration,
    pub replicas: usize,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The three streams of SPEC §1.
pub fn stream_specs(replicas: usize, dlq_max_age: Duration) -> Vec<StreamSpec> {
    let of = |history: bool| {
        EventKind::ALL
            .into_iter()
            .filter(|k| (k.category() == Category::Historical) == history)
            .map(Subject::every_tenant)
            .collect()
    };
    vec![
        StreamSpec {
            name: REALTIME_STREAM,
            subjects: of(false),
            max_age: 30 * DAY,
            replicas,
        },
        StreamSpec {
            name: HISTORY_STREAM,
            subjects: of(true),
            max_age: 30 * DAY,
            replicas,
        },
        StreamSpec {
            name: DLQ_STREAM,
            subjects: vec![Subject::DEAD_LETTERS.into()],
            max_age: dlq_max_age,
            replicas,
        },
    ]
}

/// Why the broker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("stream {stream}: {error}")]
    Stream { stream: String, error: String },
    #[error("consumer {consumer} on {stream}: {error}")]
    Consumer {
        stream: String,
        consumer: String,
        error: String,
    },
}

/// Creates the stream, or brings an existing one to the configured shape.
pub async fn ensure_stream(js: &Context, spec: &StreamSpec) -> Result<(), SetupError> {
    let fail = |error: String| SetupError::Stream {
        stream: spec.name.to_owned(),
        error,
    };
    let desired = StreamConfig {
        name: spec.name.to_owned(),
        subjects: spec.subjects.clone(),
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: spec.max_age,
        num_replicas: spec.replicas,
        ..Default::default()
    };
    let stream = js
        .get_or_create_stream(desired)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let current = stream.cached_info().config.clone();
    let mut next = current.clone();
    let mut subjects = spec.subjects.clone();
    let mut have = current.subjects.clone();
    subjects.sort();
    have.sort();
    if have != subjects {
        next.subjects = spec.subjects.clone();
    }
    next.max_age = spec.max_age;
    next.num_replicas = spec.replicas.max(1);
    next.retention = RetentionPolicy::Limits;
    if next != current {
        tracing::warn!(
            stream = spec.name,
            "stream configuration differs from the expected shape; updating it"
        );
        js.update_stream(&next)
            .await
            .map_err(|e| fail(format!("cannot be reconciled: {e}")))?;
    }
    Ok(())
}

/// How long the server waits for an ack before delivering a message again. Independent of the
/// retry backoff (retries are explicit NAK delays) and long enough that the in-progress acks of
/// [`KEEPALIVE`] keep any batch alive with a wide margin, across a leader election too.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How often a held message gets an in-progress ack: three times per [`ACK_WAIT`].
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// The shape a durable pull consumer must have.
///
/// The server never gives up on a message (`max_deliver` unlimited, no server-side backoff):
/// the function counts processing attempts itself and dead-letters on the last one, so a
/// delivery the function never saw (a failover, a process killed while holding it) can never
/// make the server drop a message silently (SPEC §1).
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: &'static str,
    pub durable: String,
    /// Empty: the whole stream.
    pub filter: String,
    pub max_ack_pending: i64,
}

/// Creates the durable consumer, or updates it in place to the configured shape.
pub async fn bind_consumer(js: &Context, spec: &ConsumerSpec) -> Result<PullConsumer, SetupError> {
    let fail = |error: String| SetupError::Consumer {
        stream: spec.stream.to_owned(),
        consumer: spec.durable.clone(),
        error,
    };
    let stream = js
        .get_stream(spec.stream)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let config = pull::Config {
        durable_name: Some(spec.durable.clone()),
        filter_subject: spec.filter.clone(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        max_deliver: -1,
        ack_wait: ACK_WAIT,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    };
    match stream.create_consumer(config.clone()).await {
        Ok(c) => Ok(c),
        // nats-server 2.9 accepts only filters that are a subset of one stream subject, so
        // `v1.*.*.<company>` is refused on the event streams: take the whole stream instead
        // (the runner leaves other tenants' events to their own consumers).
        Err(e) if !config.filter_subject.is_empty() && e.to_string().contains("10093") => {
            tracing::warn!(consumer = %spec.durable, filter = %config.filter_subject, "the server refuses this filter subject; consuming the whole stream and skipping other tenants");
            let config = pull::Config {
                filter_subject: String::new(),
                ..config
            };
            stream
                .create_consumer(config)
                .await
                .map_err(|e| fail(format!("cannot be created or updated in place: {e}")))
        }
        Err(e) => Err(fail(format!("cannot be created or updated in place: {e}"))),
    }
}
