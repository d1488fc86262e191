//! Tenant placement (SPEC §17): the Postgres databases tenant schemas live on, and the fences
//! that keep a tenant's writes off a database while it is moved away or paused.
//!
//! * The default placement, [`DEFAULT_PLACEMENT`], is `DATABASE_URL`: the main database, which
//!   also holds `wa_system.tenants`, the record of each tenant's placement and state.
//! * `TENANT_DATABASES` names the others (`eu=postgres://…,us=postgres://…`). Each gets a pool
//!   of its own, opened on first use, as small as the main one, plus a pool of
//!   [`schema_connections`](super::schema::schema_connections) for schema work.
//! * A write enters a tenant's schema through `wa_system.enter_tenant` on the tenant's
//!   database, which takes the tenant's lock and then refuses a fenced schema (SQLSTATE
//!   `WAF01`, [`super::failure::DbFailure::Fenced`]). A fence is inserted under the same lock,
//!   so once it is committed no writer that still believes the tenant lives there can write,
//!   and writers already inside have committed. A writer refused by a fence forgets what it
//!   knew of the tenant and reads the record again: the tenant's events wait meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use super::batch_tx::Lanes;
use crate::settings::values::Secret;

/// The placement of tenants not placed elsewhere: `DATABASE_URL`.
pub const DEFAULT_PLACEMENT: &str = "default";

/// One database tenant schemas are placed on.
#[derive(Debug)]
pub struct Db {
    pub name: String,
    /// Writes (as many connections as the main pool).
    pub pool: PgPool,
    /// Schema work: creating and migrating schemas and partitions.
    pub ddl: PgPool,
    /// The connections of `pool` kept for batch writes (see [`super::batch_tx`]).
    pub lanes: Arc<Lanes>,
}

impl Db {
    /// Whether this is the main database (`DATABASE_URL`).
    pub fn is_main(&self) -> bool {
        self.name == DEFAULT_PLACEMENT
    }
}

/// `TENANT_DATABASES` names a placement this process does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("placement {0:?} is not in TENANT_DATABASES (known: {1})")]
pub struct UnknownPlacement(pub String, pub String);

/// The databases of every placement, opened on first use.
pub struct Placements {
    main: Arc<Db>,
    urls: BTreeMap<String, Secret>,
    opened: Mutex<HashMap<String, Arc<Db>>>,
}

impl std::fmt::Debug for Placements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placements")
            .field("names", &self.names())
            .finish()
    }
}

impl Placements {
    /// The main database only.
    pub fn single(main: PgPool) -> Self {
        Self::new(main, &BTreeMap::new())
    }

    /// The main database (`DATABASE_URL`, the default placement) and the placements of
    /// `TENANT_DATABASES`. Other databases' pools copy the main pool's size and timeouts.
    pub fn new(main: PgPool, urls: &BTreeMap<String, Secret>) -> Self {
        let ddl = ddl_pool(&main, (*main.connect_options()).clone());
        Placements {
            main: Arc::new(Db {
                name: DEFAULT_PLACEMENT.to_owned(),
                lanes: Lanes::of(&main),
                pool: main,
                ddl,
            }),
            urls: urls
                .iter()
                .filter(|(name, _)| name.as_str() != DEFAULT_PLACEMENT)
                .map(|(n, u)| (n.clone(), u.clone()))
                .collect(),
            opened: Mutex::default(),
        }
    }

    /// The main database: the default placement, and the home of `wa_system.tenants`.
    pub fn main(&self) -> &Arc<Db> {
        &self.main
    }

    /// Every placement's name, the default first.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_PLACEMENT.to_owned())
            .chain(self.urls.keys().cloned())
            .collect()
    }

    /// Whether more than the default placement is configured.
    pub fn is_multi(&self) -> bool {
        !self.urls.is_empty()
    }

    /// The database of placement `name` (its pools created now the first time: they connect
    /// on demand).
    pub fn db(&self, name: &str) -> Result<Arc<Db>, UnknownPlacement> {
        if name == DEFAULT_PLACEMENT {
            return Ok(self.main.clone());
        }
        let mut opened = self.opened.lock().expect("lock");
        if let Some(db) = opened.get(name) {
            return Ok(db.clone());
        }
        let url = self
            .urls
            .get(name)
            .ok_or_else(|| UnknownPlacement(name.to_owned(), self.names().join(", ")))?;
        let options = super::options(url.expose())
            .map_err(|e| UnknownPlacement(name.to_owned(), format!("bad URL: {e}")))?;
        let like = &self.main.pool;
        let pool = super::pool_options(like.options().get_max_connections())
            .acquire_timeout(like.options().get_acquire_timeout())
            .connect_lazy_with(options.clone());
        let ddl = ddl_pool(like, options);
        let db = Arc::new(Db {
            name: name.to_owned(),
            lanes: Lanes::of(&pool),
            pool,
            ddl,
        });
        opened.insert(name.to_owned(), db.clone());
        Ok(db)
    }
}

fn ddl_pool(like: &PgPool, options: sqlx::postgres::PgConnectOptions) -> PgPool {
    super::pool_options(super::schema::schema_connections())
        .acquire_timeout(like.options().get_acquire_timeout())
        .connect_lazy_with(options)
}

/// The state of a tenant (`wa_system.tenants.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantState {
    /// Written where it is placed.
    Active,
    /// Being moved to another placement: its events wait.
    Moving,
    /// Paused by an operator: its events wait.
    Paused,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Moving => "moving",
            TenantState::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TenantState::Active),
            "moving" => Some(TenantState::Moving),
            "paused" => Some(TenantState::Paused),
            _ => None,
        }
    }
}

impl std::fmt::Display for TenantState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fences `schema` off `db` (see the module): waits for the writers inside it, and from its
/// commit on refuses every writer. Idempotent.
pub async fn fence(db: &PgPool, schema: &str, reason: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(super::tenant_tx::schema_lock_key(schema))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO wa_system.fences (schema_name, reason) VALUES ($1, $2)
         ON CONFLICT (schema_name) DO UPDATE SET reason = EXCLUDED.reason",
    )
    .bind(schema)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Lifts the fence of `schema` on `db`, if any.
pub async fn unfence(db: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM wa_system.fences WHERE schema_name = $1")
        .bind(schema)
        .execute(db)
        .await
        .map(drop)
}

/// The reason `schema` is fenced on `db`, if it is.
pub async fn fenced(db: &PgPool, schema: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT reason FROM wa_system.fences WHERE schema_name = $1")
        .bind(schema)
        .fetch_optional(db)
        .await
}
