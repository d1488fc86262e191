//! Logging: `tracing` to stdout, JSON or pretty, filtered by `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub filter: String,
    pub format: LogFormat,
}

impl LogSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let filter = env.get("LOG_LEVEL").unwrap_or("info").to_owned();
        if EnvFilter::try_new(&filter).is_err() {
            return Err(ConfigError {
                var: "LOG_LEVEL",
                value: filter,
                reason: "expected a level (error, warn, info, debug, trace) or a tracing filter"
                    .into(),
            });
        }
        let format = match env
            .get("LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("json") => LogFormat::Json,
            Some("pretty" | "text") => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError {
                    var: "LOG_FORMAT",
                    value: other.to_owned(),
                    reason: "expected json or pretty".into(),
                })
            }
        };
        Ok(LogSettings { filter, format })
    }

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
