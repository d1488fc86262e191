//! Tenants on two Postgres clusters (`--placements 2`, `just bench-placement`, SPEC §17):
//! `wa-realtime` draining the same realtime mix of `--placement-tenants` tenants ([`drain`])
//! with every tenant on the main database, and with every other tenant placed on a second
//! cluster (`TENANT_DATABASES`; those tenants recorded in `wa_system.tenants` before their first
//! event, as an operator places them). The two alternate for `--placement-rounds` rounds, each
//! run on fresh databases and a fresh stream after a warm-up that creates every tenant's
//! schema, so drift of the machine spreads over both; each is reported as its median events/s.
//!
//! The second cluster is one the benchmark starts ([`PrivatePostgres`]: initdb and pg_ctl on a
//! free port) with the main server's durability, memory and connection settings, so that
//! neither run gains from a laxer server; or the server of `--placement-admin-url`. Both share
//! this machine's CPUs and disk: the comparison shows what a second placement costs the
//! function (a pool, and a transaction per placement and batch), not what a second machine
//! would add.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use wa_shared::model::TenantId;
use wa_shared::store::placement::TenantState;
use wa_shared::store::{schema, tenants, SYSTEM_SCHEMA};
use wa_shared::transport::streams::REALTIME_STREAM;
use wa_testkit::PrivatePostgres;

use super::commits::Inboxes;
use super::error::{Context, Error, Result};
use super::settings::Settings;
use super::{
    drain, function_env, launch, publish_all, results, stack, sweep, Stage, STOP_WITHIN,
    WARMUP_WITHIN,
};
use crate::Event;

/// The name of the second placement in `TENANT_DATABASES`.
const SECOND: &str = "second";

/// Server settings a private second cluster copies from the main server.
const COPIED_SETTINGS: [&str; 10] = [
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "shared_buffers",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "max_connections",
    "max_locks_per_transaction",
    "work_mem",
];

/// One configuration's runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres clusters the tenants are placed on.
    pub clusters: usize,
    /// Events/s of each round.
    pub rates: Vec<f64>,
    /// Share of the CPUs busy with other work just before each round's drain.
    pub busy: Vec<Option<f64>>,
}

impl Config {
    pub fn median(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        match r.len() {
            0 => 0.0,
            n if n % 2 == 1 => r[n / 2],
            n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
        }
    }

    fn name(&self) -> String {
        match self.clusters {
            1 => "one cluster".into(),
            n => format!("{n} clusters"),
        }
    }
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct Placements {
    pub tenants: usize,
    pub events: u64,
    pub rounds: usize,
    /// Where the second cluster ran.
    pub second: String,
    pub configs: Vec<Config>,
    pub wall_s: f64,
}

impl Placements {
    /// `config`'s median against the one-cluster median (1.0: as fast).
    pub fn ratio(&self, config: &Config) -> Option<f64> {
        let one = self.configs.iter().find(|c| c.clusters == 1)?.median();
        (one > 0.0).then(|| config.median() / one)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "wa-realtime draining {} realtime events of {} tenants, median of {} round(s); with \
             2 clusters every other tenant is on the second.\n\n\
             | tenants placed on | events/s | each round | vs one cluster | CPU busy before each |\n\
             |---|---|---|---|---|\n",
            results::number(self.events as f64, ""),
            self.tenants,
            self.rounds,
        );
        for c in &self.configs {
            let rounds: Vec<String> = c.rates.iter().map(|r| results::number(*r, "")).collect();
            let ratio = self
                .ratio(c)
                .map_or("—".into(), |r| format!("{:.1} %", r * 100.0));
            let busy: Vec<String> = c
                .busy
                .iter()
                .map(|b| b.map_or("?".into(), |b| format!("{:.0} %", b * 100.0)))
                .collect();
            out.push_str(&format!(
                "| {} | {} | {} | {ratio} | {} |\n",
                c.name(),
                results::number(c.median(), ""),
                rounds.join(", "),
                busy.join(", "),
            ));
        }
        out.push_str(&format!("\nThe second cluster: {}.\n", self.second));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tenants": self.tenants,
            "events": self.events,
            "rounds": self.rounds,
            "second_cluster": self.second,
            "wall_s": self.wall_s,
            "configs": self.configs.iter().map(|c| json!({
                "clusters": c.clusters,
                "events_per_s": c.rates,
                "median_events_per_s": c.median(),
                "cpu_busy_before": c.busy,
                "ratio_to_one_cluster": self.ratio(c),
            })).collect::<Vec<_>>(),
        })
    }

    /// Writes `placement.md` and `placement.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).context(format_args!("creating {}", dir.display()))?;
        let md = dir.join("placement.md");
        std::fs::write(&md, self.markdown()).context(format_args!("writing {}", md.display()))?;
        let js = dir.join("placement.json");
        let text = serde_json::to_string_pretty(&self.to_json()).context("report JSON")?;
        std::fs::write(&js, text).context(format_args!("writing {}", js.display()))?;
        Ok(vec![md, js])
    }
}

/// The second Postgres server: its admin URL, and the private cluster when the benchmark
/// started one (stopped on drop).
struct Second {
    admin_url: String,
    description: String,
    _cluster: Option<PrivatePostgres>,
}

impl Second {
    /// The server of `--placement-admin-url`, or a private cluster with the settings of the
    /// main server (`--postgres-url`).
    async fn start(settings: &Settings) -> Result<Second> {
        if let Some(url) = &settings.placement_admin_url {
            return Ok(Second {
                admin_url: url.clone(),
                description: "the server of --placement-admin-url".into(),
                _cluster: None,
            });
        }
        let mut main = PgConnection::connect(&settings.postgres_url)
            .await
            .context(format_args!(
                "connecting to Postgres at {}",
                settings.postgres_url
            ))?;
        let copied: Vec<(String, String)> =
            sqlx::query_as("SELECT name, setting FROM pg_settings WHERE name = ANY($1)")
                .bind(&COPIED_SETTINGS[..])
                .fetch_all(&mut main)
                .await
                .context("reading the main server's settings")?;
        let _ = main.close().await;
        let description = format!(
            "a private cluster on this machine, with the main server's {}",
            copied
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let cluster = tokio::task::spawn_blocking(move || {
            let settings: Vec<(&str, &str)> = copied
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            PrivatePostgres::start(&settings)
        })
        .await
        .context("starting the second cluster")??;
        Ok(Second {
            admin_url: cluster.url(),
            description,
            _cluster: Some(cluster),
        })
    }
}

/// The workload's tenants split by placement: even ones stay on the main database, odd ones go
/// to the second cluster.
struct Split {
    all: Inboxes,
    main: Inboxes,
    second: Inboxes,
    second_companies: Vec<String>,
}

impl Split {
    fn new(companies: &[String]) -> Result<Split> {
        let every_other = |first: usize| -> Vec<String> {
            companies.iter().skip(first).step_by(2).cloned().collect()
        };
        let (main, second) = (every_other(0), every_other(1));
        Ok(Split {
            all: Inboxes::new(companies)?,
            main: Inboxes::new(&main)?,
            second: Inboxes::new(&second)?,
            second_companies: second,
        })
    }

    /// Events of `events` whose tenant is on the second cluster.
    fn on_second(&self, events: &[Event]) -> u64 {
        events
            .iter()
            .filter(|e| self.second.tenant_of(e).is_some())
            .count() as u64
    }
}

/// Runs the comparison on `stage` (its NATS and binaries).
pub async fn run(stage: &Stage<'_>) -> Result<Placements> {
    let wall = Instant::now();
    let settings = stage.settings;
    let tenants = settings.placement_tenants;
    let mut workload = stage.workload(tenants, "P")?;
    let split = Split::new(workload.companies())?;
    let warmup = sweep::covering(&mut workload, &split.all, settings.warmup as usize);
    let timed: Vec<Event> = workload
        .by_ref()
        .take(settings.placement_count as usize)
        .collect();
    let second = Second::start(settings).await?;
    super::done(format!("second cluster: {}", second.description));
    let mut configs = vec![
        Config {
            clusters: 1,
            rates: Vec::new(),
            busy: Vec::new(),
        },
        Config {
            clusters: 2,
            rates: Vec::new(),
            busy: Vec::new(),
        },
    ];
    for round in 1..=settings.placement_rounds {
        for config in configs.iter_mut() {
            let second = (config.clusters == 2).then_some(&second);
            let (rate, busy) = drain_once(stage, &split, second, &warmup, &timed, round).await?;
            config.rates.push(rate);
            config.busy.push(busy);
            super::done(format!(
                "round {round}, {}: {} events/s",
                config.name(),
                results::number(rate, "")
            ));
        }
    }
    Ok(Placements {
        tenants,
        events: timed.len() as u64,
        rounds: settings.placement_rounds,
        second: second.description.clone(),
        configs,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

/// One drain: fresh databases (the main one, and the second cluster's when `second`), the odd
/// tenants placed there, a fresh `wa-realtime` warmed up, then `timed` published flat out.
/// Checks that every event was committed, each tenant on its own cluster only. Returns the
/// events/s, and the share of the CPUs other work kept busy just before the drain.
async fn drain_once(
    stage: &Stage<'_>,
    split: &Split,
    second: Option<&Second>,
    warmup: &[Event],
    timed: &[Event],
    round: usize,
) -> Result<(f64, Option<f64>)> {
    let settings = stage.settings;
    let db_name = settings.scratch_database("placement");
    // Its own name on the second server: --placement-admin-url may name the main one.
    let second_name = settings.scratch_database("placement_2");
    let main = stack::fresh_database(&settings.postgres_url, &db_name).await?;
    let mut env = function_env(settings, &main.url);
    let other = match second {
        Some(second) => {
            let db = stack::fresh_database(&second.admin_url, &second_name).await?;
            schema::migrate(&main.pool, SYSTEM_SCHEMA)
                .await
                .context("migrating wa_system on the main database")?;
            for company in &split.second_companies {
                let id = TenantId::parse(company).context("workload tenant")?;
                tenants::claim(&main.pool, &id)
                    .await
                    .context("recording a tenant")?;
                tenants::set_placement(&main.pool, &id.schema_name(), SECOND, TenantState::Active)
                    .await
                    .context("placing a tenant")?;
            }
            env.push(("TENANT_DATABASES".into(), format!("{SECOND}={}", db.url)));
            Some(db)
        }
        None => None,
    };
    stack::reset_stream(stage.js, REALTIME_STREAM).await?;
    let clusters = if other.is_some() { 2 } else { 1 };
    let dir = format!("placement-{round}-{clusters}");
    let mut function = launch(stage.bin_dir, "wa-realtime", &env, &stage.logs.join(dir)).await?;

    // Warm-up: every tenant's schema made, on its cluster.
    publish_all(stage.js, warmup).await?;
    let within = WARMUP_WITHIN;
    match &other {
        Some(db) => {
            let on_second = split.on_second(warmup);
            split
                .main
                .wait_for(
                    &main.pool,
                    REALTIME_STREAM,
                    warmup.len() as u64 - on_second,
                    within,
                )
                .await
                .context("warm-up of the main cluster's tenants")?;
            split
                .second
                .wait_for(&db.pool, REALTIME_STREAM, on_second, within)
                .await
                .context("warm-up of the second cluster's tenants")?;
        }
        None => split
            .all
            .wait_for(&main.pool, REALTIME_STREAM, warmup.len() as u64, within)
            .await
            .context("warm-up")?,
    }
    if stage.checkpoints() {
        stack::checkpoint(&main.pool).await;
        if let Some(db) = &other {
            stack::checkpoint(&db.pool).await;
        }
    }

    let busy = super::machine::cpu_busy(Duration::from_millis(500)).await;
    let drain = drain::measure(stage.js, &stage.sampling(), timed.to_vec()).await?;
    function.check_running()?;
    function.stop(STOP_WITHIN).await?;
    if !drain.complete {
        return Err(Error::new(format!(
            "{clusters} cluster(s): {} of {} events acknowledged {:?} after publishing ended",
            drain.acknowledged,
            timed.len(),
            settings.commit_timeout
        )));
    }
    let all = (warmup.len() + timed.len()) as u64;
    let committed = match &other {
        Some(db) => {
            let astray = split.second.existing(&main.pool).await?.len()
                + split.main.existing(&db.pool).await?.len();
            if astray > 0 {
                return Err(Error::new(format!(
                    "{astray} tenant schemas were made on the other cluster than their placement"
                )));
            }
            split.main.committed(&main.pool, REALTIME_STREAM).await?
                + split.second.committed(&db.pool, REALTIME_STREAM).await?
        }
        None => split.all.committed(&main.pool, REALTIME_STREAM).await?,
    };
    if committed != all {
        return Err(Error::new(format!(
            "{clusters} cluster(s): {committed} of {all} events committed"
        )));
    }
    main.pool.close().await;
    stack::drop_database(&settings.postgres_url, &db_name).await?;
    if let (Some(db), Some(second)) = (other, second) {
        db.pool.close().await;
        stack::drop_database(&second.admin_url, &second_name).await?;
    }
    Ok((drain.events_per_sec(), busy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_tenant_goes_to_the_second_cluster() {
        let companies: Vec<String> = (1..=5).map(|i| format!("P{i:03}")).collect();
        let split = Split::new(&companies).unwrap();
        assert_eq!(split.second_companies, vec!["P002", "P004"]);
        assert_eq!((split.main.len(), split.second.len()), (3, 2));
    }

    #[test]
    fn two_clusters_are_reported_against_the_median_of_one() {
        let p = Placements {
            tenants: 64,
            events: 1000,
            rounds: 3,
            second: "here".into(),
            configs: vec![
                Config {
                    clusters: 1,
                    rates: vec![90.0, 100.0, 300.0],
                    busy: vec![Some(0.1), None, Some(0.5)],
                },
                Config {
                    clusters: 2,
                    rates: vec![80.0, 95.0, 110.0],
                    busy: vec![Some(0.0); 3],
                },
            ],
            wall_s: 1.0,
        };
        assert_eq!(p.ratio(&p.configs[1]), Some(0.95));
        assert!(p
            .markdown()
            .contains("| 2 clusters | 95 | 80, 95, 110 | 95.0 % | 0 %, 0 %, 0 % |"));
        assert!(p.markdown().contains("| 10 %, ?, 50 % |"));
    }
}
