//! The JetStream pull runner: fetch a batch, run the core, settle every message — the only
//! code that acks, naks or terminates in standalone mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind, Context};
use async_nats::{Client, Subject as NatsSubject};
use tokio::sync::watch;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::metrics::EventMetrics;
use crate::model::{Subject, TenantId};
use crate::pipeline::{Handler, InboundEvent, Outcome};
use crate::telemetry::spans;

use super::dead_letter::{dead_letter_message, publish_all, DeadLetterMessage};
use super::held::{keep_alive, Held};
use super::pull::{pull, PullRequest};

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
    pub only_tenant: Option<TenantId>,
    /// Processing attempts before a transient failure is dead-lettered (reported in dead
    /// letters as `max_retry`; the server itself never gives up on a message).
    pub max_deliver: u32,
}

/// What one fetch brought.
struct Fetched {
    deliveries: Vec<Delivery>,
    /// More messages were waiting when the last of them was sent.
    backlog: bool,
}

/// A fetched message: its event and where to settle it.
struct Delivery {
    event: InboundEvent,
    reply: NatsSubject,
    held: u64,
}

/// Maps outcomes to dead letters to publish and settlements: the one place outcomes become acks.
fn settle_plan(
    events: &[InboundEvent],
    outcomes: &[Outcome],
    max_retry: u32,
    max_payload: usize,
) -> (Vec<DeadLetterMessage>, Vec<AckKind>) {
    let mut dead = Vec::new();
    let settlements = events
        .iter()
        .zip(outcomes)
        .map(|(event, o)| match o {
            Outcome::Ack => AckKind::Ack,
            Outcome::AckWithDeadItems(items) => {
                for item in items {
                    error!(subject = %event.subject, seq = event.stream_sequence, item = ?item.item_index, error_type = %item.error_type, error = %item.error, "dead-lettering a history item");
                    dead.push(dead_letter_message(event, item, max_retry, max_payload));
                }
                AckKind::Ack
            }
            Outcome::Retry { delay } => {
                warn!(subject = %event.subject, seq = event.stream_sequence, delivered = event.delivered, ?delay, "retrying later");
                AckKind::Nak(Some(*delay))
            }
            // Why it waits was logged where that was decided (once per tenant in a while).
            Outcome::Wait { delay } => {
                debug!(subject = %event.subject, seq = event.stream_sequence, delivered = event.delivered, ?delay, "waiting");
                AckKind::Nak(Some(*delay))
            }
            Outcome::DeadLetter(dl) => {
                error!(subject = %event.subject, seq = event.stream_sequence, delivered = event.delivered, error_type = %dl.error_type, error = %dl.error, "dead-lettering");
                dead.push(dead_letter_message(event, dl, max_retry, max_payload));
                AckKind::Term
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
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let me = Arc::new(self);
        let held = Arc::new(Held::default());
        let keepalive = tokio::spawn(keep_alive(
            me.client.clone(),
            held.clone(),
            me.settings.keepalive,
        ));
        let lag = tokio::spawn(report_lag(me.consumer.clone(), me.metrics.clone()));
        let stream = me.consumer.cached_info().stream_name.clone();
        info!(consumer = %me.settings.consumer, "consuming");
        // Handler futures are not `Send`: the advisory watcher runs beside the fetch loop in
        // this task rather than being spawned.
        futures::join!(
            me.consume(held, shutdown.clone()),
            me.clone().watch_advisories(stream, shutdown),
        );
        if let Err(e) = me.client.flush().await {
            warn!(error = %e, "flushing acks at shutdown");
        }
        keepalive.abort();
        lag.abort();
        info!(consumer = %me.settings.consumer, "stopped");
    }

    /// The fetch loop. While the consumer has a backlog, the next fetch overlaps the write of
    /// the batch before it, so the writes follow each other without a round trip between
    /// them. Once it has caught up, the next fetch is sent when the write is done: an overlapped
    /// one would take only the few events that arrived since the last, and those arriving
    /// during the write would wait for that small batch's write before their own.
    async fn consume(self: &Arc<Self>, held: Arc<Held>, mut shutdown: watch::Receiver<bool>) {
        let me = self;
        let mut next = Some(me.spawn_fetch(held.clone()));
        let mut fetch_failures = 0u32;
        while let Some(fetch) = next.take() {
            let fetched = fetch.await.unwrap_or_else(|e| Err(e.to_string()));
            let stopping = *shutdown.borrow();
            let (batch, backlog) = match fetched {
                Ok(fetched) => {
                    fetch_failures = 0;
                    (fetched.deliveries, fetched.backlog)
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
                    (Vec::new(), false)
                }
            };
            if stopping || *shutdown.borrow() {
                if !batch.is_empty() {
                    me.handle(batch, &held, &shutdown).await;
                }
                break;
            }
            if batch.is_empty() || backlog {
                next = Some(me.spawn_fetch(held.clone()));
            }
            if !batch.is_empty() {
                me.handle(batch, &held, &shutdown).await;
            }
            if next.is_none() && !*shutdown.borrow() {
                next = Some(me.spawn_fetch(held.clone()));
            }
        }
    }

    fn spawn_fetch(
        self: &Arc<Self>,
        held: Arc<Held>,
    ) -> tokio::task::JoinHandle<Result<Fetched, String>> {
        let me = self.clone();
        tokio::spawn(async move { me.fetch(&held).await })
    }

    async fn fetch(&self, held: &Held) -> Result<Fetched, String> {
        let info = self.consumer.cached_info();
        let pulled = pull(
            &self.client,
            &self.js,
            &info.stream_name,
            &info.name,
            PullRequest {
                batch: self.settings.batch_size,
                max_bytes: self.settings.batch_max_bytes,
                expires: self.settings.batch_max_wait,
                replicated: PullRequest::is_replicated(info),
            },
        )
        .await?;
        // The server's count of the messages still undelivered after the last one it sent.
        let pending = pulled
            .messages
            .last()
            .and_then(|m| m.info().ok())
            .map_or(0, |info| info.pending);
        let deliveries: Vec<Delivery> = pulled
            .messages
            .into_iter()
            .filter_map(|msg| self.delivery(msg, held))
            .collect();
        debug!(fetched = deliveries.len(), pending, elapsed = ?pulled.elapsed, end = ?pulled.end, "fetch done");
        Ok(Fetched {
            deliveries,
            backlog: pending > 0,
        })
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
        let headers = msg.headers.as_ref().map(header_pairs).unwrap_or_default();
        let event = InboundEvent {
            subject: msg.subject.to_string(),
            payload: msg.payload.clone(),
            headers,
            stream: info.stream.to_owned(),
            stream_sequence: info.stream_sequence,
            consumer: info.consumer.to_owned(),
            delivered: u32::try_from(info.delivered).unwrap_or(u32::MAX),
            attempt: u32::try_from(info.delivered).unwrap_or(u32::MAX),
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
                .partition(|d| Subject::last_token(&d.event.subject) == tenant.as_str());
            for d in foreign {
                let _ = self.client.publish(d.reply, AckKind::Ack.into()).await;
                held.release(d.held);
            }
            batch = ours;
            if batch.is_empty() {
                return;
            }
        }
        let span = info_span!("batch", consumer = %self.settings.consumer, size = batch.len());
        spans::link_producers(&span, batch.iter().map(|d| d.event.headers.as_slice()));
        async {
            let started = Instant::now();
            let (events, tickets): (Vec<InboundEvent>, Vec<(NatsSubject, u64)>) = batch
                .into_iter()
                .map(|d| (d.event, (d.reply, d.held)))
                .unzip();
            self.metrics.batch(events.len());
            // An unavailable database holds the batch: no delivery is spent, nothing is dead-lettered.
            let Some(outcomes) = self
                .persist(shutdown, "the database is back", || {
                    self.handler.handle(&events)
                })
                .await
            else {
                return release(held, &tickets);
            };
            self.metrics.db_duration(started.elapsed());
            let (dead, settlements) = settle_plan(
                &events,
                &outcomes,
                self.settings.max_deliver,
                self.client.server_info().max_payload,
            );
            // Dead letters are stored by the DLQ stream before the originals are settled.
            if !dead.is_empty()
                && self
                    .persist(shutdown, "the dead letters are stored", || {
                        publish_all(&self.js, &dead)
                    })
                    .await
                    .is_none()
            {
                return release(held, &tickets);
            }
            for ((reply, id), (event, s)) in tickets.into_iter().zip(events.iter().zip(settlements))
            {
                if let Err(e) = self.client.publish(reply, s.into()).await {
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

impl<H: Handler> Runner<H> {
    /// Runs `attempt` until it succeeds, holding the batch (with backoff) while it fails: the
    /// messages stay alive and no delivery is spent. `None` when shutdown comes first, with
    /// the batch unsettled (it will be redelivered).
    pub(super) async fn persist<T, E, F, Fut>(
        &self,
        shutdown: &watch::Receiver<bool>,
        until: &str,
        mut attempt: F,
    ) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut failures = 0;
        loop {
            match attempt().await {
                Ok(value) => return Some(value),
                Err(e) => {
                    failures += 1;
                    self.metrics.held();
                    if *shutdown.borrow() && failures > 3 {
                        warn!(error = %e, "stopping before {until}; the batch will be redelivered");
                        return None;
                    }
                    warn!(error = %e, attempt = failures, "holding the batch until {until}");
                    tokio::time::sleep(hold_backoff(failures)).await;
                }
            }
        }
    }
}

/// A message's headers as (name, value) pairs, a pair per value.
pub(super) fn header_pairs(headers: &async_nats::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|(k, vs)| {
            vs.iter()
                .map(move |v| (k.to_string(), v.as_str().to_owned()))
        })
        .collect()
}

/// Forgets a batch left unsettled (its messages come back after the ack wait).
fn release(held: &Held, tickets: &[(NatsSubject, u64)]) {
    for (_, id) in tickets {
        held.release(*id);
    }
}

fn hold_backoff(attempt: u32) -> Duration {
    let ms = 200u64.saturating_mul(1 << attempt.min(10));
    Duration::from_millis(ms).min(MAX_HOLD_BACKOFF)
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
