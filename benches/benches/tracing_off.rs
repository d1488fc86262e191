//! What the trace hooks cost a batch when traces are off (no `OTEL_EXPORTER_OTLP_ENDPOINT`):
//! the event spans opened and closed, the producer links, a statement's span around its round
//! trip and the trace context of a DLQ publish, for a batch of 1,024 events whose messages all
//! carry a `traceparent`, under the log subscriber the functions install (JSON at INFO).
//!
//! `batch_of_1024_without_hooks` is the same batch without them.
//!
//! `cargo bench -p wa-benches --bench tracing_off` (add `-- --test` to run each once).

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracing::Instrument;
use wa_shared::pipeline::{InboundEvent, Outcome};
use wa_shared::telemetry::spans::{self, EventSpans};

const BATCH: usize = 1024;

fn batch() -> Vec<InboundEvent> {
    let published_at: DateTime<Utc> = DateTime::from_timestamp(1_718_358_000, 0).expect("time");
    (0..BATCH)
        .map(|i| InboundEvent {
            subject: "v1.messages.upsert.BENCH001".into(),
            payload: bytes::Bytes::from_static(b"{}"),
            headers: vec![
                ("Nats-Msg-Id".into(), format!("m{i}")),
                (
                    "traceparent".into(),
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                ),
            ],
            stream: "wa_events_stream".into(),
            stream_sequence: i as u64 + 1,
            consumer: "wa_realtime".into(),
            delivered: 1,
            attempt: 1,
            published_at,
        })
        .collect()
}

fn hooks_off(c: &mut Criterion) {
    let _logs = tracing_subscriber::fmt()
        .json()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .try_init();
    assert!(!wa_shared::telemetry::traces_on());
    let events = batch();
    let outcomes = Ok(vec![Outcome::Ack; BATCH]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("tracing_off");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_of_1024", |b| {
        b.iter(|| {
            let batch = tracing::info_span!("batch", size = BATCH);
            spans::link_producers(&batch, events.iter().map(|e| e.headers.as_slice()));
            let _in_batch = batch.enter();
            let opened = EventSpans::open(black_box(&events));
            runtime.block_on(async {
                for _ in 0..3 {
                    let statement = spans::db_statement("write", 40);
                    black_box(async { 1 }.instrument(statement).await);
                }
            });
            black_box(spans::trace_headers(&spans::dlq_publish(1)));
            opened.close(black_box(&outcomes));
        })
    });
    // The same without the hooks: what the batch had before traces.
    group.bench_function("batch_of_1024_without_hooks", |b| {
        b.iter(|| {
            let batch = tracing::info_span!("batch", size = BATCH);
            let _in_batch = batch.enter();
            black_box(&events);
            runtime.block_on(async {
                for _ in 0..3 {
                    black_box(async { 1 }.await);
                }
            });
            black_box(&outcomes);
        })
    });
    group.finish();
}

criterion_group!(tracing, hooks_off);
criterion_main!(tracing);
