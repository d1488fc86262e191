//! `wa-loadgen`: publishes producer-shaped events to NATS.
//!
//! `wa-loadgen fixtures` publishes the producer fixtures (one JSON object per line, one file per
//! subject) on their subjects, for a given company, in the producer's order.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wa_shared::model::EventKind;

#[derive(Parser)]
#[command(
    name = "wa-loadgen",
    version,
    about = "Publishes producer-shaped WhatsApp events to NATS JetStream"
)]
struct Cli {
    /// NATS server URL.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish every line of the producer fixtures on its subject.
    Fixtures {
        /// Directory of `<subject base>.jsonl` files.
        #[arg(long, default_value = "tests/fixtures/producer")]
        dir: PathBuf,
        /// Company (tenant) id the events are published for; replaces the fixtures' CMP001.
        #[arg(long, default_value = "DEMO")]
        company: String,
    },
}

/// The producer's order: chats first appear as updates, then messages, receipts, contacts,
/// agent status, history.
const ORDER: [EventKind; 10] = [
    EventKind::ChatUpdate,
    EventKind::ChatUpsert,
    EventKind::MessageUpsert,
    EventKind::MessageUpdate,
    EventKind::ContactUpsert,
    EventKind::ContactUpdate,
    EventKind::ConnectionUpdate,
    EventKind::HistoryChats,
    EventKind::HistoryMessages,
    EventKind::HistoryContacts,
];

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wa-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let client = async_nats::connect(&cli.nats_url)
        .await
        .map_err(|e| format!("NATS_URL {}: {e}", cli.nats_url))?;
    let js = async_nats::jetstream::new(client);
    match cli.command {
        Command::Fixtures { dir, company } => {
            wa_shared::model::TenantId::parse(&company).map_err(|e| e.to_string())?;
            let mut published = 0;
            for kind in ORDER {
                let path = dir.join(format!("{}.jsonl", kind.base()));
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                let subject = wa_shared::model::Subject::format(kind, &company);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let body = line.replace("\"CMP001\"", &format!("\"{company}\""));
                    js.publish(subject.clone(), body.into_bytes().into())
                        .await
                        .map_err(|e| format!("publish on {subject}: {e}"))?
                        .await
                        .map_err(|e| format!("{subject}: not stored ({e}); are the functions running? they create the streams"))?;
                    published += 1;
                }
            }
            println!("published {published} fixture events for company {company}");
            Ok(())
        }
    }
}
