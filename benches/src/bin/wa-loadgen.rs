//! `wa-loadgen`: publishes producer-shaped events to NATS.
//!
//! `wa-loadgen fixtures` publishes the producer fixtures (one JSON object per line, one file per
//! subject) on their subjects, for a given company, in the producer's order.
//!
//! `wa-loadgen run` publishes a generated workload (all ten subjects, related as the producer
//! relates them, over several tenants and agents) at a rate or as fast as possible, and reports
//! the events per second the streams acknowledged.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wa_benches::{Mix, PublishSettings, Workload, WorkloadSettings};
use wa_shared::model::EventKind;
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
    }
    let settings = PublishSettings {
        rate: args.rate.max(0.0),
        count: args.count.or(args.duration.is_none().then_some(10_000)),
        duration: args.duration,
        in_flight: args.in_flight,
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
