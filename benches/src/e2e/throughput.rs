//! Sustained throughput of a running function: publish events flat out and count commits in
//! the inbox every sample interval until all of them are there. Events/s is the events over
//! the time from the first publish to the first sample that saw the last commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context as JetStream;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use super::commits::Inboxes;
use super::error::{Context, Error, Result};
use crate::report::per_sec;
use crate::{publish, Event, PublishSettings, Report};

/// Committed events at a time since publishing started.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub events: u64,
}

/// A throughput phase's outcome.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub events: u64,
    pub rows: u64,
    /// From the first publish to the sample that saw every event committed.
    pub elapsed: Duration,
    pub publish: Report,
    pub samples: Vec<Sample>,
    /// Rows of the first n events, for n = 0..=events (to turn event samples into rows).
    pub rows_prefix: Vec<u64>,
}

impl Throughput {
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.events, self.elapsed)
    }

    pub fn rows_per_sec(&self) -> f64 {
        per_sec(self.rows, self.elapsed)
    }

    /// Rows committed at each sample, assuming commits follow stream order (as the functions
    /// commit them, batch after batch).
    pub fn row_samples(&self) -> Vec<(f64, f64)> {
        self.samples
            .iter()
            .map(|s| {
                let i = (s.events as usize).min(self.rows_prefix.len().saturating_sub(1));
                (
                    s.at.as_secs_f64(),
                    self.rows_prefix.get(i).copied().unwrap_or(0) as f64,
                )
            })
            .collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "events": self.events,
            "rows": self.rows,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_sec(),
            "rows_per_s": self.rows_per_sec(),
            "publish": self.publish.to_json(),
            "samples": self.samples.iter().map(|s| json!([s.at.as_secs_f64(), s.events])).collect::<Vec<_>>(),
        })
    }
}

/// How a phase samples.
pub struct Sampling<'a> {
    pub pool: &'a PgPool,
    pub inboxes: &'a Inboxes,
    pub stream: &'static str,
    pub interval: Duration,
    pub commit_timeout: Duration,
    pub progress: bool,
}

/// Publishes `events` flat out (`rows[i]` row writes each) and samples commits until all of
/// them are committed. `already` messages of the stream were committed before.
pub async fn measure(
    js: &JetStream,
    sampling: &Sampling<'_>,
    events: Vec<Event>,
    rows: &[u64],
    already: u64,
) -> Result<Throughput> {
    let mut rows_prefix = Vec::with_capacity(rows.len() + 1);
    rows_prefix.push(0);
    for r in rows {
        rows_prefix.push(rows_prefix.last().copied().unwrap_or(0) + r);
    }
    let count = events.len() as u64;
    // The sampler learns the target once publishing is done (it counts acknowledged events).
    let (done_tx, done_rx) = watch::channel(None::<(u64, Instant)>);
    let start = Instant::now();
    let sampler = tokio::spawn(sample(
        sampling.pool.clone(),
        Arc::new(sampling.inboxes.clone()),
        sampling.stream,
        sampling.interval,
        sampling.commit_timeout,
        start,
        already,
        done_rx,
    ));
    let settings = PublishSettings::flat_out(count, sampling.progress);
    let report = publish(js, &mut events.into_iter(), &settings).await;
    let _ = done_tx.send(Some((report.published, Instant::now())));
    let samples = sampler.await.context("sampler task")??;
    super::all_stored(&report, count)?;
    // Samples go on until publishing has ended; the first one with everything is the end.
    let last = samples
        .iter()
        .find(|s| s.events >= report.published)
        .map_or(start.elapsed(), |s| s.at);
    Ok(Throughput {
        events: report.published,
        rows: rows_prefix.last().copied().unwrap_or(0),
        elapsed: last,
        publish: report,
        samples,
        rows_prefix,
    })
}

#[allow(clippy::too_many_arguments)]
async fn sample(
    pool: PgPool,
    inboxes: Arc<Inboxes>,
    stream: &'static str,
    interval: Duration,
    commit_timeout: Duration,
    start: Instant,
    already: u64,
    done: watch::Receiver<Option<(u64, Instant)>>,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(start.into(), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let events = inboxes
            .committed(&pool, stream)
            .await?
            .saturating_sub(already);
        samples.push(Sample {
            at: start.elapsed(),
            events,
        });
        let Some((target, published_at)) = *done.borrow() else {
            continue;
        };
        if events >= target {
            return Ok(samples);
        }
        if published_at.elapsed() > commit_timeout {
            return Err(Error::new(format!(
                "{events} of {target} events committed {commit_timeout:?} after publishing ended"
            )));
        }
    }
}
