//! `wa-admin`: the operator CLI — tenants, schema migrations and adoption, streams, inbox
//! pruning, and exhausted events (list, show, replay, resolve). Tables for people by default,
//! `--json` for scripts.

mod adopt;
mod prune;
mod streams;
mod table;

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;
use wa_shared::model::{InvalidTenant, TenantId};
use wa_shared::settings::vars::{DbVars, NatsVars};
use wa_shared::store::counts::table_counts;
use wa_shared::store::exhausted::{self, Exhausted, Filter, Home};
use wa_shared::store::schema::{self, tenant_schemas};
use wa_shared::store::SYSTEM_SCHEMA;
use wa_shared::transport::nats::NatsSettings;

#[derive(Parser)]
#[command(
    name = "wa-admin",
    version,
    about = "Operator CLI for WA Events Processor: tenants, migrations, adoption of Go-era schemas, streams, inbox pruning, exhausted events",
    after_help = "DATABASE_URL (alias POSTGRES_DSN) names the database; replay publishes to NATS_URL."
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
    /// List tenant schemas with their row counts.
    Tenants,
    /// Create or migrate tenant schemas (all existing ones, or the given tenants).
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

/// The schema a command that works on one schema uses.
fn schema_of(scope: &Scope) -> Result<String, ScopeError> {
    home_of(scope)?
        .map(|h| h.schema_name())
        .ok_or(ScopeError::Unnamed)
}

/// Schemas that hold an `exhausted_events` table.
/// The NATS connection of a command that needs one, named `wa-admin` on the server.
async fn connect_nats(nats: NatsVars) -> anyhow::Result<async_nats::Client> {
    let nats = NatsSettings::new(nats, "wa-admin");
    nats.connect()
        .await
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("NATS_URL {}", nats.url.redacted()))
}

async fn exhausted_schemas(pool: &PgPool, scope: &Scope) -> anyhow::Result<Vec<String>> {
    if let Some(home) = home_of(scope)? {
        return Ok(vec![home.schema_name()]);
    }
    let mut all = tenant_schemas(pool)
        .await
        .context("listing tenant schemas")?;
    all.push(SYSTEM_SCHEMA.to_owned());
    let mut out = Vec::new();
    let latest = schema::latest_version();
    for s in all {
        match schema::applied_version(pool, &s).await.with_context(|| format!("{s}: schema version"))? {
            0 => {}
            v if v < latest => eprintln!("wa-admin: {s} is at schema version {v} of {latest}; skipped (run `wa-admin migrate`)"),
            _ => out.push(s),
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
    match cli.command {
        Command::Tenants => tenants(&pool, cli.json).await,
        Command::Migrate { tenants } => migrate(&pool, tenants).await,
        Command::Exhausted(cmd) => exhausted_command(&pool, cli.nats, cmd, cli.json).await,
        Command::Streams(_) => unreachable!("served above without a database"),
        Command::Prune(args) => prune::run(&pool, args, cli.json).await,
        Command::Adopt(args) => adopt::run(&pool, args, cli.json).await,
    }
}

async fn tenants(pool: &PgPool, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for s in tenant_schemas(pool)
        .await
        .context("listing tenant schemas")?
    {
        if schema::applied_version(pool, &s)
            .await
            .with_context(|| format!("{s}: schema version"))?
            == 0
        {
            continue;
        }
        let counts = table_counts(pool, &s)
            .await
            .with_context(|| format!("{s}: counting rows"))?;
        let mut row = serde_json::to_value(counts)?;
        row["schema"] = serde_json::Value::String(s);
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
    } else {
        table::print(
            &[
                "schema",
                "chats",
                "messages",
                "contacts",
                "agents",
                "unresolved_exhausted",
            ],
            &rows,
        );
    }
    Ok(())
}

async fn migrate(pool: &PgPool, tenants: Vec<String>) -> anyhow::Result<()> {
    let schemas = if tenants.is_empty() {
        tenant_schemas(pool)
            .await
            .context("listing tenant schemas")?
    } else {
        tenants
            .iter()
            .map(|t| TenantId::parse(t).map(|t| t.schema_name()))
            .collect::<Result<_, _>>()?
    };
    for (i, s) in schemas.iter().enumerate() {
        schema::migrate(pool, s).await.with_context(|| s.clone())?;
        eprintln!(
            "[{}/{}] {s} at version {}",
            i + 1,
            schemas.len(),
            schema::latest_version()
        );
    }
    Ok(())
}

async fn exhausted_command(
    pool: &PgPool,
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
            for s in exhausted_schemas(pool, &scope).await? {
                for e in exhausted::list(pool, &s, &filter)
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
            let s = schema_of(&scope)?;
            let filter = Filter {
                ids: Some(vec![id]),
                limit: 1,
                ..Filter::default()
            };
            let found = exhausted::list(pool, &s, &filter)
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
            let s = schema_of(&scope)?;
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
            let events = exhausted::list(pool, &s, &filter)
                .await
                .with_context(|| s.clone())?;
            replay(pool, nats, &s, events, force, json).await
        }
        ExhaustedCommand::Resolve { ids, scope, note } => {
            let s = schema_of(&scope)?;
            let n = exhausted::resolve(pool, &s, &ids, note.as_deref())
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
