//! A deterministic realtime workload whose exactly-once result is known in advance: unread
//! deltas over a set of chats, messages and their receipts (status updates after their message).

use std::collections::BTreeMap;

use async_nats::jetstream::Context;
use serde_json::{json, Value};
use sqlx::PgPool;
use wa_shared::model::{EventKind, Subject};

use crate::rows;

pub struct Workload {
    pub events: Vec<(EventKind, Value)>,
    /// Sum of deltas per chat, when each event applies exactly once.
    pub unread: BTreeMap<String, i64>,
    /// Highest status per message.
    pub status: BTreeMap<String, String>,
}

impl Workload {
    /// `n` events over `chats` chats; about half unread deltas, a quarter messages, a quarter receipts.
    pub fn generate(n: usize, chats: usize, seed: u64) -> Self {
        let mut rng = seed.max(1);
        let mut next = |bound: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % bound as u64) as usize
        };
        let mut w = Workload {
            events: Vec::with_capacity(n),
            unread: BTreeMap::new(),
            status: BTreeMap::new(),
        };
        let mut messages: Vec<String> = Vec::new();
        while w.events.len() < n {
            let chat = format!("AG_62810{:04}", next(chats));
            match next(4) {
                0 | 1 => {
                    let delta = 1 + next(2) as i64;
                    *w.unread.entry(chat.clone()).or_default() += delta;
                    w.events.push((
                        EventKind::ChatUpdate,
                        json!({"chat_id": chat, "agent_id": "AG", "unread_count": delta}),
                    ));
                }
                2 => {
                    let id = format!("M{}", messages.len());
                    w.events.push((
                        EventKind::MessageUpsert,
                        json!({"message_id": id, "chat_id": chat, "jid": format!("{}@s.whatsapp.net", &chat[3..]), "flow": "IN", "status": "0", "message_timestamp": 1_718_358_000 + w.events.len()}),
                    ));
                    w.status.insert(id.clone(), "0".into());
                    messages.push(id);
                }
                _ if !messages.is_empty() => {
                    let id = messages[next(messages.len())].clone();
                    let status = next(6).to_string();
                    let best = w.status.get_mut(&id).expect("known");
                    if status > *best {
                        *best = status.clone();
                    }
                    w.events.push((
                        EventKind::MessageUpdate,
                        json!({"message_id": id, "status": status}),
                    ));
                }
                _ => {}
            }
        }
        w
    }

    /// Publishes every event for `tenant`, pipelined, waiting for all stream acks.
    pub async fn publish(&self, js: &Context, tenant: &str) {
        publish(js, tenant, &self.events).await
    }

    /// Asserts the tenant's rows equal the exactly-once result.
    pub async fn assert_applied(&self, pool: &PgPool, tenant: &str) {
        let unread: BTreeMap<String, i64> = rows(
            pool,
            tenant,
            "SELECT chat_id, unread_count FROM chats WHERE unread_count IS NOT NULL",
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r["chat_id"].as_str().unwrap().to_owned(),
                r["unread_count"].as_i64().unwrap(),
            )
        })
        .collect();
        assert_eq!(
            unread, self.unread,
            "unread counts differ from exactly-once application"
        );
        let status: BTreeMap<String, String> =
            rows(pool, tenant, "SELECT message_id, status FROM messages")
                .await
                .into_iter()
                .map(|r| {
                    (
                        r["message_id"].as_str().unwrap().to_owned(),
                        r["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        assert_eq!(status, self.status, "message statuses differ");
    }
}

/// Publishes `events` (a workload's, or part of them) for `tenant`, pipelined, waiting for all
/// stream acks.
pub async fn publish(js: &Context, tenant: &str, events: &[(EventKind, Value)]) {
    for chunk in events.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (kind, body) in chunk {
            let subject = Subject::format(*kind, tenant);
            acks.push(
                js.publish(subject, serde_json::to_vec(body).expect("json").into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
}

/// Valid upserts with unique ids, from the producer fixtures' shapes: nine in ten
/// `messages.upsert` (each a new message, in one of [`Upserts::CHATS`] chats), one in twenty a
/// `chats.upsert` of one of those chats and one in twenty a `contacts.upsert` of a new contact.
/// Every event applies cleanly whenever and however often it is delivered, so the rows it
/// leaves are known in advance and a dead letter can only come from a fault.
pub struct Upserts {
    pub events: Vec<(EventKind, Value)>,
    pub messages: i64,
    pub chats: i64,
    pub contacts: i64,
}

impl Upserts {
    pub const CHATS: usize = 50;

    /// `n` events for `tenant` (their bodies carry it as `company_id`).
    pub fn generate(tenant: &str, n: usize) -> Self {
        let template = |kind: EventKind| -> Value {
            let line = crate::fixture_lines(kind, tenant)
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("no fixture for {kind:?}"));
            serde_json::from_str(&line).expect("fixture is JSON")
        };
        let (message, chat, contact) = (
            template(EventKind::MessageUpsert),
            template(EventKind::ChatUpsert),
            template(EventKind::ContactUpsert),
        );
        let phone = |i: usize| format!("62812{i:08}");
        let mut out = Upserts {
            events: Vec::with_capacity(n),
            messages: 0,
            chats: 0,
            contacts: 0,
        };
        let mut chats = std::collections::BTreeSet::new();
        for i in 0..n {
            let c = phone(i % Self::CHATS);
            let chat_id = format!("AGT001_{c}");
            let jid = format!("{c}@s.whatsapp.net");
            let timestamp = 1_718_358_000 + i as i64;
            let (kind, mut body) = match i % 20 {
                10 => (EventKind::ChatUpsert, chat.clone()),
                15 => (EventKind::ContactUpsert, contact.clone()),
                _ => (EventKind::MessageUpsert, message.clone()),
            };
            match kind {
                EventKind::ChatUpsert => {
                    body["chat_id"] = json!(chat_id);
                    body["jid"] = json!(jid);
                    body["phone_number"] = json!(c);
                    body["push_name"] = json!(format!("Chat {i}"));
                    body["conversation_timestamp"] = json!(timestamp);
                    chats.insert(chat_id);
                }
                EventKind::ContactUpsert => {
                    let p = format!("62899{i:08}");
                    body["chat_id"] = json!(format!("AGT001_{p}"));
                    body["phone_number"] = json!(p);
                    body["push_name"] = json!(format!("Contact {i}"));
                    out.contacts += 1;
                }
                _ => {
                    let id = format!("FAILOVER{i:08}");
                    body["message_id"] = json!(format!("AGT001_{id}"));
                    body["key"]["id"] = json!(id);
                    body["key"]["remoteJid"] = json!(jid);
                    body["chat_id"] = json!(chat_id);
                    body["jid"] = json!(jid);
                    body["from_phone"] = json!(c);
                    body["message_timestamp"] = json!(timestamp);
                    out.messages += 1;
                    chats.insert(chat_id);
                }
            }
            out.events.push((kind, body));
        }
        out.chats = chats.len() as i64;
        out
    }

    /// Asserts that every event left its row: one per message, chat and contact.
    pub async fn assert_landed(&self, pool: &PgPool, tenant: &str) {
        for (table, want) in [
            ("messages", self.messages),
            ("chats", self.chats),
            ("contacts", self.contacts),
        ] {
            let got = crate::row(pool, tenant, &format!("SELECT count(*) AS n FROM {table}")).await
                ["n"]
                .as_i64()
                .expect("count");
            assert_eq!(got, want, "rows in {table}");
        }
    }
}
