//! Talking to NATS from tests: publishing like the producer, reading the DLQ and consumer state.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy, Context};
use futures::StreamExt;
use serde_json::Value;

/// The shared NATS of the machine (`TEST_NATS_URL`, default the local server).
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A JetStream context on `url`: one server, or a comma-separated list of a cluster's (as the
/// product's `NATS_URL`), reconnecting for as long as it lives.
///
/// A server that has just started may reset the first connection (its port open before it
/// serves): connecting is tried again for up to 10 s.
pub async fn jetstream(url: &str) -> Context {
    let servers: Vec<&str> = url.split(',').map(str::trim).collect();
    let start = std::time::Instant::now();
    loop {
        match async_nats::ConnectOptions::new()
            .connect(servers.clone())
            .await
        {
            Ok(client) => return jetstream::new(client),
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                eprintln!("connect to NATS at {url}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect to NATS at {url}: {e}"),
        }
    }
}

/// Publishes like the producer (no Nats-Msg-Id), waiting for the stream to store it.
pub async fn publish(js: &Context, subject: &str, body: impl Into<bytes::Bytes>) -> u64 {
    js.publish(subject.to_owned(), body.into())
        .await
        .expect("publish")
        .await
        .expect("stored by a stream")
        .sequence
}

/// Waits until the stream exists (a function creates it at startup).
pub async fn wait_for_stream(js: &Context, name: &str) {
    crate::eventually(
        Duration::from_secs(30),
        &format!("stream {name}"),
        || async { js.get_stream(name).await.ok().map(drop) },
    )
    .await;
}

/// One dead letter as stored in `dlq_stream`.
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    pub subject: String,
    pub msg_id: Option<String>,
    pub envelope: Value,
}

/// A dead letter's envelope as JSON. A field too deeply nested for a `Value` (an original
/// payload nested 20,000 levels) is kept as its JSON text.
fn envelope_json(payload: &[u8]) -> Value {
    let fields: serde_json::Map<String, Value> = serde_json::from_slice::<
        std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>,
    >(payload)
    .expect("envelope is JSON")
    .into_iter()
    .map(|(k, raw)| {
        let v =
            serde_json::from_str(raw.get()).unwrap_or_else(|_| Value::String(raw.get().to_owned()));
        (k, v)
    })
    .collect();
    Value::Object(fields)
}

/// Every message in `dlq_stream` on `subject` (e.g. `v1.dlq.<tenant>`), read with an
/// ephemeral consumer.
pub async fn dead_letters(js: &Context, subject: &str) -> Vec<StoredDeadLetter> {
    let Ok(stream) = js.get_stream("dlq_stream").await else {
        return Vec::new();
    };
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("ephemeral consumer");
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .expect("fetch");
        let mut got = 0;
        while let Some(Ok(m)) = batch.next().await {
            got += 1;
            out.push(StoredDeadLetter {
                subject: m.subject.to_string(),
                msg_id: m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned()),
                envelope: envelope_json(&m.payload),
            });
        }
        if got == 0 {
            return out;
        }
    }
}

/// (num_pending, num_ack_pending) of a durable consumer.
pub async fn consumer_backlog(js: &Context, stream: &str, durable: &str) -> Option<(u64, usize)> {
    let stream = js.get_stream(stream).await.ok()?;
    let info = stream.consumer_info(durable).await.ok()?;
    Some((info.num_pending, info.num_ack_pending))
}
