//! The end-to-end benchmark behind `wa-bench-e2e` (`just bench-e2e`): the real function
//! binaries and the load generator against the local stack, next to the raw limits of the
//! same machine measured in the same run, reported as a table of ratios and targets.
//!
//! Phases, in order, on a fresh database and freshly recreated product streams:
//! 1. [`raw_jetstream`]: publish and consume rates of a scratch stream;
//! 2. [`raw_sql`] (with [`raw_batch`], [`raw_statements`]): the workload's realtime and history
//!    writes as plain SQL;
//! 3. [`throughput`]: `wa-realtime` consuming events published flat out;
//! 4. [`latency`]: publish→commit latency at a fixed rate;
//! 5. [`throughput`] again: `wa-historical` consuming history batches;
//! 6. peak RSS of each function.
//!
//! The functions run as child processes through `wa-testkit`, the spawner the tests use too.
//!
//! What was committed is read from the tenants' inbox tables ([`commits`]). [`results`] holds
//! the numbers and targets, [`table`] and [`chart`] render them and [`output`] writes them,
//! [`machine`] says where they were measured, [`stack`] makes the database and streams fresh.

pub mod chart;
pub mod commits;
pub mod error;
pub mod latency;
pub mod machine;
pub mod output;
pub mod raw_batch;
pub mod raw_jetstream;
pub mod raw_sql;
pub mod raw_statements;
pub mod results;
pub mod settings;
pub mod stack;
pub mod table;
pub mod throughput;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use wa_shared::model::EventKind;
use wa_shared::transport::streams::{DLQ_STREAM, HISTORY_STREAM, REALTIME_STREAM};
use wa_testkit::{Function, Launch};

pub use error::{Error, Result};
pub use output::write_report;
pub use results::Results;
pub use settings::Settings;

use crate::{
    publish, Event, Mix, PublishSettings, Report, Workload, WorkloadSettings, DEFAULT_RETRY_FOR,
};
use commits::Inboxes;
use error::Context;
use machine::Machine;

const READY_WITHIN: Duration = Duration::from_secs(60);
const WARMUP_WITHIN: Duration = Duration::from_secs(120);
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// How long a function stopped by a failing benchmark (the guard's drop) has to exit.
const STOP_ON_DROP: Duration = Duration::from_secs(10);

/// Starts functions warmed up: ready, their tenants' schemas made by a few events, and the
/// database checkpointed, so that a timed phase measures steady writing.
struct Warm<'a> {
    bin_dir: &'a Path,
    env: &'a [(String, String)],
    logs: &'a Path,
    js: &'a async_nats::jetstream::Context,
    inboxes: &'a Inboxes,
    pool: &'a sqlx::PgPool,
}

impl Warm<'_> {
    async fn start(&self, name: &str, stream: &str, warmup: &[Event]) -> Result<Function> {
        let mut function = Launch::new(self.bin_dir.join(name))
            .log_level("warn")
            .env([("LOG_FORMAT", "json")])
            .env(self.env.iter().cloned())
            .log_dir(self.logs)
            .terminate_on_drop(STOP_ON_DROP)
            .start()?;
        function.wait_ready(READY_WITHIN).await?;
        publish_all(self.js, warmup).await?;
        self.inboxes
            .wait_for(self.pool, stream, warmup.len() as u64, WARMUP_WITHIN)
            .await
            .context(format_args!("{name} warm-up"))?;
        stack::checkpoint(self.pool).await;
        Ok(function)
    }
}

/// Runs every phase and returns what was measured.
pub async fn run(settings: &Settings) -> Result<Results> {
    let wall = Instant::now();
    let logs = settings.out_dir().join("logs");
    std::fs::create_dir_all(&logs).context(format_args!("creating {}", logs.display()))?;
    let bin_dir = match &settings.bin_dir {
        Some(dir) => dir.clone(),
        None => wa_testkit::bin_dir()?,
    };
    for name in ["wa-realtime", "wa-historical"] {
        if !bin_dir.join(name).is_file() {
            return Err(Error::new(format!(
                "{} not found; build the functions (cargo build --release -p wa-realtime -p \
                 wa-historical) or pass --bin-dir",
                bin_dir.join(name).display()
            )));
        }
    }
    let profile = profile_of(&bin_dir);
    if profile != "release" && !settings.smoke {
        eprintln!("warning: the function binaries in {} are not a release build: the numbers do not represent the product", bin_dir.display());
    }
    let progress = !settings.quiet;
    let busy_before = machine::cpu_busy(Duration::from_millis(500)).await;

    step(0, "resetting the product streams and the database");
    let client = async_nats::connect(&settings.nats_url)
        .await
        .context(format_args!("connecting to NATS at {}", settings.nats_url))?;
    let js = async_nats::jetstream::new(client.clone());
    stack::reset_streams(&js).await?;
    let db = stack::fresh_database(&settings.postgres_url, &settings.database).await?;
    let machine = Machine::collect(&db.pool, &client, profile, busy_before).await;
    if let Some(busy) = busy_before.filter(|b| *b > 0.2) {
        eprintln!(
            "warning: {:.0} % of the CPUs are busy with other work: every number will be low",
            busy * 100.0
        );
    }

    let mut realtime_workload = workload(settings, Mix::Realtime)?;
    let companies = realtime_workload.companies().to_vec();
    let warmup = settings.warmup as usize;
    let realtime_events: Vec<Event> = realtime_workload
        .by_ref()
        .take(warmup + settings.realtime_count as usize)
        .collect();
    let (rt_warmup, rt_timed) = realtime_events.split_at(warmup);
    let history_events = history_events(settings)?;
    let (h_warmup, h_timed) = history_events.split_at(settings.history_warmup() as usize);
    let history_rows: Vec<u64> = h_timed.iter().map(items).collect();

    step(1, "raw JetStream publish and consume");
    let scratch: Vec<Event> = rt_timed
        .iter()
        .cycle()
        .take(settings.jetstream_count as usize)
        .cloned()
        .collect();
    let jetstream = raw_jetstream::measure(&client, &js, &scratch, progress).await?;
    drop(scratch);
    done(format!(
        "publish {} msg/s, consume {} msg/s",
        n(jetstream.publish_per_sec()),
        n(jetstream.consume_per_sec())
    ));

    step(2, "raw SQL realtime and history writes");
    let raw_realtime = raw_sql::measure(
        &db.pool,
        &db.url,
        raw_sql::REALTIME_TENANT,
        raw_sql::Shape::Realtime {
            batch: settings.raw_batch,
        },
        settings.raw_connections,
        rt_warmup,
        rt_timed,
    )
    .await?;
    let raw_history = raw_sql::measure(
        &db.pool,
        &db.url,
        raw_sql::HISTORY_TENANT,
        raw_sql::Shape::History {
            group: settings.raw_history_group,
        },
        settings.raw_connections,
        h_warmup,
        h_timed,
    )
    .await?;
    done(format!(
        "realtime {} events/s, history {} rows/s",
        n(raw_realtime.events_per_sec()),
        n(raw_history.rows_per_sec())
    ));

    let env = function_env(settings, &db.url);
    let inboxes = Inboxes::new(&companies)?;
    let sampling = |stream| throughput::Sampling {
        pool: &db.pool,
        inboxes: &inboxes,
        stream,
        interval: settings.sample_interval,
        commit_timeout: settings.commit_timeout,
        progress,
    };

    step(3, "wa-realtime throughput");
    let warm = Warm {
        bin_dir: &bin_dir,
        env: &env,
        logs: &logs,
        js: &js,
        inboxes: &inboxes,
        pool: &db.pool,
    };
    let mut realtime_fn = warm
        .start("wa-realtime", REALTIME_STREAM, rt_warmup)
        .await?;
    let realtime = throughput::measure(
        &js,
        &sampling(REALTIME_STREAM),
        rt_timed.to_vec(),
        &vec![1; rt_timed.len()],
        rt_warmup.len() as u64,
    )
    .await?;
    drop(realtime_events);
    realtime_fn.check_running()?;
    done(format!(
        "{} events/s ({} events in {:.1} s){}",
        n(realtime.events_per_sec()),
        n(realtime.events as f64),
        realtime.elapsed.as_secs_f64(),
        retried(&realtime.publish)
    ));

    step(4, "publish->commit latency");
    let latency = latency::measure(
        &js,
        latency::Polling {
            pool: &db.pool,
            commits: inboxes.reader(REALTIME_STREAM),
            first_sequence: stack::stream_state(&js, REALTIME_STREAM)
                .await?
                .last_sequence
                + 1,
            poll: settings.latency_poll,
            commit_timeout: settings.commit_timeout,
        },
        &mut realtime_workload,
        settings.latency_rate,
        Duration::from_secs(settings.latency_seconds),
        progress,
    )
    .await?;
    let rss_realtime = realtime_fn.peak_rss()?;
    realtime_fn.stop(STOP_WITHIN).await?;
    done(format!(
        "p50 {:.1} ms, p99 {:.1} ms at {}/s{}",
        latency.p50_ms,
        latency.p99_ms,
        n(latency.rate),
        retried(&latency.publish)
    ));

    step(5, "wa-historical throughput");
    let mut history_fn = warm
        .start("wa-historical", HISTORY_STREAM, h_warmup)
        .await?;
    let history = throughput::measure(
        &js,
        &sampling(HISTORY_STREAM),
        h_timed.to_vec(),
        &history_rows,
        h_warmup.len() as u64,
    )
    .await?;
    let rss_historical = history_fn.peak_rss()?;
    history_fn.stop(STOP_WITHIN).await?;
    done(format!(
        "{} rows/s ({} batches, {} rows in {:.1} s){}",
        n(history.rows_per_sec()),
        n(history.events as f64),
        n(history.rows as f64),
        history.elapsed.as_secs_f64(),
        retried(&history.publish)
    ));

    let dead_letters = stack::stream_state(&js, DLQ_STREAM).await?.messages;
    Ok(Results {
        settings: settings.to_json(),
        machine,
        jetstream,
        raw_realtime,
        raw_history,
        realtime,
        latency,
        history,
        history_subjects: if settings.history_all_subjects {
            "all history subjects"
        } else {
            "history.messages"
        },
        rss_realtime,
        rss_historical,
        dead_letters,
        wall: wall.elapsed(),
    })
}

fn workload(settings: &Settings, mix: Mix) -> Result<Workload> {
    Workload::new(&WorkloadSettings {
        tenants: settings.tenants,
        agents_per_tenant: settings.agents_per_tenant,
        company_prefix: settings.company_prefix.clone(),
        mix,
        seed: settings.seed,
    })
    .map_err(Error::new)
}

/// Warm-up and timed history batches: `history.messages` only, unless all subjects are asked.
fn history_events(settings: &Settings) -> Result<Vec<Event>> {
    let all = settings.history_all_subjects;
    Ok(workload(settings, Mix::History)?
        .filter(|e| all || e.kind == EventKind::HistoryMessages)
        .take((settings.history_warmup() + settings.history_count) as usize)
        .collect())
}

/// Items of a history batch (one for anything else).
fn items(event: &Event) -> u64 {
    let Ok(body) = serde_json::from_slice::<Value>(&event.body) else {
        return 1;
    };
    ["messages", "chats", "contacts"]
        .iter()
        .find_map(|k| body.get(k).and_then(Value::as_array))
        .map_or(1, |a| a.len() as u64)
}

/// The functions' environment: the fresh database and NATS, plus `--function-env`.
fn function_env(settings: &Settings, database_url: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("NATS_URL".to_owned(), settings.nats_url.clone()),
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
    ];
    env.extend(settings.function_env.iter().cloned());
    env
}

/// Publishes every event (waiting for each stream ack); fails if any is not stored.
async fn publish_all(js: &async_nats::jetstream::Context, events: &[Event]) -> Result<()> {
    let settings = PublishSettings {
        rate: 0.0,
        count: Some(events.len() as u64),
        duration: None,
        in_flight: 1000,
        retry_for: DEFAULT_RETRY_FOR,
        progress: false,
    };
    let report = publish(js, &mut events.iter().cloned(), &settings).await;
    if report.errors > 0 {
        return Err(Error::new(format!(
            "{} warm-up events not stored: {}",
            report.errors,
            report.first_error.unwrap_or_default()
        )));
    }
    Ok(())
}

/// `release` or `debug` from the binaries' directory (cargo's profile directory names).
fn profile_of(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| matches!(*n, "release" | "debug"))
        .unwrap_or("unknown")
        .to_owned()
}

fn step(i: u32, what: &str) {
    eprintln!("[{i}/5] {what}");
}

fn done(what: String) {
    eprintln!("      {what}");
}

/// `; N publishes retried` when a phase's publishing had to retry (its numbers include the
/// waits), else nothing.
fn retried(publish: &Report) -> String {
    match publish.retries {
        0 => String::new(),
        n => format!(
            "; {n} publishes retried (first error: {})",
            publish.first_error.as_deref().unwrap_or("?")
        ),
    }
}

fn n(v: f64) -> String {
    results::number(v, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_rows_are_the_items_of_each_batch() {
        let settings = Settings::parse_from_smoke();
        let events = history_events(&settings).unwrap();
        assert!(events.iter().all(|e| e.kind == EventKind::HistoryMessages));
        let rows: Vec<u64> = events.iter().map(items).collect();
        assert!(rows.iter().all(|&r| (1..=100).contains(&r)));
        assert!(rows.iter().sum::<u64>() > events.len() as u64);
    }

    #[test]
    fn the_profile_is_cargo_s_directory_name() {
        assert_eq!(profile_of(Path::new("/t/release")), "release");
        assert_eq!(profile_of(Path::new("/t/debug")), "debug");
        assert_eq!(profile_of(Path::new("/usr/bin")), "unknown");
    }

    impl Settings {
        fn parse_from_smoke() -> Self {
            use clap::Parser;
            Settings::parse_from(["wa-bench-e2e", "--smoke"]).resolved()
        }
    }
}
