//! Pausing a tenant (its writes fenced off its database, its events waiting) and resuming it.

use serde::Serialize;
use sqlx::PgPool;
use tracing::info;

use super::{prepare_main, record_of, recorded, During, MoveError, Step, TenantLock};
use crate::model::TenantId;
use crate::store::placement::{self, Placements, TenantState};
use crate::store::tenants::{self, TenantRecord};

/// The state a pause or resume left a tenant in.
#[derive(Debug, Clone, Serialize)]
pub struct StateChange {
    pub tenant: String,
    pub schema: String,
    pub placement: String,
    pub before: String,
    pub after: String,
}

/// Pauses `tenant`: its state becomes paused, then its schema is fenced on its placement (after
/// the writers inside it commit). Its events wait until [`resume`].
pub async fn pause(placements: &Placements, tenant: &TenantId) -> Result<StateChange, MoveError> {
    prepare_main(placements).await?;
    let lock = TenantLock::take(&placements.main().pool, tenant).await?;
    let result = async {
        let main = &placements.main().pool;
        let record = record_of(main, tenant).await?;
        refuse_moving(main, tenant, &record).await?;
        let db = placements.db(&record.placement)?;
        let schema = tenant.schema_name();
        tenants::set_state(main, &schema, TenantState::Paused)
            .await
            .during(|| "setting the state".into())?;
        placement::fence(&db.pool, &schema, "paused")
            .await
            .during(|| format!("fencing {schema} on {}", db.name))?;
        info!(%schema, placement = %db.name, "tenant paused");
        Ok(StateChange {
            tenant: tenant.to_string(),
            schema,
            placement: record.placement.clone(),
            before: record.state.clone(),
            after: TenantState::Paused.to_string(),
        })
    }
    .await;
    lock.release().await;
    result
}

/// Resumes `tenant` (paused, or left moving without a recorded move): lifts its fence on its
/// placement, then makes it active. Refused while a move of it is in progress.
pub async fn resume(placements: &Placements, tenant: &TenantId) -> Result<StateChange, MoveError> {
    prepare_main(placements).await?;
    let lock = TenantLock::take(&placements.main().pool, tenant).await?;
    let result = async {
        let main = &placements.main().pool;
        let record = record_of(main, tenant).await?;
        let schema = tenant.schema_name();
        if let Some(m) = recorded(main, &schema)
            .await
            .during(|| "reading wa_system.tenant_moves".into())?
            .filter(|m| m.step() != Step::Done)
        {
            return Err(MoveError::Moving {
                tenant: tenant.to_string(),
                to: m.target.clone(),
                step: m.step(),
            });
        }
        let db = placements.db(&record.placement)?;
        placement::unfence(&db.pool, &schema)
            .await
            .during(|| format!("lifting the fence of {schema} on {}", db.name))?;
        tenants::set_state(main, &schema, TenantState::Active)
            .await
            .during(|| "setting the state".into())?;
        info!(%schema, placement = %db.name, "tenant resumed");
        Ok(StateChange {
            tenant: tenant.to_string(),
            schema,
            placement: record.placement.clone(),
            before: record.state.clone(),
            after: TenantState::Active.to_string(),
        })
    }
    .await;
    lock.release().await;
    result
}

/// Refuses to pause a tenant being moved.
async fn refuse_moving(
    main: &PgPool,
    tenant: &TenantId,
    record: &TenantRecord,
) -> Result<(), MoveError> {
    if let Some(m) = recorded(main, &record.schema_name)
        .await
        .during(|| "reading wa_system.tenant_moves".into())?
        .filter(|m| m.step() != Step::Done)
    {
        return Err(MoveError::Moving {
            tenant: tenant.to_string(),
            to: m.target.clone(),
            step: m.step(),
        });
    }
    Ok(())
}
