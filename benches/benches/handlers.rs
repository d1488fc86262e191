//! Micro benchmarks of the core's per-event work, one per earlier Go benchmark name: subject
//! parse, decode (JSON, validation, tenant check), `last_metadata` and the write plan, of
//! producer-shaped payloads, to a no-op sink. After each benchmark, allocations per op.
//!
//! `cargo bench -p wa-benches --bench handlers` (add `-- --test` to run each once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use wa_shared::model::{decode, Subject};
use wa_shared::pipeline::plan::{Decoded, Plan};

/// Counts every allocation (and reallocation, as Go's allocs/op and B/op do) of the process.
struct CountingAllocator;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    BYTES.fetch_add(size as u64, Relaxed);
}

// `GlobalAlloc` is an unsafe trait; this implementation only counts and forwards to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The processor's default `MAX_PAYLOAD_BYTES`.
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
const TENANT: &str = "CMP001";
const HISTORY_COUNTS: [usize; 3] = [1, 10, 100];

macro_rules! fixture {
    ($base:literal) => {
        include_str!(concat!("../../tests/fixtures/producer/", $base, ".jsonl"))
    };
}

/// Realtime benchmarks: name, subject base, producer lines. The producer fixtures have no
/// `contacts.update` file; it carries the `contacts.upsert` field set.
const REALTIME: [(&str, &str, &str); 7] = [
    (
        "RealtimeHandler_ChatUpsert",
        "v1.chats.upsert",
        fixture!("v1.chats.upsert"),
    ),
    (
        "RealtimeHandler_ChatUpdate",
        "v1.chats.update",
        fixture!("v1.chats.update"),
    ),
    (
        "RealtimeHandler_MessageUpsert",
        "v1.messages.upsert",
        fixture!("v1.messages.upsert"),
    ),
    (
        "RealtimeHandler_MessageUpdate",
        "v1.messages.update",
        fixture!("v1.messages.update"),
    ),
    (
        "RealtimeHandler_ContactUpsert",
        "v1.contacts.upsert",
        fixture!("v1.contacts.upsert"),
    ),
    (
        "RealtimeHandler_ContactUpdate",
        "v1.contacts.update",
        fixture!("v1.contacts.upsert"),
    ),
    (
        "RealtimeHandler_AgentEvent",
        "v1.connection.update",
        fixture!("v1.connection.update"),
    ),
];

/// History benchmarks: name, subject base, the items' key, the producer batch.
const HISTORY: [(&str, &str, &str, &str); 3] = [
    (
        "HistoricalHandler_Chats",
        "v1.history.chats",
        "chats",
        fixture!("v1.history.chats"),
    ),
    (
        "HistoricalHandler_Messages",
        "v1.history.messages",
        "messages",
        fixture!("v1.history.messages"),
    ),
    (
        "HistoricalHandler_Contacts",
        "v1.history.contacts",
        "contacts",
        fixture!("v1.history.contacts"),
    ),
];

/// One event as the core receives it.
struct Event {
    subject: String,
    body: Vec<u8>,
}

/// What the core does with one event before it touches the database, into a no-op sink.
fn handle(event: &Event, seq: u64, published_at: DateTime<Utc>, processed_at: &str) {
    let subject = Subject::parse(&event.subject).expect("fixture subject");
    let payload = decode(&subject, &event.body, MAX_PAYLOAD_BYTES).expect("fixture decodes");
    let decoded = Decoded {
        idx: 0,
        published_at,
        payload,
        meta: metadata(&event.subject, seq, processed_at),
    };
    let plan = Plan::new(decoded.units().map(|(_, unit)| (&decoded, unit)));
    black_box(&plan);
    black_box(decoded.invalid_items());
}

/// The `last_metadata` JSON the core builds for every event.
fn metadata(subject: &str, seq: u64, processed_at: &str) -> String {
    wa_shared::pipeline::process::Metadata {
        stream: "wa_events_stream",
        stream_sequence: seq,
        consumer: "wa_realtime",
        subject,
        delivered: 1,
        processed_at,
    }
    .to_json()
}

/// A history batch of `n` items cycled from the fixture's, each with its own key.
fn history_batch(fixture: &str, key: &str, n: usize) -> Vec<u8> {
    let mut batch: Value = serde_json::from_str(fixture.trim()).expect("fixture JSON");
    let items = batch[key].as_array().expect("fixture items").clone();
    let varied = (0..n).map(|i| {
        let mut item = items[i % items.len()].clone();
        for field in ["message_id", "chat_id", "phone_number"] {
            let skip = key == "messages" && field != "message_id";
            if let (Some(Value::String(s)), false) = (item.get_mut(field), skip) {
                s.push_str(&format!("{i:03}"));
            }
        }
        item
    });
    batch[key] = Value::Array(varied.collect());
    serde_json::to_vec(&batch).expect("batch JSON")
}

/// Runs `events` through the core in turn, one per op.
struct Workload {
    events: Vec<Event>,
    next: usize,
    published_at: DateTime<Utc>,
    processed_at: String,
}

impl Workload {
    fn new(events: Vec<Event>) -> Self {
        let published_at = DateTime::from_timestamp(1_718_358_000, 0).expect("timestamp");
        Workload {
            events,
            next: 0,
            processed_at: published_at.to_rfc3339(),
            published_at,
        }
    }

    fn op(&mut self) {
        let event = &self.events[self.next % self.events.len()];
        self.next += 1;
        handle(
            black_box(event),
            self.next as u64,
            self.published_at,
            &self.processed_at,
        );
    }

    /// Allocations per op, averaged over `ops` ops.
    fn report_allocations(&mut self, name: &str, ops: u64) {
        self.op(); // warm: lazily initialised statics are not per-op costs
        let (allocs, bytes) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
        for _ in 0..ops {
            self.op();
        }
        let allocs = (ALLOCS.load(Relaxed) - allocs) as f64 / ops as f64;
        let bytes = (BYTES.load(Relaxed) - bytes) as f64 / ops as f64;
        println!("alloc {name}: {allocs:.1} allocs/op, {bytes:.0} bytes/op");
    }
}

/// Ops over which allocations are averaged (one in `--test` smoke mode).
fn allocation_ops() -> u64 {
    if std::env::args().any(|a| a == "--test") {
        1
    } else {
        10_000
    }
}

fn realtime(c: &mut Criterion) {
    for (name, base, lines) in REALTIME {
        let subject = format!("{base}.{TENANT}");
        let events = lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Event {
                subject: subject.clone(),
                body: l.as_bytes().to_vec(),
            })
            .collect();
        let mut workload = Workload::new(events);
        let mut selected = false;
        c.bench_function(name, |b| {
            selected = true;
            b.iter(|| workload.op())
        });
        if selected {
            workload.report_allocations(name, allocation_ops());
        }
    }
}

fn history(c: &mut Criterion) {
    for (name, base, key, fixture) in HISTORY {
        let mut group = c.benchmark_group(name);
        for n in HISTORY_COUNTS {
            let events = vec![Event {
                subject: format!("{base}.{TENANT}"),
                body: history_batch(fixture, key, n),
            }];
            let mut workload = Workload::new(events);
            let mut selected = false;
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::from_parameter(format!("count={n}")), |b| {
                selected = true;
                b.iter(|| workload.op())
            });
            if selected {
                workload.report_allocations(&format!("{name}/count={n}"), allocation_ops());
            }
        }
        group.finish();
    }
}

criterion_group!(handlers, history, realtime);
criterion_main!(handlers);
