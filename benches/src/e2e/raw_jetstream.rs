//! The raw JetStream limit: the realtime bodies published to a scratch stream with pipelined
//! acks, then consumed by a pull consumer in batches of 256 with an explicit ack each — what a
//! function does with a message, minus everything between fetch and ack.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::Context as JetStream;
use futures::StreamExt;
use serde_json::json;

use super::error::{Context, Error, Result};
use super::stack::delete_stream_if_any;
use crate::report::per_sec;
use crate::{publish, Event, PublishSettings, DEFAULT_RETRY_FOR};

const STREAM: &str = "BENCH_RAW";
const FETCH: usize = 256;

/// Publish and consume rates of the scratch stream.
#[derive(Debug, Clone)]
pub struct JetStreamLimit {
    pub messages: u64,
    pub bytes: u64,
    pub publish: Duration,
    pub consume: Duration,
}

impl JetStreamLimit {
    pub fn publish_per_sec(&self) -> f64 {
        per_sec(self.messages, self.publish)
    }

    pub fn consume_per_sec(&self) -> f64 {
        per_sec(self.messages, self.consume)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "stream": STREAM,
            "messages": self.messages,
            "bytes": self.bytes,
            "publish_s": self.publish.as_secs_f64(),
            "publish_msg_per_s": self.publish_per_sec(),
            "consume_s": self.consume.as_secs_f64(),
            "consume_msg_per_s": self.consume_per_sec(),
            "fetch_batch": FETCH,
        })
    }
}

/// Publishes `events` (on `bench.raw.<tenant>`) to a fresh scratch stream, consumes them all,
/// and deletes the stream.
pub async fn measure(
    client: &async_nats::Client,
    js: &JetStream,
    events: &[Event],
    progress: bool,
) -> Result<JetStreamLimit> {
    delete_stream_if_any(js, STREAM).await?;
    let stream = js
        .create_stream(StreamConfig {
            name: STREAM.into(),
            subjects: vec!["bench.raw.>".into()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the scratch stream")?;
    let mut scratch = events.iter().map(|e| Event {
        kind: e.kind,
        subject: format!("bench.raw.{}", e.subject.rsplit('.').next().unwrap_or("x")),
        body: e.body.clone(),
    });
    let settings = PublishSettings {
        rate: 0.0,
        count: Some(events.len() as u64),
        duration: None,
        in_flight: 1000,
        retry_for: DEFAULT_RETRY_FOR,
        progress,
    };
    let report = publish(js, &mut scratch, &settings).await;
    if report.errors > 0 {
        return Err(Error::new(format!(
            "{} publishes to {STREAM} failed: {}",
            report.errors,
            report.first_error.unwrap_or_default()
        )));
    }

    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench_raw".into()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("creating the scratch consumer")?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    let mut consumed = 0u64;
    while consumed < report.published {
        if Instant::now() > deadline {
            return Err(Error::new(format!(
                "consumed only {consumed} of {} messages from {STREAM} in 120 s",
                report.published
            )));
        }
        let mut batch = consumer
            .fetch()
            .max_messages(FETCH)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .context("fetching from the scratch stream")?;
        while let Some(message) = batch.next().await {
            let message = message.context("fetching from the scratch stream")?;
            message.ack().await.context("acking")?;
            consumed += 1;
        }
    }
    client.flush().await.context("flushing acks")?;
    let consume = start.elapsed();
    delete_stream_if_any(js, STREAM).await?;
    Ok(JetStreamLimit {
        messages: report.published,
        bytes: report.bytes,
        publish: report.elapsed,
        consume,
    })
}
