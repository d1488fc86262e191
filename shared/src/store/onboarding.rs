//! Onboarding's writes: which phones a tenant already knows, the `onboarding_log` row with the
//! contact it creates, and campaign attribution merged into existing contacts.

use std::collections::HashSet;

use sqlx::Postgres;

use super::TenantTx;

/// The phones of `phones` that already have a contact or an onboarding log row.
pub async fn known_phones(
    tx: &mut TenantTx,
    phones: &[&str],
) -> Result<HashSet<String>, sqlx::Error> {
    let known = sqlx::query_scalar::<Postgres, String>(
        "SELECT phone_number FROM contacts WHERE phone_number = ANY($1)
         UNION SELECT phone_number FROM onboarding_log WHERE phone_number = ANY($1)",
    )
    .bind(phones)
    .fetch_all(tx.conn())
    .await?;
    Ok(known.into_iter().collect())
}

/// The first message of a phone, and the contact it creates.
pub struct NewOnboarding<'a> {
    pub message_id: &'a str,
    pub agent_id: &'a str,
    pub phone: &'a str,
    pub message_timestamp: Option<i64>,
    /// `last_metadata` (JSON text).
    pub meta: &'a str,
    pub origin: &'a str,
    pub tags: Option<&'a str>,
    pub assigned_to: Option<&'a str>,
}

/// Logs the phone's onboarding and creates its contact (`ACTIVE`, chat id
/// `<agent_id>_<phone>`); returns whether this call onboarded the phone (a phone is logged
/// once, and only the call that logs it creates the contact).
pub async fn onboard(tx: &mut TenantTx, o: &NewOnboarding<'_>) -> Result<bool, sqlx::Error> {
    let (conn, company) = tx.parts();
    let logged = sqlx::query::<Postgres>(
        "INSERT INTO onboarding_log (message_id, agent_id, company_id, phone_number, \"timestamp\", last_metadata)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (phone_number) DO NOTHING",
    )
    .bind(o.message_id)
    .bind(o.agent_id)
    .bind(company)
    .bind(o.phone)
    .bind(o.message_timestamp)
    .bind(o.meta)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !logged {
        return Ok(false);
    }
    sqlx::query::<Postgres>(
        "INSERT INTO contacts (id, phone_number, agent_id, chat_id, push_name, origin, tags, assigned_to,
             status, first_message_id, first_message_timestamp, company_id, last_metadata)
         VALUES (gen_random_uuid()::text, $1, $2, $2 || '_' || $1, NULL, $3, $4, $5, 'ACTIVE', $6, $7, $8, $9::jsonb)
         ON CONFLICT (agent_id, phone_number) DO NOTHING",
    )
    .bind(o.phone)
    .bind(o.agent_id)
    .bind(o.origin)
    .bind(o.tags)
    .bind(o.assigned_to)
    .bind(o.message_id)
    .bind(o.message_timestamp)
    .bind(company)
    .bind(o.meta)
    .execute(conn)
    .await?;
    Ok(true)
}

/// The contacts of a phone (one per agent): id and tags.
pub async fn contact_tags(
    tx: &mut TenantTx,
    phone: &str,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as::<Postgres, (String, Option<String>)>(
        "SELECT id, tags FROM contacts WHERE phone_number = $1",
    )
    .bind(phone)
    .fetch_all(tx.conn())
    .await
}

/// Campaign attribution for one contact.
pub struct CampaignUpdate<'a> {
    /// The contact's tags, already merged with the campaign's.
    pub tags: Option<&'a str>,
    /// Replaces the contact's when not empty.
    pub assigned_to: Option<&'a str>,
    /// Fills the contact's when that is blank.
    pub origin: Option<&'a str>,
}

/// Applies campaign attribution to the contact `id`.
pub async fn update_campaign(
    tx: &mut TenantTx,
    id: &str,
    u: &CampaignUpdate<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query::<Postgres>(
        "UPDATE contacts SET tags = $2,
             assigned_to = CASE WHEN COALESCE($3, '') <> '' THEN $3 ELSE assigned_to END,
             origin = CASE WHEN COALESCE(origin, '') = '' THEN COALESCE(NULLIF($4, ''), origin) ELSE origin END,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(u.tags)
    .bind(u.assigned_to)
    .bind(u.origin)
    .execute(tx.conn())
    .await?;
    Ok(())
}
