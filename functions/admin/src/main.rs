//! `wa-admin`: the operator CLI — tenants, schema migrations, and exhausted events (list, show,
//! replay, resolve). Tables for people by default, `--json` for scripts.

mod table;

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;
use wa_shared::model::{quote_ident, TenantId};
use wa_shared::settings::vars::{DbVars, NatsVars};
use wa_shared::store::exhausted::{self, Exhausted, Filter};
use wa_shared::store::schema::{self, tenant_schemas};
use wa_shared::store::SYSTEM_SCHEMA;
use wa_shared::transport::nats::NatsSettings;

#[derive(Parser)]
#[command(
    name = "wa-admin",
    version,
    about = "Operator CLI for WA Events Processor: tenants, migrations, exhausted events",
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
            eprintln!("wa-admin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn schema_of(scope: &Scope) -> Result<String, String> {
    match (&scope.tenant, scope.system) {
        (Some(t), _) => Ok(TenantId::parse(t).map_err(|e| e.to_string())?.schema_name()),
        (None, true) => Ok(SYSTEM_SCHEMA.to_owned()),
        (None, false) => Err("name a tenant with --tenant, or --system".into()),
    }
}

/// Schemas that hold an `exhausted_events` table.
async fn exhausted_schemas(pool: &PgPool, scope: &Scope) -> Result<Vec<String>, String> {
    if scope.tenant.is_some() || scope.system {
        return Ok(vec![schema_of(scope)?]);
    }
    let mut all = tenant_schemas(pool).await.map_err(|e| e.to_string())?;
    all.push(SYSTEM_SCHEMA.to_owned());
    let mut out = Vec::new();
    let latest = schema::latest_version();
    for s in all {
        match schema::applied_version(pool, &s).await.map_err(|e| e.to_string())? {
            0 => {}
            v if v < latest => eprintln!("wa-admin: {s} is at schema version {v} of {latest}; skipped (run `wa-admin migrate`)"),
            _ => out.push(s),
        }
    }
    Ok(out)
}

async fn run(cli: Cli) -> Result<(), String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(cli.db.url().expose())
        .await
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    match cli.command {
        Command::Tenants => tenants(&pool, cli.json).await,
        Command::Migrate { tenants } => migrate(&pool, tenants).await,
        Command::Exhausted(cmd) => exhausted_command(&pool, cli.nats, cmd, cli.json).await,
    }
}

async fn tenants(pool: &PgPool, json: bool) -> Result<(), String> {
    let mut rows = Vec::new();
    for s in tenant_schemas(pool).await.map_err(|e| e.to_string())? {
        if schema::applied_version(pool, &s)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            continue;
        }
        let q = quote_ident(&s);
        let sql = format!(
            "SELECT (SELECT count(*) FROM {q}.chats), (SELECT count(*) FROM {q}.messages),
                    (SELECT count(*) FROM {q}.contacts), (SELECT count(*) FROM {q}.agents),
                    (SELECT count(*) FROM {q}.exhausted_events WHERE NOT resolved)"
        );
        let (chats, messages, contacts, agents, open): (i64, i64, i64, i64, i64) =
            sqlx::query_as(&sql)
                .fetch_one(pool)
                .await
                .map_err(|e| e.to_string())?;
        rows.push(serde_json::json!({
            "schema": s, "chats": chats, "messages": messages, "contacts": contacts,
            "agents": agents, "unresolved_exhausted": open,
        }));
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

async fn migrate(pool: &PgPool, tenants: Vec<String>) -> Result<(), String> {
    let schemas = if tenants.is_empty() {
        tenant_schemas(pool).await.map_err(|e| e.to_string())?
    } else {
        tenants
            .iter()
            .map(|t| {
                TenantId::parse(t)
                    .map(|t| t.schema_name())
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    };
    for (i, s) in schemas.iter().enumerate() {
        schema::migrate(pool, s)
            .await
            .map_err(|e| format!("{s}: {e}"))?;
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
) -> Result<(), String> {
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
                    .map_err(|e| format!("{s}: {e}"))?
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
                .map_err(|e| e.to_string())?;
            let e = found
                .first()
                .ok_or_else(|| format!("no exhausted event {id} in {s}"))?;
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
                .map_err(|e| e.to_string())?;
            replay(pool, nats, &s, events, force, json).await
        }
        ExhaustedCommand::Resolve { ids, scope, note } => {
            let s = schema_of(&scope)?;
            let n = exhausted::resolve(pool, &s, &ids, note.as_deref())
                .await
                .map_err(|e| e.to_string())?;
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
) -> Result<(), String> {
    let nats = NatsSettings::new(nats, "wa-admin");
    let client = nats
        .connect()
        .await
        .map_err(|e| format!("NATS_URL {}: {e}", nats.url.redacted()))?;
    let js = async_nats::jetstream::new(client);
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
                    .map_err(|e| e.to_string())?,
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
                        .map_err(|err| format!("publishing event {}: {err}", e.id))?
                        .await
                        .map_err(|err| format!("event {} on {subject}: not stored: {err}", e.id))?;
                    exhausted::mark_replayed(pool, schema, e.id)
                        .await
                        .map_err(|e| e.to_string())?;
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
