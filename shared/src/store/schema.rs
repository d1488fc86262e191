//! Tenant schemas: versioned migrations from `migrations/`, applied once per schema and
//! process, safe when several processes meet a new tenant at once; monthly message partitions.
//!
//! A schema the earlier service left (tables, no migration bookkeeping) is never migrated here:
//! it awaits adoption by `wa-admin adopt` ([`super::adopt`]). Its events are held meanwhile, and
//! the schema is looked at again every [`ADOPTION_RECHECK`], so they go through once it is adopted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use sqlx::{PgPool, Row};
use tracing::{error, info, warn};

use super::adopt::{AwaitingAdoption, Standing};
use super::failure::{classify, DbFailure};
use super::placement::{Db, Placements, TenantState, UnknownPlacement};
use super::script::Script;

use crate::http::Notices;
use crate::model::{quote_ident, TenantId};

/// One versioned migration, applied with `search_path` set to the tenant schema.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// A migration from its file in the workspace's `migrations/` directory, `<version>_<name>.sql`.
macro_rules! migration {
    ($version:literal, $file:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../migrations/", $file, "_", $name, ".sql")),
        }
    };
}

/// Every migration, in order.
pub static MIGRATIONS: &[Migration] = &[
    migration!(1, "0001", "tenant_tables"),
    migration!(2, "0002", "exhausted_event_keys"),
    migration!(3, "0003", "exhausted_event_digest"),
    migration!(4, "0004", "inbox_publish_time"),
    migration!(5, "0005", "delivery_attempts"),
    migration!(6, "0006", "tenants"),
    migration!(7, "0007", "placement_fences"),
    migration!(8, "0008", "tenant_moves"),
];

/// A fresh tenant schema in one pass: the tables as the migrations up to `version` leave them
/// in a tenant schema, without the steps that add to or rebuild what an earlier one made
/// (creating a schema is DDL on the write path of a new tenant's first events).
pub struct Baseline {
    pub version: i32,
    pub sql: &'static str,
}

/// The baseline a tenant schema with no migration applied is created from (the migrations
/// after its version then run as usual).
pub static TENANT_BASELINE: Baseline = Baseline {
    version: 8,
    sql: include_str!("../../../migrations/baseline/tenant_0008.sql"),
};

/// Connections of the pool schema work runs on, unless set otherwise
/// ([`set_schema_connections`], `DB_SCHEMA_CONNECTIONS`). Creating a schema is mostly waiting
/// for the disk: on PostgreSQL 15 every index built syncs its file on its own, 33 of them for a
/// new tenant, so schemas created side by side share that wait (see [`Schemas`]).
pub const SCHEMA_CONNECTIONS: u32 = 6;

static SCHEMA_CONNECTIONS_SET: AtomicU32 = AtomicU32::new(SCHEMA_CONNECTIONS);

/// Sets the connections of the schema pools opened after this call (at least one), and so how
/// many new tenants a batch prepares at once.
pub fn set_schema_connections(connections: u32) {
    SCHEMA_CONNECTIONS_SET.store(connections.max(1), Ordering::Relaxed);
}

/// Connections of a schema pool, and new tenants a batch prepares at once.
pub fn schema_connections() -> u32 {
    SCHEMA_CONNECTIONS_SET.load(Ordering::Relaxed)
}

/// The schema of the system's own tables (exhausted events of invalid tenants).
pub const SYSTEM_SCHEMA: &str = "wa_system";

/// How often a schema awaiting adoption is looked at again (and the delay of its held events).
pub const ADOPTION_RECHECK: Duration = Duration::from_secs(5);

/// How often the error about a schema awaiting adoption is logged again, while it waits.
const ADOPTION_LOG_EVERY: Duration = Duration::from_secs(600);

/// Why a tenant's schema is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {0} is not migrated and DB_AUTO_MIGRATE is off")]
    NotMigrated(String),
    /// The schema was left by the earlier service: its events wait until it is adopted.
    #[error(transparent)]
    AwaitingAdoption(#[from] AwaitingAdoption),
    /// The tenant is not written now (paused, being moved, or placed on a database this
    /// process does not know): its events wait, spending no attempt.
    #[error("tenant {tenant} is held: {why}")]
    Held { tenant: String, why: String },
    /// The schema belongs to an id that differs from this one only in case (SPEC §3).
    #[error("tenant {tenant} is refused: its schema {schema} belongs to tenant {owner} (ids that differ only in case share a schema)")]
    Owned {
        tenant: String,
        schema: String,
        owner: String,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates and migrates tenant schemas on first use and remembers which are ready.
///
/// Schema work runs on a small pool of its own ([`schema_connections`] connections to the same
/// database), so that a burst of new tenants never takes the connections writes need; a batch
/// prepares as many new tenants at once as that pool has connections.
///
/// Each tenant is written on the database of its placement ([`super::placement`]), read from
/// `wa_system.tenants` on the main database when the tenant is first met, and again after
/// [`Schemas::forget`].
pub struct Schemas {
    placements: Arc<Placements>,
    auto_migrate: bool,
    /// Schemas migrated to the latest version, by placement.
    ready: Mutex<HashSet<(String, String)>>,
    /// Tenants known to own their schema, active, with the database they are written on.
    owners: Mutex<HashMap<TenantId, Arc<Db>>>,
    /// Months with a `messages` partition known to exist, per schema.
    partitions: Mutex<HashMap<String, HashSet<i32>>>,
    /// Schemas found awaiting adoption, and when.
    awaiting: Mutex<HashMap<String, Waiting>>,
    /// Where operators see the schemas awaiting adoption (`/ready`).
    notices: Notices,
}

/// A schema awaiting adoption, as last seen.
struct Waiting {
    refusal: AwaitingAdoption,
    checked: Instant,
    logged: Instant,
}

impl Schemas {
    /// Schemas of the main database only.
    pub fn new(pool: PgPool, auto_migrate: bool) -> Self {
        Self::placed(Arc::new(Placements::single(pool)), auto_migrate)
    }

    /// Schemas on every database of `placements`.
    pub fn placed(placements: Arc<Placements>, auto_migrate: bool) -> Self {
        Schemas {
            placements,
            auto_migrate,
            ready: Mutex::default(),
            owners: Mutex::default(),
            partitions: Mutex::default(),
            awaiting: Mutex::default(),
            notices: Notices::default(),
        }
    }

    /// Shows the schemas awaiting adoption in `notices` (the process's `/ready`).
    pub fn set_notices(&mut self, notices: Notices) {
        self.notices = notices;
    }

    /// The databases tenants are placed on.
    pub fn placements(&self) -> &Arc<Placements> {
        &self.placements
    }

    /// Whether the tenant is known to own its schema, ready at the latest migration.
    pub fn is_ready(&self, tenant: &TenantId) -> bool {
        self.owners.lock().expect("lock").contains_key(tenant)
    }

    /// The database the tenant is written on, when it is ready ([`Schemas::ensure`]).
    pub fn db_of(&self, tenant: &TenantId) -> Option<Arc<Db>> {
        self.owners.lock().expect("lock").get(tenant).cloned()
    }

    /// Whether a `messages` partition is known to exist for every month of `dates`.
    pub fn has_partitions(
        &self,
        tenant: &TenantId,
        dates: impl IntoIterator<Item = NaiveDate>,
    ) -> bool {
        let known = self.partitions.lock().expect("lock");
        let months = known.get(&tenant.schema_name());
        dates
            .into_iter()
            .all(|d| months.is_some_and(|m| m.contains(&month_of(d))))
    }

    /// Makes sure the tenant owns its schema (recorded in `wa_system.tenants` the first time)
    /// and the schema exists at the latest migration.
    ///
    /// The tenant's record says where it is placed: a tenant paused or being moved, or placed
    /// on a database this process does not know, is [`SchemaError::Held`] (not remembered, so
    /// it is read again for its next events).
    pub async fn ensure(&self, tenant: &TenantId) -> Result<Arc<Db>, SchemaError> {
        if let Some(db) = self.db_of(tenant) {
            return Ok(db);
        }
        if let Some(refusal) = self.still_awaiting(&tenant.schema_name()) {
            return Err(refusal.into());
        }
        self.ensure_schema(SYSTEM_SCHEMA).await?;
        let record = super::tenants::claim(&self.placements.main().ddl, tenant).await?;
        if record.tenant_id != tenant.as_str() {
            return Err(SchemaError::Owned {
                tenant: tenant.to_string(),
                schema: tenant.schema_name(),
                owner: record.tenant_id,
            });
        }
        let held = |why: String| SchemaError::Held {
            tenant: tenant.to_string(),
            why,
        };
        if record.state() != TenantState::Active {
            return Err(held(format!(
                "its state is {} (placement {})",
                record.state, record.placement
            )));
        }
        let db = self
            .placements
            .db(&record.placement)
            .map_err(|e: UnknownPlacement| held(e.to_string()))?;
        let prepared = async {
            if !db.is_main() {
                self.prepare_schema(&db, SYSTEM_SCHEMA, None).await?;
            }
            self.prepare_schema(&db, &tenant.schema_name(), Some(tenant))
                .await
        };
        match prepared.await {
            // Another placement's database being down holds its tenants only.
            Err(SchemaError::Db(e)) if !db.is_main() && classify(&e) == DbFailure::Unavailable => {
                return Err(held(format!("placement {} is unavailable: {e}", db.name)))
            }
            other => other?,
        }
        self.owners
            .lock()
            .expect("lock")
            .insert(tenant.clone(), db.clone());
        Ok(db)
    }

    /// Same as [`Schemas::ensure`] for a schema of the main database given by name (the system
    /// schema).
    pub async fn ensure_schema(&self, schema: &str) -> Result<(), SchemaError> {
        let main = self.placements.main().clone();
        self.prepare_schema(&main, schema, None).await
    }

    /// Migrates `schema` (of `tenant`, when it is a tenant's) on `db`, unless it awaits
    /// adoption.
    async fn prepare_schema(
        &self,
        db: &Db,
        schema: &str,
        tenant: Option<&TenantId>,
    ) -> Result<(), SchemaError> {
        let key = (db.name.clone(), schema.to_owned());
        if self.ready.lock().expect("lock").contains(&key) {
            return Ok(());
        }
        if let Some(refusal) = self.still_awaiting(schema) {
            return Err(refusal.into());
        }
        let pool = &db.ddl;
        let migrated = if self.auto_migrate {
            migrate_ours(pool, schema).await?
        } else {
            match super::adopt::standing(pool, schema).await? {
                Standing::Foreign(why) => Err(why),
                _ if applied_version(pool, schema).await? < latest_version() => {
                    return Err(SchemaError::NotMigrated(schema.to_owned()))
                }
                _ => Ok(()),
            }
        };
        if let Err(why) = migrated {
            let refusal = AwaitingAdoption::new(schema, tenant, why);
            self.note_awaiting(&refusal);
            return Err(refusal.into());
        }
        if self.awaiting.lock().expect("lock").remove(schema).is_some() {
            info!(schema, "schema adopted; its held events go through");
            self.notices.clear(&notice_key(schema));
        }
        self.ready.lock().expect("lock").insert(key);
        Ok(())
    }

    /// The refusal of `schema` when it was found awaiting adoption less than
    /// [`ADOPTION_RECHECK`] ago (so held events cost no query until it is looked at again).
    fn still_awaiting(&self, schema: &str) -> Option<AwaitingAdoption> {
        let awaiting = self.awaiting.lock().expect("lock");
        let waiting = awaiting.get(schema)?;
        (waiting.checked.elapsed() < ADOPTION_RECHECK).then(|| waiting.refusal.clone())
    }

    /// Remembers that a schema awaits adoption; logs it the first time and every
    /// [`ADOPTION_LOG_EVERY`] after, and shows it on `/ready`.
    fn note_awaiting(&self, refusal: &AwaitingAdoption) {
        let now = Instant::now();
        let mut awaiting = self.awaiting.lock().expect("lock");
        let log = match awaiting.get_mut(&refusal.schema) {
            Some(w) => {
                w.checked = now;
                let due = w.logged.elapsed() >= ADOPTION_LOG_EVERY;
                if due {
                    w.logged = now;
                }
                due
            }
            None => {
                awaiting.insert(
                    refusal.schema.clone(),
                    Waiting {
                        refusal: refusal.clone(),
                        checked: now,
                        logged: now,
                    },
                );
                true
            }
        };
        if log {
            error!(schema = %refusal.schema, error = %refusal, "events refused until the schema is adopted");
        }
        self.notices
            .set(notice_key(&refusal.schema), refusal.to_string());
    }

    /// Makes sure a `messages` partition exists for every month of `dates`.
    pub async fn ensure_partitions(
        &self,
        tenant: &TenantId,
        dates: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<(), sqlx::Error> {
        let schema = tenant.schema_name();
        let mut months: Vec<i32> = dates.into_iter().map(month_of).collect();
        months.sort_unstable();
        months.dedup();
        let missing: Vec<i32> = {
            let known = self.partitions.lock().expect("lock");
            let have = known.get(&schema);
            months
                .into_iter()
                .filter(|m| !have.is_some_and(|h| h.contains(m)))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let db = self
            .db_of(tenant)
            .unwrap_or_else(|| self.placements.main().clone());
        let mut tx = db.ddl.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(partitions_lock_key(&schema))
            .execute(&mut *tx)
            .await?;
        for &month in &missing {
            create_partition(&mut tx, &schema, month).await?;
        }
        tx.commit().await?;
        let mut known = self.partitions.lock().expect("lock");
        known.entry(schema).or_default().extend(missing);
        Ok(())
    }

    /// Forgets which partitions of the tenant exist (after a row found none: an operator
    /// detached or dropped one).
    pub fn forget_partitions(&self, tenant: &TenantId) {
        self.partitions
            .lock()
            .expect("lock")
            .remove(&tenant.schema_name());
    }

    /// Forgets what is known about a tenant (after an error that suggests it changed).
    pub fn forget(&self, tenant: &TenantId) {
        let schema = tenant.schema_name();
        self.owners.lock().expect("lock").remove(tenant);
        self.ready
            .lock()
            .expect("lock")
            .retain(|(_, s)| *s != schema);
        self.partitions.lock().expect("lock").remove(&schema);
    }
}

/// Creates the `messages` partition of `month` unless one covers it. Its name is
/// `messages_YYYY_MM`, or `messages_YYYY_MM_<n>` when an operator detached the partition of
/// that name and kept the table (retention by detaching).
async fn create_partition(
    tx: &mut sqlx::PgConnection,
    schema: &str,
    month: i32,
) -> Result<(), sqlx::Error> {
    let (from, to) = month_bounds(month);
    let (from, to) = (sql_date(from), sql_date(to));
    let base = partition_name(month);
    let s = quote_ident(schema);
    for n in 0.. {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}_{n}")
        };
        let p = quote_ident(&name);
        sqlx::query("SAVEPOINT partition").execute(&mut *tx).await?;
        let created = sqlx::query(&format!(
            "CREATE TABLE {s}.{p} PARTITION OF {s}.messages FOR VALUES FROM ('{from}') TO ('{to}')"
        ))
        .execute(&mut *tx)
        .await;
        let code = match created {
            Ok(_) => None,
            Err(e) => match super::failure::sqlstate(&e).as_deref() {
                // duplicate_table, invalid_object_definition (overlaps another partition)
                Some(c @ ("42P07" | "42P17")) => Some(c.to_owned()),
                _ => return Err(e),
            },
        };
        let verb = if code.is_some() {
            "ROLLBACK TO"
        } else {
            "RELEASE"
        };
        sqlx::query(&format!("{verb} SAVEPOINT partition"))
            .execute(&mut *tx)
            .await?;
        match code.as_deref() {
            None => return publish_like_siblings(tx, schema, &name).await,
            Some("42P17") => return Ok(()),
            _ => {
                let attached: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_inherits
                     WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2))",
                )
                .bind(format!("{s}.{p}"))
                .bind(format!("{s}.messages"))
                .fetch_one(&mut *tx)
                .await?;
                if attached {
                    return Ok(());
                }
            }
        }
    }
    unreachable!("a free partition name is always found")
}

/// Adds a new `messages` partition to every publication that lists its sibling partitions one
/// by one (as the earlier service's readers may have set up for change data capture), so it is
/// published like them. A publication of the partitioned table itself, of the schema or of all
/// tables already covers it. Failing to add it (the publication belongs to another role) is
/// logged, not a failure of the write that needed the partition.
async fn publish_like_siblings(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    partition: &str,
) -> Result<(), sqlx::Error> {
    for publication in publications_missing(conn, schema, partition).await? {
        let added = format!(
            "ALTER PUBLICATION {} ADD TABLE {}.{}",
            quote_ident(&publication),
            quote_ident(schema),
            quote_ident(partition)
        );
        sqlx::query("SAVEPOINT publish").execute(&mut *conn).await?;
        match sqlx::query(&added).execute(&mut *conn).await {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT publish")
                    .execute(&mut *conn)
                    .await?;
                info!(
                    schema,
                    partition,
                    publication,
                    "new partition added to the publication of its siblings"
                );
            }
            Err(e) if classify(&e) == DbFailure::Transient => {
                sqlx::query("ROLLBACK TO SAVEPOINT publish")
                    .execute(&mut *conn)
                    .await?;
                warn!(schema, partition, publication, error = %e, "the new partition could not be added to the publication of its siblings; add it by hand");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The publications that publish partitions of `schema.messages` one by one, but not
/// `partition`.
pub(crate) async fn publications_missing(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    partition: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(PUBLICATIONS_OF_SIBLINGS)
        .bind(schema)
        .bind(partition)
        .fetch_all(conn)
        .await
}

/// The publications that list partitions of `$1.messages` one by one (not `messages` itself,
/// not every table), but not partition `$2`. Read from `pg_publication_rel` by index, never
/// by expanding every publication's tables; the tables are found by their qualified names
/// (`to_regclass`), so a cached plan cannot start from every schema's `messages` (it did, and
/// took 0.1–0.4 s with 512 tenants, once for every partition created).
const PUBLICATIONS_OF_SIBLINGS: &str = "
WITH m AS (
    SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(format('%I.messages', $1::text))
), new AS (
    SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(format('%I.%I', $1::text, $2::text))
)
SELECT DISTINCT p.pubname::text
FROM m
JOIN pg_inherits i ON i.inhparent = m.oid
JOIN pg_publication_rel r ON r.prrelid = i.inhrelid
JOIN pg_publication p ON p.oid = r.prpubid
WHERE NOT p.puballtables
  AND i.inhrelid NOT IN (SELECT oid FROM new)
  AND NOT EXISTS (SELECT 1 FROM pg_publication_rel q
                  WHERE q.prpubid = p.oid
                    AND (q.prrelid = m.oid OR q.prrelid IN (SELECT oid FROM new)))
ORDER BY 1";

/// The name of the `messages` partition of `month` (`messages_YYYY_MM`).
pub(crate) fn partition_name(month: i32) -> String {
    format!("messages_{}_{:02}", month / 12, month % 12 + 1)
}

/// A date as Postgres reads it: chrono writes years past 9999 with a sign (`+10000-01-01`),
/// which Postgres takes for a time zone, so December 9999's upper bound would be refused.
pub(crate) fn sql_date(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// A month as the partition cache counts it.
pub(crate) fn month_of(d: NaiveDate) -> i32 {
    d.year() * 12 + d.month0() as i32
}

/// The first day of `month` and of the month after it.
pub(crate) fn month_bounds(month: i32) -> (NaiveDate, NaiveDate) {
    let date =
        |m: i32| NaiveDate::from_ymd_opt(m / 12, (m % 12 + 1) as u32, 1).expect("valid month");
    (date(month), date(month + 1))
}

pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The table that records which migrations a schema has.
pub const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )";

/// Applies every pending migration to `schema` in one transaction under a per-schema lock.
/// A schema the earlier service left is not touched: it is an error naming the schema, to be
/// adopted with `wa-admin adopt` (see [`super::adopt`]).
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    match migrate_ours(pool, schema).await? {
        Ok(()) => Ok(()),
        Err(why) => Err(sqlx::Error::Configuration(Box::new(AwaitingAdoption::new(
            schema, None, why,
        )))),
    }
}

/// [`migrate`], with a schema that is not this service's as `Ok(Err(why))`. Three round trips
/// whatever the number of migrations (how the schema stands, with its lock unless it is not
/// ours; schema and what is applied; the pending migrations with their records) and the commit.
/// The lock is not waited for on a schema that is not ours, so an adoption in progress (which
/// holds it) never stalls the caller.
async fn migrate_ours(pool: &PgPool, schema: &str) -> Result<Result<(), String>, sqlx::Error> {
    let ident = quote_ident(schema);
    let mut tx = pool.begin().await?;
    let standing =
        super::adopt::standing_then_lock(&mut tx, schema, &migrate_lock_key(schema)).await?;
    if let Standing::Foreign(why) = standing {
        tx.rollback().await?;
        return Ok(Err(why));
    }
    let mut setup: Script<()> = Script::named("migrate");
    setup.push_sql((), &format!("CREATE SCHEMA IF NOT EXISTS {ident}"));
    setup.push_sql((), &format!("SET LOCAL search_path TO {ident}"));
    setup.push_sql((), BOOKKEEPING);
    setup.push_sql((), "SELECT version FROM schema_migrations");
    let rows = setup.run(&mut tx).await.map_err(|e| e.error)?;
    let applied: Vec<i32> = rows
        .last()
        .map(|rows| rows.iter().map(|r| r.try_get(0)).collect())
        .transpose()?
        .unwrap_or_default();
    let pending: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    if pending.is_empty() {
        tx.commit().await?;
        return Ok(Ok(()));
    }
    // Each migration is a file of statements; they run as one query, each followed by its
    // record (names are the crate's own, quoted as literals). A tenant schema with none
    // applied starts from the baseline, recorded as the migrations it stands for.
    let mut sql = String::new();
    let mut steps = pending.clone();
    if applied.is_empty() && schema != SYSTEM_SCHEMA {
        let (covered, after): (Vec<&Migration>, Vec<&Migration>) = pending
            .iter()
            .copied()
            .partition(|m| m.version <= TENANT_BASELINE.version);
        sql.push_str(TENANT_BASELINE.sql);
        sql.push_str(&format!("\n;\n{};\n", record_statement(&covered)));
        steps = after;
    }
    for m in &steps {
        sql.push_str(m.sql);
        sql.push_str(&format!("\n;\n{};\n", record_statement(&[m])));
    }
    sqlx::raw_sql(&sql).execute(&mut *tx).await?;
    tx.commit().await?;
    for m in pending {
        tracing::info!(
            schema,
            version = m.version,
            name = m.name,
            "applied migration"
        );
    }
    Ok(Ok(()))
}

/// The statement recording `migrations` as applied.
pub(crate) fn record_statement(migrations: &[&Migration]) -> String {
    let values: Vec<String> = migrations
        .iter()
        .map(|m| format!("({}, '{}')", m.version, m.name.replace('\'', "''")))
        .collect();
    format!(
        "INSERT INTO schema_migrations (version, name) VALUES {}",
        values.join(", ")
    )
}

/// Every migration's SQL, in order, as one text (run with `search_path` set to the schema).
pub(crate) fn all_migrations_sql() -> String {
    MIGRATIONS
        .iter()
        .map(|m| m.sql)
        .collect::<Vec<_>>()
        .join("\n;\n")
}

/// The advisory lock under which a schema is migrated (or adopted).
pub(crate) fn migrate_lock_key(schema: &str) -> String {
    format!("wa:migrate:{schema}")
}

/// The advisory lock under which a schema's partitions are created.
pub(crate) fn partitions_lock_key(schema: &str) -> String {
    format!("wa:partitions:{schema}")
}

/// The `/ready` notice of a schema awaiting adoption.
fn notice_key(schema: &str) -> String {
    format!("adoption:{schema}")
}

/// The highest migration applied to `schema` (0 when it has none).
pub async fn applied_version(pool: &PgPool, schema: &str) -> Result<i32, sqlx::Error> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'schema_migrations')",
    )
    .bind(schema)
    .fetch_one(pool)
    .await?;
    if !exists {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COALESCE(max(version), 0) FROM {}.schema_migrations",
        quote_ident(schema)
    );
    sqlx::query_scalar(&sql).fetch_one(pool).await
}

/// Tenant schemas present in the database (`daisi_*`).
pub async fn tenant_schemas(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'daisi\\_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_month_before_the_year_10000_has_a_bound_postgres_reads() {
        let (from, to) = month_bounds(9999 * 12 + 11);
        assert_eq!(
            (sql_date(from), sql_date(to)),
            ("9999-12-01".into(), "10000-01-01".into())
        );
    }

    #[test]
    fn month_bounds_wrap_years() {
        let m = 2024 * 12 + 11; // December 2024
        assert_eq!(
            month_bounds(m),
            (
                NaiveDate::from_ymd_opt(2024, 12, 1).unwrap(),
                NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
            )
        );
    }
}
