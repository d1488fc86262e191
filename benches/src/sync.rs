//! History syncs: the `history.chats`, `history.contacts` and `history.messages` batches (at
//! most 100 items each) an agent publishes after connecting, re-sending some messages that the
//! realtime path already delivered, as the producer does.

use serde_json::{json, Value};
use wa_shared::model::EventKind;

use crate::agent::{Agent, Peer};
use crate::content::{self, Content};
use crate::producer::{
    Chat, Contact, HistoryChats, HistoryContacts, HistoryMessages, Key, Message,
};

/// The producer's largest history batch.
pub const MAX_BATCH: usize = 100;
const MONTH: u64 = 30 * 86_400;

/// A history message before it borrows into its JSON shape.
struct Item {
    message_id: String,
    chat_id: String,
    peer: Peer,
    from_me: bool,
    participant: Option<String>,
    content: Content,
    timestamp: i64,
    status: &'static str,
    created_at: String,
    /// An edit: `message_type` becomes an array and the edit is unwrapped.
    edit: Option<Value>,
}

impl Agent {
    /// One history sync: chats, then their contacts, then messages, each in batches.
    pub fn history_sync(&mut self) {
        self.clock += self.rng.between(1, 20) as i64;
        let wanted = self.rng.between(3, 150);
        let mut peers: Vec<usize> = (0..wanted)
            .map(|_| {
                if !self.peers.is_empty() && self.rng.chance(0.3) {
                    self.rng.below(self.peers.len() as u64) as usize
                } else {
                    let group = self.rng.chance(0.1);
                    self.new_peer(group)
                }
            })
            .collect();
        peers.sort_unstable();
        peers.dedup();

        for batch in peers.chunks(MAX_BATCH) {
            let chats = batch.iter().map(|&i| self.history_chat(i)).collect();
            let event = self.event(EventKind::HistoryChats, &HistoryChats { chats });
            self.queue(event);
        }

        let people: Vec<usize> = peers
            .iter()
            .copied()
            .filter(|&i| self.peers[i].is_phone())
            .collect();
        for batch in people.chunks(MAX_BATCH) {
            let contacts = batch
                .iter()
                .map(|&i| {
                    let p = &self.peers[i];
                    Contact {
                        chat_id: self.chat_id(p),
                        company_id: &self.company,
                        agent_id: &self.agent_id,
                        phone_number: &p.user,
                        push_name: p.push_name(),
                    }
                })
                .collect();
            let event = self.event(EventKind::HistoryContacts, &HistoryContacts { contacts });
            self.queue(event);
        }

        let total = self.rng.between(1, 3 * MAX_BATCH as u64) as usize;
        let items: Vec<Item> = (0..total).map(|_| self.history_item(&peers)).collect();
        for (n, batch) in items.chunks(MAX_BATCH).enumerate() {
            let messages = batch
                .iter()
                .map(|item| self.history_message(item))
                .collect();
            let first = n == 0;
            let body = HistoryMessages {
                messages,
                is_last_batch: first.then_some(true),
                agent_id: first.then_some(self.agent_id.as_str()),
            };
            let event = self.event(EventKind::HistoryMessages, &body);
            self.queue(event);
        }
    }

    fn history_chat(&self, i: usize) -> Chat<'_> {
        let p = &self.peers[i];
        Chat {
            chat_id: self.chat_id(p),
            jid: p.jid.clone(),
            phone_number: &p.user,
            company_id: &self.company,
            agent_id: &self.agent_id,
            unread_count: (p.unread > 0).then_some(p.unread),
            not_spam: (!p.group).then_some(true),
            is_group: p.group,
            conversation_timestamp: self.clock - (i as i64 % 1000) * 3_600,
            last_message: Some(json!({"conversation": content::TEXTS[i % content::TEXTS.len()]})),
            group_name: p.group.then_some(p.push_name()),
            push_name: p.push_name(),
        }
    }

    /// A message of one of `peers`' chats: new, or (15 %) a re-send of a recent one.
    fn history_item(&mut self, peers: &[usize]) -> Item {
        let resend = !self.recent.is_empty() && self.rng.chance(0.15);
        let (message_id, peer, from_me) = if resend {
            let r = self.recent[self.rng.below(self.recent.len() as u64) as usize].clone();
            let from_me = r.message_id.contains("_3EB0");
            (r.message_id, r.peer, from_me)
        } else {
            let from_me = self.rng.chance(0.4);
            let peer = peers[self.rng.below(peers.len() as u64) as usize];
            let message_id = self.new_message_id(from_me);
            self.remember(message_id.clone(), peer);
            (message_id, peer, from_me)
        };
        let p = self.peers[peer].clone();
        let participant = p
            .group
            .then(|| format!("628{}@s.whatsapp.net", self.rng.digits(10)));
        let status = match (p.group, from_me) {
            (true, _) => "0",
            (false, true) => ["2", "3", "4"][self.rng.below(3) as usize],
            (false, false) => ["0", "3", "4"][self.rng.below(3) as usize],
        };
        let key_id = message_id[self.agent_id.len() + 1..].to_owned();
        let edit = (!p.group && self.rng.chance(0.03)).then(|| {
            json!({"extendedTextMessage": {"text": content::TEXTS[self.rng.below(10) as usize]}})
        });
        let content = match &edit {
            Some(edited) => Content {
                obj: json!({"protocolMessage": {"key": {"remoteJid": p.jid, "fromMe": true, "id": key_id},
                    "type": "MESSAGE_EDIT", "editedMessage": edited,
                    "timestampMs": format!("{}000", self.clock)}}),
                message_type: "extendedTextMessage",
                text: None,
                media: false,
            },
            None => content::content(&mut self.rng, &p.jid, Some(&key_id)),
        };
        Item {
            message_id,
            chat_id: self.chat_id(&p),
            timestamp: self.clock - self.rng.below(MONTH) as i64,
            created_at: self.created_at(),
            peer: p,
            from_me,
            participant,
            content,
            status,
            edit,
        }
    }

    fn history_message<'a>(&'a self, item: &'a Item) -> Message<'a> {
        let p = &item.peer;
        let (to_phone, from_phone) = if item.from_me {
            (p.user.as_str(), self.phone.as_str())
        } else {
            (self.phone.as_str(), p.user.as_str())
        };
        let message_type = match item.edit {
            Some(_) => json!([item.content.message_type]),
            None => Value::from(item.content.message_type),
        };
        Message {
            message_id: &item.message_id,
            chat_id: &item.chat_id,
            jid: &p.jid,
            key: Key {
                remote_jid: &p.jid,
                from_me: item.from_me,
                id: &item.message_id[self.agent_id.len() + 1..],
                participant: item.participant.clone(),
            },
            message_obj: &item.content.obj,
            message_type,
            message_text: item.content.text,
            message_url: None,
            company_id: &self.company,
            agent_id: &self.agent_id,
            to_phone,
            from_phone,
            flow: if item.from_me { "OUT" } else { "IN" },
            message_timestamp: item.timestamp,
            status: item.status,
            created_at: &item.created_at,
            edited_message_obj: item.edit.as_ref(),
        }
    }
}
