//! Contact writes keyed by (`agent_id`, `phone_number`): patches that create missing rows with a
//! UUID id, `chat_id` defaulting to `<agent_id>_<phone_number>` and status `ACTIVE`.

use crate::model::fields::is_placeholder_name;
use crate::model::ContactPayload;

use super::column;
use super::script::Statement;

/// Contact patches for one statement; each key appears at most once.
#[derive(Default)]
pub struct ContactRows<'a> {
    rows: Vec<ContactRow<'a>>,
}

struct ContactRow<'a> {
    c: &'a ContactPayload<'a>,
    push_placeholder: bool,
    meta: &'a str,
}

impl<'a> ContactRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn push(&mut self, c: &'a ContactPayload<'a>, meta: &'a str) {
        let push_placeholder = c.push_name.as_deref().is_some_and(|n| {
            is_placeholder_name(n, Some(&c.phone_number), c.chat_id.as_deref(), None)
        });
        self.rows.push(ContactRow {
            c,
            push_placeholder,
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
            Statement::new(UPSERT_CONTACTS)
                .bind(column(rows, |r| r.c.phone_number.as_str()))
                .bind(column(rows, |r| r.c.agent_id.as_str()))
                .bind(column(rows, |r| r.c.chat_id.as_deref()))
                .bind(column(rows, |r| r.c.push_name.as_deref()))
                .bind(column(rows, |r| r.push_placeholder))
                .bind(column(rows, |r| r.c.custom_name.as_deref()))
                .bind(column(rows, |r| r.c.contact_type.as_deref()))
                .bind(column(rows, |r| r.c.notes.as_deref()))
                .bind(column(rows, |r| r.c.tags.as_deref()))
                .bind(column(rows, |r| r.c.origin.as_deref()))
                .bind(column(rows, |r| r.c.avatar.as_deref()))
                .bind(column(rows, |r| r.c.assigned_to.as_deref()))
                .bind(column(rows, |r| r.c.pob.as_deref()))
                .bind(column(rows, |r| r.c.gender.as_deref()))
                .bind(column(rows, |r| r.c.dob))
                .bind(column(rows, |r| r.c.status.as_deref()))
                .bind(column(rows, |r| r.c.first_message_id.as_deref()))
                .bind(column(rows, |r| r.c.first_message_timestamp))
                .bind(column(rows, |r| r.meta))
                .bind(company),
        )
    }
}

const UPSERT_CONTACTS: &str = r#"
MERGE INTO contacts c
USING (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                         $13::text[], $14::text[], $15::date[], $16::text[], $17::text[], $18::int8[],
                         $19::text[])
        AS u(phone_number, agent_id, chat_id, push_name, push_ph, custom_name, type, notes, tags,
             origin, avatar, assigned_to, pob, gender, dob, status, first_message_id,
             first_message_timestamp, meta)
) u ON c.agent_id = u.agent_id AND c.phone_number = u.phone_number
WHEN MATCHED THEN UPDATE SET
    chat_id = COALESCE(u.chat_id, c.chat_id),
    push_name = CASE
        WHEN u.push_name IS NULL THEN c.push_name
        WHEN c.push_name IS NULL THEN u.push_name
        WHEN u.push_ph THEN c.push_name
        ELSE u.push_name END,
    custom_name = COALESCE(u.custom_name, c.custom_name),
    type = COALESCE(u.type, c.type),
    notes = COALESCE(u.notes, c.notes),
    tags = COALESCE(u.tags, c.tags),
    origin = COALESCE(u.origin, c.origin),
    avatar = COALESCE(u.avatar, c.avatar),
    assigned_to = COALESCE(u.assigned_to, c.assigned_to),
    pob = COALESCE(u.pob, c.pob),
    gender = COALESCE(u.gender, c.gender),
    dob = COALESCE(u.dob, c.dob),
    status = COALESCE(u.status, c.status),
    first_message_id = COALESCE(u.first_message_id, c.first_message_id),
    first_message_timestamp = COALESCE(u.first_message_timestamp, c.first_message_timestamp),
    company_id = $20,
    last_metadata = u.meta::jsonb,
    updated_at = now()
WHEN NOT MATCHED THEN INSERT (id, phone_number, agent_id, chat_id, push_name, custom_name, type,
                              notes, tags, origin, avatar, assigned_to, pob, gender, dob, status,
                              first_message_id, first_message_timestamp, company_id, last_metadata)
VALUES (gen_random_uuid()::text, u.phone_number, u.agent_id,
        COALESCE(u.chat_id, u.agent_id || '_' || u.phone_number), u.push_name, u.custom_name,
        u.type, u.notes, u.tags, u.origin, u.avatar, u.assigned_to, u.pob, u.gender, u.dob,
        COALESCE(u.status, 'ACTIVE'), u.first_message_id, u.first_message_timestamp, $20,
        u.meta::jsonb)
"#;
