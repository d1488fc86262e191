//! Message writes: one row per `message_id` whatever the order or repetition of events, with a
//! rank-monotonic status; and patches (`messages.update`) that report messages not found yet.

use std::collections::HashSet;

use chrono::NaiveDate;
use sqlx::{PgConnection, Postgres};

use crate::model::fields::status_rank;
use crate::model::{MessagePatch, MessagePayload};

/// Message upserts for one statement; each `message_id` appears at most once.
#[derive(Default)]
pub struct MessageRows<'a> {
    message_id: Vec<&'a str>,
    message_date: Vec<NaiveDate>,
    from_phone: Vec<Option<&'a str>>,
    to_phone: Vec<Option<&'a str>>,
    chat_id: Vec<&'a str>,
    jid: Vec<Option<&'a str>>,
    message_text: Vec<Option<&'a str>>,
    message_url: Vec<Option<&'a str>>,
    message_type: Vec<Option<&'a str>>,
    flow: Vec<&'a str>,
    agent_id: Vec<Option<&'a str>>,
    status: Vec<Option<&'a str>>,
    status_rank: Vec<Option<i16>>,
    key: Vec<Option<&'a str>>,
    message_obj: Vec<Option<&'a str>>,
    edited_message_obj: Vec<Option<&'a str>>,
    is_deleted: Vec<Option<bool>>,
    message_timestamp: Vec<Option<i64>>,
    meta: Vec<&'a str>,
}

fn raw(v: &Option<Box<serde_json::value::RawValue>>) -> Option<&str> {
    v.as_deref().map(|r| r.get())
}

impl<'a> MessageRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.message_id.is_empty()
    }

    /// Adds a message; `date` is used only if the row is created (it never moves).
    pub fn push(&mut self, m: &'a MessagePayload, date: NaiveDate, meta: &'a str) {
        self.message_id.push(&m.message_id);
        self.message_date.push(date);
        self.from_phone.push(m.from_phone.as_deref());
        self.to_phone.push(m.to_phone.as_deref());
        self.chat_id.push(&m.chat_id);
        self.jid.push(m.jid.as_deref());
        self.message_text.push(m.message_text.as_deref());
        self.message_url.push(m.message_url.as_deref());
        self.message_type.push(m.message_type.as_deref());
        self.flow.push(m.flow.as_str());
        self.agent_id.push(m.agent_id.as_deref());
        self.status.push(m.status.as_deref());
        self.status_rank.push(m.status.as_deref().map(status_rank));
        self.key.push(raw(&m.key));
        self.message_obj.push(raw(&m.message_obj));
        self.edited_message_obj.push(raw(&m.edited_message_obj));
        self.is_deleted.push(m.is_deleted);
        self.message_timestamp.push(m.message_timestamp);
        self.meta.push(meta);
    }

    pub async fn write(&self, conn: &mut PgConnection, company: &str) -> Result<(), sqlx::Error> {
        if self.is_empty() {
            return Ok(());
        }
        sqlx::query::<Postgres>(UPSERT_MESSAGES)
            .bind(&self.message_id)
            .bind(&self.message_date)
            .bind(&self.from_phone)
            .bind(&self.to_phone)
            .bind(&self.chat_id)
            .bind(&self.jid)
            .bind(&self.message_text)
            .bind(&self.message_url)
            .bind(&self.message_type)
            .bind(&self.flow)
            .bind(&self.agent_id)
            .bind(&self.status)
            .bind(&self.status_rank)
            .bind(&self.key)
            .bind(&self.message_obj)
            .bind(&self.edited_message_obj)
            .bind(&self.is_deleted)
            .bind(&self.message_timestamp)
            .bind(&self.meta)
            .bind(company)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Rows are found by `message_id` alone (any partition), so a message keeps the date it was
/// created with; writers of a tenant are serialised by the tenant lock, so the insert of
/// the rows not found cannot race another writer.
const UPSERT_MESSAGES: &str = r#"
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::int2[], $14::text[], $15::text[], $16::text[], $17::bool[], $18::int8[],
                         $19::text[])
        AS u(message_id, message_date, from_phone, to_phone, chat_id, jid, message_text,
             message_url, message_type, flow, agent_id, status, status_rank, key, message_obj,
             edited_message_obj, is_deleted, message_timestamp, meta)
), upd AS (
    UPDATE messages m SET
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
    FROM u
    WHERE m.message_id = u.message_id
    RETURNING m.message_id
)
INSERT INTO messages (message_id, message_date, from_phone, to_phone, chat_id, jid, message_text,
                      message_url, message_type, flow, agent_id, company_id, status, status_rank,
                      key, message_obj, edited_message_obj, is_deleted, message_timestamp,
                      last_metadata)
SELECT u.message_id, u.message_date, u.from_phone, u.to_phone, u.chat_id, u.jid, u.message_text,
       u.message_url, u.message_type, u.flow, u.agent_id, $20, u.status, u.status_rank,
       u.key::jsonb, u.message_obj::jsonb, u.edited_message_obj::jsonb,
       COALESCE(u.is_deleted, false), u.message_timestamp, u.meta::jsonb
FROM u
WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.message_id = u.message_id)
"#;

/// Message patches for one statement; each `message_id` appears at most once.
#[derive(Default)]
pub struct MessagePatchRows<'a> {
    message_id: Vec<&'a str>,
    status: Vec<Option<&'a str>>,
    status_rank: Vec<Option<i16>>,
    edited_message_obj: Vec<Option<&'a str>>,
    message_url: Vec<Option<&'a str>>,
    is_deleted: Vec<Option<bool>>,
    meta: Vec<&'a str>,
}

impl<'a> MessagePatchRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.message_id.is_empty()
    }

    pub fn push(&mut self, p: &'a MessagePatch, meta: &'a str) {
        self.message_id.push(&p.message_id);
        self.status.push(p.status.as_deref());
        self.status_rank.push(p.status.as_deref().map(status_rank));
        self.edited_message_obj.push(raw(&p.edited_message_obj));
        self.message_url.push(p.message_url.as_deref());
        self.is_deleted.push(p.is_deleted);
        self.meta.push(meta);
    }

    /// Applies the patches and returns the ids of the messages that were found.
    pub async fn write(&self, conn: &mut PgConnection) -> Result<HashSet<String>, sqlx::Error> {
        if self.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> = sqlx::query_scalar::<Postgres, String>(PATCH_MESSAGES)
            .bind(&self.message_id)
            .bind(&self.status)
            .bind(&self.status_rank)
            .bind(&self.edited_message_obj)
            .bind(&self.message_url)
            .bind(&self.is_deleted)
            .bind(&self.meta)
            .fetch_all(conn)
            .await?;
        Ok(found.into_iter().collect())
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
