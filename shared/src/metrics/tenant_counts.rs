//! The per-tenant event counters: `<prefix>_events_received_total`, `_events_processed_total`,
//! `_events_failed_total` and `_event_processing_actions_total`, labels `event_type`,
//! `company_id`, `consumer_type` (and `action`).
//!
//! They make one series per tenant, event type and family: 2,000 tenants are tens of thousands
//! of series. The Prometheus recorder keeps each series as a key of its own (its label values
//! allocated one by one) and copies every key to render a scrape: with 2,000 tenants that was
//! about 20 MB held for good and 17 MB more during each scrape, most of a function's memory.
//! Here a (tenant, event type) is one entry of seven numbers whose strings are shared, and a
//! scrape writes the entries straight into the exposition, in the recorder's format.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

/// The values of the `action` label, in the order they are rendered.
const ACTIONS: [&str; 4] = ["ack", "retry", "wait", "dead_letter"];

/// The counters of every function family of a process (see the module).
#[derive(Default)]
pub struct TenantCounts {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    series: HashMap<Series, Counts>,
    /// Every string a series holds, once.
    strings: HashSet<Arc<str>>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Series {
    prefix: Arc<str>,
    company: Arc<str>,
    event_type: Arc<str>,
    consumer_type: &'static str,
}

/// Reads one of an entry's counts.
type CountOf = fn(&Counts) -> u64;

#[derive(Default, Clone, Copy)]
struct Counts {
    received: u64,
    processed: u64,
    failed: u64,
    actions: [u64; ACTIONS.len()],
}

static INSTALLED: OnceLock<TenantCounts> = OnceLock::new();

/// The process's counters, created with the Prometheus recorder.
pub(super) fn install() -> &'static TenantCounts {
    INSTALLED.get_or_init(TenantCounts::default)
}

/// The process's counters, when it exports Prometheus metrics (none in Lambda mode).
pub(super) fn installed() -> Option<&'static TenantCounts> {
    INSTALLED.get()
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.strings.insert(shared.clone());
        shared
    }
}

impl TenantCounts {
    /// Counts `n` events of `company` and `event_type` that ended in `action` (`ack` counts as
    /// processed, anything else as failed).
    pub fn add(
        &self,
        prefix: &str,
        consumer_type: &'static str,
        event_type: &str,
        company: &str,
        action: &'static str,
        n: u64,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let series = Series {
            prefix: inner.intern(prefix),
            company: inner.intern(company),
            event_type: inner.intern(event_type),
            consumer_type,
        };
        let counts = inner.series.entry(series).or_default();
        counts.received += n;
        if action == "ack" {
            counts.processed += n;
        } else {
            counts.failed += n;
        }
        match ACTIONS.iter().position(|a| *a == action) {
            Some(i) => counts.actions[i] += n,
            None => debug_assert!(false, "an action without a counter: {action}"),
        }
    }

    /// Appends the counters to a Prometheus text exposition: per family a `# TYPE` line, its
    /// series (a series exists once it counted an event), and an empty line.
    pub fn render_into(&self, out: &mut String) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut series: Vec<(&Series, &Counts)> = inner.series.iter().collect();
        series.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.reserve(series.len() * 4 * 140);
        let mut rest = &series[..];
        while let Some((first, _)) = rest.first() {
            let end = rest
                .iter()
                .position(|(s, _)| s.prefix != first.prefix)
                .unwrap_or(rest.len());
            let (family, next) = rest.split_at(end);
            let prefix = &first.prefix;
            let plain: [(&str, CountOf); 3] = [
                ("events_received_total", |c| c.received),
                ("events_processed_total", |c| c.processed),
                ("events_failed_total", |c| c.failed),
            ];
            for (name, value) in plain {
                let _ = writeln!(out, "# TYPE {prefix}_{name} counter");
                for (s, c) in family {
                    let v = value(c);
                    if v > 0 {
                        line(out, prefix, name, s, None, v);
                    }
                }
                out.push('\n');
            }
            let name = "event_processing_actions_total";
            let _ = writeln!(out, "# TYPE {prefix}_{name} counter");
            for (s, c) in family {
                for (action, v) in ACTIONS.iter().zip(c.actions) {
                    if v > 0 {
                        line(out, prefix, name, s, Some(action), v);
                    }
                }
            }
            out.push('\n');
            rest = next;
        }
    }
}

/// One sample: `<prefix>_<name>{event_type="…",company_id="…",consumer_type="…"[,action="…"]} v`.
fn line(out: &mut String, prefix: &str, name: &str, s: &Series, action: Option<&str>, v: u64) {
    let _ = write!(out, "{prefix}_{name}{{event_type=\"");
    escaped(out, &s.event_type);
    out.push_str("\",company_id=\"");
    escaped(out, &s.company);
    out.push_str("\",consumer_type=\"");
    escaped(out, s.consumer_type);
    if let Some(action) = action {
        out.push_str("\",action=\"");
        escaped(out, action);
    }
    let _ = writeln!(out, "\"}} {v}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(counts: &TenantCounts) -> String {
        let mut out = String::new();
        counts.render_into(&mut out);
        out
    }

    #[test]
    fn counts_render_in_the_recorder_s_format() {
        let c = TenantCounts::default();
        c.add("svc", "realtime", "chats.upsert", "CMP1", "ack", 3);
        c.add("svc", "realtime", "chats.upsert", "CMP1", "retry", 1);
        c.add("svc", "realtime", "chats.upsert", "CMP1", "ack", 2);
        c.add(
            "svc",
            "realtime",
            "messages.upsert",
            "CMP2",
            "dead_letter",
            1,
        );
        let text = rendered(&c);
        let expected = [
            "# TYPE svc_events_received_total counter",
            "svc_events_received_total{event_type=\"chats.upsert\",company_id=\"CMP1\",consumer_type=\"realtime\"} 6",
            "svc_events_received_total{event_type=\"messages.upsert\",company_id=\"CMP2\",consumer_type=\"realtime\"} 1",
            "",
            "# TYPE svc_events_processed_total counter",
            "svc_events_processed_total{event_type=\"chats.upsert\",company_id=\"CMP1\",consumer_type=\"realtime\"} 5",
            "",
            "# TYPE svc_events_failed_total counter",
            "svc_events_failed_total{event_type=\"chats.upsert\",company_id=\"CMP1\",consumer_type=\"realtime\"} 1",
            "svc_events_failed_total{event_type=\"messages.upsert\",company_id=\"CMP2\",consumer_type=\"realtime\"} 1",
            "",
            "# TYPE svc_event_processing_actions_total counter",
            "svc_event_processing_actions_total{event_type=\"chats.upsert\",company_id=\"CMP1\",consumer_type=\"realtime\",action=\"ack\"} 5",
            "svc_event_processing_actions_total{event_type=\"chats.upsert\",company_id=\"CMP1\",consumer_type=\"realtime\",action=\"retry\"} 1",
            "svc_event_processing_actions_total{event_type=\"messages.upsert\",company_id=\"CMP2\",consumer_type=\"realtime\",action=\"dead_letter\"} 1",
            "",
            "",
        ]
        .join("\n");
        assert_eq!(text, expected);
    }

    #[test]
    fn each_family_prefix_renders_its_own_block_and_strings_are_shared() {
        let c = TenantCounts::default();
        c.add("dlq", "dlq_retry", "dlq.CMP1", "CMP1", "wait", 1);
        c.add("svc", "realtime", "chats.upsert", "CMP1", "ack", 1);
        let text = rendered(&c);
        assert_eq!(text.matches("# TYPE ").count(), 8, "{text}");
        assert!(text.contains("dlq_event_processing_actions_total{event_type=\"dlq.CMP1\",company_id=\"CMP1\",consumer_type=\"dlq_retry\",action=\"wait\"} 1"), "{text}");
        let inner = c.inner.lock().unwrap();
        let company: Vec<_> = inner.series.keys().map(|s| s.company.clone()).collect();
        assert!(Arc::ptr_eq(&company[0], &company[1]));
        assert_eq!(inner.strings.len(), 5);
    }

    #[test]
    fn label_values_are_escaped() {
        let c = TenantCounts::default();
        c.add("svc", "realtime", "a\"b\\c\nd", "CMP", "ack", 1);
        assert!(rendered(&c).contains("event_type=\"a\\\"b\\\\c\\nd\""));
    }
}
