//! Agent writes: last writer wins by JetStream publish time; `qr_code` lives only while the
//! agent's status is `QR`.

use chrono::{DateTime, Utc};

use crate::model::AgentPayload;

use super::column;
use super::script::Statement;

/// Agent upserts for one statement; each `agent_id` appears at most once.
#[derive(Default)]
pub struct AgentRows<'a> {
    rows: Vec<(&'a AgentPayload<'a>, DateTime<Utc>, &'a str)>,
}

impl<'a> AgentRows<'a> {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn push(&mut self, a: &'a AgentPayload<'a>, published_at: DateTime<Utc>, meta: &'a str) {
        self.rows.push((a, published_at, meta));
    }

    /// The statement writing these rows (none when there are none).
    pub fn statement<'s>(&'s self, company: &'s str) -> Option<Statement<'s>> {
        if self.is_empty() {
            return None;
        }
        let rows = &self.rows;
        Some(
            Statement::new(UPSERT_AGENTS)
                .bind(column(rows, |(a, ..)| a.agent_id.as_str()))
                .bind(column(rows, |(a, ..)| a.qr_code.as_deref()))
                .bind(column(rows, |(a, ..)| a.status.as_deref()))
                .bind(column(rows, |(a, ..)| a.agent_name.as_deref()))
                .bind(column(rows, |(a, ..)| a.phone_number.as_deref()))
                .bind(column(rows, |(a, ..)| a.host_name.as_deref()))
                .bind(column(rows, |(a, ..)| a.version.as_deref()))
                .bind(column(rows, |(_, published_at, _)| *published_at))
                .bind(column(rows, |(.., meta)| *meta))
                .bind(company),
        )
    }
}

const UPSERT_AGENTS: &str = r#"
INSERT INTO agents AS a (agent_id, qr_code, status, agent_name, phone_number, host_name, version,
                         company_id, last_metadata, event_published_at)
SELECT u.agent_id, CASE WHEN u.status = 'QR' THEN u.qr_code END, u.status, u.agent_name,
       u.phone_number, u.host_name, u.version, $10, u.meta::jsonb, u.published_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::text[])
    AS u(agent_id, qr_code, status, agent_name, phone_number, host_name, version, published_at, meta)
ORDER BY u.agent_id
ON CONFLICT (agent_id) DO UPDATE SET
    qr_code = CASE WHEN COALESCE(EXCLUDED.status, a.status) = 'QR'
                   THEN COALESCE(EXCLUDED.qr_code, a.qr_code) END,
    status = COALESCE(EXCLUDED.status, a.status),
    agent_name = COALESCE(EXCLUDED.agent_name, a.agent_name),
    phone_number = COALESCE(EXCLUDED.phone_number, a.phone_number),
    host_name = COALESCE(EXCLUDED.host_name, a.host_name),
    version = COALESCE(EXCLUDED.version, a.version),
    company_id = EXCLUDED.company_id,
    last_metadata = EXCLUDED.last_metadata,
    event_published_at = EXCLUDED.event_published_at,
    updated_at = now()
WHERE a.event_published_at IS NULL OR EXCLUDED.event_published_at >= a.event_published_at
"#;
