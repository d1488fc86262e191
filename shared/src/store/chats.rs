//! Chat writes: upserts (absolute unread, timestamp-guarded) and updates (unread deltas), as
//! one set-based statement.

use crate::model::fields::{chat_id_suffix, is_group_jid, is_placeholder_name, phone_from_jid};
use crate::model::ChatPayload;

use super::column;
use super::script::Statement;
use super::unread::UnreadDelta;

pub use crate::model::UnreadCount;

/// Chat patches for one statement; each `chat_id` appears at most once.
#[derive(Default)]
pub struct ChatRows<'a> {
    rows: Vec<ChatRow<'a>>,
}

/// One row of [`ChatRows`]; fields in the order of the statement's columns.
struct ChatRow<'a> {
    chat_id: &'a str,
    jid: Option<&'a str>,
    push_name: Option<&'a str>,
    push_placeholder: bool,
    custom_name: Option<&'a str>,
    group_name: Option<&'a str>,
    group_placeholder: bool,
    phone_number: Option<&'a str>,
    agent_id: Option<&'a str>,
    assigned_to: Option<&'a str>,
    is_group: Option<bool>,
    not_spam: Option<bool>,
    /// Absolute count (upserts, in `add`), or the function of the stored count (deltas).
    unread: Option<UnreadDelta>,
    kind: UnreadCount,
    last_message: Option<&'a str>,
    /// The timestamp `last_message` is guarded by (its own event's).
    last_message_ts: Option<i64>,
    conversation_timestamp: Option<i64>,
    insert_phone: Option<&'a str>,
    insert_is_group: Option<bool>,
    meta: &'a str,
}

impl<'a> ChatRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Adds a chat write; `kind` says how its unread count applies (see [`UnreadCount`]).
    pub fn push(&mut self, c: &'a ChatPayload<'a>, kind: UnreadCount, meta: &'a str) {
        let v = Values::of(c, kind);
        let unread = match kind {
            UnreadCount::Delta => c.unread_count.map(|d| UnreadDelta::IDENTITY.then(d)),
            UnreadCount::Absolute => c.unread_count.map(UnreadDelta::absolute),
        };
        self.rows.push(ChatRow {
            chat_id: &c.chat_id,
            jid: v.jid,
            push_name: c.push_name.as_deref(),
            push_placeholder: v.push_placeholder,
            custom_name: c.custom_name.as_deref(),
            group_name: c.group_name.as_deref(),
            group_placeholder: v.group_placeholder,
            phone_number: v.phone,
            agent_id: c.agent_id.as_deref(),
            assigned_to: c.assigned_to.as_deref(),
            is_group: v.is_group,
            not_spam: c.not_spam,
            unread,
            kind,
            last_message: c.last_message.map(|r| r.get()),
            last_message_ts: c.conversation_timestamp,
            conversation_timestamp: c.conversation_timestamp,
            insert_phone: v.derived_phone.or(Some(chat_id_suffix(&c.chat_id))),
            insert_is_group: v.derived_group,
            meta,
        });
    }

    /// Whether the `chats.update` `c` can be folded into row `row` (see [`ChatRows::fold`]).
    ///
    /// Only deltas fold, into deltas. A name is judged against the stored row's phone number
    /// and jid, so a delta carrying a name folds only into a row that neither sets a name of
    /// that kind nor changes the phone number or jid it would be judged against.
    pub fn can_fold(&self, row: usize, c: &ChatPayload<'_>) -> bool {
        let r = &self.rows[row];
        let untouched = r.jid.is_none() && r.phone_number.is_none();
        r.kind == UnreadCount::Delta
            && (c.push_name.is_none() || (untouched && r.push_name.is_none()))
            && (c.group_name.is_none() || (untouched && r.group_name.is_none()))
    }

    /// Folds the `chats.update` `c`, the next write of row `row`'s chat, into that row, so that
    /// writing the row once has the effect of writing its updates one after the other: unread
    /// deltas compose, `last_message` is the one the timestamp guard would have kept last,
    /// the conversation timestamp is the greatest, and every other field takes the latest
    /// value sent (a newly created row keeps the derived values of the first update).
    pub fn fold(&mut self, row: usize, c: &'a ChatPayload<'a>, meta: &'a str) {
        debug_assert!(self.can_fold(row, c));
        let v = Values::of(c, UnreadCount::Delta);
        let r = &mut self.rows[row];
        set_if_some(&mut r.jid, v.jid);
        if let Some(name) = c.push_name.as_deref() {
            r.push_name = Some(name);
            r.push_placeholder = v.push_placeholder;
        }
        set_if_some(&mut r.custom_name, c.custom_name.as_deref());
        if let Some(name) = c.group_name.as_deref() {
            r.group_name = Some(name);
            r.group_placeholder = v.group_placeholder;
        }
        set_if_some(&mut r.phone_number, v.phone);
        set_if_some(&mut r.agent_id, c.agent_id.as_deref());
        set_if_some(&mut r.assigned_to, c.assigned_to.as_deref());
        set_if_some(&mut r.is_group, v.is_group);
        set_if_some(&mut r.not_spam, c.not_spam);
        if let Some(d) = c.unread_count {
            r.unread = Some(r.unread.unwrap_or(UnreadDelta::IDENTITY).then(d));
        }
        // An update's last message is applied when its timestamp is not older than the row's,
        // which by then is at least that of every earlier update of the batch: the candidates
        // are those not older than all before them, and the last candidate is the one to keep
        // (its timestamp, the greatest, still has to pass the stored row's guard).
        let ts = c.conversation_timestamp.unwrap_or(0);
        let before = r.conversation_timestamp.unwrap_or(0);
        if let Some(message) = c.last_message {
            if ts >= before {
                r.last_message = Some(message.get());
                r.last_message_ts = c.conversation_timestamp;
            }
        }
        if ts > before {
            r.conversation_timestamp = Some(ts);
        }
        r.meta = meta;
    }

    /// The statement writing these rows (none when there are none).
    pub fn statement<'s>(&'s self, company: &'s str) -> Option<Statement<'s>> {
        if self.is_empty() {
            return None;
        }
        let rows = &self.rows;
        Some(
            Statement::new(UPSERT_CHATS)
                .bind(column(rows, |r| r.chat_id))
                .bind(column(rows, |r| r.jid))
                .bind(column(rows, |r| r.push_name))
                .bind(column(rows, |r| r.push_placeholder))
                .bind(column(rows, |r| r.custom_name))
                .bind(column(rows, |r| r.group_name))
                .bind(column(rows, |r| r.group_placeholder))
                .bind(column(rows, |r| r.phone_number))
                .bind(column(rows, |r| r.agent_id))
                .bind(column(rows, |r| r.assigned_to))
                .bind(column(rows, |r| r.is_group))
                .bind(column(rows, |r| r.not_spam))
                .bind(column(rows, |r| r.unread.map(|u| u.add)))
                .bind(column(rows, |r| r.unread.is_some_and(|u| u.reset)))
                .bind(column(rows, |r| r.unread.and_then(|u| u.floor)))
                .bind(column(rows, |r| r.kind == UnreadCount::Delta))
                .bind(column(rows, |r| r.last_message))
                .bind(column(rows, |r| r.last_message_ts))
                .bind(column(rows, |r| r.conversation_timestamp))
                .bind(column(rows, |r| r.insert_phone))
                .bind(column(rows, |r| r.insert_is_group))
                .bind(column(rows, |r| r.meta))
                .bind(company),
        )
    }
}

/// Columns `$1`–`$22` are those of [`ChatRow`], in its order; `$23` is the company id.
///
/// Last message and absolute unread count are applied only when the event is not older
/// than the stored conversation (0 or NULL stored = nothing known yet). A delta row's unread
/// count becomes `reset ? unread : GREATEST(stored + unread, floor)` ([`UnreadDelta`]), the sum
/// saturating at the largest `integer` as the folded deltas do: a count never overflows.
const UPSERT_CHATS: &str = r#"
MERGE INTO chats c
USING (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::text[],
                         $7::bool[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::bool[],
                         $13::int4[], $14::bool[], $15::int4[], $16::bool[], $17::text[], $18::int8[],
                         $19::int8[], $20::text[], $21::bool[], $22::text[])
        AS u(chat_id, jid, push_name, push_ph, custom_name, group_name, group_ph, phone_number,
             agent_id, assigned_to, is_group, not_spam, unread, reset, floor, delta, last_message,
             lm_ts, conv_ts, ins_phone, ins_is_group, meta)
) u ON c.chat_id = u.chat_id
WHEN MATCHED THEN UPDATE SET
    jid = COALESCE(u.jid, c.jid),
    push_name = CASE
        WHEN u.push_name IS NULL THEN c.push_name
        WHEN c.push_name IS NULL THEN u.push_name
        WHEN u.push_ph OR u.push_name = c.phone_number OR u.push_name = split_part(c.jid, '@', 1)
            THEN c.push_name
        ELSE u.push_name END,
    custom_name = COALESCE(u.custom_name, c.custom_name),
    group_name = CASE
        WHEN u.group_name IS NULL THEN c.group_name
        WHEN c.group_name IS NULL THEN u.group_name
        WHEN u.group_ph OR u.group_name = c.phone_number OR u.group_name = split_part(c.jid, '@', 1)
            THEN c.group_name
        ELSE u.group_name END,
    phone_number = COALESCE(u.phone_number, c.phone_number),
    agent_id = COALESCE(u.agent_id, c.agent_id),
    company_id = $23,
    assigned_to = COALESCE(u.assigned_to, c.assigned_to),
    is_group = COALESCE(u.is_group, c.is_group),
    not_spam = COALESCE(u.not_spam, c.not_spam),
    unread_count = CASE
        WHEN u.unread IS NULL THEN c.unread_count
        WHEN u.delta THEN CASE
            WHEN u.reset THEN u.unread
            ELSE GREATEST(LEAST(COALESCE(c.unread_count, 0)::int8 + u.unread, 2147483647)::int4, u.floor) END
        WHEN COALESCE(c.conversation_timestamp, 0) = 0
             OR COALESCE(u.conv_ts, 0) >= c.conversation_timestamp THEN u.unread
        ELSE c.unread_count END,
    last_message = CASE
        WHEN u.last_message IS NULL THEN c.last_message
        WHEN COALESCE(c.conversation_timestamp, 0) = 0
             OR COALESCE(u.lm_ts, 0) >= c.conversation_timestamp THEN u.last_message::jsonb
        ELSE c.last_message END,
    conversation_timestamp = GREATEST(c.conversation_timestamp, NULLIF(u.conv_ts, 0)),
    last_metadata = u.meta::jsonb,
    updated_at = now()
WHEN NOT MATCHED THEN INSERT (chat_id, jid, push_name, custom_name, group_name, phone_number,
                              agent_id, company_id, assigned_to, is_group, not_spam, unread_count,
                              last_message, conversation_timestamp, last_metadata)
VALUES (u.chat_id, u.jid, u.push_name, u.custom_name, u.group_name,
        COALESCE(u.phone_number, u.ins_phone), u.agent_id, $23, u.assigned_to,
        COALESCE(u.is_group, u.ins_is_group), u.not_spam,
        CASE WHEN u.delta AND NOT u.reset THEN GREATEST(u.unread, u.floor) ELSE u.unread END,
        u.last_message::jsonb, NULLIF(u.conv_ts, 0), u.meta::jsonb)
"#;

/// What a chat write derives from its payload.
struct Values<'a> {
    jid: Option<&'a str>,
    phone: Option<&'a str>,
    is_group: Option<bool>,
    push_placeholder: bool,
    group_placeholder: bool,
    derived_phone: Option<&'a str>,
    derived_group: Option<bool>,
}

impl<'a> Values<'a> {
    fn of(c: &'a ChatPayload<'a>, kind: UnreadCount) -> Self {
        let jid = c.jid.as_deref();
        let derived_phone = jid.and_then(phone_from_jid);
        let derived_group = jid.map(is_group_jid);
        // chats.upsert derives phone and is_group from the jid whenever they are absent.
        let (phone, is_group) = if kind == UnreadCount::Delta {
            (c.phone_number.as_deref(), c.is_group)
        } else {
            (
                c.phone_number.as_deref().or(derived_phone),
                c.is_group.or(derived_group),
            )
        };
        let placeholder = |name: Option<&str>| {
            name.is_some_and(|n| {
                is_placeholder_name(n, phone.or(derived_phone), Some(&c.chat_id), jid)
            })
        };
        Values {
            jid,
            phone,
            is_group,
            push_placeholder: placeholder(c.push_name.as_deref()),
            group_placeholder: placeholder(c.group_name.as_deref()),
            derived_phone,
            derived_group,
        }
    }
}

fn set_if_some<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}
