//! What a load generator run measured: events published and refused, time, rate.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::json;

/// The outcome of a publishing run. Only events the stream acknowledged count as published.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub published: u64,
    /// Publishes that failed or whose ack was an error or timed out.
    pub errors: u64,
    /// From the first publish to the last ack.
    pub elapsed: Duration,
    /// Body bytes of the published events.
    pub bytes: u64,
    /// Published events per subject base (`chats.update`, …).
    pub by_subject: BTreeMap<&'static str, u64>,
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
            "published {} events ({} errors) in {:.3} s: {:.0} events/s, {:.1} MB",
            self.published,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            self.bytes as f64 / 1e6
        )?;
        for (subject, n) in &self.by_subject {
            writeln!(f, "  {subject:<20} {n:>9}")?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "first error: {e}")?;
        }
        Ok(())
    }
}
