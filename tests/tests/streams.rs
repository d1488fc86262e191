//! Streams and consumers on both supported nats-server versions (SPEC §1), each test on private
//! servers: reconciling keeps an operator's tuning, reports what it cannot fix safely while the
//! function runs on, gives new streams the configured shape and applies explicit settings;
//! `wa-admin streams` shows the differences; a `COMPANY_ID` consumer takes only its tenant's
//! subjects on the current release (`filter_subjects`) and the whole stream on 2.9.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use serde_json::{json, Value};
use wa_integration_tests::functions::{self, Function};
use wa_integration_tests::servers::{
    nats_server_binary, nats_server_current, NatsCluster, NatsServers, PrivateNats,
};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;
use wa_shared::model::{Subject, TenantId};
use wa_shared::transport::streams::{
    stream_specs, tenant_subjects, DLQ_STREAM, HISTORY_STREAM, REALTIME_STREAM,
};

const DAY: Duration = Duration::from_secs(86_400);
const WAIT: Duration = Duration::from_secs(60);

async fn config(js: &Context, name: &str) -> Config {
    js.get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"))
        .cached_info()
        .config
        .clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The subjects the functions give a stream.
fn our_subjects(name: &str) -> Vec<String> {
    stream_specs(1, DAY)
        .into_iter()
        .find(|s| s.name == name)
        .expect("product stream")
        .subjects
}

/// `/ready`: its status and body (status line and notices).
async fn ready(f: &Function) -> (u16, String) {
    f.get("/ready").await.expect("/ready answers")
}

/// Starts `wa-bridge` with one route and no Lambda behind it (nothing is published meanwhile,
/// so it never invokes): it creates and reconciles the streams like the functions.
async fn start_bridge<N: NatsServers>(s: &Stack<N>, extra: &[(&'static str, &str)]) -> Function {
    let mut env = vec![
        ("BRIDGE_ROUTES", "realtime=_"),
        ("LAMBDA_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
    ];
    env.extend_from_slice(extra);
    s.start("wa-bridge", &env).await
}

/// `wa-admin` with these arguments against `nats_url`: its stdout, which must be a success.
fn wa_admin(nats_url: &str, args: &[&str]) -> String {
    let out = Command::new(functions::binary("wa-admin"))
        .args(args)
        .env_clear()
        .env("NATS_URL", nats_url)
        .env("DATABASE_URL", database_url())
        .output()
        .expect("run wa-admin");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wa-admin {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The realtime stream as an operator tuned it: a longer max age, a byte limit, a longer
/// duplicate window and a subject of their own; and, as an earlier release left it, without
/// one of our subjects.
fn tuned_realtime_stream() -> Config {
    let mut subjects: Vec<String> = our_subjects(REALTIME_STREAM)
        .into_iter()
        .filter(|s| !s.starts_with("v1.connection."))
        .collect();
    subjects.push("ops.audit.>".into());
    Config {
        name: REALTIME_STREAM.into(),
        subjects,
        max_age: 90 * DAY,
        max_bytes: 1 << 30,
        duplicate_window: Duration::from_secs(600),
        storage: StorageType::File,
        ..Default::default()
    }
}

fn assert_tuning_kept(c: &Config) {
    assert_eq!(c.max_age, 90 * DAY, "max age lowered");
    assert_eq!(c.max_bytes, 1 << 30, "max bytes changed");
    assert_eq!(
        c.duplicate_window,
        Duration::from_secs(600),
        "window lowered"
    );
    assert_eq!(c.num_replicas, 1);
    assert!(
        c.subjects.contains(&"ops.audit.>".to_owned()),
        "{:?}",
        c.subjects
    );
    for s in our_subjects(REALTIME_STREAM) {
        assert!(c.subjects.contains(&s), "{s} missing from {:?}", c.subjects);
    }
}

async fn an_operators_tuning_survives_the_functions_and_the_bridge(binary: PathBuf) {
    let s = Stack::on(PrivateNats::start_with(binary), "tune").await;
    s.js.create_stream(tuned_realtime_stream())
        .await
        .expect("create the tuned stream");
    let f = s.start("wa-realtime", &[]).await;
    let c = config(&s.js, REALTIME_STREAM).await;
    assert_tuning_kept(&c);
    assert_eq!(c.subjects.len(), 8, "{:?}", c.subjects);
    let (status, body) = ready(&f).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("differs"), "nothing to report: {body}");
    assert!(
        f.logs().contains("stream updated in place"),
        "the added subject is logged:\n{}",
        f.logs()
    );
    // The added subject stores the producer's events; the function processes them.
    s.publish(
        ConnectionUpdate,
        json!({"agent_id": "AG", "status": "READY"}),
    )
    .await;
    s.wait_count(WAIT, "SELECT count(*) FROM agents", 1).await;
    let bridge = start_bridge(&s, &[]).await;
    assert_tuning_kept(&config(&s.js, REALTIME_STREAM).await);
    let (status, body) = ready(&bridge).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("differs"), "{body}");
}

#[tokio::test]
async fn an_operators_tuning_survives_the_functions_and_the_bridge_on_2_9() {
    an_operators_tuning_survives_the_functions_and_the_bridge(nats_server_binary()).await;
}

#[tokio::test]
async fn an_operators_tuning_survives_the_functions_and_the_bridge_on_current() {
    an_operators_tuning_survives_the_functions_and_the_bridge(nats_server_current()).await;
}

async fn an_unsafe_difference_is_reported_and_the_function_runs_on(binary: PathBuf) {
    let s = Stack::on(PrivateNats::start_with(binary), "unsafe").await;
    s.js.create_stream(Config {
        name: HISTORY_STREAM.into(),
        subjects: our_subjects(HISTORY_STREAM),
        retention: RetentionPolicy::Interest,
        storage: StorageType::Memory,
        max_age: DAY,
        ..Default::default()
    })
    .await
    .expect("create the stream");
    let f = s.start("wa-historical", &[]).await;
    let (status, body) = ready(&f).await;
    assert_eq!(status, 200, "a difference does not make it unready: {body}");
    for expected in [
        "stream wa_history_events_stream differs",
        "retention is interest",
        "storage is memory",
        "max_age is 1d (configured 30d)",
    ] {
        assert!(
            body.contains(expected),
            "{expected:?} not in /ready:\n{body}"
        );
    }
    assert!(
        !body.contains("wa_events_stream"),
        "the other streams are fine: {body}"
    );
    let logs = f.logs();
    assert!(
        logs.contains("stream differs from its configured shape; left as it is")
            && logs.contains("retention is interest"),
        "{logs}"
    );
    let c = config(&s.js, HISTORY_STREAM).await;
    assert_eq!(
        (c.retention, c.storage, c.max_age),
        (RetentionPolicy::Interest, StorageType::Memory, DAY),
        "left as it is"
    );
    s.publish(HistoryChats, json!({"chats": [{"chat_id": "AG_1"}]}))
        .await;
    s.wait_count(WAIT, "SELECT count(*) FROM chats", 1).await;
}

#[tokio::test]
async fn an_unsafe_difference_is_reported_and_the_function_runs_on_2_9() {
    an_unsafe_difference_is_reported_and_the_function_runs_on(nats_server_binary()).await;
}

#[tokio::test]
async fn an_unsafe_difference_is_reported_and_the_function_runs_on_current() {
    an_unsafe_difference_is_reported_and_the_function_runs_on(nats_server_current()).await;
}

async fn new_streams_get_the_configured_shape_and_explicit_settings_apply(
    binary: PathBuf,
    refuses_replicas: bool,
) {
    let s = Stack::on(PrivateNats::start_with(binary), "shape").await;
    let mut f = s.start("wa-realtime", &[("DLQ_MAX_AGE", "3d")]).await;
    for (name, age) in [
        (REALTIME_STREAM, 30 * DAY),
        (HISTORY_STREAM, 30 * DAY),
        (DLQ_STREAM, 3 * DAY),
    ] {
        let c = config(&s.js, name).await;
        assert_eq!(sorted(c.subjects.clone()), sorted(our_subjects(name)));
        assert_eq!(c.retention, RetentionPolicy::Limits, "{name}");
        assert_eq!(c.storage, StorageType::File, "{name}");
        assert_eq!(c.num_replicas, 1, "{name}");
        assert_eq!(c.max_age, age, "{name}");
        assert_eq!(c.duplicate_window, Duration::from_secs(120), "{name}");
        assert_eq!((c.max_bytes, c.max_messages), (-1, -1), "{name}");
    }
    f.stop(WAIT).await.expect("stop");
    // DLQ_MAX_AGE set: applied to the existing stream; unset: the longer age is kept.
    let mut f = s.start("wa-realtime", &[("DLQ_MAX_AGE", "14d")]).await;
    assert_eq!(config(&s.js, DLQ_STREAM).await.max_age, 14 * DAY);
    f.stop(WAIT).await.expect("stop");
    let mut f = s.start("wa-realtime", &[]).await;
    assert_eq!(config(&s.js, DLQ_STREAM).await.max_age, 14 * DAY);
    assert!(!ready(&f).await.1.contains("differs"));
    f.stop(WAIT).await.expect("stop");
    // STREAM_REPLICAS set is applied too. A single current server refuses 3 replicas, which is
    // reported while the function runs on; 2.9 records them (and keeps one copy).
    let f = s.start("wa-realtime", &[("STREAM_REPLICAS", "3")]).await;
    let (status, body) = ready(&f).await;
    assert_eq!(status, 200, "{body}");
    let replicas = config(&s.js, REALTIME_STREAM).await.num_replicas;
    if refuses_replicas {
        assert!(
            body.contains("stream wa_events_stream differs")
                && body.contains("could not update (replicas is 1 (configured 3)"),
            "{body}"
        );
        assert_eq!(replicas, 1);
    } else {
        assert!(!body.contains("differs"), "{body}");
        assert_eq!(replicas, 3);
    }
}

#[tokio::test]
async fn new_streams_get_the_configured_shape_and_explicit_settings_apply_on_2_9() {
    new_streams_get_the_configured_shape_and_explicit_settings_apply(nats_server_binary(), false)
        .await;
}

#[tokio::test]
async fn new_streams_get_the_configured_shape_and_explicit_settings_apply_on_current() {
    new_streams_get_the_configured_shape_and_explicit_settings_apply(nats_server_current(), true)
        .await;
}

/// On a 3-node cluster: streams an operator made R3 stay R3 whatever starts without
/// `STREAM_REPLICAS` (the bridge of `template.yaml` sets none), and `STREAM_REPLICAS` set
/// brings a stream scaled down by hand back.
#[tokio::test]
async fn replicas_are_kept_unless_stream_replicas_is_set() {
    let s = Stack::on(NatsCluster::start(nats_server_current()).await, "repl").await;
    s.create_streams().await;
    let replicas = |name: &'static str| {
        let js = s.js.clone();
        async move { config(&js, name).await.num_replicas }
    };
    for name in [REALTIME_STREAM, HISTORY_STREAM, DLQ_STREAM] {
        assert_eq!(replicas(name).await, 3, "{name}");
    }
    // The stack sets STREAM_REPLICAS on a cluster; blank counts as unset.
    let unset = ("STREAM_REPLICAS", "");
    let mut f = s.start("wa-realtime", &[unset]).await;
    let mut bridge = start_bridge(&s, &[unset]).await;
    for name in [REALTIME_STREAM, HISTORY_STREAM, DLQ_STREAM] {
        assert_eq!(replicas(name).await, 3, "{name} kept its replicas");
    }
    assert!(!ready(&f).await.1.contains("differs"));
    f.stop(WAIT).await.expect("stop");
    bridge.stop(WAIT).await.expect("stop");
    let mut dlq = config(&s.js, DLQ_STREAM).await;
    dlq.num_replicas = 1;
    s.js.update_stream(&dlq).await.expect("scale down by hand");
    let f = s.start("wa-realtime", &[("STREAM_REPLICAS", "3")]).await;
    assert_eq!(replicas(DLQ_STREAM).await, 3, "STREAM_REPLICAS applied");
    assert!(!ready(&f).await.1.contains("differs"));
}

async fn wa_admin_streams_shows_the_differences(binary: PathBuf) {
    let s = Stack::on(PrivateNats::start_with(binary), "adm").await;
    s.js.create_stream(tuned_realtime_stream())
        .await
        .expect("create");
    s.js.create_stream(Config {
        name: HISTORY_STREAM.into(),
        subjects: our_subjects(HISTORY_STREAM),
        retention: RetentionPolicy::Interest,
        max_age: 30 * DAY,
        ..Default::default()
    })
    .await
    .expect("create");
    let url = s.nats.url();
    let view: Value = serde_json::from_str(&wa_admin(&url, &["streams", "--json"])).expect("JSON");
    let streams = view["streams"].as_array().expect("streams");
    let verdicts = |i: usize| -> Vec<(String, String)> {
        streams[i]["differences"]
            .as_array()
            .expect("differences")
            .iter()
            .map(|d| {
                (
                    d["field"].as_str().unwrap().to_owned(),
                    d["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |f: &str, v: &str| (f.to_owned(), v.to_owned());
    assert_eq!(streams[0]["stream"], REALTIME_STREAM);
    let rt = verdicts(0);
    for expected in [
        pair("subjects", "update"),
        pair("extra subjects", "keep"),
        pair("max_age", "keep"),
        pair("duplicate_window", "keep"),
        pair("max_bytes", "keep"),
    ] {
        assert!(rt.contains(&expected), "{expected:?} not in {rt:?}");
    }
    assert_eq!(verdicts(1), [pair("retention", "report")]);
    assert_eq!(streams[2]["exists"], false);
    assert_eq!(streams[0]["current"]["max_age"], "90d");
    assert_eq!(streams[0]["configured"]["max_age"], "30d or longer");
    // For people: a table per stream with what reconciling does.
    let table = wa_admin(&url, &["streams"]);
    for expected in [
        "wa_history_events_stream",
        "retention",
        "interest",
        "report",
        "dlq_stream: missing",
    ] {
        assert!(table.contains(expected), "{expected:?} not in:\n{table}");
    }
    // --apply reconciles as a function would: the subject added, the missing stream created,
    // the tuning and the unsafe difference left alone.
    let applied: Value =
        serde_json::from_str(&wa_admin(&url, &["streams", "--apply", "--json"])).expect("JSON");
    assert_eq!(applied["streams"][0]["applied"]["updated"], true);
    assert_eq!(applied["streams"][2]["applied"]["created"], true);
    assert_tuning_kept(&config(&s.js, REALTIME_STREAM).await);
    assert_eq!(
        config(&s.js, HISTORY_STREAM).await.retention,
        RetentionPolicy::Interest
    );
    assert_eq!(config(&s.js, DLQ_STREAM).await.max_age, 7 * DAY);
}

#[tokio::test]
async fn wa_admin_streams_shows_the_differences_on_2_9() {
    wa_admin_streams_shows_the_differences(nats_server_binary()).await;
}

#[tokio::test]
async fn wa_admin_streams_shows_the_differences_on_current() {
    wa_admin_streams_shows_the_differences(nats_server_current()).await;
}

/// `COMPANY_ID`: the durable consumer an earlier release (or 2.9) left on the whole stream,
/// with messages of two tenants pending, is updated in place; on the current release it then
/// takes only its tenant's subjects (`filter_subjects`: its pending count is its tenant's), on
/// 2.9 the whole stream, with the other tenant's events acknowledged unprocessed. Nothing
/// pending is lost either way.
///
/// A pending count is read only once the stream has told every consumer of the messages
/// published so far: since 2.10 the server does that after it has acknowledged the publish, so
/// a count read at once can be short. A consumer on the whole stream that never fetches says
/// when it is done ([`pending_once_signalled`]).
async fn a_company_consumer_takes_only_its_tenant(binary: PathBuf, filtered: bool) {
    let s = Stack::on(PrivateNats::start_with(binary), "cmp").await;
    let other = unique_tenant("cmpother");
    s.create_streams().await;
    let durable = format!("wa_realtime_{}", s.tenant);
    let stream = s.js.get_stream(REALTIME_STREAM).await.expect("stream");
    stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            max_deliver: -1,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .expect("the whole-stream consumer of an earlier release");
    stream
        .create_consumer(pull::Config {
            durable_name: Some(OBSERVER.to_owned()),
            ack_policy: AckPolicy::Explicit,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("the observing consumer");
    let publish = |tenant: String, chat: &'static str| {
        let js = s.js.clone();
        async move {
            let body = json!({"chat_id": chat, "unread_count": 1}).to_string();
            broker::publish(&js, &Subject::format(ChatUpdate, &tenant), body).await;
        }
    };
    publish(s.tenant.clone(), "AG_1").await;
    publish(s.tenant.clone(), "AG_2").await;
    for chat in ["AG_1", "AG_2", "AG_3"] {
        publish(other.clone(), chat).await;
    }
    pending_once_signalled(&s, &durable, 5, 5).await;

    let mut f = s.start("wa-realtime", &[("COMPANY_ID", &s.tenant)]).await;
    s.wait_count(WAIT, "SELECT count(*) FROM chats", 2).await;
    s.wait_settled(WAIT, REALTIME_STREAM, &durable).await;
    let info = s.consumer_info(REALTIME_STREAM, &durable).await;
    let tenant = TenantId::parse(&s.tenant).expect("tenant");
    if filtered {
        assert_eq!(
            sorted(info.config.filter_subjects.clone()),
            sorted(tenant_subjects(REALTIME_STREAM, &tenant))
        );
    } else {
        assert!(info.config.filter_subjects.is_empty(), "{:?}", info.config);
    }
    assert_eq!(info.config.filter_subject, "");
    assert!(!schema_exists(&s.pool, &schema_name(&other)).await);

    f.stop(WAIT).await.expect("stop");
    publish(s.tenant.clone(), "AG_3").await;
    for chat in ["AG_4", "AG_5", "AG_6"] {
        publish(other.clone(), chat).await;
    }
    // Filtered: only its tenant's events are pending; 2.9: the whole stream is.
    pending_once_signalled(&s, &durable, 9, if filtered { 1 } else { 4 }).await;
    let state = s.js.get_stream(REALTIME_STREAM).await.expect("stream");
    assert_eq!(state.cached_info().state.messages, 9, "every event is kept");
    let _f = s.start("wa-realtime", &[("COMPANY_ID", &s.tenant)]).await;
    s.wait_count(WAIT, "SELECT count(*) FROM chats", 3).await;
    s.wait_settled(WAIT, REALTIME_STREAM, &durable).await;
    assert!(!schema_exists(&s.pool, &schema_name(&other)).await);
}

/// The durable consumer on the whole stream that never fetches (see below).
const OBSERVER: &str = "observer";

/// Waits until [`OBSERVER`] counts `published` messages pending, so that the stream has
/// signalled every consumer of all but perhaps the last message, then until `durable` counts
/// `pending` (the last message's signal may reach it a moment after the observer). A wrong
/// filter shows: every message before the last has been counted by then, so a count off by
/// more than one is never `pending`.
async fn pending_once_signalled(s: &Stack, durable: &str, published: u64, pending: u64) {
    for (consumer, expected) in [(OBSERVER, published), (durable, pending)] {
        let what = format!("{consumer} to count {expected} pending");
        let last = std::cell::Cell::new(None);
        let found = wa_testkit::poll(WAIT, || {
            let last = &last;
            async move {
                let n = s.consumer_info(REALTIME_STREAM, consumer).await.num_pending;
                last.set(Some(n));
                Ok::<_, std::convert::Infallible>((n == expected).then_some(()))
            }
        })
        .await;
        assert!(
            matches!(found, Ok(Some(()))),
            "timed out waiting for {what}; it counts {:?}",
            last.get()
        );
    }
}

#[tokio::test]
async fn a_company_consumer_takes_only_its_tenant_on_current() {
    a_company_consumer_takes_only_its_tenant(nats_server_current(), true).await;
}

#[tokio::test]
async fn a_company_consumer_takes_the_whole_stream_on_2_9() {
    a_company_consumer_takes_only_its_tenant(nats_server_binary(), false).await;
}
