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
//! * A batch's tenants are spread over a few **lanes** ([`Lanes`]), and a lane keeps its
//!   connection between batches instead of giving it back to the pool: the same tenants come
//!   back to the same connection, so the statements prepared there for them
//!   ([`super::prepared`]) serve again, and each connection prepares only its lane's share of
//!   the tenants. A kept connection is known before its first statement, so even the inbox
//!   claims can be prepared. At least one connection of the pool is always left to other work.

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tracing::debug;

use super::script::{Script, ScriptError};
pub(crate) use super::tenant_tx::fenced_schema;
use super::tenant_tx::{
    enter_all_statement, settings_statement, switch_statement, tenant_lock_key,
};
use crate::model::TenantId;

/// Lanes a batch's tenants are written on at once, at most (each a transaction on a connection
/// of its own; the server runs each on its own core).
pub const WRITE_LANES: usize = 2;

/// The connections kept by the lanes of one database (see the module).
#[derive(Debug)]
pub struct Lanes {
    /// One slot per lane that keeps its connection; lanes beyond them borrow from the pool.
    slots: Vec<Mutex<Option<Kept>>>,
}

/// A lane's connection between two batches, with its token (see [`super::prepared`]).
#[derive(Debug)]
struct Kept {
    conn: PoolConnection<Postgres>,
    token: u64,
}

impl Lanes {
    /// The lanes of `pool`: [`WRITE_LANES`] of them keep a connection each, as long as one
    /// connection of the pool is left to other work (schema lookups, retry records). Every
    /// writer on one pool shares its lanes (several processors may write through one pool:
    /// lanes of their own would each keep connections, until none is left to anyone).
    pub fn of(pool: &PgPool) -> Arc<Lanes> {
        // A pool is known by its options, which its clones share (and which live as long as
        // it does, so the address is not reused while its lanes are alive).
        let key = Arc::as_ptr(&pool.connect_options()) as usize;
        static ALL: Mutex<Vec<(usize, Weak<Lanes>)>> = Mutex::new(Vec::new());
        let mut all = ALL.lock().expect("lanes");
        all.retain(|(_, lanes)| lanes.strong_count() > 0);
        if let Some(lanes) = all
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, lanes)| lanes.upgrade())
        {
            return lanes;
        }
        let pool_size = pool.options().get_max_connections() as usize;
        let keeping = WRITE_LANES.min(pool_size.saturating_sub(1));
        let lanes = Arc::new(Lanes {
            slots: (0..keeping).map(|_| Mutex::new(None)).collect(),
        });
        all.push((key, Arc::downgrade(&lanes)));
        lanes
    }

    fn take(&self, lane: usize) -> Option<Kept> {
        self.slots.get(lane)?.lock().expect("lane").take()
    }

    fn take_any(&self) -> Option<Kept> {
        (0..self.slots.len()).find_map(|lane| self.take(lane))
    }
}

/// An open batch transaction (see the module).
pub struct BatchTx {
    conn: Option<PoolConnection<Postgres>>,
    lock_timeout: Duration,
    /// A transaction may be open on the connection (rolled back before the connection is
    /// reused).
    open: bool,
    lane: usize,
    /// The connection's token, when known before its first statement: only a connection a
    /// lane kept.
    token: Option<u64>,
}

/// A connection for a batch on `lane`: the one the lane kept, or one from the pool. Waiting
/// for a connection while every one is busy is not an outage: only when the pool cannot open
/// one does the wait end in an error.
pub async fn acquire(
    pool: &PgPool,
    lanes: &Lanes,
    lane: usize,
    lock_timeout: Duration,
) -> Result<BatchTx, sqlx::Error> {
    if let Some(kept) = lanes.take(lane) {
        return Ok(BatchTx::kept(kept, lane, lock_timeout));
    }
    pooled(pool, Some(lanes), lane, lock_timeout).await
}

/// A connection from the pool for a batch on `lane` (see [`acquire`]), never a kept one.
pub async fn acquire_pooled(
    pool: &PgPool,
    lane: usize,
    lock_timeout: Duration,
) -> Result<BatchTx, sqlx::Error> {
    pooled(pool, None, lane, lock_timeout).await
}

async fn pooled(
    pool: &PgPool,
    lanes: Option<&Lanes>,
    lane: usize,
    lock_timeout: Duration,
) -> Result<BatchTx, sqlx::Error> {
    loop {
        match pool.acquire().await {
            Err(sqlx::Error::PoolTimedOut) if busy(pool) => {
                // Another lane's kept connection, idle meanwhile, serves rather than nothing.
                if let Some(kept) = lanes.and_then(Lanes::take_any) {
                    return Ok(BatchTx::kept(kept, lane, lock_timeout));
                }
                debug!("every database connection is busy; waiting on");
            }
            Err(e) => return Err(e),
            Ok(conn) => return Ok(BatchTx::new(conn, None, lane, lock_timeout)),
        }
    }
}

/// Every connection of the pool is open and in use.
fn busy(pool: &PgPool) -> bool {
    pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0
}

impl BatchTx {
    /// A batch transaction on `conn`; `token` is known for a connection a lane kept.
    fn new(
        conn: PoolConnection<Postgres>,
        token: Option<u64>,
        lane: usize,
        lock_timeout: Duration,
    ) -> BatchTx {
        BatchTx {
            conn: Some(conn),
            lock_timeout,
            open: false,
            lane,
            token,
        }
    }

    /// A batch transaction on the connection a lane kept (its token known).
    fn kept(kept: Kept, lane: usize, lock_timeout: Duration) -> BatchTx {
        BatchTx::new(kept.conn, Some(kept.token), lane, lock_timeout)
    }

    /// The connection's token, when it is known before the first script runs (the lane kept
    /// the connection).
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    /// Whether the connection was kept by its lane since an earlier batch (it may have been
    /// closed meanwhile, by the server or a proxy).
    pub fn was_kept(&self) -> bool {
        self.token.is_some()
    }

    /// Gives the connection, its transaction ended, to its lane to keep (its token read by
    /// the first script), or back to the pool when the lane keeps one already or none.
    pub fn keep(mut self, lanes: &Lanes, token: Option<u64>) {
        let (Some(slot), Some(token), false) = (lanes.slots.get(self.lane), token, self.open)
        else {
            return;
        };
        let mut slot = slot.lock().expect("lane");
        if slot.is_none() {
            let conn = self.conn.take().expect("a connection");
            *slot = Some(Kept { conn, token });
        }
    }

    fn conn(&mut self) -> &mut PoolConnection<Postgres> {
        self.conn.as_mut().expect("a connection")
    }

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
        let result = script.run(self.conn()).await;
        if result.is_ok() && script.ends_with_commit() {
            self.open = false;
        }
        result
    }

    /// Ends the transaction without its effects (after a failed script).
    pub async fn rollback(mut self) {
        if self.open
            && sqlx::raw_sql("ROLLBACK")
                .execute(&mut **self.conn())
                .await
                .is_ok()
        {
            self.open = false;
        }
    }
}

impl Drop for BatchTx {
    fn drop(&mut self) {
        if let (true, Some(conn)) = (self.open, self.conn.as_mut()) {
            // Abandoned mid-transaction (an error on the way, or a cancelled future): the
            // connection is closed, which ends the transaction, instead of being reused.
            conn.close_on_drop();
        }
    }
}
