//! What traces cost (`--tracing-overhead`, `just bench-tracing`): `wa-realtime` draining the
//! same realtime mix ([`drain`]) with traces off, exporting every trace (ratio 1.0), and one in
//! a hundred (0.01), to an OTLP/HTTP receiver in this process that reads each export and
//! discards it. The three alternate for `--tracing-rounds` rounds, each run on a fresh database
//! and stream after a warm-up that creates every tenant's schema, so drift of the machine
//! spreads over all three; each is reported as its median events/s and its overhead against
//! off, and as the CPU time the function spent per event during the drain (its user + system
//! time, all threads, the exporter's included), which other load on the machine disturbs far
//! less than the rate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::json;
use wa_shared::transport::streams::REALTIME_STREAM;

use super::commits::Inboxes;
use super::error::{Context, Error, Result};
use super::{drain, function_env, launch, results, stack, sweep, Stage, STOP_WITHIN};
use crate::Event;

/// The configurations measured: name, and the sample ratio (`None`: no traces).
const CONFIGS: [(&str, Option<f64>); 3] = [
    ("off", None),
    ("ratio 1.0", Some(1.0)),
    ("ratio 0.01", Some(0.01)),
];

/// One configuration's runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: &'static str,
    pub ratio: Option<f64>,
    /// Events/s of each round.
    pub rates: Vec<f64>,
    /// CPU µs the function spent per event, each round.
    pub cpu_us: Vec<f64>,
    /// Bytes of OTLP the receiver got during the drains.
    pub exported_bytes: u64,
    pub exports: u64,
}

impl Config {
    /// The median events/s.
    pub fn median(&self) -> f64 {
        median(&self.rates)
    }

    /// The median CPU µs per event.
    pub fn cpu_median(&self) -> f64 {
        median(&self.cpu_us)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut r = values.to_vec();
    r.sort_by(f64::total_cmp);
    match r.len() {
        0 => 0.0,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    }
}

/// User + system CPU seconds of process `pid` so far, all its threads (`/proc/<pid>/stat`,
/// in USER_HZ = 100 ticks a second).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).context(format_args!("reading {path}"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => Err(Error::new(format!("no CPU times in {path}"))),
    }
}

/// What the phase measured.
#[derive(Debug, Clone)]
pub struct Overhead {
    pub tenants: usize,
    pub events: u64,
    pub rounds: usize,
    pub configs: Vec<Config>,
    pub wall_s: f64,
}

impl Overhead {
    /// `config`'s throughput lost against traces off, in percent (negative: faster).
    pub fn overhead_pct(&self, config: &Config) -> Option<f64> {
        let off = self.configs.iter().find(|c| c.ratio.is_none())?.median();
        (off > 0.0 && config.ratio.is_some()).then(|| (off - config.median()) / off * 100.0)
    }

    /// `config`'s CPU time per event above that with traces off, in percent.
    pub fn cpu_overhead_pct(&self, config: &Config) -> Option<f64> {
        let off = self
            .configs
            .iter()
            .find(|c| c.ratio.is_none())?
            .cpu_median();
        (off > 0.0 && config.ratio.is_some()).then(|| (config.cpu_median() - off) / off * 100.0)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "wa-realtime draining {} realtime events of {} tenants, median of {} round(s):\n\n\
             | traces | events/s | each round | throughput lost | CPU µs/event | each round | CPU added | exported |\n\
             |---|---|---|---|---|---|---|---|\n",
            results::number(self.events as f64, ""),
            self.tenants,
            self.rounds
        );
        for c in &self.configs {
            let rounds: Vec<String> = c.rates.iter().map(|r| results::number(*r, "")).collect();
            let overhead = self
                .overhead_pct(c)
                .map_or("—".into(), |p| format!("{p:+.1} %"));
            let cpu_rounds: Vec<String> = c.cpu_us.iter().map(|v| format!("{v:.1}")).collect();
            let cpu_overhead = self
                .cpu_overhead_pct(c)
                .map_or("—".into(), |p| format!("{p:+.1} %"));
            let exported = if c.ratio.is_some() {
                format!(
                    "{:.1} MiB in {} requests",
                    c.exported_bytes as f64 / (1024.0 * 1024.0),
                    c.exports
                )
            } else {
                "—".into()
            };
            out.push_str(&format!(
                "| {} | {} | {} | {overhead} | {:.1} | {} | {cpu_overhead} | {exported} |\n",
                c.name,
                results::number(c.median(), ""),
                rounds.join(", "),
                c.cpu_median(),
                cpu_rounds.join(", "),
            ));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "tenants": self.tenants,
            "events": self.events,
            "rounds": self.rounds,
            "wall_s": self.wall_s,
            "configs": self.configs.iter().map(|c| json!({
                "name": c.name,
                "sample_ratio": c.ratio,
                "events_per_s": c.rates,
                "median_events_per_s": c.median(),
                "overhead_pct": self.overhead_pct(c),
                "cpu_us_per_event": c.cpu_us,
                "median_cpu_us_per_event": c.cpu_median(),
                "cpu_overhead_pct": self.cpu_overhead_pct(c),
                "exported_bytes": c.exported_bytes,
                "exports": c.exports,
            })).collect::<Vec<_>>(),
        })
    }

    /// Writes `tracing.md` and `tracing.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).context(format_args!("creating {}", dir.display()))?;
        let md = dir.join("tracing.md");
        std::fs::write(&md, self.markdown()).context(format_args!("writing {}", md.display()))?;
        let js = dir.join("tracing.json");
        let text = serde_json::to_string_pretty(&self.to_json()).context("report JSON")?;
        std::fs::write(&js, text).context(format_args!("writing {}", js.display()))?;
        Ok(vec![md, js])
    }
}

/// An OTLP/HTTP receiver that counts what it is sent and keeps nothing.
struct Sink {
    addr: SocketAddr,
    bytes: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start() -> Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener.local_addr().context("the receiver's address")?;
        let bytes = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (b, r) = (bytes.clone(), requests.clone());
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                b.fetch_add(body.len() as u64, Ordering::Relaxed);
                r.fetch_add(1, Ordering::Relaxed);
                // An empty ExportTraceServiceResponse: everything accepted.
                async {
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink {
            addr,
            bytes,
            requests,
            server,
        })
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Runs the phase on `stage` (its NATS and binaries).
pub async fn run(stage: &Stage<'_>) -> Result<Overhead> {
    let wall = Instant::now();
    let settings = stage.settings;
    let sink = Sink::start().await?;
    let tenants = settings.tenants;
    let mut workload = stage.workload(tenants, "T")?;
    let inboxes = Inboxes::new(workload.companies())?;
    let warmup = sweep::covering(&mut workload, &inboxes, settings.warmup as usize);
    let timed: Vec<Event> = workload
        .by_ref()
        .take(settings.tracing_count as usize)
        .collect();
    let mut configs: Vec<Config> = CONFIGS
        .iter()
        .map(|&(name, ratio)| Config {
            name,
            ratio,
            rates: Vec::new(),
            cpu_us: Vec::new(),
            exported_bytes: 0,
            exports: 0,
        })
        .collect();
    let db_name = settings.scratch_database("tracing");
    for round in 1..=settings.tracing_rounds {
        for config in configs.iter_mut() {
            let db = stack::fresh_database(&settings.postgres_url, &db_name).await?;
            stack::reset_stream(stage.js, REALTIME_STREAM).await?;
            let mut env = function_env(settings, &db.url);
            if let Some(ratio) = config.ratio {
                env.push((
                    "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    format!("http://{}", sink.addr),
                ));
                env.push(("OTEL_TRACES_SAMPLER_ARG".into(), ratio.to_string()));
            }
            let dir = format!("tracing-{round}-{}", config.name.replace([' ', '.'], "_"));
            let mut function =
                launch(stage.bin_dir, "wa-realtime", &env, &stage.logs.join(dir)).await?;
            stage
                .warm_up(&db.pool, &inboxes, &warmup, REALTIME_STREAM)
                .await?;
            let (bytes, requests) = sink.counts();
            let pid = function.pid().context("the function's pid")?;
            let cpu_before = cpu_seconds(pid)?;
            let drain = drain::measure(stage.js, &stage.sampling(), timed.clone()).await?;
            let cpu = cpu_seconds(pid)? - cpu_before;
            function.check_running()?;
            // Stopping sends the spans still queued: they are part of the cost.
            function.stop(STOP_WITHIN).await?;
            if !drain.complete {
                return Err(Error::new(format!(
                    "traces {}: {} of {} events acknowledged {:?} after publishing ended",
                    config.name,
                    drain.acknowledged,
                    timed.len(),
                    settings.commit_timeout
                )));
            }
            let (bytes_after, requests_after) = sink.counts();
            config.exported_bytes += bytes_after - bytes;
            config.exports += requests_after - requests;
            config.rates.push(drain.events_per_sec());
            let cpu_us = cpu * 1e6 / drain.events.max(1) as f64;
            config.cpu_us.push(cpu_us);
            super::done(format!(
                "round {round}, traces {}: {} events/s, {cpu_us:.1} CPU µs/event",
                config.name,
                results::number(drain.events_per_sec(), "")
            ));
            db.pool.close().await;
            stack::drop_database(&settings.postgres_url, &db_name).await?;
        }
    }
    Ok(Overhead {
        tenants,
        events: timed.len() as u64,
        rounds: settings.tracing_rounds,
        configs,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_against_the_median_with_traces_off() {
        let config = |name, ratio, rates: &[f64]| Config {
            name,
            ratio,
            rates: rates.to_vec(),
            cpu_us: rates.iter().map(|r| 1e4 / r).collect(),
            exported_bytes: 0,
            exports: 0,
        };
        let o = Overhead {
            tenants: 4,
            events: 1000,
            rounds: 3,
            configs: vec![
                config("off", None, &[90.0, 100.0, 300.0]),
                config("ratio 1.0", Some(1.0), &[80.0, 70.0, 90.0]),
            ],
            wall_s: 1.0,
        };
        assert_eq!(o.configs[0].median(), 100.0);
        assert_eq!(o.overhead_pct(&o.configs[1]), Some(20.0));
        assert_eq!(o.overhead_pct(&o.configs[0]), None);
        assert!(o
            .markdown()
            .contains("| ratio 1.0 | 80 | 80, 70, 90 | +20.0 % | 125.0 |"));
        assert_eq!(o.cpu_overhead_pct(&o.configs[1]), Some(25.0));
    }

    #[test]
    fn cpu_times_grow_while_this_process_works() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut spent = 0u64;
        while cpu_seconds(me).unwrap() <= before {
            assert!(Instant::now() < deadline, "no CPU time counted in 10 s");
            for i in 0..100_000u64 {
                spent = std::hint::black_box(spent.wrapping_add(i * i));
            }
        }
    }
}
