//! Settings: read once at startup from the command line and environment ([`vars`] declares
//! every variable), checked as a whole, and handed down as typed values. Library code never
//! reads the environment.

pub mod values;
pub mod vars;

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::Duration;

use clap::{ArgMatches, Command, FromArgMatches};

use crate::functions::FunctionSpec;
use crate::model::TenantId;
use crate::pipeline::ProcessorSettings;
use crate::telemetry::{LogSettings, TraceSettings};
use crate::transport::nats::NatsSettings;

pub use values::{duration as parse_duration, format_durations, Backoff, Secret};
pub use vars::{FunctionVars, LogFormat, SinkKind};

/// A combination of variables that cannot work, naming the variable to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// How to reach Postgres.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: Secret,
    pub pool_size: u32,
    /// Tenants whose write statements each connection keeps prepared (`DB_PREPARED_TENANTS`).
    pub prepared_tenants: usize,
    /// Connections creating and migrating new tenants' schemas (`DB_SCHEMA_CONNECTIONS`).
    pub schema_connections: u32,
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
    pub fn namespace(&self) -> &str {
        match self {
            MetricsSink::Prometheus { namespace } | MetricsSink::CloudWatch { namespace, .. } => {
                namespace
            }
        }
    }
}

/// Everything a function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nats: NatsSettings,
    pub db: DbSettings,
    pub processor: ProcessorSettings,
    pub company: Option<TenantId>,
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub batch_max_bytes: usize,
    /// `STREAM_REPLICAS`: unset, an existing stream keeps its replicas.
    pub stream_replicas: Option<usize>,
    /// `DLQ_MAX_AGE`: unset, an existing `dlq_stream` keeps a longer age.
    pub dlq_max_age: Option<Duration>,
    pub inbox_retention: Duration,
    pub http_port: u16,
    pub log: LogSettings,
    pub metrics: MetricsSink,
}

impl Settings {
    /// The settings of `spec`'s process: `--help` and `--version` print and exit 0; an invalid
    /// value prints a message naming its variable and exits 2.
    pub fn load(spec: &FunctionSpec) -> Settings {
        Self::try_parse_from(spec, std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Like [`Settings::load`], with these arguments instead of the process's.
    pub fn try_parse_from<I, T>(spec: &FunctionSpec, args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        unset_blank_variables(&spec.command());
        let mut cmd = spec.command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        Self::from_matches(spec, &matches)
            .map_err(|e| cmd.error(clap::error::ErrorKind::ValueValidation, e))
    }

    /// The settings in `matches` of a command made by [`FunctionSpec::command`] (possibly
    /// extended, as the bridge's is).
    pub fn from_matches(
        spec: &FunctionSpec,
        matches: &ArgMatches,
    ) -> Result<Settings, ConfigError> {
        let vars = FunctionVars::from_arg_matches(matches).map_err(|e| ConfigError {
            var: "arguments",
            value: String::new(),
            reason: e.to_string(),
        })?;
        let processor = processor(spec, &vars)?;
        let ops = vars.ops;
        Ok(Settings {
            nats: NatsSettings::new(vars.nats, spec.bin),
            db: DbSettings {
                url: vars.db.url().clone(),
                pool_size: vars.db.db_pool_size,
                prepared_tenants: vars.db.db_prepared_tenants as usize,
                schema_connections: vars.db.db_schema_connections,
            },
            processor,
            company: vars.tenants.company_id,
            batch_size: vars.fetch.batch_size as usize,
            batch_max_wait: vars.fetch.batch_max_wait,
            batch_max_bytes: vars.fetch.batch_max_bytes,
            stream_replicas: vars.streams.stream_replicas.map(usize::from),
            dlq_max_age: vars.streams.dlq_max_age,
            inbox_retention: vars.streams.inbox_retention,
            http_port: ops.http_port.unwrap_or(0),
            log: LogSettings {
                filter: ops.log_level,
                format: ops.log_format,
                traces: TraceSettings::from_vars(vars.traces, spec.bin)?,
            },
            metrics: match ops.metrics_sink {
                SinkKind::Prometheus => MetricsSink::Prometheus {
                    namespace: ops.metrics_namespace,
                },
                SinkKind::Cloudwatch if cfg!(feature = "cloudwatch") => MetricsSink::CloudWatch {
                    namespace: ops.metrics_namespace,
                    endpoint: ops.cloudwatch_endpoint,
                    every: ops.metrics_flush_interval,
                },
                SinkKind::Cloudwatch => {
                    return Err(ConfigError {
                        var: "METRICS_SINK",
                        value: "cloudwatch".into(),
                        reason: "this build has no CloudWatch sink: build the function with \
                                 `--features cloudwatch` (Lambda mode needs none: it writes EMF)"
                            .into(),
                    })
                }
            },
        })
    }
}

/// The core's settings: `MAX_DELIVER` defaults to the backoff's entries + 1 where the function
/// has no default of its own, and the backoff must have fewer entries than `MAX_DELIVER`.
fn processor(spec: &FunctionSpec, vars: &FunctionVars) -> Result<ProcessorSettings, ConfigError> {
    let d = &vars.delivery;
    let backoff = d.backoff.clone().map(|b| b.0).unwrap_or_default();
    let max_deliver = d.max_deliver.unwrap_or(backoff.len() as u32 + 1);
    if backoff.is_empty() || backoff.len() >= max_deliver as usize {
        return Err(ConfigError {
            var: spec.defaults.backoff_var,
            value: format_durations(&backoff),
            reason: format!(
                "needs 1 to MAX_DELIVER-1 ({}) entries",
                max_deliver.saturating_sub(1)
            ),
        });
    }
    Ok(ProcessorSettings {
        max_deliver,
        backoff,
        retry_window: d.retry_window,
        max_payload_bytes: d.max_payload_bytes,
        allowlist: vars
            .tenants
            .tenant_allowlist
            .as_ref()
            .map(|a| a.iter().cloned().collect::<HashSet<_>>()),
        auto_migrate: vars.db.db_auto_migrate,
        lock_timeout: vars.db.db_lock_timeout,
        tenant_databases: vars.db.tenant_databases.clone().unwrap_or_default().0,
    })
}

/// A variable set to a blank value counts as unset (as `KEY=` in a compose file means): the
/// blank variables of `cmd`'s options are taken out of the environment, so build the command
/// again before parsing with it.
pub fn unset_blank_variables(cmd: &Command) {
    for name in cmd.get_arguments().filter_map(|a| a.get_env()) {
        if std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty()) {
            std::env::remove_var(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::{DLQ_RETRY, HISTORICAL, REALTIME};

    fn parse(spec: &FunctionSpec, args: &[&str]) -> Result<Settings, clap::Error> {
        Settings::try_parse_from(spec, std::iter::once("bin").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_depend_on_the_function() {
        let r = parse(&REALTIME, &[]).unwrap();
        assert_eq!(r.processor.max_deliver, 5);
        assert_eq!(r.processor.backoff.len(), 4);
        assert_eq!(r.http_port, 8081);
        assert!(r.processor.auto_migrate);
        assert!(r.processor.allowlist.is_none());
        assert_eq!(r.db.url.expose(), vars::DEFAULT_DATABASE_URL);
        assert_eq!(
            r.db.schema_connections,
            crate::store::schema::SCHEMA_CONNECTIONS
        );
        let few = parse(&REALTIME, &["--db-schema-connections", "1"]).unwrap();
        assert_eq!(few.db.schema_connections, 1);
        assert!(r.company.is_none());
        let h = parse(&HISTORICAL, &[]).unwrap();
        assert_eq!((h.processor.max_deliver, h.http_port), (3, 8082));
        let d = parse(&DLQ_RETRY, &[]).unwrap();
        assert_eq!(d.processor.max_deliver, 6);
        assert_eq!(d.processor.backoff[0], Duration::from_secs(60));
        let d = parse(&DLQ_RETRY, &["--backoff", "1s,2s"]).unwrap();
        assert_eq!(d.processor.max_deliver, 3);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = |spec, args: &[&str]| parse(spec, args).unwrap_err().to_string();
        assert!(err(&REALTIME, &["--max-deliver", "x"]).contains("MAX_DELIVER"));
        let e = err(&REALTIME, &["--max-deliver", "3", "--backoff", "1s,2s,3s"]);
        assert!(e.contains("BACKOFF"), "{e}");
        let e = err(&DLQ_RETRY, &["--max-deliver", "2", "--backoff", "1s,2s"]);
        assert!(e.contains("DLQ_BACKOFF"), "{e}");
        assert!(err(&REALTIME, &["--company-id", "a.b"]).contains("COMPANY_ID"));
        assert!(err(&REALTIME, &["--db-auto-migrate", "maybe"]).contains("DB_AUTO_MIGRATE"));
        assert!(err(&REALTIME, &["--postgres-dsn", "mysql://x"]).contains("POSTGRES_DSN"));
        assert!(err(&REALTIME, &["--tenant-allowlist", "A, b.c"]).contains("TENANT_ALLOWLIST"));
        assert!(err(&REALTIME, &["--batch-size", "0"]).contains("BATCH_SIZE"));
        let e = err(&REALTIME, &["--db-schema-connections", "0"]);
        assert!(e.contains("DB_SCHEMA_CONNECTIONS"), "{e}");
        assert!(err(&REALTIME, &["--nats-user", "u"]).contains("NATS_PASSWORD"));
    }

    #[test]
    fn stream_settings_are_unset_unless_given() {
        let r = parse(&REALTIME, &[]).unwrap();
        assert_eq!((r.stream_replicas, r.dlq_max_age), (None, None));
        let r = parse(
            &REALTIME,
            &["--stream-replicas", "3", "--dlq-max-age", "14d"],
        )
        .unwrap();
        assert_eq!(r.stream_replicas, Some(3));
        assert_eq!(r.dlq_max_age, Some(Duration::from_secs(14 * 86_400)));
        let e = parse(&REALTIME, &["--stream-replicas", "9"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("STREAM_REPLICAS"), "{e}");
    }

    #[test]
    fn postgres_dsn_is_an_alias() {
        let s = parse(&REALTIME, &["--postgres-dsn", "postgres://a@b/c"]).unwrap();
        assert_eq!(s.db.url.expose(), "postgres://a@b/c");
        let both = [
            "--postgres-dsn",
            "postgres://a@b/c",
            "--database-url",
            "postgres://d@e/f",
        ];
        assert_eq!(
            parse(&REALTIME, &both).unwrap().db.url.expose(),
            "postgres://d@e/f"
        );
    }

    #[test]
    fn help_shows_each_function_its_own_defaults_and_no_secret() {
        let help = |spec: &FunctionSpec| spec.command().render_long_help().to_string();
        let r = help(&REALTIME);
        assert!(
            r.contains("[env: BACKOFF") && r.contains("[default: 1s,2s,4s,8s]"),
            "{r}"
        );
        let d = help(&DLQ_RETRY);
        assert!(
            d.contains("[env: DLQ_BACKOFF") && d.contains("[default: 1m,2m,4m,8m,15m]"),
            "{d}"
        );
        assert!(!d.contains("[env: BACKOFF"), "{d}");
        for var in [
            "METRICS_SINK",
            "METRICS_NAMESPACE",
            "METRICS_FLUSH_INTERVAL",
            "CLOUDWATCH_ENDPOINT",
        ] {
            assert!(r.contains(var), "{var} missing from --help");
        }
    }
}
