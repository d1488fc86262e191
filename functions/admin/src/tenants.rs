//! `wa-admin tenants`: every tenant with its placement, state, row counts (read on the
//! database it is placed on) and any move in progress; `move`, `pause` and `resume` (SPEC §17).
//! Also where the other commands find a tenant's schema: on its placement's database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sqlx::PgPool;
use wa_shared::model::TenantId;
use wa_shared::store::counts::table_counts;
use wa_shared::store::failure::sqlstate;
use wa_shared::store::moves::{self, MoveOptions, MoveReport, Step};
use wa_shared::store::placement::{Db, Placements, TenantState, DEFAULT_PLACEMENT};
use wa_shared::store::schema::{self, tenant_schemas};
use wa_shared::store::tenants::{self, TenantRecord};

use crate::table;

/// The variable that makes `tenants move` abort right after recording a step (to test that an
/// interrupted move resumes or is undone cleanly); not a setting.
const ABORT_AFTER: &str = "WA_MOVE_ABORT_AFTER";

#[derive(Args)]
pub struct TenantsArgs {
    #[command(subcommand)]
    command: Option<TenantsCommand>,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Move a tenant to another placement: pause its writes (its events wait), copy its schema,
    /// verify the copy, switch, resume. Run again to resume an interrupted move.
    Move {
        /// The tenant (company id).
        tenant: String,
        /// The placement to move it to (a name of TENANT_DATABASES, or `default`).
        #[arg(required_unless_present = "abort")]
        placement: Option<String>,
        /// Drop the schema on the source database once switched.
        #[arg(long, conflicts_with = "abort")]
        drop_source: bool,
        /// Undo the tenant's move that has not switched yet: drop the copy, resume it where it was.
        #[arg(long)]
        abort: bool,
    },
    /// Pause a tenant: its writes stop, its events wait (they are not dead-lettered).
    Pause { tenant: String },
    /// Resume a paused tenant: its waiting events go through.
    Resume { tenant: String },
}

pub async fn run(placements: &Placements, args: TenantsArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        None => list(placements, json).await,
        Some(TenantsCommand::Move {
            tenant,
            placement,
            drop_source,
            abort,
        }) => {
            let tenant = TenantId::parse(&tenant)?;
            if abort {
                let undone = moves::abort(placements, &tenant).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&undone)?);
                } else {
                    let dropped = if undone.target_dropped {
                        format!("its copy on {} dropped", undone.target)
                    } else {
                        "nothing had been copied".to_owned()
                    };
                    println!(
                        "move of tenant {} to {} undone after its step {}: {dropped}; active on {} again",
                        undone.tenant, undone.target, undone.step, undone.source
                    );
                }
                return Ok(());
            }
            let target = placement.expect("required unless --abort");
            move_tenant(placements, &tenant, &target, drop_source, json).await
        }
        Some(TenantsCommand::Pause { tenant }) => {
            let changed = moves::pause(placements, &TenantId::parse(&tenant)?).await?;
            state_changed(
                &changed,
                json,
                "its events wait until `wa-admin tenants resume`",
            )
        }
        Some(TenantsCommand::Resume { tenant }) => {
            let changed = moves::resume(placements, &TenantId::parse(&tenant)?).await?;
            state_changed(&changed, json, "its waiting events go through")
        }
    }
}

fn state_changed(changed: &moves::StateChange, json: bool, then: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(changed)?);
    } else {
        println!(
            "tenant {} ({} on {}): {} -> {}; {then}",
            changed.tenant, changed.schema, changed.placement, changed.before, changed.after
        );
    }
    Ok(())
}

async fn move_tenant(
    placements: &Placements,
    tenant: &TenantId,
    target: &str,
    drop_source: bool,
    json: bool,
) -> anyhow::Result<()> {
    let abort_after = match std::env::var(ABORT_AFTER) {
        Ok(step) => {
            Some(Step::parse(&step).ok_or_else(|| anyhow!("{ABORT_AFTER}={step}: not a step"))?)
        }
        Err(_) => None,
    };
    let options = MoveOptions {
        drop_source,
        abort_after,
    };
    let started = Instant::now();
    eprintln!("wa-admin: moving tenant {tenant} to {target}");
    let progress = |line: &str| eprintln!("wa-admin: {line}");
    let report = moves::run(placements, tenant, target, &options, &progress).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, started.elapsed());
    }
    Ok(())
}

fn print_report(r: &MoveReport, took: std::time::Duration) {
    let resumed = r
        .resumed_after
        .map(|s| format!(" (resumed after its step {s})"))
        .unwrap_or_default();
    println!(
        "tenant {} ({}) moved from {} to {} in {}{resumed}",
        r.tenant,
        r.schema,
        r.source,
        r.target,
        moves::seconds(took)
    );
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| json!({"step": s.step, "took": moves::seconds(std::time::Duration::from_secs_f64(s.seconds))}))
        .collect();
    table::print(&["step", "took"], &steps);
    if !r.tables.is_empty() {
        println!();
        let tables: Vec<Value> = r
            .tables
            .iter()
            .map(|t| {
                json!({"table": t.table, "rows": t.rows, "MB": format!("{:.1}", t.bytes as f64 / 1e6),
                       "took": moves::seconds(std::time::Duration::from_secs_f64(t.seconds))})
            })
            .collect();
        table::print(&["table", "rows", "MB", "took"], &tables);
        println!(
            "copied {} rows ({:.1} MB) at {:.0} rows/s",
            r.copied_rows,
            r.copied_bytes as f64 / 1e6,
            r.copy_rows_per_second
        );
    }
}

/// A tenant schema and the database it is placed on.
pub struct Placed {
    pub schema: String,
    pub db: Arc<Db>,
    /// None for a schema no tenant record names (on the main database, the default placement).
    pub record: Option<TenantRecord>,
}

impl Placed {
    /// Refuses a command that writes the tenant's schema while it is being moved.
    pub fn refuse_moving(&self, what: &str) -> anyhow::Result<()> {
        match &self.record {
            Some(r) if r.state() == TenantState::Moving => bail!(
                "tenant {} is being moved; {what} once the move is done (`wa-admin tenants`)",
                r.tenant_id
            ),
            _ => Ok(()),
        }
    }
}

/// Every recorded tenant (none when the main database has no `wa_system.tenants` yet).
async fn records(main: &PgPool) -> anyhow::Result<Vec<TenantRecord>> {
    match tenants::all(main).await {
        Err(e) if sqlstate(&e).as_deref() == Some("42P01") => Ok(Vec::new()),
        other => other.context("reading wa_system.tenants"),
    }
}

/// Where the schema of `tenant` lives: its placement's database, or the main one when it is not
/// recorded (a tenant's schema is made on the default placement).
pub async fn locate(placements: &Placements, tenant: &TenantId) -> anyhow::Result<Placed> {
    let schema = tenant.schema_name();
    let record = match tenants::by_schema(&placements.main().pool, &schema).await {
        Err(e) if sqlstate(&e).as_deref() == Some("42P01") => None,
        other => other.context("reading wa_system.tenants")?,
    };
    let placement = record
        .as_ref()
        .map_or(DEFAULT_PLACEMENT, |r| r.placement.as_str());
    Ok(Placed {
        db: placements.db(placement)?,
        schema,
        record,
    })
}

/// Tenants placed on a database this process does not know (not in `TENANT_DATABASES`), with
/// the reason.
pub type Unplaced = Vec<(TenantRecord, String)>;

/// Every tenant schema where it is placed: the recorded tenants on their placements' databases,
/// and the tenant schemas of the main database that no record names. (A schema a move left on
/// its source, fenced, is not the tenant's: it is not listed.) Tenants on a placement this
/// process does not know are returned apart.
pub async fn every(placements: &Placements) -> anyhow::Result<(Vec<Placed>, Unplaced)> {
    let main = placements.main();
    let recorded = records(&main.pool).await?;
    let mut out = Vec::new();
    let mut unplaced = Vec::new();
    let known: Vec<&str> = recorded.iter().map(|r| r.schema_name.as_str()).collect();
    for schema in tenant_schemas(&main.pool)
        .await
        .context("listing tenant schemas")?
    {
        if !known.contains(&schema.as_str()) {
            out.push(Placed {
                schema,
                db: main.clone(),
                record: None,
            });
        }
    }
    for r in recorded {
        match placements.db(&r.placement) {
            Ok(db) => out.push(Placed {
                schema: r.schema_name.clone(),
                db,
                record: Some(r),
            }),
            Err(e) => {
                let why = e.to_string();
                unplaced.push((r, why));
            }
        }
    }
    out.sort_by(|a, b| a.schema.cmp(&b.schema));
    Ok((out, unplaced))
}

/// [`every`], saying on stderr which tenants are skipped for want of their placement.
pub async fn every_known(placements: &Placements) -> anyhow::Result<Vec<Placed>> {
    let (placed, unplaced) = every(placements).await?;
    for (r, why) in unplaced {
        eprintln!("wa-admin: tenant {} skipped: {why}", r.tenant_id);
    }
    Ok(placed)
}

async fn list(placements: &Placements, json: bool) -> anyhow::Result<()> {
    let moving: BTreeMap<String, moves::MoveRecord> = moves::in_progress(&placements.main().pool)
        .await
        .context("reading wa_system.tenant_moves")?
        .into_iter()
        .map(|m| (m.schema_name.clone(), m))
        .collect();
    let mut unavailable: BTreeMap<String, String> = BTreeMap::new();
    let mut rows = Vec::new();
    let (placed, unplaced) = every(placements).await?;
    for (r, why) in unplaced {
        rows.push(json!({
            "tenant": r.tenant_id, "schema": r.schema_name, "placement": r.placement,
            "state": r.state, "created_at": r.created_at, "error": why,
            "move": moving.get(&r.schema_name).map(|m| json!({
                "target": m.target, "step": m.step, "drop_source": m.drop_source,
                "started_at": m.started_at, "updated_at": m.updated_at,
            })),
        }));
    }
    for p in placed {
        let mut row = json!({
            "tenant": p.record.as_ref().map(|r| r.tenant_id.clone()),
            "schema": p.schema,
            "placement": p.db.name,
            "state": p.record.as_ref().map_or("unrecorded".to_owned(), |r| r.state.clone()),
            "created_at": p.record.as_ref().map(|r| r.created_at),
            "move": moving.get(&p.schema).map(|m| json!({
                "target": m.target, "step": m.step, "drop_source": m.drop_source,
                "started_at": m.started_at, "updated_at": m.updated_at,
            })),
        });
        if let Some(why) = unavailable.get(&p.db.name) {
            row["error"] = json!(why);
        } else {
            match counts(&p.db.pool, &p.schema).await {
                Ok(Some(counts)) => {
                    for (k, v) in counts.as_object().expect("counts").clone() {
                        row[k] = v;
                    }
                }
                // Not migrated (awaiting adoption, or not created yet): no counts.
                Ok(None) if p.record.is_none() => continue,
                Ok(None) => {}
                Err(e) => {
                    let why = format!("placement {}: {e:#}", p.db.name);
                    eprintln!("wa-admin: {why}");
                    unavailable.insert(p.db.name.clone(), why.clone());
                    row["error"] = json!(why);
                }
            }
        }
        rows.push(row);
    }
    rows.sort_by(|a, b| a["schema"].as_str().cmp(&b["schema"].as_str()));
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let people: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["created_at"] = r["created_at"]
                .as_str()
                .map(|s| json!(s.get(..19).unwrap_or(s).replace('T', " ")))
                .unwrap_or(Value::Null);
            r["move"] = r["move"]
                .as_object()
                .map(|m| {
                    json!(format!(
                        "to {} (done: {})",
                        m["target"].as_str().unwrap_or(""),
                        m["step"].as_str().unwrap_or("")
                    ))
                })
                .unwrap_or(Value::Null);
            r
        })
        .collect();
    table::print(
        &[
            "tenant",
            "schema",
            "placement",
            "state",
            "created_at",
            "chats",
            "messages",
            "contacts",
            "agents",
            "unresolved_exhausted",
            "move",
        ],
        &people,
    );
    Ok(())
}

/// The row counts of a migrated schema; None when it is not.
async fn counts(pool: &PgPool, schema: &str) -> anyhow::Result<Option<Value>> {
    if schema::applied_version(pool, schema)
        .await
        .with_context(|| format!("{schema}: schema version"))?
        == 0
    {
        return Ok(None);
    }
    let counts = table_counts(pool, schema)
        .await
        .with_context(|| format!("{schema}: counting rows"))?;
    Ok(Some(serde_json::to_value(counts)?))
}
