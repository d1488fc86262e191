//! The standalone functions end to end: real binaries, a private NATS, real Postgres.

use std::time::Duration;

use serde_json::json;
use wa_integration_tests::broker::{self, consumer_backlog};
use wa_integration_tests::expect::{assert_fixture_state, FIXTURE_MESSAGES};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_fixture_published_on_its_subject_lands() {
    let s = Stack::new("e2efx").await;
    let _rt = s.start("wa-realtime", &[]).await;
    let _hist = s.start("wa-historical", &[]).await;
    let published = s.publish_fixtures().await as i64;
    eventually(WAIT, "fixture messages", || async {
        (s.count("SELECT count(*) FROM messages").await == FIXTURE_MESSAGES
            && s.count("SELECT count(*) FROM contacts").await == 5
            && s.count("SELECT count(*) FROM inbox").await == published)
            .then_some(())
    })
    .await;
    // Updates published before their messages arrive land on redelivery; wait for every one.
    eventually(WAIT, "all stream messages settled", || async {
        let rt = consumer_backlog(&s.js, "wa_events_stream", "wa_realtime").await?;
        let hist = consumer_backlog(&s.js, "wa_history_events_stream", "wa_historical").await?;
        (rt == (0, 0) && hist == (0, 0)).then_some(())
    })
    .await;
    assert_fixture_state(&s.pool, &s.tenant).await;
    assert!(s.dead_letters().await.is_empty());
}
