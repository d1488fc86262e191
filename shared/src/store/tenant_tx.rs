//! The transaction of a write to one tenant's schema (onboarding), typed by its tenant, and the
//! settings, lock and search-path statements that batch transactions ([`super::batch_tx`])
//! share with it.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::model::TenantId;
use crate::store::failure::{classify, DbFailure};
use crate::store::script::Statement;

/// An open transaction on one tenant's schema (see [`begin`]). The writes that take it cannot
/// reach another tenant's schema or name the wrong company.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    tenant: TenantId,
}

/// Begins a transaction on the tenant's schema: `search_path` set to it (so statements are the
/// same text for every tenant and stay prepared), a lock timeout (a long table lock surfaces
/// as an error instead of a hang), and the tenant's advisory lock, which serialises writers of
/// one tenant across processes so that set-based "update, then insert the rest" statements
/// cannot race, taken by `wa_system.enter_tenant`, which also refuses a fenced schema.
///
/// JIT compilation is off: these are short writes, and the planner's cost of a plan steered
/// away from sequential scans (below) is high enough to make Postgres spend tens of
/// milliseconds compiling each statement (measured: history batches 2× slower with it).
///
/// The planner is told to prefer index lookups (no sequential scans, hash or merge joins):
/// every write of a batch finds its rows by key, and a young tenant's tables are small, have
/// stale statistics and many dead row versions, on which the planner's choice of a sequential
/// scan costs 5–10× more than the index (measured: message upserts 3.0 → 0.8 ms per batch).
///
/// All of it is sent with the `BEGIN`, as one simple query: one round trip, not two.
pub async fn begin(
    pool: &PgPool,
    tenant: &TenantId,
    lock_timeout: Duration,
) -> Result<TenantTx, sqlx::Error> {
    let tx = pool
        .begin_with(begin_statement(tenant, lock_timeout))
        .await?;
    Ok(TenantTx {
        tx,
        tenant: tenant.clone(),
    })
}

impl TenantTx {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The connection, for the store's statements (`search_path` is the tenant's schema).
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The connection and the company id this tenant's rows are written with.
    pub(super) fn parts(&mut self) -> (&mut PgConnection, &str) {
        (&mut self.tx, self.tenant.as_str())
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Runs one item's write inside a savepoint. When the database refuses it (a data or
    /// constraint error: [`DbFailure::Permanent`]) its effects are rolled back and the refusal
    /// is returned as `Ok(Err(_))`: the transaction goes on without it. Any other failure ends
    /// the transaction (`Err`).
    pub async fn savepoint<T>(
        &mut self,
        write: impl AsyncFnOnce(&mut TenantTx) -> Result<T, sqlx::Error>,
    ) -> Result<Result<T, sqlx::Error>, sqlx::Error> {
        sqlx::query("SAVEPOINT item").execute(self.conn()).await?;
        match write(self).await {
            Ok(value) => {
                sqlx::query("RELEASE SAVEPOINT item")
                    .execute(self.conn())
                    .await?;
                Ok(Ok(value))
            }
            Err(e) if classify(&e) == DbFailure::Permanent => {
                sqlx::query("ROLLBACK TO SAVEPOINT item")
                    .execute(self.conn())
                    .await?;
                Ok(Err(e))
            }
            Err(e) => Err(e),
        }
    }
}

/// Begins a transaction outside any tenant (for the system schema, or writes that name their
/// schema): only the lock timeout is set, sent with the `BEGIN`.
pub(super) async fn begin_plain(
    pool: &PgPool,
    lock_timeout: Duration,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(format!(
        "BEGIN; SELECT set_config('lock_timeout', '{}ms', true)",
        lock_timeout.as_millis().max(1)
    ))
    .await
}

fn begin_statement(tenant: &TenantId, lock_timeout: Duration) -> String {
    format!(
        "BEGIN; SELECT set_config('search_path', {}, true), set_config('lock_timeout', '{}ms', true), \
         set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true), \
         set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true), \
         {}",
        quote_literal(&tenant.schema_ident()),
        lock_timeout.as_millis().max(1),
        enter_call(tenant),
    )
}

/// The settings every write transaction runs with (see [`begin`]), as one statement.
pub(crate) fn settings_statement(lock_timeout: Duration) -> String {
    format!(
        "SELECT set_config('lock_timeout', '{}ms', true), set_config('enable_seqscan', 'off', true), \
         set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true), \
         set_config('jit', 'off', true)",
        lock_timeout.as_millis().max(1)
    )
}

/// Makes `tenant`'s schema the one the next statements write to and takes the tenant's lock
/// (see [`begin`]), as one statement.
pub(crate) fn enter_statement(tenant: &TenantId) -> String {
    format!(
        "SELECT set_config('search_path', {}, true), {}",
        quote_literal(&tenant.schema_ident()),
        enter_call(tenant),
    )
}

/// Takes the tenant's lock, and fails with SQLSTATE `WAF01` when its schema is fenced on this
/// database (moved away or paused, see [`super::placement`]).
fn enter_call(tenant: &TenantId) -> String {
    format!(
        "wa_system.enter_tenant({}, {})",
        quote_literal(&tenant.schema_name()),
        quote_literal(&tenant_lock_key(tenant)),
    )
}

/// Makes `tenant`'s schema the one the next statements write to (its lock already taken): a
/// utility statement, which the server neither plans nor executes as a query.
pub(crate) fn switch_statement(tenant: &TenantId) -> String {
    format!("SET LOCAL search_path TO {}", tenant.schema_ident())
}

/// The statement that takes the locks of `tenants` (in the order given) and refuses a fenced
/// schema among them, as [`enter_call`] does for one: one statement for all of them. The
/// refusal names the schema ([`fenced_schema`]).
pub(crate) fn enter_all_statement<'a>(schemas: &[&'a str], keys: &[&'a str]) -> Statement<'a> {
    Statement::new(
        "SELECT wa_system.enter_tenant(s, k) FROM unnest($1::text[], $2::text[]) AS t(s, k)",
    )
    .bind(schemas.to_vec())
    .bind(keys.to_vec())
}

/// The schema a refusal of `wa_system.enter_tenant` names.
pub(crate) fn fenced_schema(message: &str) -> Option<&str> {
    message
        .strip_prefix("tenant schema ")?
        .split_once(" is fenced on this database")
        .map(|(schema, _)| schema)
}

pub(crate) fn tenant_lock_key(tenant: &TenantId) -> String {
    schema_lock_key(&tenant.schema_name())
}

/// The advisory lock every writer of a tenant schema takes (and an adoption of it).
pub(crate) fn schema_lock_key(schema: &str) -> String {
    format!("wa:tenant:{schema}")
}

/// `s` as an SQL string literal (standard_conforming_strings is on since PostgreSQL 9.1).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_statement_quotes_what_it_embeds() {
        let t = TenantId::parse("CMP_001").expect("tenant");
        let sql = begin_statement(&t, Duration::from_secs(5));
        assert!(sql.starts_with("BEGIN; "), "{sql}");
        assert!(
            sql.contains(r#"set_config('search_path', '"daisi_cmp_001"', true)"#),
            "{sql}"
        );
        assert!(sql.contains("'5000ms'"), "{sql}");
        assert!(
            sql.contains("wa_system.enter_tenant('daisi_cmp_001', 'wa:tenant:daisi_cmp_001')"),
            "{sql}"
        );
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(
            switch_statement(&t),
            r#"SET LOCAL search_path TO "daisi_cmp_001""#
        );
    }

    #[test]
    fn a_refusal_names_its_schema() {
        assert_eq!(
            fenced_schema("tenant schema daisi_a is fenced on this database (moved to eu)"),
            Some("daisi_a")
        );
        assert_eq!(fenced_schema("deadlock detected"), None);
    }
}
