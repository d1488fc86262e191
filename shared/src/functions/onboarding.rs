//! Onboarding: the first incoming message from a person the tenant has never seen creates an
//! `onboarding_log` row and a contact; campaign attribution is merged into existing contacts.
//!
//! Idempotent by construction (unique keys, `ON CONFLICT`, merges that converge), so redelivery
//! and concurrent instances are safe without an inbox.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{PgConnection, Postgres};
use tracing::{debug, info, warn};

use super::{Defaults, FunctionKind, FunctionSpec, Scope};
use crate::model::{decode, EventKind, Flow, MessagePayload, Payload, Subject, TenantId};
use crate::pipeline::failure::{classify, DbFailure};
use crate::pipeline::{Handler, InboundEvent, Outcome, Processor, Unavailable};
use crate::store::tenant_tx;
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

pub struct Onboarding {
    processor: Arc<Processor>,
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
    pub fn new(processor: Arc<Processor>) -> Self {
        Onboarding { processor }
    }

    async fn process(&self, events: &[InboundEvent]) -> Result<Vec<Outcome>, Unavailable> {
        let mut outcomes = vec![Outcome::Ack; events.len()];
        let mut groups: HashMap<TenantId, Vec<Candidate>> = HashMap::new();
        let settings = self.processor.settings();
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
            if let Err(e) = self.processor.schemas().ensure(&tenant).await {
                let reason = e.to_string();
                if let crate::store::SchemaError::Db(db) = &e {
                    if classify(db) == DbFailure::Unavailable {
                        return Err(Unavailable(reason));
                    }
                }
                for c in &candidates {
                    outcomes[c.idx] = self.processor.transient(&events[c.idx], &reason);
                }
                continue;
            }
            if let Err(e) = self.write(&tenant, &candidates).await {
                match classify(&e) {
                    DbFailure::Unavailable => return Err(Unavailable(e.to_string())),
                    _ => {
                        warn!(tenant = %tenant, error = %e, "onboarding write failed");
                        for c in &candidates {
                            outcomes[c.idx] =
                                self.processor.transient(&events[c.idx], &e.to_string());
                        }
                    }
                }
            }
        }
        Ok(outcomes)
    }

    async fn write(
        &self,
        tenant: &TenantId,
        candidates: &[Candidate<'_>],
    ) -> Result<(), sqlx::Error> {
        let mut tx = tenant_tx::begin(
            self.processor.pool(),
            tenant,
            self.processor.settings().lock_timeout,
        )
        .await?;
        let phones: Vec<&str> = candidates.iter().map(|c| c.phone.as_str()).collect();
        let known: HashSet<String> = sqlx::query_scalar::<Postgres, String>(
            "SELECT phone_number FROM contacts WHERE phone_number = ANY($1)
             UNION SELECT phone_number FROM onboarding_log WHERE phone_number = ANY($1)",
        )
        .bind(&phones)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut onboarded: HashSet<&str> = HashSet::new();
        for c in candidates {
            let campaign = c
                .message
                .campaign
                .as_ref()
                .filter(|k| k.is_campaign != Some(false));
            if !known.contains(&c.phone) && !onboarded.contains(c.phone.as_str()) {
                if onboard(&mut tx, tenant, c).await? {
                    info!(tenant = %tenant, message_id = %c.message.message_id, "new contact onboarded");
                }
                onboarded.insert(&c.phone);
            } else if let Some(k) = campaign {
                merge_campaign(&mut tx, &c.phone, k).await?;
            }
        }
        tx.commit().await
    }
}

/// Inserts the log row and the contact; returns whether this call onboarded the phone.
async fn onboard(
    conn: &mut PgConnection,
    tenant: &TenantId,
    c: &Candidate<'_>,
) -> Result<bool, sqlx::Error> {
    let m = &c.message;
    let agent = m.agent_id.as_deref().unwrap_or_default();
    let logged = sqlx::query::<Postgres>(
        "INSERT INTO onboarding_log (message_id, agent_id, company_id, phone_number, \"timestamp\", last_metadata)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (phone_number) DO NOTHING",
    )
    .bind(m.message_id.as_str())
    .bind(agent)
    .bind(tenant.as_str())
    .bind(&c.phone)
    .bind(m.message_timestamp)
    .bind(&c.meta)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !logged {
        return Ok(false);
    }
    let campaign = m.campaign.as_ref().filter(|k| k.is_campaign != Some(false));
    let tags = merge_tags(Some("Onboarded"), campaign.and_then(|k| k.tags.as_deref()));
    let origin = campaign
        .and_then(|k| k.origin.as_deref())
        .filter(|o| !o.is_empty())
        .unwrap_or("DirectChat");
    let assigned = campaign
        .and_then(|k| k.assigned_to.as_deref())
        .filter(|a| !a.is_empty());
    sqlx::query::<Postgres>(
        "INSERT INTO contacts (id, phone_number, agent_id, chat_id, push_name, origin, tags, assigned_to,
             status, first_message_id, first_message_timestamp, company_id, last_metadata)
         VALUES (gen_random_uuid()::text, $1, $2, $2 || '_' || $1, NULL, $3, $4, $5, 'ACTIVE', $6, $7, $8, $9::jsonb)
         ON CONFLICT (agent_id, phone_number) DO NOTHING",
    )
    .bind(&c.phone)
    .bind(agent)
    .bind(origin)
    .bind(tags)
    .bind(assigned)
    .bind(m.message_id.as_str())
    .bind(m.message_timestamp)
    .bind(tenant.as_str())
    .bind(&c.meta)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Campaign attribution on existing contacts of this phone: tags merged (existing order, new
/// ones appended, no duplicates), a non-empty `assigned_to` replaces, `origin` fills a blank.
async fn merge_campaign(
    conn: &mut PgConnection,
    phone: &str,
    k: &crate::model::Campaign<'_>,
) -> Result<(), sqlx::Error> {
    let existing: Vec<(String, Option<String>)> =
        sqlx::query_as::<Postgres, (String, Option<String>)>(
            "SELECT id, tags FROM contacts WHERE phone_number = $1",
        )
        .bind(phone)
        .fetch_all(&mut *conn)
        .await?;
    for (id, tags) in existing {
        sqlx::query::<Postgres>(
            "UPDATE contacts SET tags = $2,
                 assigned_to = CASE WHEN COALESCE($3, '') <> '' THEN $3 ELSE assigned_to END,
                 origin = CASE WHEN COALESCE(origin, '') = '' THEN COALESCE(NULLIF($4, ''), origin) ELSE origin END,
                 updated_at = now()
             WHERE id = $1",
        )
        .bind(&id)
        .bind(merge_tags(tags.as_deref(), k.tags.as_deref()))
        .bind(k.assigned_to.as_deref())
        .bind(k.origin.as_deref())
        .execute(&mut *conn)
        .await?;
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
        self.process(events).await
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
