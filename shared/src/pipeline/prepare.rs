//! Tenants' schemas made ready for their events: created, migrated and given the monthly
//! partitions their messages need. Kept off the write path: a batch writes the tenants that
//! are ready at once, while the others are prepared a few at a time on connections of their
//! own ([`crate::store::Schemas`]), and then written in a second transaction.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::{debug, warn};

use crate::model::{ErrorType, TenantId};
use crate::store::failure::{classify, DbFailure};
use crate::store::placement::Db;
use crate::store::schema::{schema_connections, ADOPTION_RECHECK};
use crate::store::SchemaError;

use super::batch_write::HELD_RECHECK;

use super::inbound::DeadLetter;
use super::plan::Decoded;
use super::process::{Processor, Unavailable};

/// Whether a tenant's schema is ready for its events.
pub(super) enum Prepared {
    /// Ready, on this database.
    Ready(Arc<Db>),
    /// Not now: the events are retried later, for this reason.
    Retry(String),
    /// Not until the schema is adopted (the refusal is logged and shown by
    /// [`crate::store::Schemas`], once in a while, not per event), or the tenant is resumed,
    /// moved, or its database is back: the events wait this long, spending no attempt.
    Wait(Duration),
    /// Never: the events are refused, for this reason.
    Refused(DeadLetter),
}

impl Processor {
    /// Whether the tenant's schema and partitions are known to be ready for `decoded`,
    /// without asking the database.
    /// The database of the tenant, when its schema and partitions are known to be ready for
    /// `decoded`, without asking the database.
    pub(super) fn ready_db(&self, tenant: &TenantId, decoded: &[Decoded<'_>]) -> Option<Arc<Db>> {
        self.schemas.db_of(tenant).filter(|_| {
            self.schemas
                .has_partitions(tenant, decoded.iter().flat_map(Decoded::message_dates))
        })
    }

    /// Prepares the tenants, as many at a time as the schemas' own pool has connections
    /// ([`schema_connections`]); one result per tenant, in order.
    pub(super) async fn prepare_all(
        &self,
        tenants: &[(&TenantId, &[Decoded<'_>])],
    ) -> Result<Vec<Prepared>, Unavailable> {
        let results: Vec<Result<Prepared, Unavailable>> = futures::stream::iter(tenants)
            .map(|(tenant, decoded)| self.prepare(tenant, decoded))
            .buffered(schema_connections() as usize)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Schema and partitions of the tenant, for these events.
    async fn prepare(
        &self,
        tenant: &TenantId,
        decoded: &[Decoded<'_>],
    ) -> Result<Prepared, Unavailable> {
        let e = match self.schemas.ensure(tenant).await {
            Err(SchemaError::NotMigrated(s)) => {
                return Ok(Prepared::Retry(format!("schema {s} is not migrated")))
            }
            Err(SchemaError::AwaitingAdoption(_)) => return Ok(Prepared::Wait(ADOPTION_RECHECK)),
            Err(SchemaError::Held { why, .. }) => {
                debug!(tenant = %tenant, why, "tenant held; its events wait");
                return Ok(Prepared::Wait(HELD_RECHECK));
            }
            Err(e @ SchemaError::Owned { .. }) => {
                warn!(tenant = %tenant, error = %e, "events refused");
                return Ok(Prepared::Refused(DeadLetter::new(
                    ErrorType::Tenant,
                    e.to_string(),
                )));
            }
            Err(SchemaError::Db(e)) => e,
            Ok(db) => match self
                .schemas
                .ensure_partitions(tenant, decoded.iter().flat_map(Decoded::message_dates))
                .await
            {
                Ok(()) => return Ok(Prepared::Ready(db)),
                Err(e) if classify(&e) == DbFailure::Unavailable && !db.is_main() => {
                    warn!(tenant = %tenant, placement = db.name, error = %e, "placement unavailable; the tenant's events wait");
                    return Ok(Prepared::Wait(HELD_RECHECK));
                }
                Err(e) => e,
            },
        };
        match classify(&e) {
            DbFailure::Unavailable => Err(Unavailable(e.to_string())),
            _ => {
                self.schemas.forget(tenant);
                Ok(Prepared::Retry(format!(
                    "preparing schema of {tenant}: {e}"
                )))
            }
        }
    }
}
