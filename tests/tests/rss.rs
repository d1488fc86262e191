//! Memory stays flat under steady load in a process nobody scrapes (`HTTP_PORT=0`): nothing
//! the function keeps per event (histogram samples waiting for the recorder's upkeep, above
//! all) may pile up. The run takes `RSS_SECONDS` (100 here; `just test-long-rss` runs 900) at
//! `RSS_RATE` events per second, and prints the resident set size over time.

use std::time::{Duration, Instant};

use wa_integration_tests::functions::{self, Function};
use wa_integration_tests::publisher::Publisher;
use wa_integration_tests::stack::Stack;
use wa_integration_tests::workload::Workload;

/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the median RSS of the last quarter of the run may exceed that of the second quarter
/// by. A process that keeps every histogram sample grows by ~8 bytes per sample, i.e.
/// several MiB over the default run; allocator noise of a flat process stays well below this.
const MAX_GROWTH_KIB: u64 = 512;

fn var(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// VmRSS of the process, in KiB.
fn rss_kib(f: &Function) -> u64 {
    let pid = f.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc (Linux)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn median(samples: &[u64]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

#[tokio::test]
async fn rss_stays_flat_under_steady_load_without_scrapes() {
    let seconds = var("RSS_SECONDS", 100);
    let rate = var("RSS_RATE", 1500);
    let total = (seconds * rate) as usize;
    let s = Stack::new("rss").await;
    s.create_streams().await;
    let mut env = s.env();
    // Small batches: more histogram samples per event, as a low-traffic deployment records.
    env.extend([("HTTP_PORT", "0".to_owned()), ("BATCH_SIZE", "20".into())]);
    let mut f = functions::start("wa-realtime", &env);

    let workload = Workload::generate(total, 500, 43);
    let publisher = Publisher::spawn(s.js.clone(), &s.tenant, &workload.events, 0, rate as u32);
    let started = Instant::now();
    let mut samples: Vec<(Duration, u64, i64)> = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    while publisher.acked() < total {
        tick.tick().await;
        f.check_running().expect("wa-realtime running");
        let applied = s.count("SELECT count(*) FROM inbox").await;
        samples.push((started.elapsed(), rss_kib(&f), applied));
    }
    let published = publisher.finish().await;
    s.wait_count(
        Duration::from_secs(120),
        "SELECT count(*) FROM inbox",
        total as i64,
    )
    .await;
    workload.assert_applied(&s.pool, &s.tenant).await;

    let n = samples.len();
    eprintln!(
        "{total} events in {:.0?} ({:.0} events/s published); RSS (KiB) over time:",
        published.elapsed,
        total as f64 / published.elapsed.as_secs_f64()
    );
    for (at, rss, applied) in samples.iter().step_by((n / 20).max(1)) {
        eprintln!(
            "  {:>6.1}s  {rss:>7} KiB  {applied:>8} applied",
            at.as_secs_f64()
        );
    }
    assert!(n >= 20, "too short a run to judge: {n} samples");
    // The first quarter is warm-up (pools, caches, every label seen once).
    let rss: Vec<u64> = samples.iter().map(|(_, r, _)| *r).collect();
    let second = median(&rss[n / 4..n / 2]);
    let last = median(&rss[3 * n / 4..]);
    let peak = rss.iter().max().copied().unwrap_or(0);
    eprintln!("median RSS: second quarter {second} KiB, last quarter {last} KiB; peak {peak} KiB");
    assert!(
        last <= second + MAX_GROWTH_KIB,
        "RSS kept growing under steady load: median {second} KiB in the second quarter, {last} KiB in the last"
    );
}
