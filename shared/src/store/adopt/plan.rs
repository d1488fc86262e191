//! The changes that bring a schema of the earlier service to the reference (the schema that
//! `migrations/` build), found by comparing the two catalogs column by column and index by
//! index, in the order they must run: bookkeeping, tables, columns, derived values, keys and
//! indexes (duplicates that block a new unique key first), partitions, publications.

mod keys;
mod partitions;

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use super::catalog::{self, Catalog, Column, Table};
use crate::model::quote_ident;

/// One change of an adoption, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The table (or publication) it changes.
    pub table: String,
    /// What kind of change (`add column`, `unique key`, `partition`, …).
    pub change: &'static str,
    /// The change, for people.
    pub detail: String,
    /// The statements it runs (empty for a note, which changes nothing).
    pub sql: Vec<String>,
    #[serde(skip)]
    pub(super) publish: Vec<String>,
}

impl Step {
    fn sql(table: &str, change: &'static str, detail: String, sql: Vec<String>) -> Self {
        Step {
            table: table.to_owned(),
            change,
            detail,
            sql,
            publish: Vec::new(),
        }
    }

    fn note(table: &str, change: &'static str, detail: String) -> Self {
        Step::sql(table, change, detail, Vec::new())
    }

    /// Whether the step changes the schema (a note does not).
    pub fn changes(&self) -> bool {
        !self.sql.is_empty() || !self.publish.is_empty()
    }
}

/// A row removed because it blocked a new unique key: another row with the same key was more
/// recent. Removed rows are kept as JSON in the schema's `adopt_duplicates` table.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    pub table: String,
    /// The key's columns (or expressions), comma-separated.
    pub key_columns: String,
    /// The duplicated key's values.
    pub key: Value,
    /// The primary key of the row kept.
    pub kept: Value,
    /// The primary key of the row removed.
    pub removed_key: Value,
    /// The whole row removed.
    pub removed: Value,
}

/// What an adoption changes.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    pub steps: Vec<Step>,
    pub duplicates: Vec<Duplicate>,
}

/// The table that keeps the rows removed as duplicates (created by the first removal).
pub(super) const DUPLICATES_TABLE: &str = "adopt_duplicates";

/// The rank of a message's `status` in SQL, as [`crate::model::fields::status_rank`] computes it
/// (the column the write path keeps beside `status` for its monotonic guard).
pub const STATUS_RANK_SQL: &str = "(CASE lower(btrim(status, E' \\t\\n\\r')) \
    WHEN '0' THEN 0 WHEN '1' THEN 1 WHEN '2' THEN 2 WHEN '3' THEN 3 WHEN '4' THEN 4 WHEN '5' THEN 5 \
    WHEN 'pending' THEN 1 WHEN 'sent' THEN 2 WHEN 'server_ack' THEN 2 WHEN 'delivered' THEN 3 \
    WHEN 'delivery_ack' THEN 3 WHEN 'read' THEN 4 WHEN 'played' THEN 5 ELSE 0 END)::smallint";

/// Plans the adoption of `schema`, compared with the reference built in `reference`.
pub(super) async fn plan(
    conn: &mut PgConnection,
    schema: &str,
    reference: &str,
) -> Result<Plan, sqlx::Error> {
    let mut p = Planner {
        schema: schema.to_owned(),
        s: quote_ident(schema),
        r: quote_ident(reference),
        target: catalog::read(conn, schema).await?,
        reference: catalog::read(conn, reference).await?,
        taken: HashSet::new(),
        plan: Plan::default(),
    };
    p.taken.extend(p.target.names.iter().cloned());
    p.bookkeeping();
    let tables: Vec<Table> = p
        .reference
        .tables
        .values()
        .filter(|t| t.name != "schema_migrations")
        .cloned()
        .collect();
    let mut present = Vec::new();
    for ours in &tables {
        match p.target.tables.get(&ours.name).cloned() {
            None => p.create_table(ours),
            Some(theirs) => {
                p.columns(conn, ours, &theirs).await?;
                present.push((ours.clone(), theirs));
            }
        }
    }
    for (ours, theirs) in &present {
        p.derived(conn, ours, theirs).await?;
    }
    for (ours, theirs) in &present {
        p.indexes(conn, ours, theirs).await?;
    }
    if present
        .iter()
        .any(|(ours, theirs)| ours.name == "messages" && theirs.partitioned)
    {
        p.partitions(conn).await?;
    }
    Ok(p.plan)
}

struct Planner {
    schema: String,
    /// The schema, quoted.
    s: String,
    /// The reference schema, quoted.
    r: String,
    target: Catalog,
    reference: Catalog,
    /// Relation names in use, or used by this plan.
    taken: HashSet<String>,
    plan: Plan,
}

impl Planner {
    fn push(&mut self, step: Step) {
        self.plan.steps.push(step);
    }

    /// `name`, or `name_<n>` when it is taken; taken from now on.
    fn free_name(&mut self, name: &str) -> String {
        let mut candidate = name.to_owned();
        let mut n = 0;
        while self.taken.contains(&candidate) {
            n += 1;
            candidate = format!("{name}_{n}");
        }
        self.taken.insert(candidate.clone());
        candidate
    }

    fn qualified(&self, name: &str) -> String {
        format!("{}.{}", self.s, quote_ident(name))
    }

    /// Another tool's `schema_migrations` (e.g. golang-migrate's `version, dirty`) is kept under
    /// another name: ours takes its place.
    fn bookkeeping(&mut self) {
        let Some(theirs) = self.target.tables.get("schema_migrations") else {
            return;
        };
        if theirs.column("version").is_some() && theirs.column("name").is_some() {
            return;
        }
        let to = self.free_name("schema_migrations_earlier");
        let sql = format!(
            "ALTER TABLE {} RENAME TO {}",
            self.qualified("schema_migrations"),
            quote_ident(&to)
        );
        self.push(Step::sql(
            "schema_migrations",
            "rename table",
            format!("the earlier bookkeeping is kept as {to}"),
            vec![sql],
        ));
    }

    /// A table the schema lacks, created like the reference's.
    fn create_table(&mut self, ours: &Table) {
        let t = self.qualified(&ours.name);
        let mut sql = vec![format!(
            "CREATE TABLE {t} (LIKE {}.{} INCLUDING ALL EXCLUDING DEFAULTS){}",
            self.r,
            quote_ident(&ours.name),
            ours.partition_key
                .as_ref()
                .map(|k| format!(" PARTITION BY {k}"))
                .unwrap_or_default()
        )];
        for c in &ours.columns {
            sql.extend(self.set_default(&ours.name, c, false));
        }
        self.push(Step::sql(
            &ours.name,
            "create table",
            format!("{} as in the current migrations", ours.name),
            sql,
        ));
    }

    /// The statements giving column `c` of `table` the reference's default (`c.default`); a
    /// sequence of its own for a serial column (`fill`: starting after the rows there are).
    fn set_default(&mut self, table: &str, c: &Column, fill: bool) -> Vec<String> {
        let t = self.qualified(table);
        let col = quote_ident(&c.name);
        match &c.default {
            None => Vec::new(),
            Some(_) if c.serial() => {
                let seq = self.free_name(&format!("{table}_{}_seq", c.name));
                let seq_q = self.qualified(&seq);
                let mut sql = vec![format!("CREATE SEQUENCE {seq_q} OWNED BY {t}.{col}")];
                if fill {
                    sql.push(format!(
                        "SELECT setval('{}', COALESCE((SELECT max({col}) FROM {t}), 0) + 1, false)",
                        seq_q.replace('\'', "''")
                    ));
                }
                sql.push(format!(
                    "ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT nextval('{}'::regclass)",
                    seq_q.replace('\'', "''")
                ));
                sql
            }
            Some(expr) => vec![format!(
                "ALTER TABLE {t} ALTER COLUMN {col} SET DEFAULT {expr}"
            )],
        }
    }

    /// Columns: missing ones added, then type, default and NOT NULL made the reference's;
    /// NOT NULL dropped from columns the service does not write.
    async fn columns(
        &mut self,
        conn: &mut PgConnection,
        ours: &Table,
        theirs: &Table,
    ) -> Result<(), sqlx::Error> {
        let table = ours.name.as_str();
        let t = self.qualified(table);
        let key: Vec<String> = self.target.primary_key(table).unwrap_or_default();
        for c in &ours.columns {
            let col = quote_ident(&c.name);
            let Some(have) = theirs.column(&c.name) else {
                let ty = match (c.serial(), c.ty.as_str()) {
                    (true, "bigint") => "bigserial".to_owned(),
                    (true, "integer") => "serial".to_owned(),
                    (true, "smallint") => "smallserial".to_owned(),
                    _ => c.ty.clone(),
                };
                let default = c
                    .default
                    .as_ref()
                    .filter(|_| !c.serial())
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default();
                let filled = c.default.is_some()
                    || count(conn, &format!("SELECT count(*) FROM {t}")).await? == 0;
                let not_null = if c.not_null && filled {
                    " NOT NULL"
                } else {
                    ""
                };
                self.push(Step::sql(
                    table,
                    "add column",
                    format!("{} {ty}{default}{not_null}", c.name),
                    vec![format!(
                        "ALTER TABLE {t} ADD COLUMN {col} {ty}{default}{not_null}"
                    )],
                ));
                if c.not_null && !filled {
                    self.push(Step::note(
                        table,
                        "nullable",
                        format!(
                            "{} left nullable: the table has rows and no default fills them",
                            c.name
                        ),
                    ));
                }
                continue;
            };
            // Type, default and NULLs of one column: one step.
            let mut changes: Vec<(&'static str, String, Vec<String>)> = Vec::new();
            if have.ty != c.ty {
                changes.push((
                    "column type",
                    format!("{} -> {}", have.ty, c.ty),
                    vec![format!(
                        "ALTER TABLE {t} ALTER COLUMN {col} TYPE {ty} USING {col}::{ty}",
                        ty = c.ty
                    )],
                ));
            }
            let same_default = match (&have.default, &c.default) {
                (Some(a), Some(b)) => a == b || (have.serial() && c.serial()),
                (None, None) => true,
                _ => false,
            };
            if !same_default {
                match &c.default {
                    Some(expr) => {
                        let sql = self.set_default(table, c, true);
                        changes.push(("default", format!("default {expr}"), sql));
                    }
                    None => changes.push((
                        "default",
                        format!(
                            "no default (was {})",
                            have.default.as_deref().unwrap_or_default()
                        ),
                        vec![format!("ALTER TABLE {t} ALTER COLUMN {col} DROP DEFAULT")],
                    )),
                }
            }
            if c.not_null && !have.not_null {
                let nulls = count(
                    conn,
                    &format!("SELECT count(*) FROM {t} WHERE {col} IS NULL"),
                )
                .await?;
                if nulls == 0 {
                    changes.push((
                        "not null",
                        "NOT NULL".into(),
                        vec![format!("ALTER TABLE {t} ALTER COLUMN {col} SET NOT NULL")],
                    ));
                } else {
                    self.push(Step::note(
                        table,
                        "nullable",
                        format!(
                            "{} left nullable: {}",
                            c.name,
                            plural(nulls, "row holds NULL", "rows hold NULL")
                        ),
                    ));
                }
            } else if !c.not_null && have.not_null && !key.contains(&c.name) {
                changes.push((
                    "nullable",
                    "NULL allowed, as the service may write it".into(),
                    vec![format!("ALTER TABLE {t} ALTER COLUMN {col} DROP NOT NULL")],
                ));
            }
            match changes.len() {
                0 => {}
                1 => {
                    let (change, detail, sql) = changes.remove(0);
                    self.push(Step::sql(
                        table,
                        change,
                        format!("{}: {detail}", c.name),
                        sql,
                    ));
                }
                _ => {
                    let detail = changes
                        .iter()
                        .map(|(_, d, _)| d.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    let sql = changes.into_iter().flat_map(|(_, _, sql)| sql).collect();
                    self.push(Step::sql(
                        table,
                        "alter column",
                        format!("{}: {detail}", c.name),
                        sql,
                    ));
                }
            }
        }
        for extra in &theirs.columns {
            if ours.column(&extra.name).is_none()
                && extra.not_null
                && extra.default.is_none()
                && !key.contains(&extra.name)
            {
                self.push(Step::sql(
                    table,
                    "nullable",
                    format!(
                        "{}: NULL allowed (a column the service does not write)",
                        extra.name
                    ),
                    vec![format!(
                        "ALTER TABLE {t} ALTER COLUMN {} DROP NOT NULL",
                        quote_ident(&extra.name)
                    )],
                ));
            }
        }
        Ok(())
    }

    /// Columns the write path derives from others, filled in for the rows there are:
    /// `messages.status_rank` (else an old message's status could regress).
    async fn derived(
        &mut self,
        conn: &mut PgConnection,
        ours: &Table,
        theirs: &Table,
    ) -> Result<(), sqlx::Error> {
        if ours.name != "messages"
            || ours.column("status_rank").is_none()
            || theirs.column("status").is_none()
        {
            return Ok(());
        }
        let t = self.qualified("messages");
        let stale = if theirs.column("status_rank").is_some() {
            format!("status IS NOT NULL AND status_rank IS DISTINCT FROM {STATUS_RANK_SQL}")
        } else {
            "status IS NOT NULL".to_owned()
        };
        let n = count(conn, &format!("SELECT count(*) FROM {t} WHERE {stale}")).await?;
        if n > 0 {
            self.push(Step::sql(
                "messages",
                "fill column",
                format!("status_rank from status ({})", plural(n, "row", "rows")),
                vec![format!(
                    "UPDATE {t} SET status_rank = {STATUS_RANK_SQL} \
                     WHERE status IS NOT NULL AND status_rank IS DISTINCT FROM {STATUS_RANK_SQL}"
                )],
            ));
        }
        Ok(())
    }
}

/// `n` and its noun: `1 row`, `2 rows`.
fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `s` as an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn count(conn: &mut PgConnection, sql: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql).fetch_one(conn).await
}
