//! `wa-admin adopt`: takes over the tenant schemas the earlier service left (SPEC §16), one
//! transaction per schema; `--dry-run` reports every change without making it.

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use sqlx::PgPool;
use wa_shared::model::TenantId;
use wa_shared::store::adopt::{self, Report};

use crate::table;

#[derive(Args)]
pub struct AdoptArgs {
    /// The tenant (company id) whose schema to adopt; repeat for several. Without it, every
    /// tenant schema that awaits adoption.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Report what adopting would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(pool: &PgPool, args: AdoptArgs, json: bool) -> anyhow::Result<()> {
    let schemas: Vec<String> = if args.tenants.is_empty() {
        adopt::awaiting(pool)
            .await
            .context("looking for schemas awaiting adoption")?
    } else {
        args.tenants
            .iter()
            .map(|t| TenantId::parse(t).map(|t| t.schema_name()))
            .collect::<Result<_, _>>()?
    };
    if schemas.is_empty() && !json {
        println!("no tenant schema awaits adoption; nothing to do");
    }
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for schema in &schemas {
        match adopt::adopt(pool, schema, args.dry_run).await {
            Ok(report) => {
                if !json {
                    print(&report);
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("wa-admin: {e:#}");
                failed.push(schema.clone());
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("reports serialise")
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} schemas not adopted (left as they were): {}",
            failed.len(),
            schemas.len(),
            failed.join(", ")
        )
    }
}

/// One schema's report, for people.
fn print(report: &Report) {
    let owner = report
        .tenant
        .as_deref()
        .map(|t| format!(" (tenant {t})"))
        .unwrap_or_default();
    if let Some(why) = &report.nothing_to_do {
        println!("{}{owner}: nothing to do: {why}", report.schema);
        return;
    }
    let verdict = match (report.dry_run, report.adopted) {
        (true, _) => "dry run, nothing changed; the adoption would make",
        (false, true) => "adopted with",
        (false, false) => "not adopted; planned",
    };
    println!(
        "{}{owner}: {verdict} {} changes",
        report.schema,
        report.changes()
    );
    let rows: Vec<Value> = report
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "table": s.table,
                "change": s.change,
                "detail": if s.changes() { s.detail.clone() } else { format!("(note) {}", s.detail) },
            })
        })
        .collect();
    table::print(&["table", "change", "detail"], &rows);
    if !report.duplicates.is_empty() {
        println!();
        println!(
            "rows removed as duplicates ({}; kept in {}.adopt_duplicates):",
            report.duplicates.len(),
            report.schema
        );
        let rows: Vec<Value> = report
            .duplicates
            .iter()
            .map(|d| {
                serde_json::json!({
                    "table": d.table,
                    "key": format!("({}) = {}", d.key_columns, d.key),
                    "kept": d.kept.to_string(),
                    "removed": d.removed_key.to_string(),
                })
            })
            .collect();
        table::print(&["table", "key", "kept", "removed"], &rows);
    }
    println!();
}
