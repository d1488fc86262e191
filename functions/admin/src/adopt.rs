//! `wa-admin adopt`: takes over the tenant schemas the earlier service left (SPEC §16), one
//! transaction per schema, each on the database of its placement; `--dry-run` reports every
//! change without making it.

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use wa_shared::model::TenantId;
use wa_shared::store::adopt::{self, Report};
use wa_shared::store::placement::Placements;

use crate::table;
use crate::tenants;

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

pub async fn run(placements: &Placements, args: AdoptArgs, json: bool) -> anyhow::Result<()> {
    let mut schemas = Vec::new();
    if args.tenants.is_empty() {
        for name in placements.names() {
            let db = placements.db(&name)?;
            for schema in adopt::awaiting(&db.pool)
                .await
                .with_context(|| format!("looking for schemas awaiting adoption on {name}"))?
            {
                schemas.push((schema, db.clone()));
            }
        }
    } else {
        for t in &args.tenants {
            let placed = tenants::locate(placements, &TenantId::parse(t)?).await?;
            placed.refuse_moving("adopt its schema")?;
            schemas.push((placed.schema, placed.db));
        }
    }
    if schemas.is_empty() && !json {
        println!("no tenant schema awaits adoption; nothing to do");
    }
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for (schema, db) in &schemas {
        match adopt::adopt(&db.pool, schema, args.dry_run).await {
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
