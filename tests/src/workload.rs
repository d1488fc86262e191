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
