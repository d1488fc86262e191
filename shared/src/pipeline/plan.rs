//! Turns a tenant's decoded events into rounds of set-based writes.
//!
//! A row touched by several events of one batch is written once per round, in stream order:
//! the n-th event for a row goes to round n. Rows in one round are distinct, so each bulk
//! statement touches a row at most once, and per-key order is the stream's.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;

use crate::model::{
    AgentPayload, ChatPayload, ContactPayload, HistoryItem, MessagePatch, MessagePayload, Payload,
};
use crate::store::agents::AgentRows;
use crate::store::chats::{ChatEnsureRows, ChatRows};
use crate::store::contacts::ContactRows;
use crate::store::messages::{MessagePatchRows, MessageRows};

use super::inbound::DeadLetter;

/// An event of one tenant that passed validation.
pub struct Decoded {
    /// Position in the batch handed to the core.
    pub idx: usize,
    pub published_at: DateTime<Utc>,
    pub payload: Payload,
    /// `last_metadata` of every row this event writes (JSON text).
    pub meta: String,
}

impl Decoded {
    /// The history items that failed validation.
    pub fn invalid_items(&self) -> Vec<DeadLetter> {
        match &self.payload {
            Payload::History(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
                .map(|(i, e)| DeadLetter {
                    error_type: e.error_type,
                    error: e.message.clone(),
                    item_index: Some(i),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Dates that new message rows of this event would get.
    pub fn message_dates(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.units().filter_map(move |(_, u)| match u {
            Unit::Message(m) => Some(message_date(m, self.published_at)),
            _ => None,
        })
    }

    /// The writes of this event, with the history item index where there is one.
    pub fn units(&self) -> Box<dyn Iterator<Item = (Option<usize>, Unit<'_>)> + Send + '_> {
        match &self.payload {
            Payload::Chat { chat, delta } => {
                Box::new(std::iter::once((None, Unit::Chat(chat, *delta))))
            }
            Payload::Message(m) => Box::new(std::iter::once((None, Unit::Message(m)))),
            Payload::MessagePatch(p) => Box::new(std::iter::once((None, Unit::Patch(p)))),
            Payload::Contact(c) => Box::new(std::iter::once((None, Unit::Contact(c)))),
            Payload::Agent(a) => Box::new(std::iter::once((None, Unit::Agent(a)))),
            Payload::History(items) => {
                Box::new(items.iter().enumerate().filter_map(|(i, item)| {
                    let unit = match item.as_ref().ok()? {
                        HistoryItem::Chat(c) => Unit::Chat(c, false),
                        HistoryItem::Message(m) => Unit::Message(m),
                        HistoryItem::Contact(c) => Unit::Contact(c),
                    };
                    Some((Some(i), unit))
                }))
            }
        }
    }
}

/// The UTC date a new message row is filed under: its own timestamp's, else its publish time's.
pub fn message_date(m: &MessagePayload, published_at: DateTime<Utc>) -> NaiveDate {
    m.message_timestamp
        .and_then(|ts| DateTime::from_timestamp(ts, 0))
        .unwrap_or(published_at)
        .date_naive()
}

/// One write of an event.
#[derive(Clone, Copy)]
pub enum Unit<'a> {
    Chat(&'a ChatPayload, bool),
    Message(&'a MessagePayload),
    Patch(&'a MessagePatch),
    Contact(&'a ContactPayload),
    Agent(&'a AgentPayload),
}

#[derive(PartialEq, Eq, Hash)]
enum RowKey<'a> {
    Chat(&'a str),
    Message(&'a str),
    Contact(&'a str, &'a str),
    Agent(&'a str),
}

impl<'a> Unit<'a> {
    fn key(&self) -> RowKey<'a> {
        match *self {
            Unit::Chat(c, _) => RowKey::Chat(&c.chat_id),
            Unit::Message(m) => RowKey::Message(&m.message_id),
            Unit::Patch(p) => RowKey::Message(&p.message_id),
            Unit::Contact(c) => RowKey::Contact(&c.agent_id, &c.phone_number),
            Unit::Agent(a) => RowKey::Agent(&a.agent_id),
        }
    }
}

#[derive(Default)]
struct Round<'a> {
    chats: ChatRows<'a>,
    messages: MessageRows<'a>,
    patches: MessagePatchRows<'a>,
    /// (message_id, event idx) of each patch, to find the ones whose message is missing.
    patch_events: Vec<(&'a str, usize)>,
    contacts: ContactRows<'a>,
    agents: AgentRows<'a>,
}

/// The writes of a run of events, grouped into rounds.
pub struct Plan<'a> {
    rounds: Vec<Round<'a>>,
    ensure: ChatEnsureRows<'a>,
}

impl<'a> Plan<'a> {
    /// Plans the writes of `units` (each with its event), given in stream order.
    pub fn new(units: impl IntoIterator<Item = (&'a Decoded, Unit<'a>)>) -> Self {
        let mut next_round: HashMap<RowKey<'a>, usize> = HashMap::new();
        let mut rounds: Vec<Round<'a>> = Vec::new();
        let mut ensure = ChatEnsureRows::default();
        for (event, unit) in units {
            let slot = next_round.entry(unit.key()).or_insert(0);
            let r = *slot;
            *slot += 1;
            if rounds.len() <= r {
                rounds.resize_with(r + 1, Round::default);
            }
            let round = &mut rounds[r];
            let meta = event.meta.as_str();
            match unit {
                Unit::Chat(c, delta) => round.chats.push(c, delta, meta),
                Unit::Message(m) => {
                    round
                        .messages
                        .push(m, message_date(m, event.published_at), meta);
                    ensure.push(&m.chat_id, m.jid.as_deref(), m.agent_id.as_deref(), meta);
                }
                Unit::Patch(p) => {
                    round.patches.push(p, meta);
                    round.patch_events.push((&p.message_id, event.idx));
                }
                Unit::Contact(c) => round.contacts.push(c, meta),
                Unit::Agent(a) => round.agents.push(a, event.published_at, meta),
            }
        }
        Plan { rounds, ensure }
    }

    /// Executes the plan; returns the batch positions of patches whose message was not found.
    pub async fn execute(
        &self,
        conn: &mut PgConnection,
        company: &str,
    ) -> Result<Vec<usize>, sqlx::Error> {
        let mut not_found = Vec::new();
        for (r, round) in self.rounds.iter().enumerate() {
            round.chats.write(conn, company).await?;
            if r == 0 {
                // Only fills what is missing, so once per batch is enough.
                self.ensure.write(conn, company).await?;
            }
            round.messages.write(conn, company).await?;
            if !round.patches.is_empty() {
                let found = round.patches.write(conn).await?;
                not_found.extend(
                    round
                        .patch_events
                        .iter()
                        .filter(|(id, _)| !found.contains(*id))
                        .map(|&(_, idx)| idx),
                );
            }
            round.contacts.write(conn, company).await?;
            round.agents.write(conn, company).await?;
        }
        Ok(not_found)
    }
}
