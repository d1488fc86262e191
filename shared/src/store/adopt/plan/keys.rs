//! Keys and indexes of an adoption: unique keys the contract lacks made plain, missing keys
//! added once the rows that would break them are removed, missing indexes created. Indexes are
//! compared by shape (method, keys, predicate), whatever their names.

use sqlx::{PgConnection, Row};

use super::super::catalog::{Index, Table};
use super::{literal, plural, Duplicate, Planner, Step, DUPLICATES_TABLE};
use crate::model::quote_ident;
use crate::store::failure::sqlstate;

impl Planner {
    /// Keys and indexes of `ours` (the reference's table) on `theirs`: unique keys the
    /// reference lacks become plain indexes (they would refuse writes the contract allows);
    /// missing keys are added (their duplicates removed first) and missing indexes created.
    pub(super) async fn indexes(
        &mut self,
        conn: &mut PgConnection,
        ours: &Table,
        theirs: &Table,
    ) -> Result<(), sqlx::Error> {
        let table = ours.name.as_str();
        let t = self.qualified(table);
        let reference: Vec<Index> = self.reference.indexes_of(table).cloned().collect();
        let target: Vec<Index> = self.target.indexes_of(table).cloned().collect();
        let mut usable: Vec<Index> = Vec::new();
        for have in &target {
            let keeps = !have.unique || reference.iter().any(|i| i.unique && i.shape == have.shape);
            if keeps {
                usable.push(have.clone());
                continue;
            }
            let mut sql = vec![match &have.constraint {
                Some((name, _)) => {
                    format!("ALTER TABLE {t} DROP CONSTRAINT {}", quote_ident(name))
                }
                None => format!("DROP INDEX {}", self.qualified(&have.name)),
            }];
            sql.push(format!(
                "CREATE INDEX {} ON {t} {}",
                quote_ident(&have.name),
                have.shape
            ));
            self.push(Step::sql(
                table,
                "unique key",
                format!(
                    "{}: unique {} made a plain index (the contract does not make it unique)",
                    have.name,
                    keys_of(have)
                ),
                sql,
            ));
            usable.push(Index {
                unique: false,
                primary: false,
                constraint: None,
                ..have.clone()
            });
        }
        for want in &reference {
            if usable.iter().any(|have| want.served_by(have)) {
                continue;
            }
            let name = self.free_name(&want.name);
            if want.unique {
                self.duplicates(conn, theirs, want).await?;
                let sql = match &want.constraint {
                    Some((_, definition)) => format!(
                        "ALTER TABLE {t} ADD CONSTRAINT {} {definition}",
                        quote_ident(&name)
                    ),
                    None => format!(
                        "CREATE UNIQUE INDEX {} ON {t} {}",
                        quote_ident(&name),
                        want.shape
                    ),
                };
                let what = if want.primary {
                    "primary key"
                } else {
                    "unique key"
                };
                self.push(Step::sql(
                    table,
                    what,
                    format!("{name}: {what} {}", keys_of(want)),
                    vec![sql],
                ));
            } else {
                self.push(Step::sql(
                    table,
                    "index",
                    format!("{name}: {}", want.shape),
                    vec![format!(
                        "CREATE INDEX {} ON {t} {}",
                        quote_ident(&name),
                        want.shape
                    )],
                ));
            }
        }
        Ok(())
    }

    /// Rows that would break the unique key `want`: for each key, the most recent row (by
    /// `updated_at`, or `created_at`, then the primary key) is kept and the others are removed
    /// into `adopt_duplicates`. Keys whose columns the table does not have yet have no
    /// duplicates (the new columns are NULL, and NULLs never collide).
    async fn duplicates(
        &mut self,
        conn: &mut PgConnection,
        theirs: &Table,
        want: &Index,
    ) -> Result<(), sqlx::Error> {
        let table = theirs.name.as_str();
        let t = self.qualified(table);
        let keys = want.keys.join(", ");
        let id: Vec<String> = self
            .target
            .primary_key(table)
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| vec!["ctid".to_owned()]);
        let recent = ["updated_at", "created_at"]
            .into_iter()
            .find(|c| theirs.column(c).is_some())
            .map(|c| format!("t.{} DESC NULLS LAST, ", quote_ident(c)))
            .unwrap_or_default();
        let order = id
            .iter()
            .map(|k| format!("t.{k} DESC"))
            .collect::<Vec<_>>()
            .join(", ");
        let identity = |alias: &str| {
            let pairs: Vec<String> = id
                .iter()
                .map(|k| format!("{}, {alias}.{k}", literal(k)))
                .collect();
            format!("jsonb_build_object({})", pairs.join(", "))
        };
        let present = want
            .keys
            .iter()
            .map(|k| format!("({k}) IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let ranked = format!(
            "ranked AS (SELECT t.tableoid AS toid, t.ctid AS tid, row_number() OVER w AS n, \
             first_value({kept}) OVER w AS kept, jsonb_build_array({keys}) AS key \
             FROM {t} t WHERE {present} \
             WINDOW w AS (PARTITION BY {keys} ORDER BY {recent}{order}))",
            kept = identity("t"),
        );
        let look = format!(
            "WITH {ranked} SELECT r.key, r.kept, {removed_key}, to_jsonb(t) \
             FROM {t} t JOIN ranked r ON t.tableoid = r.toid AND t.ctid = r.tid \
             WHERE r.n > 1 ORDER BY r.key::text, r.n",
            removed_key = identity("t"),
        );
        sqlx::query("SAVEPOINT duplicates")
            .execute(&mut *conn)
            .await?;
        let rows = match sqlx::query(&look).fetch_all(&mut *conn).await {
            Ok(rows) => {
                sqlx::query("RELEASE SAVEPOINT duplicates")
                    .execute(&mut *conn)
                    .await?;
                rows
            }
            // undefined_column: the key's columns are added by this adoption.
            Err(e) if sqlstate(&e).as_deref() == Some("42703") => {
                sqlx::query("ROLLBACK TO SAVEPOINT duplicates")
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if rows.is_empty() {
            return Ok(());
        }
        for r in &rows {
            self.plan.duplicates.push(Duplicate {
                table: table.to_owned(),
                key_columns: keys.clone(),
                key: r.try_get(0)?,
                kept: r.try_get(1)?,
                removed_key: r.try_get(2)?,
                removed: r.try_get(3)?,
            });
        }
        let store = self.qualified(DUPLICATES_TABLE);
        let sql = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {store} (
                     id bigserial PRIMARY KEY,
                     table_name text NOT NULL,
                     key_columns text NOT NULL,
                     key jsonb NOT NULL,
                     kept jsonb NOT NULL,
                     removed jsonb NOT NULL,
                     removed_at timestamptz NOT NULL DEFAULT now()
                 )"
            ),
            format!(
                "WITH {ranked}, gone AS (DELETE FROM {t} t USING ranked r \
                 WHERE r.n > 1 AND t.tableoid = r.toid AND t.ctid = r.tid \
                 RETURNING r.key, r.kept, to_jsonb(t) AS removed) \
                 INSERT INTO {store} (table_name, key_columns, key, kept, removed) \
                 SELECT {}, {}, key, kept, removed FROM gone",
                literal(table),
                literal(&keys)
            ),
        ];
        self.push(Step::sql(
            table,
            "duplicates",
            format!(
                "{} removed for unique ({keys}), the most recent of each key kept; removed rows kept in {DUPLICATES_TABLE}",
                plural(rows.len() as i64, "row", "rows")
            ),
            sql,
        ));
        Ok(())
    }
}

/// An index's keys, for people: `(agent_id, phone_number)`.
fn keys_of(index: &Index) -> String {
    format!("({})", index.keys.join(", "))
}
