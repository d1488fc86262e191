//! Tenant schemas: versioned migrations from `migrations/`, applied once per schema and
//! process, safe when several processes meet a new tenant at once; monthly message partitions.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{Datelike, NaiveDate};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use super::script::Script;

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
];

/// Connections of the pool schema work runs on.
pub const DDL_CONNECTIONS: u32 = 2;

/// The schema of the system's own tables (exhausted events of invalid tenants).
pub const SYSTEM_SCHEMA: &str = "wa_system";

/// Why a tenant's schema is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {0} is not migrated and DB_AUTO_MIGRATE is off")]
    NotMigrated(String),
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
/// Schema work runs on a small pool of its own ([`DDL_CONNECTIONS`] connections to the same
/// database), so that a burst of new tenants never takes the connections writes need.
pub struct Schemas {
    pool: PgPool,
    auto_migrate: bool,
    ready: Mutex<HashSet<String>>,
    /// Tenants known to own their schema.
    owners: Mutex<HashSet<TenantId>>,
    /// Months with a `messages` partition known to exist, per schema.
    partitions: Mutex<HashMap<String, HashSet<i32>>>,
}

impl Schemas {
    pub fn new(pool: PgPool, auto_migrate: bool) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(DDL_CONNECTIONS)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with((*pool.connect_options()).clone());
        Schemas {
            pool,
            auto_migrate,
            ready: Mutex::default(),
            owners: Mutex::default(),
            partitions: Mutex::default(),
        }
    }

    /// Whether the tenant is known to own its schema, ready at the latest migration.
    pub fn is_ready(&self, tenant: &TenantId) -> bool {
        self.owners.lock().expect("lock").contains(tenant)
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
    pub async fn ensure(&self, tenant: &TenantId) -> Result<(), SchemaError> {
        if self.owners.lock().expect("lock").contains(tenant) {
            return Ok(());
        }
        self.ensure_schema(SYSTEM_SCHEMA).await?;
        let owner = super::tenants::claim(&self.pool, tenant).await?;
        if owner != tenant.as_str() {
            return Err(SchemaError::Owned {
                tenant: tenant.to_string(),
                schema: tenant.schema_name(),
                owner,
            });
        }
        self.ensure_schema(&tenant.schema_name()).await?;
        self.owners.lock().expect("lock").insert(tenant.clone());
        Ok(())
    }

    /// Same as [`Schemas::ensure`] for a schema given by name (the system schema).
    pub async fn ensure_schema(&self, schema: &str) -> Result<(), SchemaError> {
        if self.ready.lock().expect("lock").contains(schema) {
            return Ok(());
        }
        if self.auto_migrate {
            migrate(&self.pool, schema).await?;
        } else if applied_version(&self.pool, schema).await? < latest_version() {
            return Err(SchemaError::NotMigrated(schema.to_owned()));
        }
        self.ready.lock().expect("lock").insert(schema.to_owned());
        Ok(())
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("wa:partitions:{schema}"))
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
        self.ready.lock().expect("lock").remove(&schema);
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
    let base = format!("messages_{}_{:02}", month / 12, month % 12 + 1);
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
            None | Some("42P17") => return Ok(()),
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

/// A date as Postgres reads it: chrono writes years past 9999 with a sign (`+10000-01-01`),
/// which Postgres takes for a time zone, so December 9999's upper bound would be refused.
fn sql_date(d: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// A month as the partition cache counts it.
fn month_of(d: NaiveDate) -> i32 {
    d.year() * 12 + d.month0() as i32
}

fn month_bounds(month: i32) -> (NaiveDate, NaiveDate) {
    let date =
        |m: i32| NaiveDate::from_ymd_opt(m / 12, (m % 12 + 1) as u32, 1).expect("valid month");
    (date(month), date(month + 1))
}

pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies every pending migration to `schema` in one transaction under a per-schema lock, in
/// three round trips whatever the number of migrations (lock; schema and what is applied;
/// the pending migrations with their records) and the commit.
pub async fn migrate(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    let ident = quote_ident(schema);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("wa:migrate:{schema}"))
        .execute(&mut *tx)
        .await?;
    let mut setup: Script<()> = Script::default();
    setup.push_sql((), &format!("CREATE SCHEMA IF NOT EXISTS {ident}"));
    setup.push_sql((), &format!("SET LOCAL search_path TO {ident}"));
    setup.push_sql(
        (),
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    );
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
        return tx.commit().await;
    }
    // Each migration is a file of statements; they run as one query, each followed by its
    // record (names are the crate's own, quoted as literals).
    let mut sql = String::new();
    for m in &pending {
        sql.push_str(m.sql);
        sql.push_str(&format!(
            "\n;\nINSERT INTO schema_migrations (version, name) VALUES ({}, '{}');\n",
            m.version,
            m.name.replace('\'', "''")
        ));
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
    Ok(())
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
