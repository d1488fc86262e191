//! The function binaries as child processes: started against the benchmark's database and NATS
//! on a free HTTP port with their output in a log file, ready when `/ready` says so, stopped
//! with SIGTERM (also when the benchmark fails: the guard's `Drop`), peak RSS read from /proc.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{Context, Error, Result};

/// A running function; stopped when dropped.
pub struct Function {
    pub name: String,
    pub http_port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Function {
    /// Starts `dir/name` with a clean environment: `env` plus PATH, a free HTTP_PORT and WARN logs.
    pub fn start(dir: &Path, name: &str, env: &[(String, String)], logs: &Path) -> Result<Self> {
        let bin = dir.join(name);
        if !bin.is_file() {
            return Err(Error::new(format!(
                "{} not found; build it (cargo build --release -p {name}) or pass --bin-dir",
                bin.display()
            )));
        }
        let http_port = free_port()?;
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).context(format_args!("creating {}", log.display()))?;
        let err = out.try_clone().context("log file")?;
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "json")
            .env("HTTP_PORT", http_port.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .context(format_args!("starting {}", bin.display()))?;
        Ok(Function {
            name: name.to_owned(),
            http_port,
            log,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until `/ready` answers 200; fails if the process exits or the deadline passes.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((200, _)) = http_get(self.http_port, "/ready").await {
                return Ok(());
            }
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(self.failure(&format!("not ready within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait().context("waiting for a function")?,
            None => return Err(Error::new(format!("{} is not running", self.name))),
        };
        match exited {
            Some(status) => Err(self.failure(&format!("exited ({status})"))),
            None => Ok(()),
        }
    }

    /// Peak resident set size (VmHWM) so far, in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        let pid = self.pid().context("function not running")?;
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).context(format_args!("reading {path} (Linux only)"))?;
        vm_hwm(&status).context(format_args!("no VmHWM in {path}"))
    }

    /// SIGTERM, then waits for the exit (SIGKILL after `within`).
    pub async fn stop(&mut self, within: Duration) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        terminate(&child);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().context("waiting for a function")? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(self.failure(&format!("exited with {status} on SIGTERM")))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.failure(&format!("did not stop within {within:?} of SIGTERM")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn failure(&self, what: &str) -> Error {
        Error::new(format!(
            "{} {what}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, 20)
        ))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(&child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// SIGTERM through kill(1): the workspace forbids the unsafe code a libc call would need.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// A minimal HTTP/1.1 GET: (status, body), or None when nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_from_vm_hwm() {
        let status =
            "Name:\twa-realtime\nVmPeak:\t  200000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(vm_hwm(status), Some(23456 * 1024));
        assert_eq!(vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(vm_hwm(&status).unwrap() > 0);
    }
}
