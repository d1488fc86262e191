//! `wa_system.tenants`: which company id owns each tenant schema (SPEC §3).

use sqlx::PgPool;

use crate::model::TenantId;

/// Records `tenant` as the owner of its schema unless another id already owns it, and returns
/// the owner's id. Ids that differ only in case share a schema name: the first one recorded
/// owns it.
pub async fn claim(pool: &PgPool, tenant: &TenantId) -> Result<String, sqlx::Error> {
    let schema = tenant.schema_name();
    sqlx::query(
        "INSERT INTO wa_system.tenants (schema_name, tenant_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(&schema)
    .bind(tenant.as_str())
    .execute(pool)
    .await?;
    // A separate statement: it sees a row another process committed while this one waited.
    sqlx::query_scalar("SELECT tenant_id FROM wa_system.tenants WHERE schema_name = $1")
        .bind(&schema)
        .fetch_one(pool)
        .await
}
