//! Facts about the machine and servers a run measured, so numbers are read with their context.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

/// Where and when the benchmark ran.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub postgres: String,
    pub nats_server: String,
    pub date: String,
    pub git_commit: Option<String>,
    /// `release` or `debug`: the profile of the function binaries.
    pub profile: String,
    /// Share of the CPUs busy with other work just before the run (it skews every number).
    pub busy_before: Option<f64>,
}

impl Machine {
    pub async fn collect(
        pool: &PgPool,
        nats: &async_nats::Client,
        profile: String,
        busy_before: Option<f64>,
    ) -> Self {
        let postgres = sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: mem_total_kib(&meminfo).unwrap_or(0) as f64 / (1024.0 * 1024.0),
            postgres,
            nats_server: nats.server_info().version,
            date: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            git_commit: git_commit(),
            profile,
            busy_before,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "memory_gib": self.memory_gib,
            "postgres": self.postgres,
            "nats_server": self.nats_server,
            "date": self.date,
            "git_commit": self.git_commit,
            "functions_profile": self.profile,
            "cpu_busy_before_run": self.busy_before,
        })
    }

    /// One line per fact, `label: value`.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        vec![
            ("date", self.date.clone()),
            (
                "git commit",
                self.git_commit.clone().unwrap_or_else(|| "unknown".into()),
            ),
            ("CPU", format!("{} ({} cores)", self.cpu, self.cores)),
            ("memory", format!("{:.1} GiB", self.memory_gib)),
            ("PostgreSQL", self.postgres.clone()),
            ("nats-server", self.nats_server.clone()),
            ("functions", format!("{} build", self.profile)),
            (
                "CPU busy with other work before the run",
                self.busy_before
                    .map_or("unknown".into(), |b| format!("{:.0} %", b * 100.0)),
            ),
        ]
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The share of CPU time not idle over `window`, from /proc/stat.
pub async fn cpu_busy(window: Duration) -> Option<f64> {
    let before = cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)?;
    tokio::time::sleep(window).await;
    let after = cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let total = after.0.saturating_sub(before.0) as f64;
    let idle = after.1.saturating_sub(before.1) as f64;
    (total > 0.0).then(|| 1.0 - idle / total)
}

/// (total, idle + iowait) jiffies of the `cpu` line of /proc/stat.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((v.iter().take(8).sum(), idle))
}

/// The checked-out commit, `+dirty` when the work tree has changes (read-only git commands).
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_proc() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(
            mem_total_kib("MemTotal:       24683520 kB\n"),
            Some(24683520)
        );
        assert_eq!(cpu_model(""), None);
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(cpu_times(stat), Some((1000, 850)));
    }
}
