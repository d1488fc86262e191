//! SPEC §4 write semantics, rule by rule, against real Postgres.

use serde_json::json;
use wa_integration_tests::*;
use wa_shared::model::{ErrorType, EventKind::*};
use wa_shared::pipeline::{DeadLetter, Outcome};

#[tokio::test]
async fn status_only_moves_to_a_strictly_higher_rank() {
    let f = Fixture::new("st").await;
    f.run_ok(&[f.json(
        MessageUpsert,
        json!({"message_id":"m1","chat_id":"A_1","flow":"OUT","status":"1"}),
    )])
    .await;
    for s in ["4", "3", "5", "2"] {
        f.run_ok(&[f.json(MessageUpdate, json!({"message_id":"m1","status":s}))])
            .await;
    }
    assert_eq!(f.row("SELECT status FROM messages").await["status"], "5");
    // A re-sent upsert with an older status does not move it back either.
    f.run_ok(&[f.json(
        MessageUpsert,
        json!({"message_id":"m1","chat_id":"A_1","flow":"OUT","status":"2"}),
    )])
    .await;
    assert_eq!(f.row("SELECT status FROM messages").await["status"], "5");
}

#[tokio::test]
async fn statuses_in_one_batch_apply_in_stream_order() {
    let f = Fixture::new("st").await;
    let mut batch = vec![f.json(
        MessageUpsert,
        json!({"message_id":"m1","chat_id":"A_1","flow":"OUT","status":"1"}),
    )];
    batch.extend(
        ["4", "3", "5", "2"].map(|s| f.json(MessageUpdate, json!({"message_id":"m1","status":s}))),
    );
    f.run_ok(&batch).await;
    assert_eq!(f.row("SELECT status FROM messages").await["status"], "5");
}

#[tokio::test]
async fn an_update_before_its_upsert_is_retried_and_then_lands() {
    let f = Fixture::new("ooo").await;
    let update = f.json(
        MessageUpdate,
        json!({"message_id":"m1","status":"4","is_deleted":true}),
    );
    let outcomes = f.run(std::slice::from_ref(&update)).await;
    assert_eq!(
        outcomes,
        vec![Outcome::Retry {
            delay: std::time::Duration::from_secs(1)
        }]
    );
    f.run_ok(&[f.json(
        MessageUpsert,
        json!({"message_id":"m1","chat_id":"A_1","flow":"IN","status":"0"}),
    )])
    .await;
    f.run_ok(&[redelivered(&update)]).await;
    let m = f.row("SELECT status, is_deleted FROM messages").await;
    assert_eq!(m, json!({"status":"4","is_deleted":true}));
}

#[tokio::test]
async fn an_update_whose_message_never_comes_is_dead_lettered_on_the_last_delivery() {
    let f = Fixture::new("ooo").await;
    let mut update = f.json(MessageUpdate, json!({"message_id":"ghost","status":"4"}));
    let mut delays = Vec::new();
    for _ in 1..5 {
        match &f.run(std::slice::from_ref(&update)).await[0] {
            Outcome::Retry { delay } => delays.push(delay.as_secs()),
            other => panic!("expected a retry, got {other:?}"),
        }
        update = redelivered(&update);
    }
    assert_eq!(delays, [1, 2, 4, 8]);
    let last = f.run(&[update]).await;
    assert!(
        matches!(
            &last[0],
            Outcome::DeadLetter(DeadLetter {
                error_type: ErrorType::RetryExhausted,
                ..
            })
        ),
        "{last:?}"
    );
    assert!(
        f.rows("SELECT * FROM inbox").await.is_empty(),
        "nothing recorded as done"
    );
}

/// A function's handler (attempts counted in the ledger) for the fixture's tenant, with a
/// consumer name of its own so no other test's attempts are seen.
fn counted(f: &Fixture, max_deliver: u32) -> wa_shared::functions::FunctionHandler {
    let settings = wa_shared::pipeline::ProcessorSettings {
        max_deliver,
        backoff: [1, 2].map(std::time::Duration::from_secs).to_vec(),
        ..Default::default()
    };
    wa_shared::functions::FunctionHandler::new(
        wa_shared::functions::FunctionKind::Events,
        f.pool.clone(),
        settings,
    )
}

#[tokio::test]
async fn deliveries_that_never_reached_the_function_are_not_attempts() {
    use wa_shared::pipeline::Handler;
    let f = Fixture::new("att").await;
    let handler = counted(&f, 3);
    let mut update = f.json(MessageUpdate, json!({"message_id":"ghost","status":"4"}));
    update.consumer = format!("test_{}", f.tenant);
    // A failover spent six deliveries the function never saw: this is its first attempt.
    update.delivered = 7;
    update.attempt = 7;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let outcome = handler
            .handle(std::slice::from_ref(&update))
            .await
            .expect("database up");
        seen.push(outcome.into_iter().next().unwrap());
        update.delivered += 1;
        update.attempt = update.delivered;
    }
    let secs = |o: &Outcome| match o {
        Outcome::Retry { delay } => delay.as_secs(),
        other => panic!("expected a retry, got {other:?}"),
    };
    // The third attempt would be the last, but it comes within one ack wait of the first: a
    // fault may still hold what this event waits for, so it is retried with the last delay.
    assert_eq!(seen.iter().map(secs).collect::<Vec<_>>(), [1, 2, 2]);
    // Once that window has passed, the last attempt dead-letters it.
    sqlx::query(
        "UPDATE wa_system.delivery_attempts SET first_at = now() - interval '1 minute'
         WHERE consumer = $1",
    )
    .bind(&update.consumer)
    .execute(&f.pool)
    .await
    .unwrap();
    let last = handler.handle(std::slice::from_ref(&update)).await.unwrap();
    match &last[0] {
        Outcome::DeadLetter(d) => {
            assert_eq!(d.error_type, ErrorType::RetryExhausted);
            assert!(d.error.contains("after 3 attempts"), "{}", d.error);
        }
        other => panic!("the third attempt is the last, got {other:?}"),
    }
}

#[tokio::test]
async fn an_update_and_its_upsert_in_one_batch_apply_in_stream_order() {
    let f = Fixture::new("ooo").await;
    let batch = [
        f.json(
            MessageUpsert,
            json!({"message_id":"m1","chat_id":"A_1","flow":"IN","status":"0"}),
        ),
        f.json(MessageUpdate, json!({"message_id":"m1","status":"3"})),
        f.json(MessageUpdate, json!({"message_id":"m2","status":"3"})),
        f.json(
            MessageUpsert,
            json!({"message_id":"m2","chat_id":"A_1","flow":"IN","status":"0"}),
        ),
    ];
    let outcomes = f.run(&batch).await;
    assert_eq!(outcomes[0], Outcome::Ack);
    assert_eq!(outcomes[1], Outcome::Ack);
    assert!(
        matches!(outcomes[2], Outcome::Retry { .. }),
        "m2's update precedes its upsert"
    );
    assert_eq!(outcomes[3], Outcome::Ack);
    let ms = f
        .rows("SELECT message_id, status FROM messages ORDER BY 1")
        .await;
    assert_eq!(
        ms,
        vec![
            json!({"message_id":"m1","status":"3"}),
            json!({"message_id":"m2","status":"0"})
        ]
    );
}

#[tokio::test]
async fn one_row_per_message_whatever_the_dates_and_repetitions() {
    let f = Fixture::new("one").await;
    // First seen without a timestamp: filed under the publish date (2024-06-14).
    f.run_ok(&[f.json(
        MessageUpsert,
        json!({"message_id":"m1","chat_id":"A_1","flow":"IN","message_text":"hi"}),
    )])
    .await;
    // Seen again with a timestamp in another month, in milliseconds, twice in one batch.
    let again = json!({"message_id":"m1","chat_id":"A_1","flow":"IN","message_timestamp": 1_700_000_000_000i64});
    f.run_ok(&[
        f.json(MessageUpsert, again.clone()),
        f.json(MessageUpsert, again),
    ])
    .await;
    let all = f.rows("SELECT message_date, message_timestamp, message_text, tableoid::regclass::text AS part FROM messages").await;
    assert_eq!(
        all,
        vec![
            json!({"message_date":"2024-06-14","message_timestamp":1_700_000_000,"message_text":"hi","part":"messages_2024_06"})
        ]
    );
}

#[tokio::test]
async fn a_message_dated_december_9999_gets_its_partition_and_blocks_no_neighbour() {
    let f = Fixture::new("y9999").await;
    // 9999-12-27, in milliseconds; the neighbour is an ordinary message of the same tenant.
    let late = json!({"message_id":"late","chat_id":"A_1","flow":"IN","message_timestamp": 253_401_000_000_000i64});
    let now =
        json!({"message_id":"now","chat_id":"A_1","flow":"IN","message_timestamp": 1_718_358_000});
    f.run_ok(&[f.json(MessageUpsert, late), f.json(MessageUpsert, now)])
        .await;
    let parts = f
        .rows("SELECT message_id, tableoid::regclass::text AS part FROM messages ORDER BY 1")
        .await;
    assert_eq!(
        parts,
        vec![
            json!({"message_id":"late","part":"messages_9999_12"}),
            json!({"message_id":"now","part":"messages_2024_06"}),
        ]
    );
}

#[tokio::test]
async fn messages_of_different_months_land_in_their_own_partitions() {
    let f = Fixture::new("part").await;
    let batch: Vec<_> = [1_577_836_800i64, 1_583_020_800, 1_718_358_000]
        .iter()
        .enumerate()
        .map(|(i, ts)| f.json(MessageUpsert, json!({"message_id": format!("m{i}"),"chat_id":"A_1","flow":"IN","message_timestamp":ts})))
        .collect();
    f.run_ok(&batch).await;
    let parts = f.rows("SELECT message_id, message_date, tableoid::regclass::text AS part FROM messages ORDER BY 1").await;
    assert_eq!(
        parts,
        vec![
            json!({"message_id":"m0","message_date":"2020-01-01","part":"messages_2020_01"}),
            json!({"message_id":"m1","message_date":"2020-03-01","part":"messages_2020_03"}),
            json!({"message_id":"m2","message_date":"2024-06-14","part":"messages_2024_06"}),
        ]
    );
}

#[tokio::test]
async fn unread_deltas_resets_and_mark_unread() {
    let f = Fixture::new("unr").await;
    let upd = |n: i32| {
        f.json(
            ChatUpdate,
            json!({"chat_id":"AG_1_628111","agent_id":"AG_1","unread_count":n}),
        )
    };
    let unread =
        || async { f.row("SELECT unread_count FROM chats").await["unread_count"].as_i64() };
    // Mark-unread on a new chat creates it with 1; its phone is the chat id's suffix.
    f.run_ok(&[upd(-1)]).await;
    assert_eq!(unread().await, Some(1));
    assert_eq!(
        f.row("SELECT phone_number, agent_id FROM chats").await,
        json!({"phone_number":"628111","agent_id":"AG_1"})
    );
    f.run_ok(&[upd(1)]).await;
    f.run_ok(&[upd(2)]).await;
    assert_eq!(unread().await, Some(4));
    f.run_ok(&[upd(-1)]).await;
    assert_eq!(
        unread().await,
        Some(4),
        "mark-unread keeps a positive count"
    );
    f.run_ok(&[upd(0)]).await;
    assert_eq!(unread().await, Some(0));
    f.run_ok(&[upd(-1)]).await;
    assert_eq!(unread().await, Some(1));
    // Several deltas for one chat in one batch apply in order.
    f.run_ok(&[upd(1), upd(0), upd(2), upd(3)]).await;
    assert_eq!(unread().await, Some(5));
}

#[tokio::test]
async fn a_redelivered_delta_is_added_once() {
    let f = Fixture::new("once").await;
    let a = f.json(ChatUpdate, json!({"chat_id":"AG_628","unread_count":1}));
    let b = f.json(ChatUpdate, json!({"chat_id":"AG_628","unread_count":1}));
    let c = f.json(ChatUpdate, json!({"chat_id":"AG_628","unread_count":1}));
    f.run_ok(&[a.clone(), b.clone()]).await;
    // The batch is redelivered with one event in common (b), as after a crash before the ack.
    f.run_ok(&[redelivered(&b), c]).await;
    assert_eq!(
        f.row("SELECT unread_count FROM chats").await["unread_count"],
        3
    );
    // The producer publishing the same payload twice is two messages: both apply.
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_628","unread_count":1}))])
        .await;
    assert_eq!(
        f.row("SELECT unread_count FROM chats").await["unread_count"],
        4
    );
}

#[tokio::test]
async fn conversation_timestamp_guards() {
    let f = Fixture::new("ts").await;
    let upsert = |ts: i64, text: &str, unread: i32| {
        f.json(ChatUpsert, json!({"chat_id":"AG_628","jid":"628@s.whatsapp.net","conversation_timestamp":ts,"last_message":{"conversation":text},"unread_count":unread}))
    };
    let state = || async {
        f.row("SELECT conversation_timestamp AS ts, last_message->>'conversation' AS text, unread_count AS unread FROM chats").await
    };
    f.run_ok(&[upsert(200, "new", 5)]).await;
    f.run_ok(&[upsert(100, "old", 9)]).await;
    assert_eq!(
        state().await,
        json!({"ts":200,"text":"new","unread":5}),
        "older events change nothing"
    );
    f.run_ok(&[upsert(0, "unknown time", 7)]).await;
    assert_eq!(
        state().await,
        json!({"ts":200,"text":"new","unread":5}),
        "0 is unknown"
    );
    f.run_ok(&[upsert(200, "same time", 6)]).await;
    assert_eq!(
        state().await,
        json!({"ts":200,"text":"same time","unread":6}),
        "equal timestamps apply"
    );
    // chats.update: last_message guarded the same way, deltas apply whatever the timestamp.
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_628","conversation_timestamp":150,"last_message":{"conversation":"late"},"unread_count":1}))]).await;
    assert_eq!(
        state().await,
        json!({"ts":200,"text":"same time","unread":7})
    );
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_628","conversation_timestamp":300,"last_message":{"conversation":"newest"}}))]).await;
    assert_eq!(state().await, json!({"ts":300,"text":"newest","unread":7}));
}

#[tokio::test]
async fn patches_keep_absent_fields_and_take_empty_strings_and_whole_json() {
    let f = Fixture::new("patch").await;
    f.run_ok(&[f.json(ChatUpsert, json!({"chat_id":"AG_628","custom_name":"VIP","assigned_to":"ana","last_message":{"a":1,"b":2},"conversation_timestamp":10}))]).await;
    let created = f.row("SELECT created_at FROM chats").await;
    f.run_ok(&[f.json(ChatUpsert, json!({"chat_id":"AG_628","custom_name":"","assigned_to":null,"last_message":{"c":3},"conversation_timestamp":11}))]).await;
    let c = f
        .row("SELECT custom_name, assigned_to, last_message, created_at FROM chats")
        .await;
    assert_eq!(c["custom_name"], "", "an empty string is a provided value");
    assert_eq!(c["assigned_to"], "ana", "null keeps the stored value");
    assert_eq!(
        c["last_message"],
        json!({"c":3}),
        "JSON is replaced whole, never merged"
    );
    assert_eq!(
        c["created_at"], created["created_at"],
        "created_at never changes"
    );
}

#[tokio::test]
async fn placeholder_names_never_overwrite_real_ones_but_fill_empty_ones() {
    let f = Fixture::new("ph").await;
    let name = || async { f.row("SELECT push_name FROM chats").await["push_name"].clone() };
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_628","push_name":"628"}))])
        .await;
    assert_eq!(name().await, "628", "a placeholder fills a NULL name");
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_628","push_name":"Budi"}))])
        .await;
    assert_eq!(name().await, "Budi");
    for placeholder in [
        json!({"push_name":"628"}),
        json!({"push_name":"628","phone_number":"628"}),
    ] {
        let mut body = json!({"chat_id":"AG_628"});
        body.as_object_mut()
            .unwrap()
            .extend(placeholder.as_object().unwrap().clone());
        f.run_ok(&[f.json(ChatUpsert, body)]).await;
        assert_eq!(name().await, "Budi");
    }
    // The jid's user part is a placeholder too, even when this event does not carry the jid.
    f.run_ok(&[f.json(
        MessageUpsert,
        json!({"message_id":"m","chat_id":"AG_628","jid":"999@s.whatsapp.net","flow":"IN"}),
    )])
    .await;
    f.run_ok(&[f.json(ChatUpdate, json!({"chat_id":"AG_628","push_name":"999"}))])
        .await;
    assert_eq!(name().await, "Budi");
    // Contacts follow the same rule.
    f.run_ok(&[f.json(
        ContactUpsert,
        json!({"agent_id":"AG","phone_number":"628","push_name":"Budi"}),
    )])
    .await;
    f.run_ok(&[f.json(
        ContactUpdate,
        json!({"agent_id":"AG","phone_number":"628","push_name":"628"}),
    )])
    .await;
    assert_eq!(
        f.row("SELECT push_name FROM contacts").await["push_name"],
        "Budi"
    );
}

#[tokio::test]
async fn a_chat_created_by_an_update_gets_its_jid_from_a_later_message() {
    let f = Fixture::new("jid").await;
    f.run_ok(&[f.json(
        ChatUpdate,
        json!({"chat_id":"AG_1_628","agent_id":"AG_1","unread_count":1,"push_name":"Budi"}),
    )])
    .await;
    let before = f.row("SELECT jid, is_group, phone_number FROM chats").await;
    assert_eq!(
        before,
        json!({"jid":null,"is_group":null,"phone_number":"628"})
    );
    f.run_ok(&[f.json(MessageUpsert, json!({"message_id":"m","chat_id":"AG_1_628","jid":"628@s.whatsapp.net","flow":"IN","agent_id":"AG_1"}))]).await;
    let after = f
        .row("SELECT jid, is_group, phone_number, push_name, unread_count FROM chats")
        .await;
    assert_eq!(
        after,
        json!({"jid":"628@s.whatsapp.net","is_group":false,"phone_number":"628","push_name":"Budi","unread_count":1})
    );
}

#[tokio::test]
async fn a_message_creates_its_missing_chat_and_touches_nothing_else() {
    let f = Fixture::new("ens").await;
    f.run_ok(&[f.json(MessageUpsert, json!({"message_id":"g1","chat_id":"AG_1203","jid":"1203@g.us","flow":"IN","agent_id":"AG"}))]).await;
    let c = f.row("SELECT chat_id, jid, phone_number, agent_id, is_group, company_id, unread_count, push_name FROM chats").await;
    assert_eq!(
        c,
        json!({"chat_id":"AG_1203","jid":"1203@g.us","phone_number":"1203","agent_id":"AG","is_group":true,"company_id":f.tenant,"unread_count":null,"push_name":null})
    );
    f.run_ok(&[f.json(ChatUpsert, json!({"chat_id":"AG_1203","unread_count":3,"group_name":"Team","conversation_timestamp":5}))]).await;
    f.run_ok(&[f.json(MessageUpsert, json!({"message_id":"g2","chat_id":"AG_1203","jid":"1203@g.us","flow":"IN","agent_id":"OTHER"}))]).await;
    let c = f
        .row("SELECT agent_id, unread_count, group_name FROM chats")
        .await;
    assert_eq!(
        c,
        json!({"agent_id":"AG","unread_count":3,"group_name":"Team"})
    );
}

#[tokio::test]
async fn contacts_are_keyed_by_agent_and_phone() {
    let f = Fixture::new("ct").await;
    f.run_ok(&[
        f.json(
            ContactUpsert,
            json!({"agent_id":"A1","phone_number":"628","push_name":"Budi","tags":"vip"}),
        ),
        f.json(ContactUpsert, json!({"agent_id":"A2","phone_number":"628"})),
    ])
    .await;
    f.run_ok(&[f.json(ContactUpdate, json!({"agent_id":"A1","phone_number":"628","notes":"called","status":"BLOCKED","dob":"1990-02-03"}))]).await;
    let all = f.rows("SELECT agent_id, chat_id, push_name, tags, notes, status, dob FROM contacts ORDER BY agent_id").await;
    assert_eq!(
        all,
        vec![
            json!({"agent_id":"A1","chat_id":"A1_628","push_name":"Budi","tags":"vip","notes":"called","status":"BLOCKED","dob":"1990-02-03"}),
            json!({"agent_id":"A2","chat_id":"A2_628","push_name":null,"tags":null,"notes":null,"status":"ACTIVE","dob":null}),
        ]
    );
    // contacts.update of an unknown contact creates it.
    f.run_ok(&[f.json(
        ContactUpdate,
        json!({"agent_id":"A3","phone_number":"629","push_name":"Sari","chat_id":"custom"}),
    )])
    .await;
    assert_eq!(
        f.row("SELECT chat_id, push_name FROM contacts WHERE agent_id = 'A3'")
            .await,
        json!({"chat_id":"custom","push_name":"Sari"})
    );
}

#[tokio::test]
async fn agents_last_writer_wins_by_publish_time_and_qr_codes_live_only_in_qr() {
    let mut f = Fixture::new("ag").await;
    let at = |s: i64| chrono::DateTime::from_timestamp(1_718_400_000 + s, 0).unwrap();
    let (pool, t) = (f.pool.clone(), f.tenant.clone());
    let state = || async { row(&pool, &t, "SELECT status, qr_code FROM agents").await };
    f.events.published_at = at(10);
    f.run_ok(&[f.json(
        ConnectionUpdate,
        json!({"agent_id":"AG","status":"QR","qr_code":"code-1"}),
    )])
    .await;
    assert_eq!(state().await, json!({"status":"QR","qr_code":"code-1"}));
    f.events.published_at = at(11);
    f.run_ok(&[f.json(ConnectionUpdate, json!({"agent_id":"AG","status":"QR"}))])
        .await;
    assert_eq!(
        state().await,
        json!({"status":"QR","qr_code":"code-1"}),
        "QR without a code keeps the code"
    );
    f.events.published_at = at(20);
    f.run_ok(&[f.json(ConnectionUpdate, json!({"agent_id":"AG","status":"READY"}))])
        .await;
    assert_eq!(state().await, json!({"status":"READY","qr_code":null}));
    // An older event, delivered late, does not overwrite the newer state.
    f.events.published_at = at(15);
    f.run_ok(&[f.json(
        ConnectionUpdate,
        json!({"agent_id":"AG","status":"QR","qr_code":"stale"}),
    )])
    .await;
    assert_eq!(state().await, json!({"status":"READY","qr_code":null}));
}

#[tokio::test]
async fn a_history_batch_with_an_invalid_item_commits_the_others() {
    let f = Fixture::new("hist").await;
    let batch = json!({"messages":[
        {"message_id":"h1","chat_id":"AG_628","flow":"IN","message_timestamp":1718358000},
        {"message_id":"h2","chat_id":"AG_628"},
        {"message_id":"h3","chat_id":"AG_628","flow":"OUT","message_timestamp":1718358001,"company_id":"SOMEONE_ELSE"},
        {"message_id":"h1","chat_id":"AG_628","flow":"IN","status":"3"}
    ],"is_last_batch":true,"agent_id":"AG"});
    let event = f.json(HistoryMessages, batch);
    let outcomes = f.run(std::slice::from_ref(&event)).await;
    let Outcome::AckWithDeadItems(dead) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    let summary: Vec<_> = dead.iter().map(|d| (d.item_index, d.error_type)).collect();
    assert_eq!(
        summary,
        vec![
            (Some(1), ErrorType::Validation),
            (Some(2), ErrorType::Tenant)
        ]
    );
    // Duplicate keys inside the batch are merged in order; the top-level agent id fills items.
    let ms = f
        .rows("SELECT message_id, status, agent_id FROM messages")
        .await;
    assert_eq!(
        ms,
        vec![json!({"message_id":"h1","status":"3","agent_id":"AG"})]
    );
    // A redelivery writes nothing again and reports the same dead items.
    assert_eq!(f.run(&[redelivered(&event)]).await, outcomes);
}

#[tokio::test]
async fn large_history_batches_are_written_whole() {
    let f = Fixture::new("big").await;
    let items: Vec<_> = (0..2500)
        .map(|i| json!({"message_id": format!("m{i}"),"chat_id": format!("AG_{}", i % 40),"jid": format!("{}@s.whatsapp.net", i % 40),"flow":"IN","message_timestamp":1718358000 + i}))
        .collect();
    let contacts: Vec<_> = (0..1500)
        .map(|i| json!({"agent_id":"AG","phone_number": format!("{i}")}))
        .collect();
    f.run_ok(&[
        f.json(HistoryMessages, json!({"messages": items})),
        f.json(HistoryContacts, json!({"contacts": contacts})),
    ])
    .await;
    assert_eq!(f.row("SELECT count(*) AS n FROM messages").await["n"], 2500);
    assert_eq!(f.row("SELECT count(*) AS n FROM chats").await["n"], 40);
    assert_eq!(f.row("SELECT count(*) AS n FROM contacts").await["n"], 1500);
}
