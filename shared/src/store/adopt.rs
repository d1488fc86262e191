//! Taking over the tenant schemas of the earlier service (SPEC §16).
//!
//! A schema is this service's when it holds the migration bookkeeping of [`super::schema`]
//! (`schema_migrations` with `version` and `name`). A schema that holds tables without it was
//! made by someone else — the earlier Go service — and *awaits adoption* ([`Standing::Foreign`]):
//! the functions run no DDL on it and hold its events.
//!
//! [`adopt`] brings such a schema to the current migration version without losing a row. It
//! builds the reference (every migration, applied to a scratch schema in the same transaction),
//! compares the two catalogs column by column and index by index, and plans the changes
//! ([`Step`]): missing tables, columns, defaults, NOT NULLs, keys and indexes; the rows that
//! block a new unique key removed (the most recent of each key kept) and kept in
//! `adopt_duplicates`; the DEFAULT partition's rows moved into monthly partitions; new partitions
//! published like their siblings. A dry run reports the plan and rolls back. Otherwise the steps
//! run in one transaction under the schema's locks (the migration, tenant and partition locks
//! the functions take), a second plan must find nothing left to change, and the migrations are
//! recorded: from then on the schema is the service's. A failing step rolls everything back and
//! is named in the error.

mod catalog;
mod plan;

pub use plan::{Duplicate, Step, STATUS_RANK_SQL};

use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use super::schema::{
    all_migrations_sql, latest_version, migrate_lock_key, partitions_lock_key, record_statement,
    tenant_schemas, BOOKKEEPING, MIGRATIONS,
};
use super::tenant_tx::schema_lock_key;
use crate::model::{quote_ident, TenantId};

/// How a schema stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// There is no such schema.
    Absent,
    /// The schema exists and holds none of the contract's tables: the functions create them on
    /// first use.
    Empty,
    /// The schema holds this service's migration bookkeeping.
    Ours,
    /// Someone else's tables (why, for people): the schema awaits adoption.
    Foreign(String),
}

/// A schema that awaits adoption, as the functions report it (log, `/ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitingAdoption {
    pub schema: String,
    /// The tenant whose events found it, when known.
    pub tenant: Option<String>,
    /// Why it is not this service's.
    pub why: String,
}

impl AwaitingAdoption {
    pub fn new(schema: &str, tenant: Option<&TenantId>, why: String) -> Self {
        AwaitingAdoption {
            schema: schema.to_owned(),
            tenant: tenant.map(|t| t.to_string()),
            why,
        }
    }
}

impl std::fmt::Display for AwaitingAdoption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenant = self.tenant.as_deref();
        if let Some(t) = tenant {
            write!(f, "tenant {t}: ")?;
        }
        write!(
            f,
            "schema {} awaits adoption ({}, as the earlier service left it); its events are held, not written, until `wa-admin adopt --tenant {}` adopts it",
            self.schema,
            self.why,
            tenant.unwrap_or("<company id>")
        )
    }
}

impl std::error::Error for AwaitingAdoption {}

/// How schema `$1` stands, in one statement; with a lock key in `$2`, it also takes that
/// advisory lock, unless the schema is someone else's (so that nobody waits for an adoption in
/// progress, which holds the lock). A schema is someone else's when it holds tables of the
/// contract's names but not our bookkeeping. Relations are looked up by name (an index scan of
/// the catalog, cheap with thousands of schemas), never by listing the schema.
const STANDING: &str = "
SELECT st.present, st.tables, st.bookkeeping,
       CASE WHEN $2::text IS NULL
                 OR (st.present AND CASE WHEN st.bookkeeping IS NULL THEN cardinality(st.tables) > 0
                                         ELSE NOT st.bookkeeping @> ARRAY['version', 'name'] END)
            THEN NULL
            ELSE pg_advisory_xact_lock(hashtextextended($2, 0))::text END
FROM (
    SELECT n.oid IS NOT NULL AS present,
           ARRAY(SELECT c.relname::text FROM pg_class c
                 WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
                   AND c.relname = ANY('{agents,chats,contacts,exhausted_events,inbox,messages,onboarding_log}')
                 ORDER BY 1) AS tables,
           (SELECT array_agg(a.attname::text ORDER BY a.attnum)
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relnamespace = n.oid AND c.relname = 'schema_migrations' AND c.relkind = 'r'
           ) AS bookkeeping
    FROM (SELECT $1::text AS name) s
    LEFT JOIN pg_namespace n ON n.nspname = s.name
) st";

async fn read_standing(
    conn: &mut PgConnection,
    schema: &str,
    lock: Option<&str>,
) -> Result<Standing, sqlx::Error> {
    let row = sqlx::query(STANDING)
        .bind(schema)
        .bind(lock)
        .fetch_one(conn)
        .await?;
    let present: bool = row.try_get(0)?;
    let tables: Vec<String> = row.try_get(1)?;
    let bookkeeping: Option<Vec<String>> = row.try_get(2)?;
    Ok(match (present, bookkeeping) {
        (false, _) => Standing::Absent,
        (true, Some(columns)) => {
            if columns.iter().any(|c| c == "version") && columns.iter().any(|c| c == "name") {
                Standing::Ours
            } else {
                Standing::Foreign(format!(
                    "its schema_migrations table is not this service's (columns {})",
                    columns.join(", ")
                ))
            }
        }
        (true, None) if tables.is_empty() => Standing::Empty,
        (true, None) => Standing::Foreign(format!(
            "tables {} but no migration bookkeeping",
            tables.join(", ")
        )),
    })
}

/// How `schema` stands.
pub async fn standing(pool: &PgPool, schema: &str) -> Result<Standing, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    read_standing(&mut conn, schema, None).await
}

/// How `schema` stands, with the advisory lock `lock` taken unless the schema is someone
/// else's (see [`super::schema::migrate`]).
pub(crate) async fn standing_then_lock(
    conn: &mut PgConnection,
    schema: &str,
    lock: &str,
) -> Result<Standing, sqlx::Error> {
    read_standing(conn, schema, Some(lock)).await
}

/// Every tenant schema (`daisi_*`) that awaits adoption.
pub async fn awaiting(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let mut out = Vec::new();
    for schema in tenant_schemas(pool).await? {
        if let Standing::Foreign(_) = standing(pool, &schema).await? {
            out.push(schema);
        }
    }
    Ok(out)
}

/// What an adoption did, or (dry run) would do.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: String,
    /// The company id recorded as the schema's owner, when the functions have met it.
    pub tenant: Option<String>,
    pub dry_run: bool,
    /// Whether the schema was adopted by this run.
    pub adopted: bool,
    /// Why there is nothing to do, when there is not.
    pub nothing_to_do: Option<String>,
    pub steps: Vec<Step>,
    pub duplicates: Vec<Duplicate>,
}

impl Report {
    /// Steps that change the schema (notes aside).
    pub fn changes(&self) -> usize {
        self.steps.iter().filter(|s| s.changes()).count()
    }
}

/// Why a schema could not be adopted. Nothing of the adoption is left behind.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("{0}: no such schema")]
    Absent(String),
    #[error("{schema}: step \"{step}\" failed, the schema is as it was: {source}")]
    Step {
        schema: String,
        step: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{schema}: the adoption left changes undone ({left}); the schema is as it was")]
    Unfinished { schema: String, left: String },
    #[error("{schema}: {source}")]
    Db {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
}

/// How long an adoption waits for a lock (readers' queries, a function's write) before it
/// gives up.
const LOCK_TIMEOUT: &str = "60s";

/// Adopts `schema` (see the module), or with `dry_run` only reports what adopting would do.
pub async fn adopt(pool: &PgPool, schema: &str, dry_run: bool) -> Result<Report, AdoptError> {
    let db = |source| AdoptError::Db {
        schema: schema.to_owned(),
        source,
    };
    let mut tx = pool.begin().await.map_err(db)?;
    let mut report = Report {
        schema: schema.to_owned(),
        tenant: owner(&mut tx, schema).await.map_err(db)?,
        dry_run,
        adopted: false,
        nothing_to_do: None,
        steps: Vec::new(),
        duplicates: Vec::new(),
    };
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if !dry_run {
        // The locks the functions take to migrate, write and partition this schema.
        for key in [
            migrate_lock_key(schema),
            schema_lock_key(schema),
            partitions_lock_key(schema),
        ] {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
    }
    match read_standing(&mut tx, schema, None).await.map_err(db)? {
        Standing::Absent => return Err(AdoptError::Absent(schema.to_owned())),
        Standing::Empty => {
            report.nothing_to_do =
                Some("the schema holds no table; the functions create theirs on first use".into());
            return Ok(report);
        }
        Standing::Ours => {
            let version: i32 = sqlx::query_scalar(&format!(
                "SELECT COALESCE(max(version), 0) FROM {}.schema_migrations",
                quote_ident(schema)
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            report.nothing_to_do = Some(format!(
                "the schema is this service's already (migration version {version} of {})",
                latest_version()
            ));
            return Ok(report);
        }
        Standing::Foreign(_) => {}
    }
    let reference = build_reference(&mut tx).await.map_err(db)?;
    let planned = plan::plan(&mut tx, schema, &reference).await.map_err(db)?;
    report.steps = planned.steps;
    report.duplicates = planned.duplicates;
    let record = Step {
        table: "schema_migrations".into(),
        change: "record",
        detail: format!(
            "migrations 1-{} recorded as applied: the schema is this service's from now on",
            latest_version()
        ),
        sql: vec![
            format!("SET LOCAL search_path TO {}", quote_ident(schema)),
            BOOKKEEPING.to_owned(),
            record_statement(&MIGRATIONS.iter().collect::<Vec<_>>()),
        ],
        publish: Vec::new(),
    };
    if dry_run {
        report.steps.push(record);
        tx.rollback().await.map_err(db)?;
        return Ok(report);
    }
    for step in &report.steps {
        apply(&mut tx, schema, step)
            .await
            .map_err(|source| AdoptError::Step {
                schema: schema.to_owned(),
                step: format!("{} {}: {}", step.table, step.change, step.detail),
                source,
            })?;
    }
    let left: Vec<String> = plan::plan(&mut tx, schema, &reference)
        .await
        .map_err(db)?
        .steps
        .into_iter()
        .filter(Step::changes)
        .map(|s| format!("{} {}: {}", s.table, s.change, s.detail))
        .collect();
    if !left.is_empty() {
        return Err(AdoptError::Unfinished {
            schema: schema.to_owned(),
            left: left.join("; "),
        });
    }
    apply(&mut tx, schema, &record)
        .await
        .map_err(|source| AdoptError::Step {
            schema: schema.to_owned(),
            step: format!("{} {}", record.table, record.change),
            source,
        })?;
    sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", quote_ident(&reference)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    report.steps.push(record);
    report.adopted = true;
    Ok(report)
}

/// Runs one step.
async fn apply(conn: &mut PgConnection, schema: &str, step: &Step) -> Result<(), sqlx::Error> {
    for sql in &step.sql {
        sqlx::raw_sql(sql).execute(&mut *conn).await?;
    }
    for partition in &step.publish {
        for publication in super::schema::publications_missing(conn, schema, partition).await? {
            sqlx::raw_sql(&format!(
                "ALTER PUBLICATION {} ADD TABLE {}.{}",
                quote_ident(&publication),
                quote_ident(schema),
                quote_ident(partition)
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Builds the schema the migrations make, in a scratch schema of this transaction (named after
/// the backend, so that adoptions running at once do not meet); returns its name.
async fn build_reference(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    let name = format!("wa_adopt_reference_{pid}");
    let ident = quote_ident(&name);
    let sql = format!(
        "CREATE SCHEMA {ident};\nSET LOCAL search_path TO {ident};\n{}\n;\nSET LOCAL search_path TO pg_catalog",
        all_migrations_sql()
    );
    sqlx::raw_sql(&sql).execute(&mut *conn).await?;
    Ok(name)
}

/// The company id recorded as the owner of `schema`, if the functions have met one.
async fn owner(conn: &mut PgConnection, schema: &str) -> Result<Option<String>, sqlx::Error> {
    let recorded: bool = sqlx::query_scalar("SELECT to_regclass('wa_system.tenants') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !recorded {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT tenant_id FROM wa_system.tenants WHERE schema_name = $1")
        .bind(schema)
        .fetch_optional(conn)
        .await
}
