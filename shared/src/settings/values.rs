//! The value types of settings and their parsers: durations, tenant lists, URLs, and secrets
//! that never show in logs or `Debug` output.

use std::collections::{BTreeMap, BTreeSet};
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

/// `TENANT_DATABASES`: placement names and their databases (SPEC §17).
#[derive(Debug, Clone, Default)]
pub struct TenantDatabases(pub BTreeMap<String, Secret>);

/// `name=postgres://…` pairs, comma-separated. Names are 1–32 of `a-z 0-9 _ -`; `default` is
/// `DATABASE_URL` and cannot be given here.
pub fn tenant_databases(s: &str) -> Result<TenantDatabases, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = pair
            .split_once('=')
            .ok_or_else(|| "expected name=postgres://… pairs, comma-separated".to_owned())?;
        let name = name.trim();
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            return Err(format!(
                "placement name {name:?}: expected 1 to 32 of a-z, 0-9, _ and -"
            ));
        }
        if name == crate::store::placement::DEFAULT_PLACEMENT {
            return Err("placement \"default\" is DATABASE_URL; name the others".into());
        }
        let url = postgres_url(url).map_err(|e| format!("placement {name}: {e}"))?;
        if out.insert(name.to_owned(), url).is_some() {
            return Err(format!("placement {name} is given twice"));
        }
    }
    Ok(TenantDatabases(out))
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

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the base URL of an OTLP/HTTP receiver (spans go to
/// `<endpoint>/v1/traces`).
pub fn otlp_endpoint(s: &str) -> Result<String, String> {
    let url = s.trim().trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(url.to_owned()),
        _ => Err("expected the http:// or https:// URL of an OTLP/HTTP receiver".into()),
    }
}

/// `OTEL_TRACES_SAMPLER_ARG`: the share of traces started here that are recorded, 0 to 1.
pub fn sample_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a ratio from 0 to 1 (e.g. 0.01)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_databases_parse_and_name_what_is_wrong() {
        let t = tenant_databases("eu=postgres://a@h1/db, us=postgresql://b@h2:5433/db").unwrap();
        assert_eq!(t.0.keys().collect::<Vec<_>>(), ["eu", "us"]);
        assert_eq!(t.0["us"].expose(), "postgresql://b@h2:5433/db");
        assert!(tenant_databases("").unwrap().0.is_empty());
        let err = |s: &str| tenant_databases(s).unwrap_err();
        assert!(err("postgres://a@h/db").contains("name=postgres://"));
        assert!(err("default=postgres://a@h/db").contains("DATABASE_URL"));
        assert!(err("EU=postgres://a@h/db").contains("\"EU\""));
        assert!(err("eu=mysql://a@h/db").contains("placement eu"));
        assert!(err("eu=postgres://a@h/db,eu=postgres://b@h/db").contains("twice"));
    }

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
    fn otel_values_parse() {
        assert_eq!(
            otlp_endpoint(" http://collector:4318/ ").unwrap(),
            "http://collector:4318"
        );
        assert!(otlp_endpoint("https://otlp.example.com/otlp").is_ok());
        for bad in ["collector:4318", "grpc://c:4317", "http://", "http:// x"] {
            assert!(otlp_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(sample_ratio("0.01").unwrap(), 0.01);
        assert_eq!(sample_ratio("1").unwrap(), 1.0);
        for bad in ["-0.1", "1.5", "half", "NaN"] {
            assert!(sample_ratio(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_lists_refuse_invalid_ids() {
        assert_eq!(tenant_list("A, b,,").unwrap().len(), 2);
        assert!(tenant_list("A, b.c").is_err());
    }
}
