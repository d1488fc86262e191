//! The copy step of a move: a tenant schema rebuilt on another database from the source's
//! catalog, its rows streamed with binary `COPY`.
//!
//! The target schema is made by the migrations, then shaped like the source: tables, columns
//! (types and NOT NULL as the source has them), `messages` partitions (same names and bounds)
//! and sequences the migrations do not make are created. Rows are copied through each table that
//! is not a partition (a partitioned table's rows route to the partitions on the target), every
//! sequence is set to the source's value, and indexes and keys the target lacks are created after
//! the rows are in. Publications, grants, triggers and custom types are not copied: they are
//! the operator's, per database. `schema_migrations` is not copied: the migrations recorded are
//! the ones the target ran.
//!
//! While a copy is made, the target's schema is fenced like the source's: nothing (not even the
//! inbox pruning) writes it until the switch lifts that fence.

use std::time::Instant;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};
use tracing::info;

use super::catalog::{catalog, Table};
use super::shape::{index_statements, shape_statements};
use super::{During, MoveError};
use crate::model::quote_ident;
use crate::store::placement::{self, Db};
use crate::store::schema::{self, SYSTEM_SCHEMA};

/// Bytes of `COPY` data sent to the target at a time.
const COPY_CHUNK: usize = 1 << 20;

/// Rows a table copied.
#[derive(Debug, Clone, Serialize)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Copies `schema` from `from` to `to` (see the module), from scratch.
pub(super) async fn copy_schema(
    from: &Db,
    to: &Db,
    schema: &str,
) -> Result<Vec<TableCopy>, MoveError> {
    let on_target = |what: &str| format!("{what} on {}", to.name);
    schema::migrate(&to.ddl, SYSTEM_SCHEMA)
        .await
        .during(|| on_target("migrating wa_system"))?;
    placement::fence(
        &to.pool,
        schema,
        &format!("copy from {} in progress", from.name),
    )
    .await
    .during(|| on_target(&format!("fencing {schema}")))?;
    let ident = quote_ident(schema);
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {ident} CASCADE"))
        .execute(&to.ddl)
        .await
        .during(|| on_target("dropping an earlier copy"))?;
    schema::migrate(&to.ddl, schema)
        .await
        .during(|| on_target(&format!("migrating {schema}")))?;

    let mut connection = acquire(from).await?;
    let mut target = acquire(to).await?;
    // One snapshot of the source for the whole copy.
    let snapshot = || format!("opening a snapshot on {}", from.name);
    let mut source = connection.begin().await.during(snapshot)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *source)
        .await
        .during(snapshot)?;
    let src = catalog(&mut source, schema)
        .await
        .during(|| format!("reading the catalog of {schema} on {}", from.name))?;
    let dst = catalog(&mut target, schema)
        .await
        .during(|| on_target(&format!("reading the catalog of {schema}")))?;
    for sql in shape_statements(schema, &src, &dst) {
        sqlx::query(&sql)
            .execute(&mut *target)
            .await
            .during(|| on_target(&format!("shaping the copy ({sql})")))?;
    }

    let mut copies = Vec::new();
    for table in &src.tables {
        let copied = copy_table(&mut source, &mut target, schema, table)
            .await
            .during(|| format!("copying {schema}.{}", table.name))?;
        info!(
            schema,
            table = %copied.table,
            rows = copied.rows,
            bytes = copied.bytes,
            seconds = copied.seconds,
            "table copied"
        );
        copies.push(copied);
    }
    for s in &src.sequences {
        sqlx::query("SELECT setval(format('%I.%I', $1::text, $2::text)::regclass, $3, $4)")
            .bind(schema)
            .bind(&s.name)
            .bind(s.last_value.unwrap_or(s.start))
            .bind(s.last_value.is_some())
            .execute(&mut *target)
            .await
            .during(|| on_target(&format!("setting sequence {}", s.name)))?;
    }
    source
        .commit()
        .await
        .during(|| format!("closing the snapshot on {}", from.name))?;

    // Indexes and keys last: built once over the rows instead of row by row.
    let dst = catalog(&mut target, schema)
        .await
        .during(|| on_target(&format!("reading the catalog of {schema}")))?;
    for sql in index_statements(schema, &src, &dst) {
        sqlx::query(&sql)
            .execute(&mut *target)
            .await
            .during(|| on_target(&format!("creating an index ({sql})")))?;
    }
    Ok(copies)
}

pub(super) async fn acquire(db: &Db) -> Result<PoolConnection<Postgres>, MoveError> {
    db.pool
        .acquire()
        .await
        .during(|| format!("connecting to {}", db.name))
}

/// Streams one table's rows from the source to the target in binary `COPY`, in one
/// transaction on the target.
async fn copy_table(
    source: &mut PgConnection,
    target: &mut PgConnection,
    schema: &str,
    table: &Table,
) -> Result<TableCopy, sqlx::Error> {
    let started = Instant::now();
    let columns = table.column_list();
    let name = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
    let out = format!(
        "COPY (SELECT {columns} FROM {}) TO STDOUT (FORMAT binary)",
        table.rows_from(schema)
    );
    let into = format!("COPY {name} ({columns}) FROM STDIN (FORMAT binary)");
    let mut tx = target.begin().await?;
    let mut sink = tx.copy_in_raw(&into).await?;
    let mut rows = source.copy_out_raw(&out).await?;
    let mut buffer = Vec::with_capacity(COPY_CHUNK);
    let mut bytes = 0u64;
    let streamed: Result<(), sqlx::Error> = async {
        while let Some(chunk) = rows.try_next().await? {
            bytes += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= COPY_CHUNK {
                sink.send(buffer.as_slice()).await?;
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            sink.send(buffer.as_slice()).await?;
        }
        Ok(())
    }
    .await;
    drop(rows);
    if let Err(e) = streamed {
        let _ = sink.abort(format!("reading the source failed: {e}")).await;
        return Err(e);
    }
    let copied = sink.finish().await?;
    tx.commit().await?;
    Ok(TableCopy {
        table: table.name.clone(),
        rows: copied,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
