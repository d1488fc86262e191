//! A producer that rides out broker failovers: each event carries a `Nats-Msg-Id` and is
//! published again until a stream acknowledges it (the stream's duplicate window turns the
//! retries of a stored message into one stored message), at a steady rate, so that a fault
//! lands while events are still arriving.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::Context;
use serde_json::Value;
use tokio::task::JoinHandle;
use wa_shared::model::{EventKind, Subject};

use crate::eventually;

/// How long one event may take to be stored, retries included: far longer than an election.
const PUBLISH_WITHIN: Duration = Duration::from_secs(120);

/// Between two attempts of one event.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Events published together (and then waited for) at each tick of the rate.
const CHUNK: usize = 20;

/// What the stream acknowledged.
#[derive(Debug, Default)]
pub struct Published {
    /// The stream sequence of each event, by its `Nats-Msg-Id`.
    pub sequences: BTreeMap<String, u64>,
    /// Attempts that failed (no answer, no responders, an error from the stream) and were retried.
    pub retries: usize,
    /// Acknowledgements that said "duplicate": a retry of an event the stream had stored.
    pub duplicates: usize,
    /// From the first publish to the last acknowledgement.
    pub elapsed: Duration,
}

impl Published {
    /// Adds what another publisher of the same workload got acknowledged.
    pub fn absorb(&mut self, other: Published) {
        self.sequences.extend(other.sequences);
        self.retries += other.retries;
        self.duplicates += other.duplicates;
        self.elapsed += other.elapsed;
    }
}

/// Publishes a list of events in the background; [`Publisher::finish`] waits for the last one.
pub struct Publisher {
    acked: Arc<AtomicUsize>,
    task: JoinHandle<Published>,
}

impl Publisher {
    /// Publishes `events` for `tenant` through `js` at about `rate` events per second, each with
    /// `Nats-Msg-Id` `<tenant>:<first + its index>` (`first`: where these events start in the
    /// test's workload, so that two publishers of one workload never share an id).
    pub fn spawn(
        js: Context,
        tenant: &str,
        events: &[(EventKind, Value)],
        first: usize,
        rate: u32,
    ) -> Self {
        let events: Vec<(String, String, bytes::Bytes)> = events
            .iter()
            .enumerate()
            .map(|(i, (kind, body))| {
                (
                    Subject::format(*kind, tenant),
                    format!("{tenant}:{}", first + i),
                    serde_json::to_vec(body).expect("json").into(),
                )
            })
            .collect();
        let acked = Arc::new(AtomicUsize::new(0));
        let counter = acked.clone();
        let tick = Duration::from_secs_f64(CHUNK as f64 / f64::from(rate.max(1)));
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut interval = tokio::time::interval(tick);
            let mut out = Published::default();
            for chunk in events.chunks(CHUNK) {
                interval.tick().await;
                let acks = futures::future::join_all(
                    chunk
                        .iter()
                        .map(|(subject, id, body)| until_acked(&js, subject, id, body)),
                )
                .await;
                for ((_, id, _), (ack, failed)) in chunk.iter().zip(acks) {
                    out.retries += failed;
                    out.duplicates += usize::from(ack.duplicate);
                    out.sequences.insert(id.clone(), ack.sequence);
                }
                counter.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            out.elapsed = start.elapsed();
            out
        });
        Publisher { acked, task }
    }

    /// Events acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` events are acknowledged.
    pub async fn wait_acked(&self, n: usize, within: Duration) {
        eventually(within, &format!("{n} events acknowledged"), || async {
            (self.acked() >= n).then_some(())
        })
        .await;
    }

    /// Waits for every event to be acknowledged.
    pub async fn finish(self) -> Published {
        self.task.await.expect("the publisher panicked")
    }
}

/// Publishes one event until the stream acknowledges it: (the acknowledgement, failed attempts).
async fn until_acked(
    js: &Context,
    subject: &str,
    id: &str,
    body: &bytes::Bytes,
) -> (PublishAck, usize) {
    let start = Instant::now();
    let mut failed = 0;
    loop {
        let publish = PublishMessage::build().payload(body.clone()).message_id(id);
        let sent: Result<PublishAckFuture, _> = js.send_publish(subject.to_owned(), publish).await;
        let error = match sent {
            Ok(ack) => match ack.await {
                Ok(ack) => return (ack, failed),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        failed += 1;
        assert!(
            start.elapsed() < PUBLISH_WITHIN,
            "{subject} ({id}) not stored within {PUBLISH_WITHIN:?}: {error}"
        );
        tokio::time::sleep(RETRY_AFTER).await;
    }
}
