//! Property: wherever SPEC §4 makes the result order-independent (status rank, forward-only
//! timestamps, exactly-once deltas), any order, batch split and duplication of the same stream
//! messages ends in the same rows as applying each once in stream order.

use std::collections::VecDeque;

use proptest::prelude::*;
use serde_json::{json, Value};
use wa_integration_tests::rng::Rng;
use wa_integration_tests::*;
use wa_shared::model::EventKind;
use wa_shared::pipeline::{InboundEvent, Outcome, Processor};

#[derive(Debug, Clone)]
enum Op {
    Delta { chat: u8, n: i32 },
    Upsert { chat: u8, ts: i64 },
    Message { msg: u8, status: u8 },
    Status { msg: u8, status: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2u8, 1..4i32).prop_map(|(chat, n)| Op::Delta { chat, n }),
        (0..2u8, 0..40i64).prop_map(|(chat, ts)| Op::Upsert { chat, ts }),
        (0..3u8, 0..6u8).prop_map(|(msg, status)| Op::Message { msg, status }),
        (0..3u8, 0..6u8).prop_map(|(msg, status)| Op::Status { msg, status }),
    ]
}

fn event(ev: &Events, op: &Op) -> InboundEvent {
    match *op {
        Op::Delta { chat, n } => ev.json(EventKind::ChatUpdate, json!({"chat_id": format!("AG_{chat}"), "unread_count": n})),
        Op::Upsert { chat, ts } => ev.json(
            EventKind::ChatUpsert,
            json!({"chat_id": format!("AG_{chat}"), "conversation_timestamp": ts, "last_message": {"at": ts}}),
        ),
        Op::Message { msg, status } => ev.json(
            EventKind::MessageUpsert,
            json!({"message_id": format!("m{msg}"), "chat_id": format!("AG_{}", msg % 2), "flow": "IN", "status": status.to_string()}),
        ),
        Op::Status { msg, status } => ev.json(EventKind::MessageUpdate, json!({"message_id": format!("m{msg}"), "status": status.to_string()})),
    }
}

/// Delivers `queue` in batches of the given sizes (cycled), redelivering retried events at
/// the back of the queue, until everything is acknowledged.
async fn deliver(p: &Processor, mut queue: VecDeque<InboundEvent>, sizes: &[usize]) {
    let mut rounds = 0;
    let mut sizes = sizes.iter().cycle();
    while !queue.is_empty() {
        rounds += 1;
        assert!(rounds < 10_000, "did not converge");
        let n = (*sizes.next().unwrap()).clamp(1, queue.len());
        let batch: Vec<_> = queue.drain(..n).collect();
        let outcomes = p.process_batch(&batch).await.expect("database available");
        for (e, o) in batch.iter().zip(outcomes) {
            match o {
                Outcome::Ack => {}
                Outcome::Retry { .. } => queue.push_back(redelivered(e)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// The order-independent part of the state.
async fn projection(pool: &sqlx::PgPool, tenant: &str) -> Value {
    json!({
        "chats": rows(pool, tenant, "SELECT chat_id, unread_count, conversation_timestamp, last_message FROM chats ORDER BY chat_id").await,
        "messages": rows(pool, tenant, "SELECT message_id, status FROM messages ORDER BY message_id").await,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_order_split_and_duplication_gives_the_same_rows(
        ops in proptest::collection::vec(op(), 1..30),
        seed in 1..u64::MAX,
        sizes in proptest::collection::vec(1..8usize, 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = Fixture::with("ref", |s| s.max_deliver = 1_000_000).await;
            // Every message is upserted at some point, so every update can eventually land.
            let mut ops = ops;
            ops.extend((0..3).map(|msg| Op::Message { msg, status: 0 }));

            let in_order: VecDeque<_> = ops.iter().map(|o| event(&f.events, o)).collect();
            deliver(&f.processor, in_order, &[1]).await;

            let ev = f.other_tenant("shuf");
            let once: Vec<_> = ops.iter().map(|o| event(&ev, o)).collect();
            let mut rng = Rng(seed);
            let mut messy: Vec<_> = once.iter().flat_map(|e| std::iter::repeat_n(e.clone(), 1 + rng.next(3))).collect();
            for i in (1..messy.len()).rev() {
                messy.swap(i, rng.next(i + 1));
            }
            deliver(&f.processor, messy.into(), &sizes).await;

            assert_eq!(projection(&f.pool, &f.tenant).await, projection(&f.pool, &ev.tenant).await);
        });
    }
}

proptest! {
    // Each case creates two schemas per tenant (up to 80): few cases.
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 32, ..ProptestConfig::default() })]

    /// SPEC §3 (one batch routinely spans many tenants): the stream messages of 2–40 tenants,
    /// shuffled together, duplicated and delivered in batches of up to 80, end in each tenant
    /// with the rows of applying that tenant's messages once in stream order.
    #[test]
    fn any_order_split_and_duplication_across_many_tenants_gives_each_the_same_rows(
        tenants in 2..=40usize,
        ops in proptest::collection::vec((any::<proptest::sample::Index>(), op()), 1..160),
        seed in 1..u64::MAX,
        sizes in proptest::collection::vec(1..80usize, 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = Fixture::with("mref", |s| s.max_deliver = 1_000_000).await;
            let mut ops: Vec<(usize, Op)> = ops.into_iter().map(|(i, o)| (i.index(tenants), o)).collect();
            // Every tenant's messages are upserted at some point, so every update can land.
            ops.extend((0..tenants).flat_map(|t| (0..3).map(move |msg| (t, Op::Message { msg, status: 0 }))));

            // Controls: each tenant's messages once, in stream order, one per batch.
            let controls: Vec<Events> = (0..tenants).map(|_| f.other_tenant("mref")).collect();
            let in_order: VecDeque<_> = ops.iter().map(|(t, o)| event(&controls[*t], o)).collect();
            deliver(&f.processor, in_order, &[1]).await;

            let shuffled: Vec<Events> = (0..tenants).map(|_| f.other_tenant("mshuf")).collect();
            let once: Vec<_> = ops.iter().map(|(t, o)| event(&shuffled[*t], o)).collect();
            let mut rng = Rng(seed);
            let mut messy: Vec<_> = once.iter().flat_map(|e| std::iter::repeat_n(e.clone(), 1 + rng.next(3))).collect();
            for i in (1..messy.len()).rev() {
                messy.swap(i, rng.next(i + 1));
            }
            deliver(&f.processor, messy.into(), &sizes).await;

            for (t, (c, s)) in controls.iter().zip(&shuffled).enumerate() {
                assert_eq!(
                    projection(&f.pool, &c.tenant).await,
                    projection(&f.pool, &s.tenant).await,
                    "tenant {t}"
                );
            }
        });
    }
}
