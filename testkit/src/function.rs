//! A function binary as a child process: started with a clean environment on a free HTTP port,
//! its output in a log file, ready when `/ready` says so, stopped by SIGTERM or SIGKILL (also
//! on drop, so that a failing test or benchmark leaves nothing running), and restarted on the
//! same port with the same variables.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{free_port, http_get, poll, Error, Result, TempDir};

/// Where cargo put the workspace's binaries, seen from the running executable: its own folder
/// (a binary such as `wa-bench-e2e`), or the one above `deps/` (a test executable).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(format!("locating this executable: {e}")))?;
    let dir = exe
        .parent()
        .ok_or_else(|| Error::new("this executable has no folder"))?;
    let dir = match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    Ok(dir.to_owned())
}

/// How to start a function; [`Launch::start`] starts it.
#[derive(Debug, Clone)]
pub struct Launch {
    bin: PathBuf,
    env: Vec<(String, String)>,
    log_level: String,
    log_dir: Option<PathBuf>,
    grace_on_drop: Option<Duration>,
    echo_logs: bool,
}

impl Launch {
    /// The binary at `bin`, at LOG_LEVEL `info`, logging into a temporary folder, killed
    /// (SIGKILL) on drop.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Launch {
            bin: bin.into(),
            env: Vec::new(),
            log_level: "info".into(),
            log_dir: None,
            grace_on_drop: None,
            echo_logs: false,
        }
    }

    /// Variables on top of PATH, LOG_LEVEL and HTTP_PORT (a later one wins over an earlier one).
    pub fn env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Keeps the log in `dir` as `<name>.log` (instead of a temporary folder).
    pub fn log_dir(mut self, dir: &Path) -> Self {
        self.log_dir = Some(dir.to_owned());
        self
    }

    /// On drop, SIGTERM and up to `grace` to exit before SIGKILL (instead of SIGKILL at once).
    pub fn terminate_on_drop(mut self, grace: Duration) -> Self {
        self.grace_on_drop = Some(grace);
        self
    }

    /// Prints the logs to stderr on drop (they are printed anyway when the thread panics).
    pub fn echo_logs(mut self, echo: bool) -> Self {
        self.echo_logs = echo;
        self
    }

    /// Starts the function (it is not ready yet: see [`Function::wait_ready`]).
    pub fn start(self) -> Result<Function> {
        if !self.bin.is_file() {
            return Err(Error::new(format!(
                "{} not found: build the workspace's binaries (cargo build --workspace --bins)",
                self.bin.display()
            )));
        }
        let name = self
            .bin
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let temp = self
            .log_dir
            .is_none()
            .then(|| TempDir::new(&format!("wa-fn-logs-{name}")));
        let dir = temp.as_ref().map_or_else(
            || self.log_dir.clone().unwrap_or_default(),
            |t| t.path().to_owned(),
        );
        let mut function = Function {
            log: dir.join(format!("{name}.log")),
            name,
            http_port: free_port().map_err(|e| Error::new(format!("finding a free port: {e}")))?,
            launch: self,
            child: None,
            starts: 0,
            _temp: temp,
        };
        function.restart()?;
        Ok(function)
    }
}

/// A running function; stopped when dropped (see [`Launch`]).
pub struct Function {
    pub name: String,
    pub http_port: u16,
    /// The log file, across restarts.
    pub log: PathBuf,
    launch: Launch,
    child: Option<Child>,
    starts: u32,
    _temp: Option<TempDir>,
}

impl Function {
    /// Starts the process (again, after [`Function::kill9`] or [`Function::terminate`]), on the
    /// same port with the same variables, appending to the same log.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::new(format!("{} is already running", self.name)));
        }
        let log = if self.starts == 0 {
            File::create(&self.log)
        } else {
            OpenOptions::new().append(true).open(&self.log)
        }
        .and_then(|out| Ok((out.try_clone()?, out)))
        .map_err(|e| Error::new(format!("log file {}: {e}", self.log.display())))?;
        self.starts += 1;
        let child = Command::new(&self.launch.bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_LEVEL", &self.launch.log_level)
            .env("HTTP_PORT", self.http_port.to_string())
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .spawn()
            .map_err(|e| Error::new(format!("starting {}: {e}", self.launch.bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: a crash, with whatever was in flight.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for the exit (then SIGKILL, and an error).
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Error::new(format!("{} is not running", self.name)))?;
        sigterm(&child);
        let exited = poll(within, || {
            let status = child.try_wait();
            async move { status }
        })
        .await;
        match exited {
            Ok(Some(status)) => Ok(status),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(self.failure(&format!("did not exit within {within:?} of SIGTERM")))
            }
            Err(e) => Err(self.failure(&format!("could not be waited for: {e}"))),
        }
    }

    /// [`Function::terminate`], which must end in a successful exit; nothing to do when it
    /// is not running.
    pub async fn stop(&mut self, within: Duration) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        let status = self.terminate(within).await?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(&format!("exited with {status} on SIGTERM")))
        }
    }

    /// An error if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        exited(&mut self.child).map_err(|what| self.failure(&what))
    }

    /// Waits until `/ready` answers 200; fails if the process exits or `within` passes.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let port = self.http_port;
        let child = &mut self.child;
        let ready = poll(within, || {
            let running = exited(child);
            async move {
                running?;
                let ready = matches!(http_get(port, "/ready").await, Some((200, _)));
                Ok::<_, String>(ready.then_some(()))
            }
        })
        .await;
        match ready {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(self.failure(&format!("not ready within {within:?}"))),
            Err(what) => Err(self.failure(&what)),
        }
    }

    /// Waits until the metrics show a batch held (database unavailable, or a failed or
    /// timed-out Lambda invocation).
    pub async fn wait_until_holding(&self, within: Duration) -> Result<()> {
        let this = self;
        let held = poll(within, move || async move {
            let (_, body) = match this.get("/metrics").await {
                Some(answer) => answer,
                None => return Ok::<_, Error>(None),
            };
            Ok(body
                .lines()
                .any(|l| {
                    l.starts_with("message_event_service_batches_held_total") && !l.ends_with(" 0")
                })
                .then_some(()))
        })
        .await?;
        held.ok_or_else(|| self.failure(&format!("never held a batch within {within:?}")))
    }

    /// GET on the function's HTTP port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http_port, path).await
    }

    /// Everything the process wrote so far, across restarts.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident set size (VmHWM) so far, in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::new(format!("{} is not running", self.name)))?;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path)
            .map_err(|e| Error::new(format!("reading {path} (Linux only): {e}")))?;
        vm_hwm(&status).ok_or_else(|| Error::new(format!("no VmHWM in {path}")))
    }

    fn failure(&self, what: &str) -> Error {
        let text = self.logs();
        let lines: Vec<&str> = text.lines().collect();
        Error::new(format!(
            "{} {what}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ))
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        if let (Some(grace), Some(child)) = (self.launch.grace_on_drop, &self.child) {
            sigterm(child);
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                    self.child = None;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill9();
        if std::thread::panicking() || self.launch.echo_logs {
            eprintln!("--- logs of {} ---\n{}", self.name, self.logs());
        }
    }
}

/// Why the process is not running, if it is not.
fn exited(child: &mut Option<Child>) -> Result<(), String> {
    match child.as_mut().map(Child::try_wait) {
        None => Err("is not running".into()),
        Some(Ok(None)) => Ok(()),
        Some(Ok(Some(status))) => Err(format!("exited ({status})")),
        Some(Err(e)) => Err(format!("could not be waited for: {e}")),
    }
}

/// SIGTERM through kill(1): the workspace forbids the unsafe code a libc call would need.
fn sigterm(child: &Child) {
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

    #[test]
    fn binaries_are_found_above_the_deps_folder_of_a_test() {
        let dir = bin_dir().unwrap();
        assert_ne!(dir.file_name().unwrap(), "deps");
        assert!(std::env::current_exe().unwrap().starts_with(&dir));
    }
}
