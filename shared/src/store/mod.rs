//! Postgres: tenant schemas and migrations, one write function per table, the inbox.
//!
//! Every write is set-based (one statement per table per round of a batch and tenant) and runs
//! inside a batch transaction ([`batch_tx`]) or a tenant transaction ([`tenant_tx::begin`]).
//! This is the only module that holds SQL.
//!
//! * [`batch_tx`], [`script`]: the transaction a batch's writes to all its tenants run in, as
//!   multi-statement queries of a few round trips.
//! * [`tenant_tx`]: the transaction a write to one tenant takes (onboarding).
//! * [`schema`]: tenant schemas, migrations, monthly message partitions.
//! * [`chats`], [`chat_ensure`], [`unread`], [`messages`], [`contacts`], [`agents`]: per-table writes.
//! * [`inbox`]: which stream messages already had their effects committed.
//! * [`attempts`]: processing attempts of retried messages (deliveries are not attempts).
//! * [`failure`]: what a database error means for the events of a write (the one classifier).
//! * [`onboarding`]: onboarding's log rows, contacts and campaign attribution.
//! * [`exhausted`]: dead letters kept for operators; [`counts`]: row counts for operators.
//! * [`tenants`]: which company id owns each tenant schema, where it is placed, its state.
//! * [`placement`]: the databases tenants are placed on, and the fences of moved tenants.
//! * [`moves`]: moving a tenant to another placement, step by step; pausing and resuming it.
//! * [`adopt`]: schemas the earlier service left: told apart from ours, and adopted.

pub mod adopt;
pub mod agents;
pub mod attempts;
pub mod batch_tx;
pub mod chat_ensure;
pub mod chats;
pub mod contacts;
pub mod counts;
pub mod exhausted;
pub mod failure;
pub mod inbox;
pub mod messages;
pub mod moves;
pub mod onboarding;
pub mod placement;
pub mod prepared;
pub mod schema;
pub mod script;
pub mod tenant_tx;
pub mod tenants;
pub mod unread;

pub use schema::{SchemaError, Schemas, MIGRATIONS, SYSTEM_SCHEMA};
pub use tenant_tx::TenantTx;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use log::LevelFilter;
use std::str::FromStr;
use std::time::Duration;

/// Connects a pool of `pool_size` connections now (an unreachable database is an error here,
/// not at the first query).
pub async fn connect(url: &str, pool_size: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(pool_size).connect_with(options(url)?).await
}

/// The oldest server the writes run on: they use `MERGE` (PostgreSQL 15).
pub const MIN_SERVER_VERSION: u32 = 150_000;

/// A pool of `pool_size` connections to a server recent enough: a connection to an older one
/// fails with a message naming the version needed, instead of every write failing later.
pub(crate) fn pool_options(pool_size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(pool_size)
        .after_connect(|conn, _| {
            Box::pin(async move {
                let token = prepared::token_statement();
                match conn.server_version_num() {
                    Some(v) if v < MIN_SERVER_VERSION => Err(sqlx::Error::Configuration(
                        format!(
                            "PostgreSQL {}.{} is too old: PostgreSQL 15 or later is required",
                            v / 10_000,
                            v % 10_000
                        )
                        .into(),
                    )),
                    // Its token, by which batch transactions know what it keeps prepared.
                    _ => sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&token))
                        .await
                        .map(drop),
                }
            })
        })
}

/// The connection options of `url`. Statements are logged at TRACE, and slow ones at DEBUG,
/// never above: a batch's writes are sent with their values in the text (see [`script`]),
/// and those hold message bodies and phone numbers.
fn options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .log_statements(LevelFilter::Trace)
        .log_slow_statements(LevelFilter::Debug, Duration::from_secs(1)))
}

/// A pool that connects on demand: an unreachable database holds batches, it does not stop
/// the process. Waiting 5 s for a connection means the database is unavailable.
pub fn connect_lazy(url: &str, pool_size: u32) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options(url)?))
}

/// Whether Postgres answers a trivial query.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .map(drop)
}

/// One column of a statement's rows, to bind as an array parameter (rows are built per event,
/// columns once per statement).
fn column<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}
