//! Turns a tenant's decoded events into rounds of set-based writes.
//!
//! A round runs one bulk statement per kind of write, always in the same order (chats,
//! messages, message patches, contacts, agents). A row's writes are placed in stream order:
//! each in the round of the row's previous write if its statement comes later in a round,
//! otherwise in the next round. So each statement touches a row at most once, and per-row
//! order is the stream's. Runs of writes that compose (receipts of one message, unread deltas
//! of one chat) are folded into one row first.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use crate::model::{
    AgentPayload, ChatPayload, ContactPayload, HistoryItem, MessagePatch, MessagePayload, Payload,
};
use crate::store::agents::AgentRows;
use crate::store::chat_ensure::ChatEnsureRows;
use crate::store::chats::{ChatRows, UnreadCount};
use crate::store::contacts::ContactRows;
use crate::store::messages::{MessagePatchRows, MessageRows};
use crate::store::script::Statement;

use super::inbound::DeadLetter;

/// An event of one tenant that passed validation.
pub struct Decoded<'a> {
    /// Position in the batch handed to the core.
    pub idx: usize,
    pub published_at: DateTime<Utc>,
    pub payload: Payload<'a>,
    /// `last_metadata` of every row this event writes (JSON text).
    pub meta: String,
}

impl<'a> Decoded<'a> {
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
            Payload::Chat { chat, unread } => {
                Box::new(std::iter::once((None, Unit::Chat(chat, *unread))))
            }
            Payload::Message(m) => Box::new(std::iter::once((None, Unit::Message(m)))),
            Payload::MessagePatch(p) => Box::new(std::iter::once((None, Unit::Patch(p)))),
            Payload::Contact(c) => Box::new(std::iter::once((None, Unit::Contact(c)))),
            Payload::Agent(a) => Box::new(std::iter::once((None, Unit::Agent(a)))),
            Payload::History(items) => {
                Box::new(items.iter().enumerate().filter_map(|(i, item)| {
                    let unit = match item.as_ref().ok()? {
                        HistoryItem::Chat(c) => Unit::Chat(c, UnreadCount::Absolute),
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
pub fn message_date(m: &MessagePayload<'_>, published_at: DateTime<Utc>) -> NaiveDate {
    m.message_timestamp
        .and_then(|ts| DateTime::from_timestamp(ts, 0))
        .unwrap_or(published_at)
        .date_naive()
}

/// One write of an event.
#[derive(Clone, Copy)]
pub enum Unit<'a> {
    Chat(&'a ChatPayload<'a>, UnreadCount),
    Message(&'a MessagePayload<'a>),
    Patch(&'a MessagePatch<'a>),
    Contact(&'a ContactPayload<'a>),
    Agent(&'a AgentPayload<'a>),
}

#[derive(PartialEq, Eq, Hash)]
enum RowKey<'a> {
    Chat(&'a str),
    Message(&'a str),
    Contact(&'a str, &'a str),
    Agent(&'a str),
}

impl<'a> Unit<'a> {
    /// The position of this unit's statement among those of a round (see [`Plan::execute`]).
    fn stage(&self) -> u8 {
        match self {
            Unit::Chat(..) => 0,
            Unit::Message(_) => 1,
            Unit::Patch(_) => 2,
            Unit::Contact(_) => 3,
            Unit::Agent(_) => 4,
        }
    }

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

/// Where the writes of one row stand while a plan is built.
#[derive(Default)]
struct KeyState {
    /// The round and stage of the row's latest write.
    at: Option<(usize, u8)>,
    /// The row's latest write, when later ones may fold into it: (round, row in the round).
    last: Option<Last>,
}

#[derive(Clone, Copy)]
enum Last {
    Patch(usize, usize),
    Delta(usize, usize),
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
    ///
    /// Runs of `messages.update` patches to one message, and of `chats.update` deltas to one
    /// chat, are folded into one row where that gives the same result as applying them in
    /// turn (see [`MessagePatchRows::fold`] and [`ChatRows::fold`]), so that a hot chat or a
    /// message with its receipts costs one round, not one per event.
    pub fn new<'b: 'a>(units: impl IntoIterator<Item = (&'a Decoded<'b>, Unit<'a>)>) -> Self {
        let mut rows: HashMap<RowKey<'a>, KeyState> = HashMap::new();
        let mut rounds: Vec<Round<'a>> = Vec::new();
        let mut ensure = ChatEnsureRows::default();
        for (event, unit) in units {
            let meta = event.meta.as_str();
            let state = rows.entry(unit.key()).or_default();
            match (unit, state.last) {
                (Unit::Patch(p), Some(Last::Patch(r, row))) => {
                    rounds[r].patches.fold(row, p, meta);
                    rounds[r].patch_events.push((&p.message_id, event.idx));
                    continue;
                }
                (Unit::Chat(c, UnreadCount::Delta), Some(Last::Delta(r, row)))
                    if rounds[r].chats.can_fold(row, c) =>
                {
                    rounds[r].chats.fold(row, c, meta);
                    continue;
                }
                _ => {}
            }
            // A round runs its statements in `Unit::stage` order, so a write whose statement
            // comes later than the row's previous write can share that write's round.
            let stage = unit.stage();
            let r = match state.at {
                None => 0,
                Some((r, previous)) if stage > previous => r,
                Some((r, _)) => r + 1,
            };
            state.at = Some((r, stage));
            if rounds.len() <= r {
                rounds.resize_with(r + 1, Round::default);
            }
            let round = &mut rounds[r];
            state.last = None;
            match unit {
                Unit::Chat(c, unread) => {
                    if unread == UnreadCount::Delta {
                        state.last = Some(Last::Delta(r, round.chats.len()));
                    }
                    round.chats.push(c, unread, meta)
                }
                Unit::Message(m) => {
                    round
                        .messages
                        .push(m, message_date(m, event.published_at), meta);
                    ensure.push(&m.chat_id, m.jid.as_deref(), m.agent_id.as_deref(), meta);
                }
                Unit::Patch(p) => {
                    state.last = Some(Last::Patch(r, round.patches.len()));
                    round.patches.push(p, meta);
                    round.patch_events.push((&p.message_id, event.idx));
                }
                Unit::Contact(c) => round.contacts.push(c, meta),
                Unit::Agent(a) => round.agents.push(a, event.published_at, meta),
            }
        }
        Plan { rounds, ensure }
    }

    /// Rounds of statements the plan runs.
    pub fn rounds(&self) -> usize {
        self.rounds.len()
    }

    /// The plan's statements, in the order they run: each round's chats, (after the first
    /// round's chats) the chats its messages need, messages, message patches, contacts, agents.
    pub fn statements<'s>(&'s self, company: &'s str) -> Vec<PlanStatement<'s>> {
        let mut out = Vec::new();
        let mut add = |statement: Option<Statement<'s>>, patches: Option<usize>| {
            if let Some(statement) = statement {
                out.push(PlanStatement { statement, patches });
            }
        };
        for (r, round) in self.rounds.iter().enumerate() {
            add(round.chats.statement(company), None);
            if r == 0 {
                // Only fills what is missing, so once per batch is enough.
                add(self.ensure.statement(company), None);
            }
            add(round.messages.statement(company), None);
            add(round.patches.statement(), Some(r));
            add(round.contacts.statement(company), None);
            add(round.agents.statement(company), None);
        }
        out
    }

    /// The batch positions of the patches of round `round` whose message was not found, given
    /// the ids of the messages its patch statement found.
    pub fn not_found<'s>(
        &'s self,
        round: usize,
        found: &'s HashSet<String>,
    ) -> impl Iterator<Item = usize> + 's {
        self.rounds[round]
            .patch_events
            .iter()
            .filter(|(id, _)| !found.contains(*id))
            .map(|&(_, idx)| idx)
    }
}

/// A statement of a [`Plan`].
pub struct PlanStatement<'s> {
    pub statement: Statement<'s>,
    /// For a patch statement, its round (see [`Plan::not_found`]).
    pub patches: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{decode, Subject};

    fn decoded<'a>(events: &[(&str, &'a str)]) -> Vec<Decoded<'a>> {
        events
            .iter()
            .enumerate()
            .map(|(idx, (base, body))| {
                let subject = Subject::parse(&format!("{base}.CMP")).expect("subject");
                Decoded {
                    idx,
                    published_at: DateTime::from_timestamp(1_718_400_000, 0).expect("time"),
                    payload: decode(&subject, body.as_bytes(), 1 << 20).expect("payload"),
                    meta: format!("{{\"idx\":{idx}}}"),
                }
            })
            .collect()
    }

    fn rounds(events: &[(&str, &str)]) -> usize {
        let decoded = decoded(events);
        Plan::new(
            decoded
                .iter()
                .flat_map(|d| d.units().map(move |(_, u)| (d, u))),
        )
        .rounds()
    }

    const MESSAGE: (&str, &str) = (
        "v1.messages.upsert",
        r#"{"message_id":"m1","chat_id":"A_1","flow":"OUT","status":"1"}"#,
    );

    fn receipt(status: &str) -> (&'static str, String) {
        (
            "v1.messages.update",
            format!(r#"{{"message_id":"m1","status":"{status}"}}"#),
        )
    }

    #[test]
    fn a_message_its_receipts_and_a_hot_chat_take_one_round() {
        let r2 = receipt("2");
        let r3 = receipt("3");
        let events = [
            MESSAGE,
            (r2.0, r2.1.as_str()),
            (r3.0, r3.1.as_str()),
            ("v1.chats.update", r#"{"chat_id":"A_1","unread_count":1}"#),
            (
                "v1.chats.update",
                r#"{"chat_id":"A_1","unread_count":0,"push_name":"Ana"}"#,
            ),
            ("v1.chats.update", r#"{"chat_id":"A_1","unread_count":-1}"#),
        ];
        assert_eq!(rounds(&events), 1);
    }

    #[test]
    fn writes_that_do_not_compose_take_another_round() {
        let r2 = receipt("2");
        // A receipt before its message: the message's upsert runs before patches in a round.
        assert_eq!(rounds(&[(r2.0, r2.1.as_str()), MESSAGE]), 2);
        // A name judged against a phone number an earlier update of the batch changes.
        let phone_then_name = [
            (
                "v1.chats.update",
                r#"{"chat_id":"A_1","phone_number":"551100"}"#,
            ),
            ("v1.chats.update", r#"{"chat_id":"A_1","push_name":"Ana"}"#),
        ];
        assert_eq!(rounds(&phone_then_name), 2);
        // Upserts are absolute: they never fold.
        let upserts = [
            ("v1.chats.upsert", r#"{"chat_id":"A_1","unread_count":1}"#),
            ("v1.chats.update", r#"{"chat_id":"A_1","unread_count":1}"#),
        ];
        assert_eq!(rounds(&upserts), 2);
    }
}
