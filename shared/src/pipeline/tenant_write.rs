//! One tenant's share of a batch: its schema prepared, its events written in one tenant
//! transaction, and the events the database refuses isolated (halves, then history items).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use tracing::{debug, warn};

use crate::model::{ErrorType, Payload, TenantId};
use crate::store::inbox::{self, StreamKey};
use crate::store::{tenant_tx, SchemaError, TenantTx};

use super::inbound::{DeadLetter, InboundEvent, Outcome};
use super::plan::{Decoded, Plan};
use super::process::{Processor, Unavailable};
use crate::store::failure::{classify, is_missing_partition, DbFailure};

/// Whether a tenant's schema is ready for its events.
enum Prepared {
    Ready,
    /// Not now: the events are retried later, for this reason.
    Retry(String),
    /// Never: the events are refused, for this reason.
    Refused(DeadLetter),
}

/// Runs of the same transaction after a serialization failure or deadlock.
const CONFLICT_ATTEMPTS: usize = 3;

impl Processor {
    /// Writes one tenant's events, isolating events that the database refuses.
    pub(super) async fn write_tenant(
        &self,
        events: &[InboundEvent],
        tenant: &TenantId,
        decoded: &[Decoded<'_>],
    ) -> Result<Vec<(usize, Outcome)>, Unavailable> {
        match self.prepare(tenant, decoded).await? {
            Prepared::Ready => {}
            Prepared::Retry(reason) => return Ok(self.all_transient(events, decoded, &reason)),
            Prepared::Refused(dead) => {
                warn!(tenant = %tenant, error = %dead.error, "events refused");
                return Ok(decoded
                    .iter()
                    .map(|d| (d.idx, Outcome::DeadLetter(dead.clone())))
                    .collect());
            }
        }
        let mut out = Vec::with_capacity(decoded.len());
        // Ranges still to write, in stream order (a stack: last pushed is next).
        let mut todo = vec![(0, decoded.len(), false)];
        while let Some((lo, hi, item_by_item)) = todo.pop() {
            let part = &decoded[lo..hi];
            // A conflict runs the same transaction again; the last one is a transient failure.
            // A missing partition (detached or dropped since it was cached) is created again,
            // once, and the transaction run again.
            let mut attempt = 1;
            let mut repartitioned = false;
            let written = loop {
                match self.write_tx(events, tenant, part, item_by_item).await {
                    Err(e)
                        if classify(&e) == DbFailure::Conflict && attempt < CONFLICT_ATTEMPTS =>
                    {
                        debug!(tenant = %tenant, attempt, error = %e, "write conflict; running again");
                        attempt += 1;
                    }
                    Err(e) if is_missing_partition(&e) && !repartitioned => {
                        warn!(tenant = %tenant, error = %e, "a message partition is gone; creating it again");
                        repartitioned = true;
                        self.schemas.forget_partitions(tenant);
                        let dates = part.iter().flat_map(Decoded::message_dates);
                        if let Err(e) = self.schemas.ensure_partitions(tenant, dates).await {
                            break Err(e);
                        }
                    }
                    other => break other,
                }
            };
            let e = match written {
                Ok(outcomes) => {
                    out.extend(outcomes);
                    continue;
                }
                Err(e) => e,
            };
            match classify(&e) {
                DbFailure::Unavailable => {
                    warn!(tenant = %tenant, error = %e, "database unavailable; holding the batch");
                    return Err(Unavailable(e.to_string()));
                }
                DbFailure::Permanent if hi - lo > 1 => {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi, false));
                    todo.push((lo, mid, false));
                }
                DbFailure::Permanent
                    if !item_by_item
                        && matches!(&part[0].payload, Payload::History(items) if items.len() > 1) =>
                {
                    todo.push((lo, hi, true));
                }
                DbFailure::Permanent => {
                    warn!(tenant = %tenant, seq = events[part[0].idx].stream_sequence, error = %e, "database refused the event");
                    out.push((
                        part[0].idx,
                        Outcome::DeadLetter(DeadLetter::new(
                            ErrorType::DatabasePermanent,
                            e.to_string(),
                        )),
                    ));
                }
                // Conflicts that outlived their attempts, and the rest.
                DbFailure::Conflict | DbFailure::Transient => {
                    warn!(tenant = %tenant, error = %e, "transient write failure");
                    out.extend(self.all_transient(events, part, &e.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Schema and partitions of the tenant, for these events.
    async fn prepare(
        &self,
        tenant: &TenantId,
        decoded: &[Decoded<'_>],
    ) -> Result<Prepared, Unavailable> {
        let e = match self.schemas.ensure(tenant).await {
            Err(SchemaError::NotMigrated(s)) => {
                return Ok(Prepared::Retry(format!("schema {s} is not migrated")))
            }
            Err(e @ SchemaError::Owned { .. }) => {
                return Ok(Prepared::Refused(DeadLetter::new(
                    ErrorType::Tenant,
                    e.to_string(),
                )))
            }
            Err(SchemaError::Db(e)) => e,
            Ok(()) => match self
                .schemas
                .ensure_partitions(tenant, decoded.iter().flat_map(Decoded::message_dates))
                .await
            {
                Ok(()) => return Ok(Prepared::Ready),
                Err(e) => e,
            },
        };
        match classify(&e) {
            DbFailure::Unavailable => Err(Unavailable(e.to_string())),
            _ => {
                self.schemas.forget(tenant);
                Ok(Prepared::Retry(format!(
                    "preparing schema of {tenant}: {e}"
                )))
            }
        }
    }

    fn all_transient(
        &self,
        events: &[InboundEvent],
        part: &[Decoded<'_>],
        reason: &str,
    ) -> Vec<(usize, Outcome)> {
        part.iter()
            .map(|d| (d.idx, self.retry.transient(&events[d.idx], reason)))
            .collect()
    }

    /// One tenant transaction: claim the events in the inbox (skipping those it has seen),
    /// write the fresh ones, take back the claims of events that must be retried, commit.
    async fn write_tx(
        &self,
        events: &[InboundEvent],
        tenant: &TenantId,
        part: &[Decoded<'_>],
        item_by_item: bool,
    ) -> Result<Vec<(usize, Outcome)>, sqlx::Error> {
        let mut tx = tenant_tx::begin(&self.pool, tenant, self.settings.lock_timeout).await?;
        let keys: Vec<StreamKey> = part.iter().map(|d| stream_key(&events[d.idx])).collect();
        // A stream message delivered twice within the batch is applied once: later copies
        // share the outcome of the first.
        let mut first_copy: HashMap<&StreamKey, usize> = HashMap::with_capacity(keys.len());
        let copy_of: Vec<Option<usize>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| match first_copy.entry(k) {
                Entry::Occupied(e) => Some(*e.get()),
                Entry::Vacant(e) => {
                    e.insert(i);
                    None
                }
            })
            .collect();
        let mut dead_items: Vec<Vec<DeadLetter>> =
            part.iter().map(Decoded::invalid_items).collect();
        let claims: Vec<(&StreamKey, Option<String>)> = keys
            .iter()
            .zip(&dead_items)
            .zip(&copy_of)
            .filter(|(_, copy)| copy.is_none())
            .map(|((k, items), _)| (k, dead_items_json(items)))
            .collect();
        let seen = inbox::claim(&mut tx, &claims).await?;
        let fresh: Vec<(usize, &Decoded)> = part
            .iter()
            .enumerate()
            .filter(|(i, _)| copy_of[*i].is_none() && !seen.contains_key(&keys[*i]))
            .collect();

        let not_found: HashSet<usize> = if item_by_item {
            write_item_by_item(&mut tx, &fresh, &keys, &mut dead_items).await?;
            HashSet::new()
        } else {
            let plan = Plan::new(
                fresh
                    .iter()
                    .flat_map(|&(_, d)| d.units().map(move |(_, u)| (d, u))),
            );
            plan.execute(&mut tx).await?.into_iter().collect()
        };

        let mut retried = Vec::new();
        let mut out: Vec<(usize, Outcome)> = Vec::with_capacity(part.len());
        for (i, d) in part.iter().enumerate() {
            let event = &events[d.idx];
            let outcome = if let Some(first) = copy_of[i] {
                debug!(
                    seq = event.stream_sequence,
                    "delivered twice in one batch; applied once"
                );
                out[first].1.clone()
            } else if let Some(dead) = seen.get(&keys[i]) {
                debug!(
                    seq = event.stream_sequence,
                    "duplicate delivery; effects already committed"
                );
                let items: Vec<DeadLetter> = dead
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default();
                ack(items)
            } else if not_found.contains(&d.idx) {
                retried.push(&keys[i]);
                self.retry
                    .transient(event, "message to update not found yet")
            } else {
                ack(std::mem::take(&mut dead_items[i]))
            };
            out.push((d.idx, outcome));
        }
        inbox::release(&mut tx, &retried).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// One history event whose batch write the database refused: each item is written on its own,
/// and the items the database refuses are added to the event's dead items.
async fn write_item_by_item(
    tx: &mut TenantTx,
    fresh: &[(usize, &Decoded<'_>)],
    keys: &[StreamKey],
    dead_items: &mut [Vec<DeadLetter>],
) -> Result<(), sqlx::Error> {
    let mut found_dead = false;
    for &(i, d) in fresh {
        for (item, unit) in d.units() {
            let written = tx
                .savepoint(async |tx| Plan::new([(d, unit)]).execute(tx).await)
                .await?;
            if let Err(e) = written {
                found_dead = true;
                dead_items[i].push(DeadLetter {
                    error_type: ErrorType::DatabasePermanent,
                    error: e.to_string(),
                    item_index: item,
                });
            }
        }
    }
    if found_dead {
        let update: Vec<(&StreamKey, Option<String>)> = fresh
            .iter()
            .map(|&(i, _)| (&keys[i], dead_items_json(&dead_items[i])))
            .collect();
        inbox::set_dead_items(tx, &update).await?;
    }
    Ok(())
}

/// Dead items as recorded in the inbox: JSON text, or nothing when there are none.
fn dead_items_json(items: &[DeadLetter]) -> Option<String> {
    (!items.is_empty()).then(|| serde_json::to_string(items).expect("dead items serialise"))
}

fn ack(dead_items: Vec<DeadLetter>) -> Outcome {
    if dead_items.is_empty() {
        Outcome::Ack
    } else {
        Outcome::AckWithDeadItems(dead_items)
    }
}

fn stream_key(e: &InboundEvent) -> StreamKey {
    StreamKey {
        stream: e.stream.clone(),
        sequence: e.stream_sequence as i64,
        published_us: e.published_at.timestamp_micros(),
    }
}
