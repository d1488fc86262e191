//! The transaction a batch's writes run in: every tenant of the batch on one connection, in
//! a few [`Script`]s, whatever the number of tenants.
//!
//! * The first script begins the transaction ([`BatchTx::begin_into`]); each tenant's schema
//!   and lock are entered with [`BatchTx::enter_into`], in the order of their schema names, so
//!   two batches that share tenants take their locks in the same order and cannot deadlock
//!   (two schema names whose 64-bit lock keys collide could still meet in a deadlock, which
//!   Postgres detects and the writer runs again as a conflict).
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
use super::tenant_tx::{enter_statement, settings_statement, switch_statement};
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

    /// Adds "write to `tenant`'s schema, under its lock" to `script`.
    pub fn enter_into<T: Copy>(script: &mut Script<T>, tag: T, tenant: &TenantId) {
        script.push_sql(tag, &enter_statement(tenant));
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
