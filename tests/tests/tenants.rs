//! Issue #14, "many tenants at full speed" (SPEC §3, §6, §13, §14): one batch routinely spans
//! hundreds of tenants, and a burst of brand-new tenants must not stall processing. Whatever
//! the write path does to get there (one round trip for many tenants, schemas created off the
//! hot path), these must hold:
//!
//! * a batch spanning 300 tenants with one event the database refuses commits everything else,
//!   dead-letters that one event alone, and never holds the batch;
//! * a burst of new tenants (`BURST_TENANTS`, default 200; the issue's size is 2,000) is applied
//!   without a held batch or a dead letter;
//! * processes racing on the same new tenants (two processors, or two functions on one durable
//!   consumer) create each schema once and apply every event exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wa_integration_tests::functions::{self, READY_WITHIN};
use wa_integration_tests::lambda;
use wa_integration_tests::rng::Rng;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::tenants::{self, counter_total, publish_all, Counts, Publish};
use wa_integration_tests::*;
use wa_shared::model::EventKind::{self, *};
use wa_shared::model::{ErrorType, Subject};
use wa_shared::pipeline::{DeadLetter, InboundEvent, Outcome, Processor};
use wa_shared::transport::streams::REALTIME_STREAM;

/// Tenants in the batch of the poison tests.
const MANY: usize = 300;

/// Where the poison event goes among them.
const POISON_TENANT: usize = MANY / 2;

/// How long the functions may take for 300 new tenants (debug build, 2 shared cores): a
/// deadline, not a target.
const WAIT: Duration = Duration::from_secs(300);

/// The counter a function increments each time it holds a batch (SPEC §6).
const HELD: &str = "message_event_service_batches_held_total";

/// The first fixture line of `kind` for `tenant`: a producer-shaped event.
fn fixture(kind: EventKind, tenant: &str) -> String {
    fixture_lines(kind, tenant)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no fixture for {kind:?}"))
}

/// A `messages.upsert` that passes validation but that Postgres refuses: a number beyond
/// `numeric`'s range inside `message_obj` (`jsonb` cannot hold it), as in core.rs.
fn poison(tenant: &str) -> String {
    format!(
        r#"{{"message_id":"AGT001_POISON","chat_id":"AGT001_6281234567890","flow":"IN","company_id":"{tenant}","message_obj":{{"n":1e999999}}}}"#
    )
}

/// The rows a `chats.upsert` and a `messages.upsert` fixture leave: the group of the upsert,
/// the one-to-one chat the message ensures, the message; one inbox row per event.
const TWO_FIXTURES: Counts = Counts {
    chats: 2,
    messages: 1,
    contacts: 0,
    inbox: 2,
    foreign: 0,
};

/// Asserts that every tenant holds exactly `want`, naming the first few that do not.
fn assert_counts(got: &BTreeMap<String, Counts>, tenants: &[String], want: Counts) {
    let wrong: Vec<String> = tenants
        .iter()
        .filter(|t| got.get(*t) != Some(&want))
        .map(|t| format!("{t}: {:?}", got.get(t)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} tenants do not hold {want:?}, e.g. {:#?}",
        wrong.len(),
        tenants.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// Asserts that each tenant's rows equal the control tenant's (apart from `company_id`, which
/// names the tenant and is checked by [`Counts::foreign`]).
async fn assert_same_rows_as(pool: &sqlx::PgPool, tenants: &[String], control: &str) {
    let want = without_company(snapshot(pool, control).await);
    for t in tenants {
        assert_eq!(
            without_company(snapshot(pool, t).await),
            want,
            "tenant {t} differs from the control tenant {control}"
        );
    }
}

/// A control tenant fed `events(tenant)` one at a time by a processor of its own.
async fn control(
    pool: &sqlx::PgPool,
    prefix: &str,
    events: impl Fn(&str) -> Vec<(EventKind, String)>,
) -> String {
    let ev = Events::new(&unique_tenant(prefix));
    let p = processor(pool);
    for (kind, body) in events(&ev.tenant) {
        run_ok(&p, &[ev.event(kind, body)]).await;
    }
    ev.tenant
}

/// The function's `/metrics`.
async fn metrics(f: &functions::Function) -> String {
    f.get("/metrics").await.expect("/metrics answers").1
}

fn dead(o: &Outcome) -> ErrorType {
    match o {
        Outcome::DeadLetter(DeadLetter { error_type, .. }) => *error_type,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1a. A batch spanning 300 tenants with one poison event.
// ---------------------------------------------------------------------------------------------

/// SPEC §3, §6: 300 new tenants' events (a `chats.upsert` and a `messages.upsert` each) and
/// one event Postgres refuses, published before `wa-realtime` starts, so that a fetch of up to
/// 1,000 takes them in one batch (or a few): every good event is applied in its own tenant's
/// schema, the poison alone is dead-lettered (`database_permanent`), and no batch is held.
#[tokio::test]
async fn a_batch_spanning_300_tenants_with_one_poison_event_commits_everything_else() {
    let s = Stack::new("many").await;
    s.create_streams().await;
    let tenants = tenants::fresh("many", MANY);
    let events = with_poison(&tenants, POISON_TENANT);
    let sequences = publish_all(&s.js, &events).await;
    let poison_at = 2 * POISON_TENANT + 2;
    let poison_seq = sequences[poison_at];

    let started = Instant::now();
    let rt = s
        .start(
            "wa-realtime",
            &[("BATCH_SIZE", "1000"), ("BATCH_MAX_WAIT", "2s")],
        )
        .await;
    s.wait_settled(WAIT, REALTIME_STREAM, "wa_realtime").await;
    let settled_in = started.elapsed();

    let m = metrics(&rt).await;
    let (batches, batched) = (
        counter_total(&m, "message_event_service_batch_size_count"),
        counter_total(&m, "message_event_service_batch_size_sum"),
    );
    eprintln!(
        "{} events of {MANY} tenants settled in {settled_in:?}: {batches} batches, {} held",
        events.len(),
        counter_total(&m, HELD)
    );
    // The premise: the batches spanned many tenants (a fetch of 1,000 from a backlog of 601).
    assert!(
        batches >= 1.0 && batched / batches >= 100.0,
        "{batched} events in {batches} batches: the batches did not span many tenants"
    );

    let counts = tenants::counts(&s.pool, &tenants).await;
    assert_counts(&counts, &tenants, TWO_FIXTURES);
    let dead = broker::dead_letters(&s.js, "v1.dlq.>").await;
    let applied: i64 = counts.values().map(|c| c.inbox).sum();
    assert_eq!(
        applied + dead.len() as i64,
        events.len() as i64,
        "every event is applied or dead-lettered, once"
    );
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let envelope = &dead[0].envelope;
    assert_eq!(envelope["error_type"], "database_permanent", "{envelope}");
    assert_eq!(envelope["source_subject"], events[poison_at].subject);
    assert_eq!(envelope["source_sequence"], poison_seq);
    assert_eq!(
        dead[0].subject,
        Subject::dead_letter(&tenants[POISON_TENANT])
    );
    assert_eq!(counter_total(&m, HELD), 0.0, "a batch was held:\n{m}");

    let control = control(&s.pool, "manyctl", |t| {
        [ChatUpsert, MessageUpsert]
            .map(|k| (k, fixture(k, t)))
            .to_vec()
    })
    .await;
    assert_same_rows_as(&s.pool, &tenants, &control).await;
}

async fn assert_no_dead_letters(js: &async_nats::jetstream::Context) {
    let dead = broker::dead_letters(js, "v1.dlq.>").await;
    assert!(
        dead.is_empty(),
        "{} dead letters, e.g. {:#?}",
        dead.len(),
        dead.first()
    );
}

/// A chat and a message upsert of each tenant, and after those of tenant `poisoned` one event
/// the database refuses.
fn with_poison(tenants: &[String], poisoned: usize) -> Vec<Publish> {
    let mut events = Vec::with_capacity(2 * tenants.len() + 1);
    for (i, t) in tenants.iter().enumerate() {
        events.push(Publish::new(ChatUpsert, t, fixture(ChatUpsert, t)));
        events.push(Publish::new(MessageUpsert, t, fixture(MessageUpsert, t)));
        if i == poisoned {
            events.push(Publish::new(MessageUpsert, t, poison(t)));
        }
    }
    events
}

/// Lambda mode gets the same: the backlog is published before the bridge starts, so its first
/// invocation carries the events of many tenants and one poison; the function answers with that
/// one dead letter and everything else lands.
#[tokio::test]
async fn one_lambda_invocation_spanning_many_tenants_dead_letters_only_the_poison() {
    const TENANTS: usize = 80;
    let s = Stack::new("lmany").await;
    s.create_streams().await;
    let tenants = tenants::fresh("lmany", TENANTS);
    let events = with_poison(&tenants, TENANTS / 2);
    publish_all(&s.js, &events).await;
    let rt = lambda::LocalLambda::start(&s, "wa-realtime", &[]);
    let _bridge = lambda::start_bridge(
        &s,
        "realtime",
        &rt,
        &[("BATCH_SIZE", "1000"), ("BATCH_MAX_WAIT", "2s")],
    )
    .await;
    s.wait_settled(WAIT, REALTIME_STREAM, "wa_realtime").await;
    let counts = tenants::counts(&s.pool, &tenants).await;
    assert_counts(&counts, &tenants, TWO_FIXTURES);
    let dead = broker::dead_letters(&s.js, "v1.dlq.>").await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].envelope["error_type"], "database_permanent");
    assert_eq!(dead[0].subject, Subject::dead_letter(&tenants[TENANTS / 2]));
}

/// The same at the core: one `process_batch` call with 300 new tenants' events and one poison
/// returns a dead letter for the poison and `Ack` for every other event, in that one call.
#[tokio::test]
async fn one_call_with_300_new_tenants_and_a_poison_dead_letters_it_alone() {
    let pool = pool().await;
    let p = processor(&pool);
    let tenants = tenants::fresh("manyp", MANY);
    let mut batch: Vec<InboundEvent> = Vec::with_capacity(2 * MANY + 1);
    for (i, t) in tenants.iter().enumerate() {
        let ev = Events::new(t);
        batch.push(ev.event(ChatUpsert, fixture(ChatUpsert, t)));
        batch.push(ev.event(MessageUpsert, fixture(MessageUpsert, t)));
        if i == POISON_TENANT {
            batch.push(ev.event(MessageUpsert, poison(t)));
        }
    }
    let poison_at = 2 * POISON_TENANT + 2;

    let started = Instant::now();
    let outcomes = p
        .process_batch(&batch)
        .await
        .unwrap_or_else(|e| panic!("the batch was held after {:?}: {e}", started.elapsed()));
    eprintln!(
        "one batch of {} events of {MANY} new tenants in {:?}",
        batch.len(),
        started.elapsed()
    );
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(dead(&outcomes[poison_at]), ErrorType::DatabasePermanent);
    let not_acked: Vec<String> = outcomes
        .iter()
        .zip(&batch)
        .enumerate()
        .filter(|(i, (o, _))| *i != poison_at && **o != Outcome::Ack)
        .map(|(_, (o, e))| format!("{}: {o:?}", e.subject))
        .collect();
    assert!(
        not_acked.is_empty(),
        "{} good events not acknowledged, e.g. {:#?}",
        not_acked.len(),
        &not_acked[..not_acked.len().min(10)]
    );
    assert_counts(
        &tenants::counts(&pool, &tenants).await,
        &tenants,
        TWO_FIXTURES,
    );
}

// ---------------------------------------------------------------------------------------------
// 1b. A burst of brand-new tenants.
// ---------------------------------------------------------------------------------------------

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
    })
}

/// SPEC §3, §13: `BURST_TENANTS` brand-new tenants (default 200; the issue's burst is 2,000)
/// × 3 events (`chats.upsert`, `messages.upsert`, `contacts.upsert`), published at once to a
/// running `wa-realtime`, are all applied, with no dead letter and no held batch. Nothing is
/// timed but a generous deadline (`BURST_DEADLINE_SECS`, default 60 s + 0.2 s per tenant).
#[tokio::test]
async fn a_burst_of_new_tenants_is_applied_without_holds_or_dead_letters() {
    let n = env_number("BURST_TENANTS", 200) as usize;
    let deadline = Duration::from_secs(env_number("BURST_DEADLINE_SECS", 60 + n as u64 / 5));
    let s = Stack::new("burst").await;
    let rt = s.start("wa-realtime", &[]).await;
    let tenants = tenants::fresh("burst", n);
    let events: Vec<Publish> = tenants
        .iter()
        .flat_map(|t| {
            [ChatUpsert, MessageUpsert, ContactUpsert].map(|k| Publish::new(k, t, fixture(k, t)))
        })
        .collect();

    let started = Instant::now();
    publish_all(&s.js, &events).await;
    let published_in = started.elapsed();
    s.wait_settled(deadline, REALTIME_STREAM, "wa_realtime")
        .await;
    let settled_in = started.elapsed();

    let counts = tenants::counts(&s.pool, &tenants).await;
    let applied: i64 = counts.values().map(|c| c.inbox).sum();
    let m = metrics(&rt).await;
    eprintln!(
        "burst of {n} new tenants × 3 events: published in {published_in:?}, settled in \
         {settled_in:?}; {applied} applied, {} batches, {} held",
        counter_total(&m, "message_event_service_batch_size_count"),
        counter_total(&m, HELD),
    );
    assert_eq!(applied, 3 * n as i64, "every event applied once");
    assert_counts(
        &counts,
        &tenants,
        Counts {
            chats: 2,
            messages: 1,
            contacts: 1,
            inbox: 3,
            foreign: 0,
        },
    );
    assert_no_dead_letters(&s.js).await;
    assert_eq!(counter_total(&m, HELD), 0.0, "a batch was held:\n{m}");
    // A sample of the tenants against a control fed the same events one at a time.
    let control = control(&s.pool, "burstctl", |t| {
        [ChatUpsert, MessageUpsert, ContactUpsert]
            .map(|k| (k, fixture(k, t)))
            .to_vec()
    })
    .await;
    let step = (n / 20).max(1);
    let sample: Vec<String> = tenants.iter().step_by(step).cloned().collect();
    assert_same_rows_as(&s.pool, &sample, &control).await;
}

// ---------------------------------------------------------------------------------------------
// 1c. Processes racing on the same new tenants.
// ---------------------------------------------------------------------------------------------

/// Tenants the racing processes meet at once.
const RACERS: usize = 50;

/// One tenant's events, in stream order, whose final rows do not depend on the order they are
/// applied in (SPEC §4: unread deltas add up, statuses only rise, a chat's last message is its
/// newest, one row per message, chats created by whichever event comes first): so any order,
/// split or redelivery must end in the rows of applying each once in this order.
fn race_script() -> Vec<(EventKind, Value)> {
    let one = "AG_6281100000001";
    let jid = "6281100000001@s.whatsapp.net";
    let group = "AG_120363000000000001";
    let gjid = "120363000000000001@g.us";
    let delta = |n: i32| {
        (
            ChatUpdate,
            json!({"chat_id": one, "agent_id": "AG", "unread_count": n}),
        )
    };
    let group_upsert = |ts: i64, text: &str| {
        (
            ChatUpsert,
            json!({"chat_id": group, "jid": gjid, "agent_id": "AG", "group_name": "Tim Gudang",
                   "unread_count": 0, "conversation_timestamp": ts,
                   "last_message": {"conversation": text}}),
        )
    };
    vec![
        delta(1),
        // The same payload again: another stream message, which applies too (SPEC §4).
        delta(1),
        (
            MessageUpsert,
            json!({"message_id": "AG_M1", "chat_id": one, "jid": jid, "agent_id": "AG",
                   "flow": "IN", "status": "1", "from_phone": "6281100000001",
                   "message_text": "halo", "message_timestamp": 1_718_358_000}),
        ),
        (MessageUpdate, json!({"message_id": "AG_M1", "status": "3"})),
        delta(2),
        group_upsert(1_718_358_100, "lama"),
        (
            MessageUpsert,
            json!({"message_id": "AG_M2", "chat_id": group, "jid": gjid, "agent_id": "AG",
                   "flow": "OUT", "status": "2", "message_text": "rapat",
                   "message_timestamp": 1_718_358_200}),
        ),
        group_upsert(1_718_358_300, "baru"),
        (
            MessageUpdate,
            json!({"message_id": "AG_M2", "status": "4",
                   "edited_message_obj": {"message": {"conversation": "rapat jam 3"}}}),
        ),
        (
            ContactUpsert,
            json!({"agent_id": "AG", "phone_number": "6281100000001", "push_name": "Budi"}),
        ),
        // An older receipt: the status stays.
        (MessageUpdate, json!({"message_id": "AG_M1", "status": "2"})),
        delta(1),
    ]
}

/// The script's bodies as text, for [`control`] (they name no tenant).
fn race_bodies(_tenant: &str) -> Vec<(EventKind, String)> {
    race_script()
        .into_iter()
        .map(|(k, b)| (k, b.to_string()))
        .collect()
}

/// What the script leaves in the one-to-one chat: 1 + 1 + 2 + 1 unread.
const RACE_UNREAD: i64 = 5;

/// Delivers `queue` to `p` in batches of `sizes` (cycled), redelivering retried events at the
/// back, until every event is acknowledged; any other outcome fails. Returns the retries.
async fn deliver(p: &Processor, queue: Vec<InboundEvent>, sizes: &[usize]) -> usize {
    let mut queue: std::collections::VecDeque<_> = queue.into();
    let (mut rounds, mut retries) = (0, 0);
    let mut sizes = sizes.iter().cycle();
    while !queue.is_empty() {
        rounds += 1;
        assert!(rounds < 100_000, "did not converge");
        let n = (*sizes.next().expect("sizes")).clamp(1, queue.len());
        let batch: Vec<_> = queue.drain(..n).collect();
        let outcomes = p.process_batch(&batch).await.expect("database available");
        for (e, o) in batch.iter().zip(outcomes) {
            match o {
                Outcome::Ack => {}
                Outcome::Retry { .. } => {
                    retries += 1;
                    queue.push_back(redelivered(e));
                }
                other => panic!("{} {:?}: {other:?}", e.subject, e.payload),
            }
        }
    }
    retries
}

/// Asserts what racing processes must leave: each tenant's schema created and owned once,
/// every event applied once (one inbox row per stream message), the rows of the control.
async fn assert_raced_correctly(pool: &sqlx::PgPool, tenants: &[String], control: &str) {
    let records = tenants::schema_records(pool, tenants).await;
    let wrong: Vec<_> = records.iter().filter(|(_, r)| **r != (1, 1)).collect();
    assert!(wrong.is_empty(), "(schemas, owners) not (1, 1): {wrong:?}");
    let script = race_script().len() as i64;
    let counts = tenants::counts(pool, tenants).await;
    assert_counts(
        &counts,
        tenants,
        Counts {
            chats: 2,
            messages: 2,
            contacts: 1,
            inbox: script,
            foreign: 0,
        },
    );
    for t in tenants {
        let unread = row(
            pool,
            t,
            "SELECT unread_count FROM chats WHERE chat_id = 'AG_6281100000001'",
        )
        .await;
        assert_eq!(unread["unread_count"], RACE_UNREAD, "tenant {t}");
        let versions = row(
            pool,
            t,
            "SELECT count(*) AS n, count(DISTINCT version) AS d FROM schema_migrations",
        )
        .await;
        assert_eq!(
            versions["n"], versions["d"],
            "tenant {t}: a migration twice"
        );
    }
    assert_same_rows_as(pool, tenants, control).await;
}

/// SPEC §3, §4: two processors sharing nothing but the database are given the same stream
/// messages of 50 new tenants, one in stream order in batches of 64, the other reversed,
/// shuffled and partly duplicated in batches of other sizes, at the same time: each schema is
/// created once, every event applies once, nothing is dead-lettered, and every tenant ends
/// with the rows of a control tenant fed the same events one at a time by one process.
#[tokio::test]
async fn two_processors_racing_on_the_same_new_tenants_apply_each_event_once() {
    let tenants = tenants::fresh("race", RACERS);
    let script = race_script();
    let per_tenant: Vec<Vec<InboundEvent>> = tenants
        .iter()
        .map(|t| {
            let ev = Events::new(t);
            script.iter().map(|(k, b)| ev.json(*k, b.clone())).collect()
        })
        .collect();
    // Stream order: the producer's step j for every tenant, then step j + 1.
    let in_order: Vec<InboundEvent> = (0..script.len())
        .flat_map(|j| per_tenant.iter().map(move |t| t[j].clone()))
        .collect();
    let mut rng = Rng(0x5EED_0F14);
    let mut messy: Vec<InboundEvent> = in_order
        .iter()
        .rev()
        .flat_map(|e| std::iter::repeat_n(redelivered(e), 1 + rng.next(2)))
        .collect();
    for i in (1..messy.len()).rev() {
        messy.swap(i, rng.next(i + 1));
    }

    // Separate pools and processors: nothing shared but the database.
    let (pool_a, pool_b) = (pool().await, pool().await);
    let a = processor_with(&pool_a, |s| s.max_deliver = 1_000_000);
    let b = processor_with(&pool_b, |s| s.max_deliver = 1_000_000);
    let started = Instant::now();
    let (retried_a, retried_b) = tokio::join!(
        deliver(&a, in_order, &[64]),
        deliver(&b, messy, &[7, 90, 23, 41])
    );
    eprintln!(
        "two processors over {RACERS} new tenants in {:?} ({retried_a} + {retried_b} retries)",
        started.elapsed()
    );

    let control = control(&pool_a, "racectl", race_bodies).await;
    assert_raced_correctly(&pool_a, &tenants, &control).await;
}

/// SPEC §1, §3, §14: two `wa-realtime` processes on the one durable consumer, started together
/// on a backlog of 40 new tenants' events (batches of 16, so both meet the same new tenants at
/// once): each schema is created once, every event applies once, nothing is dead-lettered,
/// and every tenant ends with the rows of a control tenant fed the same events by one process.
#[tokio::test]
async fn two_functions_on_one_consumer_racing_on_new_tenants_apply_each_event_once() {
    let s = Stack::new("racefn").await;
    s.create_streams().await;
    let tenants = tenants::fresh("racefn", 40);
    let script = race_script();
    let events: Vec<Publish> = script
        .iter()
        .flat_map(|(k, b)| tenants.iter().map(|t| Publish::json(*k, t, b)))
        .collect();
    publish_all(&s.js, &events).await;

    let mut env = s.env();
    env.push(("BATCH_SIZE", "16".into()));
    let started = Instant::now();
    let mut fns = [
        functions::start("wa-realtime", &env),
        functions::start("wa-realtime", &env),
    ];
    for f in &mut fns {
        f.wait_ready(READY_WITHIN).await.unwrap();
    }
    s.wait_settled(WAIT, REALTIME_STREAM, "wa_realtime").await;
    let mut processed = Vec::new();
    for f in &fns {
        let m = metrics(f).await;
        processed.push((
            counter_total(&m, "message_event_service_events_received_total"),
            counter_total(&m, HELD),
        ));
    }
    eprintln!(
        "two functions over 40 new tenants settled in {:?}; (events, held) per function: {processed:?}",
        started.elapsed()
    );
    // The premise: both processes took part.
    assert!(
        processed.iter().all(|(events, _)| *events > 0.0),
        "one function processed nothing: {processed:?}"
    );

    assert_no_dead_letters(&s.js).await;
    let control = control(&s.pool, "racefnctl", race_bodies).await;
    assert_raced_correctly(&s.pool, &tenants, &control).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Statements kept prepared on a connection.
// ---------------------------------------------------------------------------------------------

/// The `wa_p…` statements the pool's one connection holds, with how often a generic plan ran.
async fn prepared_here(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT name, generic_plans FROM pg_prepared_statements WHERE name LIKE 'wa\\_p%' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .expect("prepared statements")
}

/// A connection keeps a tenant's write statements prepared and reuses their generic plans from
/// one batch to the next; when they vanish behind the pool's back (`DEALLOCATE`, as a session
/// reset by a proxy would), the next batch is run again, prepares them anew, and every event
/// is still applied exactly once: the rows are those of applying the events one at a time.
#[tokio::test]
async fn prepared_statements_that_vanish_are_prepared_again_and_nothing_is_lost() {
    // One connection: the checks below run on the processor's own session.
    let pool = wa_shared::store::connect(&database_url(), 1)
        .await
        .expect("connect");
    let ev = Events::new(&unique_tenant("PREP"));
    let events: Vec<InboundEvent> = race_bodies(&ev.tenant)
        .into_iter()
        .map(|(kind, body)| ev.event(kind, body))
        .collect();
    let p = processor(&pool);
    let (first, rest) = events.split_at(6);
    let (second, third) = rest.split_at(3);

    run_ok(&p, first).await;
    let prepared = prepared_here(&pool).await;
    assert!(
        !prepared.is_empty(),
        "the tenant's statements are prepared on the connection"
    );
    run_ok(&p, second).await;
    let reused = prepared_here(&pool).await;
    assert!(
        reused.iter().any(|(_, generic)| *generic >= 2),
        "a statement's generic plan ran in both batches: {reused:?}"
    );

    for (name, _) in &reused {
        sqlx::raw_sql(&format!("DEALLOCATE {name}"))
            .execute(&pool)
            .await
            .expect("deallocate");
    }
    assert!(prepared_here(&pool).await.is_empty());
    run_ok(&p, third).await;
    let again = prepared_here(&pool).await;
    assert!(!again.is_empty(), "prepared anew");
    assert!(
        again
            .iter()
            .all(|(name, _)| !reused.iter().any(|(old, _)| old == name)),
        "under new names: {again:?} after {reused:?}"
    );

    let control = control(&pool, "PREPC", race_bodies).await;
    assert_same_rows_as(&pool, std::slice::from_ref(&ev.tenant), &control).await;
    let inbox = row(&pool, &ev.tenant, "SELECT count(*) AS n FROM inbox").await;
    assert_eq!(inbox["n"], json!(events.len()), "each event recorded once");
}

// ---------------------------------------------------------------------------------------------
// 5. Lanes: each tenant written on the same kept connection, batch after batch.
// ---------------------------------------------------------------------------------------------

/// Tenants of the lane tests.
const LANE_TENANTS: usize = 40;

/// For each of `schemas`, the tokens of the connections keeping statements for it, and
/// whether one of them keeps its inbox claim.
fn held_for(schemas: &[String]) -> (BTreeMap<String, Vec<u64>>, bool) {
    let mut by_schema: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut claims = false;
    for (token, held) in wa_shared::store::prepared::held() {
        for (schema, statements) in held {
            if schemas.contains(&schema) {
                by_schema.entry(schema).or_default().push(token);
                claims |= statements.iter().any(|s| s.contains("INSERT INTO inbox"));
            }
        }
    }
    (by_schema, claims)
}

/// A pool of three connections keeps two for its lanes. Batches of the same 40 tenants: each
/// tenant's statements (its inbox claim included, which only a connection known before the
/// transaction can run prepared) are prepared on one connection only, one of at most two. Then
/// those connections are closed by the server while idle (as a restart or an idle timeout
/// would): the next batch is written on fresh connections, with no batch held, and every
/// tenant holds exactly the rows of applying its events one at a time.
#[tokio::test]
async fn lanes_keep_their_tenants_statements_and_survive_losing_their_connections() {
    let pool = wa_shared::store::connect(&database_url(), 3)
        .await
        .expect("connect");
    let tenants: Vec<Events> = (0..LANE_TENANTS)
        .map(|_| Events::new(&unique_tenant("LANE")))
        .collect();
    let schemas: Vec<String> = tenants.iter().map(|e| schema_name(&e.tenant)).collect();
    let per_tenant: Vec<Vec<InboundEvent>> = tenants
        .iter()
        .map(|ev| {
            race_bodies(&ev.tenant)
                .into_iter()
                .map(|(kind, body)| ev.event(kind, body))
                .collect()
        })
        .collect();
    let n = per_tenant[0].len();
    let rounds = [0..n / 3, n / 3..2 * n / 3, 2 * n / 3..n];
    let batch = |r: usize| -> Vec<InboundEvent> {
        per_tenant
            .iter()
            .flat_map(|events| events[rounds[r].clone()].iter().cloned())
            .collect()
    };
    let p = processor(&pool);

    run_ok(&p, &batch(0)).await;
    run_ok(&p, &batch(1)).await;
    let (held, claims) = held_for(&schemas);
    assert_eq!(
        held.len(),
        LANE_TENANTS,
        "every tenant's statements are prepared"
    );
    let spread: Vec<&String> = held
        .iter()
        .filter(|(_, tokens)| tokens.len() > 1)
        .map(|(schema, _)| schema)
        .collect();
    assert!(
        spread.is_empty(),
        "tenants prepared on more than one connection: {spread:?}"
    );
    let connections: std::collections::BTreeSet<u64> = held.values().flatten().copied().collect();
    assert!(connections.len() <= 2, "{connections:?}");
    assert!(claims, "the inbox claims are prepared too");

    // The server ends the lanes' idle connections (their last script wrote these tenants).
    let pattern: Vec<String> = schemas.iter().map(|s| format!("%{s}%")).collect();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND state = 'idle' AND query LIKE ANY($1)) t",
    )
    .bind(&pattern)
    .fetch_one(&pool)
    .await
    .expect("terminate");
    assert!(ended >= 1, "the lanes' connections were found");

    // Not held: every event acknowledged (`run_ok`), on connections from the pool.
    run_ok(&p, &batch(2)).await;

    let control = control(&pool, "LANECTL", race_bodies).await;
    let names: Vec<String> = tenants.iter().map(|e| e.tenant.clone()).collect();
    assert_same_rows_as(&pool, &names, &control).await;
    for ev in &tenants {
        let inbox = row(&pool, &ev.tenant, "SELECT count(*) AS n FROM inbox").await;
        assert_eq!(
            inbox["n"],
            json!(n),
            "each event of {} recorded once",
            ev.tenant
        );
    }
}
