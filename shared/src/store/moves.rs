//! Moving a tenant to another placement (SPEC §17), pausing and resuming it.
//!
//! A move is a sequence of steps, each recorded in `wa_system.tenant_moves` on the main database
//! once it is done, so that a move interrupted at any point (the process killed) is resumed from
//! its last step by running it again, or undone with [`abort`] until it has switched:
//!
//! 1. `begin`: the move is recorded and the tenant's state set to `moving`, in one transaction.
//!    From then on no writer starts writing the tenant: its events wait.
//! 2. `fenced`: the schema is fenced on the source database ([`placement::fence`]): writers
//!    that still had the tenant in hand have committed, and none can write it there any more.
//! 3. `copied`: the schema is copied to the target from scratch ([`copy`]): any earlier copy
//!    there is dropped, the schema migrated, the source's extra tables, columns, partitions and
//!    sequences recreated, every table's rows streamed with `COPY`, sequences set.
//! 4. `verified`: every table's row count and checksum are the same on both sides. A difference
//!    stops the move naming the table; run again, the copy starts over.
//! 5. `switched`: the target's fence (if any) is lifted, then the tenant is placed on the target
//!    and active, in one statement: its waiting events go there. Writers that still believe it
//!    lives on the source hit the source's fence, forget it and read its record again.
//! 6. `done`: with `drop_source`, the source schema is dropped (its fence is kept: a writer
//!    that still believes the tenant lives there is refused instead of recreating it).
//!
//! Events are never refused nor dead-lettered during a move: they wait ([`super::SchemaError::Held`])
//! and are applied once, on the target, after the switch (the inbox is copied with the rest).

mod catalog;
mod copy;
mod pause;
mod shape;
mod verify;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tracing::info;

use super::placement::{self, Db, Placements, TenantState, UnknownPlacement};
use super::schema::{self, SYSTEM_SCHEMA};
use super::tenants::{self, TenantRecord};
use crate::model::TenantId;

pub use copy::TableCopy;
pub use pause::{pause, resume, StateChange};

/// The steps of a move, in order; a move's record holds the last one done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Begin,
    Fenced,
    Copied,
    Verified,
    Switched,
    Done,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Begin,
        Step::Fenced,
        Step::Copied,
        Step::Verified,
        Step::Switched,
        Step::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Begin => "begin",
            Step::Fenced => "fenced",
            Step::Copied => "copied",
            Step::Verified => "verified",
            Step::Switched => "switched",
            Step::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move as recorded in `wa_system.tenant_moves`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MoveRecord {
    pub schema_name: String,
    pub tenant_id: String,
    pub source: String,
    pub target: String,
    pub step: String,
    pub drop_source: bool,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MoveRecord {
    /// The last step done (an unknown word counts as `begin`: the move is redone from there).
    pub fn step(&self) -> Step {
        Step::parse(&self.step).unwrap_or(Step::Begin)
    }
}

const MOVE_COLUMNS: &str =
    "schema_name, tenant_id, source, target, step, drop_source, started_at, updated_at";

/// Why a move, an abort, a pause or a resume did not happen (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("tenant {0} is not recorded in wa_system.tenants (no event of it was processed yet)")]
    NotRecorded(String),
    #[error(transparent)]
    UnknownPlacement(#[from] UnknownPlacement),
    #[error("tenant {tenant} is already placed on {placement}; nothing to move")]
    AlreadyThere { tenant: String, placement: String },
    #[error("tenant {0} is paused; resume it (`wa-admin tenants resume {0}`) before moving it")]
    Paused(String),
    #[error("tenant {tenant} is being moved to {to} (done: {step}); resume that move with `wa-admin tenants move {tenant} {to}`, or undo it with `wa-admin tenants move {tenant} --abort`")]
    Moving {
        tenant: String,
        to: String,
        step: Step,
    },
    #[error("tenant {tenant}'s state is moving but no move of it is recorded; `wa-admin tenants resume {tenant}` makes it active on {placement}")]
    StrayMoving { tenant: String, placement: String },
    #[error("placements {from} and {to} are the same database ({identity}); a tenant moves between databases")]
    SameDatabase {
        from: String,
        to: String,
        identity: String,
    },
    #[error("another wa-admin is moving, pausing or resuming tenant {0} right now")]
    Busy(String),
    #[error("verification failed: {table} differs between {from} and {to} ({detail}); nothing was switched: run the move again to copy again, or undo it with --abort")]
    Mismatch {
        table: String,
        detail: String,
        from: String,
        to: String,
    },
    #[error("the move of tenant {tenant} to {to} already switched: it is active there; to go back, move it again (`wa-admin tenants move {tenant} {from}`)")]
    AlreadySwitched {
        tenant: String,
        from: String,
        to: String,
    },
    #[error("tenant {0} changed while its move began (paused, or moved by someone else); see `wa-admin tenants`")]
    Changed(String),
    #[error("tenant {0} has no move in progress")]
    NoMove(String),
    #[error("{during}: {error}")]
    Db {
        during: String,
        #[source]
        error: sqlx::Error,
    },
}

/// Names what a database error interrupted.
trait During<T> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T, MoveError>;
}

impl<T> During<T> for Result<T, sqlx::Error> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T, MoveError> {
        self.map_err(|error| MoveError::Db {
            during: what(),
            error,
        })
    }
}

/// How to run a move.
#[derive(Debug, Clone, Default)]
pub struct MoveOptions {
    /// Drop the source schema once switched.
    pub drop_source: bool,
    /// Abort the process right after this step is recorded (tests of interrupted moves).
    pub abort_after: Option<Step>,
}

/// How long one step took.
#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    pub step: Step,
    pub seconds: f64,
}

/// What a move did (the steps this run did: a resumed move reports those after its last
/// recorded step).
#[derive(Debug, Clone, Serialize)]
pub struct MoveReport {
    pub tenant: String,
    pub schema: String,
    pub source: String,
    pub target: String,
    /// The step a recorded move was resumed after.
    pub resumed_after: Option<Step>,
    pub steps: Vec<StepTime>,
    /// Rows copied, per table.
    pub tables: Vec<TableCopy>,
    pub copied_rows: u64,
    pub copied_bytes: u64,
    /// Rows per second of the tables' copy (the copy step also makes the schema).
    pub copy_rows_per_second: f64,
    pub source_dropped: bool,
}

/// The moves not done yet, by schema name (none when the main database predates moves).
pub async fn in_progress(main: &PgPool) -> Result<Vec<MoveRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {MOVE_COLUMNS} FROM {SYSTEM_SCHEMA}.tenant_moves WHERE step <> 'done' ORDER BY 1"
    );
    match sqlx::query_as(&sql).fetch_all(main).await {
        Err(e) if super::failure::sqlstate(&e).as_deref() == Some("42P01") => Ok(Vec::new()),
        other => other,
    }
}

/// The recorded move of `schema` (possibly done).
pub async fn recorded(main: &PgPool, schema: &str) -> Result<Option<MoveRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MOVE_COLUMNS} FROM {SYSTEM_SCHEMA}.tenant_moves WHERE schema_name = $1"
    ))
    .bind(schema)
    .fetch_optional(main)
    .await
}

async fn set_step(main: &PgPool, schema: &str, step: Step) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE {SYSTEM_SCHEMA}.tenant_moves SET step = $2, updated_at = now() WHERE schema_name = $1"
    ))
    .bind(schema)
    .bind(step.as_str())
    .execute(main)
    .await
    .map(drop)
}

/// A session lock on the main database that one tenant's move, pause or resume holds, so two
/// operators never interleave them. Released when the connection closes (also when the process
/// dies).
struct TenantLock(PgConnection);

impl TenantLock {
    async fn take(main: &PgPool, tenant: &TenantId) -> Result<Self, MoveError> {
        let mut conn = PgConnection::connect_with(&main.connect_options())
            .await
            .during(|| "connecting to the main database".into())?;
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(format!("wa:move:{}", tenant.schema_name()))
                .fetch_one(&mut conn)
                .await
                .during(|| "taking the tenant's move lock".into())?;
        if !taken {
            return Err(MoveError::Busy(tenant.to_string()));
        }
        Ok(TenantLock(conn))
    }

    async fn release(self) {
        let _ = self.0.close().await;
    }
}

/// Makes sure the main database's system schema knows moves.
async fn prepare_main(placements: &Placements) -> Result<(), MoveError> {
    schema::migrate(&placements.main().ddl, SYSTEM_SCHEMA)
        .await
        .during(|| "migrating wa_system on the main database".into())
}

async fn record_of(main: &PgPool, tenant: &TenantId) -> Result<TenantRecord, MoveError> {
    tenants::by_schema(main, &tenant.schema_name())
        .await
        .during(|| "reading wa_system.tenants".into())?
        .filter(|r| r.tenant_id == tenant.as_str())
        .ok_or_else(|| MoveError::NotRecorded(tenant.to_string()))
}

/// Moves `tenant` to placement `target`, or resumes its recorded move there. `progress` is told
/// each step as it is done.
pub async fn run(
    placements: &Placements,
    tenant: &TenantId,
    target: &str,
    options: &MoveOptions,
    progress: &dyn Fn(&str),
) -> Result<MoveReport, MoveError> {
    prepare_main(placements).await?;
    let lock = TenantLock::take(&placements.main().pool, tenant).await?;
    let result = run_locked(placements, tenant, target, options, progress).await;
    lock.release().await;
    result
}

async fn run_locked(
    placements: &Placements,
    tenant: &TenantId,
    target: &str,
    options: &MoveOptions,
    progress: &dyn Fn(&str),
) -> Result<MoveReport, MoveError> {
    let main = &placements.main().pool;
    let schema = tenant.schema_name();
    let record = record_of(main, tenant).await?;
    let to = placements.db(target)?;
    let pending = recorded(main, &schema)
        .await
        .during(|| "reading wa_system.tenant_moves".into())?
        .filter(|m| m.step() != Step::Done);
    let (from_name, resumed_after, drop_source) = match pending {
        Some(m) if m.target != target => {
            return Err(MoveError::Moving {
                tenant: tenant.to_string(),
                to: m.target.clone(),
                step: m.step(),
            })
        }
        Some(m) => {
            let drop_source = m.drop_source || options.drop_source;
            if drop_source && !m.drop_source {
                sqlx::query(&format!(
                    "UPDATE {SYSTEM_SCHEMA}.tenant_moves SET drop_source = true WHERE schema_name = $1"
                ))
                .bind(&schema)
                .execute(main)
                .await
                .during(|| "recording --drop-source".into())?;
            }
            progress(&format!(
                "resuming the move of {schema} from {} to {target} after its step {}",
                m.source, m.step
            ));
            (m.source.clone(), Some(m.step()), drop_source)
        }
        None => {
            if record.placement == target {
                return Err(MoveError::AlreadyThere {
                    tenant: tenant.to_string(),
                    placement: record.placement,
                });
            }
            match record.state() {
                TenantState::Active => {}
                TenantState::Paused => return Err(MoveError::Paused(tenant.to_string())),
                TenantState::Moving => {
                    return Err(MoveError::StrayMoving {
                        tenant: tenant.to_string(),
                        placement: record.placement,
                    })
                }
            }
            (record.placement.clone(), None, options.drop_source)
        }
    };
    let from = placements.db(&from_name)?;
    if resumed_after.is_none_or(|s| s < Step::Switched) {
        same_database(&from, &to).await?;
    }
    let mut steps = Vec::new();
    let mut report = MoveReport {
        tenant: tenant.to_string(),
        schema: schema.clone(),
        source: from.name.clone(),
        target: to.name.clone(),
        resumed_after,
        steps: Vec::new(),
        tables: Vec::new(),
        copied_rows: 0,
        copied_bytes: 0,
        copy_rows_per_second: 0.0,
        source_dropped: false,
    };
    let mut done = resumed_after;
    let mut timed = |step: Step, started: Instant, detail: String| {
        let took = started.elapsed();
        steps.push(StepTime {
            step,
            seconds: took.as_secs_f64(),
        });
        info!(%schema, step = %step, seconds = took.as_secs_f64(), "tenant move step done");
        progress(&format!(
            "{:<9} {:>9}  {detail}",
            step.as_str(),
            seconds(took)
        ));
        if options.abort_after == Some(step) {
            // The test hook of interrupted moves: as abrupt as `kill -9`.
            std::process::abort();
        }
    };

    if done.is_none() {
        let started = Instant::now();
        begin(main, tenant, &from.name, &to.name, drop_source).await?;
        timed(
            Step::Begin,
            started,
            format!("state moving: {schema}'s events wait"),
        );
        done = Some(Step::Begin);
    }
    if done == Some(Step::Begin) {
        let started = Instant::now();
        placement::fence(&from.pool, &schema, &format!("moving to {}", to.name))
            .await
            .during(|| format!("fencing {schema} on {}", from.name))?;
        set_step(main, &schema, Step::Fenced)
            .await
            .during(|| "recording the step".into())?;
        timed(
            Step::Fenced,
            started,
            format!("no writer can write {schema} on {} any more", from.name),
        );
        done = Some(Step::Fenced);
    }
    // A copy not verified is made again from scratch.
    if matches!(done, Some(Step::Fenced | Step::Copied)) {
        let started = Instant::now();
        let tables = copy::copy_schema(&from, &to, &schema).await?;
        report.copied_rows = tables.iter().map(|t| t.rows).sum();
        report.copied_bytes = tables.iter().map(|t| t.bytes).sum();
        report.copy_rows_per_second =
            report.copied_rows as f64 / tables.iter().map(|t| t.seconds).sum::<f64>().max(1e-6);
        report.tables = tables;
        set_step(main, &schema, Step::Copied)
            .await
            .during(|| "recording the step".into())?;
        timed(
            Step::Copied,
            started,
            format!(
                "{} rows ({:.1} MB) in {} tables, {:.0} rows/s",
                report.copied_rows,
                report.copied_bytes as f64 / 1e6,
                report.tables.len(),
                report.copy_rows_per_second
            ),
        );
        let started = Instant::now();
        let checked = verify::verify(&from, &to, &schema).await?;
        set_step(main, &schema, Step::Verified)
            .await
            .during(|| "recording the step".into())?;
        timed(
            Step::Verified,
            started,
            format!("{checked} tables: same row counts and checksums"),
        );
        done = Some(Step::Verified);
    }
    if done == Some(Step::Verified) {
        let started = Instant::now();
        placement::unfence(&to.pool, &schema)
            .await
            .during(|| format!("lifting the fence of {schema} on {}", to.name))?;
        let mut tx = main.begin().await.during(|| "switching".into())?;
        tenants::set_placement(&mut *tx, &schema, &to.name, TenantState::Active)
            .await
            .during(|| "switching the placement".into())?;
        sqlx::query(&format!(
            "UPDATE {SYSTEM_SCHEMA}.tenant_moves SET step = 'switched', updated_at = now() WHERE schema_name = $1"
        ))
        .bind(&schema)
        .execute(&mut *tx)
        .await
        .during(|| "recording the step".into())?;
        tx.commit().await.during(|| "switching".into())?;
        timed(
            Step::Switched,
            started,
            format!("placed on {}, active: its events go there", to.name),
        );
        done = Some(Step::Switched);
    }
    if done == Some(Step::Switched) {
        let started = Instant::now();
        let detail = if drop_source {
            sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                crate::model::quote_ident(&schema)
            ))
            .execute(&from.ddl)
            .await
            .during(|| format!("dropping {schema} on {}", from.name))?;
            report.source_dropped = true;
            format!("{schema} dropped on {} (its fence stays)", from.name)
        } else {
            format!(
                "{schema} kept on {} (fenced; drop it with --drop-source)",
                from.name
            )
        };
        set_step(main, &schema, Step::Done)
            .await
            .during(|| "recording the step".into())?;
        timed(Step::Done, started, detail);
    }
    report.steps = steps;
    Ok(report)
}

/// Records the move and sets the tenant's state to moving, in one transaction.
async fn begin(
    main: &PgPool,
    tenant: &TenantId,
    from: &str,
    to: &str,
    drop_source: bool,
) -> Result<(), MoveError> {
    let schema = tenant.schema_name();
    let what = || "recording the move".to_owned();
    let mut tx = main.begin().await.during(what)?;
    let state: Option<String> = sqlx::query_scalar(&format!(
        "UPDATE {SYSTEM_SCHEMA}.tenants SET state = 'moving'
         WHERE schema_name = $1 AND state = 'active' AND placement = $2 RETURNING state"
    ))
    .bind(&schema)
    .bind(from)
    .fetch_optional(&mut *tx)
    .await
    .during(what)?;
    if state.is_none() {
        return Err(MoveError::Changed(tenant.to_string()));
    }
    // A done move's record gives way to the new one.
    sqlx::query(&format!(
        "INSERT INTO {SYSTEM_SCHEMA}.tenant_moves AS m
             (schema_name, tenant_id, source, target, step, drop_source)
         VALUES ($1, $2, $3, $4, 'begin', $5)
         ON CONFLICT (schema_name) DO UPDATE SET
             tenant_id = EXCLUDED.tenant_id, source = EXCLUDED.source, target = EXCLUDED.target,
             step = 'begin', drop_source = EXCLUDED.drop_source, started_at = now(),
             updated_at = now()
         WHERE m.step = 'done'"
    ))
    .bind(&schema)
    .bind(tenant.as_str())
    .bind(from)
    .bind(to)
    .bind(drop_source)
    .execute(&mut *tx)
    .await
    .during(what)?;
    tx.commit().await.during(what)
}

/// Refuses to move between two placements on one database (the copy would drop the source).
async fn same_database(from: &Db, to: &Db) -> Result<(), MoveError> {
    const IDENTITY: &str = "SELECT (SELECT system_identifier FROM pg_control_system())::text
                            || '/' || current_database()";
    let a: String = sqlx::query_scalar(IDENTITY)
        .fetch_one(&from.pool)
        .await
        .during(|| format!("identifying the database of {}", from.name))?;
    let b: String = sqlx::query_scalar(IDENTITY)
        .fetch_one(&to.pool)
        .await
        .during(|| format!("identifying the database of {}", to.name))?;
    if a == b {
        return Err(MoveError::SameDatabase {
            from: from.name.clone(),
            to: to.name.clone(),
            identity: a,
        });
    }
    Ok(())
}

/// What [`abort`] undid.
#[derive(Debug, Clone, Serialize)]
pub struct AbortReport {
    pub tenant: String,
    pub schema: String,
    pub source: String,
    pub target: String,
    /// The last step the move had done.
    pub step: Step,
    /// Whether a copy on the target was dropped.
    pub target_dropped: bool,
}

/// Undoes the recorded move of `tenant` that has not switched: drops the copy on the target,
/// lifts the fence on the source, makes the tenant active there and forgets the move.
pub async fn abort(placements: &Placements, tenant: &TenantId) -> Result<AbortReport, MoveError> {
    prepare_main(placements).await?;
    let lock = TenantLock::take(&placements.main().pool, tenant).await?;
    let result = abort_locked(placements, tenant).await;
    lock.release().await;
    result
}

async fn abort_locked(
    placements: &Placements,
    tenant: &TenantId,
) -> Result<AbortReport, MoveError> {
    let main = &placements.main().pool;
    let schema = tenant.schema_name();
    let m = recorded(main, &schema)
        .await
        .during(|| "reading wa_system.tenant_moves".into())?
        .ok_or_else(|| MoveError::NoMove(tenant.to_string()))?;
    let step = m.step();
    if step >= Step::Switched {
        return Err(MoveError::AlreadySwitched {
            tenant: tenant.to_string(),
            from: m.source,
            to: m.target.clone(),
        });
    }
    let from = placements.db(&m.source)?;
    let to = placements.db(&m.target)?;
    // A copy may have begun once the source was fenced. The target is not where the tenant lives
    // (a move never starts towards its own placement), so whatever is there is an earlier copy.
    let target_dropped = step >= Step::Fenced;
    if target_dropped {
        sqlx::query(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            crate::model::quote_ident(&schema)
        ))
        .execute(&to.ddl)
        .await
        .during(|| format!("dropping the copy of {schema} on {}", to.name))?;
    }
    placement::unfence(&from.pool, &schema)
        .await
        .during(|| format!("lifting the fence of {schema} on {}", from.name))?;
    let what = || "forgetting the move".to_owned();
    let mut tx = main.begin().await.during(what)?;
    tenants::set_state(&mut *tx, &schema, TenantState::Active)
        .await
        .during(what)?;
    sqlx::query(&format!(
        "DELETE FROM {SYSTEM_SCHEMA}.tenant_moves WHERE schema_name = $1"
    ))
    .bind(&schema)
    .execute(&mut *tx)
    .await
    .during(what)?;
    tx.commit().await.during(what)?;
    info!(%schema, source = %from.name, target = %to.name, %step, "tenant move aborted");
    Ok(AbortReport {
        tenant: tenant.to_string(),
        schema,
        source: from.name.clone(),
        target: to.name.clone(),
        step,
        target_dropped,
    })
}

/// A duration for people: `0.012 s`, `3.40 s`, `2 min 05 s`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{s:.3} s")
    } else if s < 120.0 {
        format!("{s:.2} s")
    } else {
        format!("{} min {:02} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_back_in_order() {
        for (i, step) in Step::ALL.into_iter().enumerate() {
            assert_eq!(Step::parse(step.as_str()), Some(step));
            if i > 0 {
                assert!(Step::ALL[i - 1] < step);
            }
        }
        assert_eq!(Step::parse("copying"), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(seconds(Duration::from_millis(12)), "0.012 s");
        assert_eq!(seconds(Duration::from_millis(3400)), "3.40 s");
        assert_eq!(seconds(Duration::from_secs(125)), "2 min 05 s");
    }
}
