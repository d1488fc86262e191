//! What the producer fixtures must leave in a tenant's schema (SPEC §4), whichever way they
//! were delivered.

use serde_json::json;
use sqlx::PgPool;
use wa_shared::model::EventKind;

use crate::{row, rows};

/// The producer's order (see [`EventKind::PRODUCER_ORDER`]).
pub const FIXTURE_ORDER: [EventKind; 10] = EventKind::PRODUCER_ORDER;

/// Number of message rows the fixtures produce.
pub const FIXTURE_MESSAGES: i64 = 10;

/// Asserts the rows the fixtures leave, published in [`FIXTURE_ORDER`].
pub async fn assert_fixture_state(pool: &PgPool, tenant: &str) {
    let tenant = tenant.to_owned();
    let pool = pool.clone();
    // Counts: every distinct key once.
    let count = |table: &'static str| {
        let pool = pool.clone();
        let tenant = tenant.clone();
        async move {
            row(
                &pool,
                &tenant,
                &format!("SELECT count(*) AS n FROM {table}"),
            )
            .await["n"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(count("chats").await, 5);
    assert_eq!(count("messages").await, FIXTURE_MESSAGES);
    assert_eq!(count("contacts").await, 5);
    assert_eq!(count("agents").await, 1);

    // The one-to-one chat: created by chats.update, jid filled by its messages, the real name
    // kept against placeholder names, the newest last message kept against older upserts,
    // unread deltas applied (+1, reset, mark-unread, resets).
    let budi = row(
        &pool,
        &tenant,
        "SELECT * FROM chats WHERE chat_id = 'AGT001_6281234567890'",
    )
    .await;
    assert_eq!(budi["jid"], "6281234567890@s.whatsapp.net");
    assert_eq!(budi["phone_number"], "6281234567890");
    assert_eq!(budi["push_name"], "Budi Santoso");
    assert_eq!(budi["is_group"], false);
    assert_eq!(budi["not_spam"], true);
    assert_eq!(budi["company_id"], tenant.as_str());
    assert_eq!(budi["conversation_timestamp"], 1718358030);
    assert_eq!(
        budi["last_message"],
        json!({"extendedTextMessage": {"text": "Pesanan sudah dikirim ya kak"}})
    );
    assert_eq!(budi["unread_count"], 0);
    for key in [
        "stream",
        "stream_sequence",
        "consumer",
        "subject",
        "delivered",
        "processed_at",
    ] {
        assert!(
            budi["last_metadata"].get(key).is_some(),
            "last_metadata lacks {key}"
        );
    }

    // A group created by chats.upsert: is_group and phone from the jid.
    let group = row(
        &pool,
        &tenant,
        "SELECT * FROM chats WHERE chat_id = 'AGT001_120363300000000001'",
    )
    .await;
    assert_eq!(group["is_group"], true);
    assert_eq!(group["group_name"], "Tim Gudang");
    assert_eq!(group["unread_count"], 0);

    // A group known from chats.update, then history: unread 1, last message from history.
    let reseller = row(
        &pool,
        &tenant,
        "SELECT * FROM chats WHERE chat_id = 'AGT001_120363025246125486'",
    )
    .await;
    assert_eq!(reseller["group_name"], "Reseller Jabodetabek");
    assert_eq!(reseller["is_group"], true);
    assert_eq!(reseller["jid"], "120363025246125486@g.us");

    // @lid chats are created by their messages; an opaque id is not a phone number.
    let lid = row(
        &pool,
        &tenant,
        "SELECT * FROM chats WHERE chat_id = 'AGT001_214748364712345'",
    )
    .await;
    assert_eq!(lid["jid"], "214748364712345@lid");
    assert_eq!(lid["is_group"], false);
    assert!(lid["phone_number"].is_null());

    // Messages: statuses only move up, edits and deletes land, array message_type keeps its first.
    let msg = |id: &'static str| {
        let pool = pool.clone();
        let tenant = tenant.clone();
        async move {
            row(
                &pool,
                &tenant,
                &format!("SELECT * FROM messages WHERE message_id = '{id}'"),
            )
            .await
        }
    };
    let m = msg("AGT001_3EB0C431C26A1916E7A1F2").await;
    assert_eq!(m["status"], "4");
    assert_eq!(m["message_date"], "2024-06-14");
    assert_eq!(msg("AGT001_3A6F0B2C9D8E7F601234").await["status"], "4");
    assert_eq!(msg("AGT001_3A5544332211009988CC").await["is_deleted"], true);
    assert_eq!(
        msg("AGT001_3A1122334455667788AA").await["edited_message_obj"],
        json!({"message": {"conversation": "Oke terima kasih banyak"}})
    );
    let edit = msg("AGT001_3A77EDIT000000000001").await;
    // Realtime says "editedMessage", history ["extendedTextMessage"]: the later write wins, and
    // the two streams are consumed independently, so either can be last.
    assert!(
        ["editedMessage", "extendedTextMessage"].contains(&edit["message_type"].as_str().unwrap()),
        "{edit}"
    );
    assert_eq!(edit["status"], "3");
    // History re-sent an OUT message already read ("4"): it stays read.
    assert_eq!(msg("AGT001_3AD1E2F3A4B5C6D7E8F9").await["status"], "4");
    // No message row ever lands outside its month partition.
    let parts = rows(
        &pool,
        &tenant,
        "SELECT DISTINCT tableoid::regclass::text AS p FROM messages",
    )
    .await;
    assert_eq!(parts, vec![json!({"p": "messages_2024_06"})]);

    // Contacts: a real name beats the placeholder, defaults on creation.
    let c = row(
        &pool,
        &tenant,
        "SELECT * FROM contacts WHERE phone_number = '6281234567890'",
    )
    .await;
    assert_eq!(c["push_name"], "Budi Santoso (Pelanggan)");
    assert_eq!(c["status"], "ACTIVE");
    assert_eq!(c["chat_id"], "AGT001_6281234567890");
    assert!(uuid::Uuid::parse_str(c["id"].as_str().unwrap()).is_ok());
    assert_eq!(
        row(
            &pool,
            &tenant,
            "SELECT push_name FROM contacts WHERE phone_number = '6281311112222'"
        )
        .await["push_name"],
        "Andi"
    );

    // The agent ends logged out, without a QR code.
    let agent = row(&pool, &tenant, "SELECT * FROM agents").await;
    assert_eq!(agent["status"], "LOGOUT");
    assert!(agent["qr_code"].is_null());
    assert_eq!(agent["host_name"], "dwa-agt001-7c9f6d5b8-x2k4p");
}
