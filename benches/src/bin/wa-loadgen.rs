//! `wa-loadgen`: publishes producer-shaped events to NATS.
//!
//! `wa-loadgen fixtures` publishes the producer fixtures (one JSON object per line, one file per
//! subject) on their subjects, for a given company, in the producer's order.
//!
//! `wa-loadgen run` publishes a generated workload (all ten subjects, related as the producer
//! relates them, over several tenants and agents) at a rate or as fast as possible, and reports
//! the events per second the streams acknowledged. Like a real producer it retries a publish
//! that fails (a JetStream failover) for up to `--retry-for`, and reports the retries and the
//! events it gave up on.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::context::GetStreamByNameErrorKind;
use clap::{Args, Parser, Subcommand};
use wa_benches::{Mix, PublishSettings, Workload, WorkloadSettings};
use wa_shared::model::{Category, EventKind, Subject};
use wa_shared::settings::parse_duration;
use wa_shared::transport::streams::{ensure_stream, stream_specs};

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
    /// Publish a generated producer-shaped workload and report the events/s published.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Tenants (companies `<prefix>001`, `<prefix>002`, …).
    #[arg(long, default_value_t = 2)]
    tenants: usize,
    /// WhatsApp agents (phones) per tenant.
    #[arg(long, default_value_t = 2)]
    agents_per_tenant: usize,
    /// Prefix of the generated company ids.
    #[arg(long, default_value = "LOAD")]
    company_prefix: String,
    /// Subjects to publish: realtime, history or all.
    #[arg(long, default_value_t = Mix::All)]
    mix: Mix,
    /// Events per second; 0 publishes as fast as the server acknowledges.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Events to publish (10000 unless --duration is given).
    #[arg(long)]
    count: Option<u64>,
    /// How long to publish, e.g. 30s or 5m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Seed of the workload: the same seed publishes the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Publishes whose acknowledgement is awaited at once, at most.
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
    /// Retry a failed publish (or a failed or timed-out ack) with a backoff of 100 ms doubling
    /// to 2 s, for up to this long after its first attempt; 0 never retries. Keep it shorter
    /// than the streams' duplicate window (2m by default).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    retry_for: Duration,
    /// Create (or reconcile) the three streams first, as the functions do at startup.
    #[arg(long)]
    create_streams: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

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
            for kind in EventKind::PRODUCER_ORDER {
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
        Command::Run(args) => run_workload(&js, args).await,
    }
}

async fn run_workload(js: &async_nats::jetstream::Context, args: RunArgs) -> Result<(), String> {
    let first_company = format!("{}001", args.company_prefix);
    let mut workload = Workload::new(&WorkloadSettings {
        tenants: args.tenants,
        agents_per_tenant: args.agents_per_tenant,
        company_prefix: args.company_prefix,
        mix: args.mix,
        seed: args.seed,
    })?;
    if args.create_streams {
        for spec in stream_specs(1, Duration::from_secs(7 * 24 * 3600)) {
            ensure_stream(js, &spec).await.map_err(|e| e.to_string())?;
        }
    } else if let Some(subject) = unstored_subject(js, &first_company, args.mix).await {
        return Err(format!(
            "no stream stores {subject}; are the streams there? (--create-streams)"
        ));
    }
    let settings = PublishSettings {
        rate: args.rate.max(0.0),
        count: args.count.or(args.duration.is_none().then_some(10_000)),
        duration: args.duration,
        in_flight: args.in_flight,
        retry_for: args.retry_for,
        progress: !args.quiet,
    };
    let report = wa_benches::publish(js, &mut workload, &settings).await;
    // A closed stdout (`| head`) is not a failure of the run.
    let mut out = std::io::stdout().lock();
    let _ = if args.json {
        writeln!(out, "{}", report.to_json())
    } else {
        write!(out, "{report}")
    };
    if report.published == 0 && report.errors > 0 {
        return Err("nothing was stored; are the streams there? (--create-streams)".into());
    }
    Ok(())
}

/// A subject of the mix that the server says no stream stores, if any. Without this check a
/// run against missing streams would retry every event for `--retry-for`. Only a definite
/// answer counts: when the server cannot answer (it is failing over, say), publishing goes
/// ahead and its retries ride the failure out.
async fn unstored_subject(
    js: &async_nats::jetstream::Context,
    company: &str,
    mix: Mix,
) -> Option<String> {
    let published = |kind: &EventKind| match mix {
        Mix::Realtime => kind.category() == Category::Realtime,
        Mix::History => kind.category() == Category::Historical,
        Mix::All => true,
    };
    for kind in EventKind::ALL.into_iter().filter(published) {
        let subject = Subject::format(kind, company);
        if let Err(e) = js.stream_by_subject(subject.clone()).await {
            if e.kind() == GetStreamByNameErrorKind::NotFound {
                return Some(subject);
            }
        }
    }
    None
}
