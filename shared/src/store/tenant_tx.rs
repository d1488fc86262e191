//! The transaction every write to a tenant schema runs in.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use crate::model::TenantId;

/// Begins a transaction on the tenant's schema: `search_path` set to it (so statements are the
/// same text for every tenant and stay prepared), a lock timeout (a long table lock surfaces
/// as an error instead of a hang), and the tenant's advisory lock, which serialises writers of
/// one tenant across processes so that set-based "update, then insert the rest" statements
/// cannot race.
pub async fn begin(
    pool: &PgPool,
    tenant: &TenantId,
    lock_timeout: Duration,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query::<Postgres>(
        "SELECT set_config('search_path', $1, true),
                set_config('lock_timeout', $2, true),
                pg_advisory_xact_lock(hashtextextended($3, 0))::text",
    )
    .bind(tenant.schema_ident())
    .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
    .bind(format!("wa:tenant:{}", tenant.schema_name()))
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}
