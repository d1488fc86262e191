//! The new-tenant burst (SPEC §13): thousands of brand-new tenants (no schema yet, no warm-up)
//! with a few events each, published at once to a ready `wa-realtime`; measured are the time
//! from the first publish until every event is committed, the batches the function held (its
//! `*_batches_held_total` counters on `/metrics`) and the dead letters (messages the DLQ
//! stream gained). Then the same process drains a realtime load over those tenants, and its
//! peak RSS is the RSS serving that many tenants.

use std::time::Duration;

use serde_json::json;
use wa_shared::transport::streams::{DLQ_STREAM, REALTIME_STREAM};
use wa_testkit::Function;

use super::commits::Inboxes;
use super::drain::{self, Drain};
use super::error::Result;
use super::{stack, Stage, STOP_WITHIN};
use crate::Event;

/// What the burst phase measured.
#[derive(Debug, Clone)]
pub struct Burst {
    pub tenants: usize,
    pub per_tenant: usize,
    /// The burst as drained (its `events`, and the time until all were acknowledged).
    pub drain: Drain,
    /// Burst events found in the inboxes afterwards.
    pub committed: u64,
    /// Tenant schemas that exist afterwards.
    pub schemas: u64,
    /// Increase of the function's held-batch counters; `None` when `/metrics` could not be read.
    pub held: Option<u64>,
    pub dead_letters: u64,
    /// The load drained afterwards for the RSS (none when the burst did not complete).
    pub load: Option<Drain>,
    /// Batches held during the load.
    pub load_held: Option<u64>,
    /// Peak RSS of the function, after the burst and the load.
    pub rss: u64,
}

impl Burst {
    /// Time from the first publish until every burst event was committed; `None` when they
    /// were not all committed.
    pub fn elapsed(&self) -> Option<Duration> {
        (self.drain.complete && self.committed >= self.drain.events).then_some(self.drain.elapsed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tenants": self.tenants,
            "events_per_tenant": self.per_tenant,
            "events": self.drain.events,
            "committed": self.committed,
            "schemas_created": self.schemas,
            "all_committed_s": self.elapsed().map(|d| d.as_secs_f64()),
            "held_batches": self.held,
            "dead_letters": self.dead_letters,
            "drain": self.drain.to_json(),
            "rss_load": self.load.as_ref().map(Drain::to_json),
            "rss_load_held_batches": self.load_held,
            "peak_rss_bytes": self.rss,
        })
    }
}

/// The first `per_tenant` events of every tenant, in the order generated (so each agent's
/// events are a prefix of its own sequence: nothing refers to an event left out), and the
/// events generated meanwhile beyond that, in order (what comes next for those agents).
pub fn first_per_tenant(
    events: &mut impl Iterator<Item = Event>,
    inboxes: &Inboxes,
    per_tenant: usize,
) -> (Vec<Event>, Vec<Event>) {
    let mut counts = vec![0; inboxes.len()];
    let mut missing = if per_tenant == 0 { 0 } else { inboxes.len() };
    let (mut burst, mut rest) = (Vec::new(), Vec::new());
    while missing > 0 {
        let Some(event) = events.next() else { break };
        match inboxes.tenant_of(&event) {
            Some(i) if counts[i] < per_tenant => {
                counts[i] += 1;
                if counts[i] == per_tenant {
                    missing -= 1;
                }
                burst.push(event);
            }
            _ => rest.push(event),
        }
    }
    (burst, rest)
}

/// Runs the burst and the RSS load.
pub async fn run(stage: &Stage<'_>) -> Result<Burst> {
    let settings = stage.settings;
    let tenants = settings.burst_tenants;
    let per_tenant = settings.burst_events_per_tenant;
    let mut workload = stage.workload(tenants, "N")?;
    let inboxes = Inboxes::new(workload.companies())?;
    let (burst, rest) = first_per_tenant(&mut workload, &inboxes, per_tenant);

    let db_name = settings.scratch_database("burst");
    let db = stack::fresh_database(&settings.postgres_url, &db_name).await?;
    stack::reset_stream(stage.js, REALTIME_STREAM).await?;
    let dlq_before = stack::stream_state(stage.js, DLQ_STREAM).await?.messages;
    let mut function = stage.realtime(&db.url, "burst").await?;
    if stage.checkpoints() {
        stack::checkpoint(&db.pool).await;
    }
    let held_before = held_batches(&function).await;
    let drain = drain::measure(stage.js, &stage.sampling(), burst).await?;
    let committed = inboxes.committed(&db.pool, REALTIME_STREAM).await?;
    let schemas = inboxes.existing(&db.pool).await?.len() as u64;
    let held_after = held_batches(&function).await;
    let held = since(held_before, held_after);
    let dead_letters = stack::stream_state(stage.js, DLQ_STREAM)
        .await?
        .messages
        .saturating_sub(dlq_before);
    super::done(format!(
        "burst: {} events of {tenants} new tenants {} ({} committed, held {}, {dead_letters} dead \
         letters)",
        drain.events,
        if drain.complete {
            format!("acknowledged in {:.1} s", drain.elapsed.as_secs_f64())
        } else {
            "NOT all acknowledged".to_owned()
        },
        committed,
        held.map_or("unknown".into(), |h| h.to_string()),
    ));

    let load: Vec<Event> = rest
        .into_iter()
        .chain(workload.by_ref())
        .take(settings.rss_events as usize)
        .collect();
    let load = if drain.complete && !load.is_empty() {
        let d = drain::measure(stage.js, &stage.sampling(), load).await?;
        super::done(if d.complete {
            format!(
                "RSS load: {} events of the {tenants} tenants in {:.1} s",
                d.events,
                d.elapsed.as_secs_f64()
            )
        } else {
            format!(
                "RSS load: only {} of {} events acknowledged {:?} after publishing ended",
                d.acknowledged, d.events, settings.commit_timeout
            )
        });
        Some(d)
    } else {
        None
    };
    let load_held = match load {
        Some(_) => since(held_after, held_batches(&function).await),
        None => None,
    };
    function.check_running()?;
    let rss = function.peak_rss()?;
    function.stop(STOP_WITHIN).await?;
    db.pool.close().await;
    stack::drop_database(&settings.postgres_url, &db_name).await?;
    Ok(Burst {
        tenants,
        per_tenant,
        drain,
        committed,
        schemas,
        held,
        dead_letters,
        load,
        load_held,
        rss,
    })
}

/// The increase of a counter between two readings, when both were read.
fn since(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// The sum of the function's `*_batches_held_total` counters (0 when none is exported yet: a
/// counter appears with its first increment); `None` when `/metrics` does not answer.
pub async fn held_batches(function: &Function) -> Option<u64> {
    match function.get("/metrics").await {
        Some((200, body)) => Some(held_in(&body)),
        _ => None,
    }
}

fn held_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let value = l.rsplit(' ').next()?;
            l[..name_end]
                .ends_with("_batches_held_total")
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mix, Workload, WorkloadSettings};

    #[test]
    fn held_counters_are_summed_from_the_exposition() {
        let text = "# TYPE message_event_service_batches_held_total counter\n\
                    message_event_service_batches_held_total{consumer_type=\"realtime\"} 3\n\
                    message_event_service_events_received_total{x=\"y\"} 900\n\
                    dlq_batches_held_total 2\n";
        assert_eq!(held_in(text), 5);
        assert_eq!(held_in("up 1\n"), 0);
    }

    #[test]
    fn a_burst_is_each_tenant_s_first_events_and_the_rest_follows() {
        let workload = || {
            Workload::new(&WorkloadSettings {
                tenants: 30,
                agents_per_tenant: 2,
                company_prefix: "BUR".into(),
                mix: Mix::Realtime,
                seed: 4,
            })
            .unwrap()
        };
        let mut w = workload();
        let inboxes = Inboxes::new(w.companies()).unwrap();
        let (burst, rest) = first_per_tenant(&mut w, &inboxes, 3);
        assert_eq!(burst.len(), 90);
        // The generated order, split: a tenant's events go to the burst until it has three,
        // then to the rest, each side in order.
        let (mut b, mut r) = (burst.iter(), rest.iter());
        let mut counts = [0; 30];
        for e in workload().take(burst.len() + rest.len()) {
            let t = inboxes.tenant_of(&e).unwrap();
            let side = if counts[t] < 3 { b.next() } else { r.next() };
            counts[t] += 1;
            assert_eq!(
                side.map(|x| (&x.subject, &x.body)),
                Some((&e.subject, &e.body))
            );
        }
        assert!(counts.iter().all(|&c| c >= 3));
    }
}
