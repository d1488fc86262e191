//! The real function binaries, spawned as child processes with their own environment.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{free_port, TempDir};

/// Where cargo put the workspace's binaries (next to the directory of this test executable).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// A running function process; killed on drop.
pub struct Function {
    pub name: String,
    pub http_port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    logs: TempDir,
    starts: u32,
}

impl Function {
    /// Starts `bin` (e.g. `wa-realtime`) with these variables (plus quiet JSON logs and a free HTTP port).
    pub fn start(bin: &str, env: &[(&str, String)]) -> Self {
        let mut f = Function {
            name: bin.to_owned(),
            http_port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            child: None,
            logs: TempDir::new("wa-fn-logs"),
            starts: 0,
        };
        f.restart();
        f
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.logs.path().join(format!("run{}.log", self.starts)))
            .expect("log");
        let mut cmd = Command::new(binary(&self.name));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "LOG_LEVEL",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("HTTP_PORT", self.http_port.to_string())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn function"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: a crash, with whatever was in flight.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > within {
                let _ = c.kill();
                panic!(
                    "{} did not exit within {within:?} of SIGTERM; logs:\n{}",
                    self.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote so far, across restarts.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            out.push_str(
                &std::fs::read_to_string(self.logs.path().join(format!("run{i}.log")))
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// GET on the function's HTTP port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path).await
    }

    /// Waits until the metrics show a batch held (database unavailable, or a failed or timed-out
    /// Lambda invocation).
    pub async fn wait_until_holding(&self) {
        let start = Instant::now();
        loop {
            if let Some((_, body)) = self.get("/metrics").await {
                if body.lines().any(|l| {
                    l.starts_with("message_event_service_batches_held_total") && !l.ends_with(" 0")
                }) {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{} never held a batch; logs:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Some((200, _)) = self.get("/ready").await {
                return;
            }
            if let Some(c) = &self.child {
                assert!(c.id() > 0);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} not ready; logs:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() || std::env::var("TEST_LOG").is_ok() {
            eprintln!("--- logs of {} ---\n{}", self.name, self.logs());
        }
    }
}

/// A minimal HTTP/1.1 GET (no client library needed for three endpoints).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
