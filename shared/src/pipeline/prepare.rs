//! Tenants' schemas made ready for their events: created, migrated and given the monthly
//! partitions their messages need. Kept off the write path: a batch writes the tenants that
//! are ready at once, while the others are prepared a few at a time on connections of their
//! own ([`crate::store::Schemas`]), and then written in a second transaction.

use futures::StreamExt;
use tracing::warn;

use crate::model::{ErrorType, TenantId};
use crate::store::failure::{classify, DbFailure};
use crate::store::SchemaError;

use super::inbound::DeadLetter;
use super::plan::Decoded;
use super::process::{Processor, Unavailable};

/// Tenants prepared at once by one batch (each on a connection of the schemas' own pool).
pub const PREPARE_CONCURRENCY: usize = 2;

/// Whether a tenant's schema is ready for its events.
pub(super) enum Prepared {
    Ready,
    /// Not now: the events are retried later, for this reason.
    Retry(String),
    /// Not until the schema is adopted: the events wait, spending no attempt (the refusal is
    /// logged and shown by [`crate::store::Schemas`], once in a while, not per event).
    Wait,
    /// Never: the events are refused, for this reason.
    Refused(DeadLetter),
}

impl Processor {
    /// Whether the tenant's schema and partitions are known to be ready for `decoded`,
    /// without asking the database.
    pub(super) fn is_ready(&self, tenant: &TenantId, decoded: &[Decoded<'_>]) -> bool {
        self.schemas.is_ready(tenant)
            && self
                .schemas
                .has_partitions(tenant, decoded.iter().flat_map(Decoded::message_dates))
    }

    /// Prepares the tenants, [`PREPARE_CONCURRENCY`] at a time; one result per tenant, in order.
    pub(super) async fn prepare_all(
        &self,
        tenants: &[(&TenantId, &[Decoded<'_>])],
    ) -> Result<Vec<Prepared>, Unavailable> {
        let results: Vec<Result<Prepared, Unavailable>> = futures::stream::iter(tenants)
            .map(|(tenant, decoded)| self.prepare(tenant, decoded))
            .buffered(PREPARE_CONCURRENCY)
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
            Err(SchemaError::AwaitingAdoption(_)) => return Ok(Prepared::Wait),
            Err(e @ SchemaError::Owned { .. }) => {
                warn!(tenant = %tenant, error = %e, "events refused");
                return Ok(Prepared::Refused(DeadLetter::new(
                    ErrorType::Tenant,
                    e.to_string(),
                )));
            }
            Err(SchemaError::Db(e)) => e,
            Ok(()) => match self
                .schemas
                .ensure_partitions(tenant, decoded.iter().flat_map(Decoded::message_dates))
                .await
            {
                Ok(()) => return Ok(Prepared::Ready),
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
