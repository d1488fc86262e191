//! The transaction a batch's writes run in: every tenant of the batch on one connection, in
//! a few [`Script`]s, whatever the number of tenants.
//!
//! * The first script begins the transaction ([`BatchTx::begin_into`]); the tenants' locks are
//!   taken with [`BatchTx::enter_all_into`] (one statement for all of them), in the order of
//!   their schema names, so two batches that share tenants take their locks in the same order
//!   and cannot deadlock (two schema names whose 64-bit lock keys collide could still meet in a
//!   deadlock, which Postgres detects and the writer runs again as a conflict); each tenant's
//!   statements follow [`BatchTx::switch_into`] its schema.
//! * [`BatchTx::commit_into`] ends the last script with the commit, so a batch whose writes
//!   need nothing back costs two round trips.
//! * A failed or abandoned transaction is rolled back, or its connection closed, before the
//!   connection goes back to the pool.

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres};
use std::time::Duration;
use tracing::debug;

use super::script::{Script, ScriptError};
pub(crate) use super::tenant_tx::fenced_schema;
use super::tenant_tx::{
    enter_all_statement, settings_statement, switch_statement, tenant_lock_key,
};
use crate::model::TenantId;

/// An open batch transaction (see the module).
pub struct BatchTx {
    conn: PoolConnection<Postgres>,
    lock_timeout: Duration,
    /// A transaction may be open on the connection (rolled back before the connection is
    /// reused).
    open: bool,
}

/// A connection for a batch. Waiting for a connection while every one is busy is not an
/// outage: only when the pool cannot open one does the wait end in an error.
pub async fn acquire(pool: &PgPool, lock_timeout: Duration) -> Result<BatchTx, sqlx::Error> {
    loop {
        match pool.acquire().await {
            Err(sqlx::Error::PoolTimedOut) if busy(pool) => {
                debug!("every database connection is busy; waiting on");
            }
            Err(e) => return Err(e),
            Ok(conn) => {
                return Ok(BatchTx {
                    conn,
                    lock_timeout,
                    open: false,
                })
            }
        }
    }
}

/// Every connection of the pool is open and in use.
fn busy(pool: &PgPool) -> bool {
    pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0
}

impl BatchTx {
    /// Adds the transaction's start and settings to `script` (the first one run).
    pub fn begin_into<T: Copy>(&self, script: &mut Script<T>, tag: T) {
        script.push_sql(tag, "BEGIN");
        script.push_sql(tag, &settings_statement(self.lock_timeout));
    }

    /// Adds "take the locks of `tenants`, in this order, refusing a fenced schema" to
    /// `script`, as one statement (a refusal names the schema: [`fenced_schema`]).
    pub fn enter_all_into<T: Copy>(script: &mut Script<T>, tag: T, tenants: &[&TenantId]) {
        let schemas: Vec<String> = tenants.iter().map(|t| t.schema_name()).collect();
        let keys: Vec<String> = tenants.iter().map(|t| tenant_lock_key(t)).collect();
        let schemas: Vec<&str> = schemas.iter().map(String::as_str).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        script
            .push(tag, &enter_all_statement(&schemas, &keys))
            .expect("schema names hold no NUL");
    }

    /// Adds "write to `tenant`'s schema" (its lock taken earlier) to `script`.
    pub fn switch_into<T: Copy>(script: &mut Script<T>, tag: T, tenant: &TenantId) {
        script.push_sql(tag, &switch_statement(tenant));
    }

    /// Adds the commit to `script` (the last one run).
    pub fn commit_into<T: Copy>(script: &mut Script<T>, tag: T) {
        script.push_sql(tag, "COMMIT");
    }

    /// Runs a script of this transaction. A script that ends with the commit closes it.
    pub async fn run<T: Copy>(
        &mut self,
        script: &Script<T>,
    ) -> Result<Vec<Vec<PgRow>>, ScriptError<T>> {
        self.open = true;
        let result = script.run(&mut self.conn).await;
        if result.is_ok() && script.ends_with_commit() {
            self.open = false;
        }
        result
    }

    /// Ends the transaction without its effects (after a failed script).
    pub async fn rollback(mut self) {
        if self.open
            && sqlx::raw_sql("ROLLBACK")
                .execute(&mut *self.conn)
                .await
                .is_ok()
        {
            self.open = false;
        }
    }
}

impl Drop for BatchTx {
    fn drop(&mut self) {
        if self.open {
            // Abandoned mid-transaction (an error on the way, or a cancelled future): the
            // connection is closed, which ends the transaction, instead of being reused.
            self.conn.close_on_drop();
        }
    }
}
