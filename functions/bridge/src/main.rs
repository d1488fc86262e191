//! `wa-bridge`: pulls batches from the functions' durable consumers and invokes the functions
//! through the AWS Lambda Invoke API, then acks, naks or dead-letters exactly as the standalone
//! runner does. The only component that needs NATS in a Lambda deployment.

mod invoker;
mod routes;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};
use wa_shared::app::{self, connect_nats, setup, shutdown_signal, FunctionSettings};
use wa_shared::config::{Env, Var};
use wa_shared::http::{self, Readiness};
use wa_shared::metrics::{install_prometheus, EventMetrics};
use wa_shared::transport::runner::{Runner, RunnerSettings};

use invoker::LambdaInvoker;
use routes::Route;

const ABOUT: &str = "Bridges JetStream to AWS Lambda: pulls batches from the functions' consumers and invokes the functions";

const BRIDGE_VARS: &[Var] = &[
    Var { name: "BRIDGE_ROUTES", default: routes::DEFAULT_ROUTES, help: "function=lambda-name pairs (functions: realtime, historical, dlq-retry, onboarding)" },
    Var { name: "BRIDGE_CONCURRENCY", default: "1", help: "concurrent invocations per route" },
    Var { name: "BRIDGE_INVOKE_TIMEOUT", default: "60s", help: "an invocation taking longer is retried" },
    Var { name: "LAMBDA_ENDPOINT", default: "", help: "Lambda API endpoint (e.g. a local emulator); AWS_* variables give region and credentials" },
];

fn main() -> ExitCode {
    app::parse_args("wa-bridge", ABOUT, BRIDGE_VARS);
    let env = Env::from_process();
    let settings = match Settings::from_env(&env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wa-bridge: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    settings.base.log.init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "wa-bridge failed");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    base: FunctionSettings,
    routes: Vec<(Route, FunctionSettings)>,
    concurrency: usize,
    timeout: Duration,
    endpoint: Option<String>,
}

impl Settings {
    fn from_env(env: &Env) -> Result<Self, wa_shared::config::ConfigError> {
        let mut base = FunctionSettings::from_env(&app::REALTIME, env)?;
        base.http_port = env.parse("HTTP_PORT", 8085u16)?;
        base.batch_max_bytes = env.parse("BATCH_MAX_BYTES", 3 * 1024 * 1024usize)?;
        let routes = routes::parse(env.get("BRIDGE_ROUTES").unwrap_or(routes::DEFAULT_ROUTES))?
            .into_iter()
            .map(|r| FunctionSettings::from_env(r.spec, env).map(|s| (r, s)))
            .collect::<Result<_, _>>()?;
        let concurrency = env.parse("BRIDGE_CONCURRENCY", 1usize)?.max(1);
        Ok(Settings {
            base,
            routes,
            concurrency,
            timeout: env.duration("BRIDGE_INVOKE_TIMEOUT", Duration::from_secs(60))?,
            endpoint: env.get("LAMBDA_ENDPOINT").map(str::to_owned),
        })
    }
}

async fn run(settings: Settings) -> Result<(), String> {
    let mut shutdown = shutdown_signal();
    let prometheus = install_prometheus()?;
    let ready = Readiness::new(None, Some(prometheus));
    if settings.base.http_port != 0 {
        http::serve(settings.base.http_port, ready.clone())
            .await
            .map_err(|e| format!("HTTP_PORT: {e}"))?;
    }
    let mut aws = aws_config::from_env();
    if let Some(url) = &settings.endpoint {
        aws = aws.endpoint_url(url);
    }
    let lambda = aws_sdk_lambda::Client::new(&aws.load().await);
    let Some(client) = connect_nats(&settings.base.nats, &mut shutdown).await else {
        return Ok(());
    };
    let _ = ready.nats.set(client.clone());
    let js = async_nats::jetstream::new(client.clone());

    let mut runners = Vec::new();
    for (route, fs) in &settings.routes {
        let spec = fs.consumer(route.spec);
        let Some(consumer) = setup(&js, &settings.base, &spec, &mut shutdown).await? else {
            return Ok(());
        };
        info!(function = route.spec.bin, lambda = %route.function, consumer = %spec.durable, "route bound");
        let invoker = Arc::new(LambdaInvoker {
            client: lambda.clone(),
            function: route.function.clone(),
            timeout: settings.timeout,
            max_deliver: fs.processor.max_deliver,
        });
        for _ in 0..settings.concurrency {
            runners.push(Runner {
                client: client.clone(),
                js: js.clone(),
                consumer: consumer.clone(),
                handler: invoker.clone(),
                settings: RunnerSettings {
                    consumer: spec.durable.clone(),
                    consumer_type: route.spec.consumer_type,
                    batch_size: settings.base.batch_size,
                    batch_max_wait: settings.base.batch_max_wait,
                    batch_max_bytes: settings.base.batch_max_bytes,
                    keepalive: spec
                        .backoff
                        .first()
                        .copied()
                        .unwrap_or(Duration::from_secs(30))
                        / 2,
                    only_tenant: settings
                        .base
                        .company
                        .as_ref()
                        .map(|t| t.as_str().to_owned()),
                },
                metrics: EventMetrics::new(route.spec.metrics_prefix, route.spec.consumer_type),
            });
        }
    }
    ready.bound.store(true, Ordering::Relaxed);
    info!(routes = settings.routes.len(), "bridging");
    futures::future::join_all(runners.into_iter().map(|r| r.run(shutdown.clone()))).await;
    Ok(())
}
