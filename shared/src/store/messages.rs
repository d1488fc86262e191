//! Message writes: one row per `message_id` whatever the order or repetition of events, with a
//! rank-monotonic status; and patches (`messages.update`) that report messages not found yet.

use std::collections::HashSet;

use chrono::NaiveDate;

use crate::model::fields::status_rank;
use crate::model::{MessagePatch, MessagePayload};

use super::column;
use super::script::Statement;

/// Message upserts for one statement; each `message_id` appears at most once.
#[derive(Default)]
pub struct MessageRows<'a> {
    rows: Vec<MessageRow<'a>>,
}

struct MessageRow<'a> {
    m: &'a MessagePayload<'a>,
    /// Used only if the row is created (it never moves).
    date: NaiveDate,
    status_rank: Option<i16>,
    meta: &'a str,
}

fn raw<'a>(v: &Option<&'a serde_json::value::RawValue>) -> Option<&'a str> {
    v.map(|r| r.get())
}

impl<'a> MessageRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a message; `date` is used only if the row is created (it never moves).
    pub fn push(&mut self, m: &'a MessagePayload<'a>, date: NaiveDate, meta: &'a str) {
        self.rows.push(MessageRow {
            m,
            date,
            status_rank: m.status.as_deref().map(status_rank),
            meta,
        });
    }

    /// The statement writing these rows (none when there are none).
    pub fn statement<'s>(&'s self, company: &'s str) -> Option<Statement<'s>> {
        if self.is_empty() {
            return None;
        }
        let rows = &self.rows;
        Some(
            Statement::new(UPSERT_MESSAGES)
                .bind(column(rows, |r| r.m.message_id.as_str()))
                .bind(column(rows, |r| r.date))
                .bind(column(rows, |r| r.m.from_phone.as_deref()))
                .bind(column(rows, |r| r.m.to_phone.as_deref()))
                .bind(column(rows, |r| r.m.chat_id.as_str()))
                .bind(column(rows, |r| r.m.jid.as_deref()))
                .bind(column(rows, |r| r.m.message_text.as_deref()))
                .bind(column(rows, |r| r.m.message_url.as_deref()))
                .bind(column(rows, |r| r.m.message_type.as_deref()))
                .bind(column(rows, |r| r.m.flow.as_str()))
                .bind(column(rows, |r| r.m.agent_id.as_deref()))
                .bind(column(rows, |r| r.m.status.as_deref()))
                .bind(column(rows, |r| r.status_rank))
                .bind(column(rows, |r| raw(&r.m.key)))
                .bind(column(rows, |r| raw(&r.m.message_obj)))
                .bind(column(rows, |r| raw(&r.m.edited_message_obj)))
                .bind(column(rows, |r| r.m.is_deleted))
                .bind(column(rows, |r| r.m.message_timestamp))
                .bind(column(rows, |r| r.meta))
                .bind(company),
        )
    }
}

/// Rows are found by `message_id` alone (any partition), so a message keeps the date it was
/// created with; writers of a tenant are serialised by the tenant lock, so the insert of
/// the rows not found cannot race another writer. One `MERGE` (one join to plan) rather than
/// an update and an insert of the rest: cheaper for Postgres to plan, which is most of the
/// cost of a statement that writes a tenant's few rows.
const UPSERT_MESSAGES: &str = r#"
MERGE INTO messages m
USING (
    SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::int2[], $14::text[], $15::text[], $16::text[], $17::bool[], $18::int8[],
                         $19::text[])
        AS u(message_id, message_date, from_phone, to_phone, chat_id, jid, message_text,
             message_url, message_type, flow, agent_id, status, status_rank, key, message_obj,
             edited_message_obj, is_deleted, message_timestamp, meta)
) u ON m.message_id = u.message_id
WHEN MATCHED THEN UPDATE SET
    from_phone = COALESCE(u.from_phone, m.from_phone),
    to_phone = COALESCE(u.to_phone, m.to_phone),
    chat_id = COALESCE(u.chat_id, m.chat_id),
    jid = COALESCE(u.jid, m.jid),
    message_text = COALESCE(u.message_text, m.message_text),
    message_url = COALESCE(u.message_url, m.message_url),
    message_type = COALESCE(u.message_type, m.message_type),
    flow = COALESCE(u.flow, m.flow),
    agent_id = COALESCE(u.agent_id, m.agent_id),
    company_id = $20,
    status = CASE WHEN u.status_rank > COALESCE(m.status_rank, -1) THEN u.status ELSE m.status END,
    status_rank = CASE WHEN u.status_rank > COALESCE(m.status_rank, -1) THEN u.status_rank ELSE m.status_rank END,
    key = COALESCE(u.key::jsonb, m.key),
    message_obj = COALESCE(u.message_obj::jsonb, m.message_obj),
    edited_message_obj = COALESCE(u.edited_message_obj::jsonb, m.edited_message_obj),
    is_deleted = COALESCE(u.is_deleted, m.is_deleted),
    message_timestamp = COALESCE(u.message_timestamp, m.message_timestamp),
    last_metadata = u.meta::jsonb,
    updated_at = now()
WHEN NOT MATCHED THEN INSERT (message_id, message_date, from_phone, to_phone, chat_id, jid,
                              message_text, message_url, message_type, flow, agent_id, company_id,
                              status, status_rank, key, message_obj, edited_message_obj,
                              is_deleted, message_timestamp, last_metadata)
VALUES (u.message_id, u.message_date, u.from_phone, u.to_phone, u.chat_id, u.jid, u.message_text,
        u.message_url, u.message_type, u.flow, u.agent_id, $20, u.status, u.status_rank,
        u.key::jsonb, u.message_obj::jsonb, u.edited_message_obj::jsonb,
        COALESCE(u.is_deleted, false), u.message_timestamp, u.meta::jsonb)
"#;

/// Message patches for one statement; each `message_id` appears at most once.
#[derive(Default)]
pub struct MessagePatchRows<'a> {
    rows: Vec<PatchRow<'a>>,
}

struct PatchRow<'a> {
    message_id: &'a str,
    status: Option<&'a str>,
    status_rank: Option<i16>,
    edited_message_obj: Option<&'a str>,
    message_url: Option<&'a str>,
    is_deleted: Option<bool>,
    meta: &'a str,
}

impl<'a> MessagePatchRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn push(&mut self, p: &'a MessagePatch<'a>, meta: &'a str) {
        self.rows.push(PatchRow {
            message_id: &p.message_id,
            status: p.status.as_deref(),
            status_rank: p.status.as_deref().map(status_rank),
            edited_message_obj: raw(&p.edited_message_obj),
            message_url: p.message_url.as_deref(),
            is_deleted: p.is_deleted,
            meta,
        });
    }

    /// Folds patch `p`, the next one for the message of row `row`, into that row, so that
    /// applying the row once has the effect of applying its patches one after the other:
    /// the status of the highest rank wins (the earlier one on a tie), and every other field
    /// takes the latest value sent.
    pub fn fold(&mut self, row: usize, p: &'a MessagePatch<'a>, meta: &'a str) {
        let r = &mut self.rows[row];
        debug_assert_eq!(r.message_id, p.message_id.as_str());
        let rank = p.status.as_deref().map(status_rank);
        if rank.is_some_and(|new| r.status_rank.is_none_or(|old| new > old)) {
            r.status = p.status.as_deref();
            r.status_rank = rank;
        }
        if let Some(edit) = raw(&p.edited_message_obj) {
            r.edited_message_obj = Some(edit);
        }
        if let Some(url) = p.message_url.as_deref() {
            r.message_url = Some(url);
        }
        if let Some(deleted) = p.is_deleted {
            r.is_deleted = Some(deleted);
        }
        r.meta = meta;
    }

    /// The statement applying the patches; its rows are the ids of the messages found
    /// ([`MessagePatchRows::found`]).
    pub fn statement(&self) -> Option<Statement<'_>> {
        if self.is_empty() {
            return None;
        }
        let rows = &self.rows;
        Some(
            Statement::new(PATCH_MESSAGES)
                .bind(column(rows, |r| r.message_id))
                .bind(column(rows, |r| r.status))
                .bind(column(rows, |r| r.status_rank))
                .bind(column(rows, |r| r.edited_message_obj))
                .bind(column(rows, |r| r.message_url))
                .bind(column(rows, |r| r.is_deleted))
                .bind(column(rows, |r| r.meta)),
        )
    }

    /// The ids of the messages found, from the rows of [`MessagePatchRows::statement`].
    pub fn found(rows: &[sqlx::postgres::PgRow]) -> Result<HashSet<String>, sqlx::Error> {
        use sqlx::Row;
        rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
    }
}

const PATCH_MESSAGES: &str = r#"
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[], $6::bool[], $7::text[])
        AS u(message_id, status, status_rank, edited_message_obj, message_url, is_deleted, meta)
)
UPDATE messages m SET
    status = CASE WHEN u.status_rank > COALESCE(m.status_rank, -1) THEN u.status ELSE m.status END,
    status_rank = CASE WHEN u.status_rank > COALESCE(m.status_rank, -1) THEN u.status_rank ELSE m.status_rank END,
    edited_message_obj = COALESCE(u.edited_message_obj::jsonb, m.edited_message_obj),
    message_url = COALESCE(u.message_url, m.message_url),
    is_deleted = COALESCE(u.is_deleted, m.is_deleted),
    last_metadata = u.meta::jsonb,
    updated_at = now()
FROM u
WHERE m.message_id = u.message_id
RETURNING m.message_id
"#;
