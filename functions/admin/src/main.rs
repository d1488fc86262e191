//! `wa-admin`: the operator CLI — tenants, schema migrations and adoption, streams, inbox
//! pruning, and exhausted events (list, show, replay, resolve). Tables for people by default,
//! `--json` for scripts.

mod adopt;
mod prune;
mod streams;
mod table;
mod tenants;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;
use wa_shared::model::{InvalidTenant, TenantId};
use wa_shared::settings::vars::{DbVars, NatsVars};
use wa_shared::store::exhausted::{self, Exhausted, Filter, Home};
use wa_shared::store::placement::{Db, Placements, TenantState};
use wa_shared::store::schema;
use wa_shared::store::SYSTEM_SCHEMA;
use wa_shared::transport::nats::NatsSettings;

#[derive(Parser)]
#[command(
    name = "wa-admin",
    version,
    about = "Operator CLI for WA Events Processor: tenants, migrations, adoption of Go-era schemas, streams, inbox pruning, exhausted events",
    after_help = "DATABASE_URL (alias POSTGRES_DSN) names the main database and TENANT_DATABASES the other placements; replay publishes to NATS_URL."
)]
struct Cli {
    #[command(flatten)]
    db: DbVars,
    #[command(flatten)]
    nats: NatsVars,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List tenants: placement, state, row counts, moves in progress; move, pause or resume one.
    Tenants(tenants::TenantsArgs),
    /// Create or migrate tenant schemas (all existing ones, or the given tenants), each on the
    /// database of its placement.
    Migrate {
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
    /// Dead letters that outlived their retries.
    #[command(subcommand)]
    Exhausted(ExhaustedCommand),
    /// The product streams next to their configured shape: differences, and what reconciling
    /// changes, keeps or only reports; the consumers on each.
    Streams(streams::StreamsArgs),
    /// Forget processed-message ids and processing attempts older than INBOX_RETENTION (the
    /// pruning the functions run every six hours), per tenant schema.
    Prune(prune::PruneArgs),
    /// Take over tenant schemas the earlier service left: bring them to the current migration
    /// version without losing a row (--dry-run reports every change and makes none).
    Adopt(adopt::AdoptArgs),
}

#[derive(Args, Clone)]
struct Scope {
    /// The tenant (company id) whose exhausted events to use.
    #[arg(long, conflicts_with = "system")]
    tenant: Option<String>,
    /// Use the system schema (events of invalid or refused tenants, unreadable dead letters).
    #[arg(long)]
    system: bool,
}

#[derive(Subcommand)]
enum ExhaustedCommand {
    /// List exhausted events, newest first (all tenants unless --tenant or --system).
    List {
        #[command(flatten)]
        scope: Scope,
        /// Source subject, `*` as a wildcard (e.g. `v1.messages.*`).
        #[arg(long)]
        subject: Option<String>,
        /// Only resolved (true) or unresolved (false) events.
        #[arg(long)]
        resolved: Option<bool>,
        /// Created at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Created before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one exhausted event in full.
    Show {
        id: i64,
        #[command(flatten)]
        scope: Scope,
    },
    /// Re-publish original payloads to their source subjects and mark them replayed.
    Replay {
        /// Event ids; with none, every unresolved, not yet replayed event matching --subject.
        ids: Vec<i64>,
        #[command(flatten)]
        scope: Scope,
        #[arg(long)]
        subject: Option<String>,
        /// Replay events that were already replayed.
        #[arg(long)]
        force: bool,
    },
    /// Mark events resolved, with a note.
    Resolve {
        #[arg(required = true)]
        ids: Vec<i64>,
        #[command(flatten)]
        scope: Scope,
        #[arg(long)]
        note: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why `--tenant` / `--system` do not name one schema.
#[derive(Debug, thiserror::Error)]
enum ScopeError {
    #[error(transparent)]
    Tenant(#[from] InvalidTenant),
    #[error("name a tenant with --tenant, or --system")]
    Unnamed,
}

/// The one schema a scope names; `Ok(None)` when it names none (meaning every schema).
fn home_of(scope: &Scope) -> Result<Option<Home>, ScopeError> {
    match (&scope.tenant, scope.system) {
        (Some(t), _) => Ok(Some(Home::Tenant(TenantId::parse(t)?))),
        (None, true) => Ok(Some(Home::System)),
        (None, false) => Ok(None),
    }
}

/// The NATS connection of a command that needs one, named `wa-admin` on the server.
async fn connect_nats(nats: NatsVars) -> anyhow::Result<async_nats::Client> {
    let nats = NatsSettings::new(nats, "wa-admin");
    nats.connect()
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("NATS_URL {}", nats.url.redacted()))
}

/// The database that holds the exhausted events of a scope's schema: the main one for the
/// system schema, the tenant's placement for a tenant.
async fn home_db(placements: &Placements, home: &Home) -> anyhow::Result<tenants::Placed> {
    match home {
        Home::Tenant(t) => tenants::locate(placements, t).await,
        Home::System => Ok(tenants::Placed {
            schema: SYSTEM_SCHEMA.to_owned(),
            db: placements.main().clone(),
            record: None,
        }),
    }
}

/// The one schema a command on one schema uses, where it lives.
async fn placed_schema(placements: &Placements, scope: &Scope) -> anyhow::Result<tenants::Placed> {
    let home = home_of(scope)?.ok_or(ScopeError::Unnamed)?;
    home_db(placements, &home).await
}

/// Schemas that hold an `exhausted_events` table, each with its database.
async fn exhausted_schemas(
    placements: &Placements,
    scope: &Scope,
) -> anyhow::Result<Vec<(String, Arc<Db>)>> {
    if let Some(home) = home_of(scope)? {
        let placed = home_db(placements, &home).await?;
        return Ok(vec![(placed.schema, placed.db)]);
    }
    let mut all: Vec<(String, Arc<Db>)> = tenants::every_known(placements)
        .await?
        .into_iter()
        .map(|p| (p.schema, p.db))
        .collect();
    all.push((SYSTEM_SCHEMA.to_owned(), placements.main().clone()));
    let mut out = Vec::new();
    let latest = schema::latest_version();
    for (s, db) in all {
        match schema::applied_version(&db.pool, &s).await.with_context(|| format!("{s}: schema version"))? {
            0 => {}
            v if v < latest => eprintln!("wa-admin: {s} is at schema version {v} of {latest}; skipped (run `wa-admin migrate`)"),
            _ => out.push((s, db)),
        }
    }
    Ok(out)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Streams live in NATS alone: no database needed.
    if let Command::Streams(args) = cli.command {
        return streams::run(cli.nats, args, cli.json).await;
    }
    let pool = wa_shared::store::connect(cli.db.url().expose(), 2)
        .await
        .context("DATABASE_URL")?;
    let placements = Placements::new(pool, &cli.db.tenant_databases.clone().unwrap_or_default().0);
    match cli.command {
        Command::Tenants(args) => tenants::run(&placements, args, cli.json).await,
        Command::Migrate { tenants } => migrate(&placements, tenants).await,
        Command::Exhausted(cmd) => exhausted_command(&placements, cli.nats, cmd, cli.json).await,
        Command::Streams(_) => unreachable!("served above without a database"),
        Command::Prune(args) => prune::run(&placements, args, cli.json).await,
        Command::Adopt(args) => adopt::run(&placements, args, cli.json).await,
    }
}

async fn migrate(placements: &Placements, tenants: Vec<String>) -> anyhow::Result<()> {
    let placed: Vec<tenants::Placed> = if tenants.is_empty() {
        tenants::every_known(placements).await?
    } else {
        let mut placed = Vec::new();
        for t in &tenants {
            placed.push(tenants::locate(placements, &TenantId::parse(t)?).await?);
        }
        placed
    };
    let mut systems = std::collections::BTreeSet::new();
    for (i, p) in placed.iter().enumerate() {
        let s = &p.schema;
        if let Some(r) = p
            .record
            .as_ref()
            .filter(|r| r.state() == TenantState::Moving)
        {
            eprintln!(
                "[{}/{}] {s} skipped: tenant {} is being moved (`wa-admin tenants`)",
                i + 1,
                placed.len(),
                r.tenant_id
            );
            continue;
        }
        // A placement's database needs the system schema its writes enter tenants through.
        if !p.db.is_main() && systems.insert(p.db.name.clone()) {
            schema::migrate(&p.db.ddl, SYSTEM_SCHEMA)
                .await
                .with_context(|| format!("{SYSTEM_SCHEMA} on {}", p.db.name))?;
        }
        schema::migrate(&p.db.ddl, s)
            .await
            .with_context(|| format!("{s} on {}", p.db.name))?;
        eprintln!(
            "[{}/{}] {s} at version {} on {}",
            i + 1,
            placed.len(),
            schema::latest_version(),
            p.db.name
        );
    }
    Ok(())
}

async fn exhausted_command(
    placements: &Placements,
    nats: NatsVars,
    cmd: ExhaustedCommand,
    json: bool,
) -> anyhow::Result<()> {
    match cmd {
        ExhaustedCommand::List {
            scope,
            subject,
            resolved,
            since,
            until,
            limit,
        } => {
            let filter = Filter {
                subject,
                resolved,
                since,
                until,
                ids: None,
                limit,
            };
            let mut rows = Vec::new();
            for (s, db) in exhausted_schemas(placements, &scope).await? {
                for e in exhausted::list(&db.pool, &s, &filter)
                    .await
                    .with_context(|| s.clone())?
                {
                    rows.push((s.clone(), e));
                }
            }
            print_list(&rows, json);
            Ok(())
        }
        ExhaustedCommand::Show { id, scope } => {
            let placed = placed_schema(placements, &scope).await?;
            let s = placed.schema;
            let filter = Filter {
                ids: Some(vec![id]),
                limit: 1,
                ..Filter::default()
            };
            let found = exhausted::list(&placed.db.pool, &s, &filter)
                .await
                .with_context(|| s.clone())?;
            let e = found
                .first()
                .ok_or_else(|| anyhow!("no exhausted event {id} in {s}"))?;
            let v = serde_json::to_value(e).expect("json");
            if json {
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                for (k, val) in v.as_object().expect("object") {
                    let text = match val {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    println!("{k:>28}: {text}");
                }
            }
            Ok(())
        }
        ExhaustedCommand::Replay {
            ids,
            scope,
            subject,
            force,
        } => {
            let placed = placed_schema(placements, &scope).await?;
            placed.refuse_moving("replay its events")?;
            let (s, pool) = (&placed.schema, &placed.db.pool);
            let filter = if ids.is_empty() {
                Filter {
                    subject,
                    resolved: Some(false),
                    limit: i64::MAX,
                    ..Filter::default()
                }
            } else {
                Filter {
                    ids: Some(ids),
                    subject,
                    limit: i64::MAX,
                    ..Filter::default()
                }
            };
            let events = exhausted::list(pool, s, &filter)
                .await
                .with_context(|| s.clone())?;
            replay(pool, nats, s, events, force, json).await
        }
        ExhaustedCommand::Resolve { ids, scope, note } => {
            let placed = placed_schema(placements, &scope).await?;
            placed.refuse_moving("resolve its events")?;
            let s = &placed.schema;
            let n = exhausted::resolve(&placed.db.pool, s, &ids, note.as_deref())
                .await
                .with_context(|| s.clone())?;
            if json {
                println!("{}", serde_json::json!({"resolved": n}));
            } else {
                println!("resolved {n} of {} events", ids.len());
            }
            Ok(())
        }
    }
}

async fn replay(
    pool: &PgPool,
    nats: NatsVars,
    schema: &str,
    events: Vec<Exhausted>,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(connect_nats(nats).await?);
    let total = events.len();
    let mut report = Vec::new();
    for (n, e) in events.into_iter().enumerate() {
        let outcome = if e.replayed_at.is_some() && !force {
            "skipped: already replayed (use --force)".to_owned()
        } else {
            match (
                e.source_subject.as_deref(),
                exhausted::original_bytes(pool, schema, e.id)
                    .await
                    .with_context(|| format!("reading event {}", e.id))?,
            ) {
                (Some(subject), Some(bytes)) => {
                    let mut headers = async_nats::HeaderMap::new();
                    // Two replays racing each other publish once (within the stream's duplicate window).
                    let msg_id = format!(
                        "replay:{schema}:{}:{}",
                        e.id,
                        e.replayed_at.map(|t| t.timestamp()).unwrap_or(0)
                    );
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
                    js.publish_with_headers(subject.to_owned(), headers, bytes.into())
                        .await
                        .with_context(|| format!("publishing event {}", e.id))?
                        .await
                        .with_context(|| format!("event {} on {subject}: not stored", e.id))?;
                    exhausted::mark_replayed(pool, schema, e.id)
                        .await
                        .with_context(|| format!("marking event {} replayed", e.id))?;
                    format!("replayed to {subject}")
                }
                _ => "skipped: no source subject or payload".to_owned(),
            }
        };
        eprintln!("[{}/{total}] event {}: {outcome}", n + 1, e.id);
        report.push(serde_json::json!({"id": e.id, "result": outcome}));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        println!("{total} event(s) processed");
    }
    Ok(())
}

fn print_list(rows: &[(String, Exhausted)], json: bool) {
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(s, e)| {
                let mut v = serde_json::to_value(e).expect("json");
                v["schema"] = serde_json::Value::String(s.clone());
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    let v: Vec<_> = rows
        .iter()
        .map(|(s, e)| {
            serde_json::json!({
                "schema": s, "id": e.id, "created_at": e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                "source_subject": e.source_subject, "error_type": e.error_type, "retries": e.retry_count,
                "resolved": e.resolved, "replayed": e.replayed_at.is_some(),
                "last_error": e.last_error.as_deref().map(|s| s.chars().take(60).collect::<String>()),
            })
        })
        .collect();
    table::print(
        &[
            "schema",
            "id",
            "created_at",
            "source_subject",
            "error_type",
            "retries",
            "resolved",
            "replayed",
            "last_error",
        ],
        &v,
    );
}
