//! The trace pipeline: the product's spans, sampled parent-based by ratio, batched by the SDK's
//! processor (its own thread) and sent as OTLP/HTTP protobuf to `<endpoint>/v1/traces`.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing::subscriber::Interest;
use tracing::Metadata;
use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::otlp_http::HyperClient;
use super::{LogFormat, TraceSettings};

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans held for export at most; more are dropped (and counted by the SDK). A batch of 1,024
/// events makes as many event spans, so this holds several batches between exports.
const MAX_QUEUE: usize = 8192;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The installed provider.
pub(super) fn provider() -> Option<SdkTracerProvider> {
    PROVIDER.get().cloned()
}

/// Installs the global subscriber: the log formatter filtered by `logs`, and the exporter's
/// layer, which sees the product's spans only (no events: log lines never become span events,
/// so nothing logged, at any level, is exported).
pub(super) fn install(
    settings: &TraceSettings,
    logs: EnvFilter,
    format: LogFormat,
) -> Result<SdkTracerProvider, String> {
    let provider = build(settings)?;
    let tracer = provider.tracer("wa-events");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(
            dynamic_filter_fn(|meta, _| ours(meta)).with_callsite_filter(|meta| {
                // `sometimes`, never `always`, for the spans: tracing-subscriber keeps the
                // per-layer verdicts in a thread-local that only a call of `enabled` refreshes,
                // and a span of an `always` callsite (one `enabled` is not asked about) created
                // after a verdict nobody used (sqlx asking whether to log a statement) would
                // inherit it and be invisible to both layers. Events stay `never`, so a
                // disabled `debug!` still costs nothing.
                if ours(meta) {
                    Interest::sometimes()
                } else {
                    Interest::never()
                }
            }),
        );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(logs)
            .boxed(),
        LogFormat::Pretty => fmt.compact().with_filter(logs).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())?;
    let _ = PROVIDER.set(provider.clone());
    Ok(provider)
}

/// The spans the exporter is given: the product's (no events, nobody else's).
fn ours(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("wa_")
}

/// The provider: exporter, batching, sampler, resource.
fn build(settings: &TraceSettings) -> Result<SdkTracerProvider, String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "the exporter needs the tokio runtime".to_owned())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(HyperClient::new(
            runtime,
            &settings.endpoint,
            EXPORT_TIMEOUT,
        ))
        .with_endpoint(format!("{}/v1/traces", settings.endpoint))
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let batching = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUE)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batching)
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}
