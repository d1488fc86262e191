//! Settings: read once from environment variables (by the binaries), each with a default.
//! Invalid values fail at startup with a message naming the variable.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::model::TenantId;
use crate::pipeline::ProcessorSettings;

/// A configuration error, naming the variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// One documented variable.
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// Variables shared by every function.
pub const COMMON_VARS: &[Var] = &[
    Var {
        name: "DATABASE_URL",
        default: "postgres://postgres@127.0.0.1:5432/postgres",
        help: "Postgres connection URL (alias: POSTGRES_DSN)",
    },
    Var {
        name: "DB_POOL_SIZE",
        default: "4",
        help: "Postgres connections per process",
    },
    Var {
        name: "DB_AUTO_MIGRATE",
        default: "true",
        help: "create and migrate tenant schemas on first use",
    },
    Var {
        name: "DB_LOCK_TIMEOUT",
        default: "5s",
        help: "how long a write waits for a lock before the batch is held and retried",
    },
    Var {
        name: "COMPANY_ID",
        default: "",
        help: "serve this tenant only (consumer names get a _<company_id> suffix)",
    },
    Var {
        name: "TENANT_ALLOWLIST",
        default: "",
        help: "comma-separated tenants to serve; others are dead-lettered (empty: all)",
    },
    Var {
        name: "MAX_DELIVER",
        default: "5 (history: 3)",
        help: "deliveries before a transient failure is dead-lettered",
    },
    Var {
        name: "BACKOFF",
        default: "1s,2s,4s,8s (history: 2s,4s)",
        help: "redelivery delays, comma-separated durations",
    },
    Var {
        name: "MAX_PAYLOAD_BYTES",
        default: "1048576",
        help: "larger bodies are dead-lettered unparsed (too_large)",
    },
];

/// Database settings.
#[derive(Debug, Clone)]
pub struct DbSettings {
    pub url: String,
    pub pool_size: u32,
}

/// Settings read from a set of variables (the process environment, or a map in tests).
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<I: IntoIterator<Item = (K, V)>, K: Into<String>, V: Into<String>>(
        pairs: I,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`, if set and not blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| err(name, v, e.to_string())),
        }
    }

    pub fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some("0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(err(name, v, "expected true or false".into())),
        }
    }

    pub fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|e| err(name, v, e)),
        }
    }

    pub fn durations(
        &self,
        name: &'static str,
        default: &[Duration],
    ) -> Result<Vec<Duration>, ConfigError> {
        match self.get(name) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|d| parse_duration(d.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(name, v, e)),
        }
    }

    pub fn db(&self) -> Result<DbSettings, ConfigError> {
        let url = self
            .get("DATABASE_URL")
            .or_else(|| self.get("POSTGRES_DSN"))
            .unwrap_or("postgres://postgres@127.0.0.1:5432/postgres")
            .to_owned();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(err(
                "DATABASE_URL",
                &url,
                "expected a postgres:// URL".into(),
            ));
        }
        let pool_size = self.parse("DB_POOL_SIZE", 4u32)?;
        if pool_size == 0 {
            return Err(err("DB_POOL_SIZE", "0", "must be at least 1".into()));
        }
        Ok(DbSettings { url, pool_size })
    }

    /// `COMPANY_ID`, when set: this process serves that tenant only.
    pub fn company(&self) -> Result<Option<TenantId>, ConfigError> {
        self.get("COMPANY_ID")
            .map(|v| TenantId::parse(v).map_err(|e| err("COMPANY_ID", v, e.to_string())))
            .transpose()
    }

    /// The core's settings; `max_deliver` and `backoff` default per function.
    pub fn processor(
        &self,
        max_deliver: u32,
        backoff: &[Duration],
    ) -> Result<ProcessorSettings, ConfigError> {
        self.processor_with("BACKOFF", max_deliver, backoff)
    }

    /// Like [`Env::processor`], with the backoff read from `backoff_var`; when `MAX_DELIVER`
    /// is not set and `max_deliver` is 0, it is one more than the backoff entries.
    pub fn processor_with(
        &self,
        backoff_var: &'static str,
        max_deliver: u32,
        backoff: &[Duration],
    ) -> Result<ProcessorSettings, ConfigError> {
        let allowlist = self.get("TENANT_ALLOWLIST").map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect::<HashSet<_>>()
        });
        if let Some(bad) = allowlist
            .iter()
            .flatten()
            .find(|t| TenantId::parse(t).is_err())
        {
            return Err(err("TENANT_ALLOWLIST", bad, "not a valid tenant id".into()));
        }
        let backoff = self.durations(backoff_var, backoff)?;
        let max_deliver = match max_deliver {
            0 => self.parse("MAX_DELIVER", backoff.len() as u32 + 1)?,
            n => self.parse("MAX_DELIVER", n)?,
        };
        if max_deliver == 0 {
            return Err(err("MAX_DELIVER", "0", "must be at least 1".into()));
        }
        if backoff.is_empty() || backoff.len() >= max_deliver as usize {
            return Err(err(
                backoff_var,
                &format_durations(&backoff),
                format!(
                    "needs 1 to MAX_DELIVER-1 ({}) entries",
                    max_deliver.saturating_sub(1)
                ),
            ));
        }
        let max_payload_bytes = self.parse("MAX_PAYLOAD_BYTES", 1024 * 1024usize)?;
        Ok(ProcessorSettings {
            max_deliver,
            backoff,
            max_payload_bytes,
            allowlist,
            auto_migrate: self.bool("DB_AUTO_MIGRATE", true)?,
            lock_timeout: self.duration("DB_LOCK_TIMEOUT", Duration::from_secs(5))?,
        })
    }
}

fn err(var: &'static str, value: &str, reason: String) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        reason,
    }
}

/// Parses `250ms`, `2s`, `1m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 250ms, 2s, 1m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h, d)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn format_durations(ds: &[Duration]) -> String {
    ds.iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn defaults() {
        let env = Env::from_pairs::<_, String, String>([]);
        let p = env
            .processor(5, &[1, 2, 4, 8].map(Duration::from_secs))
            .unwrap();
        assert_eq!(p.max_deliver, 5);
        assert_eq!(p.backoff.len(), 4);
        assert!(p.auto_migrate);
        assert!(p.allowlist.is_none());
        assert_eq!(
            env.db().unwrap().url,
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert!(env.company().unwrap().is_none());
    }

    #[test]
    fn errors_name_the_variable() {
        let env = Env::from_pairs([("MAX_DELIVER", "x")]);
        assert_eq!(
            env.processor(5, &[Duration::from_secs(1)]).unwrap_err().var,
            "MAX_DELIVER"
        );
        let env = Env::from_pairs([("MAX_DELIVER", "3"), ("BACKOFF", "1s,2s,3s")]);
        assert_eq!(env.processor(5, &[]).unwrap_err().var, "BACKOFF");
        let env = Env::from_pairs([("COMPANY_ID", "a.b")]);
        assert_eq!(env.company().unwrap_err().var, "COMPANY_ID");
        let env = Env::from_pairs([("DB_AUTO_MIGRATE", "maybe")]);
        assert_eq!(
            env.processor(5, &[Duration::from_secs(1)]).unwrap_err().var,
            "DB_AUTO_MIGRATE"
        );
        let env = Env::from_pairs([("POSTGRES_DSN", "mysql://x")]);
        assert_eq!(env.db().unwrap_err().var, "DATABASE_URL");
        let env = Env::from_pairs([("TENANT_ALLOWLIST", "A, b.c")]);
        assert_eq!(
            env.processor(5, &[Duration::from_secs(1)]).unwrap_err().var,
            "TENANT_ALLOWLIST"
        );
    }
}
