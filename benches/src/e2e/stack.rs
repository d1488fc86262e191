//! The local stack made fresh for a run: a new database, the product streams deleted and
//! recreated empty, and the connections the benchmark itself uses.

use std::time::Duration;

use async_nats::jetstream::stream::State;
use async_nats::jetstream::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use wa_shared::model::quote_ident;
use wa_shared::transport::streams::{
    ensure_stream, stream_specs, DLQ_STREAM, HISTORY_STREAM, REALTIME_STREAM,
};

use super::error::{Context as _, Error, Result};

/// The fresh database: a pool for the benchmark's own queries and the URL for the functions.
pub struct Database {
    pub pool: PgPool,
    pub url: String,
}

/// Drops `name` (disconnecting its sessions) and creates it empty.
pub async fn fresh_database(admin_url: &str, name: &str) -> Result<Database> {
    create_database(admin_url, name, None).await
}

/// Drops `name` and creates it as a copy of `template` (which nobody may be connected to):
/// the same schemas, tables and rows, byte for byte.
pub async fn copy_database(admin_url: &str, template: &str, name: &str) -> Result<Database> {
    create_database(admin_url, name, Some(template)).await
}

async fn create_database(admin_url: &str, name: &str, template: Option<&str>) -> Result<Database> {
    for db in std::iter::once(name).chain(template) {
        check_name(db)?;
    }
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context(format_args!("connecting to Postgres at {admin_url}"))?;
    let ident = quote_ident(name);
    // Two statements: CREATE DATABASE cannot run inside the implicit transaction of one.
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .context(format_args!("dropping database {name}"))?;
    let create = match template {
        Some(t) => format!("CREATE DATABASE {ident} TEMPLATE {}", quote_ident(t)),
        None => format!("CREATE DATABASE {ident}"),
    };
    sqlx::raw_sql(&create)
        .execute(&mut admin)
        .await
        .context(format_args!("creating database {name}"))?;
    let _ = admin.close().await;
    let url = with_database(admin_url, name)?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .context(format_args!("connecting to {name}"))?;
    Ok(Database { pool, url })
}

/// Drops database `name` (disconnecting its sessions) if it exists.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    check_name(name)?;
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context(format_args!("connecting to Postgres at {admin_url}"))?;
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    ))
    .execute(&mut admin)
    .await
    .context(format_args!("dropping database {name}"))?;
    let _ = admin.close().await;
    Ok(())
}

/// A database name the benchmark may drop: lower-case letters, digits and _, ≤ 63 bytes.
fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::new(format!(
            "database {name:?} (from --database): use lower-case letters, digits and _, at \
             most 63 bytes with the benchmark's suffixes"
        )))
    }
}

/// `url` with its database (path) replaced by `name`, query parameters kept.
pub fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base
        .find("://")
        .map(|i| i + 3)
        .context(format_args!("{url:?} is not a postgres:// URL"))?;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Deletes the three product streams (and so their consumers) and creates them empty, in the
/// shape the functions expect.
pub async fn reset_streams(js: &Context) -> Result<()> {
    for name in [REALTIME_STREAM, HISTORY_STREAM, DLQ_STREAM] {
        delete_stream_if_any(js, name).await?;
    }
    for spec in stream_specs(1, Duration::from_secs(7 * 86_400)) {
        ensure_stream(js, &spec)
            .await
            .context("creating the product streams")?;
    }
    Ok(())
}

/// Deletes one product stream (and its consumers) and creates it empty: a fresh stream and a
/// fresh durable consumer for the next function started.
pub async fn reset_stream(js: &Context, name: &str) -> Result<()> {
    delete_stream_if_any(js, name).await?;
    for spec in stream_specs(1, Duration::from_secs(7 * 86_400))
        .into_iter()
        .filter(|s| s.name == name)
    {
        ensure_stream(js, &spec)
            .await
            .context(format_args!("creating stream {name}"))?;
    }
    Ok(())
}

pub async fn delete_stream_if_any(js: &Context, name: &str) -> Result<()> {
    if js.get_stream(name).await.is_ok() {
        js.delete_stream(name)
            .await
            .context(format_args!("deleting stream {name}"))?;
    }
    Ok(())
}

/// Flushes dirty buffers before a timed phase, so that no checkpoint started by an earlier
/// phase lands in it. Needs a superuser (or pg_checkpoint); without one, phases just go on.
pub async fn checkpoint(pool: &PgPool) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("note: no CHECKPOINT before the phase ({e})");
    }
}

/// A stream's state now: messages stored, last sequence assigned, ….
pub async fn stream_state(js: &Context, name: &str) -> Result<State> {
    let mut stream = js
        .get_stream(name)
        .await
        .context(format_args!("stream {name}"))?;
    let info = stream.info().await.context(format_args!("stream {name}"))?;
    Ok(info.state.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/wa_bench",
            ),
            (
                "postgres://u:p@h/postgres?sslmode=disable",
                "postgres://u:p@h/wa_bench?sslmode=disable",
            ),
            ("postgres://h:5432", "postgres://h:5432/wa_bench"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "wa_bench").unwrap(), want);
        }
        assert!(with_database("nonsense", "x").is_err());
    }
}
