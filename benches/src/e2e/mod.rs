//! The end-to-end benchmark behind `wa-bench-e2e` (`just bench-e2e`): the real function
//! binaries and the load generator against the local stack, next to the raw limits of the
//! same machine measured in the same run, reported as a table of ratios and targets.
//!
//! Phases, in order, on a fresh database and freshly recreated product streams:
//! 1. [`raw_jetstream`]: publish and consume rates of a scratch stream;
//! 2. [`raw_sql`] (with [`raw_batch`], [`raw_statements`]): the workload's realtime and history
//!    writes as plain SQL;
//! 3. [`throughput`]: `wa-realtime` consuming events published flat out;
//! 4. [`throughput`] again: `wa-historical` consuming history batches;
//! 5. [`sweep`]: at each tenant count, `wa-realtime` draining the realtime mix of that many
//!    tenants ([`drain`]) next to the fastest raw SQL of the same writes over as many schemas
//!    ([`raw_tenants`]);
//! 6. [`latency`]: publish→commit latency at a fixed rate, for each `--latency-tenants` count;
//! 7. [`burst`]: thousands of brand-new tenants at once, then the peak RSS serving them;
//!
//! and the peak RSS of each function. Phases 5–7 each run in a scratch database of their own
//! (dropped afterwards) and on a freshly recreated realtime stream.
//!
//! The functions run as child processes through `wa-testkit`, the spawner the tests use too.
//!
//! What was committed is read from the tenants' inbox tables ([`commits`]). [`results`] holds
//! the numbers and targets, [`table`] and [`chart`] render them and [`output`] writes them,
//! [`machine`] says where they were measured, [`stack`] makes the database and streams fresh.

pub mod burst;
pub mod chart;
pub mod commits;
pub mod drain;
pub mod error;
pub mod latency;
pub mod machine;
pub mod output;
pub mod placement;
pub mod raw_batch;
pub mod raw_jetstream;
pub mod raw_sql;
pub mod raw_statements;
pub mod raw_tenants;
pub mod results;
pub mod settings;
pub mod stack;
pub mod sweep;
pub mod table;
pub mod throughput;
pub mod tracing;

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context as JetStream;
use serde_json::Value;
use sqlx::PgPool;
use wa_shared::model::EventKind;
use wa_shared::transport::streams::{DLQ_STREAM, HISTORY_STREAM, REALTIME_STREAM};
use wa_testkit::{Function, Launch};

pub use error::{Error, Result};

/// An error unless the publisher stored all `count` events.
fn all_stored(report: &Report, count: u64) -> Result<()> {
    if report.published < count {
        return Err(Error::new(format!(
            "only {} of {count} events were stored ({} errors: {})",
            report.published,
            report.errors,
            report.first_error.clone().unwrap_or_default()
        )));
    }
    Ok(())
}
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
/// Phases of a run, for the progress lines.
const PHASES: u32 = 7;

/// Starts a function on a database, logging into `logs`, and waits until it is ready.
async fn launch(
    bin_dir: &Path,
    name: &str,
    env: &[(String, String)],
    logs: &Path,
) -> Result<Function> {
    std::fs::create_dir_all(logs).context(format_args!("creating {}", logs.display()))?;
    let mut function = Launch::new(bin_dir.join(name))
        .log_level("warn")
        .env([("LOG_FORMAT", "json")])
        .env(env.iter().cloned())
        .log_dir(logs)
        .terminate_on_drop(STOP_ON_DROP)
        .start()?;
    function.wait_ready(READY_WITHIN).await?;
    Ok(function)
}

/// Publishes `warmup`, waits until it is committed and every tenant's schema exists, and
/// checkpoints (when `checkpoint`), so that a timed phase measures steady writing.
async fn warm_up(
    js: &JetStream,
    pool: &PgPool,
    inboxes: &Inboxes,
    stream: &str,
    warmup: &[Event],
    checkpoint: bool,
) -> Result<()> {
    publish_all(js, warmup).await?;
    // Creating thousands of schemas takes a while.
    let within = WARMUP_WITHIN + Duration::from_millis(100) * inboxes.len() as u32;
    inboxes
        .wait_for(pool, stream, warmup.len() as u64, within)
        .await
        .context(format_args!("warm-up of {} tenants", inboxes.len()))?;
    if checkpoint {
        stack::checkpoint(pool).await;
    }
    Ok(())
}

/// Starts functions warmed up: ready, their tenants' schemas made by a few events, and the
/// database checkpointed, so that a timed phase measures steady writing.
struct Warm<'a> {
    bin_dir: &'a Path,
    env: &'a [(String, String)],
    logs: &'a Path,
    js: &'a JetStream,
    inboxes: &'a Inboxes,
    pool: &'a sqlx::PgPool,
}

impl Warm<'_> {
    async fn start(&self, name: &str, stream: &str, warmup: &[Event]) -> Result<Function> {
        let function = launch(self.bin_dir, name, self.env, self.logs).await?;
        warm_up(self.js, self.pool, self.inboxes, stream, warmup, true)
            .await
            .context(format_args!("{name}"))?;
        Ok(function)
    }
}

/// What the phases after the first four share: the flags, the functions, the stack. Each of
/// them runs `wa-realtime` on a scratch database of its own.
pub struct Stage<'a> {
    pub settings: &'a Settings,
    pub js: &'a JetStream,
    bin_dir: &'a Path,
    logs: &'a Path,
}

impl Stage<'_> {
    /// A ready `wa-realtime` on the database at `database_url`, logging into `logs/<dir>/`.
    pub async fn realtime(&self, database_url: &str, dir: &str) -> Result<Function> {
        let env = function_env(self.settings, database_url);
        launch(self.bin_dir, "wa-realtime", &env, &self.logs.join(dir)).await
    }

    /// See [`warm_up`].
    pub async fn warm_up(
        &self,
        pool: &PgPool,
        inboxes: &Inboxes,
        warmup: &[Event],
        stream: &str,
    ) -> Result<()> {
        warm_up(self.js, pool, inboxes, stream, warmup, self.checkpoints()).await
    }

    /// Whether to checkpoint before a timed phase: not in a smoke run, whose numbers mean
    /// nothing (on a busy server a checkpoint can take many seconds).
    pub fn checkpoints(&self) -> bool {
        !self.settings.smoke
    }

    /// The realtime mix of `tenants` tenants with `--sweep-agents-per-tenant` agents each,
    /// companies `<prefix>_<tag><tenants>_001`, … (a phase's own tenants).
    pub fn workload(&self, tenants: usize, tag: &str) -> Result<Workload> {
        let s = self.settings;
        Workload::new(&WorkloadSettings {
            tenants,
            agents_per_tenant: s.sweep_agents_per_tenant,
            company_prefix: format!("{}_{tag}{tenants}_", s.company_prefix),
            mix: Mix::Realtime,
            seed: s.seed,
        })
        .map_err(Error::new)
    }

    /// How the drains sample the realtime stream's consumer.
    pub fn sampling(&self) -> drain::Sampling {
        drain::Sampling {
            stream: REALTIME_STREAM,
            interval: self.settings.sample_interval,
            timeout: self.settings.commit_timeout,
            progress: !self.settings.quiet,
        }
    }
}

/// Runs every phase and returns what was measured.
pub async fn run(settings: &Settings) -> Result<Results> {
    let wall = Instant::now();
    let _ = STARTED.set(wall);
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
    let rss_realtime = realtime_fn.peak_rss()?;
    realtime_fn.stop(STOP_WITHIN).await?;
    done(format!(
        "{} events/s ({} events in {:.1} s){}",
        n(realtime.events_per_sec()),
        n(realtime.events as f64),
        realtime.elapsed.as_secs_f64(),
        retried(&realtime.publish)
    ));

    step(4, "wa-historical throughput");
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

    let stage = Stage {
        settings,
        js: &js,
        bin_dir: &bin_dir,
        logs: &logs,
    };
    step(
        5,
        &format!(
            "tenant sweep: {:?} tenants × {} agents, {} events each",
            settings.tenants_sweep,
            settings.sweep_agents_per_tenant,
            n(settings.sweep_count as f64)
        ),
    );
    let mut sweep = Vec::new();
    for &tenants in &settings.tenants_sweep {
        let s = sweep::step(&stage, tenants).await?;
        let best = s.raw_best();
        done(format!(
            "{tenants} tenants: {} events/s; raw SQL {} events/s ({}){}",
            n(s.events_per_sec()),
            n(s.raw_per_sec()),
            s.raw
                .iter()
                .map(|r| format!("{} {}", r.variant.name(), n(r.events_per_sec())))
                .collect::<Vec<_>>()
                .join(", "),
            best.map_or(String::new(), |b| format!(
                ", fastest: {}",
                b.variant.name()
            )),
        ));
        sweep.push(s);
    }

    step(6, "publish->commit latency");
    let mut latencies = Vec::new();
    for &tenants in &settings.latency_tenants {
        let latency = latency_at(&stage, tenants).await?;
        done(format!(
            "{tenants} tenants: p50 {:.1} ms, p99 {:.1} ms at {}/s{}",
            latency.p50_ms,
            latency.p99_ms,
            n(latency.rate),
            retried(&latency.publish)
        ));
        latencies.push(latency);
    }

    step(
        7,
        &format!(
            "new-tenant burst: {} tenants × {} events, then {} events for the RSS",
            n(settings.burst_tenants as f64),
            settings.burst_events_per_tenant,
            n(settings.rss_events as f64)
        ),
    );
    let burst = burst::run(&stage).await?;
    done(format!(
        "all committed {}; peak RSS {:.1} MiB",
        burst
            .elapsed()
            .map_or("NOT within the timeout".into(), |d| format!(
                "in {:.1} s",
                d.as_secs_f64()
            )),
        burst.rss as f64 / (1024.0 * 1024.0)
    ));

    let dead_letters = stack::stream_state(&js, DLQ_STREAM).await?.messages;
    Ok(Results {
        settings: settings.to_json(),
        machine,
        jetstream,
        raw_realtime,
        raw_history,
        realtime,
        latencies,
        history,
        history_subjects: if settings.history_all_subjects {
            "all history subjects"
        } else {
            "history.messages"
        },
        rss_realtime,
        rss_historical,
        sweep,
        burst,
        dead_letters,
        wall: wall.elapsed(),
    })
}

/// What a phase run on its own needs: its log directory, the function binaries and the
/// streams, reset.
struct Alone {
    logs: std::path::PathBuf,
    bin_dir: std::path::PathBuf,
    js: JetStream,
}

impl Alone {
    async fn prepare(settings: &Settings) -> Result<Alone> {
        let _ = STARTED.set(Instant::now());
        let logs = settings.out_dir().join("logs");
        std::fs::create_dir_all(&logs).context(format_args!("creating {}", logs.display()))?;
        let bin_dir = match &settings.bin_dir {
            Some(dir) => dir.clone(),
            None => wa_testkit::bin_dir()?,
        };
        if !bin_dir.join("wa-realtime").is_file() {
            return Err(Error::new(format!(
                "{} not found; build it (cargo build --release -p wa-realtime) or pass --bin-dir",
                bin_dir.join("wa-realtime").display()
            )));
        }
        if profile_of(&bin_dir) != "release" && !settings.smoke {
            eprintln!("warning: the function binaries in {} are not a release build: the numbers do not represent the product", bin_dir.display());
        }
        let client = async_nats::connect(&settings.nats_url)
            .await
            .context(format_args!("connecting to NATS at {}", settings.nats_url))?;
        let js = async_nats::jetstream::new(client);
        stack::reset_streams(&js).await?;
        Ok(Alone { logs, bin_dir, js })
    }

    fn stage<'a>(&'a self, settings: &'a Settings) -> Stage<'a> {
        Stage {
            settings,
            js: &self.js,
            bin_dir: &self.bin_dir,
            logs: &self.logs,
        }
    }
}

/// The tracing overhead phase alone (`--tracing-overhead`): see [`tracing`].
pub async fn run_tracing(settings: &Settings) -> Result<tracing::Overhead> {
    let alone = Alone::prepare(settings).await?;
    eprintln!(
        "{} tracing overhead: {} rounds of traces off, ratio 1.0 and ratio 0.01, {} events each",
        stamp(),
        settings.tracing_rounds,
        n(settings.tracing_count as f64)
    );
    tracing::run(&alone.stage(settings)).await
}

/// The placement comparison alone (`--placements 2`): see [`placement`].
pub async fn run_placements(settings: &Settings) -> Result<placement::Placements> {
    let alone = Alone::prepare(settings).await?;
    eprintln!(
        "{} placement: {} rounds of {} tenants on one Postgres cluster and on two, {} events each",
        stamp(),
        settings.placement_rounds,
        settings.placement_tenants,
        n(settings.placement_count as f64)
    );
    placement::run(&alone.stage(settings)).await
}

/// Publish→commit latency with `tenants` tenants: a fresh `wa-realtime` on a scratch database,
/// every tenant warmed up, then events published at `--latency-rate`.
async fn latency_at(stage: &Stage<'_>, tenants: usize) -> Result<latency::Latency> {
    let settings = stage.settings;
    let mut workload = stage.workload(tenants, "L")?;
    let inboxes = Inboxes::new(workload.companies())?;
    let warmup = sweep::covering(&mut workload, &inboxes, settings.warmup as usize);
    let db_name = settings.scratch_database("latency");
    let db = stack::fresh_database(&settings.postgres_url, &db_name).await?;
    stack::reset_stream(stage.js, REALTIME_STREAM).await?;
    let mut function = stage
        .realtime(&db.url, &format!("latency-{tenants}"))
        .await?;
    stage
        .warm_up(&db.pool, &inboxes, &warmup, REALTIME_STREAM)
        .await?;
    let floor = drain::Floor::of(stage.js, REALTIME_STREAM).await?;
    latency::settle(
        stage.js,
        &floor,
        &mut workload,
        settings.latency_rate,
        Duration::from_secs(settings.latency_settle),
        settings.commit_timeout,
    )
    .await?;
    let latency = latency::measure(
        stage.js,
        latency::Polling {
            pool: &db.pool,
            commits: inboxes.reader(REALTIME_STREAM, latency::POLLED_TENANTS),
            floor,
            first_sequence: stack::stream_state(stage.js, REALTIME_STREAM)
                .await?
                .last_sequence
                + 1,
            poll: settings.latency_poll,
            commit_timeout: settings.commit_timeout,
        },
        &mut workload,
        tenants,
        settings.latency_rate,
        Duration::from_secs(settings.latency_seconds),
        !settings.quiet,
    )
    .await?;
    function.check_running()?;
    function.stop(STOP_WITHIN).await?;
    db.pool.close().await;
    stack::drop_database(&settings.postgres_url, &db_name).await?;
    Ok(latency)
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

/// When the run started, for the progress lines' time stamps.
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Seconds since the run started, as `[  12 s]`.
fn stamp() -> String {
    let started = STARTED.get_or_init(Instant::now);
    format!("[{:>4.0} s]", started.elapsed().as_secs_f64())
}

fn step(i: u32, what: &str) {
    eprintln!("{} [{i}/{PHASES}] {what}", stamp());
}

fn done(what: String) {
    eprintln!("{}       {what}", stamp());
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
