//! Traces end to end: the real binaries export to an OTLP/HTTP receiver in the test; a
//! `traceparent` on a NATS message continues the producer's trace; the bridge's invoke span is
//! the Lambda handler's parent; no attribute carries a body, a phone number or SQL; without an
//! endpoint nothing is sent, and at ratio 0 only traces continued from a sampled producer are.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use serde_json::json;
use wa_integration_tests::lambda::{start_bridge, LocalLambda};
use wa_integration_tests::otlp::{ReceivedSpan, Receiver};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::unique_tenant;
use wa_shared::model::EventKind::*;
use wa_shared::model::Subject;

const WAIT: Duration = Duration::from_secs(60);

/// What the published bodies hold and no span may.
const BODY_TEXT: &str = "the secret body 9a8b7c";
const PHONE: &str = "6281299887766";

/// A producer's span, as its `traceparent` names it.
struct Producer {
    trace_id: String,
    span_id: String,
}

impl Producer {
    fn new() -> Producer {
        let id = || uuid::Uuid::new_v4().simple().to_string();
        Producer {
            trace_id: id(),
            span_id: id()[..16].to_owned(),
        }
    }

    /// Its `traceparent`, sampled.
    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

/// A message upsert carrying [`BODY_TEXT`] and [`PHONE`].
fn message(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "message_id": id,
        "chat_id": format!("AGT9_{PHONE}"),
        "jid": format!("{PHONE}@s.whatsapp.net"),
        "flow": "IN",
        "from_phone": PHONE,
        "to_phone": "628110000009",
        "message_text": BODY_TEXT,
        "message_timestamp": 1718358000,
    }))
    .expect("json")
}

/// Publishes `body` on `subject`, with a `traceparent` header when given; its stream sequence.
async fn publish(js: &Context, subject: &str, body: Vec<u8>, traceparent: Option<&str>) -> u64 {
    let mut headers = HeaderMap::new();
    if let Some(tp) = traceparent {
        headers.insert("traceparent", tp);
        headers.insert("tracestate", "producer=test");
    }
    js.publish_with_headers(subject.to_owned(), headers, body.into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

fn event_of(spans: &[ReceivedSpan], seq: u64) -> Option<&ReceivedSpan> {
    let seq = seq.to_string();
    spans
        .iter()
        .find(|s| s.name == "event" && s.attr("stream_sequence") == Some(seq.as_str()))
}

fn by_id<'a>(spans: &'a [ReceivedSpan], span_id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == span_id)
}

/// No attribute of any span holds a body, a phone number or SQL.
fn assert_nothing_private(spans: &[ReceivedSpan]) {
    assert!(!spans.is_empty());
    for span in spans {
        for (key, value) in &span.attributes {
            for private in [BODY_TEXT, PHONE, "INSERT", "SELECT", "UPDATE "] {
                assert!(
                    !value.contains(private),
                    "{}.{key} = {value:?} holds {private:?}",
                    span.name
                );
            }
        }
    }
}

#[tokio::test]
async fn standalone_spans_continue_the_producers_trace_and_hold_no_data() {
    let otlp = Receiver::start().await;
    let s = Stack::new("trc").await;
    let other = unique_tenant("trc");
    let _rt = s
        .start(
            "wa-realtime",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint())],
        )
        .await;
    let producer = Producer::new();
    let poison_producer = Producer::new();
    let traced = publish(
        &s.js,
        &s.subject(MessageUpsert),
        message("m1"),
        Some(&producer.traceparent()),
    )
    .await;
    let plain = publish(&s.js, &s.subject(MessageUpsert), message("m2"), None).await;
    let contact = serde_json::to_vec(
        &json!({"agent_id": "AGT9", "phone_number": PHONE, "push_name": BODY_TEXT}),
    )
    .unwrap();
    let elsewhere = publish(
        &s.js,
        &Subject::format(ContactUpsert, &other),
        contact,
        None,
    )
    .await;
    let poison = publish(
        &s.js,
        &s.subject(ChatUpsert),
        format!("{{{BODY_TEXT} {PHONE}").into_bytes(),
        Some(&poison_producer.traceparent()),
    )
    .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;

    let spans = otlp
        .wait_for(WAIT, "the spans of every event", |spans| {
            let tenants: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.name == "tenant_transaction")
                .flat_map(|s| s.attr("tenant").unwrap_or_default().split(','))
                .collect();
            ([traced, plain, elsewhere, poison]
                .iter()
                .all(|seq| event_of(spans, *seq).is_some())
                && spans.iter().any(|s| s.name == "dlq.publish")
                && tenants.contains(s.tenant.as_str())
                && tenants.contains(other.as_str()))
            .then(|| spans.to_vec())
        })
        .await;
    assert!(spans.iter().all(|s| s.service == "wa-realtime"));

    // The traced event continues the producer's trace, with its attributes.
    let e = event_of(&spans, traced).unwrap();
    assert_eq!(
        (e.trace_id.as_str(), e.parent_span_id.as_str()),
        (producer.trace_id.as_str(), producer.span_id.as_str())
    );
    assert_eq!(e.attr("tenant"), Some(s.tenant.as_str()));
    assert_eq!(e.attr("subject"), Some(s.subject(MessageUpsert).as_str()));
    assert_eq!(e.attr("delivered"), Some("1"));
    assert_eq!(e.attr("outcome"), Some("ack"));
    // Its batch links to the producer.
    assert!(
        spans.iter().any(|b| b.name == "batch"
            && b.links
                .contains(&(producer.trace_id.clone(), producer.span_id.clone()))),
        "no batch links to the producer: {spans:#?}"
    );
    // An event without a traceparent is a child of its batch.
    let p = event_of(&spans, plain).unwrap();
    let parent = by_id(&spans, &p.parent_span_id).expect("the plain event's parent");
    assert_eq!(
        (parent.name.as_str(), &parent.trace_id),
        ("batch", &p.trace_id)
    );
    assert_eq!(
        event_of(&spans, elsewhere).unwrap().attr("tenant"),
        Some(other.as_str())
    );
    // The poison message's span says so, in its producer's trace.
    let d = event_of(&spans, poison).unwrap();
    assert_eq!(d.attr("outcome"), Some("dead_letter"));
    assert_eq!(d.parent_span_id, poison_producer.span_id);

    // Transactions under batches, statements under transactions, named by step.
    for tx in spans.iter().filter(|s| s.name == "tenant_transaction") {
        assert_eq!(tx.attr("placement"), Some("default"));
        assert_eq!(
            by_id(&spans, &tx.parent_span_id).map(|p| p.name.as_str()),
            Some("batch")
        );
    }
    let statements: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| s.name == "db.statement").collect();
    for st in &statements {
        assert_eq!(st.attr("db.system"), Some("postgresql"));
        let parent = by_id(&spans, &st.parent_span_id).map(|p| p.name.as_str());
        match st.attr("db.operation.name") {
            // A new tenant's schema is migrated before its events are written.
            Some("migrate") => assert_eq!(parent, Some("batch"), "{st:?}"),
            Some("claim" | "prepare" | "write" | "release") => {
                assert_eq!(parent, Some("tenant_transaction"), "{st:?}")
            }
            other => panic!("db.statement of operation {other:?}"),
        }
    }
    for op in ["migrate", "claim", "write"] {
        assert!(
            statements
                .iter()
                .any(|s| s.attr("db.operation.name") == Some(op)),
            "no {op} statement"
        );
    }

    // The dead letter carries the traceparent of the span that published it.
    let publish_span = spans.iter().find(|s| s.name == "dlq.publish").unwrap();
    let stored =
        s.js.get_stream("dlq_stream")
            .await
            .expect("dlq_stream")
            .get_last_raw_message_by_subject(&Subject::dead_letter(&s.tenant))
            .await
            .expect("the dead letter");
    let header = stored
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .expect("a traceparent on the dead letter");
    assert_eq!(
        header,
        format!("00-{}-{}-01", publish_span.trace_id, publish_span.span_id)
    );

    assert_nothing_private(&spans);
}

#[tokio::test]
async fn the_lambda_handler_continues_the_bridges_invoke_span() {
    let otlp = Receiver::start().await;
    let endpoint = otlp.endpoint();
    let s = Stack::new("trl").await;
    let rt = LocalLambda::start(
        &s,
        "wa-realtime",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    let _bridge = start_bridge(
        &s,
        "realtime",
        &rt,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    )
    .await;
    let producer = Producer::new();
    let traced = publish(
        &s.js,
        &s.subject(MessageUpsert),
        message("l1"),
        Some(&producer.traceparent()),
    )
    .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;

    let spans = otlp
        .wait_for(WAIT, "the bridge's and the function's spans", |spans| {
            let handler = spans.iter().find(|s| s.name == "lambda.handler")?;
            (event_of(spans, traced).is_some()
                && by_id(spans, &handler.parent_span_id).is_some()
                && spans
                    .iter()
                    .any(|s| s.name == "tenant_transaction" && s.trace_id == handler.trace_id))
            .then(|| spans.to_vec())
        })
        .await;

    // The bridge: a batch linked to the producer, and the invoke under it.
    let handler = spans.iter().find(|s| s.name == "lambda.handler").unwrap();
    assert_eq!(handler.service, "wa-realtime");
    let invoke = by_id(&spans, &handler.parent_span_id).unwrap();
    assert_eq!(
        (invoke.name.as_str(), invoke.service.as_str()),
        ("lambda.invoke", "wa-bridge")
    );
    assert_eq!(invoke.trace_id, handler.trace_id);
    assert_eq!(invoke.attr("faas.invoked_name"), Some("_"));
    let bridge_batch = by_id(&spans, &invoke.parent_span_id).expect("the invoke's parent");
    assert_eq!(
        (bridge_batch.name.as_str(), bridge_batch.service.as_str()),
        ("batch", "wa-bridge")
    );
    assert!(bridge_batch
        .links
        .contains(&(producer.trace_id.clone(), producer.span_id.clone())));

    // The function: its batch under the handler, the event in the producer's trace, the
    // writes in the handler's.
    let batch = spans
        .iter()
        .find(|s| s.name == "batch" && s.parent_span_id == handler.span_id)
        .expect("the function's batch span");
    assert_eq!(batch.service, "wa-realtime");
    let e = event_of(&spans, traced).unwrap();
    assert_eq!(
        (
            e.service.as_str(),
            e.trace_id.as_str(),
            e.parent_span_id.as_str()
        ),
        (
            "wa-realtime",
            producer.trace_id.as_str(),
            producer.span_id.as_str()
        )
    );
    assert_eq!(e.attr("outcome"), Some("ack"));
    let tx = spans
        .iter()
        .find(|s| s.name == "tenant_transaction" && s.trace_id == handler.trace_id)
        .unwrap();
    assert_eq!(tx.parent_span_id, batch.span_id);
    assert_eq!(tx.attr("tenant"), Some(s.tenant.as_str()));

    assert_nothing_private(&spans);
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_sent() {
    let otlp = Receiver::start().await;
    let s = Stack::new("trn").await;
    // A blank endpoint is unset; the exporter's other variables alone start nothing.
    let traces = format!("{}/v1/traces", otlp.endpoint());
    let mut rt = s
        .start(
            "wa-realtime",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces),
            ],
        )
        .await;
    let producer = Producer::new();
    publish(
        &s.js,
        &s.subject(MessageUpsert),
        message("n1"),
        Some(&producer.traceparent()),
    )
    .await;
    publish(&s.js, &s.subject(MessageUpsert), message("n2"), None).await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages", 2).await;
    rt.stop(WAIT).await.unwrap();
    assert_eq!(otlp.requests(), 0);
    assert!(!rt.logs().contains("exporting traces"));
}

#[tokio::test]
async fn at_ratio_zero_only_traces_continued_from_a_sampled_producer_arrive() {
    let otlp = Receiver::start().await;
    let s = Stack::new("trz").await;
    let mut rt = s
        .start(
            "wa-realtime",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint()),
                ("OTEL_TRACES_SAMPLER_ARG", "0"),
                ("OTEL_SERVICE_NAME", "rt-zero"),
            ],
        )
        .await;
    let mut plain = Vec::new();
    for i in 0..20 {
        let id = format!("z{i}");
        plain.push(publish(&s.js, &s.subject(MessageUpsert), message(&id), None).await);
    }
    let producer = Producer::new();
    let traced = publish(
        &s.js,
        &s.subject(MessageUpsert),
        message("z-traced"),
        Some(&producer.traceparent()),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM messages", 21)
        .await;
    s.wait_settled(WAIT, "wa_events_stream", "wa_realtime")
        .await;
    // SIGTERM sends what is queued before the process exits.
    rt.stop(WAIT).await.unwrap();

    let spans = otlp.spans();
    let events: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "event").collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = event_of(&spans, traced).expect("the traced event's span");
    assert_eq!(
        (e.trace_id.as_str(), e.parent_span_id.as_str()),
        (producer.trace_id.as_str(), producer.span_id.as_str())
    );
    assert_eq!(e.service, "rt-zero");
    // Batches start their own traces, none of them sampled.
    assert!(spans
        .iter()
        .all(|s| s.trace_id == producer.trace_id && s.name == "event"));
    assert_nothing_private(&spans);
}
