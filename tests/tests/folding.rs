//! Property: a batch writes the same rows as its events delivered one batch each.
//!
//! Within a batch the core folds runs of writes to one row (unread deltas, names, last
//! messages and timestamps of `chats.update`; receipts, edits and deletes of
//! `messages.update`) into one row write, and lets a message's receipts share the round of
//! its upsert. Here every kind of value those folds combine is generated, including the
//! order-dependent ones (reset and "mark unread" deltas, placeholder names, older and newer
//! last messages), and the folded result must equal the sequential one.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use wa_integration_tests::*;
use wa_shared::model::EventKind;
use wa_shared::pipeline::{InboundEvent, Outcome, Processor};

const PHONE: &str = "5511900000001";

#[derive(Debug, Clone)]
enum Op {
    /// `chats.update` of chat `chat`: each field present or absent.
    Delta {
        chat: u8,
        unread: Option<i32>,
        ts: Option<i64>,
        last_message: bool,
        push_name: Option<u8>,
        group_name: Option<u8>,
        phone: bool,
        jid: bool,
        custom_name: Option<u8>,
    },
    /// `chats.upsert` with an absolute unread count.
    Upsert { chat: u8, ts: i64, unread: i32 },
    /// A new message in chat 0 (its chat exists before the batch).
    Message { msg: u8, status: u8 },
    /// `messages.update` of a message.
    Patch {
        msg: u8,
        status: Option<u8>,
        edit: Option<u8>,
        deleted: Option<bool>,
        url: Option<u8>,
    },
}

fn delta() -> impl Strategy<Value = Op> {
    (
        0..3u8,
        proptest::option::of(-1..4i32),
        proptest::option::of(0..6i64),
        any::<bool>(),
        proptest::option::of(0..3u8),
        proptest::option::of(0..3u8),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0..2u8),
    )
        .prop_map(
            |(chat, unread, ts, last_message, push_name, group_name, phone, jid, custom_name)| {
                Op::Delta {
                    chat,
                    unread,
                    ts,
                    last_message,
                    push_name,
                    group_name,
                    phone,
                    jid,
                    custom_name,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => delta(),
        1 => (0..3u8, 0..6i64, 0..5i32).prop_map(|(chat, ts, unread)| Op::Upsert { chat, ts, unread }),
        1 => (3..5u8, 0..6u8).prop_map(|(msg, status)| Op::Message { msg, status }),
        4 => (
            0..5u8,
            proptest::option::of(0..6u8),
            proptest::option::of(0..2u8),
            proptest::option::of(any::<bool>()),
            proptest::option::of(0..2u8),
        )
            .prop_map(|(msg, status, edit, deleted, url)| Op::Patch { msg, status, edit, deleted, url }),
    ]
}

/// A name: a real one, or a placeholder (the phone number, or the chat id's suffix).
fn name(n: u8, chat: u8) -> String {
    match n {
        0 => format!("Name {chat}"),
        1 => PHONE.to_owned(),
        _ => chat_suffix(chat),
    }
}

fn chat_suffix(chat: u8) -> String {
    format!("551190000010{chat}")
}

fn chat_id(chat: u8) -> String {
    format!("AG_{}", chat_suffix(chat))
}

fn body(op: &Op) -> (EventKind, Value) {
    match op {
        Op::Delta {
            chat,
            unread,
            ts,
            last_message,
            push_name,
            group_name,
            phone,
            jid,
            custom_name,
        } => {
            let mut b = Map::new();
            b.insert("chat_id".into(), json!(chat_id(*chat)));
            if let Some(n) = unread {
                b.insert("unread_count".into(), json!(n));
            }
            if let Some(ts) = ts {
                b.insert("conversation_timestamp".into(), json!(ts));
            }
            if *last_message {
                b.insert("last_message".into(), json!({"text": format!("{op:?}")}));
            }
            if let Some(n) = push_name {
                b.insert("push_name".into(), json!(name(*n, *chat)));
            }
            if let Some(n) = group_name {
                b.insert("group_name".into(), json!(name(*n, *chat)));
            }
            if *phone {
                b.insert("phone_number".into(), json!(PHONE));
            }
            if *jid {
                b.insert("jid".into(), json!(format!("{PHONE}@s.whatsapp.net")));
            }
            if let Some(n) = custom_name {
                b.insert("custom_name".into(), json!(format!("Custom {n}")));
            }
            (EventKind::ChatUpdate, Value::Object(b))
        }
        Op::Upsert { chat, ts, unread } => (
            EventKind::ChatUpsert,
            json!({"chat_id": chat_id(*chat), "conversation_timestamp": ts, "unread_count": unread,
                   "last_message": {"upsert": ts}}),
        ),
        Op::Message { msg, status } => (
            EventKind::MessageUpsert,
            json!({"message_id": format!("m{msg}"), "chat_id": chat_id(0), "flow": "OUT",
                   "status": status.to_string()}),
        ),
        Op::Patch {
            msg,
            status,
            edit,
            deleted,
            url,
        } => {
            let mut b = Map::new();
            b.insert("message_id".into(), json!(format!("m{msg}")));
            if let Some(s) = status {
                b.insert("status".into(), json!(s.to_string()));
            }
            if let Some(e) = edit {
                b.insert("edited_message_obj".into(), json!({"edit": e}));
            }
            if let Some(d) = deleted {
                b.insert("is_deleted".into(), json!(d));
            }
            if let Some(u) = url {
                b.insert("message_url".into(), json!(format!("https://u/{u}")));
            }
            (EventKind::MessageUpdate, Value::Object(b))
        }
    }
}

fn event(ev: &Events, op: &Op) -> InboundEvent {
    let (kind, body) = body(op);
    ev.json(kind, body)
}

/// Chat 0 and messages m0..m2 exist before the batch; chats 1 and 2 do not.
fn setup(ev: &Events) -> Vec<InboundEvent> {
    let mut events = vec![ev.json(
        EventKind::ChatUpsert,
        json!({"chat_id": chat_id(0), "conversation_timestamp": 3, "unread_count": 2,
               "push_name": "Stored", "last_message": {"stored": true}}),
    )];
    events.extend((0..3).map(|m| {
        ev.json(
            EventKind::MessageUpsert,
            json!({"message_id": format!("m{m}"), "chat_id": chat_id(0), "flow": "IN", "status": "2"}),
        )
    }));
    events
}

async fn all_acked(p: &Processor, events: &[InboundEvent]) {
    for (e, o) in events.iter().zip(run(p, events).await) {
        assert!(matches!(o, Outcome::Ack), "{}: {o:?}", e.subject);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_writes_what_its_events_write_one_by_one(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = Fixture::new("seq").await;
            // Receipts of messages created in the batch come after them, so none is retried.
            let mut created = std::collections::HashSet::from([0u8, 1, 2]);
            let ops: Vec<Op> = ops
                .into_iter()
                .filter(|o| match o {
                    Op::Message { msg, .. } => created.insert(*msg),
                    Op::Patch { msg, .. } => created.contains(msg),
                    _ => true,
                })
                .collect();

            all_acked(&f.processor, &setup(&f.events)).await;
            for o in &ops {
                all_acked(&f.processor, &[event(&f.events, o)]).await;
            }

            let batched = f.other_tenant("batch");
            all_acked(&f.processor, &setup(&batched)).await;
            let batch: Vec<_> = ops.iter().map(|o| event(&batched, o)).collect();
            all_acked(&f.processor, &batch).await;

            assert_eq!(
                without_company(snapshot(&f.pool, &f.tenant).await),
                without_company(snapshot(&f.pool, &batched.tenant).await),
                "{ops:#?}"
            );
        });
    }
}

/// One tenant's share of a many-tenant batch: its ops, filtered like the single-tenant case
/// (receipts only of messages created before them).
fn tenant_ops(ops: &[(usize, Op)], tenant: usize) -> Vec<Op> {
    let mut created = std::collections::HashSet::from([0u8, 1, 2]);
    ops.iter()
        .filter(|(t, _)| *t == tenant)
        .map(|(_, o)| o.clone())
        .filter(|o| match o {
            Op::Message { msg, .. } => created.insert(*msg),
            Op::Patch { msg, .. } => created.contains(msg),
            _ => true,
        })
        .collect()
}

proptest! {
    // Each case creates two schemas per tenant (up to 80): few cases.
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 32, ..ProptestConfig::default() })]

    /// SPEC §3 (one batch routinely spans many tenants): the events of 2–40 tenants interleaved
    /// in one batch write, in each tenant, what that tenant's events write one by one.
    #[test]
    fn a_batch_spanning_many_tenants_writes_what_each_tenants_events_write_one_by_one(
        tenants in 2..=40usize,
        ops in proptest::collection::vec((any::<proptest::sample::Index>(), op()), 1..160),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = Fixture::new("mseq").await;
            let ops: Vec<(usize, Op)> = ops.into_iter().map(|(i, o)| (i.index(tenants), o)).collect();
            let per_tenant: Vec<Vec<Op>> = (0..tenants).map(|t| tenant_ops(&ops, t)).collect();

            // Controls: each tenant's ops one batch each, after its setup.
            let controls: Vec<Events> = (0..tenants).map(|_| f.other_tenant("mseq")).collect();
            all_acked(&f.processor, &controls.iter().flat_map(setup).collect::<Vec<_>>()).await;
            for (ev, ops) in controls.iter().zip(&per_tenant) {
                for o in ops {
                    all_acked(&f.processor, &[event(ev, o)]).await;
                }
            }

            // One batch: every tenant's ops, interleaved in the generated order (each tenant's
            // own ops in their order).
            let batched: Vec<Events> = (0..tenants).map(|_| f.other_tenant("mbat")).collect();
            all_acked(&f.processor, &batched.iter().flat_map(setup).collect::<Vec<_>>()).await;
            let mut next = vec![0usize; tenants];
            let mut batch = Vec::new();
            for (t, _) in &ops {
                if let Some(o) = per_tenant[*t].get(next[*t]) {
                    batch.push(event(&batched[*t], o));
                    next[*t] += 1;
                }
            }
            assert_eq!(batch.len(), per_tenant.iter().map(Vec::len).sum::<usize>());
            all_acked(&f.processor, &batch).await;

            for (t, (c, b)) in controls.iter().zip(&batched).enumerate() {
                assert_eq!(
                    without_company(snapshot(&f.pool, &c.tenant).await),
                    without_company(snapshot(&f.pool, &b.tenant).await),
                    "tenant {t}: {:#?}",
                    per_tenant[t]
                );
            }
        });
    }
}
