//! The "ensure the chat exists" side effect of messages, as one set-based statement.

use crate::model::fields::{chat_id_suffix, is_group_jid, phone_from_jid};

use super::column;
use super::script::Statement;

/// Chats that messages refer to: created when missing, NULL jid/phone/is_group filled in.
#[derive(Default)]
pub struct ChatEnsureRows<'a> {
    rows: Vec<EnsureRow<'a>>,
    index: std::collections::HashMap<&'a str, usize>,
}

struct EnsureRow<'a> {
    chat_id: &'a str,
    jid: Option<&'a str>,
    phone_number: Option<&'a str>,
    agent_id: Option<&'a str>,
    is_group: Option<bool>,
    meta: &'a str,
}

impl<'a> ChatEnsureRows<'a> {
    pub fn push(
        &mut self,
        chat_id: &'a str,
        jid: Option<&'a str>,
        agent_id: Option<&'a str>,
        meta: &'a str,
    ) {
        let phone_number = match jid {
            Some(j) => phone_from_jid(j),
            None => Some(chat_id_suffix(chat_id)),
        };
        let is_group = jid.map(is_group_jid);
        if let Some(&i) = self.index.get(chat_id) {
            // Keep one row per chat; a later message may know the jid the first did not.
            let row = &mut self.rows[i];
            if row.jid.is_none() && jid.is_some() {
                row.jid = jid;
                row.phone_number = phone_number;
                row.is_group = is_group;
            }
            return;
        }
        self.index.insert(chat_id, self.rows.len());
        self.rows.push(EnsureRow {
            chat_id,
            jid,
            phone_number,
            agent_id,
            is_group,
            meta,
        });
    }

    /// The statement writing these rows (none when there are none).
    pub fn statement<'s>(&'s self, company: &'s str) -> Option<Statement<'s>> {
        if self.rows.is_empty() {
            return None;
        }
        let rows = &self.rows;
        Some(
            Statement::new(ENSURE_CHATS)
                .bind(column(rows, |r| r.chat_id))
                .bind(column(rows, |r| r.jid))
                .bind(column(rows, |r| r.phone_number))
                .bind(column(rows, |r| r.agent_id))
                .bind(column(rows, |r| r.is_group))
                .bind(column(rows, |r| r.meta))
                .bind(company),
        )
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
