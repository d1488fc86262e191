//! What a load generator run measured: events published, retried and given up, time, rate.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::json;

/// The outcome of a publishing run. Only events the stream acknowledged count as published,
/// each once however many attempts it took.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub published: u64,
    /// Events given up on: every attempt failed (the publish, or its ack was an error or timed
    /// out) until the retry bound, or the failure was one a resend cannot fix.
    pub errors: u64,
    /// Publish attempts beyond each event's first.
    pub retries: u64,
    /// Published events whose ack said the stream already had them: an earlier attempt was
    /// stored and only its ack was lost (deduplicated by `Nats-Msg-Id`).
    pub duplicates: u64,
    /// From the first publish to the last ack.
    pub elapsed: Duration,
    /// Body bytes of the published events.
    pub bytes: u64,
    /// Published events per subject base (`chats.update`, …).
    pub by_subject: BTreeMap<&'static str, u64>,
    /// The first failed attempt's error, whether the event was then retried or given up.
    pub first_error: Option<String>,
}

/// `count` things in `elapsed`, per second (an empty interval counts as a nanosecond).
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

impl Report {
    pub fn events_per_sec(&self) -> f64 {
        per_sec(self.published, self.elapsed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "published": self.published,
            "errors": self.errors,
            "retries": self.retries,
            "duplicates": self.duplicates,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_s": self.events_per_sec(),
            "bytes": self.bytes,
            "by_subject": self.by_subject,
            "first_error": self.first_error,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "published {} events ({} errors, {} retries) in {:.3} s: {:.0} events/s, {:.1} MB",
            self.published,
            self.errors,
            self.retries,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            self.bytes as f64 / 1e6
        )?;
        for (subject, n) in &self.by_subject {
            writeln!(f, "  {subject:<20} {n:>9}")?;
        }
        if self.duplicates > 0 {
            writeln!(
                f,
                "{} retried events had been stored by an earlier attempt (deduplicated)",
                self.duplicates
            )?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "first error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retried_run() -> Report {
        Report {
            published: 998,
            errors: 2,
            retries: 41,
            duplicates: 3,
            elapsed: Duration::from_secs(2),
            bytes: 1_000_000,
            by_subject: BTreeMap::from([("chats.update", 998)]),
            first_error: Some("no stream found for given subject".into()),
        }
    }

    #[test]
    fn the_json_report_counts_retries_and_errors() {
        let json = retried_run().to_json();
        assert_eq!(json["published"], 998);
        assert_eq!(json["errors"], 2);
        assert_eq!(json["retries"], 41);
        assert_eq!(json["duplicates"], 3);
        assert_eq!(json["first_error"], "no stream found for given subject");
    }

    #[test]
    fn the_text_report_counts_retries_and_errors() {
        let text = retried_run().to_string();
        assert!(
            text.starts_with("published 998 events (2 errors, 41 retries) in 2.000 s"),
            "{text}"
        );
        assert!(
            text.contains("3 retried events had been stored by an earlier attempt"),
            "{text}"
        );
        assert!(
            text.contains("first error: no stream found for given subject"),
            "{text}"
        );
        let clean = Report::default().to_string();
        assert!(!clean.contains("earlier attempt"), "{clean}");
    }
}
