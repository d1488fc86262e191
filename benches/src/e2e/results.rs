//! Everything a run measured, and the report rows: each number next to its raw limit, the
//! ratio, the SPEC §13 target and whether it is met.

use std::time::Duration;

use serde_json::json;

use super::burst::Burst;
use super::latency::Latency;
use super::machine::Machine;
use super::raw_jetstream::JetStreamLimit;
use super::raw_sql::{self, SqlLimit};
use super::sweep::Step;
use super::throughput::Throughput;

/// SPEC §13 targets.
pub const REALTIME_MIN_RATIO: f64 = 0.50;
pub const REALTIME_MIN_EVENTS_PER_SEC: f64 = 15_000.0;
pub const HISTORY_MIN_RATIO: f64 = 0.75;
pub const LATENCY_MAX_P99_MS: f64 = 25.0;
pub const LATENCY_TARGET_RATE: f64 = 2000.0;
pub const MAX_RSS_MIB: f64 = 64.0;
/// The sweep's reference tenant count, and the many-tenant count with targets against it.
pub const BASE_TENANTS: usize = 4;
pub const MANY_TENANTS: usize = 512;
pub const MANY_TENANTS_MIN_RATIO_TO_BASE: f64 = 0.60;
pub const MANY_TENANTS_MIN_RATIO_TO_RAW: f64 = 0.35;
pub const BURST_MAX_SECONDS: f64 = 60.0;

/// A run's measurements.
#[derive(Debug, Clone)]
pub struct Results {
    pub settings: serde_json::Value,
    pub machine: Machine,
    pub jetstream: JetStreamLimit,
    pub raw_realtime: SqlLimit,
    pub raw_history: SqlLimit,
    pub realtime: Throughput,
    /// One per `--latency-tenants` count.
    pub latencies: Vec<Latency>,
    pub history: Throughput,
    /// What the history phase published: `history.messages` or all three history subjects.
    pub history_subjects: &'static str,
    pub rss_realtime: u64,
    pub rss_historical: u64,
    /// The tenant sweep, by tenant count.
    pub sweep: Vec<Step>,
    pub burst: Burst,
    pub dead_letters: u64,
    pub wall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// No target: context for the other numbers.
    Info,
}

impl Verdict {
    fn of(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "-",
        }
    }
}

/// One line of the report table.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub value: f64,
    pub unit: &'static str,
    pub limit: Option<(String, f64)>,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    fn new(what: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Row {
            what: what.into(),
            value,
            unit,
            limit: None,
            target: "-".into(),
            verdict: Verdict::Info,
        }
    }

    fn limit(mut self, name: impl Into<String>, value: f64) -> Self {
        self.limit = Some((name.into(), value));
        self
    }

    fn target(mut self, target: impl Into<String>, ok: bool) -> Self {
        self.target = target.into();
        self.verdict = Verdict::of(ok);
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.limit
            .as_ref()
            .filter(|(_, l)| *l > 0.0)
            .map(|(_, l)| self.value / l)
    }

    pub fn measured_text(&self) -> String {
        format!("{} {}", number(self.value, self.unit), self.unit)
    }

    pub fn limit_text(&self) -> String {
        match &self.limit {
            Some((name, v)) => format!("{} ({name})", number(*v, self.unit)),
            None => "-".into(),
        }
    }

    pub fn ratio_text(&self) -> String {
        self.ratio()
            .map_or("-".into(), |r| format!("{:.1} %", r * 100.0))
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "what": self.what,
            "value": self.value,
            "unit": self.unit,
            "limit": self.limit.as_ref().map(|(n, v)| json!({"name": n, "value": v})),
            "ratio": self.ratio(),
            "target": self.target,
            "result": self.verdict.label(),
        })
    }
}

/// Integers with thousands separators; milliseconds and MiB with one decimal.
pub fn number(v: f64, unit: &str) -> String {
    if matches!(unit, "ms" | "MiB" | "s") {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const MIB: f64 = 1024.0 * 1024.0;

/// "raw SQL", with the number of connections when there were several.
fn raw_label(name: &str, limit: &SqlLimit) -> String {
    match limit.connections {
        0 | 1 => name.to_owned(),
        n => format!("{name}, {n} conns"),
    }
}

impl Results {
    pub fn rows(&self) -> Vec<Row> {
        let rt = self.realtime.events_per_sec();
        let raw_rt = self.raw_realtime.events_per_sec();
        let hist = self.history.rows_per_sec();
        let raw_hist = self.raw_history.rows_per_sec();
        let mut rows = vec![
            Row::new("realtime e2e (events = rows)", rt, "events/s")
                .limit(raw_label("raw SQL", &self.raw_realtime), raw_rt)
                .target(
                    format!(">= {:.0} % of raw", REALTIME_MIN_RATIO * 100.0),
                    rt >= REALTIME_MIN_RATIO * raw_rt,
                ),
            Row::new("realtime e2e, absolute", rt, "events/s").target(
                format!(">= {} /s", number(REALTIME_MIN_EVENTS_PER_SEC, "")),
                rt >= REALTIME_MIN_EVENTS_PER_SEC,
            ),
            Row::new("realtime e2e vs JetStream consume", rt, "events/s")
                .limit("raw consume", self.jetstream.consume_per_sec()),
            Row::new(
                "realtime publish during e2e",
                self.realtime.publish.events_per_sec(),
                "msg/s",
            )
            .limit("raw publish", self.jetstream.publish_per_sec()),
            Row::new(
                format!("history e2e ({})", self.history_subjects),
                hist,
                "rows/s",
            )
            .limit(raw_label("raw SQL upserts", &self.raw_history), raw_hist)
            .target(
                format!(">= {:.0} % of raw", HISTORY_MIN_RATIO * 100.0),
                hist >= HISTORY_MIN_RATIO * raw_hist,
            ),
            Row::new(
                "history e2e batches",
                self.history.events_per_sec(),
                "batches/s",
            )
            .limit(
                raw_label("raw SQL", &self.raw_history),
                self.raw_history.events_per_sec(),
            ),
        ];
        rows.extend(self.sweep_rows());
        for latency in &self.latencies {
            rows.extend(latency_rows(latency));
        }
        rows.extend([
            rss_row("peak RSS wa-realtime", self.rss_realtime),
            rss_row("peak RSS wa-historical", self.rss_historical),
            rss_row(
                format!(
                    "peak RSS wa-realtime, {} tenants",
                    number(self.burst.tenants as f64, "")
                ),
                self.burst.rss,
            ),
        ]);
        rows.extend(self.burst_rows());
        rows.push(
            Row::new("dead letters", self.dead_letters as f64, "events")
                .target("0", self.dead_letters == 0),
        );
        rows
    }

    /// The sweep step at `tenants`, if the sweep had it.
    pub fn sweep_at(&self, tenants: usize) -> Option<&Step> {
        self.sweep.iter().find(|s| s.tenants == tenants)
    }

    /// The sweep's targets: 4 tenants against raw and absolute, 512 against raw and 4.
    fn sweep_rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let label = |s: &Step| {
            format!(
                "realtime e2e, {} tenants × {} agents",
                number(s.tenants as f64, ""),
                s.agents_per_tenant
            )
        };
        let raw_name = |s: &Step| {
            format!(
                "raw SQL, {}",
                s.raw_best().map_or("-", |r| r.variant.name())
            )
        };
        let base = self.sweep_at(BASE_TENANTS);
        if let Some(b) = base {
            let (v, raw) = (b.events_per_sec(), b.raw_per_sec());
            rows.push(
                Row::new(label(b), v, "events/s")
                    .limit(raw_name(b), raw)
                    .target(
                        format!(">= {:.0} % of raw", REALTIME_MIN_RATIO * 100.0),
                        v >= REALTIME_MIN_RATIO * raw,
                    ),
            );
            rows.push(
                Row::new(format!("{}, absolute", label(b)), v, "events/s").target(
                    format!(">= {} /s", number(REALTIME_MIN_EVENTS_PER_SEC, "")),
                    v >= REALTIME_MIN_EVENTS_PER_SEC,
                ),
            );
        }
        if let Some(m) = self.sweep_at(MANY_TENANTS) {
            let (v, raw) = (m.events_per_sec(), m.raw_per_sec());
            rows.push(
                Row::new(label(m), v, "events/s")
                    .limit(raw_name(m), raw)
                    .target(
                        format!(">= {:.0} % of raw", MANY_TENANTS_MIN_RATIO_TO_RAW * 100.0),
                        v >= MANY_TENANTS_MIN_RATIO_TO_RAW * raw,
                    ),
            );
            if let Some(b) = base {
                rows.push(
                    Row::new(
                        format!("{} vs {BASE_TENANTS} tenants", label(m)),
                        v,
                        "events/s",
                    )
                    .limit(format!("{BASE_TENANTS}-tenant e2e"), b.events_per_sec())
                    .target(
                        format!(
                            ">= {:.0} % of the {BASE_TENANTS}-tenant rate",
                            MANY_TENANTS_MIN_RATIO_TO_BASE * 100.0
                        ),
                        v >= MANY_TENANTS_MIN_RATIO_TO_BASE * b.events_per_sec(),
                    ),
                );
            }
        }
        rows
    }

    fn burst_rows(&self) -> Vec<Row> {
        let b = &self.burst;
        let what = format!(
            "new-tenant burst, {} tenants × {}: first publish -> all committed",
            number(b.tenants as f64, ""),
            b.per_tenant
        );
        let time = match b.elapsed() {
            Some(d) => Row::new(what, d.as_secs_f64(), "s").target(
                format!("<= {BURST_MAX_SECONDS:.0} s"),
                d.as_secs_f64() <= BURST_MAX_SECONDS,
            ),
            None => Row::new(
                format!(
                    "{what} (only {} of {} committed)",
                    b.committed, b.drain.events
                ),
                b.drain.elapsed.as_secs_f64(),
                "s",
            )
            .target(format!("<= {BURST_MAX_SECONDS:.0} s"), false),
        };
        let held = match b.held {
            Some(h) => {
                Row::new("batches held during the burst", h as f64, "batches").target("0", h == 0)
            }
            None => Row::new("batches held during the burst", 0.0, "batches")
                .target("0 (/metrics unreadable)", false),
        };
        let mut rows = vec![
            time,
            held,
            Row::new("dead letters of the burst", b.dead_letters as f64, "events")
                .target("0", b.dead_letters == 0),
        ];
        if let Some(load) = &b.load {
            let mut notes = Vec::new();
            if !load.complete {
                notes.push(format!(
                    "only {} of {} acknowledged",
                    load.acknowledged, load.events
                ));
            }
            match b.load_held {
                Some(0) => {}
                Some(h) => notes.push(format!("{h} batches held")),
                None => notes.push("held batches unknown".into()),
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            rows.push(Row::new(
                format!(
                    "then {} events of those tenants (the RSS load){notes}",
                    number(load.events as f64, "")
                ),
                load.events_per_sec(),
                "events/s",
            ));
        }
        rows
    }
    /// True when every target is met.
    pub fn all_pass(&self) -> bool {
        self.rows().iter().all(|r| r.verdict != Verdict::Fail)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "settings": self.settings,
            "machine": self.machine.to_json(),
            "table": self.rows().iter().map(Row::to_json).collect::<Vec<_>>(),
            "all_targets_met": self.all_pass(),
            "sweep": self.sweep.iter().map(|s| s.to_json(self.sweep_at(BASE_TENANTS).map(Step::events_per_sec))).collect::<Vec<_>>(),
            "burst": self.burst.to_json(),
            "raw": {
                "jetstream": self.jetstream.to_json(),
                "sql_realtime": self.raw_realtime.to_json(&raw_sql::schema_of(raw_sql::REALTIME_TENANT)),
                "sql_history": self.raw_history.to_json(&raw_sql::schema_of(raw_sql::HISTORY_TENANT)),
            },
            "e2e": {
                "realtime": self.realtime.to_json(),
                "latency": self.latencies.iter().map(Latency::to_json).collect::<Vec<_>>(),
                "history": self.history.to_json(),
                "history_subjects": self.history_subjects,
                "peak_rss_bytes": {"wa-realtime": self.rss_realtime, "wa-historical": self.rss_historical},
                "dead_letters": self.dead_letters,
            },
            "wall_s": self.wall.as_secs_f64(),
        })
    }
}

/// p50 (context), p99 (the target at 2k/s) and max of one latency phase.
fn latency_rows(latency: &Latency) -> Vec<Row> {
    let at = format!(
        "{} tenants at {}/s",
        number(latency.tenants as f64, ""),
        number(latency.rate, "")
    );
    let p99 = Row::new(format!("publish->commit p99, {at}"), latency.p99_ms, "ms");
    let p99_target = format!(
        "<= {LATENCY_MAX_P99_MS:.0} ms at {}/s",
        number(LATENCY_TARGET_RATE, "")
    );
    // The latency target is defined at 2k/s only: at another rate the number is context.
    let p99 = if latency.rate == LATENCY_TARGET_RATE {
        p99.target(p99_target, latency.p99_ms <= LATENCY_MAX_P99_MS)
    } else {
        Row {
            target: p99_target,
            ..p99
        }
    };
    vec![
        Row::new(format!("publish->commit p50, {at}"), latency.p50_ms, "ms"),
        p99,
        Row::new(format!("publish->commit max, {at}"), latency.max_ms, "ms"),
    ]
}

/// A function's peak RSS (bytes) against the SPEC's limit.
fn rss_row(name: impl Into<String>, bytes: u64) -> Row {
    let mib = bytes as f64 / MIB;
    Row::new(name, mib, "MiB").target(format!("<= {MAX_RSS_MIB:.0} MiB"), mib <= MAX_RSS_MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(number(28412.4, "events/s"), "28,412");
        assert_eq!(number(999.0, "msg/s"), "999");
        assert_eq!(number(1_000_000.0, ""), "1,000,000");
        assert_eq!(number(12.345, "ms"), "12.3");
    }

    #[test]
    fn a_ratio_needs_a_limit() {
        let row = Row::new("x", 50.0, "events/s").limit("raw", 200.0);
        assert_eq!(row.ratio(), Some(0.25));
        assert_eq!(row.ratio_text(), "25.0 %");
        assert_eq!(Row::new("y", 1.0, "ms").ratio_text(), "-");
    }
}
