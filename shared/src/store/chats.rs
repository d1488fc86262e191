//! Chat writes: upserts (absolute unread, timestamp-guarded), updates (unread deltas), and the
//! "ensure the chat exists" side effect of messages — each as one set-based statement.

use sqlx::{PgConnection, Postgres};

use crate::model::fields::{chat_id_suffix, is_group_jid, is_placeholder_name, phone_from_jid};
use crate::model::ChatPayload;

/// Chat patches for one statement; each `chat_id` appears at most once.
#[derive(Default)]
pub struct ChatRows<'a> {
    chat_id: Vec<&'a str>,
    jid: Vec<Option<&'a str>>,
    push_name: Vec<Option<&'a str>>,
    push_placeholder: Vec<bool>,
    custom_name: Vec<Option<&'a str>>,
    group_name: Vec<Option<&'a str>>,
    group_placeholder: Vec<bool>,
    phone_number: Vec<Option<&'a str>>,
    agent_id: Vec<Option<&'a str>>,
    assigned_to: Vec<Option<&'a str>>,
    is_group: Vec<Option<bool>>,
    not_spam: Vec<Option<bool>>,
    unread: Vec<Option<i32>>,
    delta: Vec<bool>,
    last_message: Vec<Option<&'a str>>,
    conversation_timestamp: Vec<Option<i64>>,
    insert_phone: Vec<Option<&'a str>>,
    insert_is_group: Vec<Option<bool>>,
    meta: Vec<&'a str>,
}

impl<'a> ChatRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.chat_id.is_empty()
    }

    /// Adds a chat write. `delta` marks `chats.update`, whose unread count is a delta and
    /// whose derived fields (phone from the chat id) only fill a newly created row.
    pub fn push(&mut self, c: &'a ChatPayload, delta: bool, meta: &'a str) {
        let jid = c.jid.as_deref();
        let derived_phone = jid.and_then(phone_from_jid);
        let derived_group = jid.map(is_group_jid);
        // chats.upsert derives phone and is_group from the jid whenever they are absent.
        let (phone, is_group) = if delta {
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
        self.chat_id.push(&c.chat_id);
        self.jid.push(jid);
        self.push_name.push(c.push_name.as_deref());
        self.push_placeholder
            .push(placeholder(c.push_name.as_deref()));
        self.custom_name.push(c.custom_name.as_deref());
        self.group_name.push(c.group_name.as_deref());
        self.group_placeholder
            .push(placeholder(c.group_name.as_deref()));
        self.phone_number.push(phone);
        self.agent_id.push(c.agent_id.as_deref());
        self.assigned_to.push(c.assigned_to.as_deref());
        self.is_group.push(is_group);
        self.not_spam.push(c.not_spam);
        self.unread.push(c.unread_count);
        self.delta.push(delta);
        self.last_message
            .push(c.last_message.as_deref().map(|r| r.get()));
        self.conversation_timestamp.push(c.conversation_timestamp);
        self.insert_phone
            .push(derived_phone.or(Some(chat_id_suffix(&c.chat_id))));
        self.insert_is_group.push(derived_group);
        self.meta.push(meta);
    }

    pub async fn write(&self, conn: &mut PgConnection, company: &str) -> Result<(), sqlx::Error> {
        if self.is_empty() {
            return Ok(());
        }
        sqlx::query::<Postgres>(UPSERT_CHATS)
            .bind(&self.chat_id)
            .bind(&self.jid)
            .bind(&self.push_name)
            .bind(&self.push_placeholder)
            .bind(&self.custom_name)
            .bind(&self.group_name)
            .bind(&self.group_placeholder)
            .bind(&self.phone_number)
            .bind(&self.agent_id)
            .bind(&self.assigned_to)
            .bind(&self.is_group)
            .bind(&self.not_spam)
            .bind(&self.unread)
            .bind(&self.delta)
            .bind(&self.last_message)
            .bind(&self.conversation_timestamp)
            .bind(&self.insert_phone)
            .bind(&self.insert_is_group)
            .bind(&self.meta)
            .bind(company)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Last message and absolute unread count are applied only when the event is not older
/// than the stored conversation (0 or NULL stored = nothing known yet).
const UPSERT_CHATS: &str = r#"
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::text[],
                         $7::bool[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::bool[],
                         $13::int4[], $14::bool[], $15::text[], $16::int8[], $17::text[], $18::bool[],
                         $19::text[])
        AS u(chat_id, jid, push_name, push_ph, custom_name, group_name, group_ph, phone_number,
             agent_id, assigned_to, is_group, not_spam, unread, delta, last_message, conv_ts,
             ins_phone, ins_is_group, meta)
), upd AS (
    UPDATE chats c SET
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
        company_id = $20,
        assigned_to = COALESCE(u.assigned_to, c.assigned_to),
        is_group = COALESCE(u.is_group, c.is_group),
        not_spam = COALESCE(u.not_spam, c.not_spam),
        unread_count = CASE
            WHEN u.unread IS NULL THEN c.unread_count
            WHEN u.delta THEN CASE
                WHEN u.unread > 0 THEN COALESCE(c.unread_count, 0) + u.unread
                WHEN u.unread = 0 THEN 0
                ELSE GREATEST(COALESCE(c.unread_count, 0), 1) END
            WHEN COALESCE(c.conversation_timestamp, 0) = 0
                 OR COALESCE(u.conv_ts, 0) >= c.conversation_timestamp THEN u.unread
            ELSE c.unread_count END,
        last_message = CASE
            WHEN u.last_message IS NULL THEN c.last_message
            WHEN COALESCE(c.conversation_timestamp, 0) = 0
                 OR COALESCE(u.conv_ts, 0) >= c.conversation_timestamp THEN u.last_message::jsonb
            ELSE c.last_message END,
        conversation_timestamp = GREATEST(c.conversation_timestamp, NULLIF(u.conv_ts, 0)),
        last_metadata = u.meta::jsonb,
        updated_at = now()
    FROM u
    WHERE c.chat_id = u.chat_id
    RETURNING c.chat_id
)
INSERT INTO chats (chat_id, jid, push_name, custom_name, group_name, phone_number, agent_id,
                   company_id, assigned_to, is_group, not_spam, unread_count, last_message,
                   conversation_timestamp, last_metadata)
SELECT u.chat_id, u.jid, u.push_name, u.custom_name, u.group_name,
       COALESCE(u.phone_number, u.ins_phone), u.agent_id, $20, u.assigned_to,
       COALESCE(u.is_group, u.ins_is_group), u.not_spam,
       CASE WHEN u.delta AND u.unread < 0 THEN 1 ELSE u.unread END,
       u.last_message::jsonb, NULLIF(u.conv_ts, 0), u.meta::jsonb
FROM u
WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.chat_id = u.chat_id)
"#;

/// Chats that messages refer to: created when missing, NULL jid/phone/is_group filled in.
#[derive(Default)]
pub struct ChatEnsureRows<'a> {
    chat_id: Vec<&'a str>,
    jid: Vec<Option<&'a str>>,
    phone_number: Vec<Option<&'a str>>,
    agent_id: Vec<Option<&'a str>>,
    is_group: Vec<Option<bool>>,
    meta: Vec<&'a str>,
    index: std::collections::HashMap<&'a str, usize>,
}

impl<'a> ChatEnsureRows<'a> {
    pub fn push(
        &mut self,
        chat_id: &'a str,
        jid: Option<&'a str>,
        agent_id: Option<&'a str>,
        meta: &'a str,
    ) {
        let phone = match jid {
            Some(j) => phone_from_jid(j),
            None => Some(chat_id_suffix(chat_id)),
        };
        let is_group = jid.map(is_group_jid);
        if let Some(&i) = self.index.get(chat_id) {
            // Keep one row per chat; a later message may know the jid the first did not.
            if self.jid[i].is_none() && jid.is_some() {
                self.jid[i] = jid;
                self.phone_number[i] = phone;
                self.is_group[i] = is_group;
            }
            return;
        }
        self.index.insert(chat_id, self.chat_id.len());
        self.chat_id.push(chat_id);
        self.jid.push(jid);
        self.phone_number.push(phone);
        self.agent_id.push(agent_id);
        self.is_group.push(is_group);
        self.meta.push(meta);
    }

    pub async fn write(&self, conn: &mut PgConnection, company: &str) -> Result<(), sqlx::Error> {
        if self.chat_id.is_empty() {
            return Ok(());
        }
        sqlx::query::<Postgres>(ENSURE_CHATS)
            .bind(&self.chat_id)
            .bind(&self.jid)
            .bind(&self.phone_number)
            .bind(&self.agent_id)
            .bind(&self.is_group)
            .bind(&self.meta)
            .bind(company)
            .execute(conn)
            .await?;
        Ok(())
    }
}

const ENSURE_CHATS: &str = r#"
INSERT INTO chats AS c (chat_id, jid, phone_number, agent_id, is_group, company_id, last_metadata)
SELECT u.chat_id, u.jid, u.phone_number, u.agent_id, u.is_group, $7, u.meta::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[])
    AS u(chat_id, jid, phone_number, agent_id, is_group, meta)
ORDER BY u.chat_id
ON CONFLICT (chat_id) DO UPDATE SET
    jid = COALESCE(c.jid, EXCLUDED.jid),
    phone_number = COALESCE(c.phone_number, EXCLUDED.phone_number),
    is_group = COALESCE(c.is_group, EXCLUDED.is_group),
    last_metadata = EXCLUDED.last_metadata,
    updated_at = now()
WHERE (c.jid IS NULL AND EXCLUDED.jid IS NOT NULL)
   OR (c.phone_number IS NULL AND EXCLUDED.phone_number IS NOT NULL)
   OR (c.is_group IS NULL AND EXCLUDED.is_group IS NOT NULL)
"#;
