//! Publishing a workload to JetStream: at a fixed rate or as fast as possible, with up to
//! `in_flight` acks awaited concurrently, and a progress bar.
//!
//! Like a real producer, the publisher rides out a JetStream failover (a leader election, a
//! restarted server): a publish that fails or whose ack is an error or times out is sent again
//! after a short backoff ([`backoff`]), for up to [`PublishSettings::retry_for`] after its first
//! attempt. Every event carries a `Nats-Msg-Id` unique to the run and the event, so that the
//! stream stores a retried event once even when an earlier attempt was stored and only its ack
//! was lost (the stream's duplicate window, 2 minutes by default, must be longer than
//! `retry_for`). A retried event waits in the set of pending publishes like the others: it takes
//! one of the `in_flight` places and blocks nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::Context;
use async_nats::Subject;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressStyle};
use wa_shared::model::EventKind;

use crate::event::Event;
use crate::report::Report;

/// How long a failed publish is retried by default: a leader election takes seconds, and this
/// is well inside the streams' default duplicate window (2 minutes).
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

/// The wait before the first retry; each further one doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How much to publish, and how fast.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Events per second; 0 publishes as fast as acks allow.
    pub rate: f64,
    /// Stop after this many events…
    pub count: Option<u64>,
    /// …or after this long, whichever comes first.
    pub duration: Option<Duration>,
    /// Publishes whose ack is still awaited (retries included), at most.
    pub in_flight: usize,
    /// How long after its first attempt a failed event may still be sent again (no attempt
    /// starts later); zero never retries.
    pub retry_for: Duration,
    pub progress: bool,
}

impl PublishSettings {
    /// `count` events as fast as acks allow, 1,000 in flight, retried for the default time.
    pub fn flat_out(count: u64, progress: bool) -> Self {
        PublishSettings {
            rate: 0.0,
            count: Some(count),
            duration: None,
            in_flight: 1000,
            retry_for: DEFAULT_RETRY_FOR,
            progress,
        }
    }
}

/// The wait before the next attempt of an event whose `failed` attempts all failed (`failed`
/// ≥ 1): 100 ms, 200 ms, 400 ms, … up to 2 s.
pub fn backoff(failed: u32) -> Duration {
    let doublings = failed.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// The wait before the next attempt of an event first sent `since_first` ago whose `failed`
/// attempts all failed, or `None` when that attempt would start more than `retry_for` after
/// the first: the event is given up.
pub fn next_attempt(failed: u32, since_first: Duration, retry_for: Duration) -> Option<Duration> {
    let delay = backoff(failed);
    (since_first + delay <= retry_for).then_some(delay)
}

/// Whether sending the same message again can succeed: not when it is too large for the
/// server, nor when an expectation header failed (the publisher sets none).
pub fn retryable(kind: PublishErrorKind) -> bool {
    !matches!(
        kind,
        PublishErrorKind::MaxPayloadExceeded
            | PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
    )
}

/// An id unique to this run of the publisher (this process, this call): the time, the process
/// id and a counter. `Nats-Msg-Id`s are `<run id>-<event number>`.
fn run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{:x}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// One event on its way to the stream.
struct Outgoing {
    kind: EventKind,
    subject: Subject,
    body: Bytes,
    /// Its `Nats-Msg-Id`.
    id: String,
    /// Attempts made so far (the one in flight included).
    attempts: u32,
    first_sent: Instant,
}

impl Outgoing {
    fn message(&self) -> PublishMessage {
        PublishMessage::build()
            .payload(self.body.clone())
            .message_id(&self.id)
    }
}

/// What the stream answered to an event's latest attempt.
type Landed = (Outgoing, Result<PublishAck, PublishError>);

/// A pending publish: the ack of a sent attempt, or a retry still to wait and send.
type Flight<'a> = BoxFuture<'a, Landed>;

fn await_ack(
    out: Outgoing,
    ack: async_nats::jetstream::context::PublishAckFuture,
) -> Flight<'static> {
    async move { (out, ack.await) }.boxed()
}

fn retry_after(js: &Context, mut out: Outgoing, delay: Duration) -> Flight<'_> {
    async move {
        tokio::time::sleep(delay).await;
        out.attempts += 1;
        let result = match js.send_publish(out.subject.clone(), out.message()).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        (out, result)
    }
    .boxed()
}

/// Publishes `events` until the count or duration of `settings` is reached (or `events` ends).
pub async fn publish(
    js: &Context,
    events: &mut impl Iterator<Item = Event>,
    settings: &PublishSettings,
) -> Report {
    let progress = progress_bar(settings);
    let run = run_id();
    let mut report = Report::default();
    let mut pending: FuturesUnordered<Flight<'_>> = FuturesUnordered::new();
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
                        Some(landed) = pending.next(), if !pending.is_empty() => {
                            settle(js, settings, &mut report, &mut pending, landed, &progress)
                        }
                    }
                }
            }
        }
        let Some(event) = events.next() else {
            break;
        };
        sent += 1;
        let out = Outgoing {
            kind: event.kind,
            subject: Subject::from(event.subject),
            body: event.body,
            id: format!("{run}-{sent}"),
            attempts: 1,
            first_sent: Instant::now(),
        };
        match js.send_publish(out.subject.clone(), out.message()).await {
            Ok(ack) => pending.push(await_ack(out, ack)),
            Err(e) => settle(
                js,
                settings,
                &mut report,
                &mut pending,
                (out, Err(e)),
                &progress,
            ),
        }
        while pending.len() >= settings.in_flight.max(1) {
            if let Some(landed) = pending.next().await {
                settle(js, settings, &mut report, &mut pending, landed, &progress);
            }
        }
    }
    while let Some(landed) = pending.next().await {
        settle(js, settings, &mut report, &mut pending, landed, &progress);
    }
    report.elapsed = start.elapsed();
    progress.bar.finish_and_clear();
    report
}

/// Counts an event's latest attempt: published, sent again later, or given up.
fn settle<'a>(
    js: &'a Context,
    settings: &PublishSettings,
    report: &mut Report,
    pending: &mut FuturesUnordered<Flight<'a>>,
    (out, result): Landed,
    progress: &Progress,
) {
    match result {
        Ok(ack) => {
            report.published += 1;
            // An earlier attempt was stored, only its ack was lost: the event counts once.
            report.duplicates += u64::from(ack.duplicate);
            report.bytes += out.body.len() as u64;
            *report.by_subject.entry(out.kind.label()).or_default() += 1;
            progress.event_done();
        }
        Err(e) => {
            report.first_error.get_or_insert_with(|| e.to_string());
            let retry = retryable(e.kind())
                .then(|| next_attempt(out.attempts, out.first_sent.elapsed(), settings.retry_for))
                .flatten();
            match retry {
                Some(delay) => {
                    report.retries += 1;
                    pending.push(retry_after(js, out, delay));
                }
                None => {
                    report.errors += 1;
                    progress.event_done();
                }
            }
            progress.bar.set_message(format!(
                "{} retries, {} errors",
                report.retries, report.errors
            ));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_from_100_ms_up_to_2_s() {
        let waits: Vec<_> = (1..=8).map(backoff).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 2000, 2000, 2000].map(|ms| ms * MS)
        );
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn no_attempt_starts_after_the_bound() {
        let bound = Duration::from_secs(30);
        assert_eq!(next_attempt(1, Duration::ZERO, bound), Some(100 * MS));
        assert_eq!(next_attempt(3, 5000 * MS, bound), Some(400 * MS));
        // The attempt would start exactly at the bound: still made; a moment later: not.
        assert_eq!(next_attempt(9, 28_000 * MS, bound), Some(2000 * MS));
        assert_eq!(next_attempt(9, 28_001 * MS, bound), None);
        assert_eq!(next_attempt(1, 40_000 * MS, bound), None);
    }

    #[test]
    fn a_zero_bound_never_retries() {
        assert_eq!(next_attempt(1, Duration::ZERO, Duration::ZERO), None);
    }

    #[test]
    fn retries_over_a_bound_add_up_to_at_most_the_bound() {
        // Attempts that fail at once: the waits of an event sum to no more than the bound.
        let bound = Duration::from_secs(30);
        let mut since_first = Duration::ZERO;
        let mut failed = 1;
        while let Some(wait) = next_attempt(failed, since_first, bound) {
            since_first += wait;
            failed += 1;
        }
        assert!(since_first <= bound);
        // 100+200+400+800+1600 ms, then 2 s waits: 3.1 s + 13 × 2 s = 29.1 s, 19 attempts.
        assert_eq!(failed, 19);
        assert_eq!(since_first, 29_100 * MS);
    }

    #[test]
    fn only_failures_a_resend_cannot_fix_are_final() {
        for kind in [
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
            PublishErrorKind::Other,
        ] {
            assert!(retryable(kind), "{kind}");
        }
        for kind in [
            PublishErrorKind::MaxPayloadExceeded,
            PublishErrorKind::WrongLastMessageId,
            PublishErrorKind::WrongLastSequence,
        ] {
            assert!(!retryable(kind), "{kind}");
        }
    }

    #[test]
    fn run_ids_differ_within_a_process() {
        assert_ne!(run_id(), run_id());
    }
}
