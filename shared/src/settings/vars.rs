//! Every variable a function reads, declared once: clap derives parsing, `--help` and the
//! defaults from these declarations (a variable whose default depends on the function gets it
//! from that function's [`Defaults`](crate::functions::Defaults)). Each option can also be given
//! on the command line (`--batch-size 256`), which wins over the environment.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, ValueEnum};

use super::values::{duration, durations, existing_file, log_filter, nats_url, postgres_url};
use super::values::{otlp_endpoint, sample_ratio};
use super::values::{tenant, tenant_databases, tenant_list, Backoff, Secret, TenantDatabases};
use crate::model::TenantId;

/// The default `DATABASE_URL`: the local Postgres.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// What every function binary reads.
#[derive(Debug, Clone, Parser)]
#[command(version, disable_help_subcommand = true)]
pub struct FunctionVars {
    #[command(flatten)]
    pub nats: NatsVars,
    #[command(flatten)]
    pub db: DbVars,
    #[command(flatten)]
    pub tenants: TenantVars,
    #[command(flatten)]
    pub delivery: DeliveryVars,
    #[command(flatten)]
    pub fetch: FetchVars,
    #[command(flatten)]
    pub streams: StreamVars,
    #[command(flatten)]
    pub ops: OpsVars,
    #[command(flatten)]
    pub traces: TraceVars,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "NATS")]
pub struct NatsVars {
    /// NATS server(s), comma-separated
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", hide_env_values = true, value_parser = nats_url)]
    pub nats_url: Secret,
    /// NATS user (with NATS_PASSWORD)
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// NATS password (with NATS_USER)
    #[arg(
        long,
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<Secret>,
    /// NATS token
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Secret>,
    /// path of a NATS .creds file
    #[arg(long, env = "NATS_CREDS", value_parser = existing_file)]
    pub nats_creds: Option<PathBuf>,
    /// content of a NATS .creds file (instead of NATS_CREDS)
    #[arg(long, env = "NATS_CREDS_CONTENT", hide_env_values = true)]
    pub nats_creds_content: Option<Secret>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Postgres")]
pub struct DbVars {
    /// Postgres connection URL (alias: POSTGRES_DSN)
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true, value_parser = postgres_url)]
    pub database_url: Secret,
    /// alias of DATABASE_URL (used when DATABASE_URL is not set)
    #[arg(long, env = "POSTGRES_DSN", hide_env_values = true, value_parser = postgres_url)]
    pub postgres_dsn: Option<Secret>,
    /// Postgres connections per process
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,
    /// tenants whose write statements each connection keeps prepared, planned once
    /// (about 1 MB of server memory per tenant and connection; 0: none)
    #[arg(long, env = "DB_PREPARED_TENANTS", default_value_t = 256)]
    pub db_prepared_tenants: u32,
    /// connections per process (and per placement) creating and migrating new tenants'
    /// schemas, each preparing one tenant at a time
    #[arg(long, env = "DB_SCHEMA_CONNECTIONS", default_value_t = crate::store::schema::SCHEMA_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_schema_connections: u32,
    /// create and migrate tenant schemas on first use
    #[arg(long, env = "DB_AUTO_MIGRATE", default_value = "true", action = clap::ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub db_auto_migrate: bool,
    /// how long a write waits for a lock before the batch is held and retried
    #[arg(long, env = "DB_LOCK_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub db_lock_timeout: Duration,
    /// placements besides the default (DATABASE_URL) that tenants can live on,
    /// name=postgres://… comma-separated (e.g. eu=postgres://…,us=postgres://…)
    #[arg(long, env = "TENANT_DATABASES", hide_env_values = true, value_parser = tenant_databases)]
    pub tenant_databases: Option<TenantDatabases>,
}

impl DbVars {
    /// The database: `DATABASE_URL`, or its alias `POSTGRES_DSN` when only that is set.
    pub fn url(&self) -> &Secret {
        match &self.postgres_dsn {
            Some(dsn) if self.database_url.expose() == DEFAULT_DATABASE_URL => dsn,
            _ => &self.database_url,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Tenants")]
pub struct TenantVars {
    /// serve this tenant only (consumer names get a _<company_id> suffix)
    #[arg(long, env = "COMPANY_ID", value_parser = tenant)]
    pub company_id: Option<TenantId>,
    /// comma-separated tenants to serve; others are dead-lettered (unset: all)
    #[arg(long, env = "TENANT_ALLOWLIST", value_parser = tenant_list)]
    pub tenant_allowlist: Option<BTreeSet<String>>,
}

/// Redelivery: `MAX_DELIVER` and `BACKOFF` default per function, and dlq-retry reads its
/// backoff from `DLQ_BACKOFF` (see [`crate::functions::Defaults`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Delivery")]
pub struct DeliveryVars {
    /// processing attempts before a transient failure is dead-lettered (the server itself never
    /// gives up on a message)
    #[arg(long, env = "MAX_DELIVER", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_deliver: Option<u32>,
    /// delays before each retry (NAK delays), comma-separated durations (fewer entries than
    /// MAX_DELIVER)
    #[arg(long, env = "BACKOFF", value_parser = durations)]
    pub backoff: Option<Backoff>,
    /// a transient failure is dead-lettered no sooner than this after its first attempt
    /// (longer than the 30 s ack wait, so an event waiting for one that a crash or a failover
    /// holds back is not dead-lettered because of the fault)
    #[arg(long, env = "RETRY_WINDOW", default_value = "45s", value_parser = duration)]
    pub retry_window: Duration,
    /// larger bodies are dead-lettered unparsed (too_large)
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Fetching")]
pub struct FetchVars {
    /// messages per fetch
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// how long an empty fetch waits for messages (at least 250ms)
    #[arg(long, env = "BATCH_MAX_WAIT", default_value = "500ms", value_parser = duration)]
    pub batch_max_wait: Duration,
    /// bytes per fetch
    #[arg(long, env = "BATCH_MAX_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub batch_max_bytes: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Streams")]
pub struct StreamVars {
    /// replicas of the streams (3 on a JetStream cluster), applied to existing streams too;
    /// unset: a new stream gets 1 and an existing one keeps its own
    #[arg(long, env = "STREAM_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: Option<u8>,
    /// how long dead letters are kept in dlq_stream, applied to an existing stream too; unset:
    /// a new stream gets 7d and an existing one keeps a longer age
    #[arg(long, env = "DLQ_MAX_AGE", value_parser = duration)]
    pub dlq_max_age: Option<Duration>,
    /// how long processed-message ids are kept for deduplication
    #[arg(long, env = "INBOX_RETENTION", default_value = "30d", value_parser = duration)]
    pub inbox_retention: Duration,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operations")]
pub struct OpsVars {
    /// port of /health, /ready, /metrics; 0 disables
    #[arg(long, env = "HTTP_PORT")]
    pub http_port: Option<u16>,
    /// error, warn, info, debug, trace, or a tracing filter
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = log_filter)]
    pub log_level: String,
    /// log lines as JSON or for people
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "json",
        value_enum,
        ignore_case = true
    )]
    pub log_format: LogFormat,
    /// where metrics go besides /metrics: prometheus only, or CloudWatch PutMetricData too
    #[arg(
        long,
        env = "METRICS_SINK",
        default_value = "prometheus",
        value_enum,
        ignore_case = true
    )]
    pub metrics_sink: SinkKind,
    /// CloudWatch namespace (sink and EMF)
    #[arg(long, env = "METRICS_NAMESPACE", default_value = "WAEventsProcessor")]
    pub metrics_namespace: String,
    /// how often the CloudWatch sink sends
    #[arg(long, env = "METRICS_FLUSH_INTERVAL", default_value = "60s", value_parser = duration)]
    pub metrics_flush_interval: Duration,
    /// CloudWatch endpoint URL (unset: AWS)
    #[arg(long, env = "CLOUDWATCH_ENDPOINT")]
    pub cloudwatch_endpoint: Option<String>,
}

/// OpenTelemetry traces: the standard variables (README: Traces).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Traces")]
pub struct TraceVars {
    /// OTLP/HTTP receiver (spans go to <endpoint>/v1/traces); unset: no traces
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_env_values = true, value_parser = otlp_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// service.name of the spans (default: the binary's name)
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// share of the traces started here that are recorded, 0 to 1 (a trace continued from a
    /// traceparent header follows its sampled flag)
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value = "1.0", value_parser = sample_ratio)]
    pub otel_traces_sampler_arg: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    #[value(alias = "text")]
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkKind {
    Prometheus,
    Cloudwatch,
}
