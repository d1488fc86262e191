//! A batch's writes, for every tenant in it, in one transaction of a few round trips, with the
//! events the database refuses isolated.
//!
//! The events of each tenant form a `Part`. The tenants are spread over the database's lanes
//! ([`WRITE_LANES`], see [`crate::store::batch_tx`]) by a hash of their schema name, cut so
//! that the lanes share the work, and each lane writes its tenants in transactions of up to
//! [`TENANTS_PER_TRANSACTION`] (a transaction holds a lock on every relation it touches, and
//! the server's lock table is finite), one after another on the connection it keeps, the lanes
//! at once. A tenant thus comes back to the same connection batch after batch, where its
//! statements are prepared (`store::prepared`). One attempt writes a
//! chunk's parts in one [`BatchTx`]: a first script takes every tenant's lock in one statement
//! (in schema-name order) and claims the events in each tenant's inbox (a plain insert that
//! returns the keys it recorded: the fresh events); a second writes the fresh events of every
//! part (its [`Plan`]'s statements), reading first what was recorded of any event processed
//! before; a third, only when some patch found no message, takes back those events' claims.
//! The commit ends the last script. So 32 tenants cost the two or three round trips and the
//! one commit that one tenant costs, and each tenant adds only its claim and its writes to
//! the server's work.
//!
//! When a statement fails, Postgres says which one, so the failure is pinned on its part:
//! * the connection a lane kept was closed while it waited (a restarted server, an idle
//!   timeout): the attempt runs again at once on a connection from the pool;
//! * the database is unavailable: the batch is held (nothing decided);
//! * a tenant's schema is fenced (paused or moved; the lock statement's refusal names it): its
//!   events wait;
//! * a conflict (deadlock, serialization): the attempt runs again, up to three times;
//! * no partition for a message (detached or dropped): recreated once, and run again;
//! * the part's own data is refused: the part is split in halves, and a single history event
//!   is written item by item (each item its own statements), until the refused event or item
//!   is alone and dead-lettered; every other part runs again, so one bad event never fails
//!   its neighbours in any tenant;
//! * anything else: the tenant's events are retried later (its schema looked up again).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{debug, warn, Instrument};

use crate::model::{ErrorType, Payload, TenantId};
use crate::store::batch_tx::{self, BatchTx, WRITE_LANES};
use crate::store::failure::{classify, connection_lost, is_missing_partition, sqlstate, DbFailure};
use crate::store::inbox::{self, StreamKey};
use crate::store::messages::MessagePatchRows;
use crate::store::placement::{Db, DEFAULT_PLACEMENT};
use crate::store::prepared::{self, Session};
use crate::store::script::{Script, ScriptError, Unrenderable};
use crate::telemetry::spans;

use super::inbound::{DeadLetter, InboundEvent, Outcome};
use super::plan::{Decoded, Plan};
use super::process::{Processor, Unavailable};

/// The delay of events that wait for their tenant (paused, moved, or on a database that is
/// unavailable while others are not).
pub const HELD_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs of the same transaction after a serialization failure or deadlock.
const CONFLICT_ATTEMPTS: usize = 3;

/// Whose a statement of a batch transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// The transaction's own (begin, settings, commit).
    Batch,
    /// The statement taking every tenant's lock (a refusal names the fenced schema).
    Enter,
    /// Part `.0`'s.
    Part(usize),
    /// Item `.1` of the history event of part `.0`, written item by item.
    Item(usize, usize),
}

impl Tag {
    fn part(self) -> Option<usize> {
        match self {
            Tag::Batch | Tag::Enter => None,
            Tag::Part(p) | Tag::Item(p, _) => Some(p),
        }
    }
}

/// A run of one tenant's events, in stream order, written together.
#[derive(Clone)]
pub(super) struct Part<'d, 'e> {
    pub tenant: &'d TenantId,
    pub events: &'d [Decoded<'e>],
    /// The database of the tenant's placement.
    pub db: Arc<Db>,
    /// A single history event written item by item, to find the items the database refuses.
    item_by_item: bool,
    /// The items of that event the database refused so far.
    refused: Vec<DeadLetter>,
}

impl<'d, 'e> Part<'d, 'e> {
    pub fn new(tenant: &'d TenantId, events: &'d [Decoded<'e>], db: Arc<Db>) -> Self {
        Part {
            tenant,
            events,
            db,
            item_by_item: false,
            refused: Vec::new(),
        }
    }

    fn piece(&self, events: &'d [Decoded<'e>]) -> Self {
        Part::new(self.tenant, events, self.db.clone())
    }
}

/// A chunk's placement, its events' indices and their outcomes (or the database being
/// unavailable).
type ChunkWritten = (
    String,
    Vec<usize>,
    Result<Vec<(usize, Outcome)>, Unavailable>,
);

/// Why an attempt failed.
enum Failed {
    Db(ScriptError<Tag>),
    /// A value that cannot be sent (a NUL character): that statement's events are refused.
    Unrenderable(Tag),
}

impl From<ScriptError<Tag>> for Failed {
    fn from(e: ScriptError<Tag>) -> Self {
        Failed::Db(e)
    }
}

impl Processor {
    /// Writes `parts` (each tenant at most once, or pieces of one in stream order) and returns
    /// an outcome for every event in them.
    pub(super) async fn write_parts(
        &self,
        events: &[InboundEvent],
        parts: Vec<Part<'_, '_>>,
    ) -> Result<Vec<(usize, Outcome)>, Unavailable> {
        // Each placement's tenants are written on its database, spread over its lanes (see
        // `store::batch_tx`): a lane's transactions run one after another on its connection,
        // the lanes at once, and a transaction takes no more tenants than the lock table does.
        let mut by_db: Vec<(Arc<Db>, Vec<Part<'_, '_>>)> = Vec::new();
        for part in parts {
            match by_db.iter_mut().find(|(db, _)| Arc::ptr_eq(db, &part.db)) {
                Some((_, parts)) => parts.push(part),
                None => by_db.push((part.db.clone(), vec![part])),
            }
        }
        let placements = by_db.len();
        let lanes = by_db.into_iter().flat_map(|(_, parts)| {
            lanes_of(parts, WRITE_LANES)
                .into_iter()
                .enumerate()
                .filter(|(_, parts)| !parts.is_empty())
        });
        let written: Vec<ChunkWritten> = futures::future::join_all(
            lanes.map(|(lane, parts)| self.write_lane(events, parts, lane)),
        )
        .await
        .into_iter()
        .flatten()
        .collect();
        let mut out = Vec::new();
        for (placement, idxs, outcomes) in written {
            match outcomes {
                Ok(outcomes) => out.extend(outcomes),
                // Another placement than the main database, or a batch spanning placements:
                // only the unavailable database's tenants wait (SPEC §17); the others' writes
                // stand.
                Err(Unavailable(why)) if placements > 1 || placement != DEFAULT_PLACEMENT => {
                    warn!(placement, error = %why, events = idxs.len(), "placement unavailable; its tenants' events wait");
                    out.extend(idxs.into_iter().map(|i| {
                        (
                            i,
                            Outcome::Wait {
                                delay: HELD_RECHECK,
                            },
                        )
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Writes one lane's parts (one placement's), in transactions of at most
    /// [`TENANTS_PER_TRANSACTION`] tenants, one after another. Once the database is
    /// unavailable, the lane's later transactions are not tried.
    async fn write_lane(
        &self,
        events: &[InboundEvent],
        parts: Vec<Part<'_, '_>>,
        lane: usize,
    ) -> Vec<ChunkWritten> {
        let mut written: Vec<ChunkWritten> = Vec::new();
        let mut unavailable: Option<Unavailable> = None;
        for chunk in chunks(parts, TENANTS_PER_TRANSACTION) {
            let placement = chunk[0].db.name.clone();
            let idxs: Vec<usize> = chunk
                .iter()
                .flat_map(|p| p.events.iter().map(|d| d.idx))
                .collect();
            let outcomes = match &unavailable {
                Some(why) => Err(why.clone()),
                None => self.write_chunk(events, chunk, lane).await,
            };
            if let Err(why) = &outcomes {
                unavailable = Some(why.clone());
            }
            written.push((placement, idxs, outcomes));
        }
        written
    }

    /// Writes the parts of at most [`TENANTS_PER_TRANSACTION`] tenants in one transaction on
    /// `lane`, isolating refused events (see the module).
    async fn write_chunk(
        &self,
        events: &[InboundEvent],
        mut parts: Vec<Part<'_, '_>>,
        lane: usize,
    ) -> Result<Vec<(usize, Outcome)>, Unavailable> {
        let mut out = Vec::new();
        let mut conflicts = 1;
        let mut repartitioned: HashSet<&TenantId> = HashSet::new();
        while !parts.is_empty() {
            let tx_span = spans::tenant_transaction(
                parts.iter().map(|p| p.tenant.as_str()),
                &parts[0].db.name,
            );
            let (tag, error) = match self
                .write_tx(events, &parts, lane)
                .instrument(tx_span)
                .await
            {
                Ok(outcomes) => {
                    out.extend(outcomes);
                    break;
                }
                Err(Failed::Unrenderable(tag)) => {
                    let p = tag.part().expect("only event values are rendered");
                    let refusal = Unrenderable.to_string();
                    self.refused(events, &mut parts, p, tag, refusal, &mut out);
                    continue;
                }
                Err(Failed::Db(ScriptError { tag, error, .. })) => (tag, error),
            };
            // A statement this connection was thought to keep prepared is not there (its
            // record is dropped): run again, preparing anew.
            let class = if prepared::is_missing_statement(&error) {
                DbFailure::Conflict
            } else {
                classify(&error)
            };
            if sqlstate(&error).as_deref() == Some(OUT_OF_SHARED_MEMORY) {
                // The server's lock table is full (max_locks_per_transaction): fewer tenants
                // per transaction need fewer locks.
                let mut first = chunks(std::mem::take(&mut parts), usize::MAX)
                    .pop()
                    .unwrap_or_default();
                let tenants = tenant_count(&first);
                if tenants > 1 {
                    warn!(tenants, error = %error, "the lock table is full; writing the tenants in two transactions");
                    let cut = first
                        .iter()
                        .position(|p| tenant_rank(&first, p.tenant) >= tenants / 2)
                        .expect("a second half");
                    let second = first.split_off(cut);
                    out.extend(Box::pin(self.write_chunk(events, first, lane)).await?);
                    out.extend(Box::pin(self.write_chunk(events, second, lane)).await?);
                    break;
                }
                parts = first;
            }
            if class == DbFailure::Unavailable {
                warn!(error = %error, "database unavailable; holding the batch");
                return Err(Unavailable(error.to_string()));
            }
            if class == DbFailure::Fenced {
                if let Some(tenant) = fenced_tenant(&parts, tag, &error) {
                    // The tenant was paused or moved: its events wait, and what is known of
                    // its placement is read again for the next ones.
                    debug!(tenant = %tenant, error = %error, "tenant fenced here; its events wait");
                    self.schemas.forget(tenant);
                    parts.retain(|part| {
                        if part.tenant == tenant {
                            out.extend(part.events.iter().map(|d| {
                                (
                                    d.idx,
                                    Outcome::Wait {
                                        delay: HELD_RECHECK,
                                    },
                                )
                            }));
                            false
                        } else {
                            true
                        }
                    });
                    continue;
                }
            }
            if class == DbFailure::Conflict && conflicts < CONFLICT_ATTEMPTS {
                debug!(attempt = conflicts, error = %error, "write conflict; running again");
                conflicts += 1;
                continue;
            }
            let Some(p) = tag.and_then(Tag::part) else {
                // The transaction itself failed (not one part's statement).
                warn!(error = %error, "batch transaction failed");
                for part in parts.drain(..) {
                    out.extend(self.all_transient(events, part.events, &error.to_string()));
                }
                break;
            };
            let tenant = parts[p].tenant;
            if is_missing_partition(&error) && repartitioned.insert(tenant) {
                warn!(tenant = %tenant, error = %error, "a message partition is gone; creating it again");
                self.schemas.forget_partitions(tenant);
                let dates = parts
                    .iter()
                    .filter(|q| q.tenant == tenant)
                    .flat_map(|q| q.events.iter().flat_map(Decoded::message_dates));
                match self.schemas.ensure_partitions(tenant, dates).await {
                    Ok(()) => continue,
                    Err(e) if classify(&e) == DbFailure::Unavailable => {
                        return Err(Unavailable(e.to_string()))
                    }
                    Err(e) => {
                        self.give_up_tenant(events, &mut parts, tenant, &e.to_string(), &mut out);
                        continue;
                    }
                }
            }
            if class == DbFailure::Permanent {
                self.refused(
                    events,
                    &mut parts,
                    p,
                    tag.expect("tagged"),
                    error.to_string(),
                    &mut out,
                );
            } else {
                // Conflicts that outlived their attempts, and the rest.
                warn!(tenant = %tenant, error = %error, "transient write failure");
                self.schemas.forget(tenant);
                self.give_up_tenant(events, &mut parts, tenant, &error.to_string(), &mut out);
            }
        }
        Ok(out)
    }

    /// The database refused a write of part `p` (statement `tag`): the part is split so the
    /// refused event or item ends up alone, and alone it is dead-lettered.
    fn refused<'d, 'e>(
        &self,
        events: &[InboundEvent],
        parts: &mut Vec<Part<'d, 'e>>,
        p: usize,
        tag: Tag,
        error: String,
        out: &mut Vec<(usize, Outcome)>,
    ) {
        let part = parts.remove(p);
        let n = part.events.len();
        if n > 1 {
            let mid = n / 2;
            parts.insert(p, part.piece(&part.events[mid..]));
            parts.insert(p, part.piece(&part.events[..mid]));
            return;
        }
        let event = &part.events[0];
        let items = match &event.payload {
            Payload::History(items) => items.len(),
            _ => 0,
        };
        match tag {
            Tag::Item(_, item) => {
                debug!(tenant = %part.tenant, seq = events[event.idx].stream_sequence, item, error = %error, "database refused a history item");
                let mut part = part;
                part.refused.push(DeadLetter {
                    error_type: ErrorType::DatabasePermanent,
                    error,
                    item_index: Some(item),
                });
                parts.insert(p, part);
            }
            _ if items > 1 && !part.item_by_item => {
                let mut part = part;
                part.item_by_item = true;
                parts.insert(p, part);
            }
            _ => {
                warn!(tenant = %part.tenant, seq = events[event.idx].stream_sequence, error = %error, "database refused the event");
                out.push((
                    event.idx,
                    Outcome::DeadLetter(DeadLetter::new(ErrorType::DatabasePermanent, error)),
                ));
            }
        }
    }

    /// Every part of `tenant` is retried later, for `reason`.
    fn give_up_tenant(
        &self,
        events: &[InboundEvent],
        parts: &mut Vec<Part<'_, '_>>,
        tenant: &TenantId,
        reason: &str,
        out: &mut Vec<(usize, Outcome)>,
    ) {
        parts.retain(|part| {
            if part.tenant == tenant {
                out.extend(self.all_transient(events, part.events, reason));
                false
            } else {
                true
            }
        });
    }

    pub(super) fn all_transient(
        &self,
        events: &[InboundEvent],
        part: &[Decoded<'_>],
        reason: &str,
    ) -> Vec<(usize, Outcome)> {
        part.iter()
            .map(|d| (d.idx, self.retry.transient(&events[d.idx], reason)))
            .collect()
    }

    /// One attempt: every part in one transaction on `lane` (see the module).
    async fn write_tx(
        &self,
        events: &[InboundEvent],
        parts: &[Part<'_, '_>],
        lane: usize,
    ) -> Result<Vec<(usize, Outcome)>, Failed> {
        let db = &parts.first().expect("a part").db;
        let mut tx = batch_tx::acquire(&db.pool, &db.lanes, lane, self.settings.lock_timeout)
            .await
            .map_err(|error| ScriptError::after(None, error))?;
        loop {
            match write_in(&mut tx, events, parts, &self.retry).await {
                Ok((outcomes, token)) => {
                    tx.keep(&db.lanes, token);
                    return Ok(outcomes);
                }
                // The connection the lane kept was closed while it waited (a restarted
                // server, an idle timeout, a proxy): once more, on one from the pool (which
                // checks its connections). Whatever the lost connection had sent is either
                // committed, and its events are claimed, or rolled back.
                Err(Failed::Db(e)) if tx.was_kept() && connection_lost(&e.error) => {
                    debug!(error = %e.error, "a kept connection is gone; writing on another");
                    tx.rollback().await;
                    tx = batch_tx::acquire_pooled(&db.pool, lane, self.settings.lock_timeout)
                        .await
                        .map_err(|error| ScriptError::after(None, error))?;
                }
                Err(e) => {
                    tx.rollback().await;
                    return Err(e);
                }
            }
        }
    }
}

/// [`Processor::write_tx`] on its transaction.
async fn write_in(
    tx: &mut BatchTx,
    events: &[InboundEvent],
    parts: &[Part<'_, '_>],
    retry: &super::retry::RetryPolicy,
) -> Result<(Vec<(usize, Outcome)>, Option<u64>), Failed> {
    // What the connection keeps prepared, when it is known before the first script (a
    // connection its lane kept): the claims, too, are then prepared statements.
    let mut session = SessionGuard(tx.token().map(prepared::checkout));
    // Tenants in schema-name order (their parts keep stream order): the lock order.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&p| parts[p].tenant.schema_name());

    let keys: Vec<Vec<StreamKey>> = parts
        .iter()
        .map(|part| {
            part.events
                .iter()
                .map(|d| stream_key(&events[d.idx]))
                .collect()
        })
        .collect();
    let mut dead_items: Vec<Vec<Vec<DeadLetter>>> = parts
        .iter()
        .map(|part| {
            part.events
                .iter()
                .map(|d| {
                    let mut dead = d.invalid_items();
                    dead.extend(part.refused.iter().cloned());
                    dead
                })
                .collect()
        })
        .collect();
    let claims: Vec<Vec<(&StreamKey, Option<String>)>> = keys
        .iter()
        .zip(&dead_items)
        .map(|(keys, dead)| {
            keys.iter()
                .zip(dead)
                .map(|(k, d)| (k, dead_items_json(d)))
                .collect()
        })
        .collect();

    // 1. Begin; take every tenant's lock (in schema-name order); claim the events.
    let mut first = Script::named("claim");
    tx.begin_into(&mut first, Tag::Batch);
    let token_at = first.len();
    first.push_sql(Tag::Batch, prepared::READ_TOKEN);
    let mut tenants: Vec<&TenantId> = order.iter().map(|&p| parts[p].tenant).collect();
    tenants.dedup();
    BatchTx::enter_all_into(&mut first, Tag::Enter, &tenants);
    let mut claim_at: Vec<Option<usize>> = vec![None; parts.len()];
    let mut entered: Option<&TenantId> = None;
    for &p in &order {
        if let Some(claim) = inbox::claim(&claims[p]) {
            if entered != Some(parts[p].tenant) {
                BatchTx::switch_into(&mut first, Tag::Part(p), parts[p].tenant);
                entered = Some(parts[p].tenant);
            }
            claim_at[p] = Some(first.len());
            first
                .push_in(Tag::Part(p), &claim, session.0.as_mut(), parts[p].tenant)
                .map_err(|_| Failed::Unrenderable(Tag::Part(p)))?;
        }
    }
    // Claims prepared for the first time: before the transaction begins.
    prepare_all(tx, &first, &mut session).await?;
    let rows = run_prepared(tx, &first, &mut session).await?;
    let token = prepared::token_of(&rows[token_at]);
    if session.0.is_none() {
        // A connection from the pool: what it keeps prepared is known now, for the writes.
        session = SessionGuard(token.map(prepared::checkout));
    }
    // The keys each part claimed now: its fresh events. The others were processed before.
    let mut claimed: Vec<HashSet<StreamKey>> = Vec::with_capacity(parts.len());
    for (p, at) in claim_at.iter().enumerate() {
        claimed.push(match at {
            Some(i) => inbox::claimed(&rows[*i])
                .map_err(|error| ScriptError::after(Some(Tag::Part(p)), error))?,
            None => HashSet::new(),
        });
    }
    let fresh = |p: usize, k: &StreamKey| claimed[p].contains(k);

    // 2. The fresh events' writes.
    let plans: Vec<Vec<(Tag, Plan)>> = parts
        .iter()
        .enumerate()
        .map(|(p, part)| {
            let fresh = part
                .events
                .iter()
                .zip(&keys[p])
                .filter(|(_, k)| fresh(p, k))
                .map(|(d, _)| d);
            if part.item_by_item {
                let refused: HashSet<usize> =
                    part.refused.iter().filter_map(|d| d.item_index).collect();
                fresh
                    .flat_map(|d| d.units().map(move |(item, unit)| (d, item, unit)))
                    .filter(|(_, item, _)| !item.is_some_and(|i| refused.contains(&i)))
                    .map(|(d, item, unit)| {
                        (Tag::Item(p, item.unwrap_or(0)), Plan::new([(d, unit)]))
                    })
                    .collect()
            } else {
                let plan = Plan::new(fresh.flat_map(|d| d.units().map(move |(_, u)| (d, u))));
                vec![(Tag::Part(p), plan)]
            }
        })
        .collect();
    let mut writes = Script::named("write");
    // (statement, part, plan, round) of each patch statement.
    let mut patches: Vec<(usize, usize, usize, usize)> = Vec::new();
    // The statement reading what was recorded of each part's events processed before.
    let mut recorded_at: Vec<Option<usize>> = vec![None; parts.len()];
    for &p in &order {
        let company = parts[p].tenant.as_str();
        let mut switched = false;
        let before: Vec<&StreamKey> = keys[p].iter().filter(|k| !fresh(p, k)).collect();
        if let Some(recorded) = inbox::recorded(&before) {
            BatchTx::switch_into(&mut writes, Tag::Part(p), parts[p].tenant);
            switched = true;
            recorded_at[p] = Some(writes.len());
            writes
                .push_in(Tag::Part(p), &recorded, session.0.as_mut(), parts[p].tenant)
                .map_err(|_| Failed::Unrenderable(Tag::Part(p)))?;
        }
        for (k, (tag, plan)) in plans[p].iter().enumerate() {
            for s in plan.statements(company) {
                if !switched {
                    BatchTx::switch_into(&mut writes, Tag::Part(p), parts[p].tenant);
                    switched = true;
                }
                if let Some(round) = s.patches {
                    patches.push((writes.len(), p, k, round));
                }
                writes
                    .push_in(*tag, &s.statement, session.0.as_mut(), parts[p].tenant)
                    .map_err(|_| Failed::Unrenderable(*tag))?;
            }
        }
    }
    if patches.is_empty() {
        BatchTx::commit_into(&mut writes, Tag::Batch);
    }
    prepare_all(tx, &writes, &mut session).await?;
    let rows = run_prepared(tx, &writes, &mut session).await?;
    let mut seen: Vec<HashMap<StreamKey, Option<String>>> = Vec::with_capacity(parts.len());
    for (p, at) in recorded_at.iter().enumerate() {
        seen.push(match at {
            Some(i) => inbox::seen(&rows[*i])
                .map_err(|error| ScriptError::after(Some(Tag::Part(p)), error))?,
            None => HashMap::new(),
        });
    }

    // 3. Claims of patches whose message is not there yet are taken back; commit.
    let mut not_found: Vec<HashSet<usize>> = vec![HashSet::new(); parts.len()];
    for &(at, p, k, round) in &patches {
        let found = MessagePatchRows::found(&rows[at])
            .map_err(|error| ScriptError::after(Some(Tag::Part(p)), error))?;
        not_found[p].extend(plans[p][k].1.not_found(round, &found));
    }
    if !patches.is_empty() {
        let mut last = Script::named("release");
        for &p in &order {
            let retried: Vec<&StreamKey> = parts[p]
                .events
                .iter()
                .zip(&keys[p])
                .filter(|(d, _)| not_found[p].contains(&d.idx))
                .map(|(_, k)| k)
                .collect();
            if let Some(release) = inbox::release(&retried) {
                BatchTx::switch_into(&mut last, Tag::Part(p), parts[p].tenant);
                last.push(Tag::Part(p), &release)
                    .map_err(|_| Failed::Unrenderable(Tag::Part(p)))?;
            }
        }
        BatchTx::commit_into(&mut last, Tag::Batch);
        tx.run(&last).await?;
    }

    // Outcomes.
    let mut out = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        for (i, d) in part.events.iter().enumerate() {
            let event = &events[d.idx];
            let outcome = if !fresh(p, &keys[p][i]) {
                debug!(
                    seq = event.stream_sequence,
                    "duplicate delivery; effects already committed"
                );
                let items: Vec<DeadLetter> = seen[p]
                    .get(&keys[p][i])
                    .and_then(|dead| dead.as_deref())
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default();
                ack(items)
            } else if not_found[p].contains(&d.idx) {
                retry.transient(event, "message to update not found yet")
            } else {
                ack(std::mem::take(&mut dead_items[p][i]))
            };
            out.push((d.idx, outcome));
        }
    }
    Ok((out, token))
}

/// Runs the `PREPARE`s `script` needs, each in a query of its own (see `store::prepared`),
/// with the switch to its tenant's schema; each is recorded once it ran.
async fn prepare_all(
    tx: &mut BatchTx,
    script: &Script<Tag>,
    session: &mut SessionGuard,
) -> Result<(), ScriptError<Tag>> {
    for prepare in script.prepares() {
        let mut query = Script::named("prepare");
        query.push_sql(prepare.tag, &prepare.switch);
        query.push_sql(prepare.tag, &prepare.prepare);
        tx.run(&query).await?;
        if let Some(s) = &mut session.0 {
            s.confirm(&prepare.name);
        }
    }
    Ok(())
}

/// Runs `script`; when it names a prepared statement the connection does not hold, the
/// record of the connection is dropped (the attempt runs again, preparing anew).
async fn run_prepared(
    tx: &mut BatchTx,
    script: &Script<Tag>,
    session: &mut SessionGuard,
) -> Result<Vec<Vec<sqlx::postgres::PgRow>>, ScriptError<Tag>> {
    let ran = tx.run(script).await;
    if ran
        .as_ref()
        .is_err_and(|e| prepared::is_missing_statement(&e.error))
    {
        session.0 = None;
    }
    ran
}

/// The record of what the transaction's connection keeps prepared, given back when the
/// attempt ends, however it ends.
struct SessionGuard(Option<Session>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(mut session) = self.0.take() {
            // What was not confirmed never ran.
            session.drop_pending();
            prepared::checkin(session);
        }
    }
}

/// The tenant a fence refusal of statement `tag` is about: the part's, or the one whose schema
/// the refusal of the lock statement names.
fn fenced_tenant<'d>(
    parts: &[Part<'d, '_>],
    tag: Option<Tag>,
    error: &sqlx::Error,
) -> Option<&'d TenantId> {
    match tag? {
        Tag::Enter => {
            let message = error.as_database_error()?.message();
            let schema = batch_tx::fenced_schema(message)?;
            parts
                .iter()
                .find(|p| p.tenant.schema_name() == schema)
                .map(|p| p.tenant)
        }
        tag => tag.part().map(|p| parts[p].tenant),
    }
}

/// Tenants written in one transaction, at most. Every relation a transaction touches stays
/// locked until it commits, in the server's shared lock table (`max_locks_per_transaction` ×
/// `max_connections` entries, 6,400 by default); a tenant's writes touch about twenty
/// (tables, partitions, indexes), so a thousand tenants in one transaction would fill it.
pub const TENANTS_PER_TRANSACTION: usize = 32;

/// `parts` spread over `lanes` lanes: the tenants in the order of a hash of their schema name,
/// cut where each lane gets about as many events (and tenants) as the others. A tenant keeps
/// its lane from batch to batch while the mix of tenants stays alike, so its statements stay
/// prepared on the lane's connection; each tenant's parts stay together, in order.
fn lanes_of<'d, 'e>(parts: Vec<Part<'d, 'e>>, lanes: usize) -> Vec<Vec<Part<'d, 'e>>> {
    let lanes = lanes.max(1);
    let mut tenants = chunks(parts, 1);
    tenants.sort_by_cached_key(|t| lane_hash(t[0].tenant));
    // A tenant costs about as much as an event of its own (its lock, claim and statements).
    let weight = |t: &[Part<'_, '_>]| 1 + t.iter().map(|p| p.events.len()).sum::<usize>();
    let total: usize = tenants.iter().map(|t| weight(t)).sum();
    let mut out: Vec<Vec<Part<'d, 'e>>> = (0..lanes).map(|_| Vec::new()).collect();
    let mut before = 0;
    for tenant in tenants {
        let w = weight(&tenant);
        // The lane of the tenant's midpoint in the whole batch's weight.
        let lane = ((2 * before + w) * lanes / (2 * total)).min(lanes - 1);
        before += w;
        out[lane].extend(tenant);
    }
    out
}

/// A hash of the tenant's schema name (FNV-1a: the same in every process and release).
fn lane_hash(tenant: &TenantId) -> u64 {
    tenant
        .schema_name()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// SQLSTATE out_of_memory, which is also what a full lock table raises.
const OUT_OF_SHARED_MEMORY: &str = "53200";

/// `parts` in chunks of at most `max` tenants: each tenant's parts together, in order, tenants
/// in the order of their first part.
fn chunks<'d, 'e>(parts: Vec<Part<'d, 'e>>, max: usize) -> Vec<Vec<Part<'d, 'e>>> {
    let mut index: HashMap<&TenantId, usize> = HashMap::new();
    let mut by_tenant: Vec<Vec<Part<'d, 'e>>> = Vec::new();
    for part in parts {
        let t = *index.entry(part.tenant).or_insert_with(|| {
            by_tenant.push(Vec::new());
            by_tenant.len() - 1
        });
        by_tenant[t].push(part);
    }
    let mut chunks: Vec<Vec<Part<'d, 'e>>> = Vec::new();
    for (t, parts) in by_tenant.into_iter().enumerate() {
        if t % max.max(1) == 0 {
            chunks.push(Vec::new());
        }
        chunks.last_mut().expect("a chunk").extend(parts);
    }
    chunks
}

/// Distinct tenants of `parts`.
fn tenant_count(parts: &[Part<'_, '_>]) -> usize {
    parts.iter().map(|p| p.tenant).collect::<HashSet<_>>().len()
}

/// The position of `tenant` among the distinct tenants of `parts`, in order of first part.
fn tenant_rank(parts: &[Part<'_, '_>], tenant: &TenantId) -> usize {
    let mut seen: Vec<&TenantId> = Vec::new();
    for p in parts {
        if !seen.contains(&p.tenant) {
            seen.push(p.tenant);
        }
        if p.tenant == tenant {
            break;
        }
    }
    seen.len() - 1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_keep_each_tenants_parts_together_and_in_order() {
        let ids: Vec<TenantId> = ["A", "B", "C"]
            .iter()
            .map(|t| TenantId::parse(t).expect("tenant"))
            .collect();
        let none: &[Decoded<'_>] = &[];
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("pool");
        let db = crate::store::placement::Placements::single(pool)
            .main()
            .clone();
        // A, B, A (a piece split off A), C.
        let parts = vec![
            Part::new(&ids[0], none, db.clone()),
            Part::new(&ids[1], none, db.clone()),
            Part::new(&ids[0], none, db.clone()),
            Part::new(&ids[2], none, db),
        ];
        fn names<'a>(chunk: &[Part<'a, '_>]) -> Vec<&'a str> {
            chunk.iter().map(|p| p.tenant.as_str()).collect()
        }
        let two = chunks(parts.clone(), 2);
        assert_eq!(
            two.iter().map(|c| names(c)).collect::<Vec<_>>(),
            [vec!["A", "A", "B"], vec!["C"]]
        );
        let one = chunks(parts, usize::MAX);
        assert_eq!(names(&one[0]), ["A", "A", "B", "C"]);
        assert_eq!(tenant_count(&one[0]), 3);
        assert_eq!(tenant_rank(&one[0], &ids[1]), 1);
    }

    fn lane_db() -> Arc<Db> {
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("pool");
        crate::store::placement::Placements::single(pool)
            .main()
            .clone()
    }

    /// The lane of each tenant of `parts` spread over two lanes.
    fn lane_map<'a>(lanes: &[Vec<Part<'a, '_>>]) -> HashMap<&'a str, usize> {
        let mut map = HashMap::new();
        for (lane, parts) in lanes.iter().enumerate() {
            for p in parts {
                assert_eq!(
                    *map.entry(p.tenant.as_str()).or_insert(lane),
                    lane,
                    "a tenant's parts share a lane"
                );
            }
        }
        map
    }

    #[tokio::test]
    async fn lanes_share_a_batch_evenly_and_keep_each_tenant_on_its_lane() {
        let none: &[Decoded<'_>] = &[];
        let db = lane_db();
        let ids: Vec<TenantId> = (0..512)
            .map(|i| TenantId::parse(&format!("LANE{i:03}")).expect("tenant"))
            .collect();
        let parts = |which: &mut dyn Iterator<Item = usize>| -> Vec<Part<'_, '_>> {
            which
                .map(|i| Part::new(&ids[i], none, db.clone()))
                .collect()
        };

        // A few tenants: as many on each lane (the work is shared, whatever their hashes).
        for n in [1usize, 2, 3, 4, 5, 8] {
            let lanes = lanes_of(parts(&mut (0..n)), 2);
            let sizes: Vec<usize> = lanes.iter().map(Vec::len).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes[0].abs_diff(sizes[1]) <= 1, "{n} tenants: {sizes:?}");
        }

        // Two batches of different tenant mixes: almost every tenant in both keeps its lane.
        let all = lanes_of(parts(&mut (0..512)), 2);
        let halves: Vec<usize> = all.iter().map(Vec::len).collect();
        assert!(halves[0].abs_diff(halves[1]) <= 1, "{halves:?}");
        let first = lane_map(&all);
        let second = lane_map(&lanes_of(parts(&mut (0..512).filter(|i| i % 3 != 0)), 2));
        let moved = second
            .iter()
            .filter(|(t, lane)| first[*t] != **lane)
            .count();
        assert!(
            moved * 20 <= second.len(),
            "{moved} of {} tenants changed lanes",
            second.len()
        );

        // Pieces of one tenant stay together and in stream order.
        let pieces = vec![
            Part::new(&ids[7], none, db.clone()),
            Part::new(&ids[9], none, db.clone()),
            Part::new(&ids[7], none, db.clone()),
        ];
        let lanes = lanes_of(pieces, 2);
        let map = lane_map(&lanes);
        let lane = &lanes[map[ids[7].as_str()]];
        let at = lane
            .iter()
            .position(|p| p.tenant == &ids[7])
            .expect("there");
        assert_eq!(
            lane[at + 1].tenant,
            &ids[7],
            "{:?}",
            lane.iter().map(|p| p.tenant.as_str()).collect::<Vec<_>>()
        );
    }
}
