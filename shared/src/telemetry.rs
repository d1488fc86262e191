//! Logs and traces. Logs: `tracing` to stdout, JSON or pretty, filtered by `LOG_LEVEL`. Traces
//! (feature `otel`, only with `OTEL_EXPORTER_OTLP_ENDPOINT`): the spans of [`spans`] exported
//! over OTLP/HTTP. Without an endpoint no exporter or layer is installed and the per-event spans
//! are never created.

#[cfg(feature = "otel")]
mod export;
#[cfg(feature = "otel")]
mod otlp_http;
pub mod spans;

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

pub use crate::settings::LogFormat;
use crate::settings::{vars::TraceVars, ConfigError};

/// How the process logs (`LOG_LEVEL`, `LOG_FORMAT`) and traces (`OTEL_*`).
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
    /// `None`: no traces (`OTEL_EXPORTER_OTLP_ENDPOINT` unset).
    pub traces: Option<TraceSettings>,
}

/// Where spans go and which are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, without a trailing `/`.
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER_ARG`: the ratio of the parent-based ratio sampler.
    pub sample_ratio: f64,
}

impl TraceSettings {
    /// The trace settings of `bin`: `None` without an endpoint; an endpoint in a build without
    /// the `otel` feature is refused.
    pub fn from_vars(vars: TraceVars, bin: &str) -> Result<Option<TraceSettings>, ConfigError> {
        let Some(endpoint) = vars.otel_exporter_otlp_endpoint else {
            return Ok(None);
        };
        if !cfg!(feature = "otel") {
            return Err(ConfigError {
                var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                value: endpoint,
                reason: "this build has no trace exporter: build the function with \
                         `--features otel` (its default)"
                    .into(),
            });
        }
        Ok(Some(TraceSettings {
            endpoint,
            service_name: vars.otel_service_name.unwrap_or_else(|| bin.to_owned()),
            sample_ratio: vars.otel_traces_sampler_arg,
        }))
    }
}

/// Whether spans are being exported (the exporter is installed).
static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported: what the trace-only spans ([`spans`]) are created under.
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// The target of the spans that exist for traces only, which logs do not show.
pub(crate) const TRACE_TARGET: &str = "wa_trace";

impl LogSettings {
    /// Installs the global subscriber (once per process), and with traces the exporter, which
    /// sends on the current tokio runtime: call it inside the runtime, and
    /// [`Telemetry::shutdown`] before leaving it.
    pub fn init(&self) -> Telemetry {
        #[cfg(feature = "otel")]
        if let Some(traces) = &self.traces {
            match export::install(traces, self.log_filter(true), self.format) {
                Ok(provider) => {
                    TRACES_ON.store(true, Ordering::Relaxed);
                    tracing::info!(
                        endpoint = %crate::settings::Secret::new(traces.endpoint.as_str()).redacted(),
                        service = %traces.service_name,
                        ratio = traces.sample_ratio,
                        "exporting traces"
                    );
                    return Telemetry {
                        provider: Some(provider),
                    };
                }
                Err(e) => {
                    self.init_logs();
                    tracing::error!(error = %e, "OTEL_EXPORTER_OTLP_ENDPOINT: no traces");
                    return Telemetry::default();
                }
            }
        }
        self.init_logs();
        Telemetry::default()
    }

    /// Logs only: the formatter, filtered by `LOG_LEVEL`.
    fn init_logs(&self) {
        let builder = tracing_subscriber::fmt()
            .with_env_filter(self.log_filter(false))
            .with_writer(std::io::stdout);
        let _ = match self.format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init(),
            LogFormat::Pretty => builder.compact().try_init(),
        };
    }

    /// `LOG_LEVEL` as a filter; `hide_trace_spans` keeps the trace-only spans out of the logs.
    fn log_filter(&self, hide_trace_spans: bool) -> EnvFilter {
        // Postgres notices ("already exists, skipping") are noise at INFO.
        let mut directives = if self.filter.contains("sqlx") {
            self.filter.clone()
        } else {
            format!("{},sqlx::postgres::notice=warn", self.filter)
        };
        if hide_trace_spans {
            directives.push_str(&format!(",{TRACE_TARGET}=off"));
        }
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
    }
}

/// The installed exporter, to flush at the end.
#[derive(Default)]
#[must_use = "shut it down before the runtime ends, or the last spans are lost"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter (at most a few seconds).
    pub async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            TRACES_ON.store(false, Ordering::Relaxed);
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "flushing the last spans");
            }
        }
    }
}

/// Sends the spans queued so far and waits until they are sent (the end of a Lambda
/// invocation: the runtime is frozen until the next one). Nothing to do without traces.
pub async fn flush() {
    #[cfg(feature = "otel")]
    if traces_on() {
        if let Some(provider) = export::provider() {
            let done = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "flushing spans");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::REALTIME;
    use crate::settings::Settings;

    fn traces(args: &[&str]) -> Result<Option<TraceSettings>, String> {
        Settings::try_parse_from(
            &REALTIME,
            std::iter::once("wa-realtime").chain(args.iter().copied()),
        )
        .map(|s| s.log.traces)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn trace_variables_are_read_and_checked_at_startup() {
        assert_eq!(traces(&[]), Ok(None));
        let endpoint = ["--otel-exporter-otlp-endpoint", "http://collector:4318/"];
        if cfg!(feature = "otel") {
            assert_eq!(
                traces(&endpoint),
                Ok(Some(TraceSettings {
                    endpoint: "http://collector:4318".into(),
                    service_name: "wa-realtime".into(),
                    sample_ratio: 1.0,
                }))
            );
            let named = traces(&[
                endpoint[0],
                endpoint[1],
                "--otel-service-name",
                "rt-eu",
                "--otel-traces-sampler-arg",
                "0.25",
            ])
            .unwrap()
            .unwrap();
            assert_eq!(
                (named.service_name.as_str(), named.sample_ratio),
                ("rt-eu", 0.25)
            );
        } else {
            let e = traces(&endpoint).unwrap_err();
            assert!(
                e.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && e.contains("otel"),
                "{e}"
            );
        }
        let e = traces(&["--otel-traces-sampler-arg", "2"]).unwrap_err();
        assert!(e.contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        let e = traces(&["--otel-exporter-otlp-endpoint", "collector:4318"]).unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
    }

    #[test]
    fn help_lists_the_trace_variables_with_the_binary_as_service() {
        let help = REALTIME.command().render_long_help().to_string();
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_SERVICE_NAME",
            "OTEL_TRACES_SAMPLER_ARG",
        ] {
            assert!(help.contains(var), "{var} missing from --help");
        }
        assert!(help.contains("[default: wa-realtime]"), "{help}");
    }
}
