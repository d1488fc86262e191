//! A private 3-node JetStream cluster (`wa`: servers `n1`, `n2`, `n3`), for the failover tests:
//! any node can be killed, terminated and restarted on the same ports and store, and the
//! leaders of a stream and of a consumer are found by asking JetStream.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{free_port, NatsServers, TempDir};
use crate::eventually;
use async_nats::jetstream::{self, stream, stream::ClusterInfo, Context};

const NODES: usize = NatsCluster::NODES;

/// How long a node may take to open its port, and the cluster to elect a meta leader.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// How long a leader election may take after its leader went away.
const LEADER_WITHIN: Duration = Duration::from_secs(60);

/// How long a terminated node may take to shut down (it steps down from its leaderships).
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// How long a restarted node may take to catch up with the leader of a stream or consumer.
const CURRENT_WITHIN: Duration = Duration::from_secs(120);

struct Node {
    name: String,
    port: u16,
    route_port: u16,
    child: Option<Child>,
}

/// Three `nats-server -js` processes routed to each other, each with its own client port,
/// route port, store directory and log (`<temp dir>/n<i>.log`); all killed on drop.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    dir: TempDir,
}

impl NatsCluster {
    pub const NODES: usize = 3;

    /// Starts the three nodes of `binary` (the current release, [`super::nats_server_current`],
    /// or the machine's 2.9, [`super::nats_server_binary`]) and waits until JetStream has a
    /// meta leader that every node reaches.
    pub async fn start(binary: impl Into<PathBuf>) -> Self {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 2 * NODES {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut cluster = NatsCluster {
            binary: binary.into(),
            nodes: (0..NODES)
                .map(|i| Node {
                    name: format!("n{}", i + 1),
                    port: ports[i],
                    route_port: ports[NODES + i],
                    child: None,
                })
                .collect(),
            dir: TempDir::new("wa-nats-cluster"),
        };
        for i in 0..NODES {
            cluster.spawn(i);
        }
        for i in 0..NODES {
            cluster.wait_for_port(i).await;
        }
        cluster.wait_ready().await;
        cluster
    }

    /// Every node's client URL, comma-separated, as the product's `NATS_URL` takes them.
    pub fn url(&self) -> String {
        (0..NODES)
            .map(|i| self.url_of(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn url_of(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The server name of node `i` (`n1`, `n2`, `n3`).
    pub fn name_of(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node of a server name, as JetStream reports it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The log of node `i`, across restarts.
    pub fn log_of(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.nodes[i].name))
    }

    /// SIGKILL: node `i` crashes with whatever it had not written or replicated.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for node `i` to shut down (a clean stop: it hands over its leaderships).
    pub async fn terminate(&mut self, i: usize) -> ExitStatus {
        let mut child = self.nodes[i].child.take().expect("node is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let exited = wa_testkit::poll(EXIT_WITHIN, || {
            let status = child.try_wait();
            async move { status }
        })
        .await;
        match exited {
            Ok(Some(status)) => status,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {EXIT_WITHIN:?} of SIGTERM ({other:?}); see {}",
                    self.nodes[i].name,
                    self.log_of(i).display()
                )
            }
        }
    }

    /// Starts node `i` again, on the same ports and store, and waits until the cluster is ready.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_for_port(i).await;
        self.wait_ready().await;
    }

    /// Waits until JetStream answers `$JS.API.INFO` without an error through every running
    /// node (a meta leader is elected and each node is routed to it; the raw request, as the
    /// client's typed account info does not decode 2.9's answer), and, when every node runs,
    /// until the meta leader places a stream on all of them (it refuses with "no suitable
    /// peers for placement" until it has heard from each).
    pub async fn wait_ready(&self) {
        for i in (0..NODES).filter(|i| self.is_running(*i)) {
            let url = self.url_of(i);
            let what = format!("JetStream through {} ({url})", self.nodes[i].name);
            eventually(READY_WITHIN, &what, || async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                let request = client.request("$JS.API.INFO", bytes::Bytes::new());
                let answer = tokio::time::timeout(Duration::from_secs(2), request)
                    .await
                    .ok()?
                    .ok()?;
                let info: serde_json::Value = serde_json::from_slice(&answer.payload).ok()?;
                (info.get("error").is_none() && info.get("type").is_some()).then_some(())
            })
            .await;
        }
        if (0..NODES).all(|i| self.is_running(i)) {
            self.wait_placement().await;
        }
    }

    /// Creates and deletes a probe stream with a replica on every node.
    async fn wait_placement(&self) {
        let client = async_nats::connect(self.url_of(0).as_str())
            .await
            .expect("connect to the cluster");
        let js = jetstream::new(client);
        let probe = stream::Config {
            name: "wa_cluster_probe".into(),
            subjects: vec!["wa.cluster.probe".into()],
            num_replicas: NODES,
            storage: stream::StorageType::Memory,
            ..Default::default()
        };
        eventually(READY_WITHIN, "a stream placed on every node", || async {
            js.get_or_create_stream(probe.clone()).await.ok().map(drop)
        })
        .await;
        eventually(READY_WITHIN, "the probe stream deleted", || async {
            js.delete_stream(&probe.name).await.ok().map(drop)
        })
        .await;
    }

    /// The node leading `stream`, once one that is running leads it.
    pub async fn stream_leader(&self, js: &Context, stream: &str) -> usize {
        let what = format!("a leader of stream {stream}");
        eventually(LEADER_WITHIN, &what, || async {
            let stream = js.get_stream(stream).await.ok()?;
            self.running_leader(stream.cached_info().cluster.as_ref())
        })
        .await
    }

    /// The node leading the durable consumer `durable` of `stream`, once one that is running
    /// leads it.
    pub async fn consumer_leader(&self, js: &Context, stream: &str, durable: &str) -> usize {
        let what = format!("a leader of consumer {durable} on {stream}");
        eventually(LEADER_WITHIN, &what, || async {
            let stream = js.get_stream(stream).await.ok()?;
            let info = stream.consumer_info(durable).await.ok()?;
            self.running_leader(info.cluster.as_ref())
        })
        .await
    }

    /// Waits until `stream` (and its consumer `durable`, if given) has a running leader and
    /// every other replica is current: after a restart, before the next fault.
    pub async fn wait_current(&self, js: &Context, stream: &str, durable: Option<&str>) {
        let what = format!("every replica of {stream} (and {durable:?}) to be current");
        eventually(CURRENT_WITHIN, &what, || async {
            let s = js.get_stream(stream).await.ok()?;
            self.all_current(s.cached_info().cluster.as_ref())?;
            if let Some(durable) = durable {
                let info = s.consumer_info(durable).await.ok()?;
                self.all_current(info.cluster.as_ref())?;
            }
            Some(())
        })
        .await;
    }

    fn running_leader(&self, cluster: Option<&ClusterInfo>) -> Option<usize> {
        let leader = self.index_of(cluster?.leader.as_deref()?)?;
        self.is_running(leader).then_some(leader)
    }

    fn all_current(&self, cluster: Option<&ClusterInfo>) -> Option<()> {
        self.running_leader(cluster)?;
        let replicas = &cluster?.replicas;
        (replicas.len() == NODES - 1 && replicas.iter().all(|p| p.current && !p.offline))
            .then_some(())
    }

    fn spawn(&mut self, i: usize) {
        assert!(
            !self.is_running(i),
            "{} is already running",
            self.name_of(i)
        );
        let routes: Vec<String> = (0..NODES)
            .filter(|j| *j != i)
            .map(|j| format!("nats://127.0.0.1:{}", self.nodes[j].route_port))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_of(i))
            .expect("log file");
        let node = &self.nodes[i];
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["--name", &node.name, "--cluster_name", "wa"])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{}", node.route_port))
            .arg("--routes")
            .arg(routes.join(","))
            .args(["-js", "-sd"])
            .arg(self.dir.path().join(&node.name).join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.nodes[i].child = Some(child);
    }

    async fn wait_for_port(&self, i: usize) {
        let port = self.nodes[i].port;
        let what = format!("{} to open port {port}", self.nodes[i].name);
        eventually(READY_WITHIN, &what, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
    }
}

impl NatsServers for NatsCluster {
    fn url(&self) -> String {
        NatsCluster::url(self)
    }

    fn replicas(&self) -> usize {
        NODES
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
        if std::thread::panicking() {
            for i in 0..NODES {
                let text = std::fs::read_to_string(self.log_of(i)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- last lines of {} ({}) ---\n{}",
                    self.nodes[i].name,
                    self.binary.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                );
            }
        }
    }
}
