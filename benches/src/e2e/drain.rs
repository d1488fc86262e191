//! How fast a running function drains a stream: events published flat out while the function's
//! durable consumer is sampled every interval for its ack floor (the stream sequence up to
//! which every message is acknowledged). The functions commit before they ack, so a message
//! under the floor is committed (or, for a dead letter, published to the DLQ); the phases check
//! the inboxes afterwards. One request to the server per sample, however many tenants: counting
//! thousands of inbox tables every 250 ms would load the two CPUs the function runs on.
//!
//! Events/s is the events over the time from the first publish to the first sample whose
//! floor covers the last one.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context as JetStream;
use futures::TryStreamExt;
use serde_json::json;
use tokio::sync::watch;

use super::error::{Context, Error, Result};
use super::throughput::Sample;
use crate::report::per_sec;
use crate::{publish, Event, PublishSettings, Report};

/// The durable consumer of `wa-realtime` (SPEC §1).
const REALTIME_DURABLE: &str = "wa_realtime";

/// How long to wait for the function's consumer to appear.
const CONSUMER_WITHIN: Duration = Duration::from_secs(30);

/// A drain's outcome.
#[derive(Debug, Clone)]
pub struct Drain {
    pub events: u64,
    /// From the first publish to the sample that saw every event acknowledged, or to the
    /// last sample when `complete` is false.
    pub elapsed: Duration,
    /// Every published event acknowledged within the timeout.
    pub complete: bool,
    /// Events acknowledged at the last sample.
    pub acknowledged: u64,
    pub publish: Report,
    pub samples: Vec<Sample>,
}

impl Drain {
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.elapsed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "events": self.events,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_sec(),
            "complete": self.complete,
            "acknowledged": self.acknowledged,
            "publish": self.publish.to_json(),
            "samples": self.samples.iter().map(|s| json!([s.at.as_secs_f64(), s.events])).collect::<Vec<_>>(),
        })
    }
}

/// The durable consumer of a stream (the function's: the benchmark's streams are fresh).
pub struct Floor {
    stream: async_nats::jetstream::stream::Stream,
    consumer: String,
}

impl Floor {
    /// Waits until the stream has a consumer.
    pub async fn of(js: &JetStream, stream: &str) -> Result<Floor> {
        let deadline = Instant::now() + CONSUMER_WITHIN;
        let stream = js
            .get_stream(stream)
            .await
            .context(format_args!("stream {stream}"))?;
        loop {
            let names: Vec<String> = stream
                .consumer_names()
                .try_collect()
                .await
                .context("listing the stream's consumers")?;
            // The function's durable, or whichever the fresh stream has.
            let consumer = names
                .iter()
                .find(|n| n.as_str() == REALTIME_DURABLE)
                .or(names.first());
            if let Some(consumer) = consumer {
                let consumer = consumer.clone();
                return Ok(Floor { stream, consumer });
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "no consumer on {} after {CONSUMER_WITHIN:?}",
                    stream.cached_info().config.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The consumer's ack floor: every stream sequence up to it is acknowledged.
    pub async fn now(&self) -> Result<u64> {
        let info = self
            .stream
            .consumer_info(&self.consumer)
            .await
            .context(format_args!("consumer {}", self.consumer))?;
        Ok(info.ack_floor.stream_sequence)
    }
}

/// What a drain needs: the stream, how often to look and for how long at most.
pub struct Sampling {
    pub stream: &'static str,
    pub interval: Duration,
    /// How long to wait for the acks once publishing has ended.
    pub timeout: Duration,
    pub progress: bool,
}

/// Publishes `events` flat out to the stream a function consumes and samples its consumer's
/// ack floor until every one is acknowledged (or `timeout` after publishing ended: then the
/// drain is not `complete`). Counts from the stream's last sequence before publishing.
pub async fn measure(js: &JetStream, sampling: &Sampling, events: Vec<Event>) -> Result<Drain> {
    let floor = Floor::of(js, sampling.stream).await?;
    let before = super::stack::stream_state(js, sampling.stream)
        .await?
        .last_sequence;
    let count = events.len() as u64;
    // The sampler learns the last sequence once publishing is done.
    let (done_tx, done_rx) = watch::channel(None::<(u64, Instant)>);
    let start = Instant::now();
    let sampler = tokio::spawn(sample(
        floor,
        before,
        sampling.interval,
        sampling.timeout,
        start,
        done_rx,
    ));
    let settings = PublishSettings::flat_out(count, sampling.progress);
    let report = publish(js, &mut events.into_iter(), &settings).await;
    let last = super::stack::stream_state(js, sampling.stream)
        .await?
        .last_sequence;
    let _ = done_tx.send(Some((last, Instant::now())));
    let (samples, complete) = sampler.await.context("sampler task")??;
    super::all_stored(&report, count)?;
    let target = last.saturating_sub(before);
    let end = samples
        .iter()
        .find(|s| s.events >= target)
        .or(samples.last())
        .map_or(start.elapsed(), |s| s.at);
    Ok(Drain {
        events: report.published,
        elapsed: end,
        complete,
        acknowledged: samples.last().map_or(0, |s| s.events),
        publish: report,
        samples,
    })
}

/// Samples until the floor reaches the last sequence (true) or the timeout passes (false).
async fn sample(
    floor: Floor,
    before: u64,
    interval: Duration,
    timeout: Duration,
    start: Instant,
    done: watch::Receiver<Option<(u64, Instant)>>,
) -> Result<(Vec<Sample>, bool)> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(start.into(), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let acked = floor.now().await?;
        samples.push(Sample {
            at: start.elapsed(),
            events: acked.saturating_sub(before),
        });
        let Some((last, published_at)) = *done.borrow() else {
            continue;
        };
        if acked >= last {
            return Ok((samples, true));
        }
        if published_at.elapsed() > timeout {
            return Ok((samples, false));
        }
    }
}
