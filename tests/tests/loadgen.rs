//! The load generator's events are what the producer sends: every one of them lands, none is
//! dead-lettered. And like the producer it rides out a broker outage: what failed is published
//! again, and what was stored is not stored twice.

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use wa_integration_tests::broker;
use wa_integration_tests::functions::binary;
use wa_integration_tests::servers::PrivateNats;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::Subject;
use wa_shared::transport::streams::{HISTORY_STREAM, REALTIME_STREAM};

#[tokio::test]
async fn generated_events_of_every_subject_land_without_dead_letters() {
    let s = Stack::new("lg").await;
    let prefix = s.tenant.clone();
    let out = std::process::Command::new(binary("wa-loadgen"))
        .args([
            "--nats-url",
            &s.nats.url(),
            "run",
            "--create-streams",
            "--count",
            "400",
            "--seed",
            "5",
        ])
        .args([
            "--tenants",
            "2",
            "--agents-per-tenant",
            "2",
            "--company-prefix",
            &prefix,
            "--quiet",
            "--json",
        ])
        .output()
        .expect("run wa-loadgen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["published"], 400, "{report}");
    assert_eq!(report["errors"], 0, "{report}");

    let _rt = s.start("wa-realtime", &[]).await;
    let _hist = s.start("wa-historical", &[]).await;
    for (stream, durable) in [
        ("wa_events_stream", "wa_realtime"),
        ("wa_history_events_stream", "wa_historical"),
    ] {
        s.wait_settled(Duration::from_secs(120), stream, durable)
            .await;
    }
    let dead = broker::dead_letters(&s.js, &Subject::dead_letter(">")).await;
    assert!(
        dead.is_empty(),
        "generated events were dead-lettered: {:?}",
        dead.first()
    );
    let tenant = format!("{prefix}001");
    let messages = rows(&s.pool, &tenant, "SELECT count(*) AS n FROM messages").await;
    assert!(messages[0]["n"].as_i64().unwrap() > 0, "no messages landed");
}

/// Messages in the two product streams (0 while they are not there).
async fn stored(js: &Context) -> u64 {
    let mut n = 0;
    for name in [REALTIME_STREAM, HISTORY_STREAM] {
        if let Ok(stream) = js.get_stream(name).await {
            n += stream.cached_info().state.messages;
        }
    }
    n
}

async fn connect(url: &str) -> Context {
    jetstream::new(
        async_nats::connect(url)
            .await
            .expect("connect to the private NATS"),
    )
}

#[tokio::test]
async fn a_server_outage_mid_run_is_retried_and_every_event_is_stored_once() {
    // The client queues what is published while the server is away and sends it once it is
    // back: only an outage longer than the client's wait for an ack (5 s) surely fails
    // publishes. The queued ones are stored on reconnection, after their retries were
    // scheduled: those retries are answered "duplicate".
    const COUNT: u64 = 40_000;
    const OUTAGE: Duration = Duration::from_secs(6);
    let mut nats = PrivateNats::start();
    let mut loadgen = Command::new(binary("wa-loadgen"))
        .args(["--nats-url", &nats.url(), "run", "--create-streams"])
        .args([
            "--count",
            &COUNT.to_string(),
            "--seed",
            "9",
            "--quiet",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wa-loadgen");
    let js = connect(&nats.url()).await;
    eventually(
        Duration::from_secs(60),
        "wa-loadgen to store its first events",
        || async { (stored(&js).await >= 1000).then_some(()) },
    )
    .await;
    drop(js);
    nats.stop();
    assert!(
        loadgen.try_wait().expect("wa-loadgen status").is_none(),
        "wa-loadgen was done before the outage: publish more events"
    );
    tokio::time::sleep(OUTAGE).await; // the outage itself, not a wait for a result
    nats.restart();

    eventually(Duration::from_secs(120), "wa-loadgen to finish", || {
        let done = loadgen.try_wait().expect("wa-loadgen status").is_some();
        async move { done.then_some(()) }
    })
    .await;
    let out = loadgen.wait_with_output().expect("wa-loadgen output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["published"], COUNT, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["retries"].as_u64().unwrap() > 0,
        "nothing retried: {report}"
    );
    // Each event stored once: the retries of events an earlier attempt had stored were
    // deduplicated by their Nats-Msg-Id.
    assert_eq!(stored(&connect(&nats.url()).await).await, COUNT, "{report}");
}
