//! The spans of a trace, and W3C trace context (`traceparent`, `tracestate`) in and out.
//!
//! | span | where | attributes |
//! |---|---|---|
//! | `batch` | a batch fetched and settled (standalone, bridge) or handled (Lambda) | `consumer`, `size`; links to the producers of its messages |
//! | `event` | an event, until its outcome is decided | `tenant`, `subject`, `stream_sequence`, `delivered`, `outcome` |
//! | `tenant_transaction` | one transaction writing a chunk of tenants | `tenant` (comma-separated), `tenants`, `placement` |
//! | `db.statement` | one round trip of statements | `db.system`, `db.operation.name`, `db.operation.batch.size` |
//! | `dlq.publish` | dead letters stored in the DLQ stream | `messaging.system`, `messaging.batch.message_count` |
//! | `lambda.invoke` | the bridge invoking a function | `faas.invoked_name`, `records` |
//! | `lambda.handler` | a function handling an invocation | `consumer_type`, `records` |
//!
//! Attributes never hold a message body, a phone number or SQL: only names, counts, positions
//! and outcomes. Every span but `batch` (which logs show too) exists only while traces are
//! exported ([`traces_on`]); an `event` span only when its trace is sampled.

use tracing::field::Empty;
use tracing::{info_span, Span};

use super::{traces_on, TRACE_TARGET};
use crate::pipeline::{InboundEvent, Outcome, Unavailable};

/// The W3C trace context headers.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A span that exists only while traces are exported.
macro_rules! trace_span {
    ($($arg:tt)+) => {
        if traces_on() {
            info_span!(target: TRACE_TARGET, $($arg)+)
        } else {
            Span::none()
        }
    };
}

/// The transaction writing `tenants` (a chunk of a batch's tenants) on `placement`.
pub fn tenant_transaction<'a>(tenants: impl Iterator<Item = &'a str>, placement: &str) -> Span {
    if !traces_on() {
        return Span::none();
    }
    let mut names: Vec<&str> = tenants.collect();
    names.sort_unstable();
    names.dedup();
    trace_span!(
        "tenant_transaction",
        tenant = %names.join(","),
        tenants = names.len(),
        placement,
    )
}

/// One round trip of `statements` statements (`operation` names the step, never the SQL).
pub fn db_statement(operation: &'static str, statements: usize) -> Span {
    trace_span!(
        "db.statement",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = operation,
        db.operation.batch.size = statements,
        db.response.status_code = Empty,
        otel.status_code = Empty,
    )
}

/// Marks `span` failed; `sqlstate` is the database's code (never its message, which can quote
/// values).
pub fn db_failed(span: &Span, sqlstate: Option<&str>) {
    span.record("otel.status_code", "ERROR");
    if let Some(code) = sqlstate {
        span.record("db.response.status_code", code);
    }
}

/// Dead letters stored in the DLQ stream.
pub fn dlq_publish(messages: usize) -> Span {
    trace_span!(
        "dlq.publish",
        otel.kind = "producer",
        messaging.system = "nats",
        "messaging.operation.type" = "publish",
        messaging.batch.message_count = messages,
        otel.status_code = Empty,
    )
}

/// The bridge invoking Lambda function `function` with `records` records.
pub fn lambda_invoke(function: &str, records: usize) -> Span {
    trace_span!(
        "lambda.invoke",
        otel.kind = "client",
        faas.invoked_name = function,
        faas.invoked_provider = "aws",
        records,
        otel.status_code = Empty,
    )
}

/// A function handling an invocation of `records` records; `traceparent` (the bridge's invoke
/// span) is its parent.
pub fn lambda_handler(
    consumer_type: &str,
    records: usize,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Span {
    let span = trace_span!(
        "lambda.handler",
        otel.kind = "server",
        consumer_type,
        records,
        otel.status_code = Empty,
    );
    set_remote_parent(&span, traceparent, tracestate);
    span
}

/// Marks a span failed (the status only: error messages can quote event data).
pub fn failed(span: &Span) {
    span.record("otel.status_code", "ERROR");
}

/// The value of header `name` (case-insensitive) in a message's headers.
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The trace context of a span, to send along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// The span of every event of a batch that is traced, to be closed with its outcome.
#[must_use]
pub struct EventSpans(Vec<Span>);

impl EventSpans {
    /// An `event` span for each event of a traced batch: a child of the producer's span when
    /// the message has a `traceparent`, else of the current (batch) span. Only sampled traces
    /// get them, so at a low sampling ratio most events cost nothing.
    pub fn open(events: &[InboundEvent]) -> EventSpans {
        if !traces_on() {
            return EventSpans(Vec::new());
        }
        #[cfg(feature = "otel")]
        {
            let batch = Span::current();
            let batch_sampled = otel::is_sampled(&batch);
            EventSpans(
                events
                    .iter()
                    .map(|e| event_span(e, &batch, batch_sampled))
                    .collect(),
            )
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = events;
            EventSpans(Vec::new())
        }
    }

    /// Records each event's outcome and ends its span (`held` when the batch is held).
    pub fn close(self, outcomes: &Result<Vec<Outcome>, Unavailable>) {
        for (i, span) in self.0.into_iter().enumerate() {
            let outcome = match outcomes {
                Ok(outcomes) => outcomes.get(i).map_or("none", Outcome::action),
                Err(_) => "held",
            };
            span.record("outcome", outcome);
        }
    }
}

/// The `event` span of `e` (disabled when its trace is not sampled).
#[cfg(feature = "otel")]
fn event_span(e: &InboundEvent, batch: &Span, batch_sampled: bool) -> Span {
    let remote = otel::remote_context(
        header(&e.headers, TRACEPARENT),
        header(&e.headers, TRACESTATE),
    );
    let sampled = match &remote {
        Some(cx) => otel::context_sampled(cx),
        None => batch_sampled,
    };
    if !sampled {
        return Span::none();
    }
    let parent = if remote.is_some() { None } else { batch.id() };
    let span = info_span!(
        target: TRACE_TARGET,
        parent: parent,
        "event",
        otel.kind = "consumer",
        tenant = crate::model::Subject::last_token(&e.subject),
        subject = %e.subject,
        stream_sequence = e.stream_sequence,
        delivered = e.delivered,
        outcome = Empty,
    );
    if let Some(cx) = remote {
        otel::set_parent(&span, cx);
    }
    span
}

/// Continues the trace of `traceparent` in `span` (nothing when absent or invalid).
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    #[cfg(feature = "otel")]
    if let Some(cx) = otel::remote_context(traceparent, tracestate) {
        otel::set_parent(span, cx);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent, tracestate);
}

/// Links `span` (a batch) to the producer span of each message that has a `traceparent`.
pub fn link_producers<'a>(span: &Span, headers: impl Iterator<Item = &'a [(String, String)]>) {
    if !traces_on() {
        return;
    }
    #[cfg(feature = "otel")]
    for h in headers {
        if let Some(cx) = otel::remote_context(header(h, TRACEPARENT), header(h, TRACESTATE)) {
            otel::add_link(span, &cx);
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

/// The trace context of `span`, to pass on (`None` when traces are off).
pub fn trace_headers(span: &Span) -> Option<TraceHeaders> {
    if !traces_on() {
        return None;
    }
    #[cfg(feature = "otel")]
    {
        otel::inject(span)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = span;
        None
    }
}

/// The OpenTelemetry side: W3C parsing and formatting, parents, links, sampling.
#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{TraceHeaders, TRACEPARENT, TRACESTATE};

    /// The remote span of a `traceparent` (and `tracestate`), when valid.
    pub fn remote_context(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Context> {
        let traceparent = traceparent?;
        let mut carrier = HashMap::with_capacity(2);
        carrier.insert(TRACEPARENT.to_owned(), traceparent.trim().to_owned());
        if let Some(state) = tracestate {
            carrier.insert(TRACESTATE.to_owned(), state.trim().to_owned());
        }
        let cx = TraceContextPropagator::new().extract(&carrier);
        cx.span().span_context().is_valid().then_some(cx)
    }

    pub fn context_sampled(cx: &Context) -> bool {
        cx.span().span_context().is_sampled()
    }

    /// Whether `span`'s trace is recorded (builds the span's context).
    pub fn is_sampled(span: &Span) -> bool {
        context_sampled(&span.context())
    }

    pub fn set_parent(span: &Span, cx: Context) {
        let _ = span.set_parent(cx);
    }

    pub fn add_link(span: &Span, cx: &Context) {
        span.add_link(cx.span().span_context().clone());
    }

    pub fn inject(span: &Span) -> Option<TraceHeaders> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        Some(TraceHeaders {
            traceparent: carrier.remove(TRACEPARENT)?,
            tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_whatever_their_case() {
        let headers = vec![
            ("Nats-Msg-Id".to_owned(), "x".to_owned()),
            ("TraceParent".to_owned(), "00-abc".to_owned()),
        ];
        assert_eq!(header(&headers, TRACEPARENT), Some("00-abc"));
        assert_eq!(header(&headers, TRACESTATE), None);
    }

    #[test]
    fn without_traces_no_span_is_made() {
        assert!(!traces_on());
        assert!(db_statement("write", 3).is_none());
        assert!(tenant_transaction(["a", "b"].into_iter(), "default").is_none());
        assert!(lambda_invoke("f", 1).is_none());
        assert!(trace_headers(&Span::current()).is_none());
        let spans = EventSpans::open(&[]);
        assert!(spans.0.is_empty());
    }

    #[cfg(feature = "otel")]
    #[test]
    fn traceparents_are_read_and_checked() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = otel::remote_context(Some(tp), Some("vendor=x")).expect("valid");
        use opentelemetry::trace::TraceContextExt;
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("vendor"), Some("x"));
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!otel::context_sampled(
            &otel::remote_context(Some(unsampled), None).expect("valid")
        ));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(otel::remote_context(Some(bad), None).is_none(), "{bad}");
        }
        assert!(otel::remote_context(None, None).is_none());
    }
}
