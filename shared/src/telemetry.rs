//! Logging: `tracing` to stdout, JSON or pretty, filtered by `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;

pub use crate::settings::LogFormat;

/// How the process logs (`LOG_LEVEL`, `LOG_FORMAT`).
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

impl LogSettings {
    /// Installs the global subscriber (once per process).
    pub fn init(&self) {
        // Postgres notices ("already exists, skipping") are noise at INFO.
        let directives = if self.filter.contains("sqlx") {
            self.filter.clone()
        } else {
            format!("{},sqlx::postgres::notice=warn", self.filter)
        };
        let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
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
}
