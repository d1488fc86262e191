//! Onboarding end to end: real binaries, a private NATS, real Postgres.

use std::time::Duration;

use serde_json::{json, Value};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;

const WAIT: Duration = Duration::from_secs(60);

fn incoming(id: &str, phone: &str, agent: &str) -> Value {
    json!({"message_id": id, "chat_id": format!("{agent}_{phone}"), "jid": format!("{phone}@s.whatsapp.net"),
           "flow": "IN", "from_phone": phone, "to_phone": "6281100000001", "agent_id": agent, "message_timestamp": 1718358000})
}

async fn settled(s: &Stack) {
    s.wait_settled(WAIT, "wa_events_stream", "wa_onboarding")
        .await;
}

async fn log_and_contacts(s: &Stack) -> (Vec<Value>, Vec<Value>) {
    (
        rows(&s.pool, &s.tenant, "SELECT message_id, agent_id, company_id, phone_number, \"timestamp\" FROM onboarding_log ORDER BY phone_number").await,
        rows(&s.pool, &s.tenant, "SELECT agent_id, phone_number, chat_id, origin, tags, assigned_to, status, first_message_id, first_message_timestamp FROM contacts ORDER BY agent_id, phone_number").await,
    )
}

#[tokio::test]
async fn the_first_message_from_a_new_phone_onboards_it_once() {
    let s = Stack::new("onb").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _onb = s.start("wa-onboarding", &[]).await;
    let first = incoming("m1", "628111", "AG");
    s.publish(MessageUpsert, first.clone()).await;
    s.publish(MessageUpsert, first).await; // the same message again (redelivered or re-sent)
    s.publish(MessageUpsert, incoming("m2", "628111", "AG"))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM contacts", 1).await;
    settled(&s).await;
    let (log, contacts) = log_and_contacts(&s).await;
    assert_eq!(
        log,
        vec![
            json!({"message_id": "m1", "agent_id": "AG", "company_id": s.tenant, "phone_number": "628111", "timestamp": 1718358000})
        ]
    );
    assert_eq!(
        contacts,
        vec![
            json!({"agent_id": "AG", "phone_number": "628111", "chat_id": "AG_628111", "origin": "DirectChat",
        "tags": "Onboarded", "assigned_to": null, "status": "ACTIVE", "first_message_id": "m1", "first_message_timestamp": 1718358000})
        ]
    );
}

#[tokio::test]
async fn two_instances_at_once_still_onboard_a_phone_once() {
    let s = Stack::new("onb2").await;
    s.create_streams().await;
    for i in 0..40 {
        // 40 messages from 10 phones, each phone from two agents.
        let phone = format!("62822{}", i % 10);
        let agent = if i % 2 == 0 { "A1" } else { "A2" };
        s.publish(MessageUpsert, incoming(&format!("m{i}"), &phone, agent))
            .await;
    }
    let _a = s.start("wa-onboarding", &[("BATCH_SIZE", "3")]).await;
    let _b = s.start("wa-onboarding", &[("BATCH_SIZE", "3")]).await;
    settled(&s).await;
    let (log, contacts) = log_and_contacts(&s).await;
    assert_eq!(log.len(), 10);
    assert_eq!(contacts.len(), 10, "one contact per phone: {contacts:?}");
}

#[tokio::test]
async fn known_phones_groups_lid_and_outgoing_messages_onboard_nothing() {
    let s = Stack::new("onbno").await;
    let _rt = s.start("wa-realtime", &[]).await;
    s.publish(
        ContactUpsert,
        json!({"agent_id": "OTHER", "phone_number": "628333", "push_name": "Known"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM contacts", 1).await;
    let _onb = s.start("wa-onboarding", &[]).await;
    s.publish(MessageUpsert, incoming("known", "628333", "AG"))
        .await;
    let mut group = incoming("group", "120363", "AG");
    group["jid"] = json!("120363@g.us");
    let mut lid = incoming("lid", "2147483647", "AG");
    lid["jid"] = json!("2147483647@lid");
    let mut out = incoming("out", "628444", "AG");
    out["flow"] = json!("OUT");
    for m in [group, lid, out] {
        s.publish(MessageUpsert, m).await;
    }
    settled(&s).await;
    let (log, contacts) = log_and_contacts(&s).await;
    assert!(log.is_empty(), "{log:?}");
    assert_eq!(contacts.len(), 1);
}

#[tokio::test]
async fn campaigns_set_fields_on_creation_and_merge_into_existing_contacts() {
    let s = Stack::new("onbcmp").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _onb = s.start("wa-onboarding", &[]).await;
    let mut new = incoming("c1", "628555", "AG");
    new["campaign"] = json!({"is_campaign": true, "tags": "promo,june", "assigned_to": "sales-1", "origin": "Ads"});
    s.publish(MessageUpsert, new).await;
    s.publish(ContactUpsert, json!({"agent_id": "AG", "phone_number": "628666", "tags": "vip,promo", "assigned_to": "ana"})).await;
    s.wait_count(WAIT, "SELECT count(*) FROM contacts", 2).await;
    let mut existing = incoming("c2", "628666", "AG");
    existing["campaign"] = json!({"is_campaign": true, "tags": "promo, june", "assigned_to": "sales-2", "origin": "Ads"});
    s.publish(MessageUpsert, existing).await;
    let mut blank = incoming("c3", "628666", "AG");
    blank["campaign"] = json!({"is_campaign": true, "tags": "june,extra", "assigned_to": ""});
    s.publish(MessageUpsert, blank).await;
    settled(&s).await;
    let (log, contacts) = log_and_contacts(&s).await;
    assert_eq!(log.len(), 1, "the existing contact is not onboarded again");
    let by_phone = |p: &str| {
        contacts
            .iter()
            .find(|c| c["phone_number"] == p)
            .cloned()
            .unwrap()
    };
    let created = by_phone("628555");
    assert_eq!(
        (
            &created["tags"],
            &created["assigned_to"],
            &created["origin"]
        ),
        (
            &json!("Onboarded,promo,june"),
            &json!("sales-1"),
            &json!("Ads")
        )
    );
    let merged = by_phone("628666");
    assert_eq!(
        (&merged["tags"], &merged["assigned_to"], &merged["origin"]),
        (
            &json!("vip,promo,june,extra"),
            &json!("sales-2"),
            &json!("Ads")
        )
    );
}
