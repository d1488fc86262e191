//! Property: hostile bodies among producer-shaped events are isolated (SPEC §2, §4, §6, §7).
//!
//! A case takes 10–40 events from the producer fixtures (every [`EventKind`], realtime and
//! history), mutates some of them — bit flips, truncation, 12 KB and 300 KB strings, JSON nested
//! 200 and 20,000 deep, NUL and lone surrogates in strings and inside `message_obj`, extreme
//! numbers, wrong types, duplicate keys, dates in December 9999, year 10000 and before 1970, a
//! body over `MAX_PAYLOAD_BYTES` — and runs them through the core in batches against real
//! Postgres. Then:
//!
//! * every untouched event is acknowledged (`Ack`: never `Retry` because of a neighbour), and
//!   its rows are exactly those of a control tenant that received only the untouched events,
//!   in the same stream order and the same batches;
//! * every mutated event is applied (`Ack` / `AckWithDeadItems`) or dead-lettered with an error
//!   type from the closed list `malformed`, `too_large`, `validation`, `tenant`,
//!   `database_permanent` (never `retry_exhausted` or `internal`), a body over the limit always
//!   as `too_large`; the only `Retry` accepted is the documented message-not-found-yet of a
//!   `messages.update` whose (mutated) `message_id` names no message;
//! * a history batch with mutated *items* keeps its good items: it is acknowledged, only
//!   mutated items may be dead (by index, closed-list types), and its untouched items are in
//!   the control tenant's batch, so they must land as they do there;
//! * nothing panics (a panic in the core comes back as `Retry` for the whole batch and is
//!   caught by the rules above) and nothing stalls: each batch runs under
//!   `tokio::time::timeout`, and the whole case runs on a thread of its own under a watchdog,
//!   so that a synchronous stall (which no tokio timer can interrupt) fails the test too.
//!
//! **Mutated events touch rows of their own.** Before it is mutated, every key of a mutated
//! event (or history item) is rewritten to a value minted for this case: `chat_id`, `jid`,
//! `phone_number` (chats and contacts), `message_id` and `chat_id` (messages), `agent_id`
//! (agents). The minted values have lengths no fixture id has, so no bit flip can turn one
//! into an untouched event's key (and a truncated body is never JSON). A mutated event may
//! therefore legitimately be applied without ever writing a row an untouched event writes, and
//! "applied exactly as alone" stays well defined: the test tenant's rows with the keys of the
//! control tenant's rows must equal the control's [`snapshot`] (which leaves out ids,
//! timestamps and `last_metadata`; `company_id`, which names the tenant, is left out too). The
//! rows left out are those of mutated events. The alternative, letting mutated events keep
//! their ids and comparing only the columns they cannot reach, would depend on which mutation
//! lands where.
//!
//! Where mutations land: a text mutation on a text field of the payload, a JSON one on the
//! kind's JSON fields (`message_obj`, `key`, `edited_message_obj`, `last_message`), a number
//! or date on its timestamps and counts (added when the line lacks them); in a history batch
//! mutated whole, wrong types and duplicate keys hit the wrapper and the other mutations an
//! item; bit flips and truncation hit the rendered body.
//!
//! A mutated `messages.update` is preceded by an ordinary upsert of its minted message (a
//! helper event, which must be acknowledged), so that it can be applied rather than wait for
//! its message. Untouched `messages.update`s whose message no earlier untouched event creates
//! are left out of the workload, so that no untouched event legitimately waits.
//!
//! Run size: `HOSTILE_CASES` cases (default 16, about 10 s, part of `just test`); a long run is
//! `HOSTILE_CASES=500 cargo test -p wa-integration-tests --test hostile` (a few minutes). A
//! failure lists every broken rule with the events involved: their mutations and (the start
//! of) their bodies; proptest then prints the minimal case.
//!
//! The fixed examples at the end are the hostile inputs SPEC §6 names, each in the middle of a
//! batch of ordinary fixtures, whose rows must be those of a control tenant without it: a 12
//! KiB jid, `message_obj` nested 20,000 deep, a NUL in `message_text`, a lone surrogate in
//! `message_obj`, dates in year 10000 and before 1970 (each refused as `validation`, SPEC §6's
//! boundary checks), the same nesting and surrogate in one item of a history batch (that item
//! dead as `validation`, the others applied), a message of December 9999 (inside the accepted
//! range: stored, dated 9999-12-31) and a +5 unread delta on a chat at `i32::MAX` (applied
//! within range, or dead-lettered with a closed-list type; its neighbours applied). They run
//! under the same watchdog as the property (plain `#[test]`s on a runtime of their own, since
//! `#[tokio::test]` could not report a synchronous stall).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use sqlx::PgPool;
use wa_integration_tests::*;
use wa_shared::model::{ErrorType, EventKind};
use wa_shared::pipeline::{InboundEvent, Outcome, Processor};

/// The longest a batch may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a case may go without progress (longer than [`BATCH_TIMEOUT`], so that an
/// asynchronous stall is reported by the timeout and a synchronous one by the watchdog).
const STALL: Duration = Duration::from_secs(90);
/// `MAX_PAYLOAD_BYTES`' default, the limit of the processor the tests use.
const MAX_PAYLOAD: usize = 1024 * 1024;

/// The error types a mutated event may be dead-lettered with.
const CLOSED: [ErrorType; 5] = [
    ErrorType::Malformed,
    ErrorType::TooLarge,
    ErrorType::Validation,
    ErrorType::Tenant,
    ErrorType::DatabasePermanent,
];

// ---------------------------------------------------------------------------------------------
// Mutations

/// One mutation of an event body (or of one history item).
#[derive(Debug, Clone)]
enum Mutation {
    /// Flips bit `.1` of the byte at each position (of the rendered body).
    BitFlips(Vec<(Index, u8)>),
    /// Cut the rendered body at a position.
    Truncate(Index),
    /// A string of `bytes` bytes in a text field (an id, a phone, `message_text`…).
    Huge { field: Index, bytes: usize },
    /// JSON nested `depth` levels (objects or arrays) in a JSON field.
    Deep {
        field: Index,
        depth: usize,
        arrays: bool,
    },
    /// A NUL (`\u0000`) in a string field, or inside a JSON field.
    Nul { field: Index, inside_json: bool },
    /// A lone surrogate escape in a string field, or inside a JSON field.
    Surrogate {
        field: Index,
        inside_json: bool,
        which: Index,
    },
    /// An extreme number in a number field, or inside a JSON field.
    Extreme {
        field: Index,
        inside_json: bool,
        value: Index,
    },
    /// A field's value replaced by one of another JSON type.
    WrongType { field: Index, to: Index },
    /// A field repeated with another value, before or after the original.
    DuplicateKey { field: Index, first: bool },
    /// A timestamp in December 9999, in year 10000 or before 1970.
    Date { field: Index, value: Index },
    /// A body just over `MAX_PAYLOAD_BYTES`.
    Oversize,
}

impl Mutation {
    fn on_bytes(&self) -> bool {
        matches!(self, Mutation::BitFlips(_) | Mutation::Truncate(_))
    }

    /// Whether it changes a body's shape (which fields, of which types) rather than values.
    fn on_shape(&self) -> bool {
        matches!(
            self,
            Mutation::WrongType { .. } | Mutation::DuplicateKey { .. } | Mutation::Oversize
        )
    }

    /// The index choosing the field it works on.
    fn field(&self) -> Option<&Index> {
        match self {
            Mutation::Huge { field, .. }
            | Mutation::Deep { field, .. }
            | Mutation::Nul { field, .. }
            | Mutation::Surrogate { field, .. }
            | Mutation::Extreme { field, .. }
            | Mutation::WrongType { field, .. }
            | Mutation::DuplicateKey { field, .. }
            | Mutation::Date { field, .. } => Some(field),
            Mutation::BitFlips(_) | Mutation::Truncate(_) | Mutation::Oversize => None,
        }
    }
}

const TEXT_FIELDS: [&str; 15] = [
    "chat_id",
    "message_id",
    "jid",
    "phone_number",
    "from_phone",
    "to_phone",
    "agent_id",
    "push_name",
    "group_name",
    "message_text",
    "message_url",
    "status",
    "host_name",
    "qr_code",
    "company_id",
];
/// The JSON fields of a kind's payloads (history kinds: of their items).
fn json_fields(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::ChatUpsert | EventKind::ChatUpdate | EventKind::HistoryChats => {
            &["last_message"]
        }
        EventKind::MessageUpsert | EventKind::HistoryMessages => {
            &["message_obj", "key", "edited_message_obj"]
        }
        EventKind::MessageUpdate => &["edited_message_obj"],
        _ => &[],
    }
}

/// The number fields of a kind's payloads (history kinds: of their items).
fn number_fields(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::ChatUpsert | EventKind::ChatUpdate | EventKind::HistoryChats => {
            &["unread_count", "conversation_timestamp"]
        }
        _ => date_fields(kind),
    }
}

/// The timestamp fields of a kind's payloads (history kinds: of their items).
fn date_fields(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::ChatUpsert | EventKind::ChatUpdate | EventKind::HistoryChats => {
            &["conversation_timestamp"]
        }
        EventKind::MessageUpsert | EventKind::HistoryMessages => &["message_timestamp"],
        EventKind::ContactUpsert | EventKind::ContactUpdate | EventKind::HistoryContacts => {
            &["first_message_timestamp"]
        }
        _ => &[],
    }
}

const EXTREMES: [&str; 10] = [
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "2147483647",
    "2147483648",
    "-1",
    "1e308",
    "-1e308",
    "1e999999",
    "0.5",
];
/// Milliseconds (a timestamp over 10^11 is milliseconds, SPEC §2) in December 9999, in year
/// 10000, and seconds or milliseconds before 1970.
const DATES: [&str; 7] = [
    "253402257600000",
    "253402300799000",
    "253402300800000",
    "253402387200000",
    "-1",
    "-86400",
    "-62135596800000",
];
const SURROGATES: [&str; 4] = ["\\ud800", "\\udc00", "\\udfff\\ud800", "\\udbff"];
const OTHER_TYPES: [&str; 9] = [
    "\"hx\"",
    "42",
    "-3.5",
    "{}",
    "[]",
    "null",
    "true",
    "[\"a\",1]",
    "{\"a\":[]}",
];

fn structured(in_item: bool) -> BoxedStrategy<Mutation> {
    let field = any::<Index>();
    let huge = (
        field.clone(),
        prop_oneof![Just(12 * 1024), Just(300 * 1024)],
    )
        .prop_map(|(field, bytes)| Mutation::Huge { field, bytes });
    let deep = (
        field.clone(),
        prop_oneof![Just(200usize), Just(20_000usize)],
        any::<bool>(),
    )
        .prop_map(|(field, depth, arrays)| Mutation::Deep {
            field,
            depth,
            arrays,
        });
    let nul = (field.clone(), any::<bool>())
        .prop_map(|(field, inside_json)| Mutation::Nul { field, inside_json });
    let surrogate =
        (field.clone(), any::<bool>(), any::<Index>()).prop_map(|(field, inside_json, which)| {
            Mutation::Surrogate {
                field,
                inside_json,
                which,
            }
        });
    let extreme =
        (field.clone(), any::<bool>(), any::<Index>()).prop_map(|(field, inside_json, value)| {
            Mutation::Extreme {
                field,
                inside_json,
                value,
            }
        });
    let wrong =
        (field.clone(), any::<Index>()).prop_map(|(field, to)| Mutation::WrongType { field, to });
    let dup = (field.clone(), any::<bool>())
        .prop_map(|(field, first)| Mutation::DuplicateKey { field, first });
    let date = (field, any::<Index>()).prop_map(|(field, value)| Mutation::Date { field, value });
    if in_item {
        prop_oneof![huge, deep, nul, surrogate, extreme, wrong, dup, date].boxed()
    } else {
        prop_oneof![
            3 => huge, 3 => deep, 3 => nul, 3 => surrogate, 3 => extreme, 3 => wrong,
            3 => dup, 3 => date, 1 => Just(Mutation::Oversize),
        ]
        .boxed()
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => proptest::collection::vec((any::<Index>(), 0..8u8), 1..=4).prop_map(Mutation::BitFlips),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        8 => structured(false),
    ]
}

/// What happens to one picked fixture event.
#[derive(Debug, Clone)]
enum Plan {
    Untouched,
    /// The whole event is mutated (its wrapper, for a history batch).
    Whole(Vec<Mutation>),
    /// Items of a history batch are mutated (other kinds: the whole event).
    Items(Vec<(Index, Vec<Mutation>)>),
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        6 => Just(Plan::Untouched),
        3 => proptest::collection::vec(mutation(), 1..=3).prop_map(Plan::Whole),
        2 => proptest::collection::vec(
            (any::<Index>(), proptest::collection::vec(structured(true), 1..=3)),
            1..=2,
        )
        .prop_map(Plan::Items),
    ]
}

/// A fixture event: its kind, which line of the kind's fixtures, and its plan.
#[derive(Debug, Clone)]
struct Pick {
    kind: usize,
    line: Index,
    plan: Plan,
}

fn pick() -> impl Strategy<Value = Pick> {
    (0..EventKind::ALL.len(), any::<Index>(), plan()).prop_map(|(kind, line, plan)| Pick {
        kind,
        line,
        plan,
    })
}

// ---------------------------------------------------------------------------------------------
// Bodies as text: a JSON object is a list of (key, raw value) pairs, so that a body can hold
// what no `serde_json::Value` can (duplicate keys, lone surrogates, 1e999999, 20,000 levels).

type Obj = Vec<(String, String)>;

/// The raw value standing for the items of a history batch, filled in by [`render`].
const ITEMS: &str = "\u{1}items";

fn object(line: &str) -> Obj {
    let map: serde_json::Map<String, Value> =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("fixture {line}: {e}"));
    map.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

fn render_into(out: &mut String, obj: &Obj, items: &[Obj]) {
    out.push('{');
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("key"));
        out.push(':');
        if v == ITEMS {
            out.push('[');
            for (j, item) in items.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                render_into(out, item, &[]);
            }
            out.push(']');
        } else {
            out.push_str(v);
        }
    }
    out.push('}');
}

fn render(obj: &Obj, items: &[Obj]) -> String {
    let mut out = String::new();
    render_into(&mut out, obj, items);
    out
}

/// A history batch taken apart: the wrapper (its item list replaced by [`ITEMS`]) and items.
fn history(line: &str, kind: EventKind) -> (Obj, Vec<Obj>) {
    let key = items_key(kind).expect("a history kind");
    let mut wrapper = object(line);
    let mut items = Vec::new();
    for (k, v) in wrapper.iter_mut() {
        if k == key {
            let list: Vec<serde_json::Map<String, Value>> =
                serde_json::from_str(v).expect("history items are objects");
            items = list
                .into_iter()
                .map(|m| m.into_iter().map(|(k, v)| (k, v.to_string())).collect())
                .collect();
            *v = ITEMS.to_owned();
        }
    }
    (wrapper, items)
}

fn items_key(kind: EventKind) -> Option<&'static str> {
    match kind {
        EventKind::HistoryChats => Some("chats"),
        EventKind::HistoryMessages => Some("messages"),
        EventKind::HistoryContacts => Some("contacts"),
        _ => None,
    }
}

fn get<'a>(obj: &'a Obj, key: &str) -> Option<&'a str> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn set(obj: &mut Obj, key: &str, raw: String) {
    match obj.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = raw,
        None => obj.push((key.to_owned(), raw)),
    }
}

fn string(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(raw).ok()
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// Values minted for the keys of mutated events: lengths no fixture id has (phones 12 digits,
/// message ids 15 characters, agent ids 9), so no mutation makes one collide with a fixture.
#[derive(Default)]
struct Minter {
    n: u32,
    /// Message ids minted since the last [`Minter::take_messages`].
    messages: Vec<String>,
}

impl Minter {
    fn digits(&mut self) -> String {
        self.n += 1;
        format!("99{:010}", self.n)
    }

    fn message_id(&mut self) -> String {
        self.n += 1;
        let id = format!("AGT001_HX{:06}", self.n);
        self.messages.push(id.clone());
        id
    }

    fn agent_id(&mut self) -> String {
        self.n += 1;
        format!("AGTHX{:04}", self.n % 10_000)
    }

    fn take_messages(&mut self) -> Vec<String> {
        std::mem::take(&mut self.messages)
    }

    /// A fresh value for key field `field` of a `kind` payload, if it is one.
    fn key(&mut self, kind: EventKind, field: &str, old: Option<&str>) -> Option<String> {
        let agent_prefix = |old: Option<&str>| {
            old.and_then(string)
                .and_then(|s| s.rsplit_once('_').map(|(a, _)| a.to_owned()))
                .unwrap_or_else(|| "AGT001".into())
        };
        let message = matches!(
            kind,
            EventKind::MessageUpsert | EventKind::MessageUpdate | EventKind::HistoryMessages
        );
        Some(match field {
            "message_id" if message => self.message_id(),
            "chat_id" => format!("{}_{}", agent_prefix(old), self.digits()),
            "jid" => {
                let domain = old
                    .and_then(string)
                    .and_then(|s| s.split_once('@').map(|(_, d)| d.to_owned()))
                    .unwrap_or_else(|| "s.whatsapp.net".into());
                format!("{}@{domain}", self.digits())
            }
            "phone_number" => self.digits(),
            "agent_id" if kind == EventKind::ConnectionUpdate => self.agent_id(),
            _ => return None,
        })
    }

    /// Rewrites every key of a payload (or history item) to minted values.
    fn rewrite(&mut self, kind: EventKind, obj: &mut Obj) {
        let digits = self.digits();
        let jid_domain = get(obj, "jid")
            .and_then(string)
            .and_then(|s| s.split_once('@').map(|(_, d)| d.to_owned()))
            .unwrap_or_else(|| "s.whatsapp.net".into());
        for (k, v) in obj.iter_mut() {
            let agent = string(v)
                .and_then(|s| s.rsplit_once('_').map(|(a, _)| a.to_owned()))
                .unwrap_or_else(|| "AGT001".into());
            let new = match (kind, k.as_str()) {
                (
                    EventKind::MessageUpsert
                    | EventKind::MessageUpdate
                    | EventKind::HistoryMessages,
                    "message_id",
                ) => self.message_id(),
                (EventKind::ConnectionUpdate, "agent_id") => self.agent_id(),
                (_, "chat_id") => format!("{agent}_{digits}"),
                (_, "jid") => format!("{digits}@{jid_domain}"),
                (
                    EventKind::ChatUpsert
                    | EventKind::ChatUpdate
                    | EventKind::HistoryChats
                    | EventKind::ContactUpsert
                    | EventKind::ContactUpdate
                    | EventKind::HistoryContacts,
                    "phone_number",
                ) => digits.clone(),
                _ => continue,
            };
            *v = quoted(&new);
        }
    }
}

/// Picks the field a mutation works on: one of `candidates` the object has; else, when
/// `add` is set, one of `candidates` (added: they are fields of the kind); else any field it has.
fn choose(obj: &Obj, at: &Index, candidates: &[&str], add: bool) -> String {
    let present: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| obj.iter().any(|(k, _)| k == c))
        .collect();
    if !present.is_empty() {
        return present[at.index(present.len())].to_owned();
    }
    if add && !candidates.is_empty() {
        return candidates[at.index(candidates.len())].to_owned();
    }
    obj[at.index(obj.len())].0.clone()
}

/// `inner` placed inside a JSON field's value: as a new member of its object, or as the value.
fn inside(raw: Option<&str>, inner: &str) -> String {
    match raw {
        Some(r) if r.starts_with('{') && r.len() > 2 => {
            format!("{{\"hx\":{{\"text\":{inner}}},{}", &r[1..])
        }
        _ => format!("{{\"conversation\":{inner}}}"),
    }
}

/// `escape` (JSON escape text) inserted into a string field's value, or the value replaced by a
/// string holding it.
fn escaped_into(raw: Option<&str>, escape: &str) -> String {
    match raw {
        Some(r) if r.starts_with('"') => format!("\"{escape}{}", &r[1..]),
        _ => format!("\"a{escape}b\""),
    }
}

fn kind_of(raw: &str) -> u8 {
    match raw.as_bytes().first() {
        Some(b'"') => 0,
        Some(b'{') => 1,
        Some(b'[') => 2,
        Some(b'n') => 3,
        Some(b't' | b'f') => 4,
        _ => 5,
    }
}

/// Applies a structured mutation to `obj`; returns what it did.
fn apply(kind: EventKind, obj: &mut Obj, m: &Mutation, mint: &mut Minter) -> String {
    match m {
        Mutation::Huge { field, bytes } => {
            let f = choose(obj, field, &TEXT_FIELDS, false);
            let prefix = get(obj, &f).and_then(string).unwrap_or_default();
            let filler = "x".repeat(bytes.saturating_sub(prefix.len()));
            set(obj, &f, quoted(&format!("{prefix}{filler}")));
            format!("{f}: a {bytes}-byte string")
        }
        Mutation::Deep {
            field,
            depth,
            arrays,
        } => {
            let f = choose(obj, field, json_fields(kind), true);
            let (open, close) = if *arrays {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            let mut raw = open.repeat(*depth);
            raw.push('1');
            raw.push_str(&close.repeat(*depth));
            set(obj, &f, raw);
            let shape = if *arrays { "arrays" } else { "objects" };
            format!("{f}: {shape} nested {depth} deep")
        }
        Mutation::Nul { field, inside_json } => {
            if *inside_json {
                let f = choose(obj, field, json_fields(kind), true);
                let raw = inside(get(obj, &f), "\"a\\u0000b\"");
                set(obj, &f, raw);
                format!("{f}: a NUL inside")
            } else {
                let f = choose(obj, field, &TEXT_FIELDS, false);
                let raw = escaped_into(get(obj, &f), "\\u0000");
                set(obj, &f, raw);
                format!("{f}: a NUL in the string")
            }
        }
        Mutation::Surrogate {
            field,
            inside_json,
            which,
        } => {
            let s = SURROGATES[which.index(SURROGATES.len())];
            if *inside_json {
                let f = choose(obj, field, json_fields(kind), true);
                let raw = inside(get(obj, &f), &format!("\"x{s}y\""));
                set(obj, &f, raw);
                format!("{f}: lone surrogate {s} inside")
            } else {
                let f = choose(obj, field, &TEXT_FIELDS, false);
                let raw = escaped_into(get(obj, &f), s);
                set(obj, &f, raw);
                format!("{f}: lone surrogate {s} in the string")
            }
        }
        Mutation::Extreme {
            field,
            inside_json,
            value,
        } => {
            let v = EXTREMES[value.index(EXTREMES.len())];
            if *inside_json {
                let f = choose(obj, field, json_fields(kind), true);
                let raw = inside(get(obj, &f), v);
                set(obj, &f, raw);
                format!("{f}: {v} inside")
            } else {
                let f = choose(obj, field, number_fields(kind), true);
                set(obj, &f, v.to_owned());
                format!("{f}: {v}")
            }
        }
        Mutation::WrongType { field, to } => {
            let f = choose(obj, field, &[], false);
            let old = get(obj, &f).map(kind_of).unwrap_or(9);
            let start = to.index(OTHER_TYPES.len());
            let new = (0..OTHER_TYPES.len())
                .map(|i| OTHER_TYPES[(start + i) % OTHER_TYPES.len()])
                .find(|t| kind_of(t) != old)
                .expect("another type");
            set(obj, &f, new.to_owned());
            format!("{f}: {new} (another type)")
        }
        Mutation::DuplicateKey { field, first } => {
            let f = choose(obj, field, &[], false);
            let old = get(obj, &f).map(str::to_owned);
            let value = match mint.key(kind, &f, old.as_deref()) {
                Some(id) => quoted(&id),
                None => match old.as_deref().map(kind_of) {
                    Some(0) => "\"dup\"".to_owned(),
                    Some(5) => "7".to_owned(),
                    Some(1) => "{\"dup\":true}".to_owned(),
                    _ => "null".to_owned(),
                },
            };
            let pos = obj.iter().position(|(k, _)| *k == f).unwrap_or(obj.len());
            let at = if *first {
                pos
            } else {
                (pos + 1).min(obj.len())
            };
            obj.insert(at, (f.clone(), value.clone()));
            let place = if *first { "before" } else { "after" };
            format!("{f}: duplicated as {value} {place} the original")
        }
        Mutation::Date { field, value } => {
            let f = choose(obj, field, date_fields(kind), true);
            let v = DATES[value.index(DATES.len())];
            set(obj, &f, v.to_owned());
            format!("{f}: {v}")
        }
        Mutation::Oversize => {
            set(obj, "hx_padding", quoted(&"p".repeat(MAX_PAYLOAD)));
            format!("hx_padding: a {MAX_PAYLOAD}-byte string (body over the limit)")
        }
        Mutation::BitFlips(_) | Mutation::Truncate(_) => unreachable!("applied to bytes"),
    }
}

/// Applies a byte-level mutation to a rendered body; returns what it did.
fn apply_bytes(body: &mut Vec<u8>, m: &Mutation) -> String {
    match m {
        Mutation::BitFlips(flips) => {
            let mut done = Vec::new();
            for (at, bit) in flips {
                if body.is_empty() {
                    break;
                }
                let i = at.index(body.len());
                body[i] ^= 1 << bit;
                done.push(format!("bit {bit} of byte {i}"));
            }
            format!("flipped {}", done.join(", "))
        }
        Mutation::Truncate(at) => {
            let len = body.len();
            body.truncate(at.index(len.max(1)));
            format!("truncated to {} of {len} bytes", body.len())
        }
        _ => unreachable!("structured"),
    }
}

// ---------------------------------------------------------------------------------------------
// Building a case

/// The fixture lines of `kind` for `tenant`; `contacts.update` (no fixture file) borrows
/// the `contacts.upsert` lines, which have its shape.
fn lines(kind: EventKind, tenant: &str) -> Vec<String> {
    let lines = fixture_lines(kind, tenant);
    if lines.is_empty() && kind == EventKind::ContactUpdate {
        return fixture_lines(EventKind::ContactUpsert, tenant);
    }
    lines
}

#[derive(Debug, Clone)]
enum Role {
    Untouched,
    /// An upsert creating the minted message of a mutated `messages.update`.
    Helper,
    /// Mutated as a whole; `minted` are the message ids minted for it.
    Whole {
        mutations: Vec<String>,
        minted: Vec<String>,
    },
    /// A history batch with these items mutated.
    Items {
        mutated: BTreeMap<usize, Vec<String>>,
    },
}

/// One event of the test tenant's stream and, when it has one, its control counterpart.
struct Entry {
    kind: EventKind,
    role: Role,
    body: Vec<u8>,
    control: Option<String>,
    /// For an untouched `messages.update`: its message.
    needs: Option<String>,
    /// Message ids the event creates when it is applied as the control applies it.
    creates: Vec<String>,
}

impl Entry {
    fn describe(&self, pos: usize) -> String {
        let role = match &self.role {
            Role::Untouched => "untouched".to_owned(),
            Role::Helper => "helper upsert".to_owned(),
            Role::Whole { mutations, .. } => format!("mutated: {}", mutations.join("; ")),
            Role::Items { mutated } => format!(
                "items mutated: {}",
                mutated
                    .iter()
                    .map(|(i, m)| format!("[{i}] {}", m.join("; ")))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        };
        format!(
            "#{pos} {} ({role}), {} bytes: {}",
            self.kind.base(),
            self.body.len(),
            preview(&self.body)
        )
    }
}

fn preview(body: &[u8]) -> String {
    const SHOW: usize = 400;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOW)]);
    let more = if body.len() > SHOW { "…" } else { "" };
    format!("{}{more}", text.escape_debug())
}

fn message_ids(kind: EventKind, raw_items: &[Obj], whole: &Obj) -> Vec<String> {
    match kind {
        EventKind::MessageUpsert => get(whole, "message_id")
            .and_then(string)
            .into_iter()
            .collect(),
        EventKind::HistoryMessages => raw_items
            .iter()
            .filter_map(|i| get(i, "message_id").and_then(string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The entries of a case: `picks` made concrete for the test tenant `t` and control tenant `c`.
fn build(picks: &[Pick], t: &str, c: &str) -> Vec<Entry> {
    let mut mint = Minter::default();
    let mut entries = Vec::new();
    for pick in picks {
        let kind = EventKind::ALL[pick.kind];
        let (t_lines, c_lines) = (lines(kind, t), lines(kind, c));
        let n = pick.line.index(t_lines.len());
        let (t_line, c_line) = (&t_lines[n], &c_lines[n]);
        let history_kind = items_key(kind).is_some();
        let plan = match &pick.plan {
            Plan::Items(items) if !history_kind => {
                Plan::Whole(items.iter().flat_map(|(_, m)| m.clone()).collect())
            }
            p => p.clone(),
        };
        match plan {
            Plan::Untouched => {
                let obj = object(t_line);
                let items = if history_kind {
                    history(t_line, kind).1
                } else {
                    Vec::new()
                };
                entries.push(Entry {
                    kind,
                    role: Role::Untouched,
                    body: t_line.clone().into_bytes(),
                    control: Some(c_line.clone()),
                    needs: (kind == EventKind::MessageUpdate)
                        .then(|| get(&obj, "message_id").and_then(string))
                        .flatten(),
                    creates: message_ids(kind, &items, &obj),
                });
            }
            Plan::Whole(mutations) => {
                let (mut obj, mut items) = if history_kind {
                    history(t_line, kind)
                } else {
                    (object(t_line), Vec::new())
                };
                mint.take_messages();
                mint.rewrite(kind, &mut obj);
                for item in items.iter_mut() {
                    mint.rewrite(kind, item);
                }
                let mut done = Vec::new();
                for m in mutations.iter().filter(|m| !m.on_bytes()) {
                    match (items.len(), m.field()) {
                        // In a history batch, the wrapper's shape is mutated, else an item.
                        (n, Some(at)) if n > 0 && !m.on_shape() => {
                            let i = at.index(n);
                            let what = apply(kind, &mut items[i], m, &mut mint);
                            done.push(format!("item [{i}] {what}"));
                        }
                        _ => done.push(apply(kind, &mut obj, m, &mut mint)),
                    }
                }
                let mut body = render(&obj, &items).into_bytes();
                for m in mutations.iter().filter(|m| m.on_bytes()) {
                    done.push(apply_bytes(&mut body, m));
                }
                let minted = mint.take_messages();
                if kind == EventKind::MessageUpdate {
                    for id in &minted {
                        entries.push(helper(&mut mint, id, t));
                    }
                }
                entries.push(Entry {
                    kind,
                    role: Role::Whole {
                        mutations: done,
                        minted,
                    },
                    body,
                    control: None,
                    needs: None,
                    creates: Vec::new(),
                });
            }
            Plan::Items(list) => {
                let (wrapper, mut items) = history(t_line, kind);
                let (c_wrapper, c_items) = history(c_line, kind);
                let mut mutated: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for (at, mutations) in &list {
                    let i = at.index(items.len());
                    if !mutated.contains_key(&i) {
                        mint.rewrite(kind, &mut items[i]);
                    }
                    let done = mutated.entry(i).or_default();
                    for m in mutations {
                        done.push(apply(kind, &mut items[i], m, &mut mint));
                    }
                }
                mint.take_messages();
                let kept: Vec<Obj> = c_items
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !mutated.contains_key(i))
                    .map(|(_, item)| item.clone())
                    .collect();
                let body = render(&wrapper, &items).into_bytes();
                // A body over the limit is refused whole, legitimately, good items included.
                let over = body.len() > MAX_PAYLOAD;
                let creates = if over {
                    Vec::new()
                } else {
                    message_ids(kind, &kept, &c_wrapper)
                };
                entries.push(Entry {
                    kind,
                    role: Role::Items { mutated },
                    body,
                    control: (!over && !kept.is_empty()).then(|| render(&c_wrapper, &kept)),
                    needs: None,
                    creates,
                });
            }
        }
    }
    // An untouched receipt waits (legitimately) when no earlier untouched event creates its
    // message: leave such receipts out, so that every untouched event can be applied.
    let mut created: HashSet<String> = HashSet::new();
    entries.retain(|e| {
        if let Some(m) = &e.needs {
            if !created.contains(m) {
                return false;
            }
        }
        created.extend(e.creates.iter().cloned());
        true
    });
    entries
}

/// An ordinary upsert of minted message `id` (in a minted chat of its own).
fn helper(mint: &mut Minter, id: &str, tenant: &str) -> Entry {
    let line = &lines(EventKind::MessageUpsert, tenant)[0];
    let mut obj = object(line);
    let digits = mint.digits();
    set(&mut obj, "message_id", quoted(id));
    set(&mut obj, "chat_id", quoted(&format!("AGT001_{digits}")));
    set(&mut obj, "jid", quoted(&format!("{digits}@s.whatsapp.net")));
    Entry {
        kind: EventKind::MessageUpsert,
        role: Role::Helper,
        body: render(&obj, &[]).into_bytes(),
        control: None,
        needs: None,
        creates: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Running and judging a case

/// Progress reports of a case, for the watchdog.
struct Beat(mpsc::Sender<String>);

impl Beat {
    fn step(&self, what: impl Into<String>) {
        let _ = self.0.send(what.into());
    }
}

/// Runs `body` on a thread of its own (the default 2 MiB stack of a tokio worker) on a
/// current-thread runtime, and fails when it makes no progress for [`STALL`]: a synchronous
/// stall inside the core would block any timer of the runtime running it.
fn guarded<F, Fut>(body: F)
where
    F: FnOnce(Beat) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (tx, rx) = mpsc::channel::<String>();
    let worker = std::thread::Builder::new()
        .name("hostile-case".into())
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(body(Beat(tx)));
        })
        .expect("spawn the case's thread");
    let mut doing = String::from("starting");
    loop {
        match rx.recv_timeout(STALL) {
            Ok(step) => doing = step,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("stalled: no progress for {STALL:?} while {doing}")
            }
        }
    }
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs one batch under [`BATCH_TIMEOUT`]; the database is up, so `Unavailable` is a failure.
async fn batch(p: &Processor, beat: &Beat, events: &[InboundEvent], what: &str) -> Vec<Outcome> {
    beat.step(what);
    match tokio::time::timeout(BATCH_TIMEOUT, p.process_batch(events)).await {
        Err(_) => panic!("{what}: no outcome after {BATCH_TIMEOUT:?} (stalled)"),
        Ok(Err(e)) => panic!("{what}: process_batch failed with the database up: {e}"),
        Ok(Ok(outcomes)) => {
            assert_eq!(
                outcomes.len(),
                events.len(),
                "{what}: one outcome per event"
            );
            outcomes
        }
    }
}

fn dead_ok(d: &wa_shared::pipeline::DeadLetter) -> bool {
    CLOSED.contains(&d.error_type)
}

/// Whether a `Retry` of a mutated `messages.update` is the documented message-not-found-yet:
/// its body is a valid patch whose `message_id` names none of the messages minted for it.
fn not_found_yet(body: &[u8], minted: &[String], tenant: &str) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let company_ok = match map.get("company_id") {
        None | Some(Value::Null) => true,
        Some(Value::String(c)) => c == tenant,
        _ => false,
    };
    match map.get("message_id") {
        Some(Value::String(id)) => {
            company_ok
                && !minted.contains(id)
                && (1..=256).contains(&id.chars().count())
                && !id.chars().any(char::is_control)
        }
        _ => false,
    }
}

/// What the SPEC allows as the outcome of an entry; `None` when `o` is allowed.
fn judge(e: &Entry, o: &Outcome, tenant: &str) -> Option<String> {
    let over = e.body.len() > MAX_PAYLOAD;
    let ok = match (&e.role, o) {
        _ if over => matches!(o, Outcome::DeadLetter(d) if d.error_type == ErrorType::TooLarge),
        (Role::Untouched | Role::Helper, o) => *o == Outcome::Ack,
        (Role::Items { .. }, Outcome::Ack) => true,
        (Role::Items { mutated }, Outcome::AckWithDeadItems(dead)) => dead
            .iter()
            .all(|d| dead_ok(d) && d.item_index.is_some_and(|i| mutated.contains_key(&i))),
        (Role::Items { .. }, _) => false,
        (Role::Whole { .. }, Outcome::Ack) => true,
        (Role::Whole { .. }, Outcome::AckWithDeadItems(dead)) => dead.iter().all(dead_ok),
        (Role::Whole { .. }, Outcome::DeadLetter(d)) => dead_ok(d),
        (Role::Whole { minted, .. }, Outcome::Retry { .. }) => {
            e.kind == EventKind::MessageUpdate && not_found_yet(&e.body, minted, tenant)
        }
        (Role::Whole { .. }, Outcome::Wait { .. }) => false,
    };
    if ok {
        return None;
    }
    let wanted = match &e.role {
        _ if over => "DeadLetter(too_large): the body is over MAX_PAYLOAD_BYTES (SPEC §2)",
        Role::Untouched => "Ack: an untouched event is applied whatever its neighbours (SPEC §6)",
        Role::Helper => "Ack (an ordinary upsert of the mutated receipt's message)",
        Role::Items { .. } => {
            "Ack, or AckWithDeadItems of mutated items only with a closed-list error type: \
             items are validated on their own (SPEC §4 history batches, §6)"
        }
        Role::Whole { .. } => {
            "applied, or DeadLetter with malformed/too_large/validation/tenant/\
             database_permanent (SPEC §2, §6, §7)"
        }
    };
    Some(format!("outcome {o:?}; wanted {wanted}"))
}

/// The key of a snapshot row of `table`.
fn row_key(table: &str, row: &Value) -> String {
    let field = |f: &str| row.get(f).map(Value::to_string).unwrap_or_default();
    match table {
        "chats" => field("chat_id"),
        "messages" => field("message_id"),
        "contacts" => format!("{}/{}", field("agent_id"), field("phone_number")),
        _ => field("agent_id"),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 600 {
        let cut = (0..=600)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &s[..cut], s.len())
    } else {
        s
    }
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The key columns of a snapshot table.
fn key_columns(table: &str) -> &'static [&'static str] {
    match table {
        "chats" => &["chat_id"],
        "messages" => &["message_id"],
        "contacts" => &["agent_id", "phone_number"],
        _ => &["agent_id"],
    }
}

/// Differences between the control tenant's rows and the test tenant's rows of the same keys.
///
/// The control's rows are its [`snapshot`]. The test tenant also holds the rows of mutated
/// events, which [`snapshot`] may be unable to read (JSON nested deeper than `serde_json`
/// reads, where the core stored it): only its rows with the control's keys are read, each as
/// text, projected onto the snapshot's columns.
async fn compare(pool: &PgPool, test: &str, control: &str) -> Vec<String> {
    let want = without_company(snapshot(pool, control).await);
    let mut problems = Vec::new();
    for table in ["chats", "messages", "contacts", "agents"] {
        let want_rows: Vec<Value> = want[table].as_array().cloned().unwrap_or_default();
        let Some(Value::Object(first)) = want_rows.first() else {
            continue;
        };
        let columns: Vec<String> = first.keys().cloned().collect();
        let keys = key_columns(table);
        let tuples: Vec<String> = want_rows
            .iter()
            .map(|row| {
                let values: Vec<String> = keys
                    .iter()
                    .map(|k| literal(row[*k].as_str().unwrap_or_default()))
                    .collect();
                format!("({})", values.join(", "))
            })
            .collect();
        let sql = format!(
            "SELECT to_jsonb(t)::text AS r FROM {table} t WHERE ({}) IN ({})",
            keys.join(", "),
            tuples.join(", ")
        );
        let mut got_rows = Vec::new();
        for raw in rows(pool, test, &sql).await {
            let text = raw["r"].as_str().unwrap_or_default();
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(mut row)) => {
                    row.retain(|k, _| columns.contains(k));
                    got_rows.push(Value::Object(row));
                }
                other => problems.push(format!(
                    "{table}: a row of an untouched key cannot be read back ({:?}): {}",
                    other.err(),
                    preview(text.as_bytes())
                )),
            }
        }
        let by_key = |rows: &[Value]| -> BTreeMap<String, Vec<Value>> {
            let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for row in rows {
                by_key
                    .entry(row_key(table, row))
                    .or_default()
                    .push(row.clone());
            }
            by_key
        };
        let (got, want) = (by_key(&got_rows), by_key(&want_rows));
        for (key, want_rows) in &want {
            match got.get(key) {
                None => problems.push(format!(
                    "{table} {key}: missing; the control (untouched events only) has {}",
                    want_rows.iter().map(short).collect::<Vec<_>>().join(", ")
                )),
                Some(got_rows) if got_rows != want_rows => problems.push(format!(
                    "{table} {key}: {} ≠ control {}",
                    got_rows.iter().map(short).collect::<Vec<_>>().join(", "),
                    want_rows.iter().map(short).collect::<Vec<_>>().join(", ")
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

/// Runs one case: the entries in batches of `sizes` (cycled) for the test tenant, and the
/// untouched ones in the same batches for the control tenant; panics listing every problem.
async fn run_case(beat: Beat, picks: Vec<Pick>, sizes: Vec<usize>) {
    beat.step("connecting");
    let pool = pool().await;
    let p = processor(&pool);
    let test = Events::new(&unique_tenant("hx"));
    let control = Events::new(&unique_tenant("hxc"));
    let entries = build(&picks, &test.tenant, &control.tenant);

    let mut problems = Vec::new();
    let mut start = 0;
    let mut sizes = sizes.iter().cycle();
    let mut round = 0;
    while start < entries.len() {
        round += 1;
        let n = (*sizes.next().expect("sizes")).clamp(1, entries.len() - start);
        let chunk = &entries[start..start + n];

        let events: Vec<InboundEvent> = chunk
            .iter()
            .map(|e| test.event(e.kind, e.body.clone()))
            .collect();
        let what = format!("test batch {round} (events #{start}..#{})", start + n - 1);
        let outcomes = batch(&p, &beat, &events, &what).await;
        for (i, (e, o)) in chunk.iter().zip(&outcomes).enumerate() {
            if let Some(why) = judge(e, o, &test.tenant) {
                problems.push(format!("{}\n    {why}", e.describe(start + i)));
            }
        }

        let (kinds, bodies): (Vec<_>, Vec<_>) = chunk
            .iter()
            .filter_map(|e| e.control.as_ref().map(|c| (e.kind, c.clone())))
            .unzip();
        if !bodies.is_empty() {
            let events: Vec<InboundEvent> = kinds
                .iter()
                .zip(bodies)
                .map(|(k, b)| control.event(*k, b.into_bytes()))
                .collect();
            let what = format!("control batch {round}");
            let outcomes = batch(&p, &beat, &events, &what).await;
            for (e, o) in events.iter().zip(&outcomes) {
                if *o != Outcome::Ack {
                    problems.push(format!(
                        "control (untouched events only): {} {:?} → {o:?}",
                        e.subject,
                        preview(&e.payload)
                    ));
                }
            }
        }
        start += n;
    }

    beat.step("comparing rows");
    problems.extend(compare(&pool, &test.tenant, &control.tenant).await);
    if !problems.is_empty() {
        let all: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.describe(i))
            .collect();
        panic!(
            "{} problem(s) (test tenant {}, control {}):\n  {}\n\nthe events, in stream order:\n  {}",
            problems.len(),
            test.tenant,
            control.tenant,
            problems.join("\n  "),
            all.join("\n  ")
        );
    }
}

fn cases() -> u32 {
    std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        max_shrink_time: 600_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_events_are_isolated_and_their_neighbours_applied_as_if_alone(
        picks in proptest::collection::vec(pick(), 10..=40),
        sizes in proptest::collection::vec(1..=40usize, 1..=3),
    ) {
        guarded(move |beat| run_case(beat, picks, sizes));
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed examples: the hostile inputs SPEC §6 names

/// The ordinary neighbours of a fixed example: chats, messages, receipts and agents.
fn neighbours(tenant: &str) -> Vec<(EventKind, String)> {
    let mut out = Vec::new();
    for kind in [
        EventKind::ChatUpdate,
        EventKind::MessageUpsert,
        EventKind::MessageUpdate,
        EventKind::ConnectionUpdate,
        EventKind::HistoryContacts,
    ] {
        out.extend(lines(kind, tenant).into_iter().map(|l| (kind, l)));
    }
    out
}

/// A message of its own (minted ids) with `field` set to the raw JSON `raw`.
fn message_with(field: &str, raw: String) -> String {
    let line = &lines(EventKind::MessageUpsert, "TENANT")[0];
    let mut obj = object(line);
    Minter {
        n: 1000,
        ..Minter::default()
    }
    .rewrite(EventKind::MessageUpsert, &mut obj);
    obj.retain(|(k, _)| k != "company_id");
    set(&mut obj, field, raw);
    render(&obj, &[])
}

/// Runs the ordinary neighbours with `hostile` in the middle (after the messages, before
/// their receipts) in one batch, and the neighbours alone for a control tenant; checks every
/// neighbour is acknowledged and lands as it does alone, and returns the hostile outcome.
async fn among_neighbours(beat: &Beat, kind: EventKind, hostile: Vec<u8>) -> (Outcome, Events) {
    let pool = pool().await;
    let p = processor(&pool);
    let test = Events::new(&unique_tenant("hxf"));
    let control = Events::new(&unique_tenant("hxfc"));
    let (t_n, c_n) = (neighbours(&test.tenant), neighbours(&control.tenant));
    let middle = t_n
        .iter()
        .position(|(k, _)| *k == EventKind::MessageUpdate)
        .expect("receipts");

    let mut events: Vec<InboundEvent> = t_n
        .iter()
        .map(|(k, b)| test.event(*k, b.clone().into_bytes()))
        .collect();
    events.insert(middle, test.event(kind, hostile.clone()));
    let outcomes = batch(&p, beat, &events, "the batch with the hostile event").await;
    let c_events: Vec<InboundEvent> = c_n
        .iter()
        .map(|(k, b)| control.event(*k, b.clone().into_bytes()))
        .collect();
    let c_outcomes = batch(&p, beat, &c_events, "the control batch").await;

    let mut problems = Vec::new();
    for (i, (e, o)) in events.iter().zip(&outcomes).enumerate() {
        if i != middle && *o != Outcome::Ack {
            problems.push(format!(
                "neighbour {} {} → {o:?} (wanted Ack)",
                e.subject,
                preview(&e.payload)
            ));
        }
    }
    for (e, o) in c_events.iter().zip(&c_outcomes) {
        assert_eq!(*o, Outcome::Ack, "control {}", e.subject);
    }
    problems.extend(compare(&pool, &test.tenant, &control.tenant).await);
    assert!(
        problems.is_empty(),
        "hostile {} {}:\n  {}",
        kind.base(),
        preview(&hostile),
        problems.join("\n  ")
    );
    (outcomes[middle].clone(), test)
}

fn expect_dead(o: &Outcome, error_type: ErrorType, what: &str) {
    match o {
        Outcome::DeadLetter(d) if d.error_type == error_type => {}
        other => panic!("{what}: {other:?}; wanted DeadLetter({error_type:?}) (SPEC §6)"),
    }
}

/// One fixed example: `hostile` (a `kind` body) must be dead-lettered as `error_type`.
fn refused_as(kind: EventKind, hostile: String, error_type: ErrorType, what: &'static str) {
    guarded(move |beat| async move {
        let (o, _) = among_neighbours(&beat, kind, hostile.into_bytes()).await;
        expect_dead(&o, error_type, what);
    });
}

#[test]
fn a_12_kib_jid_is_refused_as_validation_and_isolated() {
    let jid = format!("{}@s.whatsapp.net", "6".repeat(12 * 1024));
    refused_as(
        EventKind::MessageUpsert,
        message_with("jid", quoted(&jid)),
        ErrorType::Validation,
        "a 12 KiB jid (indexed text ≤ 256 chars)",
    );
}

#[test]
fn a_message_obj_nested_20000_deep_is_refused_as_validation_and_isolated() {
    let deep = format!("{}1{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    refused_as(
        EventKind::MessageUpsert,
        message_with("message_obj", deep),
        ErrorType::Validation,
        "message_obj nested 20,000 deep (embedded JSON ≤ 128 levels)",
    );
}

#[test]
fn a_nul_in_message_text_is_refused_as_validation_and_isolated() {
    refused_as(
        EventKind::MessageUpsert,
        message_with("message_text", "\"Halo\\u0000kak\"".into()),
        ErrorType::Validation,
        "a NUL in message_text (no NUL in any string)",
    );
}

#[test]
fn a_lone_surrogate_in_message_obj_is_refused_as_validation_and_isolated() {
    refused_as(
        EventKind::MessageUpsert,
        message_with("message_obj", "{\"conversation\":\"a\\ud800b\"}".into()),
        ErrorType::Validation,
        "a lone surrogate inside message_obj (no lone surrogate in any string)",
    );
}

#[test]
fn a_message_dated_in_year_10000_is_refused_as_validation_and_isolated() {
    // 10000-01-01T00:00:00Z in milliseconds.
    refused_as(
        EventKind::MessageUpsert,
        message_with("message_timestamp", "253402300800000".into()),
        ErrorType::Validation,
        "message_timestamp in year 10000 (timestamps between 1970 and 9999-12-31)",
    );
}

#[test]
fn a_message_dated_before_1970_is_refused_as_validation_and_isolated() {
    refused_as(
        EventKind::MessageUpsert,
        message_with("message_timestamp", "-86400".into()),
        ErrorType::Validation,
        "message_timestamp before 1970 (timestamps between 1970 and 9999-12-31)",
    );
}

/// December 9999 is inside the range SPEC §6 accepts: the message is stored, dated
/// 9999-12-31, in a partition of its own, and its neighbours are applied.
#[test]
fn a_message_dated_december_9999_is_stored_and_isolated() {
    guarded(|beat| async move {
        // 9999-12-31T12:00:00Z in milliseconds (a timestamp over 10^11 is milliseconds).
        let body = message_with("message_timestamp", "253402257600000".into());
        let (o, test) = among_neighbours(&beat, EventKind::MessageUpsert, body.into_bytes()).await;
        assert_eq!(
            o,
            Outcome::Ack,
            "a message of 9999-12-31 is within 1970..9999-12-31 (SPEC §6)"
        );
        let pool = pool().await;
        let stored = rows(
            &pool,
            &test.tenant,
            "SELECT message_date::text AS d FROM messages WHERE message_id LIKE 'AGT001_HX%'",
        )
        .await;
        assert_eq!(
            stored,
            vec![json!({"d": "9999-12-31"})],
            "the December 9999 message"
        );
    });
}

/// A history batch with one hostile item: the item is dead (by index, `validation`), the other
/// items land (SPEC §4 history batches: each item is validated on its own).
fn history_item_refused(item_field: &'static str, raw: String, what: &'static str) {
    guarded(move |beat| async move {
        let pool = pool().await;
        let p = processor(&pool);
        let test = Events::new(&unique_tenant("hxh"));
        let control = Events::new(&unique_tenant("hxhc"));
        let kind = EventKind::HistoryMessages;
        let (wrapper, mut items) = history(&lines(kind, &test.tenant)[0], kind);
        let (c_wrapper, c_items) = history(&lines(kind, &control.tenant)[0], kind);
        Minter::default().rewrite(kind, &mut items[1]);
        set(&mut items[1], item_field, raw);
        let body = render(&wrapper, &items);
        let kept: Vec<Obj> = [0, 2].iter().map(|&i| c_items[i].clone()).collect();

        let o = batch(&p, &beat, &[test.event(kind, body.clone())], what).await;
        let c = batch(
            &p,
            &beat,
            &[control.event(kind, render(&c_wrapper, &kept))],
            "control",
        )
        .await;
        assert_eq!(c, vec![Outcome::Ack]);
        match &o[0] {
            Outcome::AckWithDeadItems(dead)
                if dead.len() == 1
                    && dead[0].item_index == Some(1)
                    && dead[0].error_type == ErrorType::Validation => {}
            other => panic!(
                "{what}: {other:?}; wanted AckWithDeadItems([validation at item 1]) \
                 (SPEC §4, §6)\n  body: {}",
                preview(body.as_bytes())
            ),
        }
        let problems = compare(&pool, &test.tenant, &control.tenant).await;
        assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
    });
}

#[test]
fn a_history_item_nested_20000_deep_is_dead_alone() {
    history_item_refused(
        "message_obj",
        format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000)),
        "one history item with message_obj nested 20,000 deep",
    );
}

#[test]
fn a_history_item_with_a_lone_surrogate_is_dead_alone() {
    history_item_refused(
        "message_text",
        "\"x\\udc00y\"".into(),
        "one history item with a lone surrogate in message_text",
    );
}

/// `unread_count` at `i32::MAX`, then a delta of +5 in a batch with other chats' deltas: the
/// overflowing delta is applied within range or dead-lettered with a closed-list type, and the
/// other deltas of its batch land.
#[test]
fn an_unread_delta_past_i32_max_is_isolated() {
    guarded(|beat| async move {
        let pool = pool().await;
        let p = processor(&pool);
        let test = Events::new(&unique_tenant("hxu"));
        let control = Events::new(&unique_tenant("hxuc"));
        let full = "AGT001_991234567890";
        let first = [test.json(
            EventKind::ChatUpsert,
            json!({"chat_id": full, "unread_count": i32::MAX, "conversation_timestamp": 1718358000}),
        )];
        let o = batch(&p, &beat, &first, "the chat at i32::MAX").await;
        assert_eq!(
            o,
            vec![Outcome::Ack],
            "unread_count = i32::MAX is a valid integer"
        );

        let delta = |ev: &Events, chat: &str, n: i64| {
            ev.json(
                EventKind::ChatUpdate,
                json!({"chat_id": chat, "agent_id": "AGT001", "unread_count": n}),
            )
        };
        let others = ["AGT001_6281234567890", "AGT001_6289876543210"];
        let events = vec![
            delta(&test, others[0], 1),
            delta(&test, others[1], 2),
            delta(&test, full, 5),
            delta(&test, others[0], 3),
            delta(&test, others[1], -1),
        ];
        let c_events = vec![
            delta(&control, others[0], 1),
            delta(&control, others[1], 2),
            delta(&control, others[0], 3),
            delta(&control, others[1], -1),
        ];
        let outcomes = batch(&p, &beat, &events, "the overflowing delta among others").await;
        let c_outcomes = batch(&p, &beat, &c_events, "control").await;
        assert!(
            c_outcomes.iter().all(|o| *o == Outcome::Ack),
            "{c_outcomes:?}"
        );

        let mut problems = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            if i != 2 && *o != Outcome::Ack {
                problems.push(format!("neighbour delta #{i} → {o:?} (wanted Ack)"));
            }
        }
        let stored = rows(
            &pool,
            &test.tenant,
            &format!("SELECT unread_count FROM chats WHERE chat_id = '{full}'"),
        )
        .await;
        match &outcomes[2] {
            Outcome::Ack => {}
            Outcome::DeadLetter(d) if dead_ok(d) => {
                if stored != vec![json!({"unread_count": i32::MAX})] {
                    problems.push(format!("dead-lettered, yet the chat changed: {stored:?}"));
                }
            }
            other => problems.push(format!(
                "the +5 delta on i32::MAX → {other:?}; wanted Ack (within range) or DeadLetter \
                 (validation / database_permanent: a number out of range is the event's own \
                 permanent error, SPEC §6)"
            )),
        }
        problems.extend(compare(&pool, &test.tenant, &control.tenant).await);
        assert!(problems.is_empty(), "{}", problems.join("\n  "));
    });
}
