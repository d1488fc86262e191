//! What every function binary does: read settings, set up telemetry, connect, bind its
//! consumer, serve HTTP, and run until SIGTERM/SIGINT. Each `main.rs` names its [`FunctionSpec`].

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{ConfigError, DbSettings, Env, Var, COMMON_VARS};
use crate::dlq_retry::DlqRetry;
use crate::http::{self, Readiness};
use crate::metrics::{install_prometheus, CloudWatchSink, Emf, EventMetrics};
use crate::model::TenantId;
use crate::onboarding::Onboarding;
use crate::pipeline::{Handler, InboundEvent, Outcome, Processor, ProcessorSettings, Unavailable};
use crate::store::inbox;
use crate::telemetry::LogSettings;
use crate::transport::nats::NatsSettings;
use crate::transport::runner::{Runner, RunnerSettings};
use crate::transport::streams::{self, bind_consumer, ensure_stream, stream_specs, ConsumerSpec};
use futures::future::LocalBoxFuture;

/// What a function does with its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// Write events through the core (realtime, historical).
    Events,
    /// Re-run dead letters; record the exhausted ones.
    DlqRetry,
    /// Onboard first-time contacts.
    Onboarding,
}

/// A function: which stream it consumes, how, and its defaults.
#[derive(Debug, Clone, Copy)]
pub struct FunctionSpec {
    pub kind: FunctionKind,
    pub bin: &'static str,
    pub about: &'static str,
    pub consumer_type: &'static str,
    pub durable: &'static str,
    pub stream: &'static str,
    /// Subject filter for all tenants ("" = the whole stream); with `COMPANY_ID` the filter
    /// becomes `v1.*.*.<company>` (or this subject's base with the tenant).
    pub filter_base: Option<&'static str>,
    /// 0: one more than the backoff entries.
    pub max_deliver: u32,
    pub backoff_var: &'static str,
    pub backoff_secs: &'static [u64],
    pub http_port: u16,
    pub metrics_prefix: &'static str,
}

pub const REALTIME: FunctionSpec = FunctionSpec {
    kind: FunctionKind::Events,
    bin: "wa-realtime",
    about: "Consumes realtime WhatsApp events (chats, messages, contacts, agent status) into per-tenant Postgres schemas",
    consumer_type: "realtime",
    durable: "wa_realtime",
    stream: streams::REALTIME_STREAM,
    filter_base: None,
    max_deliver: 5,
    backoff_var: "BACKOFF",
    backoff_secs: &[1, 2, 4, 8],
    http_port: 8081,
    metrics_prefix: "message_event_service",
};

pub const HISTORICAL: FunctionSpec = FunctionSpec {
    kind: FunctionKind::Events,
    bin: "wa-historical",
    about: "Consumes history syncs (batches of chats, messages, contacts) into per-tenant Postgres schemas",
    consumer_type: "historical",
    durable: "wa_historical",
    stream: streams::HISTORY_STREAM,
    filter_base: None,
    max_deliver: 3,
    backoff_var: "BACKOFF",
    backoff_secs: &[2, 4],
    http_port: 8082,
    metrics_prefix: "message_event_service",
};

pub const DLQ_RETRY: FunctionSpec = FunctionSpec {
    kind: FunctionKind::DlqRetry,
    bin: "wa-dlq-retry",
    about: "Re-runs dead-lettered events under their own tenant; records the ones that cannot be saved in exhausted_events",
    consumer_type: "dlq_retry",
    durable: "wa_dlq_retry",
    stream: streams::DLQ_STREAM,
    filter_base: Some("v1.dlq"),
    max_deliver: 0,
    backoff_var: "DLQ_BACKOFF",
    backoff_secs: &[60, 120, 240, 480, 900],
    http_port: 8083,
    metrics_prefix: "dlq",
};

pub const ONBOARDING: FunctionSpec = FunctionSpec {
    kind: FunctionKind::Onboarding,
    bin: "wa-onboarding",
    about: "Onboards the first incoming message of every new phone: onboarding_log row and contact, campaign attribution",
    consumer_type: "onboarding",
    durable: "wa_onboarding",
    stream: streams::REALTIME_STREAM,
    filter_base: Some("v1.messages.upsert"),
    max_deliver: 5,
    backoff_var: "BACKOFF",
    backoff_secs: &[1, 2, 4, 8],
    http_port: 8084,
    metrics_prefix: "onboarding",
};

/// Variables of the standalone runner, beyond [`COMMON_VARS`].
pub const RUNNER_VARS: &[Var] = &[
    Var {
        name: "NATS_URL",
        default: "nats://127.0.0.1:4222",
        help: "NATS server(s), comma-separated",
    },
    Var {
        name: "NATS_USER / NATS_PASSWORD",
        default: "",
        help: "NATS user credentials",
    },
    Var {
        name: "NATS_TOKEN",
        default: "",
        help: "NATS token",
    },
    Var {
        name: "NATS_CREDS",
        default: "",
        help: "path of a NATS .creds file",
    },
    Var {
        name: "NATS_CREDS_CONTENT",
        default: "",
        help: "content of a NATS .creds file (instead of NATS_CREDS)",
    },
    Var {
        name: "BATCH_SIZE",
        default: "1024",
        help: "messages per fetch",
    },
    Var {
        name: "BATCH_MAX_WAIT",
        default: "500ms",
        help: "how long an empty fetch waits for messages",
    },
    Var {
        name: "BATCH_MAX_BYTES",
        default: "4194304",
        help: "bytes per fetch",
    },
    Var {
        name: "STREAM_REPLICAS",
        default: "1",
        help: "replicas of the streams (3 on a JetStream cluster)",
    },
    Var {
        name: "DLQ_MAX_AGE",
        default: "7d",
        help: "how long dead letters are kept in dlq_stream",
    },
    Var {
        name: "INBOX_RETENTION",
        default: "30d",
        help: "how long processed-message ids are kept for deduplication",
    },
    Var {
        name: "HTTP_PORT",
        default: "per function (8081..8085)",
        help: "port of /health, /ready, /metrics; 0 disables",
    },
    Var {
        name: "LOG_LEVEL",
        default: "info",
        help: "error, warn, info, debug, trace, or a tracing filter",
    },
    Var {
        name: "LOG_FORMAT",
        default: "json",
        help: "json or pretty",
    },
];

/// Everything a function reads from the environment.
#[derive(Debug, Clone)]
pub struct FunctionSettings {
    pub nats: NatsSettings,
    pub db: DbSettings,
    pub processor: ProcessorSettings,
    pub company: Option<TenantId>,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub batch_max_bytes: usize,
    pub stream_replicas: usize,
    pub dlq_max_age: Duration,
    pub inbox_retention: Duration,
    pub http_port: u16,
    pub log: LogSettings,
    pub metrics: MetricsSink,
}

/// Where metrics go besides `/metrics` (Lambda mode always writes EMF log lines).
#[derive(Debug, Clone)]
pub enum MetricsSink {
    Prometheus {
        namespace: String,
    },
    CloudWatch {
        namespace: String,
        endpoint: Option<String>,
        every: Duration,
    },
}

impl MetricsSink {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let namespace = env
            .get("METRICS_NAMESPACE")
            .unwrap_or("WAEventsProcessor")
            .to_owned();
        match env
            .get("METRICS_SINK")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("prometheus") => Ok(MetricsSink::Prometheus { namespace }),
            Some("cloudwatch") => Ok(MetricsSink::CloudWatch {
                namespace,
                endpoint: env.get("CLOUDWATCH_ENDPOINT").map(str::to_owned),
                every: env.duration("METRICS_FLUSH_INTERVAL", Duration::from_secs(60))?,
            }),
            Some(other) => Err(ConfigError {
                var: "METRICS_SINK",
                value: other.to_owned(),
                reason: "expected prometheus or cloudwatch".into(),
            }),
        }
    }
}

impl FunctionSettings {
    pub fn from_env(spec: &FunctionSpec, env: &Env) -> Result<Self, ConfigError> {
        let backoff: Vec<Duration> = spec
            .backoff_secs
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        let batch_size = env.parse("BATCH_SIZE", 1024usize)?;
        if batch_size == 0 {
            return Err(ConfigError {
                var: "BATCH_SIZE",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let stream_replicas = env.parse("STREAM_REPLICAS", 1usize)?;
        if !(1..=5).contains(&stream_replicas) {
            return Err(ConfigError {
                var: "STREAM_REPLICAS",
                value: stream_replicas.to_string(),
                reason: "must be 1 to 5".into(),
            });
        }
        Ok(FunctionSettings {
            nats: NatsSettings::from_env(env, spec.bin)?,
            db: env.db()?,
            processor: env.processor_with(spec.backoff_var, spec.max_deliver, &backoff)?,
            company: env.company()?,
            batch_size,
            batch_max_wait: env.duration("BATCH_MAX_WAIT", Duration::from_millis(500))?,
            batch_max_bytes: env.parse("BATCH_MAX_BYTES", 4 * 1024 * 1024usize)?,
            stream_replicas,
            dlq_max_age: env.duration("DLQ_MAX_AGE", Duration::from_secs(7 * 86400))?,
            inbox_retention: env.duration("INBOX_RETENTION", Duration::from_secs(30 * 86400))?,
            http_port: env.parse("HTTP_PORT", spec.http_port)?,
            log: LogSettings::from_env(env)?,
            metrics: MetricsSink::from_env(env)?,
        })
    }

    /// The durable consumer this function binds.
    pub fn consumer(&self, spec: &FunctionSpec) -> ConsumerSpec {
        let (durable, filter) = match (&self.company, spec.filter_base) {
            (None, None) => (spec.durable.to_owned(), String::new()),
            (None, Some(base)) => (spec.durable.to_owned(), format!("{base}.*")),
            (Some(t), None) => (format!("{}_{t}", spec.durable), format!("v1.*.*.{t}")),
            (Some(t), Some(base)) => (format!("{}_{t}", spec.durable), format!("{base}.{t}")),
        };
        ConsumerSpec {
            stream: spec.stream,
            durable,
            filter,
            max_deliver: self.processor.max_deliver,
            backoff: self.processor.backoff.clone(),
            max_ack_pending: (self.batch_size as i64 * 4).max(1000),
        }
    }
}

/// `--help` text: every variable with its default.
pub fn variables_help(extra: &[Var]) -> String {
    let mut out = String::from("Configuration (environment variables):\n");
    for v in COMMON_VARS.iter().chain(RUNNER_VARS).chain(extra) {
        let default = if v.default.is_empty() {
            "unset".to_owned()
        } else {
            v.default.to_owned()
        };
        out.push_str(&format!(
            "  {:<26} {} [default: {}]\n",
            v.name, v.help, default
        ));
    }
    out.push_str(
        "\nWith AWS_LAMBDA_RUNTIME_API set, the function runs as an AWS Lambda handler.\n",
    );
    out
}

/// Parses the command line: only `--help` and `--version` exist.
pub fn parse_args(bin: &'static str, about: &'static str, extra: &[Var]) {
    clap::Command::new(bin)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(variables_help(extra))
        .get_matches();
}

/// Entry point of a function binary.
pub fn main(spec: &FunctionSpec) -> ExitCode {
    parse_args(spec.bin, spec.about, &[]);
    let settings = match FunctionSettings::from_env(spec, &Env::from_process()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: configuration error: {e}", spec.bin);
            return ExitCode::from(2);
        }
    };
    settings.log.init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        runtime.block_on(run_lambda(spec, settings))
    } else {
        runtime.block_on(run_standalone(spec, settings))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "{} failed", spec.bin);
            ExitCode::FAILURE
        }
    }
}

/// A Postgres pool that connects on demand (an unreachable database holds batches, it does
/// not stop the process).
pub fn lazy_pool(db: &DbSettings) -> Result<PgPool, String> {
    PgPoolOptions::new()
        .max_connections(db.pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&db.url)
        .map_err(|e| format!("DATABASE_URL: {e}"))
}

/// A watch that turns true on SIGTERM or SIGINT.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutdown requested; finishing the batch in hand");
        let _ = tx.send(true);
    });
    rx
}

/// Connects to NATS, retrying until it answers or shutdown is requested.
pub async fn connect_nats(
    settings: &NatsSettings,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<async_nats::Client> {
    let mut attempt = 0u32;
    loop {
        match settings.connect().await {
            Ok(client) => return Some(client),
            Err(e) => {
                attempt += 1;
                warn!(url = %settings.url, error = %e, attempt, "NATS not reachable yet");
                let pause = Duration::from_millis(500 * u64::from(attempt.min(10)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Runs a function as a standalone JetStream pull consumer until shutdown.
pub async fn run_standalone(spec: &FunctionSpec, settings: FunctionSettings) -> Result<(), String> {
    let mut shutdown = shutdown_signal();
    let prometheus = install_prometheus()?;
    let pool = lazy_pool(&settings.db)?;
    let ready = Readiness::new(Some(pool.clone()), Some(prometheus));
    if settings.http_port != 0 {
        http::serve(settings.http_port, ready.clone())
            .await
            .map_err(|e| format!("HTTP_PORT {}: {e}", settings.http_port))?;
    }
    let Some(client) = connect_nats(&settings.nats, &mut shutdown).await else {
        return Ok(());
    };
    let _ = ready.nats.set(client.clone());
    let js = async_nats::jetstream::new(client.clone());
    let consumer_spec = settings.consumer(spec);
    let consumer = setup(&js, &settings, &consumer_spec, &mut shutdown).await?;
    let Some(consumer) = consumer else {
        return Ok(());
    };
    ready.bound.store(true, Ordering::Relaxed);
    tokio::spawn(prune_inboxes(pool.clone(), settings.inbox_retention));
    info!(bin = spec.bin, consumer = %consumer_spec.durable, stream = spec.stream, filter = %consumer_spec.filter, "started");

    let processor = Arc::new(Processor::new(pool, settings.processor.clone()));
    let keepalive = consumer_spec
        .backoff
        .first()
        .copied()
        .unwrap_or(Duration::from_secs(30))
        / 2;
    let runner_settings = RunnerSettings {
        consumer: consumer_spec.durable.clone(),
        consumer_type: spec.consumer_type,
        batch_size: settings.batch_size,
        batch_max_wait: settings.batch_max_wait,
        batch_max_bytes: settings.batch_max_bytes,
        keepalive,
        only_tenant: settings.company.as_ref().map(|t| t.as_str().to_owned()),
    };
    let mut metrics = EventMetrics::new(spec.metrics_prefix, spec.consumer_type);
    if let MetricsSink::CloudWatch {
        namespace,
        endpoint,
        every,
    } = &settings.metrics
    {
        let sink = Arc::new(CloudWatchSink::new(namespace.clone(), endpoint.clone()).await);
        sink.clone().spawn_flusher(*every);
        metrics = metrics.with_cloudwatch(sink);
    }
    let handler = Arc::new(FunctionHandler::new(spec.kind, processor));
    Runner {
        client,
        js,
        consumer,
        handler,
        settings: runner_settings,
        metrics,
    }
    .run(shutdown)
    .await;
    Ok(())
}

/// The handler of a function, whichever kind it is.
pub enum FunctionHandler {
    Events(Arc<Processor>),
    DlqRetry(DlqRetry),
    Onboarding(Onboarding),
}

impl FunctionHandler {
    pub fn new(kind: FunctionKind, processor: Arc<Processor>) -> Self {
        match kind {
            FunctionKind::Events => FunctionHandler::Events(processor),
            FunctionKind::DlqRetry => {
                let (pool, settings) = (processor.pool().clone(), processor.settings().clone());
                FunctionHandler::DlqRetry(DlqRetry::new(processor, pool, settings))
            }
            FunctionKind::Onboarding => FunctionHandler::Onboarding(Onboarding::new(
                processor.pool().clone(),
                processor.settings().clone(),
            )),
        }
    }
}

impl Handler for FunctionHandler {
    fn handle<'a>(
        &'a self,
        events: &'a [InboundEvent],
    ) -> LocalBoxFuture<'a, Result<Vec<Outcome>, Unavailable>> {
        match self {
            FunctionHandler::Events(p) => p.handle(events),
            FunctionHandler::DlqRetry(h) => h.handle(events),
            FunctionHandler::Onboarding(h) => h.handle(events),
        }
    }

    fn max_deliver(&self) -> u32 {
        match self {
            FunctionHandler::Events(p) => p.max_deliver(),
            FunctionHandler::DlqRetry(h) => h.max_deliver(),
            FunctionHandler::Onboarding(h) => h.max_deliver(),
        }
    }
}

/// Runs a function as an AWS Lambda handler: resources are built once per instance, the
/// Postgres pool holds one or two connections, the bridge does the acking.
pub async fn run_lambda(spec: &FunctionSpec, settings: FunctionSettings) -> Result<(), String> {
    let db = DbSettings {
        pool_size: settings.db.pool_size.clamp(1, 2),
        ..settings.db.clone()
    };
    let pool = lazy_pool(&db)?;
    let processor = Arc::new(Processor::new(pool, settings.processor.clone()));
    let handler = Arc::new(FunctionHandler::new(spec.kind, processor));
    let namespace = match &settings.metrics {
        MetricsSink::CloudWatch { namespace, .. } | MetricsSink::Prometheus { namespace } => {
            namespace.clone()
        }
    };
    let emf = Emf {
        namespace,
        prefix: spec.metrics_prefix.to_owned(),
        consumer_type: spec.consumer_type,
    };
    info!(bin = spec.bin, "serving Lambda invocations");
    crate::lambda::serve(handler, emf)
        .await
        .map_err(|e| e.to_string())
}

/// Streams and the consumer; transient broker errors are retried, a lasting refusal is an error.
pub async fn setup(
    js: &async_nats::jetstream::Context,
    settings: &FunctionSettings,
    consumer: &ConsumerSpec,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<async_nats::jetstream::consumer::PullConsumer>, String> {
    let mut attempt = 0u32;
    loop {
        let result = async {
            for s in stream_specs(settings.stream_replicas, settings.dlq_max_age) {
                ensure_stream(js, &s).await?;
            }
            bind_consumer(js, consumer).await
        }
        .await;
        match result {
            Ok(c) => return Ok(Some(c)),
            Err(e) if attempt < 10 => {
                attempt += 1;
                warn!(error = %e, attempt, "setting up streams and consumer");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(None),
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Forgets processed-message ids older than the retention, now and every six hours.
async fn prune_inboxes(pool: PgPool, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        tick.tick().await;
        match inbox::prune_all(&pool, retention).await {
            Ok(n) if n > 0 => info!(rows = n, "pruned inbox rows"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "pruning inbox rows"),
        }
    }
}
