//! The benchmark's flags: where the stack is, how big each phase is, where the report goes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use wa_shared::settings::parse_duration;

/// Flags of `wa-bench-e2e`. Sizes default to a run of a few minutes on a 2-core machine.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wa-bench-e2e",
    version,
    about = "End-to-end benchmark: wa-realtime and wa-historical against the local stack, next to \
             raw SQL and JetStream limits measured in the same run",
    long_about = "End-to-end benchmark: wa-realtime and wa-historical against the local stack, \
                  next to raw SQL and JetStream limits measured in the same run.\n\n\
                  DESTRUCTIVE on the stack it is pointed at: it drops and recreates the database \
                  --database and scratch databases named after it (<database>_sweep, \
                  <database>_raw, <database>_raw_copy, <database>_latency, <database>_burst), and \
                  DELETES and recreates the product streams wa_events_stream, \
                  wa_history_events_stream and dlq_stream (with everything in them) on \
                  --nats-url. Do not point it at a stack whose data you need.\n\n\
                  Besides the throughput of each function it sweeps the tenant count \
                  (--tenants-sweep, --full-sweep) against the raw SQL rate of the same writes over \
                  as many schemas, measures publish->commit latency with --latency-tenants \
                  tenants, and a burst of --burst-tenants brand-new tenants.\n\n\
                  Prints a table (measured, raw limit, ratio, target, pass/fail) and the tenant \
                  sweep, and writes e2e.md, e2e.json, e2e-throughput.png, e2e-tenants.png and the \
                  functions' logs under --out-dir."
)]
pub struct Settings {
    /// Admin connection to Postgres: the fresh --database is created through it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_url: String,
    /// Database the run writes to; dropped (WITH FORCE) and created anew.
    #[arg(long, default_value = "wa_bench")]
    pub database: String,
    /// NATS server; its three product streams are deleted and recreated.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Directory holding wa-realtime and wa-historical (default: this executable's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Report directory (default: target/bench-report, or target/bench-report/smoke with --smoke).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Tiny sizes everywhere (overrides the size flags): a check that the benchmark still runs.
    #[arg(long)]
    pub smoke: bool,

    /// Tenants of the workload (companies `<prefix>001`, `<prefix>002`, …).
    #[arg(long, default_value_t = 4)]
    pub tenants: usize,
    /// WhatsApp agents (phones) per tenant.
    #[arg(long, default_value_t = 5)]
    pub agents_per_tenant: usize,
    /// Prefix of the generated company ids.
    #[arg(long, default_value = "BENCH")]
    pub company_prefix: String,
    /// Seed of the workload: the same seed writes the same events.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,

    /// Messages published and consumed for the raw JetStream limit.
    #[arg(long, default_value_t = 100_000)]
    pub jetstream_count: u64,
    /// Realtime events published flat out for the realtime throughput (and written as raw SQL).
    #[arg(long, default_value_t = 400_000)]
    pub realtime_count: u64,
    /// Events per transaction of the raw SQL realtime limit.
    #[arg(long, default_value_t = 256)]
    pub raw_batch: usize,
    /// Connections the raw SQL limits write on at once, each with its own schema and every
    /// n-th tenant's events (the functions write a batch's tenants concurrently); by default
    /// one per CPU, so that the limit is the machine's, not one backend's.
    #[arg(long, default_value_t = cpus())]
    pub raw_connections: usize,
    /// History batches per transaction of the raw SQL history limit (each batch one bulk upsert).
    #[arg(long, default_value_t = 1)]
    pub raw_history_group: usize,
    /// Events per second of the latency phase.
    #[arg(long, default_value_t = 2000.0)]
    pub latency_rate: f64,
    /// Seconds the latency phase publishes for.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Seconds of events published at the latency rate before the timed ones, untimed, so that
    /// the timed seconds see the function's steady state rather than its first seconds (0: time
    /// from the start).
    #[arg(long, default_value_t = 5)]
    pub latency_settle: u64,
    /// How often the latency phase looks for new commits; the resolution of its numbers.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub latency_poll: Duration,
    /// History batches (of up to 100 items) published flat out for the history throughput.
    #[arg(long, default_value_t = 6000)]
    pub history_count: u64,
    /// Publish every history subject (chats, contacts, messages) instead of history.messages
    /// only; rows are then items of all three (the raw limit stays message upserts).
    #[arg(long)]
    pub history_all_subjects: bool,
    /// Events (realtime) or batches (history) published, and committed, before measuring.
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// How often the throughput phases count commits.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// How long to wait for commits once publishing has ended.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub commit_timeout: Duration,
    /// Tenant counts of the tenant sweep, comma-separated: at each, wa-realtime drains
    /// --sweep-count events of that many tenants next to the raw SQL rate of the same writes
    /// over as many schemas.
    #[arg(long, value_delimiter = ',', default_value = "4,64,512")]
    pub tenants_sweep: Vec<usize>,
    /// The SPEC's whole sweep, 1,4,64,512,2000 tenants (instead of --tenants-sweep).
    #[arg(long)]
    pub full_sweep: bool,
    /// WhatsApp agents per tenant in the sweep, the latency phases and the burst.
    #[arg(long, default_value_t = 2)]
    pub sweep_agents_per_tenant: usize,
    /// Realtime events drained (and written as raw SQL) at each tenant count of the sweep.
    #[arg(long, default_value_t = 200_000)]
    pub sweep_count: u64,
    /// Events per batch of the sweep's raw SQL (the functions' default BATCH_SIZE).
    #[arg(long, default_value_t = 1024)]
    pub sweep_raw_batch: usize,
    /// Schemas one transaction of the sweep's raw SQL covers at most (a batch spanning more is
    /// several transactions): a transaction locks every relation it touches, and hundreds of
    /// schemas in one fill the server's lock table. 32, as the functions.
    #[arg(long, default_value_t = 32)]
    pub raw_schemas_per_tx: usize,
    /// Tenant counts the publish->commit latency is measured with, comma-separated (a fresh
    /// wa-realtime each, its tenants warmed up first).
    #[arg(long, value_delimiter = ',', default_value = "4,256")]
    pub latency_tenants: Vec<usize>,
    /// Brand-new tenants of the burst phase (no schema before it).
    #[arg(long, default_value_t = 2000)]
    pub burst_tenants: usize,
    /// Events per tenant of the burst.
    #[arg(long, default_value_t = 3)]
    pub burst_events_per_tenant: usize,
    /// Realtime events of the burst's tenants drained after the burst by the same wa-realtime,
    /// whose peak RSS is then the RSS serving that many tenants.
    #[arg(long, default_value_t = 100_000)]
    pub rss_events: u64,

    /// Measure only what traces cost: wa-realtime draining --tracing-count events with traces
    /// off, at ratio 1.0 and at 0.01 (to a local receiver that discards them), --tracing-rounds
    /// times each; writes tracing.md and tracing.json.
    #[arg(long)]
    pub tracing_overhead: bool,
    /// Realtime events drained per run of --tracing-overhead.
    #[arg(long, default_value_t = 100_000)]
    pub tracing_count: u64,
    /// Rounds of --tracing-overhead (each runs every configuration once).
    #[arg(long, default_value_t = 3)]
    pub tracing_rounds: usize,

    /// 2: measure only tenant placement (SPEC §17): wa-realtime draining --placement-count
    /// events of --placement-tenants tenants all on the main database, and with every other
    /// tenant on a second Postgres cluster, --placement-rounds times each; writes placement.md
    /// and placement.json.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub placements: u8,
    /// Tenants of --placements 2.
    #[arg(long, default_value_t = 64)]
    pub placement_tenants: usize,
    /// Realtime events drained per run of --placements 2.
    #[arg(long, default_value_t = 100_000)]
    pub placement_count: u64,
    /// Rounds of --placements 2 (each runs one cluster and two clusters once).
    #[arg(long, default_value_t = 3)]
    pub placement_rounds: usize,
    /// Admin connection to the second Postgres server of --placements 2 (the scratch database
    /// <database>_placement_2 is created through it); by default the benchmark starts a private
    /// cluster (initdb, pg_ctl) on a free port, with the main server's settings.
    #[arg(long)]
    pub placement_admin_url: Option<String>,

    /// Extra environment for both functions, e.g. --function-env BATCH_SIZE=512 (repeatable).
    #[arg(long = "function-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub function_env: Vec<(String, String)>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl Settings {
    /// The settings the run uses: the smoke sizes when `--smoke` is given.
    pub fn resolved(mut self) -> Self {
        if self.smoke {
            self.jetstream_count = 2_000;
            self.realtime_count = 2_000;
            self.latency_rate = 500.0;
            self.latency_seconds = 2;
            self.latency_settle = self.latency_settle.min(1);
            self.history_count = 20;
            self.warmup = 100;
            self.commit_timeout = self.commit_timeout.min(Duration::from_secs(60));
            self.tenants_sweep = vec![1, 4];
            self.full_sweep = false;
            self.sweep_count = 1_000;
            self.latency_tenants = vec![4, 16];
            self.burst_tenants = 20;
            self.rss_events = 500;
            self.placement_tenants = self.placement_tenants.min(8);
            self.placement_count = 1_000;
            self.placement_rounds = 1;
            self.tracing_count = 1_000;
            self.tracing_rounds = 1;
        }
        if self.full_sweep {
            self.tenants_sweep = FULL_SWEEP.to_vec();
        }
        for list in [&mut self.tenants_sweep, &mut self.latency_tenants] {
            list.retain(|&n| n > 0);
            list.sort_unstable();
            list.dedup();
        }
        self
    }

    /// A scratch database of the run: `<database>_<suffix>`.
    pub fn scratch_database(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.database)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.out_dir.clone().unwrap_or_else(|| {
            let dir = PathBuf::from("target/bench-report");
            if self.smoke {
                dir.join("smoke")
            } else {
                dir
            }
        })
    }

    /// History warm-up batches: a few are enough to create the partitions.
    pub fn history_warmup(&self) -> u64 {
        (self.warmup / 20).max(5)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "smoke": self.smoke,
            "database": self.database,
            "nats_url": self.nats_url,
            "tenants": self.tenants,
            "agents_per_tenant": self.agents_per_tenant,
            "company_prefix": self.company_prefix,
            "seed": self.seed,
            "jetstream_count": self.jetstream_count,
            "realtime_count": self.realtime_count,
            "raw_batch": self.raw_batch,
            "raw_history_group": self.raw_history_group,
            "raw_connections": self.raw_connections,
            "latency_rate": self.latency_rate,
            "latency_seconds": self.latency_seconds,
            "latency_settle_seconds": self.latency_settle,
            "latency_poll_ms": self.latency_poll.as_secs_f64() * 1e3,
            "history_count": self.history_count,
            "history_all_subjects": self.history_all_subjects,
            "warmup": self.warmup,
            "tenants_sweep": self.tenants_sweep,
            "sweep_agents_per_tenant": self.sweep_agents_per_tenant,
            "sweep_count": self.sweep_count,
            "sweep_raw_batch": self.sweep_raw_batch,
            "raw_schemas_per_tx": self.raw_schemas_per_tx,
            "latency_tenants": self.latency_tenants,
            "burst_tenants": self.burst_tenants,
            "burst_events_per_tenant": self.burst_events_per_tenant,
            "rss_events": self.rss_events,
            "tracing_count": self.tracing_count,
            "tracing_rounds": self.tracing_rounds,
            "placements": self.placements,
            "placement_tenants": self.placement_tenants,
            "placement_count": self.placement_count,
            "placement_rounds": self.placement_rounds,
            "sample_interval_ms": self.sample_interval.as_secs_f64() * 1e3,
            "function_env": self.function_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        })
    }
}

/// The tenant counts of SPEC §13's sweep.
pub const FULL_SWEEP: [usize; 5] = [1, 4, 64, 512, 2000];

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// CPUs this process may use.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_shrinks_every_phase_and_reports_apart() {
        let s = Settings::parse_from(["wa-bench-e2e", "--smoke"]).resolved();
        assert!(s.realtime_count <= 2_000 && s.history_count <= 20 && s.latency_seconds <= 2);
        assert_eq!(s.out_dir(), PathBuf::from("target/bench-report/smoke"));
        let full = Settings::parse_from(["wa-bench-e2e"]).resolved();
        assert_eq!(full.out_dir(), PathBuf::from("target/bench-report"));
    }

    #[test]
    fn the_sweep_is_sorted_and_the_full_one_is_the_spec_s() {
        let s = Settings::parse_from(["wa-bench-e2e"]).resolved();
        assert_eq!(s.tenants_sweep, vec![4, 64, 512]);
        assert_eq!(s.latency_tenants, vec![4, 256]);
        let s = Settings::parse_from(["wa-bench-e2e", "--tenants-sweep", "512,0,4,4"]).resolved();
        assert_eq!(s.tenants_sweep, vec![4, 512]);
        let s = Settings::parse_from(["wa-bench-e2e", "--full-sweep"]).resolved();
        assert_eq!(s.tenants_sweep, FULL_SWEEP.to_vec());
        let s = Settings::parse_from(["wa-bench-e2e", "--smoke", "--full-sweep"]).resolved();
        assert_eq!(s.tenants_sweep, vec![1, 4]);
        assert!(s.burst_tenants <= 20 && s.sweep_count <= 1_000);
    }

    #[test]
    fn function_env_is_key_value() {
        let s = Settings::parse_from(["wa-bench-e2e", "--function-env", "BATCH_SIZE=512"]);
        assert_eq!(s.function_env, vec![("BATCH_SIZE".into(), "512".into())]);
        assert!(parse_env("=1").is_err() && parse_env("X").is_err());
    }
}
