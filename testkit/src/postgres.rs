//! A private Postgres cluster: `initdb` into a temporary folder, served by `pg_ctl` on a free
//! port, stopped and started again on the same port and data, stopped on drop. Run as the
//! `postgres` user when this process is root (the server refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Error, Result, TempDir};

/// How long a started server may take to accept connections.
const PORT_WITHIN: Duration = Duration::from_secs(30);

/// A private cluster, trust authentication for user `postgres`.
pub struct PrivatePostgres {
    pub port: u16,
    dir: TempDir,
    /// `-c name=value` of every start, after the port and addresses.
    settings: Vec<(String, String)>,
    running: bool,
}

impl PrivatePostgres {
    /// Creates a cluster and starts it with these server settings (e.g. `("fsync", "off")`).
    pub fn start(settings: &[(&str, &str)]) -> Result<Self> {
        let dir = TempDir::new("wa-pg");
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data = dir.path().join("data");
        let initdb = pg_bin("initdb");
        let status = as_postgres(&initdb)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| {
                Error::new(format!(
                    "cannot run {initdb}: {e}; a private Postgres cluster needs the PostgreSQL \
                     server (Debian: `apt-get install postgresql`)"
                ))
            })?;
        if !status.success() {
            return Err(Error::new(format!("{initdb} failed ({status})")));
        }
        let mut pg = PrivatePostgres {
            port: free_port().map_err(|e| Error::new(format!("finding a free port: {e}")))?,
            dir,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            running: false,
        };
        pg.restart()?;
        Ok(pg)
    }

    /// The URL of database `postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `database` on this cluster.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("pg.log")
    }

    /// Starts the server (again), on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        for (name, value) in &self.settings {
            opts.push_str(&format!(" -c {name}={value}"));
        }
        let status = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.log())
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| Error::new(format!("running pg_ctl start: {e}")))?;
        if !status.success() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            return Err(Error::new(format!(
                "pg_ctl start failed ({status}):\n{log}"
            )));
        }
        self.running = true;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if start.elapsed() > PORT_WITHIN {
                return Err(Error::new(format!(
                    "postgres did not open port {} within {PORT_WITHIN:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server immediately (connections are cut, like a crash of the database).
    pub fn stop(&mut self) {
        if self.running {
            let _ = as_postgres(&pg_bin("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .status();
            self.running = false;
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server binary: Debian keeps them out of PATH, under the version's directory.
fn pg_bin(name: &str) -> String {
    for dir in ["/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    name.to_owned()
}

fn as_postgres(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}
