//! The load generator's events are what the producer sends: every one of them lands, none is
//! dead-lettered.

use std::time::Duration;

use wa_integration_tests::broker;
use wa_integration_tests::functions::binary;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::Subject;

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
