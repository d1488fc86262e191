//! Startup and shutdown, shared by every long-running binary: the function binaries (through
//! [`main`]) and the bridge (through [`start`] and [`bind_runners`]).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Context;
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::functions::{FunctionHandler, FunctionKind, FunctionSpec};
use crate::http::{self, Notices, Readiness};
#[cfg(feature = "cloudwatch")]
use crate::metrics::CloudWatchSink;
use crate::metrics::{install_prometheus, register_exhausted, EventMetrics};
use crate::pipeline::Handler;
#[cfg(feature = "cloudwatch")]
use crate::settings::MetricsSink;
use crate::settings::{DbSettings, Settings};
use crate::store::placement::Placements;
use crate::store::{attempts, inbox};
use crate::transport::nats::NatsSettings;
use crate::transport::runner::{Runner, RunnerSettings};
use crate::transport::streams::{
    bind_consumer, configured_specs, consumer_filters, ensure_stream, ConsumerSpec, SetupError,
    KEEPALIVE,
};

/// Why a process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("installing the Prometheus recorder: {0}")]
    Prometheus(#[from] metrics_exporter_prometheus::BuildError),
    #[error("HTTP_PORT {port}: {source}")]
    Http { port: u16, source: std::io::Error },
    #[error("DATABASE_URL: {0}")]
    Database(#[source] sqlx::Error),
    #[error(transparent)]
    Broker(#[from] SetupError),
    #[error("Lambda runtime: {0}")]
    Lambda(String),
}

/// Entry point of a function binary: settings, logs, then standalone or Lambda mode.
pub fn main(spec: &'static FunctionSpec) -> ExitCode {
    let settings = Settings::load(spec);
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let result = runtime().block_on(async {
        let telemetry = settings.log.init();
        let result = if lambda {
            crate::lambda::run(spec, settings).await
        } else {
            run_standalone(spec, settings).await
        };
        telemetry.shutdown().await;
        result
    });
    exit(spec.bin, result)
}

/// The multi-threaded runtime every binary runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The exit code of a process that ran to its end (errors are logged here, once).
pub fn exit(bin: &str, result: Result<(), StartupError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "{bin} failed");
            ExitCode::FAILURE
        }
    }
}

/// A Postgres pool that connects on demand (an unreachable database holds batches, it does
/// not stop the process).
pub fn lazy_pool(db: &DbSettings) -> Result<PgPool, StartupError> {
    crate::store::prepared::set_tenants_per_connection(db.prepared_tenants);
    crate::store::schema::set_schema_connections(db.schema_connections);
    crate::store::connect_lazy(db.url.expose(), db.pool_size).map_err(StartupError::Database)
}

/// A process that has started: signals watched, `/health` served, NATS connected.
pub struct Started {
    pub client: async_nats::Client,
    pub js: Context,
    pub ready: Arc<Readiness>,
    pub shutdown: watch::Receiver<bool>,
}

/// What every long-running process does first: watch SIGTERM/SIGINT, install the Prometheus
/// recorder, serve HTTP (unless `HTTP_PORT` is 0), connect to NATS. `None` when shutdown is
/// requested before NATS answers.
pub async fn start(
    settings: &Settings,
    pool: Option<PgPool>,
) -> Result<Option<Started>, StartupError> {
    let mut shutdown = shutdown_signal();
    let prometheus = install_prometheus()?;
    let ready = Readiness::new(pool, Some(prometheus));
    ready.spawn_ready_gauge(&settings.nats.name, READY_EVERY);
    if settings.http_port != 0 {
        http::serve(settings.http_port, ready.clone())
            .await
            .map_err(|source| StartupError::Http {
                port: settings.http_port,
                source,
            })?;
    }
    let Some(client) = connect_nats(&settings.nats, &mut shutdown).await else {
        return Ok(None);
    };
    let _ = ready.nats.set(client.clone());
    let js = async_nats::jetstream::new(client.clone());
    Ok(Some(Started {
        client,
        js,
        ready,
        shutdown,
    }))
}

/// How often the readiness gauge is brought up to date (the readiness check pings Postgres).
const READY_EVERY: Duration = Duration::from_secs(5);

/// One consumer to run: the function whose consumer it binds (with that function's settings),
/// the handler its batches go to, and how many runners share it.
pub struct Binding<H> {
    pub spec: &'static FunctionSpec,
    pub settings: Settings,
    pub handler: Arc<H>,
    pub metrics: EventMetrics,
    pub runners: usize,
}

/// Sets up the streams, binds every consumer, reports ready, and runs the runners until
/// shutdown. `base` holds the process-wide settings (streams, fetching).
pub async fn bind_runners<H: Handler>(
    started: Started,
    base: &Settings,
    bindings: Vec<Binding<H>>,
) -> Result<(), StartupError> {
    let Started {
        client,
        js,
        ready,
        mut shutdown,
    } = started;
    if setup_streams(&js, base, &ready.notices, &mut shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let mut runners = Vec::new();
    for b in bindings {
        let spec = b.spec.consumer(&b.settings);
        let Some(consumer) = setup_consumer(&js, &spec, &mut shutdown).await? else {
            return Ok(());
        };
        let filters = consumer_filters(&consumer.cached_info().config);
        info!(function = b.spec.bin, consumer = %spec.durable, stream = spec.stream, filters = ?filters, "consumer bound");
        b.metrics.register();
        let settings = RunnerSettings {
            consumer: spec.durable.clone(),
            consumer_type: b.spec.consumer_type,
            batch_size: base.batch_size,
            batch_max_wait: base.batch_max_wait,
            batch_max_bytes: base.batch_max_bytes,
            keepalive: KEEPALIVE,
            only_tenant: base.company.clone(),
            max_deliver: b.settings.processor.max_deliver,
        };
        runners.extend((0..b.runners.max(1)).map(|_| Runner {
            client: client.clone(),
            js: js.clone(),
            consumer: consumer.clone(),
            handler: b.handler.clone(),
            settings: settings.clone(),
            metrics: b.metrics.clone(),
        }));
    }
    ready.bound.store(true, Ordering::Relaxed);
    info!(runners = runners.len(), "started");
    futures::future::join_all(runners.into_iter().map(|r| r.run(shutdown.clone()))).await;
    Ok(())
}

/// Runs a function as a standalone JetStream pull consumer until shutdown.
pub async fn run_standalone(
    spec: &'static FunctionSpec,
    settings: Settings,
) -> Result<(), StartupError> {
    let pool = lazy_pool(&settings.db)?;
    let Some(started) = start(&settings, Some(pool.clone())).await? else {
        return Ok(());
    };
    tokio::spawn(prune_inboxes(
        Arc::new(Placements::new(
            pool.clone(),
            &settings.processor.tenant_databases,
        )),
        settings.inbox_retention,
    ));
    if spec.kind == FunctionKind::DlqRetry {
        register_exhausted();
    }
    let metrics = EventMetrics::new(spec.metrics_prefix, spec.consumer_type);
    #[cfg(feature = "cloudwatch")]
    let metrics = match &settings.metrics {
        MetricsSink::CloudWatch {
            namespace,
            endpoint,
            every,
        } => {
            let sink = Arc::new(CloudWatchSink::new(namespace.clone(), endpoint.clone()).await);
            sink.clone().spawn_flusher(*every);
            metrics.with_cloudwatch(sink)
        }
        MetricsSink::Prometheus { .. } => metrics,
    };
    let binding = Binding {
        spec,
        settings: settings.clone(),
        handler: Arc::new(FunctionHandler::with_notices(
            spec.kind,
            pool,
            settings.processor.clone(),
            started.ready.notices.clone(),
        )),
        metrics,
        runners: 1,
    };
    bind_runners(started, &settings, vec![binding]).await
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
async fn connect_nats(
    settings: &NatsSettings,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<async_nats::Client> {
    let mut attempt = 0u32;
    loop {
        match settings.connect().await {
            Ok(client) => return Some(client),
            Err(e) => {
                attempt += 1;
                warn!(url = %settings.url.redacted(), error = %e, attempt, "NATS not reachable yet");
                let pause = Duration::from_millis(500 * u64::from(attempt.min(10)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Creates or reconciles the streams (SPEC §1). What reconciling changed or kept is logged;
/// what it left different because changing it is not safe is logged and shown on `/ready` as a
/// notice, and the process runs on. `None` when shutdown is requested meanwhile.
async fn setup_streams(
    js: &Context,
    settings: &Settings,
    notices: &Notices,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<()>, SetupError> {
    let specs = &configured_specs(settings.stream_replicas, settings.dlq_max_age);
    let reconcile = move || async move {
        let mut done = Vec::new();
        for spec in specs {
            done.push(ensure_stream(js, spec).await?);
        }
        Ok(done)
    };
    let Some(reconciled) = retrying("setting up the streams", shutdown, reconcile).await? else {
        return Ok(None);
    };
    for r in reconciled {
        r.log();
        let key = format!("stream:{}", r.stream);
        match r.notice() {
            Some(text) => notices.set(key, text),
            None => notices.clear(&key),
        }
    }
    Ok(Some(()))
}

/// Creates or updates the durable consumer in place.
async fn setup_consumer(
    js: &Context,
    spec: &ConsumerSpec,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<PullConsumer>, SetupError> {
    retrying("binding the consumer", shutdown, move || {
        bind_consumer(js, spec)
    })
    .await
}

/// Runs `step` until it succeeds: a transient broker error (a leader election, a server
/// restarting) is retried for ten seconds, a lasting one is returned. `None` on shutdown.
async fn retrying<T, F, Fut>(
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
    mut step: F,
) -> Result<Option<T>, SetupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SetupError>>,
{
    let mut attempt = 0u32;
    loop {
        match step().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if attempt < 10 => {
                attempt += 1;
                warn!(error = %e, attempt, "{what}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prunes the inboxes of every placement now and every six hours ([`prune_once`]).
async fn prune_inboxes(placements: Arc<Placements>, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        tick.tick().await;
        match prune_once(&placements, retention).await {
            Ok(pruned) => pruned.log(),
            Err(e) => warn!(error = %e, "pruning inboxes"),
        }
    }
}

/// What one pruning pass removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pruned {
    /// Inbox rows removed, per tenant schema.
    pub inbox: Vec<SchemaPruned>,
    /// Their sum.
    pub inbox_rows: u64,
    /// Processing attempts removed (`wa_system.delivery_attempts`).
    pub attempt_rows: u64,
}

/// The inbox rows one pruning pass removed from one tenant schema.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemaPruned {
    pub schema: String,
    /// The placement whose database holds the schema.
    pub placement: String,
    pub rows: u64,
}

impl Pruned {
    /// One line at INFO when anything was removed.
    pub fn log(&self) {
        if self.inbox_rows + self.attempt_rows > 0 {
            info!(
                inbox_rows = self.inbox_rows,
                schemas = self.inbox.iter().filter(|s| s.rows > 0).count(),
                attempt_rows = self.attempt_rows,
                "pruned inboxes"
            );
        }
    }
}

/// Forgets processed-message ids (every tenant's inbox, on every placement's database) and
/// processing attempts (on the main database) older than `retention`: beyond the streams' max
/// age nothing can be redelivered. The one pruning pass, run by the standalone functions every
/// six hours, by a scheduled Lambda invocation ([`crate::lambda::Invocation::Prune`]) and by
/// `wa-admin prune`. Every part is attempted; the first error is returned.
pub async fn prune_once(
    placements: &Placements,
    retention: Duration,
) -> Result<Pruned, sqlx::Error> {
    let mut inbox = Vec::new();
    let mut failed = None;
    for name in placements.names() {
        let pruned = match placements.db(&name) {
            Ok(db) => inbox::prune_all(&db.pool, retention).await,
            Err(e) => Err(sqlx::Error::Configuration(Box::new(e))),
        };
        match pruned {
            Ok(schemas) => inbox.extend(schemas.into_iter().map(|(schema, rows)| SchemaPruned {
                schema,
                placement: name.clone(),
                rows,
            })),
            Err(e) => {
                warn!(placement = %name, error = %e, "pruning the inboxes of a placement");
                failed.get_or_insert(e);
            }
        }
    }
    let attempts = attempts::prune(&placements.main().pool, retention).await;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Pruned {
        inbox_rows: inbox.iter().map(|s| s.rows).sum(),
        inbox,
        attempt_rows: attempts?,
    })
}
