//! Tenants on two Postgres clusters (SPEC §17) end to end: the real binaries with
//! `TENANT_DATABASES`, a private NATS, the main database (a fresh one on the shared Postgres,
//! holding `wa_system.tenants`) and a private second cluster. Tenants are placed the way an
//! operator pre-places them: their record in `wa_system.tenants` names a placement before
//! their first event (tenants never recorded go to the default placement, the main database).

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use wa_integration_tests::broker;
use wa_integration_tests::functions::{Function, READY_WITHIN};
use wa_integration_tests::lambda::{start_bridge, LocalLambda};
use wa_integration_tests::tenants::counter_total;
use wa_integration_tests::two_clusters::{connect, waited, TwoClusters, SECOND};
use wa_integration_tests::workload::{self, Upserts, Workload};
use wa_integration_tests::*;
use wa_shared::model::EventKind::*;
use wa_shared::model::{Subject, TenantId};
use wa_shared::store::placement::{self, TenantState, DEFAULT_PLACEMENT};
use wa_shared::store::schema::tenant_schemas;
use wa_shared::store::tenants;
use wa_shared::transport::streams::{DLQ_STREAM, REALTIME_STREAM};

const WAIT: Duration = Duration::from_secs(60);

/// The realtime function's durable consumer and its metrics' prefix.
const REALTIME: &str = "wa_realtime";
const METRICS: &str = "message_event_service";

/// The two clusters, and what these tests do with them.
struct Placed(TwoClusters);

impl std::ops::Deref for Placed {
    type Target = TwoClusters;
    fn deref(&self) -> &TwoClusters {
        &self.0
    }
}

impl std::ops::DerefMut for Placed {
    fn deref_mut(&mut self) -> &mut TwoClusters {
        &mut self.0
    }
}

impl Placed {
    async fn new(prefix: &str) -> Self {
        Placed(TwoClusters::new(prefix, "wa_place_").await)
    }

    /// Records `tenant` on `placement` in `state`, as an operator does before its first event.
    async fn place(&self, tenant: &str, placement: &str, state: TenantState) {
        let id = TenantId::parse(tenant).unwrap();
        tenants::claim(&self.s.pool, &id).await.unwrap();
        assert!(
            tenants::set_placement(&self.s.pool, &id.schema_name(), placement, state)
                .await
                .unwrap()
        );
    }

    /// The pool of a placement's database.
    fn pool(&self, placement: &str) -> &PgPool {
        match placement {
            DEFAULT_PLACEMENT => &self.s.pool,
            SECOND => &self.second_pool,
            other => panic!("no database for placement {other}"),
        }
    }

    /// The pool of the database of the placement other than `placement`.
    fn other(&self, placement: &str) -> &PgPool {
        match placement {
            SECOND => &self.s.pool,
            _ => &self.second_pool,
        }
    }

    /// The placement recorded for `tenant`.
    async fn recorded(&self, tenant: &str) -> String {
        tenants::by_schema(&self.s.pool, &schema_name(tenant))
            .await
            .unwrap()
            .expect("recorded")
            .placement
    }

    /// Publishes events of `kind` and `body` pairs for `tenant`, pipelined.
    async fn publish(&self, tenant: &str, events: &[(wa_shared::model::EventKind, Value)]) {
        workload::publish(&self.s.js, tenant, events).await
    }

    /// Waits until `tenant` has `n` inbox rows on `placement`.
    async fn wait_inbox(&self, tenant: &str, placement: &str, n: i64) {
        let pool = self.pool(placement);
        eventually(
            WAIT,
            &format!("{n} events of {tenant} on {placement}"),
            || async { (inbox(pool, tenant).await == Some(n)).then_some(()) },
        )
        .await;
    }

    /// Waits until the realtime consumer has nothing pending or unacknowledged.
    async fn settled(&self) {
        self.s.wait_settled(WAIT, REALTIME_STREAM, REALTIME).await;
    }

    /// Messages in the DLQ stream (0 while it does not exist).
    async fn dead_letters(&self) -> u64 {
        match self.s.js.get_stream(DLQ_STREAM).await {
            Ok(mut stream) => stream.info().await.expect("dlq info").state.messages,
            Err(_) => 0,
        }
    }

    /// The realtime consumer's (pending, unacknowledged) messages.
    async fn backlog(&self) -> Option<(u64, usize)> {
        broker::consumer_backlog(&self.s.js, REALTIME_STREAM, REALTIME).await
    }
}

/// The tenant's inbox rows on the database of `pool`; None while it has no schema there.
async fn inbox(pool: &PgPool, tenant: &str) -> Option<i64> {
    wa_integration_tests::tenants::counts(pool, &[tenant.to_owned()])
        .await
        .get(tenant)
        .map(|c| c.inbox)
}

/// Waits until every one of `events` events of `tenant` was let wait at least `rounds` times.
async fn wait_waited(f: &Function, tenant: &str, events: usize, rounds: usize) {
    let want = (events * rounds) as f64;
    eventually(
        WAIT,
        &format!("{events} events of {tenant} waiting {rounds} times"),
        || async { (waited(f, tenant).await >= want).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn tenants_on_both_clusters_land_on_theirs_only_and_once() {
    let w = Placed::new("pla").await;
    let on_main = unique_tenant("plam");
    let on_second: Vec<String> = (0..2).map(|_| unique_tenant("plas")).collect();
    for t in &on_second {
        w.place(t, SECOND, TenantState::Active).await;
    }
    let placed: Vec<(&str, &str)> = std::iter::once((on_main.as_str(), DEFAULT_PLACEMENT))
        .chain(on_second.iter().map(|t| (t.as_str(), SECOND)))
        .collect();
    let loads: Vec<Workload> = (0..placed.len())
        .map(|i| Workload::generate(150, 6, 41 + i as u64))
        .collect();
    // Published before the function starts, interleaved: its first fetch spans both clusters.
    w.s.create_streams().await;
    for round in 0..10 {
        for ((tenant, _), load) in placed.iter().zip(&loads) {
            w.publish(tenant, &load.events[round * 15..(round + 1) * 15])
                .await;
        }
    }
    let mut rt = w.start("wa-realtime", &[]).await;
    w.settled().await;
    let check = || async {
        for ((tenant, placement), load) in placed.iter().zip(&loads) {
            assert_eq!(
                inbox(w.pool(placement), tenant).await,
                Some(150),
                "{tenant}"
            );
            load.assert_applied(w.pool(placement), tenant).await;
            assert!(
                !schema_exists(w.other(placement), &schema_name(tenant)).await,
                "{tenant} has a schema on the other cluster"
            );
            assert_eq!(w.recorded(tenant).await, *placement);
        }
        let mut seconds: Vec<String> = on_second.iter().map(|t| schema_name(t)).collect();
        seconds.sort();
        assert_eq!(tenant_schemas(&w.second_pool).await.unwrap(), seconds);
        assert_eq!(
            tenant_schemas(&w.s.pool).await.unwrap(),
            vec![schema_name(&on_main)]
        );
        assert_eq!(w.dead_letters().await, 0);
    };
    check().await;

    // Every message delivered again (the consumer recreated from the stream's start): each is a
    // duplicate on its own cluster, and nothing changes.
    rt.stop(WAIT).await.unwrap();
    w.s.js
        .get_stream(REALTIME_STREAM)
        .await
        .unwrap()
        .delete_consumer(REALTIME)
        .await
        .unwrap();
    rt.restart().unwrap();
    rt.wait_ready(READY_WITHIN).await.unwrap();
    w.settled().await;
    let info = w.s.consumer_info(REALTIME_STREAM, REALTIME).await;
    assert_eq!(
        info.delivered.stream_sequence, 450,
        "every message delivered again"
    );
    check().await;
}

#[tokio::test]
async fn a_cluster_down_holds_only_its_tenants_and_loses_nothing() {
    let mut w = Placed::new("pld").await;
    let main = unique_tenant("pldm");
    let cached = unique_tenant("pldc");
    let first_met = unique_tenant("pldf");
    w.place(&cached, SECOND, TenantState::Active).await;
    w.place(&first_met, SECOND, TenantState::Active).await;
    let rt = w.start("wa-realtime", &[]).await;
    let loads = [
        Upserts::generate(&main, 200),
        Upserts::generate(&cached, 200),
        Upserts::generate(&first_met, 100),
    ];
    w.publish(&main, &loads[0].events[..100]).await;
    w.publish(&cached, &loads[1].events[..100]).await;
    w.wait_inbox(&main, DEFAULT_PLACEMENT, 100).await;
    w.wait_inbox(&cached, SECOND, 100).await;

    w.second_pool.close().await;
    w.second.stop();
    w.publish(&main, &loads[0].events[100..]).await;
    w.publish(&cached, &loads[1].events[100..]).await;
    w.publish(&first_met, &loads[2].events).await;
    // The main cluster's tenant keeps flowing while the second is down.
    w.wait_inbox(&main, DEFAULT_PLACEMENT, 200).await;
    // The second cluster's tenants wait: neither acknowledged nor dead-lettered, and no batch
    // is held for them.
    wait_waited(&rt, &cached, 100, 2).await;
    wait_waited(&rt, &first_met, 100, 2).await;
    eventually(WAIT, "only the held events unacknowledged", || async {
        let (pending, unacked) = w.backlog().await?;
        (pending + unacked as u64 == 200).then_some(())
    })
    .await;
    assert_eq!(w.dead_letters().await, 0);
    let (_, metrics) = rt.get("/metrics").await.expect("metrics");
    assert_eq!(
        counter_total(&metrics, &format!("{METRICS}_batches_held_total")),
        0.0,
        "no batch is held for one placement"
    );

    w.second.restart();
    w.second_pool = connect(&w.second_url).await;
    w.wait_inbox(&cached, SECOND, 200).await;
    w.wait_inbox(&first_met, SECOND, 100).await;
    w.settled().await;
    for ((tenant, placement), load) in [
        (&main, DEFAULT_PLACEMENT),
        (&cached, SECOND),
        (&first_met, SECOND),
    ]
    .into_iter()
    .zip(&loads)
    {
        load.assert_landed(w.pool(placement), tenant).await;
        assert_eq!(
            inbox(w.pool(placement), tenant).await,
            Some(load.events.len() as i64)
        );
        assert!(!schema_exists(w.other(placement), &schema_name(tenant)).await);
    }
    // Applied + dead-lettered = published.
    assert_eq!(w.dead_letters().await, 0);
}

/// Realtime settings under which two attempts dead-letter an event within a second: events
/// that wait many rounds without a dead letter spent no attempt.
const FEW_ATTEMPTS: &[(&str, &str)] = &[
    ("MAX_DELIVER", "2"),
    ("BACKOFF", "100ms"),
    ("RETRY_WINDOW", "0s"),
];

#[tokio::test]
async fn unknown_paused_and_fenced_tenants_wait_then_land_where_they_are_placed() {
    let w = Placed::new("plh").await;
    let unknown = unique_tenant("plhu");
    let paused = unique_tenant("plhp");
    let fenced = unique_tenant("plhf");
    let neighbour = unique_tenant("plhn");
    w.place(&unknown, "elsewhere", TenantState::Active).await;
    w.place(&paused, DEFAULT_PLACEMENT, TenantState::Paused)
        .await;
    placement::fence(&w.s.pool, &schema_name(&paused), "paused by the test")
        .await
        .unwrap();
    w.place(&fenced, SECOND, TenantState::Active).await;
    w.place(&neighbour, SECOND, TenantState::Active).await;
    let rt = w.start("wa-realtime", FEW_ATTEMPTS).await;
    let loads = [
        Upserts::generate(&unknown, 20),
        Upserts::generate(&paused, 20),
        Upserts::generate(&fenced, 40),
        Upserts::generate(&neighbour, 40),
    ];

    // Written once, so the process has the tenant cached as active on the second cluster; then
    // fenced there: its next events wait, whatever the process remembers, while its neighbour
    // on the same cluster goes on.
    w.publish(&fenced, &loads[2].events[..20]).await;
    w.publish(&neighbour, &loads[3].events[..20]).await;
    w.wait_inbox(&fenced, SECOND, 20).await;
    w.wait_inbox(&neighbour, SECOND, 20).await;
    placement::fence(&w.second_pool, &schema_name(&fenced), "moving")
        .await
        .unwrap();
    w.publish(&unknown, &loads[0].events).await;
    w.publish(&paused, &loads[1].events).await;
    for i in 20..40 {
        w.publish(&fenced, &loads[2].events[i..=i]).await;
        w.publish(&neighbour, &loads[3].events[i..=i]).await;
    }
    w.wait_inbox(&neighbour, SECOND, 40).await;
    for t in [&unknown, &paused, &fenced] {
        wait_waited(&rt, t, 20, 3).await;
    }
    assert_eq!(w.dead_letters().await, 0, "waiting is no attempt");
    assert_eq!(inbox(&w.second_pool, &fenced).await, Some(20));
    for t in [&unknown, &paused] {
        for pool in [&w.s.pool, &w.second_pool] {
            assert!(!schema_exists(pool, &schema_name(t)).await, "{t}");
        }
    }

    // Placed on a known cluster, resumed, unfenced: each lands where it is placed.
    let schema = |t: &str| schema_name(t);
    tenants::set_placement(&w.s.pool, &schema(&unknown), SECOND, TenantState::Active)
        .await
        .unwrap();
    placement::unfence(&w.s.pool, &schema(&paused))
        .await
        .unwrap();
    tenants::set_state(&w.s.pool, &schema(&paused), TenantState::Active)
        .await
        .unwrap();
    placement::unfence(&w.second_pool, &schema(&fenced))
        .await
        .unwrap();
    w.wait_inbox(&unknown, SECOND, 20).await;
    w.wait_inbox(&paused, DEFAULT_PLACEMENT, 20).await;
    w.wait_inbox(&fenced, SECOND, 40).await;
    w.settled().await;
    for ((tenant, placement), load) in [
        (&unknown, SECOND),
        (&paused, DEFAULT_PLACEMENT),
        (&fenced, SECOND),
        (&neighbour, SECOND),
    ]
    .into_iter()
    .zip(&loads)
    {
        load.assert_landed(w.pool(placement), tenant).await;
        assert!(!schema_exists(w.other(placement), &schema_name(tenant)).await);
    }
    assert_eq!(w.dead_letters().await, 0);
}

#[tokio::test]
async fn onboarding_and_dlq_retry_write_a_second_cluster_tenant_there() {
    let w = Placed::new("plo").await;
    let onboarded = unique_tenant("ploo");
    let exhausted = unique_tenant("ploe");
    w.place(&onboarded, SECOND, TenantState::Active).await;
    w.place(&exhausted, SECOND, TenantState::Active).await;
    let _rt = w.start("wa-realtime", FEW_ATTEMPTS).await;
    let _onb = w.start("wa-onboarding", &[]).await;
    let _dlq = w
        .start(
            "wa-dlq-retry",
            &[("DLQ_BACKOFF", "300ms,300ms"), ("RETRY_WINDOW", "0s")],
        )
        .await;
    w.publish(
        &onboarded,
        &[(
            MessageUpsert,
            json!({"message_id": "m1", "chat_id": "AG_628111", "jid": "628111@s.whatsapp.net",
                   "flow": "IN", "from_phone": "628111", "to_phone": "6281100000001",
                   "agent_id": "AG", "message_timestamp": 1718358000}),
        )],
    )
    .await;
    // A receipt whose message never comes: exhausted by realtime, then by dlq-retry.
    w.publish(
        &exhausted,
        &[(MessageUpdate, json!({"message_id": "ghost", "status": "4"}))],
    )
    .await;

    let second = &w.second_pool;
    let log = eventually(WAIT, "the onboarding on the second cluster", || async {
        inbox(second, &onboarded).await?;
        let log = rows(
            second,
            &onboarded,
            "SELECT message_id, phone_number FROM onboarding_log",
        )
        .await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(
        log,
        vec![json!({"message_id": "m1", "phone_number": "628111"})]
    );
    assert_eq!(
        rows(
            second,
            &onboarded,
            "SELECT phone_number, tags FROM contacts"
        )
        .await,
        vec![json!({"phone_number": "628111", "tags": "Onboarded"})]
    );
    let dead = eventually(
        WAIT,
        "the exhausted event on the second cluster",
        || async {
            inbox(second, &exhausted).await?;
            let r = rows(
                second,
                &exhausted,
                "SELECT source_subject, error_type, retry_count FROM exhausted_events",
            )
            .await;
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    assert_eq!(
        dead,
        vec![
            json!({"source_subject": Subject::format(MessageUpdate, &exhausted),
                    "error_type": "retry_exhausted", "retry_count": 5})
        ]
    );
    w.s.wait_settled(WAIT, REALTIME_STREAM, "wa_onboarding")
        .await;
    w.s.wait_settled(WAIT, DLQ_STREAM, "wa_dlq_retry").await;
    for t in [&onboarded, &exhausted] {
        assert!(!schema_exists(&w.s.pool, &schema_name(t)).await, "{t}");
    }
    let in_system: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wa_system.exhausted_events WHERE company_id = $1")
            .bind(&exhausted)
            .fetch_one(&w.s.pool)
            .await
            .unwrap();
    assert_eq!(in_system, 0);
}

#[tokio::test]
async fn lambda_mode_writes_each_tenant_on_its_cluster() {
    let w = Placed::new("pll").await;
    let on_main = unique_tenant("pllm");
    let on_second = unique_tenant("plls");
    w.place(&on_second, SECOND, TenantState::Active).await;
    let databases = w.tenant_databases();
    let rt = LocalLambda::start(&w.s, "wa-realtime", &[("TENANT_DATABASES", &databases)]);
    let _bridge = start_bridge(&w.s, "realtime", &rt, &[]).await;
    let loads = [
        Workload::generate(200, 8, 53),
        Workload::generate(200, 8, 59),
    ];
    let placed = [(&on_main, DEFAULT_PLACEMENT), (&on_second, SECOND)];
    for ((tenant, _), load) in placed.iter().zip(&loads) {
        load.publish(&w.s.js, tenant).await;
    }
    for ((tenant, placement), _) in placed.iter().zip(&loads) {
        w.wait_inbox(tenant, placement, 200).await;
    }
    w.settled().await;
    for ((tenant, placement), load) in placed.iter().zip(&loads) {
        load.assert_applied(w.pool(placement), tenant).await;
        assert!(!schema_exists(w.other(placement), &schema_name(tenant)).await);
    }
    assert_eq!(w.dead_letters().await, 0);
}
