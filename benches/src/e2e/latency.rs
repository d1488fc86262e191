//! Publish→commit latency at a fixed moderate rate: while events are published at the rate, a
//! poller reads the inbox rows committed since the last look (every `poll`) and takes, for each
//! new row, the time it was seen minus the time the stream stored the message (`published_us`,
//! the server's clock, on this machine). A row is seen at most `poll` plus one query after its
//! commit, which is the resolution of the numbers.
//!
//! Every tenant's events are published; the poller reads the inboxes of a fixed sample of at
//! most [`POLLED_TENANTS`] of them (spread evenly; all of them when there are fewer) with one
//! prepared statement, so that with hundreds of tenants it loads the machine no more than with
//! a few. It starts each look at the lowest sequence it may not have seen yet: below the
//! function's ack floor (read before the look) everything is committed, hence seen.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::Context as JetStream;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;

use super::commits::NewCommits;
use super::drain::Floor;
use super::error::{Context, Error, Result};
use crate::{publish, Event, PublishSettings, Report, DEFAULT_RETRY_FOR};
use wa_shared::transport::streams::REALTIME_STREAM;

/// Tenants whose events are timed, at most.
pub const POLLED_TENANTS: usize = 16;

/// Latencies of one phase, in milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Tenants the events were spread over.
    pub tenants: usize,
    /// Tenants whose events were timed.
    pub polled: usize,
    pub rate: f64,
    pub publish: Report,
    pub poll: Duration,
    /// Events timed.
    pub events: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tenants": self.tenants,
            "tenants_timed": self.polled,
            "rate_per_s": self.rate,
            "events": self.events,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "resolution_ms": self.poll.as_secs_f64() * 1e3,
            "publish": self.publish.to_json(),
        })
    }
}

/// Where and how to look for commits.
pub struct Polling<'a> {
    pub pool: &'a PgPool,
    pub commits: NewCommits,
    /// The consumer of the function being measured.
    pub floor: Floor,
    /// The first stream sequence this phase publishes.
    pub first_sequence: u64,
    pub poll: Duration,
    pub commit_timeout: Duration,
}

/// Publishes `events` (of `tenants` tenants) at `rate` for `duration` and measures the
/// publish→commit latency of the sampled tenants' ones.
pub async fn measure(
    js: &JetStream,
    polling: Polling<'_>,
    events: &mut impl Iterator<Item = Event>,
    tenants: usize,
    rate: f64,
    duration: Duration,
    progress: bool,
) -> Result<Latency> {
    let (done_tx, done_rx) = watch::channel(None::<(u64, Instant)>);
    let poll = polling.poll;
    let commits = polling.commits;
    let poller = tokio::spawn(watch_commits(
        polling.pool.clone(),
        commits.clone(),
        polling.floor,
        polling.first_sequence,
        poll,
        polling.commit_timeout,
        done_rx,
    ));
    let report = publish(
        js,
        &mut commits.track(events),
        &at_rate(rate, duration, progress),
    )
    .await;
    if report.errors > 0 {
        poller.abort();
        return Err(Error::new(format!(
            "{} latency events not stored: {}",
            report.errors,
            report.first_error.unwrap_or_default()
        )));
    }
    let _ = done_tx.send(Some((commits.tracked(), Instant::now())));
    let mut latencies = poller.await.context("latency poller")??;
    if latencies.is_empty() {
        return Err(Error::new("the latency phase committed nothing"));
    }
    latencies.sort_unstable_by(f64::total_cmp);
    Ok(Latency {
        tenants,
        polled: commits.tenants(),
        rate,
        events: latencies.len() as u64,
        p50_ms: percentile(&latencies, 0.50),
        p90_ms: percentile(&latencies, 0.90),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        publish: report,
        poll,
    })
}

/// Publishing at `rate` for `duration`, as the latency phase does.
fn at_rate(rate: f64, duration: Duration, progress: bool) -> PublishSettings {
    PublishSettings {
        rate,
        count: None,
        duration: Some(duration),
        in_flight: 1000,
        retry_for: DEFAULT_RETRY_FOR,
        progress,
    }
}

/// Publishes `events` at `rate` for `duration`, untimed, and waits until the function has
/// committed them all (its consumer's ack floor covers the last): the function runs at the
/// rate before the timed events come, with its statements prepared and its caches warm.
pub async fn settle(
    js: &JetStream,
    floor: &Floor,
    events: &mut impl Iterator<Item = Event>,
    rate: f64,
    duration: Duration,
    commit_timeout: Duration,
) -> Result<()> {
    if duration.is_zero() {
        return Ok(());
    }
    let report = publish(js, events, &at_rate(rate, duration, false)).await;
    if report.errors > 0 {
        return Err(Error::new(format!(
            "{} events of the latency phase's settling not stored: {}",
            report.errors,
            report.first_error.unwrap_or_default()
        )));
    }
    let last = super::stack::stream_state(js, REALTIME_STREAM)
        .await?
        .last_sequence;
    let deadline = Instant::now() + commit_timeout;
    while floor.now().await? < last {
        if Instant::now() > deadline {
            return Err(Error::new(format!(
                "the latency phase's settling events not committed {commit_timeout:?} after publishing"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls for new commits from `first` on until every event of the sampled tenants is seen;
/// returns each one's latency in ms.
async fn watch_commits(
    pool: PgPool,
    commits: NewCommits,
    floor: Floor,
    first: u64,
    poll: Duration,
    commit_timeout: Duration,
    done: watch::Receiver<Option<(u64, Instant)>>,
) -> Result<Vec<f64>> {
    let mut seen = HashSet::new();
    let mut latencies = Vec::new();
    // Every sampled row below `low` has been seen: the next look starts there.
    let mut low = first;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Read before the look: whatever it covers is committed, so the look sees it.
        let acked = floor.now().await?;
        let rows = commits.since(&pool, low).await?;
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        for (sequence, published_us) in rows {
            if seen.insert(sequence) {
                latencies.push((now_us - published_us).max(0) as f64 / 1e3);
            }
        }
        if acked >= low {
            low = acked + 1;
            seen.retain(|&s| s >= low);
        }
        let Some((target, published_at)) = *done.borrow() else {
            continue;
        };
        if latencies.len() as u64 >= target {
            return Ok(latencies);
        }
        if published_at.elapsed() > commit_timeout {
            return Err(Error::new(format!(
                "{} of {target} latency events committed {commit_timeout:?} after publishing ended",
                latencies.len()
            )));
        }
    }
}

/// The `p` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
