//! One simulated WhatsApp agent (a connected phone): its chats, contacts and connection, and the
//! realtime events it publishes, related as the producer relates them (SPEC §15).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use wa_shared::model::{EventKind, Subject};

use crate::content::{self, Content, NAMES};
use crate::event::Event;
use crate::producer::{self, ChatUpdate, Key, Message};
use crate::rng::Rng;

/// Chats an agent remembers; past this a new chat replaces a random old one.
const MAX_PEERS: usize = 2000;
/// Recent messages remembered for quotes, edits, deletes and history re-sends.
const MAX_RECENT: usize = 200;

/// The other side of a chat: a person (phone or opaque `@lid`) or a group.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The jid's user part: phone digits, lid digits or group id.
    pub user: String,
    pub jid: String,
    pub name: Option<&'static str>,
    pub group: bool,
    pub unread: i32,
}

impl Peer {
    /// The producer falls back to the phone digits when the name is unknown.
    pub fn push_name(&self) -> &str {
        self.name.unwrap_or(&self.user)
    }

    pub fn is_phone(&self) -> bool {
        self.jid.ends_with("@s.whatsapp.net")
    }
}

/// A message sent or received earlier.
#[derive(Debug, Clone)]
pub(crate) struct Recent {
    pub message_id: String,
    pub peer: usize,
}

/// One simulated phone of a tenant.
pub struct Agent {
    pub(crate) company: String,
    pub(crate) agent_id: String,
    pub(crate) phone: String,
    pub(crate) host_name: String,
    pub(crate) rng: Rng,
    /// Unix seconds of the agent's latest event.
    pub(crate) clock: i64,
    /// Events this agent has published; receipts are scheduled in ticks.
    tick: u64,
    seq: u64,
    pub(crate) peers: Vec<Peer>,
    pub(crate) recent: VecDeque<Recent>,
    /// The latest `connection.update` status (empty before the first).
    pub(crate) status: &'static str,
    ready: VecDeque<Event>,
    /// Events due at a later tick, keyed by (tick, scheduling order).
    later: BTreeMap<(u64, u64), Event>,
}

impl Agent {
    pub fn new(company: &str, agent_id: String, rng: Rng) -> Self {
        let mut rng = rng;
        let phone = format!("6281{}", rng.digits(9));
        let host_name = format!(
            "dwa-{}-{}",
            agent_id.to_lowercase(),
            rng.hex(9).to_lowercase()
        );
        Agent {
            company: company.to_owned(),
            agent_id,
            phone,
            host_name,
            clock: 1_718_358_000 + rng.below(86_400) as i64,
            rng,
            tick: 0,
            seq: 0,
            peers: Vec::new(),
            recent: VecDeque::new(),
            status: "",
            ready: VecDeque::new(),
            later: BTreeMap::new(),
        }
    }

    /// The agent's next event; `scene` adds events when none is due.
    pub fn next_event(&mut self, mut scene: impl FnMut(&mut Agent)) -> Event {
        self.tick += 1;
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 > self.tick {
                break;
            }
            self.ready.push_back(entry.remove());
        }
        loop {
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            scene(self);
        }
    }

    /// Publishes `event` `delay` (≥ 1) events of this agent from now.
    pub(crate) fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.later
            .insert((self.tick + delay.max(1), self.seq), event);
    }

    pub(crate) fn event(&self, kind: EventKind, value: &impl Serialize) -> Event {
        Event {
            kind,
            subject: Subject::format(kind, &self.company),
            body: Bytes::from(producer::body(value)),
        }
    }

    pub(crate) fn chat_id(&self, peer: &Peer) -> String {
        format!("{}_{}", self.agent_id, peer.user)
    }

    pub(crate) fn created_at(&self) -> String {
        chrono::DateTime::from_timestamp(self.clock, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    }

    pub(crate) fn new_message_id(&mut self, from_me: bool) -> String {
        let prefix = if from_me { "3EB0" } else { "3A" };
        format!("{}_{prefix}{}", self.agent_id, self.rng.hex(18))
    }

    /// A new person (3 % opaque `@lid` ids) or group, remembered by the agent.
    pub(crate) fn new_peer(&mut self, group: bool) -> usize {
        let peer = if group {
            let user = format!("120363{}", self.rng.digits(12));
            Peer {
                jid: format!("{user}@g.us"),
                user,
                name: Some(
                    ["Tim Gudang", "Reseller Jabodetabek", "Promo Juni"]
                        [self.rng.below(3) as usize],
                ),
                group: true,
                unread: 0,
            }
        } else {
            let lid = self.rng.chance(0.03);
            let user = if lid {
                self.rng.digits(15)
            } else {
                let n = self.rng.between(9, 10) as usize;
                format!("628{}", self.rng.digits(n))
            };
            Peer {
                jid: format!("{user}{}", if lid { "@lid" } else { "@s.whatsapp.net" }),
                user,
                name: (!self.rng.chance(0.2)).then(|| *self.rng.pick(&NAMES)),
                group: false,
                unread: 0,
            }
        };
        if self.peers.len() < MAX_PEERS {
            self.peers.push(peer);
            self.peers.len() - 1
        } else {
            let i = self.rng.below(MAX_PEERS as u64) as usize;
            self.peers[i] = peer;
            i
        }
    }

    /// A remembered one-to-one chat, if one is found.
    pub(crate) fn person(&mut self) -> Option<usize> {
        if self.peers.is_empty() {
            return None;
        }
        (0..8)
            .map(|_| self.rng.below(self.peers.len() as u64) as usize)
            .find(|&i| !self.peers[i].group)
    }

    pub(crate) fn remember(&mut self, message_id: String, peer: usize) {
        if self.recent.len() == MAX_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent { message_id, peer });
    }

    /// A realtime `messages.upsert` in chat `peer` (not queued); returns it and its content.
    pub(crate) fn message(
        &mut self,
        peer: usize,
        from_me: bool,
        sender: Option<&str>,
    ) -> (Event, Value) {
        let message_id = self.new_message_id(from_me);
        let quoted = self.recent.back().map(|r| r.message_id.clone());
        let quoted_key = quoted
            .as_deref()
            .and_then(|q| q.split_once('_'))
            .map(|(_, k)| k);
        let p = self.peers[peer].clone();
        let Content {
            obj,
            message_type,
            text,
            media,
        } = content::content(&mut self.rng, &p.jid, quoted_key);
        let key_id = &message_id[self.agent_id.len() + 1..];
        let (to_phone, from_phone) = if from_me {
            (p.user.as_str(), self.phone.as_str())
        } else {
            (self.phone.as_str(), p.user.as_str())
        };
        let message_url = if media {
            format!(
                "https://db.daisi.dev/files/{}/{key_id}",
                self.agent_id.to_lowercase()
            )
        } else {
            String::new()
        };
        let message = Message {
            message_id: &message_id,
            chat_id: &self.chat_id(&p),
            jid: &p.jid,
            key: Key {
                remote_jid: &p.jid,
                from_me,
                id: key_id,
                participant: sender.map(|s| format!("{s}@s.whatsapp.net")),
            },
            message_obj: &obj,
            message_type: Value::from(message_type),
            message_text: text,
            message_url: Some(message_url),
            company_id: &self.company,
            agent_id: &self.agent_id,
            to_phone,
            from_phone,
            flow: if from_me { "OUT" } else { "IN" },
            message_timestamp: self.clock,
            status: if from_me { "1" } else { "0" },
            created_at: &self.created_at(),
            edited_message_obj: None,
        };
        let event = self.event(EventKind::MessageUpsert, &message);
        self.remember(message_id, peer);
        (event, obj)
    }

    /// A `chats.update` carrying the chat's latest message and an unread delta (not queued).
    pub(crate) fn chat_update(
        &self,
        peer: usize,
        last_message: Value,
        unread: i32,
        push_name: Option<&str>,
    ) -> Event {
        let p = &self.peers[peer];
        let update = ChatUpdate {
            chat_id: self.chat_id(p),
            company_id: &self.company,
            agent_id: &self.agent_id,
            last_message: Some(last_message),
            conversation_timestamp: Some(self.clock),
            push_name: Some(push_name.unwrap_or(p.push_name())),
            unread_count: unread,
        };
        self.event(EventKind::ChatUpdate, &update)
    }

    pub(crate) fn queue(&mut self, event: Event) {
        self.ready.push_back(event);
    }
}
