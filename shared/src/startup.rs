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

use crate::functions::{FunctionHandler, FunctionSpec};
use crate::http::{self, Readiness};
#[cfg(feature = "cloudwatch")]
use crate::metrics::CloudWatchSink;
use crate::metrics::{install_prometheus, EventMetrics};
use crate::pipeline::Handler;
#[cfg(feature = "cloudwatch")]
use crate::settings::MetricsSink;
use crate::settings::{DbSettings, Settings};
use crate::store::{attempts, inbox};
use crate::transport::nats::NatsSettings;
use crate::transport::runner::{Runner, RunnerSettings};
use crate::transport::streams::{
    bind_consumer, ensure_stream, stream_specs, SetupError, KEEPALIVE,
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
    settings.log.init();
    let lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let result = runtime().block_on(async {
        if lambda {
            crate::lambda::run(spec, settings).await
        } else {
            run_standalone(spec, settings).await
        }
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
    let mut runners = Vec::new();
    for b in bindings {
        let spec = b.spec.consumer(&b.settings);
        let Some(consumer) = setup(&js, base, &spec, &mut shutdown).await? else {
            return Ok(());
        };
        info!(function = b.spec.bin, consumer = %spec.durable, stream = spec.stream, filter = %spec.filter, "consumer bound");
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
    tokio::spawn(prune_inboxes(pool.clone(), settings.inbox_retention));
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
        handler: Arc::new(FunctionHandler::new(
            spec.kind,
            pool,
            settings.processor.clone(),
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

/// Streams and the consumer; transient broker errors are retried, a lasting refusal is an error.
async fn setup(
    js: &Context,
    settings: &Settings,
    consumer: &crate::transport::streams::ConsumerSpec,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<PullConsumer>, SetupError> {
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
            Err(e) => return Err(e),
        }
    }
}

/// Forgets processed-message ids and processing attempts older than the retention, now and
/// every six hours.
async fn prune_inboxes(pool: PgPool, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        tick.tick().await;
        match inbox::prune_all(&pool, retention).await {
            Ok(n) if n > 0 => info!(rows = n, "pruned inbox rows"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "pruning inbox rows"),
        }
        match attempts::prune(&pool, retention).await {
            Ok(n) if n > 0 => info!(rows = n, "pruned processing attempts"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "pruning processing attempts"),
        }
    }
}
