//! Partitions of an adoption: the DEFAULT partition of `messages` (rows of months without a
//! partition) detached, its rows moved into monthly partitions, dropped; the other partitions
//! kept as they are, whatever their names; new partitions published like their siblings.

use sqlx::{PgConnection, Row};

use super::super::catalog;
use super::{plural, Planner, Step};
use crate::model::quote_ident;
use crate::store::schema::{month_bounds, partition_name, sql_date};

impl Planner {
    /// The partition steps (see the module), when `messages` has a DEFAULT partition.
    pub(super) async fn partitions(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let parts = catalog::partitions(conn, &self.schema).await?;
        let Some(default) = parts.into_iter().find(|p| p.default) else {
            return Ok(());
        };
        let d = self.qualified(&default.name);
        let m = self.qualified("messages");
        let months = sqlx::query(&format!(
            "SELECT (extract(year FROM message_date) * 12 + extract(month FROM message_date) - 1)::int4, \
             count(*) FROM {d} GROUP BY 1 ORDER BY 1"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let months: Vec<(i32, i64)> = months
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let rows: i64 = months.iter().map(|(_, n)| n).sum();
        let publications = catalog::publications(conn, &self.schema).await?;
        self.push(Step::sql(
            "messages",
            "partition",
            format!(
                "detach the DEFAULT partition {} ({})",
                default.name,
                plural(rows, "row", "rows")
            ),
            vec![format!("ALTER TABLE {m} DETACH PARTITION {d}")],
        ));
        let mut created = Vec::new();
        for (month, n) in &months {
            let name = self.free_name(&partition_name(*month));
            let (from, to) = month_bounds(*month);
            self.push(Step::sql(
                "messages",
                "partition",
                format!(
                    "create {name} for {} ({} to move)",
                    &sql_date(from)[..7],
                    plural(*n, "row", "rows")
                ),
                vec![format!(
                    "CREATE TABLE {} PARTITION OF {m} FOR VALUES FROM ('{}') TO ('{}')",
                    self.qualified(&name),
                    sql_date(from),
                    sql_date(to)
                )],
            ));
            created.push(name);
        }
        let columns = self.message_columns();
        self.push(Step::sql(
            "messages",
            "move rows",
            format!(
                "{} from {} into the monthly partitions; {} dropped",
                plural(rows, "row", "rows"),
                default.name,
                default.name
            ),
            vec![
                format!("INSERT INTO {m} ({columns}) SELECT {columns} FROM {d}"),
                format!("DROP TABLE {d}"),
            ],
        ));
        if created.is_empty() {
            return Ok(());
        }
        let list = created.join(", ");
        for publication in publications {
            let step = if publication.whole {
                Step::note(
                    &publication.name,
                    "publication",
                    format!("publishes {list} through messages, as it does every partition"),
                )
            } else {
                Step {
                    publish: created.clone(),
                    ..Step::note(
                        &publication.name,
                        "publication",
                        format!("{list} added, as the other partitions are"),
                    )
                }
            };
            self.push(step);
        }
        Ok(())
    }

    /// Every column `messages` has once adopted (the schema's and the reference's), quoted.
    fn message_columns(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for table in [
            self.target.tables.get("messages"),
            self.reference.tables.get("messages"),
        ]
        .into_iter()
        .flatten()
        {
            for c in &table.columns {
                if !names.contains(&c.name.as_str()) {
                    names.push(&c.name);
                }
            }
        }
        names
            .into_iter()
            .map(quote_ident)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
