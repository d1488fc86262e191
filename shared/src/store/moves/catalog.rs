//! What a tenant schema holds, read from the catalog of its database: the tables that are not
//! partitions with their columns, the partitions with their bounds, the sequences with their
//! values, the indexes with their definitions. A move copies and compares schemas by it.

use sqlx::{PgConnection, Row};

use crate::model::quote_ident;

/// A table of the schema that is not a partition.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) name: String,
    pub(super) partitioned: bool,
    /// `PARTITION BY` of a partitioned table.
    pub(super) partition_key: Option<String>,
    pub(super) columns: Vec<Column>,
}

#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) type_sql: String,
    pub(super) not_null: bool,
    pub(super) default: Option<String>,
    /// The expression of a generated column (not copied: the target computes it).
    pub(super) generated: Option<String>,
    /// `a` (always) or `d` (by default) for an identity column.
    pub(super) identity: Option<char>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Partition {
    pub(super) parent: String,
    pub(super) name: String,
    pub(super) bound: String,
    /// Its `PARTITION BY`, when it is partitioned itself.
    pub(super) partition_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sequence {
    pub(super) name: String,
    pub(super) data_type: String,
    pub(super) start: i64,
    pub(super) min: i64,
    pub(super) max: i64,
    pub(super) increment: i64,
    pub(super) cycle: bool,
    /// None until the first `nextval`.
    pub(super) last_value: Option<i64>,
}

#[derive(Debug, Clone)]
pub(super) struct Index {
    pub(super) name: String,
    pub(super) table: String,
    pub(super) definition: String,
    /// The definition without the index's name, to find the same index under another name.
    pub(super) shape: String,
    /// The definition of the constraint the index backs (primary key, unique, exclusion).
    pub(super) constraint: Option<String>,
}

/// What a schema holds.
#[derive(Debug, Clone, Default)]
pub(super) struct Catalog {
    pub(super) tables: Vec<Table>,
    pub(super) partitions: Vec<Partition>,
    pub(super) sequences: Vec<Sequence>,
    pub(super) indexes: Vec<Index>,
}

impl Catalog {
    pub(super) fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl Table {
    /// The columns rows are copied and compared by: the stored ones.
    pub(super) fn copied(&self) -> Vec<&Column> {
        self.columns
            .iter()
            .filter(|c| c.generated.is_none())
            .collect()
    }

    pub(super) fn column_list(&self) -> String {
        self.copied()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The rows of this table alone (a partitioned table's are its partitions').
    pub(super) fn rows_from(&self, schema: &str) -> String {
        let only = if self.partitioned { "" } else { "ONLY " };
        format!("{only}{}.{}", quote_ident(schema), quote_ident(&self.name))
    }
}

/// The tables, partitions, sequences and indexes of `schema`, as `conn` sees them.
pub(super) async fn catalog(conn: &mut PgConnection, schema: &str) -> Result<Catalog, sqlx::Error> {
    let mut tables: Vec<Table> = sqlx::query(
        "SELECT c.relname::text, c.relkind = 'p',
                CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname <> 'schema_migrations'
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(Table {
            name: r.try_get(0)?,
            partitioned: r.try_get(1)?,
            partition_key: r.try_get(2)?,
            columns: Vec::new(),
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let columns = sqlx::query(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text,
                a.attidentity::text
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    for r in columns {
        let table: String = r.try_get(0)?;
        let Some(t) = tables.iter_mut().find(|t| t.name == table) else {
            continue;
        };
        let expression: Option<String> = r.try_get(4)?;
        let generated = r.try_get::<String, _>(5)? == "s";
        let identity: String = r.try_get(6)?;
        t.columns.push(Column {
            name: r.try_get(1)?,
            type_sql: r.try_get(2)?,
            not_null: r.try_get(3)?,
            default: expression.clone().filter(|_| !generated),
            generated: expression.filter(|_| generated),
            identity: identity.chars().next(),
        });
    }
    let partitions = sqlx::query(
        "SELECT p.relname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid),
                CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
         FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relispartition AND c.relkind IN ('r', 'p')
         ORDER BY p.relispartition, 1, 2", // first-level partitions first
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(Partition {
            parent: r.try_get(0)?,
            name: r.try_get(1)?,
            bound: r.try_get(2)?,
            partition_key: r.try_get(3)?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let sequences = sqlx::query(
        "SELECT sequencename::text, data_type::text, start_value, min_value, max_value,
                increment_by, cycle, last_value
         FROM pg_sequences WHERE schemaname = $1 ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        Ok(Sequence {
            name: r.try_get(0)?,
            data_type: r.try_get(1)?,
            start: r.try_get(2)?,
            min: r.try_get(3)?,
            max: r.try_get(4)?,
            increment: r.try_get(5)?,
            cycle: r.try_get(6)?,
            last_value: r.try_get(7)?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    let indexes = sqlx::query(
        "SELECT i.relname::text, t.relname::text, pg_get_indexdef(i.oid),
                pg_get_constraintdef(k.oid)
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         LEFT JOIN pg_constraint k ON k.conindid = i.oid AND k.conrelid = t.oid
                                  AND k.contype IN ('p', 'u', 'x')
         WHERE n.nspname = $1 AND NOT t.relispartition AND t.relname <> 'schema_migrations'
         ORDER BY 2, 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        let definition: String = r.try_get(2)?;
        Ok(Index {
            name: r.try_get(0)?,
            table: r.try_get(1)?,
            shape: index_shape(&definition),
            definition,
            constraint: r.try_get(3)?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(Catalog {
        tables,
        partitions,
        sequences,
        indexes,
    })
}

/// An index definition without the index's name (and without `ONLY`, which a partitioned
/// table's index definition names).
pub(super) fn index_shape(definition: &str) -> String {
    let unique = if definition.starts_with("CREATE UNIQUE INDEX ") {
        "UNIQUE "
    } else {
        ""
    };
    match definition.find(" ON ") {
        Some(at) => {
            let rest = &definition[at + 4..];
            let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
            format!("CREATE {unique}INDEX ON {rest}")
        }
        None => definition.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_shape_leaves_out_its_name_and_only() {
        assert_eq!(
            index_shape(
                "CREATE INDEX idx_messages_chat_id ON ONLY daisi_a.messages USING btree (chat_id)"
            ),
            index_shape(
                "CREATE INDEX messages_chat_id_idx ON daisi_a.messages USING btree (chat_id)"
            )
        );
        assert_eq!(
            index_shape("CREATE UNIQUE INDEX k ON daisi_a.contacts USING btree (chat_id)"),
            "CREATE UNIQUE INDEX ON daisi_a.contacts USING btree (chat_id)"
        );
        assert_ne!(
            index_shape("CREATE UNIQUE INDEX k ON daisi_a.contacts USING btree (chat_id)"),
            index_shape("CREATE INDEX k ON daisi_a.contacts USING btree (chat_id)")
        );
    }
}
