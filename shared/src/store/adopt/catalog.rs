//! What a schema holds, read from the system catalogs: its tables with their columns, its
//! indexes and keys, the partitions of `messages` and the publications that publish them.

use std::collections::{BTreeMap, HashSet};

use sqlx::{PgConnection, Row};

/// One column of a table.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub name: String,
    /// As `format_type` writes it (`text`, `character varying`, `bigint`, …).
    pub ty: String,
    pub not_null: bool,
    /// The default expression, as `pg_get_expr` writes it.
    pub default: Option<String>,
}

impl Column {
    /// Whether the default draws from a sequence (a `serial` column).
    pub fn serial(&self) -> bool {
        self.default
            .as_deref()
            .is_some_and(|d| d.starts_with("nextval("))
    }
}

/// A table (plain or partitioned; partitions are not listed as tables).
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub name: String,
    pub partitioned: bool,
    /// `pg_get_partkeydef`, for a partitioned table.
    pub partition_key: Option<String>,
    pub columns: Vec<Column>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// An index of a table, and the key constraint it backs, if any.
#[derive(Debug, Clone)]
pub(super) struct Index {
    pub table: String,
    pub name: String,
    pub unique: bool,
    pub primary: bool,
    /// The definition from `USING` on (method, keys, predicate): what makes two indexes the
    /// same whatever their names.
    pub shape: String,
    /// Each key column or expression.
    pub keys: Vec<String>,
    /// (name, definition) of the constraint the index backs.
    pub constraint: Option<(String, String)>,
}

impl Index {
    /// Whether `other` does this index's job: same table and shape, unique when this is.
    pub fn served_by(&self, other: &Index) -> bool {
        self.table == other.table && self.shape == other.shape && (other.unique || !self.unique)
    }
}

/// A schema's tables and indexes.
#[derive(Debug, Clone, Default)]
pub(super) struct Catalog {
    pub tables: BTreeMap<String, Table>,
    pub indexes: Vec<Index>,
    /// Every relation name of the schema (tables, partitions, indexes, sequences), which new
    /// indexes and partitions must not reuse.
    pub names: HashSet<String>,
}

impl Catalog {
    pub fn indexes_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a Index> + 'a {
        self.indexes.iter().filter(move |i| i.table == table)
    }

    /// The key columns of the table's primary key.
    pub fn primary_key(&self, table: &str) -> Option<Vec<String>> {
        self.indexes_of(table)
            .find(|i| i.primary)
            .map(|i| i.keys.clone())
    }
}

const COLUMNS: &str = "
SELECT c.relname::text, c.relkind = 'p', a.attname::text, format_type(a.atttypid, a.atttypmod),
       a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = $1
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname, a.attnum";

const INDEXES: &str = "
SELECT t.relname::text, i.relname::text, x.indisunique, x.indisprimary,
       pg_get_indexdef(x.indexrelid),
       ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true)
             FROM generate_series(1, x.indnkeyatts) k ORDER BY k),
       con.conname::text, pg_get_constraintdef(con.oid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = $1
LEFT JOIN pg_constraint con
       ON con.conindid = x.indexrelid AND con.conrelid = t.oid AND con.contype IN ('p', 'u')
WHERE t.relkind IN ('r', 'p') AND NOT t.relispartition
ORDER BY t.relname, i.relname";

const NAMES: &str = "
SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1";

/// Reads the catalog of `schema`.
pub(super) async fn read(conn: &mut PgConnection, schema: &str) -> Result<Catalog, sqlx::Error> {
    let mut catalog = Catalog::default();
    for r in sqlx::query(COLUMNS)
        .bind(schema)
        .fetch_all(&mut *conn)
        .await?
    {
        let name: String = r.try_get(0)?;
        let table = catalog.tables.entry(name.clone()).or_insert_with(|| Table {
            name,
            partitioned: false,
            partition_key: None,
            columns: Vec::new(),
        });
        table.partitioned = r.try_get(1)?;
        table.partition_key = r.try_get(6)?;
        table.columns.push(Column {
            name: r.try_get(2)?,
            ty: r.try_get(3)?,
            not_null: r.try_get(4)?,
            default: r.try_get(5)?,
        });
    }
    for r in sqlx::query(INDEXES)
        .bind(schema)
        .fetch_all(&mut *conn)
        .await?
    {
        let definition: String = r.try_get(4)?;
        let conname: Option<String> = r.try_get(6)?;
        let condef: Option<String> = r.try_get(7)?;
        catalog.indexes.push(Index {
            table: r.try_get(0)?,
            name: r.try_get(1)?,
            unique: r.try_get(2)?,
            primary: r.try_get(3)?,
            shape: shape(&definition),
            keys: r.try_get(5)?,
            constraint: conname.zip(condef),
        });
    }
    catalog.names = sqlx::query_scalar(NAMES)
        .bind(schema)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    Ok(catalog)
}

/// An index definition from `USING` on: `CREATE UNIQUE INDEX x ON s.t USING btree (a, b)` is
/// `USING btree (a, b)`.
fn shape(definition: &str) -> String {
    match definition.find(" USING ") {
        Some(at) => definition[at + 1..].to_owned(),
        None => definition.to_owned(),
    }
}

/// A partition of `messages`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Partition {
    pub name: String,
    pub default: bool,
}

/// The partitions of `schema.messages`.
pub(super) async fn partitions(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<Partition>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS default
         FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         JOIN pg_class p ON p.oid = i.inhparent
         JOIN pg_namespace n ON n.oid = p.relnamespace
         WHERE n.nspname = $1 AND p.relname = 'messages'
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
}

/// A publication that lists `messages` or some of its partitions.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Publication {
    pub name: String,
    /// It publishes `messages` itself: new partitions are published with it.
    pub whole: bool,
}

/// The publications that list `schema.messages` or some of its partitions (by name: a
/// publication of every table, or of the whole schema, covers new partitions anyway).
pub(super) async fn publications(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<Publication>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.pubname::text AS name, bool_or(r.prrelid = m.oid) OR p.pubviaroot AS whole
         FROM pg_class m
         JOIN pg_namespace n ON n.oid = m.relnamespace AND n.nspname = $1
         JOIN pg_publication_rel r
           ON r.prrelid = m.oid OR r.prrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = m.oid)
         JOIN pg_publication p ON p.oid = r.prpubid
         WHERE m.relname = 'messages'
         GROUP BY p.pubname, p.pubviaroot
         ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_compare_by_shape_not_name() {
        assert_eq!(
            shape("CREATE UNIQUE INDEX idx_m ON daisi_x.messages USING btree (message_id, message_date)"),
            "USING btree (message_id, message_date)"
        );
        let index = |name: &str, unique| Index {
            table: "chats".into(),
            name: name.into(),
            unique,
            primary: false,
            shape: "USING btree (chat_id)".into(),
            keys: vec!["chat_id".into()],
            constraint: None,
        };
        assert!(index("ours", false).served_by(&index("theirs", true)));
        assert!(!index("ours", true).served_by(&index("theirs", false)));
    }
}
