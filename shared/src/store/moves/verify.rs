//! The verification step of a move: the copy and its source compared table by table, by row
//! counts and checksums that do not depend on the rows' physical order, with the same text
//! rendering on both databases.

use sqlx::{Connection, PgConnection};

use super::catalog::{catalog, Partition, Table};
use super::copy::acquire;
use super::{During, MoveError};
use crate::store::placement::Db;

/// Row text the same on both databases whatever their settings.
const CANONICAL_TEXT: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD';
    SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 3;
    SET LOCAL bytea_output = 'hex'";

/// One table's rows in brief: how many, and two 64-bit sums of their rows' md5 (independent of
/// their physical order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checksum {
    rows: i64,
    sums: (String, String),
}

/// Compares the copy of `schema` on `to` with its source on `from`: the same tables,
/// partitions and sequence values, and per table the same row count and checksum. Returns how
/// many tables were compared.
pub(super) async fn verify(from: &Db, to: &Db, schema: &str) -> Result<usize, MoveError> {
    let mut source = acquire(from).await?;
    let mut target = acquire(to).await?;
    let (src, dst) = tokio::try_join!(
        async {
            catalog(&mut source, schema)
                .await
                .during(|| format!("reading the catalog of {schema} on {}", from.name))
        },
        async {
            catalog(&mut target, schema)
                .await
                .during(|| format!("reading the catalog of {schema} on {}", to.name))
        }
    )?;
    let mismatch = |table: &str, detail: String| MoveError::Mismatch {
        table: format!("{schema}.{table}"),
        detail,
        from: from.name.clone(),
        to: to.name.clone(),
    };
    let mut partitions = (src.partitions.clone(), dst.partitions.clone());
    partitions.0.sort();
    partitions.1.sort();
    let bounds = |p: &[Partition]| -> Vec<(String, String)> {
        p.iter()
            .map(|p| (p.name.clone(), p.bound.clone()))
            .collect()
    };
    if bounds(&partitions.0) != bounds(&partitions.1) {
        return Err(mismatch(
            "messages",
            format!(
                "the partitions {:?} on the source, {:?} on the target",
                bounds(&partitions.0),
                bounds(&partitions.1)
            ),
        ));
    }
    for s in &src.sequences {
        let there = dst.sequences.iter().find(|d| d.name == s.name);
        if there.map(|d| d.last_value) != Some(s.last_value) {
            return Err(mismatch(
                &s.name,
                format!(
                    "sequence at {:?} on the source, {:?} on the target",
                    s.last_value,
                    there.map(|d| d.last_value)
                ),
            ));
        }
    }
    let mut compared = 0;
    for table in &src.tables {
        if dst.table(&table.name).is_none() {
            return Err(mismatch(&table.name, "missing on the target".into()));
        }
        let (a, b) = tokio::try_join!(
            async {
                checksum(&mut source, schema, table)
                    .await
                    .during(|| format!("checksumming {schema}.{} on {}", table.name, from.name))
            },
            async {
                checksum(&mut target, schema, table)
                    .await
                    .during(|| format!("checksumming {schema}.{} on {}", table.name, to.name))
            }
        )?;
        if a != b {
            let detail = if a.rows != b.rows {
                format!("{} rows on the source, {} on the target", a.rows, b.rows)
            } else {
                format!("{} rows on each side, with different checksums", a.rows)
            };
            return Err(mismatch(&table.name, detail));
        }
        compared += 1;
    }
    Ok(compared)
}

async fn checksum(
    conn: &mut PgConnection,
    schema: &str,
    table: &Table,
) -> Result<Checksum, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(CANONICAL_TEXT).execute(&mut *tx).await?;
    let sql = format!(
        "SELECT count(*),
                COALESCE(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text,
                COALESCE(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text
         FROM (SELECT md5(ROW({})::text) AS h FROM {}) r",
        table.column_list(),
        table.rows_from(schema)
    );
    let (rows, a, b): (i64, String, String) = sqlx::query_as(&sql).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Checksum { rows, sums: (a, b) })
}
