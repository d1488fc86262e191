//! SPEC §1 and §14 on a 3-node JetStream cluster with R3 streams: losing the stream leader,
//! the consumer leader or a whole node under load, or the function on the last delivery of the
//! messages it holds, loses nothing and applies nothing twice — on the current nats-server
//! release and on the machine's 2.9.
//!
//! Every test publishes valid events of a fresh tenant through a publisher that retries until
//! the stream acknowledges, while `wa-realtime` (or the bridge and the function in Lambda mode)
//! consumes; strikes; waits until the consumer has nothing pending or unacknowledged; then
//! checks each of the tenant's stream sequences against its inbox rows and dead letters.
//!
//! `just failover-long` runs the long version: `FAILOVER_EVENTS` (100000), `FAILOVER_KILLS` (3),
//! `FAILOVER_RATE` (events/s, 2000), `FAILOVER_NATS` (`current` or `2.9`), `FAILOVER_MODE`
//! (`standalone` or `bridge`), `FAILOVER_ENV` (the consumer's variables over `BATCH_SIZE=100`,
//! e.g. `BATCH_SIZE=500,BATCH_MAX_BYTES=0`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use wa_integration_tests::broker::{consumer_backlog, jetstream};
use wa_integration_tests::functions::{Function, HOLDING_WITHIN, READY_WITHIN};
use wa_integration_tests::lambda::{start_bridge, LocalLambda};
use wa_integration_tests::ledger::Ledger;
use wa_integration_tests::publisher::{Published, Publisher};
use wa_integration_tests::servers::{
    nats_server_binary, nats_server_current, nats_server_version, NatsCluster,
};
use wa_integration_tests::stack::Stack;
use wa_integration_tests::workload::{Upserts, Workload};
use wa_integration_tests::{eventually, lock_table, schema_ident};
use wa_shared::model::EventKind::{self, *};

const STREAM: &str = "wa_events_stream";
const DURABLE: &str = "wa_realtime";
const KINDS: [EventKind; 5] = [
    MessageUpsert,
    ChatUpsert,
    ContactUpsert,
    ChatUpdate,
    MessageUpdate,
];

/// What a scenario publishes, and the state it must leave.
enum Expected {
    /// New rows only (each event independent of the others).
    Upserts(Upserts),
    /// Unread deltas (wrong if applied twice) and receipts that wait for their message (a
    /// message held back by the fault makes its receipt retry until it comes back).
    Realtime(Workload),
}

impl Expected {
    fn events(&self) -> &[(EventKind, serde_json::Value)] {
        match self {
            Expected::Upserts(u) => &u.events,
            Expected::Realtime(w) => &w.events,
        }
    }

    async fn assert_landed(&self, pool: &PgPool, tenant: &str) {
        match self {
            Expected::Upserts(u) => u.assert_landed(pool, tenant).await,
            Expected::Realtime(w) => w.assert_applied(pool, tenant).await,
        }
    }
}

/// The short scenarios' workload: a few seconds of publishing.
const EVENTS: usize = 3000;
const RATE: u32 = 500;

/// A delivery lost in a failover comes back after the consumer's ack wait (30 s): well within.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGTERM to the node leading the stream (a clean stop: it hands its leaderships over).
    TerminateStreamLeader,
    /// SIGKILL to the node leading the durable consumer.
    KillConsumerLeader,
    /// SIGKILL to a whole node that the publisher does not use (the stream's leader if it can).
    KillNode,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Standalone,
    /// The function in Lambda mode behind the local Runtime API emulator, invoked by `wa-bridge`.
    Bridge,
}

/// Starts what consumes `wa_realtime` with these variables: the function, or the Lambda
/// Runtime API emulator with the function behind it and the bridge invoking it (both kept alive
/// for the test).
async fn start_consumers(
    s: &Stack<NatsCluster>,
    mode: Mode,
    env: &[(&'static str, String)],
) -> (Option<LocalLambda>, Function) {
    let env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match mode {
        Mode::Standalone => (None, s.start("wa-realtime", &env).await),
        Mode::Bridge => {
            let lambda = LocalLambda::start(s, "wa-realtime", &[]);
            let bridge = start_bridge(s, "realtime", &lambda, &env).await;
            (Some(lambda), bridge)
        }
    }
}

/// A scenario's workload: how many events, how fast, and the consumer's variables.
struct Load {
    events: usize,
    rate: u32,
    env: Vec<(&'static str, String)>,
    /// Deltas and receipts instead of upserts.
    realtime: bool,
}

impl Load {
    /// A few seconds of publishing, fetched in batches of 100 (so that a backlog after a fault
    /// spans several batches).
    fn short() -> Self {
        Load {
            events: EVENTS,
            rate: RATE,
            env: vec![("BATCH_SIZE", "100".into())],
            realtime: false,
        }
    }

    /// The same, with unread deltas and receipts.
    fn realtime() -> Self {
        Load {
            realtime: true,
            ..Load::short()
        }
    }
}

/// One fault and what followed it.
struct Strike {
    fault: Fault,
    node: String,
    at: Instant,
    /// From the fault until a running node leads the stream (or consumer) again.
    election: Duration,
    /// From the fault until the inbox holds as many messages as were acknowledged at the fault.
    caught_up: JoinHandle<Option<Duration>>,
}

/// A cluster, the streams (R3), and the consumers of one scenario.
struct Scenario {
    _consumers: (Option<LocalLambda>, Function),
    s: Stack<NatsCluster>,
    label: String,
}

impl Scenario {
    async fn start(
        label: &str,
        binary: PathBuf,
        mode: Mode,
        env: &[(&'static str, String)],
    ) -> Self {
        let label = format!("{label} [{}, {mode:?}]", nats_server_version(&binary));
        let cluster = NatsCluster::start(binary).await;
        let s = Stack::on(cluster, "fo").await;
        s.create_streams().await;
        let consumers = start_consumers(&s, mode, env).await;
        // The consumer exists once the function is ready; its leader is known from now on.
        s.nats.consumer_leader(&s.js, STREAM, DURABLE).await;
        Scenario {
            s,
            _consumers: consumers,
            label,
        }
    }

    /// Applies `fault` and waits until the cluster has elected the leaders it took away.
    async fn strike(
        &mut self,
        fault: Fault,
        publisher_js: &Context,
        acked: usize,
    ) -> (usize, Strike) {
        let js = self.s.js.clone();
        let cluster = &mut self.s.nats;
        let stream_leader = cluster.stream_leader(&js, STREAM).await;
        let consumer_leader = cluster.consumer_leader(&js, STREAM, DURABLE).await;
        let publisher = {
            let name = publisher_js.client().server_info().server_name;
            cluster.index_of(&name)
        };
        let victim = match fault {
            Fault::TerminateStreamLeader => stream_leader,
            Fault::KillConsumerLeader => consumer_leader,
            Fault::KillNode => [stream_leader, consumer_leader, 0, 1, 2]
                .into_iter()
                .find(|n| Some(*n) != publisher)
                .expect("a node the publisher does not use"),
        };
        let at = Instant::now();
        match fault {
            Fault::TerminateStreamLeader => {
                cluster.terminate(victim).await;
            }
            Fault::KillConsumerLeader | Fault::KillNode => cluster.kill(victim),
        }
        let caught_up = caught_up(self.s.pool.clone(), self.s.tenant.clone(), acked as i64, at);
        cluster.stream_leader(&js, STREAM).await;
        cluster.consumer_leader(&js, STREAM, DURABLE).await;
        let led: Vec<&str> = [
            (stream_leader == victim, "the stream"),
            (consumer_leader == victim, "the consumer"),
        ]
        .into_iter()
        .filter_map(|(led, what)| led.then_some(what))
        .collect();
        let strike = Strike {
            fault,
            node: format!(
                "{} (leading {})",
                cluster.name_of(victim),
                if led.is_empty() {
                    "nothing".to_owned()
                } else {
                    led.join(" and ")
                }
            ),
            at,
            election: at.elapsed(),
            caught_up,
        };
        (victim, strike)
    }
}

/// Waits until the consumer has nothing pending or unacknowledged: how long after `since`, or
/// what it still had at the deadline.
async fn drain(
    s: &Stack<NatsCluster>,
    since: Instant,
    within: Duration,
) -> Result<Duration, String> {
    let last = std::cell::Cell::new(None);
    let drained = wa_testkit::poll(within, || {
        let look = consumer_backlog(&s.js, STREAM, DURABLE);
        let last = &last;
        async move {
            let backlog = look.await;
            if backlog.is_some() {
                last.set(backlog);
            }
            Ok::<_, std::convert::Infallible>((backlog == Some((0, 0))).then_some(()))
        }
    })
    .await;
    match drained {
        Ok(Some(())) => Ok(since.elapsed()),
        _ => Err(format!(
            "{DURABLE} not drained within {within:?}: (num_pending, num_ack_pending) = {:?}",
            last.get()
        )),
    }
}

/// Reads the ledger, reports, and asserts that every stored message was applied exactly once,
/// nothing was dead-lettered and every row landed.
async fn check(
    s: &Stack<NatsCluster>,
    label: &str,
    expected: &Expected,
    published: &Published,
    strikes: Vec<Strike>,
    drained: Result<Duration, String>,
) {
    let ledger = Ledger::read(&s.js, &s.pool, &s.tenant, STREAM, &KINDS).await;
    eprintln!(
        "{label}: published {} ({} retried attempts, {} duplicate acks, in {:.1?}); {}; {}",
        published.sequences.len(),
        published.retries,
        published.duplicates,
        published.elapsed,
        ledger.summary(),
        drained.as_ref().map_or_else(
            |e| e.clone(),
            |d| format!("drained {d:.1?} after the last fault")
        )
    );
    for (i, strike) in strikes.into_iter().enumerate() {
        let caught_up = strike.caught_up.await.expect("measure");
        eprintln!(
            "  fault {}: {:?} on {}: leaders again after {:.1?}; inbox back at the acknowledged count of the fault after {}",
            i + 1,
            strike.fault,
            strike.node,
            strike.election,
            caught_up.map_or_else(|| format!("more than {DRAIN_WITHIN:?}"), |d| format!("{d:.1?}"))
        );
    }
    if let Err(e) = drained {
        panic!("{label}: {e}; {}", ledger.summary());
    }
    ledger.assert_exactly_once(published);
    ledger.assert_nothing_dead();
    assert_eq!(
        published.sequences.len(),
        expected.events().len(),
        "every event acknowledged"
    );
    expected.assert_landed(&s.pool, &s.tenant).await;
}

/// Polls the tenant's inbox until it holds `target` rows: how long after `since`, or None.
fn caught_up(
    pool: PgPool,
    tenant: String,
    target: i64,
    since: Instant,
) -> JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        let sql = format!("SELECT count(*) FROM {}.inbox", schema_ident(&tenant));
        let found = wa_testkit::poll(DRAIN_WITHIN, || {
            let q = sqlx::query_scalar::<_, i64>(&sql).fetch_one(&pool);
            async move {
                Ok::<_, std::convert::Infallible>(q.await.ok().filter(|n| *n >= target).map(drop))
            }
        })
        .await;
        matches!(found, Ok(Some(()))).then(|| since.elapsed())
    })
}

/// Publishes `events` events at `rate` while the consumers run, applies each fault in turn
/// (spread over the publishing, each node brought back and caught up before the next fault),
/// then drains and checks.
async fn run(label: &str, binary: PathBuf, mode: Mode, faults: &[Fault], load: Load) {
    let Load {
        events,
        rate,
        env,
        realtime,
    } = load;
    let mut sc = Scenario::start(label, binary, mode, &env).await;
    let expected = if realtime {
        Expected::Realtime(Workload::generate(events, 40, 11))
    } else {
        Expected::Upserts(Upserts::generate(&sc.s.tenant, events))
    };
    // The publisher's node leads neither the stream nor the consumer (where one does not), so
    // that a killed node is a leader and the publisher rides out the election, not a reconnect.
    let stream_leader = sc.s.nats.stream_leader(&sc.s.js, STREAM).await;
    let consumer_leader = sc.s.nats.consumer_leader(&sc.s.js, STREAM, DURABLE).await;
    let home = (0..NatsCluster::NODES)
        .find(|n| *n != stream_leader && *n != consumer_leader)
        .unwrap_or((stream_leader + 1) % NatsCluster::NODES);
    let publisher_js = jetstream(&sc.s.nats.url_of(home)).await;
    let publisher = Publisher::spawn(
        publisher_js.clone(),
        &sc.s.tenant,
        expected.events(),
        0,
        rate,
    );
    let publish_within = Duration::from_secs_f64(events as f64 / f64::from(rate)) + DRAIN_WITHIN;
    let mut strikes = Vec::new();
    for (k, fault) in faults.iter().enumerate() {
        publisher
            .wait_acked(events * (k + 1) / (faults.len() + 1), publish_within)
            .await;
        let acked = publisher.acked();
        let (victim, strike) = sc.strike(*fault, &publisher_js, acked).await;
        // Keep publishing with the node down for a while, then bring it back.
        let gap = events / (2 * (faults.len() + 1));
        publisher
            .wait_acked((acked + gap).min(events), publish_within)
            .await;
        sc.s.nats.restart(victim).await;
        sc.s.nats
            .wait_current(&sc.s.js, STREAM, Some(DURABLE))
            .await;
        strikes.push(strike);
    }
    let published = publisher.finish().await;
    let last = strikes.last().map_or_else(Instant::now, |s| s.at);
    let within = DRAIN_WITHIN + Duration::from_secs(events as u64 / 1000);
    let drained = drain(&sc.s, last, within).await;
    check(&sc.s, &sc.label, &expected, &published, strikes, drained).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_stream_leader_under_load_loses_nothing() {
    run(
        "SIGTERM to the stream leader",
        nats_server_current(),
        Mode::Standalone,
        &[Fault::TerminateStreamLeader],
        Load::short(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_stream_leader_under_load_loses_nothing_on_nats_server_2_9() {
    run(
        "SIGTERM to the stream leader",
        nats_server_binary(),
        Mode::Standalone,
        &[Fault::TerminateStreamLeader],
        Load::short(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_consumer_leader_under_load_loses_nothing() {
    run(
        "SIGKILL to the consumer leader",
        nats_server_current(),
        Mode::Standalone,
        &[Fault::KillConsumerLeader],
        Load::short(),
    )
    .await;
}

/// Receipts whose message was in flight at the kill retry until it comes back (one ack wait
/// later): none runs out of attempts, and every unread delta applies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_consumer_leader_under_deltas_and_receipts_applies_each_once() {
    run(
        "SIGKILL to the consumer leader, deltas and receipts",
        nats_server_current(),
        Mode::Standalone,
        &[Fault::KillConsumerLeader],
        Load::realtime(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_brought_back_under_load_loses_nothing() {
    run(
        "SIGKILL to a node",
        nats_server_current(),
        Mode::Standalone,
        &[Fault::KillNode],
        Load::short(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_consumer_leader_under_load_loses_nothing_through_the_bridge() {
    run(
        "SIGKILL to the consumer leader",
        nats_server_current(),
        Mode::Bridge,
        &[Fault::KillConsumerLeader],
        Load::short(),
    )
    .await;
}

/// No fault at all: a backlog that fills every fetch drains. (On an R3 consumer, current
/// servers send the messages of a pull only once their delivery is replicated, but a full
/// batch's `409 Batch Completed` at once, so it can arrive before them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_full_batches_drains_from_r3_streams() {
    let binary = nats_server_current();
    let label = format!(
        "a backlog of full batches [{}]",
        nats_server_version(&binary)
    );
    let s = Stack::on(NatsCluster::start(binary).await, "fobl").await;
    s.create_streams().await;
    let upserts = Upserts::generate(&s.tenant, 1000);
    let published = Publisher::spawn(s.js.clone(), &s.tenant, &upserts.events, 0, 5000)
        .finish()
        .await;
    let at = Instant::now();
    let _rt = s.start("wa-realtime", &[("BATCH_SIZE", "100")]).await;
    let drained = drain(&s, at, DRAIN_WITHIN).await;
    check(
        &s,
        &label,
        &Expected::Upserts(upserts),
        &published,
        Vec::new(),
        drained,
    )
    .await;
}

/// The function is killed twice while it holds every message (its database locked): once on
/// their first delivery, once on their last (`MAX_DELIVER=2`). A crash spends no delivery
/// (SPEC §1): after the restart everything is still applied, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_killed_on_the_last_delivery_of_what_it_holds_loses_nothing() {
    const HELD: usize = 300;
    let binary = nats_server_current();
    let label = format!(
        "SIGKILL to the function on the last delivery [{}]",
        nats_server_version(&binary)
    );
    let s = Stack::on(NatsCluster::start(binary).await, "fold").await;
    s.create_streams().await;
    let upserts = Upserts::generate(&s.tenant, HELD + 1);
    let mut rt = s
        .start(
            "wa-realtime",
            &[
                ("MAX_DELIVER", "2"),
                ("BACKOFF", "1s"),
                ("BATCH_SIZE", "1000"),
                ("DB_LOCK_TIMEOUT", "300ms"),
            ],
        )
        .await;
    // The first event creates the tenant's schema. The function then stops, so that the next
    // process receives all the others in one batch.
    let mut published = Publisher::spawn(s.js.clone(), &s.tenant, &upserts.events[..1], 0, RATE)
        .finish()
        .await;
    s.wait_count(DRAIN_WITHIN, "SELECT count(*) FROM inbox", 1)
        .await;
    rt.stop(Duration::from_secs(20)).await.unwrap();
    let locker = lock_table(&s.pool, &s.tenant, "inbox").await;
    let rest = &upserts.events[1..];
    published.absorb(
        Publisher::spawn(s.js.clone(), &s.tenant, rest, 1, 5000)
            .finish()
            .await,
    );

    // Their first delivery: held (the inbox is locked), then a crash.
    rt.restart().unwrap();
    rt.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    wait_consumer(&s, "every message held", |i| {
        i.num_pending == 0 && i.num_ack_pending == HELD
    })
    .await;
    rt.kill9();
    // Redelivered after the ack wait: their last delivery, held again, then a crash. The
    // function starts again once every redelivery is due, so that its first pull takes them
    // all: a function holding a batch pulls no more, and a pull answered while the server was
    // still queueing the redeliveries held only some (91 of 300), the rest never redelivered.
    wait_redeliveries_due(&s).await;
    rt.restart().unwrap();
    rt.wait_until_holding(HOLDING_WITHIN).await.unwrap();
    wait_consumer(&s, "every message redelivered and held", |i| {
        i.num_redelivered == HELD && i.num_ack_pending == HELD
    })
    .await;
    rt.kill9();
    let at = Instant::now();
    locker.rollback().await.unwrap();
    rt.restart().unwrap();
    rt.wait_ready(READY_WITHIN).await.unwrap();
    let drained = drain(&s, at, DRAIN_WITHIN).await;
    check(
        &s,
        &label,
        &Expected::Upserts(upserts),
        &published,
        Vec::new(),
        drained,
    )
    .await;
}

/// Waits until the ack wait of every message delivered so far has run out, as the server
/// reports them (the last delivery plus the consumer's ack wait), and two seconds more for
/// the server to queue the redeliveries.
async fn wait_redeliveries_due(s: &Stack<NatsCluster>) {
    let stream = s.js.get_stream(STREAM).await.expect("stream");
    let info = stream.consumer_info(DURABLE).await.expect("consumer info");
    let last = info.delivered.last_active.expect("messages were delivered");
    let due = last
        + chrono::Duration::from_std(info.config.ack_wait + Duration::from_secs(2))
            .expect("an ack wait within range");
    if let Ok(wait) = (due - chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

/// Waits until the durable consumer's state satisfies `ok`.
async fn wait_consumer(
    s: &Stack<NatsCluster>,
    what: &str,
    ok: impl Fn(&async_nats::jetstream::consumer::Info) -> bool,
) {
    eventually(HOLDING_WITHIN, what, || async {
        let stream = s.js.get_stream(STREAM).await.ok()?;
        let info = stream.consumer_info(DURABLE).await.ok()?;
        ok(&info).then_some(())
    })
    .await;
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// Several faults of every kind in one run. `just test` runs it small; `just failover-long`
/// runs it at scale (100,000 events at 2,000/s) through the `FAILOVER_*` variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_of_every_kind_in_one_run_lose_nothing() {
    let events: usize = env_or("FAILOVER_EVENTS", 6_000);
    let kills: usize = env_or("FAILOVER_KILLS", 3);
    let rate: u32 = env_or("FAILOVER_RATE", 1000);
    let binary = match env_or("FAILOVER_NATS", "current".to_owned()).as_str() {
        "current" => nats_server_current(),
        "2.9" | "machine" => nats_server_binary(),
        other => panic!("FAILOVER_NATS={other}: `current` or `2.9`"),
    };
    let mode = match env_or("FAILOVER_MODE", "standalone".to_owned()).as_str() {
        "standalone" => Mode::Standalone,
        "bridge" => Mode::Bridge,
        other => panic!("FAILOVER_MODE={other}: `standalone` or `bridge`"),
    };
    let cycle = [
        Fault::TerminateStreamLeader,
        Fault::KillConsumerLeader,
        Fault::KillNode,
    ];
    let faults: Vec<Fault> = cycle.into_iter().cycle().take(kills).collect();
    let mut env = vec![("BATCH_SIZE", "100".to_owned())];
    for pair in env_or("FAILOVER_ENV", String::new())
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("FAILOVER_ENV: {pair} is not NAME=value"));
        let k: &'static str = Box::leak(k.trim().to_owned().into_boxed_str());
        env.retain(|(name, _)| *name != k);
        env.push((k, v.trim().to_owned()));
    }
    let realtime = match env_or("FAILOVER_MIX", String::from("upserts")).as_str() {
        "upserts" => false,
        "realtime" => true,
        other => panic!("FAILOVER_MIX: {other} is not upserts or realtime"),
    };
    run(
        &format!(
            "every kind: {events} events at {rate}/s, {kills} faults, {env:?}, realtime mix: {realtime}"
        ),
        binary,
        mode,
        &faults,
        Load {
            events,
            rate,
            env,
            realtime,
        },
    )
    .await;
}
