//! The value types of settings and their parsers: durations, tenant lists, URLs, and secrets
//! that never show in logs or `Debug` output.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::model::TenantId;

/// A value that must not be printed: connection URLs (they may carry a password), passwords,
/// tokens, credentials. `Debug` and [`Secret::redacted`] hide what must stay hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one call that needs it (connecting).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value with any `user:password@` part of a URL reduced to `user:***@`, for logs.
    pub fn redacted(&self) -> String {
        self.0
            .split(',')
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// Redelivery delays, in order (the last one repeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff(pub Vec<Duration>);

/// Parses `250ms`, `2s`, `1m`, `1h`, `7d` or a plain number of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
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

/// Comma-separated durations, at least one.
pub fn durations(s: &str) -> Result<Backoff, String> {
    s.split(',')
        .map(duration)
        .collect::<Result<Vec<_>, _>>()
        .map(Backoff)
}

pub fn format_durations(ds: &[Duration]) -> String {
    ds.iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn tenant(s: &str) -> Result<TenantId, String> {
    TenantId::parse(s.trim()).map_err(|e| e.to_string())
}

/// Comma-separated tenant ids (blanks skipped).
pub fn tenant_list(s: &str) -> Result<BTreeSet<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            TenantId::parse(t)
                .map(|_| t.to_owned())
                .map_err(|_| format!("{t:?} is not a valid tenant id"))
        })
        .collect()
}

pub fn postgres_url(s: &str) -> Result<Secret, String> {
    let s = s.trim();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(Secret::new(s))
    } else {
        Err("expected a postgres:// URL".into())
    }
}

pub fn nats_url(s: &str) -> Result<Secret, String> {
    if s.split(',').all(|u| u.contains("://") || !u.contains('/')) {
        Ok(Secret::new(s.trim()))
    } else {
        Err("expected nats://host:port (comma-separated for several servers)".into())
    }
}

pub fn existing_file(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s.trim());
    if path.is_file() {
        Ok(path)
    } else {
        Err("no such file".into())
    }
}

pub fn log_filter(s: &str) -> Result<String, String> {
    EnvFilter::try_new(s.trim())
        .map(|_| s.trim().to_owned())
        .map_err(|_| {
            "expected a level (error, warn, info, debug, trace) or a tracing filter".into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(duration("1m").unwrap(), Duration::from_secs(60));
        assert!(duration("soon").is_err());
        assert!(duration("5y").is_err());
        assert_eq!(durations("1s, 2s").unwrap().0.len(), 2);
        assert!(durations("1s,soon").is_err());
    }

    #[test]
    fn secrets_stay_hidden() {
        let url = Secret::new("postgres://app:hunter2@db:5432/x,nats://n:4222");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.redacted(), "postgres://app:***@db:5432/x,nats://n:4222");
        assert_eq!(
            url.expose(),
            "postgres://app:hunter2@db:5432/x,nats://n:4222"
        );
    }

    #[test]
    fn tenant_lists_refuse_invalid_ids() {
        assert_eq!(tenant_list("A, b,,").unwrap().len(), 2);
        assert!(tenant_list("A, b.c").is_err());
    }
}
