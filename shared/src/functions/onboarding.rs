//! Onboarding: the first incoming message from a person the tenant has never seen creates an
//! `onboarding_log` row and a contact; campaign attribution is merged into existing contacts.
//!
//! Idempotent by construction (unique keys, `ON CONFLICT`, merges that converge), so redelivery
//! and concurrent instances are safe without an inbox.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::PgPool;
use tracing::{debug, info, warn};

use super::{Defaults, FunctionKind, FunctionSpec, Scope};
use crate::http::Notices;
use crate::model::{decode, Campaign, EventKind, Flow, MessagePayload, Payload, Subject, TenantId};
use crate::pipeline::HELD_RECHECK;
use crate::pipeline::{
    Handler, InboundEvent, Outcome, ProcessorSettings, RetryPolicy, Unavailable,
};
use crate::store::failure::{classify, DbFailure};
use crate::store::onboarding::{self as store, CampaignUpdate, NewOnboarding};
use crate::store::placement::Placements;
use crate::store::schema::ADOPTION_RECHECK;
use crate::store::{tenant_tx, SchemaError, Schemas, TenantTx};
use crate::transport::streams::REALTIME_STREAM;

/// The onboarding function: its own consumer of `v1.messages.upsert.*` on the realtime stream.
pub const ONBOARDING: FunctionSpec = FunctionSpec {
    kind: FunctionKind::Onboarding,
    name: "onboarding",
    bin: "wa-onboarding",
    about: "Onboards the first incoming message of every new phone: onboarding_log row and contact, campaign attribution",
    consumer_type: "onboarding",
    durable: "wa_onboarding",
    stream: REALTIME_STREAM,
    scope: Scope::Kind(EventKind::MessageUpsert),
    defaults: Defaults {
        http_port: "8084",
        max_deliver: Some("5"),
        backoff_var: "BACKOFF",
        backoff: "1s,2s,4s,8s",
    },
    metrics_prefix: "onboarding",
};

/// The onboarding handler: its own schemas, settings (allowlist, payload limit, lock timeout)
/// and retry policy.
pub struct Onboarding {
    schemas: Schemas,
    settings: ProcessorSettings,
    retry: RetryPolicy,
}

/// An incoming message from a person, with the phone it comes from.
struct Candidate<'a> {
    idx: usize,
    phone: String,
    message: MessagePayload<'a>,
    meta: String,
}

/// `from_phone`'s digits, when the message is IN and from a person (`@s.whatsapp.net`).
fn candidate_phone(m: &MessagePayload<'_>) -> Option<String> {
    if m.flow != Flow::In
        || !m
            .jid
            .as_deref()
            .is_some_and(|j| j.ends_with("@s.whatsapp.net"))
    {
        return None;
    }
    let digits: String = m
        .from_phone
        .as_deref()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

impl Onboarding {
    pub fn new(pool: PgPool, settings: ProcessorSettings) -> Self {
        let placements = Arc::new(Placements::new(pool.clone(), &settings.tenant_databases));
        Self::placed(placements, settings)
    }

    /// The handler writing to the databases of `placements` (sharing their pools).
    pub fn placed(placements: Arc<Placements>, settings: ProcessorSettings) -> Self {
        Onboarding {
            schemas: Schemas::placed(placements, settings.auto_migrate),
            retry: settings.retry_policy(),
            settings,
        }
    }

    /// The handler, showing the schemas awaiting adoption in `notices` (`/ready`).
    pub fn with_notices(mut self, notices: Notices) -> Self {
        self.schemas.set_notices(notices);
        self
    }

    async fn write(
        &self,
        pool: &PgPool,
        tenant: &TenantId,
        candidates: &[Candidate<'_>],
    ) -> Result<(), sqlx::Error> {
        let mut tx = tenant_tx::begin(pool, tenant, self.settings.lock_timeout).await?;
        let phones: Vec<&str> = candidates.iter().map(|c| c.phone.as_str()).collect();
        let known = store::known_phones(&mut tx, &phones).await?;
        let mut onboarded: HashSet<&str> = HashSet::new();
        for c in candidates {
            if !known.contains(&c.phone) && !onboarded.contains(c.phone.as_str()) {
                if onboard(&mut tx, c).await? {
                    info!(tenant = %tenant, message_id = %c.message.message_id, "new contact onboarded");
                }
                onboarded.insert(&c.phone);
            } else if let Some(k) = campaign(&c.message) {
                merge_campaign(&mut tx, &c.phone, k).await?;
            }
        }
        tx.commit().await
    }
}

/// The message's campaign attribution, unless it says it is not a campaign.
fn campaign<'m>(m: &'m MessagePayload<'_>) -> Option<&'m Campaign<'m>> {
    m.campaign.as_ref().filter(|k| k.is_campaign != Some(false))
}

/// Logs the phone's onboarding and creates its contact, tagged `Onboarded` (and with the
/// campaign's attribution); returns whether this call onboarded the phone.
async fn onboard(tx: &mut TenantTx, c: &Candidate<'_>) -> Result<bool, sqlx::Error> {
    let m = &c.message;
    let campaign = campaign(m);
    let tags = merge_tags(Some("Onboarded"), campaign.and_then(|k| k.tags.as_deref()));
    let row = NewOnboarding {
        message_id: &m.message_id,
        agent_id: m.agent_id.as_deref().unwrap_or_default(),
        phone: &c.phone,
        message_timestamp: m.message_timestamp,
        meta: &c.meta,
        origin: campaign
            .and_then(|k| k.origin.as_deref())
            .filter(|o| !o.is_empty())
            .unwrap_or("DirectChat"),
        tags: tags.as_deref(),
        assigned_to: campaign
            .and_then(|k| k.assigned_to.as_deref())
            .filter(|a| !a.is_empty()),
    };
    store::onboard(tx, &row).await
}

/// Campaign attribution on existing contacts of this phone: tags merged (existing order, new
/// ones appended, no duplicates), a non-empty `assigned_to` replaces, `origin` fills a blank.
async fn merge_campaign(
    tx: &mut TenantTx,
    phone: &str,
    k: &Campaign<'_>,
) -> Result<(), sqlx::Error> {
    for (id, tags) in store::contact_tags(tx, phone).await? {
        let tags = merge_tags(tags.as_deref(), k.tags.as_deref());
        let update = CampaignUpdate {
            tags: tags.as_deref(),
            assigned_to: k.assigned_to.as_deref(),
            origin: k.origin.as_deref(),
        };
        store::update_campaign(tx, &id, &update).await?;
    }
    Ok(())
}

/// Comma lists merged: existing order kept, new tags appended, duplicates and blanks dropped.
pub fn merge_tags(existing: Option<&str>, new: Option<&str>) -> Option<String> {
    let mut seen = HashSet::new();
    let merged: Vec<&str> = existing
        .into_iter()
        .chain(new)
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && seen.insert(*t))
        .collect();
    (!merged.is_empty()).then(|| merged.join(","))
}

impl Handler for Onboarding {
    async fn handle(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let mut outcomes = vec![Outcome::Ack; events.len()];
        let mut groups: HashMap<TenantId, Vec<Candidate>> = HashMap::new();
        let settings = &self.settings;
        for (idx, e) in events.iter().enumerate() {
            // Invalid events are the realtime function's to dead-letter; nothing to onboard.
            let Ok(subject) = Subject::parse(&e.subject) else {
                continue;
            };
            if subject.kind != EventKind::MessageUpsert
                || settings
                    .allowlist
                    .as_ref()
                    .is_some_and(|a| !a.contains(subject.tenant.as_str()))
            {
                continue;
            }
            let Ok(Payload::Message(message)) =
                decode(&subject, &e.payload, settings.max_payload_bytes)
            else {
                debug!(seq = e.stream_sequence, "not a valid message; skipped");
                continue;
            };
            if let Some(phone) = candidate_phone(&message) {
                let meta = serde_json::json!({
                    "stream": e.stream, "stream_sequence": e.stream_sequence, "consumer": e.consumer,
                    "subject": e.subject, "delivered": e.delivered,
                    "processed_at": chrono::Utc::now().to_rfc3339(),
                })
                .to_string();
                groups.entry(subject.tenant).or_default().push(Candidate {
                    idx,
                    phone,
                    message,
                    meta,
                });
            }
        }
        for (tenant, candidates) in groups {
            let db = match self.schemas.ensure(&tenant).await {
                Ok(db) => db,
                Err(e) => {
                    let reason = e.to_string();
                    if let SchemaError::Owned { .. } = &e {
                        // Refused tenants are the realtime function's to dead-letter.
                        debug!(tenant = %tenant, %reason, "tenant refused; nothing to onboard");
                        continue;
                    }
                    if let SchemaError::AwaitingAdoption(_) | SchemaError::Held { .. } = &e {
                        // Onboarded once the schema is adopted, or the tenant is written again
                        // (resumed, moved, its database back); waiting is no attempt.
                        let delay = match e {
                            SchemaError::Held { .. } => HELD_RECHECK,
                            _ => ADOPTION_RECHECK,
                        };
                        for c in &candidates {
                            outcomes[c.idx] = Outcome::Wait { delay };
                        }
                        continue;
                    }
                    if let SchemaError::Db(db) = &e {
                        if classify(db) == DbFailure::Unavailable {
                            return Err(Unavailable(reason));
                        }
                    }
                    for c in &candidates {
                        outcomes[c.idx] = self.retry.transient(&events[c.idx], &reason);
                    }
                    continue;
                }
            };
            if let Err(e) = self.write(&db.pool, &tenant, &candidates).await {
                match classify(&e) {
                    DbFailure::Unavailable if db.is_main() => {
                        return Err(Unavailable(e.to_string()))
                    }
                    DbFailure::Unavailable | DbFailure::Fenced => {
                        // Another placement down, or the tenant paused or moved since: only
                        // its events wait.
                        debug!(tenant = %tenant, error = %e, "tenant held; its events wait");
                        self.schemas.forget(&tenant);
                        for c in &candidates {
                            outcomes[c.idx] = Outcome::Wait {
                                delay: HELD_RECHECK,
                            };
                        }
                    }
                    _ => {
                        warn!(tenant = %tenant, error = %e, "onboarding write failed");
                        for c in &candidates {
                            outcomes[c.idx] = self.retry.transient(&events[c.idx], &e.to_string());
                        }
                    }
                }
            }
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::merge_tags;

    #[test]
    fn tags_merge_in_order_without_duplicates() {
        assert_eq!(
            merge_tags(Some("a, b"), Some("b,c,,a,d")).as_deref(),
            Some("a,b,c,d")
        );
        assert_eq!(merge_tags(None, Some("x")).as_deref(), Some("x"));
        assert_eq!(merge_tags(Some(""), None), None);
    }
}
