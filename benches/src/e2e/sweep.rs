//! The tenant sweep (SPEC §13): at each tenant count, the realtime mix of that many tenants
//! (2 agents each by default) written twice in the same run —
//!
//! 1. as raw SQL into as many schemas, the fastest of [`raw_tenants`]' variants;
//! 2. by one `wa-realtime` with default settings, in a fresh database, draining the events
//!    published flat out ([`drain`]) after a warm-up in which every tenant's schema was
//!    created, so that schema creation is not timed.
//!
//! [`raw_tenants`]: super::raw_tenants

use serde_json::json;
use wa_shared::transport::streams::{DLQ_STREAM, REALTIME_STREAM};

use super::commits::Inboxes;
use super::drain::{self, Drain};
use super::error::{Error, Result};
use super::raw_tenants::{self, Target, VariantRate};
use super::{stack, Stage, STOP_WITHIN};
use crate::Event;

/// One tenant count's measurements.
#[derive(Debug, Clone)]
pub struct Step {
    pub tenants: usize,
    pub agents_per_tenant: usize,
    /// Warm-up events (every tenant has at least one).
    pub warmup: u64,
    pub product: Drain,
    pub raw: Vec<VariantRate>,
    /// Peak RSS of the step's wa-realtime.
    pub rss: u64,
    /// Timed events found in the inboxes after the drain.
    pub committed: u64,
    /// Messages the DLQ gained during the step.
    pub dead_letters: u64,
    /// Batches the function held (its `*_batches_held_total`); `None` if unreadable.
    pub held: Option<u64>,
}

impl Step {
    pub fn events_per_sec(&self) -> f64 {
        self.product.events_per_sec()
    }

    /// The fastest raw variant.
    pub fn raw_best(&self) -> Option<&VariantRate> {
        raw_tenants::fastest(&self.raw)
    }

    pub fn raw_per_sec(&self) -> f64 {
        self.raw_best().map_or(0.0, VariantRate::events_per_sec)
    }

    pub fn to_json(&self, base: Option<f64>) -> serde_json::Value {
        let raw = self.raw_per_sec();
        json!({
            "tenants": self.tenants,
            "agents_per_tenant": self.agents_per_tenant,
            "warmup_events": self.warmup,
            "events_per_s": self.events_per_sec(),
            "raw_events_per_s": raw,
            "raw_variant": self.raw_best().map(|r| r.variant.name()),
            "ratio_to_raw": (raw > 0.0).then(|| self.events_per_sec() / raw),
            "ratio_to_4_tenants": base.filter(|b| *b > 0.0).map(|b| self.events_per_sec() / b),
            "product": self.product.to_json(),
            "raw": self.raw.iter().map(VariantRate::to_json).collect::<Vec<_>>(),
            "peak_rss_bytes": self.rss,
            "committed": self.committed,
            "dead_letters": self.dead_letters,
            "held_batches": self.held,
        })
    }
}

/// The workload's first events until each of its tenants has one and there are at least
/// `min`: a warm-up after which every tenant's schema exists.
pub fn covering(
    events: &mut impl Iterator<Item = Event>,
    inboxes: &Inboxes,
    min: usize,
) -> Vec<Event> {
    let mut seen = vec![false; inboxes.len()];
    let mut missing = inboxes.len();
    let mut out = Vec::new();
    while missing > 0 || out.len() < min {
        let Some(event) = events.next() else { break };
        if let Some(i) = inboxes.tenant_of(&event) {
            if !seen[i] {
                seen[i] = true;
                missing -= 1;
            }
        }
        out.push(event);
    }
    out
}

/// Measures one tenant count.
pub async fn step(stage: &Stage<'_>, tenants: usize) -> Result<Step> {
    let settings = stage.settings;
    let mut workload = stage.workload(tenants, "S")?;
    let companies = workload.companies().to_vec();
    let inboxes = Inboxes::new(&companies)?;
    let warmup = covering(&mut workload, &inboxes, settings.warmup as usize);
    let timed: Vec<Event> = workload
        .by_ref()
        .take(settings.sweep_count as usize)
        .collect();

    super::done(format!(
        "{tenants} tenants: raw SQL, {} warm-up + {} events",
        warmup.len(),
        timed.len()
    ));
    let raw = raw_tenants::measure(
        &Target {
            admin_url: &settings.postgres_url,
            database: &settings.scratch_database("raw"),
            connections: settings.raw_connections,
            batch: settings.sweep_raw_batch,
            schemas_per_tx: settings.raw_schemas_per_tx,
            checkpoint: stage.checkpoints(),
        },
        &companies,
        &warmup,
        &timed,
    )
    .await?;

    super::done(format!("{tenants} tenants: wa-realtime, warm-up"));
    let db_name = settings.scratch_database("sweep");
    let db = stack::fresh_database(&settings.postgres_url, &db_name).await?;
    stack::reset_stream(stage.js, REALTIME_STREAM).await?;
    let dlq_before = stack::stream_state(stage.js, DLQ_STREAM).await?.messages;
    let mut function = stage.realtime(&db.url, &format!("sweep-{tenants}")).await?;
    stage
        .warm_up(&db.pool, &inboxes, &warmup, REALTIME_STREAM)
        .await?;
    let count = timed.len() as u64;
    super::done(format!("{tenants} tenants: wa-realtime, draining"));
    let product = drain::measure(stage.js, &stage.sampling(), timed).await?;
    function.check_running()?;
    let held = super::burst::held_batches(&function).await;
    let rss = function.peak_rss()?;
    function.stop(STOP_WITHIN).await?;
    if !product.complete {
        return Err(Error::new(format!(
            "{tenants} tenants: {} of {count} events acknowledged {:?} after publishing ended",
            product.acknowledged, settings.commit_timeout
        )));
    }
    let committed = inboxes
        .committed(&db.pool, REALTIME_STREAM)
        .await?
        .saturating_sub(warmup.len() as u64);
    let dead_letters = stack::stream_state(stage.js, DLQ_STREAM)
        .await?
        .messages
        .saturating_sub(dlq_before);
    if committed < product.events {
        eprintln!(
            "warning: {tenants} tenants: {committed} of {} events committed ({dead_letters} dead \
             letters)",
            product.events
        );
    }
    db.pool.close().await;
    stack::drop_database(&settings.postgres_url, &db_name).await?;
    Ok(Step {
        tenants,
        agents_per_tenant: settings.sweep_agents_per_tenant,
        warmup: warmup.len() as u64,
        product,
        raw,
        rss,
        committed,
        dead_letters,
        held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mix, Workload, WorkloadSettings};

    #[test]
    fn a_covering_warm_up_reaches_every_tenant() {
        let mut w = Workload::new(&WorkloadSettings {
            tenants: 50,
            agents_per_tenant: 2,
            company_prefix: "COV".into(),
            mix: Mix::Realtime,
            seed: 9,
        })
        .unwrap();
        let inboxes = Inboxes::new(w.companies()).unwrap();
        let events = covering(&mut w, &inboxes, 10);
        let mut seen: Vec<usize> = events.iter().filter_map(|e| inboxes.tenant_of(e)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 50);
        assert!(events.len() >= 50);
        let few = covering(&mut w, &inboxes, 500);
        assert!(few.len() >= 500);
    }
}
