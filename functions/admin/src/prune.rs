//! `wa-admin prune`: by hand, the pruning pass the functions run every six hours (standalone)
//! or on a schedule (Lambda): processed-message ids and processing attempts older than
//! `INBOX_RETENTION` (or `--older-than`), reporting the rows removed per tenant schema, on
//! every placement's database.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use wa_shared::settings::parse_duration;
use wa_shared::settings::vars::StreamVars;
use wa_shared::startup::prune_once;
use wa_shared::store::placement::Placements;
use wa_shared::transport::reconcile::duration;
use wa_shared::transport::streams::EVENTS_MAX_AGE;

use crate::table;

#[derive(Args)]
pub struct PruneArgs {
    /// Remove rows older than this (e.g. 45d) instead of INBOX_RETENTION.
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<Duration>,
    #[command(flatten)]
    streams: StreamVars,
}

pub async fn run(placements: &Placements, args: PruneArgs, json: bool) -> anyhow::Result<()> {
    let retention = args.older_than.unwrap_or(args.streams.inbox_retention);
    // Below the streams' max age, a message redelivered or replayed from a stream could find its
    // id forgotten and apply twice.
    if retention < EVENTS_MAX_AGE {
        eprintln!(
            "wa-admin: warning: keeping processed-message ids for less than the streams' {}: \
             an event redelivered or replayed after that may apply twice",
            duration(EVENTS_MAX_AGE)
        );
    }
    let pruned = prune_once(placements, retention)
        .await
        .context("pruning the inboxes")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pruned).expect("json"));
        return Ok(());
    }
    let rows: Vec<_> = pruned
        .inbox
        .iter()
        .filter(|s| s.rows > 0)
        .map(|s| json!({"schema": s.schema, "placement": s.placement, "inbox_rows": s.rows}))
        .collect();
    table::print(&["schema", "placement", "inbox_rows"], &rows);
    println!(
        "removed {} inbox rows in {} of {} tenant schemas and {} processing attempts older than {}",
        pruned.inbox_rows,
        rows.len(),
        pruned.inbox.len(),
        pruned.attempt_rows,
        duration(retention)
    );
    Ok(())
}
