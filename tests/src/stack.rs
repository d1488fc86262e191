//! One end-to-end test's world: a private NATS (one server, or a 3-node cluster), the test
//! database, a fresh tenant, and the function binaries started against them.

use std::time::Duration;

use async_nats::jetstream::{consumer, Context};
use serde_json::Value;
use sqlx::PgPool;
use wa_shared::model::{EventKind, Subject};

use crate::broker::{self, StoredDeadLetter};
use crate::functions::{self, Function, READY_WITHIN};
use crate::servers::{NatsServers, PrivateNats};
use crate::{database_url, eventually, fixture_lines, pool, schema_ident, unique_tenant};

pub struct Stack<N: NatsServers = PrivateNats> {
    pub nats: N,
    pub js: Context,
    pub pool: PgPool,
    pub tenant: String,
    pub database_url: String,
}

impl Stack {
    /// A stack on one private `nats-server`.
    pub async fn new(prefix: &str) -> Self {
        Stack::on(PrivateNats::start(), prefix).await
    }
}

impl<N: NatsServers> Stack<N> {
    /// A stack on these servers (e.g. a [`crate::servers::NatsCluster`]).
    pub async fn on(nats: N, prefix: &str) -> Self {
        let js = broker::jetstream(&nats.url()).await;
        Stack {
            js,
            nats,
            pool: pool().await,
            tenant: unique_tenant(prefix),
            database_url: database_url(),
        }
    }

    /// Creates the streams the way the functions do (with the servers' replicas), so events can
    /// be published first.
    pub async fn create_streams(&self) {
        let replicas = self.nats.replicas();
        for spec in
            wa_shared::transport::streams::stream_specs(replicas, Duration::from_secs(7 * 86400))
        {
            // A cluster that has just formed may not count every peer yet ("no suitable
            // peers for placement"): creating is tried again for up to 30 s.
            let start = std::time::Instant::now();
            while let Err(e) = wa_shared::transport::streams::ensure_stream(&self.js, &spec).await {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "create stream: {e:?}"
                );
                eprintln!("create stream {}: {e:?}; trying again", spec.name);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// The variables every function gets in this stack (`STREAM_REPLICAS` on a cluster).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("NATS_URL", self.nats.url()),
            ("DATABASE_URL", self.database_url.clone()),
            ("LOG_FORMAT", "json".into()),
        ];
        if self.nats.replicas() > 1 {
            env.push(("STREAM_REPLICAS", self.nats.replicas().to_string()));
        }
        env
    }

    /// Starts a function binary with the stack's variables plus `extra`, and waits until ready.
    pub async fn start(&self, bin: &str, extra: &[(&'static str, &str)]) -> Function {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k, v.to_string()));
        }
        let mut f = functions::start(bin, &env);
        f.wait_ready(READY_WITHIN).await.unwrap();
        f
    }

    pub fn subject(&self, kind: EventKind) -> String {
        Subject::format(kind, &self.tenant)
    }

    pub async fn publish(&self, kind: EventKind, body: Value) -> u64 {
        broker::publish(
            &self.js,
            &self.subject(kind),
            serde_json::to_vec(&body).expect("json"),
        )
        .await
    }

    pub async fn publish_raw(&self, subject: &str, body: impl Into<bytes::Bytes>) -> u64 {
        broker::publish(&self.js, subject, body).await
    }

    /// Publishes every producer fixture, in the producer's order.
    pub async fn publish_fixtures(&self) -> usize {
        self.publish_fixtures_where(|_| true).await
    }

    /// Publishes the producer fixtures of the kinds `keep` selects, in the producer's order.
    pub async fn publish_fixtures_where(&self, keep: impl Fn(EventKind) -> bool) -> usize {
        let mut n = 0;
        for kind in crate::expect::FIXTURE_ORDER
            .into_iter()
            .filter(|k| keep(*k))
        {
            for line in fixture_lines(kind, &self.tenant) {
                self.publish_raw(&self.subject(kind), line.into_bytes())
                    .await;
                n += 1;
            }
        }
        n
    }

    /// Dead letters stored for this tenant.
    pub async fn dead_letters(&self) -> Vec<StoredDeadLetter> {
        broker::dead_letters(&self.js, &Subject::dead_letter(&self.tenant)).await
    }

    /// Waits until the durable consumer `durable` of `stream` has nothing pending or unacknowledged.
    pub async fn wait_settled(&self, within: Duration, stream: &str, durable: &str) {
        let what = format!("{durable} on {stream} to settle");
        eventually(within, &what, || async {
            (broker::consumer_backlog(&self.js, stream, durable).await? == (0, 0)).then_some(())
        })
        .await;
    }

    /// The state of the durable consumer `durable` of `stream`, which must exist.
    pub async fn consumer_info(&self, stream: &str, durable: &str) -> consumer::Info {
        self.js
            .get_stream(stream)
            .await
            .expect("stream")
            .consumer_info(durable)
            .await
            .expect("consumer")
    }

    /// Waits until the count `sql` (see [`Stack::count`]) is `n`.
    pub async fn wait_count(&self, within: Duration, sql: &str, n: i64) {
        eventually(within, &format!("{sql} to be {n}"), || async {
            (self.count(sql).await == n).then_some(())
        })
        .await;
    }

    /// A count from the tenant's schema, or 0 while the schema does not exist.
    pub async fn count(&self, sql: &str) -> i64 {
        let mut conn = self.pool.acquire().await.expect("conn");
        if sqlx::query(&format!(
            "SET search_path TO {}",
            schema_ident(&self.tenant)
        ))
        .execute(&mut *conn)
        .await
        .is_err()
        {
            return 0;
        }
        let n: Option<i64> = sqlx::query_scalar(sql)
            .fetch_one(&mut *conn)
            .await
            .ok()
            .flatten();
        let _ = sqlx::query("RESET search_path").execute(&mut *conn).await;
        n.unwrap_or(0)
    }
}
