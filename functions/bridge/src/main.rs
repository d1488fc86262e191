//! `wa-bridge`: pulls batches from the functions' durable consumers and invokes the functions
//! through the AWS Lambda Invoke API, then acks, naks or dead-letters exactly as the standalone
//! runner does. The only component that needs NATS in a Lambda deployment.

mod invoker;
mod routes;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use tracing::info;
use wa_shared::functions::REALTIME;
use wa_shared::metrics::EventMetrics;
use wa_shared::settings::{parse_duration, unset_blank_variables, Settings};
use wa_shared::startup::{self, Binding, StartupError};

use invoker::LambdaInvoker;
use routes::{Route, Routes};

const ABOUT: &str = "Bridges JetStream to AWS Lambda: pulls batches from the functions' consumers and invokes the functions";

/// The bridge's own variables, beyond those every function reads.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Bridge")]
struct BridgeVars {
    /// function=lambda-name pairs (functions: realtime, historical, dlq-retry, onboarding)
    #[arg(long, env = "BRIDGE_ROUTES", default_value = routes::DEFAULT_ROUTES, value_parser = routes::parse)]
    bridge_routes: Routes,
    /// concurrent invocations per route
    #[arg(long, env = "BRIDGE_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    bridge_concurrency: u16,
    /// an invocation taking longer is retried
    #[arg(long, env = "BRIDGE_INVOKE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    bridge_invoke_timeout: Duration,
    /// Lambda API endpoint (e.g. a local emulator); AWS_* variables give region and credentials
    #[arg(long, env = "LAMBDA_ENDPOINT")]
    lambda_endpoint: Option<String>,
}

/// What the bridge runs with: the process-wide settings, its own, and each route's.
struct BridgeSettings {
    base: Settings,
    bridge: BridgeVars,
    routes: Vec<(Route, Settings)>,
}

fn main() -> ExitCode {
    let settings = load().unwrap_or_else(|e| e.exit());
    let result = startup::runtime().block_on(async {
        let telemetry = settings.base.log.init();
        let result = run(settings).await;
        telemetry.shutdown().await;
        result
    });
    startup::exit("wa-bridge", result)
}

/// Every function variable (with the bridge's defaults) and the bridge's own.
fn command() -> clap::Command {
    BridgeVars::augment_args(REALTIME.command())
        .name("wa-bridge")
        .bin_name("wa-bridge")
        .about(ABOUT)
        .after_help("Each route's MAX_DELIVER and backoff default to its function's (dlq-retry reads DLQ_BACKOFF).")
        .mut_arg("http_port", |a| a.default_value("8085"))
        .mut_arg("otel_service_name", |a| a.default_value("wa-bridge"))
        .mut_arg("batch_max_bytes", |a| a.default_value("3145728"))
}

/// The bridge's settings; each route's delivery settings (`MAX_DELIVER`, its backoff) are its
/// function's, read from the environment as that function would read them.
fn load() -> Result<BridgeSettings, clap::Error> {
    unset_blank_variables(&command());
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    let mut base = Settings::from_matches(&REALTIME, &matches)
        .map_err(|e| cmd.error(clap::error::ErrorKind::ValueValidation, e))?;
    // The process's own name (the server's connection list, the readiness gauge's `process`),
    // not that of the function whose variables it borrows.
    base.nats.name = "wa-bridge".into();
    let bridge = BridgeVars::from_arg_matches(&matches)?;
    let routes = bridge
        .bridge_routes
        .0
        .iter()
        .map(|r| Settings::try_parse_from(r.spec, ["wa-bridge"]).map(|s| (r.clone(), s)))
        .collect::<Result<_, _>>()?;
    Ok(BridgeSettings {
        base,
        bridge,
        routes,
    })
}

async fn run(settings: BridgeSettings) -> Result<(), StartupError> {
    let BridgeSettings {
        base,
        bridge,
        routes,
    } = settings;
    let aws = wa_shared::aws::load_config(bridge.lambda_endpoint.as_deref()).await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let Some(started) = startup::start(&base, None).await? else {
        return Ok(());
    };
    let bindings = routes
        .into_iter()
        .map(|(route, settings)| {
            info!(function = route.spec.bin, lambda = %route.function, "route");
            Binding {
                spec: route.spec,
                handler: Arc::new(LambdaInvoker {
                    client: lambda.clone(),
                    function: route.function,
                    timeout: bridge.bridge_invoke_timeout,
                }),
                // The functions behind the bridge have no `/metrics`: consumer lag, held
                // batches and dead letters are the bridge's to report, as EMF lines too.
                metrics: EventMetrics::new(route.spec.metrics_prefix, route.spec.consumer_type)
                    .with_emf(base.metrics.namespace()),
                runners: usize::from(bridge.bridge_concurrency),
                settings,
            }
        })
        .collect();
    startup::bind_runners(started, &base, bindings).await
}
