//! The JetStream pull runner: fetch a batch, run the core, settle every message — the only
//! code that acks, naks or terminates in standalone mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, Context};
use async_nats::{Client, Subject as NatsSubject};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::metrics::EventMetrics;
use crate::pipeline::{Handler, InboundEvent, Outcome};

use super::dead_letter::{dead_letter_message, publish_all, DeadLetterMessage};

/// How a runner fetches.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Consumer name as shown in metrics and `last_metadata`.
    pub consumer: String,
    /// Label for metrics (`realtime`, `historical`, …).
    pub consumer_type: &'static str,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub batch_max_bytes: usize,
    /// How often messages held by the runner get an in-progress ack.
    pub keepalive: Duration,
    /// With `COMPANY_ID`: events of other tenants are left to their own consumers
    /// (acknowledged here without processing) when the server could not filter them out.
    pub only_tenant: Option<String>,
}

/// Messages this process holds (fetched, not yet settled), kept alive with in-progress acks.
#[derive(Default)]
struct Held {
    next: AtomicU64,
    replies: Mutex<HashMap<u64, (NatsSubject, Instant)>>,
}

impl Held {
    fn hold(&self, reply: NatsSubject) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.replies
            .lock()
            .expect("lock")
            .insert(id, (reply, Instant::now()));
        id
    }

    fn release(&self, id: u64) {
        self.replies.lock().expect("lock").remove(&id);
    }

    /// Replies held for longer than `age`.
    fn older_than(&self, age: Duration) -> Vec<NatsSubject> {
        let now = Instant::now();
        self.replies
            .lock()
            .expect("lock")
            .values()
            .filter(|(_, since)| now.duration_since(*since) >= age)
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// A fetched message: its event and where to settle it.
struct Delivery {
    event: InboundEvent,
    reply: NatsSubject,
    held: u64,
}

/// What a message's outcome becomes on the wire.
enum Settlement {
    Ack,
    Nak(Duration),
    Term,
}

impl Settlement {
    fn payload(&self) -> Bytes {
        match self {
            Settlement::Ack => Bytes::from_static(b"+ACK"),
            Settlement::Nak(delay) => format!("-NAK {{\"delay\":{}}}", delay.as_nanos()).into(),
            Settlement::Term => Bytes::from_static(b"+TERM"),
        }
    }
}

/// Maps outcomes to dead letters to publish and settlements: the one place outcomes become acks.
fn settle_plan(
    events: &[InboundEvent],
    outcomes: &[Outcome],
    max_retry: u32,
) -> (Vec<DeadLetterMessage>, Vec<Settlement>) {
    let mut dead = Vec::new();
    let settlements = events
        .iter()
        .zip(outcomes)
        .map(|(event, o)| match o {
            Outcome::Ack => Settlement::Ack,
            Outcome::AckWithDeadItems(items) => {
                for item in items {
                    error!(subject = %event.subject, seq = event.stream_sequence, item = ?item.item_index, error_type = %item.error_type, error = %item.error, "dead-lettering a history item");
                    dead.push(dead_letter_message(event, item, max_retry));
                }
                Settlement::Ack
            }
            Outcome::Retry { delay } => {
                warn!(subject = %event.subject, seq = event.stream_sequence, delivered = event.delivered, ?delay, "retrying later");
                Settlement::Nak(*delay)
            }
            Outcome::DeadLetter(dl) => {
                error!(subject = %event.subject, seq = event.stream_sequence, delivered = event.delivered, error_type = %dl.error_type, error = %dl.error, "dead-lettering");
                dead.push(dead_letter_message(event, dl, max_retry));
                Settlement::Term
            }
        })
        .collect();
    (dead, settlements)
}

/// Runs one durable pull consumer until shutdown.
pub struct Runner<H: Handler> {
    pub client: Client,
    pub js: Context,
    pub consumer: PullConsumer,
    pub handler: Arc<H>,
    pub settings: RunnerSettings,
    pub metrics: EventMetrics,
}

const MAX_HOLD_BACKOFF: Duration = Duration::from_secs(5);

impl<H: Handler> Runner<H> {
    /// Fetches and processes batches until `shutdown` turns true; then finishes and settles
    /// the batch in hand, flushes the acks and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let me = Arc::new(self);
        let held = Arc::new(Held::default());
        let keepalive = tokio::spawn(keep_alive(
            me.client.clone(),
            held.clone(),
            me.settings.keepalive,
        ));
        let lag = tokio::spawn(report_lag(me.consumer.clone(), me.metrics.clone()));
        info!(consumer = %me.settings.consumer, "consuming");
        let mut next = Some(me.spawn_fetch(held.clone()));
        let mut fetch_failures = 0u32;
        while let Some(fetch) = next.take() {
            let fetched = fetch.await.unwrap_or_else(|e| Err(e.to_string()));
            let stopping = *shutdown.borrow();
            let batch = match fetched {
                Ok(batch) => {
                    fetch_failures = 0;
                    batch
                }
                Err(e) => {
                    fetch_failures += 1;
                    warn!(consumer = %me.settings.consumer, error = %e, "fetch failed; retrying");
                    if !stopping {
                        let pause = hold_backoff(fetch_failures);
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    Vec::new()
                }
            };
            let stopping = stopping || *shutdown.borrow();
            if !stopping {
                // The next fetch overlaps the write of this batch.
                next = Some(me.spawn_fetch(held.clone()));
            }
            if !batch.is_empty() {
                me.handle(batch, &held, &shutdown).await;
            }
        }
        if let Err(e) = me.client.flush().await {
            warn!(error = %e, "flushing acks at shutdown");
        }
        keepalive.abort();
        lag.abort();
        info!(consumer = %me.settings.consumer, "stopped");
    }

    fn spawn_fetch(
        self: &Arc<Self>,
        held: Arc<Held>,
    ) -> tokio::task::JoinHandle<Result<Vec<Delivery>, String>> {
        let me = self.clone();
        tokio::spawn(async move { me.fetch(&held).await })
    }

    async fn fetch(&self, held: &Held) -> Result<Vec<Delivery>, String> {
        let mut messages = self
            .consumer
            .fetch()
            .max_messages(self.settings.batch_size)
            .max_bytes(self.settings.batch_max_bytes)
            .expires(self.settings.batch_max_wait)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(next) = messages.next().await {
            match next {
                Ok(msg) => {
                    if let Some(d) = self.delivery(msg, held) {
                        out.push(d);
                    }
                }
                Err(e) => {
                    if out.is_empty() {
                        return Err(e.to_string());
                    }
                    debug!(error = %e, "fetch ended early");
                    break;
                }
            }
        }
        debug!(fetched = out.len(), "fetch done");
        Ok(out)
    }

    fn delivery(&self, msg: jetstream::Message, held: &Held) -> Option<Delivery> {
        let reply = msg.reply.clone()?;
        let info = match msg.info() {
            Ok(info) => info,
            Err(e) => {
                warn!(subject = %msg.subject, error = %e, "message without JetStream metadata; ignored");
                return None;
            }
        };
        let headers = msg
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_owned()))
            })
            .collect();
        let event = InboundEvent {
            subject: msg.subject.to_string(),
            payload: msg.payload.clone(),
            headers,
            stream: info.stream.to_owned(),
            stream_sequence: info.stream_sequence,
            consumer: info.consumer.to_owned(),
            delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
            published_at: info.published,
        };
        let held = held.hold(reply.clone());
        Some(Delivery { event, reply, held })
    }

    async fn handle(
        &self,
        mut batch: Vec<Delivery>,
        held: &Held,
        shutdown: &watch::Receiver<bool>,
    ) {
        if let Some(tenant) = &self.settings.only_tenant {
            let (ours, foreign): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|d| crate::model::Subject::last_token(&d.event.subject) == tenant);
            for d in foreign {
                let _ = self
                    .client
                    .publish(d.reply, Settlement::Ack.payload())
                    .await;
                held.release(d.held);
            }
            batch = ours;
            if batch.is_empty() {
                return;
            }
        }
        let span = info_span!("batch", consumer = %self.settings.consumer, size = batch.len());
        async {
            let started = Instant::now();
            let (events, tickets): (Vec<InboundEvent>, Vec<(NatsSubject, u64)>) =
                batch.into_iter().map(|d| (d.event, (d.reply, d.held))).unzip();
            self.metrics.batch(events.len());
            // An unavailable database holds the batch: no delivery is spent, nothing is dead-lettered.
            let mut attempt = 0;
            let outcomes = loop {
                match self.handler.handle(&events).await {
                    Ok(outcomes) => break outcomes,
                    Err(e) => {
                        attempt += 1;
                        self.metrics.held();
                        if *shutdown.borrow() && attempt > 3 {
                            warn!(error = %e, "stopping with the batch unsettled; it will be redelivered");
                            for (_, id) in &tickets {
                                held.release(*id);
                            }
                            return;
                        }
                        warn!(error = %e, attempt, "holding the batch until the database is back");
                        tokio::time::sleep(hold_backoff(attempt)).await;
                    }
                }
            };
            self.metrics.db_duration(started.elapsed());
            let (dead, settlements) = settle_plan(&events, &outcomes, self.handler.max_deliver());
            // Dead letters are stored by the DLQ stream before the originals are settled.
            let mut attempt = 0;
            while !dead.is_empty() {
                match publish_all(&self.js, &dead).await {
                    Ok(()) => break,
                    Err(e) => {
                        attempt += 1;
                        if *shutdown.borrow() && attempt > 3 {
                            warn!(error = %e, "stopping before the dead letters were stored; the batch will be redelivered");
                            for (_, id) in &tickets {
                                held.release(*id);
                            }
                            return;
                        }
                        warn!(error = %e, attempt, "publishing dead letters failed; retrying");
                        tokio::time::sleep(hold_backoff(attempt)).await;
                    }
                }
            }
            for ((reply, id), (event, s)) in tickets.into_iter().zip(events.iter().zip(&settlements)) {
                if let Err(e) = self.client.publish(reply, s.payload()).await {
                    // Unsettled messages come back after the ack wait; the inbox makes that harmless.
                    warn!(seq = event.stream_sequence, error = %e, "settling a message failed");
                }
                held.release(id);
            }
            self.metrics.settled(&events, &outcomes, started.elapsed());
            debug!(elapsed = ?started.elapsed(), "batch settled");
        }
        .instrument(span)
        .await
    }
}

fn hold_backoff(attempt: u32) -> Duration {
    let ms = 200u64.saturating_mul(1 << attempt.min(10));
    Duration::from_millis(ms).min(MAX_HOLD_BACKOFF)
}

/// Sends in-progress acks for every message held longer than `every`.
async fn keep_alive(client: Client, held: Arc<Held>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for reply in held.older_than(every) {
            let _ = client.publish(reply, Bytes::from_static(b"+WPI")).await;
        }
    }
}

/// Reports the consumer's backlog (num_pending) as a gauge.
async fn report_lag(mut consumer: PullConsumer, metrics: EventMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Ok(info) = consumer.info().await {
            metrics.lag(info.num_pending);
        }
    }
}
