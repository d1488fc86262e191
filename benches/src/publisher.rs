//! Publishing a workload to JetStream: at a fixed rate or as fast as possible, with up to
//! `in_flight` acks awaited concurrently, and a progress bar.

use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use wa_shared::model::EventKind;

use crate::event::Event;
use crate::report::Report;

/// How much to publish, and how fast.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Events per second; 0 publishes as fast as acks allow.
    pub rate: f64,
    /// Stop after this many events…
    pub count: Option<u64>,
    /// …or after this long, whichever comes first.
    pub duration: Option<Duration>,
    /// Publishes whose ack is still awaited, at most.
    pub in_flight: usize,
    pub progress: bool,
}

type Acked = (
    EventKind,
    usize,
    Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    >,
);

/// Publishes `events` until the count or duration of `settings` is reached (or `events` ends).
pub async fn publish(
    js: &Context,
    events: &mut impl Iterator<Item = Event>,
    settings: &PublishSettings,
) -> Report {
    let progress = progress_bar(settings);
    let mut report = Report::default();
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    let deadline = settings.duration.map(|d| start + d);
    let mut sent: u64 = 0;
    loop {
        if settings.count.is_some_and(|c| sent >= c) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if settings.count.is_none() && sent.is_multiple_of(256) {
            progress
                .bar
                .set_position(now.duration_since(start).as_millis() as u64);
            progress.bar.set_message(format!("{sent} events"));
        }
        if settings.rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / settings.rate);
            if due > now {
                let sleep = tokio::time::sleep_until(due.into());
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        Some(acked) = pending.next(), if !pending.is_empty() => {
                            record(&mut report, acked, &progress)
                        }
                    }
                }
            }
        }
        let Some(event) = events.next() else {
            break;
        };
        sent += 1;
        let (kind, len) = (event.kind, event.body.len());
        match js.publish(event.subject, event.body).await {
            Ok(ack) => pending.push(async move { (kind, len, ack.await) }),
            Err(e) => fail(&mut report, e.to_string(), &progress),
        }
        while pending.len() >= settings.in_flight.max(1) {
            if let Some(acked) = pending.next().await {
                record(&mut report, acked, &progress);
            }
        }
    }
    while let Some(acked) = pending.next().await {
        record(&mut report, acked, &progress);
    }
    report.elapsed = start.elapsed();
    progress.bar.finish_and_clear();
    report
}

fn record(report: &mut Report, (kind, len, result): Acked, progress: &Progress) {
    match result {
        Ok(_) => {
            report.published += 1;
            report.bytes += len as u64;
            *report.by_subject.entry(kind.label()).or_default() += 1;
            progress.event_done();
        }
        Err(e) => fail(report, e.to_string(), progress),
    }
}

fn fail(report: &mut Report, error: String, progress: &Progress) {
    report.errors += 1;
    progress.event_done();
    progress
        .bar
        .set_message(format!("{} errors", report.errors));
    report.first_error.get_or_insert(error);
}

/// The progress bar: of events with a count, of time with a duration only.
struct Progress {
    bar: ProgressBar,
    counts_events: bool,
}

impl Progress {
    fn event_done(&self) {
        if self.counts_events {
            self.bar.inc(1);
        }
    }
}

fn progress_bar(settings: &PublishSettings) -> Progress {
    let counts_events = settings.count.is_some();
    if !settings.progress {
        return Progress {
            bar: ProgressBar::hidden(),
            counts_events,
        };
    }
    let (len, template) = match (settings.count, settings.duration) {
        (Some(count), _) => (
            count,
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}) {msg}",
        ),
        (None, Some(d)) => (
            d.as_millis() as u64,
            "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
        ),
        (None, None) => (u64::MAX, "{spinner} [{elapsed_precise}] {msg}"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Progress { bar, counts_events }
}
