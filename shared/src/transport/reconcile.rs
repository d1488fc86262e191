//! How an existing stream compares with its configured shape, and what reconciling may change.
//!
//! Reconciling never weakens a stream an operator has tuned (SPEC §1): subjects missing from it
//! are added and explicitly configured settings (`STREAM_REPLICAS`, `DLQ_MAX_AGE`) applied; a
//! limit raised by hand, a replica count chosen by hand or an extra subject is kept; what cannot
//! be fixed safely (retention, storage, a limit below the configured one) is only reported.
//! [`compare`] decides, without I/O, so the functions and `wa-admin streams` agree.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use serde::Serialize;

/// A configured value, and whether it was set explicitly (then it is applied to an existing
/// stream too) or is the default (then it only shapes a new stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting<T> {
    Default(T),
    Explicit(T),
}

impl<T: Copy> Setting<T> {
    /// `Explicit(v)` when `value` is set, else `Default(default)`.
    pub fn or_default(value: Option<T>, default: T) -> Self {
        value.map_or(Setting::Default(default), Setting::Explicit)
    }

    pub fn value(&self) -> T {
        match self {
            Setting::Default(v) | Setting::Explicit(v) => *v,
        }
    }
}

/// The shape a stream must have.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: Vec<String>,
    pub max_age: Setting<Duration>,
    pub replicas: Setting<usize>,
}

/// The duplicate window of a new stream (the server's default). Dead letters and replays rely on
/// it to publish once; a stream may have a longer one.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What reconciling does about one difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Updated in place: a missing subject, an explicitly configured setting.
    Update,
    /// An operator's tuning that does not weaken the stream: left as it is.
    Keep,
    /// Cannot be fixed safely: left as it is, and reported (log and `/ready`).
    Report,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Update => "update",
            Verdict::Keep => "keep",
            Verdict::Report => "report",
        })
    }
}

/// One setting in which a stream differs from its configured shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub field: &'static str,
    pub current: String,
    pub configured: String,
    pub verdict: Verdict,
    /// Why, for people.
    pub reason: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} (configured {}): {}",
            self.field, self.current, self.configured, self.reason
        )
    }
}

/// A stream's differences from its shape, and the configuration that fixes those it may fix.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub differences: Vec<Difference>,
    /// `Some` when a difference is [`Verdict::Update`]: the current configuration with only
    /// those differences changed.
    pub update: Option<StreamConfig>,
}

/// The configuration of a stream created from `spec`.
pub fn new_stream_config(spec: &StreamSpec) -> StreamConfig {
    StreamConfig {
        name: spec.name.to_owned(),
        subjects: spec.subjects.clone(),
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_age: spec.max_age.value(),
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: spec.replicas.value().max(1),
        ..Default::default()
    }
}

/// Compares an existing stream's configuration with its shape.
pub fn compare(spec: &StreamSpec, current: &StreamConfig) -> Comparison {
    let mut out = Vec::new();
    let mut next = current.clone();
    let mut diff = |field, current: String, configured: String, verdict, reason: &str| {
        out.push(Difference {
            field,
            current,
            configured,
            verdict,
            reason: reason.to_owned(),
        })
    };

    let missing: Vec<&String> = spec
        .subjects
        .iter()
        .filter(|s| !current.subjects.iter().any(|c| covers(c, s)))
        .collect();
    let extra: Vec<&String> = current
        .subjects
        .iter()
        .filter(|c| !spec.subjects.iter().any(|s| covers(s, c)))
        .collect();
    if !missing.is_empty() {
        next.subjects.extend(missing.iter().map(|s| (*s).clone()));
        diff(
            "subjects",
            list(&current.subjects),
            list(&spec.subjects),
            Verdict::Update,
            &format!("adding {}", list(&missing)),
        );
    }
    if !extra.is_empty() {
        diff(
            "extra subjects",
            list(&extra),
            "none".into(),
            Verdict::Keep,
            "an operator's subjects are kept",
        );
    }

    if current.retention != RetentionPolicy::Limits {
        diff(
            "retention",
            format!("{:?}", current.retention).to_lowercase(),
            "limits".into(),
            Verdict::Report,
            "messages may be removed before every consumer has them; a stream's retention cannot be changed in place",
        );
    }
    if current.storage != StorageType::File {
        diff(
            "storage",
            format!("{:?}", current.storage).to_lowercase(),
            "file".into(),
            Verdict::Report,
            "memory storage loses every message when the server restarts; storage cannot be changed in place",
        );
    }
    if current.sealed {
        diff(
            "sealed",
            "true".into(),
            "false".into(),
            Verdict::Report,
            "a sealed stream stores no new message",
        );
    }

    let replicas = current.num_replicas.max(1);
    match spec.replicas {
        Setting::Explicit(want) if want != replicas => {
            next.num_replicas = want;
            diff(
                "replicas",
                replicas.to_string(),
                want.to_string(),
                Verdict::Update,
                "STREAM_REPLICAS is set",
            );
        }
        Setting::Default(want) if want != replicas => diff(
            "replicas",
            replicas.to_string(),
            want.to_string(),
            Verdict::Keep,
            "an existing stream keeps its replicas unless STREAM_REPLICAS is set",
        ),
        _ => {}
    }

    let age = current.max_age;
    match spec.max_age {
        Setting::Explicit(want) if want != age => {
            next.max_age = want;
            diff(
                "max_age",
                duration(age),
                duration(want),
                Verdict::Update,
                "DLQ_MAX_AGE is set",
            );
        }
        Setting::Default(want) if age.is_zero() || age > want => diff(
            "max_age",
            duration(age),
            duration(want),
            Verdict::Keep,
            "a longer retention is kept",
        ),
        Setting::Default(want) if age < want => diff(
            "max_age",
            duration(age),
            duration(want),
            Verdict::Report,
            "messages may expire before they are processed; raise it by hand if that is not intended",
        ),
        _ => {}
    }

    let window = current.duplicate_window;
    if window > DUPLICATE_WINDOW {
        diff(
            "duplicate_window",
            duration(window),
            duration(DUPLICATE_WINDOW),
            Verdict::Keep,
            "a longer duplicate window is kept",
        );
    } else if !window.is_zero() && window < DUPLICATE_WINDOW {
        diff(
            "duplicate_window",
            duration(window),
            duration(DUPLICATE_WINDOW),
            Verdict::Report,
            "a dead letter or replay published twice may be stored twice",
        );
    }

    let limits: [(&'static str, i64); 5] = [
        ("max_bytes", current.max_bytes),
        ("max_msgs", current.max_messages),
        ("max_msgs_per_subject", current.max_messages_per_subject),
        ("max_msg_size", i64::from(current.max_message_size)),
        ("max_consumers", i64::from(current.max_consumers)),
    ];
    for (field, value) in limits {
        if value > 0 {
            diff(
                field,
                value.to_string(),
                "unlimited".into(),
                Verdict::Keep,
                "an operator's limit is kept",
            );
        }
    }
    if current.discard != DiscardPolicy::Old {
        diff(
            "discard",
            format!("{:?}", current.discard).to_lowercase(),
            "old".into(),
            Verdict::Keep,
            "an operator's discard policy is kept",
        );
    }

    let update = out
        .iter()
        .any(|d| d.verdict == Verdict::Update)
        .then_some(next);
    Comparison {
        differences: out,
        update,
    }
}

/// Whether the subject filter `pattern` matches every subject `subject` matches (NATS
/// wildcards: `*` one token, `>` one or more trailing tokens).
pub fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A retention-like duration for people: `30d`, `2m`, `90s`; zero is `unlimited`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.is_zero() {
        "unlimited".into()
    } else if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn spec(replicas: Setting<usize>, max_age: Setting<Duration>) -> StreamSpec {
        StreamSpec {
            name: "s",
            subjects: vec!["v1.a.b.*".into(), "v1.c.d.*".into()],
            max_age,
            replicas,
        }
    }

    fn default_spec() -> StreamSpec {
        spec(Setting::Default(1), Setting::Default(30 * DAY))
    }

    fn verdicts(c: &Comparison) -> Vec<(&'static str, Verdict)> {
        c.differences.iter().map(|d| (d.field, d.verdict)).collect()
    }

    #[test]
    fn a_stream_of_the_configured_shape_has_no_difference() {
        let s = default_spec();
        let c = compare(&s, &new_stream_config(&s));
        assert!(c.differences.is_empty(), "{:?}", c.differences);
        assert!(c.update.is_none());
    }

    #[test]
    fn an_operators_tuning_is_kept() {
        let s = default_spec();
        let mut tuned = new_stream_config(&s);
        tuned.num_replicas = 3;
        tuned.max_age = 90 * DAY;
        tuned.max_bytes = 10 << 30;
        tuned.duplicate_window = Duration::from_secs(600);
        tuned.subjects.push("ops.audit.>".into());
        let c = compare(&s, &tuned);
        assert!(c.update.is_none(), "{:?}", c.differences);
        assert!(c.differences.iter().all(|d| d.verdict == Verdict::Keep));
        assert_eq!(
            verdicts(&c),
            [
                ("extra subjects", Verdict::Keep),
                ("replicas", Verdict::Keep),
                ("max_age", Verdict::Keep),
                ("duplicate_window", Verdict::Keep),
                ("max_bytes", Verdict::Keep),
            ]
        );
        // Unlimited is longer than any age.
        tuned.max_age = Duration::ZERO;
        assert!(compare(&s, &tuned).update.is_none());
    }

    #[test]
    fn missing_subjects_are_added_and_nothing_else_changes() {
        let s = default_spec();
        let mut current = new_stream_config(&s);
        current.subjects = vec!["v1.a.b.*".into(), "ops.x".into()];
        current.max_bytes = 1 << 30;
        let c = compare(&s, &current);
        let next = c.update.expect("update");
        assert_eq!(next.subjects, ["v1.a.b.*", "ops.x", "v1.c.d.*"]);
        assert_eq!(next.max_bytes, 1 << 30);
        // A broader subject already takes ours.
        current.subjects = vec!["v1.>".into()];
        let c = compare(&s, &current);
        assert!(c.update.is_none(), "{:?}", c.differences);
    }

    #[test]
    fn explicit_settings_are_applied() {
        let s = spec(Setting::Explicit(3), Setting::Explicit(14 * DAY));
        let mut current = new_stream_config(&default_spec());
        current.max_age = 7 * DAY;
        let c = compare(&s, &current);
        let next = c.update.expect("update");
        assert_eq!((next.num_replicas, next.max_age), (3, 14 * DAY));
        // Explicit means explicit: lowering too.
        let s = spec(Setting::Explicit(1), Setting::Explicit(DAY));
        current.num_replicas = 3;
        let next = compare(&s, &current).update.expect("update");
        assert_eq!((next.num_replicas, next.max_age), (1, DAY));
    }

    #[test]
    fn what_cannot_be_fixed_safely_is_reported_and_left_alone() {
        let s = default_spec();
        let mut current = new_stream_config(&s);
        current.retention = RetentionPolicy::WorkQueue;
        current.storage = StorageType::Memory;
        current.max_age = DAY;
        current.duplicate_window = Duration::from_secs(1);
        let c = compare(&s, &current);
        assert!(c.update.is_none());
        assert_eq!(
            verdicts(&c),
            [
                ("retention", Verdict::Report),
                ("storage", Verdict::Report),
                ("max_age", Verdict::Report),
                ("duplicate_window", Verdict::Report),
            ]
        );
        assert!(c.differences[0].to_string().contains("workqueue"));
        // Alongside a fixable difference, only that one changes.
        current.subjects.pop();
        let next = compare(&s, &current).update.expect("update");
        assert_eq!(next.retention, RetentionPolicy::WorkQueue);
        assert_eq!(next.max_age, DAY);
        assert_eq!(next.subjects.len(), 2);
    }

    #[test]
    fn subject_coverage_follows_nats_wildcards() {
        assert!(covers("v1.a.b.*", "v1.a.b.*"));
        assert!(covers("v1.a.b.*", "v1.a.b.C1"));
        assert!(covers("v1.>", "v1.a.b.*"));
        assert!(covers("v1.*.*.*", "v1.a.b.*"));
        assert!(!covers("v1.a.b.*", "v1.a.b.>"));
        assert!(!covers("v1.a.b.C1", "v1.a.b.*"));
        assert!(!covers("v1.a.*", "v1.a.b.*"));
        assert!(!covers("v1.a.b.*.>", "v1.a.b.*"));
    }

    #[test]
    fn durations_read_like_settings() {
        assert_eq!(duration(30 * DAY), "30d");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::ZERO), "unlimited");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
    }
}
