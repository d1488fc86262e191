//! The three streams and the durable pull consumers, created or reconciled at startup.
//!
//! Streams are never deleted or recreated. A new stream gets the configured shape; an existing
//! one is compared with it ([`super::reconcile`]): missing subjects are added and explicitly
//! configured settings applied in place, an operator's tuning is kept, and what cannot be fixed
//! safely is reported (the caller logs it and shows it on `/ready`) while the function runs on.
//! Consumers are created or updated in place, so pending messages survive restarts and changes.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamError, GetStreamErrorKind};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;

use crate::model::{Category, EventKind, Subject, TenantId};

use super::reconcile::{compare, new_stream_config, Comparison};
pub use super::reconcile::{Difference, Setting, StreamSpec, Verdict};

pub const REALTIME_STREAM: &str = "wa_events_stream";
pub const HISTORY_STREAM: &str = "wa_history_events_stream";
pub const DLQ_STREAM: &str = "dlq_stream";

/// The max age of the event streams (SPEC §1); an existing stream may keep a longer one.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The max age of a new `dlq_stream` when `DLQ_MAX_AGE` is unset.
pub const DEFAULT_DLQ_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Replicas of a new stream when `STREAM_REPLICAS` is unset.
pub const DEFAULT_REPLICAS: usize = 1;

/// The event kinds a stream stores (none for the dead-letter stream).
pub fn kinds_of(stream: &str) -> Vec<EventKind> {
    let category = match stream {
        REALTIME_STREAM => Category::Realtime,
        HISTORY_STREAM => Category::Historical,
        _ => return Vec::new(),
    };
    EventKind::ALL
        .into_iter()
        .filter(|k| k.category() == category)
        .collect()
}

/// One tenant's subjects of an event stream: `<base>.<company_id>` per subject base.
pub fn tenant_subjects(stream: &str, tenant: &TenantId) -> Vec<String> {
    kinds_of(stream)
        .into_iter()
        .map(|k| Subject::format(k, tenant.as_str()))
        .collect()
}

/// The three streams of SPEC §1 as the functions configure them: `STREAM_REPLICAS` and
/// `DLQ_MAX_AGE` when set (applied to existing streams too), else the defaults for new streams.
pub fn configured_specs(replicas: Option<usize>, dlq_max_age: Option<Duration>) -> Vec<StreamSpec> {
    shaped(
        Setting::or_default(replicas, DEFAULT_REPLICAS),
        Setting::or_default(dlq_max_age, DEFAULT_DLQ_MAX_AGE),
    )
}

/// The three streams with these values for new streams; existing streams keep their replicas
/// and longer retention (tools and tests that create the streams before a function does).
pub fn stream_specs(replicas: usize, dlq_max_age: Duration) -> Vec<StreamSpec> {
    shaped(Setting::Default(replicas), Setting::Default(dlq_max_age))
}

fn shaped(replicas: Setting<usize>, dlq_max_age: Setting<Duration>) -> Vec<StreamSpec> {
    let every_tenant = |stream| {
        kinds_of(stream)
            .into_iter()
            .map(Subject::every_tenant)
            .collect()
    };
    vec![
        StreamSpec {
            name: REALTIME_STREAM,
            subjects: every_tenant(REALTIME_STREAM),
            max_age: Setting::Default(EVENTS_MAX_AGE),
            replicas,
        },
        StreamSpec {
            name: HISTORY_STREAM,
            subjects: every_tenant(HISTORY_STREAM),
            max_age: Setting::Default(EVENTS_MAX_AGE),
            replicas,
        },
        StreamSpec {
            name: DLQ_STREAM,
            subjects: vec![Subject::DEAD_LETTERS.into()],
            max_age: dlq_max_age,
            replicas,
        },
    ]
}

/// Why the broker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("stream {stream}: {error}")]
    Stream { stream: String, error: String },
    #[error("consumer {consumer} on {stream}: {error}")]
    Consumer {
        stream: String,
        consumer: String,
        error: String,
    },
}

/// What reconciling a stream found and did.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub stream: &'static str,
    /// The stream did not exist and was created with the configured shape.
    pub created: bool,
    pub differences: Vec<Difference>,
    /// Why the [`Verdict::Update`] differences still stand (the server refused the update, or
    /// did not apply all of it); reported.
    pub refused: Option<String>,
}

impl Reconciled {
    /// What an operator must look at: differences left alone because changing them is not
    /// safe, and an update the server refused.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .differences
            .iter()
            .filter(|d| d.verdict == Verdict::Report)
            .map(Difference::to_string)
            .collect();
        if let Some(why) = &self.refused {
            let wanted: Vec<String> = self
                .differences
                .iter()
                .filter(|d| d.verdict == Verdict::Update)
                .map(Difference::to_string)
                .collect();
            out.push(format!("could not update ({}): {why}", wanted.join("; ")));
        }
        out
    }

    /// The `/ready` notice for [`Reconciled::problems`], if any.
    pub fn notice(&self) -> Option<String> {
        let problems = self.problems();
        (!problems.is_empty()).then(|| {
            format!(
                "stream {} differs from its configured shape and was left as it is: {} (see `wa-admin streams`)",
                self.stream,
                problems.join("; ")
            )
        })
    }

    /// Logs what happened: updates and problems at WARN, kept tuning at INFO.
    pub fn log(&self) {
        if self.created {
            tracing::info!(stream = self.stream, "stream created");
        }
        for d in &self.differences {
            match (d.verdict, &self.refused) {
                (Verdict::Update, None) => {
                    tracing::warn!(stream = self.stream, difference = %d, "stream updated in place")
                }
                (Verdict::Keep, _) => {
                    tracing::info!(stream = self.stream, difference = %d, "stream tuning kept")
                }
                _ => {}
            }
        }
        for p in self.problems() {
            tracing::warn!(stream = self.stream, problem = %p, "stream differs from its configured shape; left as it is");
        }
    }
}

/// Whether the server answered that the stream does not exist.
pub fn is_stream_not_found(e: &GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.kind() == ErrorCode::STREAM_NOT_FOUND)
}

/// Creates the stream with the configured shape, or reconciles an existing one with it. Errors
/// are failures to talk to the server (worth retrying) or to create a missing stream; an update
/// the server refuses is reported in [`Reconciled::refused`] instead.
pub async fn ensure_stream(js: &Context, spec: &StreamSpec) -> Result<Reconciled, SetupError> {
    let fail = |error: String| SetupError::Stream {
        stream: spec.name.to_owned(),
        error,
    };
    let current = match js.get_stream(spec.name).await {
        Ok(stream) => stream.cached_info().config.clone(),
        Err(e) if is_stream_not_found(&e) => {
            match js.create_stream(new_stream_config(spec)).await {
                Ok(_) => {
                    return Ok(Reconciled {
                        stream: spec.name,
                        created: true,
                        differences: Vec::new(),
                        refused: None,
                    })
                }
                // Another process created it meanwhile (with its own settings): reconcile that one.
                Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(j) if j.kind() == ErrorCode::STREAM_NAME_EXIST) => {
                    js.get_stream(spec.name)
                        .await
                        .map_err(|e| fail(e.to_string()))?
                        .cached_info()
                        .config
                        .clone()
                }
                Err(e) => return Err(fail(format!("cannot be created: {e}"))),
            }
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let Comparison {
        differences,
        update,
    } = compare(spec, &current);
    let mut refused = None;
    if let Some(next) = update {
        match js.update_stream(&next).await {
            // nats-server 2.9 answers a single server's update to 3 replicas with success and
            // keeps 1: what it did not apply is reported like a refusal.
            Ok(info) => {
                let kept: Vec<String> = compare(spec, &info.config)
                    .differences
                    .into_iter()
                    .filter(|d| d.verdict == Verdict::Update)
                    .map(|d| d.to_string())
                    .collect();
                if !kept.is_empty() {
                    refused = Some(format!("the server kept {}", kept.join("; ")));
                }
            }
            Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(_)) => {
                refused = Some(e.to_string())
            }
            Err(e) => return Err(fail(format!("updating: {e}"))),
        }
    }
    Ok(Reconciled {
        stream: spec.name,
        created: false,
        differences,
        refused,
    })
}

/// How long the server waits for an ack before delivering a message again. Independent of the
/// retry backoff (retries are explicit NAK delays) and long enough that the in-progress acks of
/// [`KEEPALIVE`] keep any batch alive with a wide margin, across a leader election too.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// How often a held message gets an in-progress ack: three times per [`ACK_WAIT`].
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// The shape a durable pull consumer must have.
///
/// The server never gives up on a message (`max_deliver` unlimited, no server-side backoff):
/// the function counts processing attempts itself and dead-letters on the last one, so a
/// delivery the function never saw (a failover, a process killed while holding it) can never
/// make the server drop a message silently (SPEC §1).
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: &'static str,
    pub durable: String,
    /// The subjects it takes; empty: the whole stream. Several need nats-server 2.10
    /// (`filter_subjects`); an older server takes one filter per consumer, so there the
    /// consumer takes the whole stream and the runner acknowledges other tenants' events
    /// unprocessed (they are their own consumers' to process).
    pub filters: Vec<String>,
    pub max_ack_pending: i64,
}

/// Whether a nats-server of this version (its `INFO`, e.g. `2.10.7`) takes `filter_subjects`:
/// 2.10 and later. An unreadable version is tried (and falls back if refused).
pub fn takes_filter_subjects(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 10),
        _ => true,
    }
}

/// The subjects a consumer actually takes (`filter_subject` or `filter_subjects`; empty: the
/// whole stream).
pub fn consumer_filters(config: &async_nats::jetstream::consumer::Config) -> Vec<String> {
    if config.filter_subject.is_empty() {
        config.filter_subjects.clone()
    } else {
        vec![config.filter_subject.clone()]
    }
}

/// Creates the durable consumer, or updates it in place to the configured shape (a consumer an
/// earlier release or nats-server 2.9 left on the whole stream is narrowed to its filters when
/// the server takes them; the update keeps its pending messages).
pub async fn bind_consumer(js: &Context, spec: &ConsumerSpec) -> Result<PullConsumer, SetupError> {
    let fail = |error: String| SetupError::Consumer {
        stream: spec.stream.to_owned(),
        consumer: spec.durable.clone(),
        error,
    };
    let stream = js
        .get_stream(spec.stream)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let whole_stream = pull::Config {
        durable_name: Some(spec.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        max_deliver: -1,
        ack_wait: ACK_WAIT,
        max_ack_pending: spec.max_ack_pending,
        ..Default::default()
    };
    let version = js.client().server_info().version;
    let config = match spec.filters.as_slice() {
        [] => whole_stream.clone(),
        [one] => pull::Config {
            filter_subject: one.clone(),
            ..whole_stream.clone()
        },
        several if takes_filter_subjects(&version) => pull::Config {
            filter_subjects: several.to_vec(),
            ..whole_stream.clone()
        },
        _ => {
            tracing::info!(consumer = %spec.durable, server = %version, "this nats-server takes one filter per consumer: consuming the whole stream and acknowledging other tenants' events unprocessed");
            whole_stream.clone()
        }
    };
    let several = config.filter_subjects.len() > 1;
    match stream.create_consumer(config).await {
        Ok(c) => {
            if several && c.cached_info().config.filter_subjects.is_empty() {
                tracing::info!(consumer = %spec.durable, server = %version, "the server ignored filter_subjects: the consumer takes the whole stream and other tenants' events are acknowledged unprocessed");
            }
            Ok(c)
        }
        // A server (or the stream leader of a cluster being upgraded) that refuses several
        // filters: the whole stream, as on 2.9.
        Err(e) if several && matches!(e.kind(), ConsumerErrorKind::JetStream(_)) => {
            tracing::warn!(consumer = %spec.durable, server = %version, error = %e, "the server refuses filter_subjects: consuming the whole stream and acknowledging other tenants' events unprocessed");
            stream
                .create_consumer(whole_stream)
                .await
                .map_err(|e| fail(format!("cannot be created or updated in place: {e}")))
        }
        Err(e) => Err(fail(format!("cannot be created or updated in place: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn filter_subjects_need_2_10() {
        assert!(!takes_filter_subjects("2.9.10"));
        assert!(!takes_filter_subjects("v2.9.25"));
        assert!(takes_filter_subjects("2.10.0"));
        assert!(takes_filter_subjects("2.10.0-beta.3"));
        assert!(takes_filter_subjects("2.15.1"));
        assert!(takes_filter_subjects("3.0.0"));
        assert!(!takes_filter_subjects("1.4.1"));
        assert!(takes_filter_subjects(""));
    }

    #[test]
    fn tenant_subjects_cover_each_base_of_the_stream() {
        let t = TenantId::parse("C1").unwrap();
        let rt = tenant_subjects(REALTIME_STREAM, &t);
        assert_eq!(rt.len(), 7);
        assert!(rt.contains(&"v1.chats.upsert.C1".to_owned()));
        assert!(rt.contains(&"v1.connection.update.C1".to_owned()));
        let hist = tenant_subjects(HISTORY_STREAM, &t);
        assert_eq!(hist.len(), 3);
        assert!(hist.iter().all(|s| s.starts_with("v1.history.")));
        assert!(tenant_subjects(DLQ_STREAM, &t).is_empty());
    }

    #[test]
    fn unset_settings_shape_new_streams_only() {
        let specs = configured_specs(None, None);
        assert_eq!(specs.len(), 3);
        assert!(specs
            .iter()
            .all(|s| s.replicas == Setting::Default(DEFAULT_REPLICAS)));
        assert_eq!(specs[2].max_age, Setting::Default(DEFAULT_DLQ_MAX_AGE));
        assert_eq!(specs[0].subjects.len(), 7);
        let specs = configured_specs(Some(3), Some(DAY));
        assert!(specs.iter().all(|s| s.replicas == Setting::Explicit(3)));
        assert_eq!(specs[2].max_age, Setting::Explicit(DAY));
        assert_eq!(specs[0].max_age, Setting::Default(30 * DAY));
    }
}
