//! `wa_system.tenants` on the main database: which company id owns each tenant schema (SPEC
//! §3), where the schema is placed and its state (SPEC §17).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use super::placement::TenantState;
use crate::model::TenantId;

/// A tenant as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRecord {
    pub tenant_id: String,
    pub schema_name: String,
    pub placement: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

impl TenantRecord {
    /// The recorded state (an unknown word counts as paused: its events wait).
    pub fn state(&self) -> TenantState {
        TenantState::parse(&self.state).unwrap_or(TenantState::Paused)
    }
}

const COLUMNS: &str = "tenant_id, schema_name, placement, state, created_at";

/// Records `tenant` as the owner of its schema, on the default placement, unless another id
/// already owns it, and returns the record (whose id may be the other owner's). Ids that differ
/// only in case share a schema name: the first one recorded owns it.
pub async fn claim(pool: &PgPool, tenant: &TenantId) -> Result<TenantRecord, sqlx::Error> {
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
    by_schema(pool, &schema)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// The record of the tenant whose schema is `schema`.
pub async fn by_schema<'e>(
    db: impl PgExecutor<'e>,
    schema: &str,
) -> Result<Option<TenantRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wa_system.tenants WHERE schema_name = $1"
    ))
    .bind(schema)
    .fetch_optional(db)
    .await
}

/// Every recorded tenant, by schema name.
pub async fn all(pool: &PgPool) -> Result<Vec<TenantRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wa_system.tenants ORDER BY schema_name"
    ))
    .fetch_all(pool)
    .await
}

/// Sets the state of the tenant whose schema is `schema`; false when it is not recorded.
pub async fn set_state<'e>(
    db: impl PgExecutor<'e>,
    schema: &str,
    state: TenantState,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE wa_system.tenants SET state = $2 WHERE schema_name = $1")
        .bind(schema)
        .bind(state.as_str())
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Places the tenant whose schema is `schema` on `placement`, in `state`.
pub async fn set_placement<'e>(
    db: impl PgExecutor<'e>,
    schema: &str,
    placement: &str,
    state: TenantState,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE wa_system.tenants SET placement = $2, state = $3 WHERE schema_name = $1",
    )
    .bind(schema)
    .bind(placement)
    .bind(state.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
