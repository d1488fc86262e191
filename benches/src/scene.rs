//! Realtime scenes: the few related events an agent publishes for one thing that happens on its
//! phone (a new chat, a reply and its receipts, a group message, a reconnect…).

use serde_json::Value;
use wa_shared::model::EventKind;

use crate::agent::Agent;
use crate::content::{self, NAMES};
use crate::producer::{Chat, ChatUpdate, Connection, Contact, MessageUpdate};

const VERSION: &str = "1.0.0 - v1.0.0";

impl Agent {
    /// One realtime scene, chosen at random; the first one connects the agent.
    pub fn realtime_scene(&mut self) {
        self.clock += self.rng.between(1, 20) as i64;
        if self.status.is_empty() {
            return self.connection();
        }
        match self.rng.below(100) {
            0..=9 => self.new_chat(),
            10..=37 => self.incoming(),
            38..=61 => self.outgoing(),
            62..=68 => self.read_chat(),
            69..=78 => self.group_message(),
            79..=85 => self.contact(),
            86..=88 => self.connection(),
            89..=94 => self.edit_or_delete(),
            _ => self.mark_unread(),
        }
    }

    /// A new one-to-one chat: `chats.update` first (no jid, phone or is_group), then its
    /// message, and often the contact.
    fn new_chat(&mut self) {
        let peer = self.new_peer(false);
        self.peers[peer].unread = 1;
        let (message, obj) = self.message(peer, false, None);
        let update = self.chat_update(peer, obj, 1, None);
        self.queue(update);
        self.queue(message);
        if self.peers[peer].is_phone() && self.rng.chance(0.5) {
            self.contact_event(EventKind::ContactUpsert, peer, None);
        }
    }

    /// An incoming message in a known chat, then the chat's unread delta (sometimes merged).
    fn incoming(&mut self) {
        let Some(peer) = self.person() else {
            return self.new_chat();
        };
        let (message, obj) = self.message(peer, false, None);
        let delta = if self.rng.chance(0.1) {
            self.rng.between(2, 5) as i32
        } else {
            1
        };
        self.peers[peer].unread += delta;
        let update = self.chat_update(peer, obj, delta, None);
        self.queue(message);
        self.queue(update);
    }

    /// A reply: the message (status 1), the chat reset to 0 unread, then receipts 2, 3 and
    /// usually 4, a few events later.
    fn outgoing(&mut self) {
        let Some(peer) = self.person() else {
            return self.new_chat();
        };
        let (message, obj) = self.message(peer, true, None);
        let message_id = self.recent.back().expect("just sent").message_id.clone();
        self.peers[peer].unread = 0;
        let own = self.peers[peer].user.clone();
        let update = self.chat_update(peer, obj, 0, Some(&own));
        self.queue(message);
        self.queue(update);
        let mut delay = 0;
        for status in ["2", "3", "4"] {
            if status == "4" && self.rng.chance(0.3) {
                break;
            }
            delay += self.rng.between(1, 12);
            let receipt = MessageUpdate {
                message_id: &message_id,
                company_id: &self.company,
                status: Some(status),
                edited_message_obj: None,
                is_deleted: None,
            };
            let event = self.event(EventKind::MessageUpdate, &receipt);
            self.schedule(delay, event);
        }
    }

    /// The agent reads a chat: the four-key `chats.update`.
    fn read_chat(&mut self) {
        let Some(peer) = self.person() else {
            return self.new_chat();
        };
        self.peers[peer].unread = 0;
        self.four_keys(peer, None, None, 0);
    }

    /// "Mark unread": `unread_count: -1`, `last_message: null`, timestamp unknown.
    fn mark_unread(&mut self) {
        let Some(peer) = self.person() else {
            return self.new_chat();
        };
        self.peers[peer].unread = self.peers[peer].unread.max(1);
        let phone = self.peers[peer].user.clone();
        self.four_keys(peer, Some(Value::Null), Some((0, &phone)), -1);
    }

    fn four_keys(
        &mut self,
        peer: usize,
        last_message: Option<Value>,
        ts_name: Option<(i64, &str)>,
        unread: i32,
    ) {
        let update = ChatUpdate {
            chat_id: self.chat_id(&self.peers[peer]),
            company_id: &self.company,
            agent_id: &self.agent_id,
            last_message,
            conversation_timestamp: ts_name.map(|(ts, _)| ts),
            push_name: ts_name.map(|(_, name)| name),
            unread_count: unread,
        };
        let event = self.event(EventKind::ChatUpdate, &update);
        self.queue(event);
    }

    /// A message in a group (sometimes a new group, announced by `chats.upsert`); group
    /// messages get no receipts, and the chat's push name is the sender's.
    fn group_message(&mut self) {
        let known: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].group)
            .take(8)
            .collect();
        let peer = if known.is_empty() || self.rng.chance(0.15) {
            let peer = self.new_peer(true);
            let p = &self.peers[peer];
            let chat = Chat {
                chat_id: self.chat_id(p),
                jid: p.jid.clone(),
                phone_number: &p.user,
                company_id: &self.company,
                agent_id: &self.agent_id,
                unread_count: Some(0),
                not_spam: None,
                is_group: true,
                conversation_timestamp: self.clock,
                last_message: None,
                group_name: p.name,
                push_name: p.push_name(),
            };
            let event = self.event(EventKind::ChatUpsert, &chat);
            self.queue(event);
            peer
        } else {
            known[self.rng.below(known.len() as u64) as usize]
        };
        let sender = format!("628{}", self.rng.digits(10));
        let (message, obj) = self.message(peer, false, Some(&sender));
        let name = *self.rng.pick(&NAMES);
        let update = self.chat_update(peer, obj, 1, Some(name));
        self.queue(message);
        self.queue(update);
    }

    /// A contact saved or renamed on the phone.
    fn contact(&mut self) {
        let Some(peer) = self.person() else {
            return self.new_chat();
        };
        if !self.peers[peer].is_phone() {
            return self.incoming();
        }
        let (kind, name) = if self.rng.chance(0.6) {
            (EventKind::ContactUpdate, Some(*self.rng.pick(&NAMES)))
        } else {
            (EventKind::ContactUpsert, None)
        };
        self.contact_event(kind, peer, name);
    }

    pub(crate) fn contact_event(&mut self, kind: EventKind, peer: usize, name: Option<&str>) {
        let p = &self.peers[peer];
        let contact = Contact {
            chat_id: self.chat_id(p),
            company_id: &self.company,
            agent_id: &self.agent_id,
            phone_number: &p.user,
            push_name: name.unwrap_or(p.push_name()),
        };
        let event = self.event(kind, &contact);
        self.queue(event);
    }

    /// An edit (`edited_message_obj: {"message": …}`) or, rarely, a delete of a recent message.
    fn edit_or_delete(&mut self) {
        let Some(recent) = self.recent.back().cloned() else {
            return self.outgoing();
        };
        let delete = self.rng.chance(0.2);
        let patch = MessageUpdate {
            message_id: &recent.message_id,
            company_id: &self.company,
            status: None,
            edited_message_obj: (!delete).then(|| content::edit(&mut self.rng)),
            is_deleted: delete.then_some(true),
        };
        let event = self.event(EventKind::MessageUpdate, &patch);
        self.queue(event);
    }

    /// The next connection change: connect (with QR codes after a logout), drop, reconnect.
    fn connection(&mut self) {
        let steps: &[&'static str] = match self.status {
            "" => &["CONNECTING", "READY"],
            "READY" if self.rng.chance(0.1) => &["LOGOUT", "CONNECTING", "QR", "QR", "READY"],
            "READY" => &["CLOSE", "CONNECTING", "READY"],
            _ => &["READY"],
        };
        for (i, &status) in steps.iter().enumerate() {
            let qr_code = (status == "QR").then(|| {
                let r = &mut self.rng;
                format!(
                    "2@{},{},{},{}=",
                    r.base64(60),
                    r.base64(44),
                    r.base64(44),
                    r.base64(24)
                )
            });
            let update = Connection {
                status,
                version: VERSION,
                host_name: &self.host_name,
                company_id: &self.company,
                agent_id: &self.agent_id,
                qr_code,
            };
            let event = self.event(EventKind::ConnectionUpdate, &update);
            if i == 0 {
                self.queue(event);
            } else {
                self.schedule(3 * i as u64, event);
            }
        }
        self.status = steps[steps.len() - 1];
    }
}
