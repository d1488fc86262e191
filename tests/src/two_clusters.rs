//! Two Postgres clusters for placement tests (SPEC §17): the main database (a fresh one on the
//! shared Postgres, holding `wa_system.tenants`), a private second cluster, and a private NATS.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use wa_shared::store::schema::migrate;
use wa_shared::store::SYSTEM_SCHEMA;

use crate::functions::Function;
use crate::servers::{OwnDatabase, PrivatePostgres};
use crate::stack::Stack;

/// The placement of the private cluster, as `TENANT_DATABASES` names it.
pub const SECOND: &str = "second";

/// The main database, a second cluster, a private NATS (see the module).
pub struct TwoClusters {
    pub s: Stack,
    pub second: PrivatePostgres,
    pub second_url: String,
    pub second_pool: PgPool,
    _main: OwnDatabase,
}

impl TwoClusters {
    /// `db_prefix` names the main database; `prefix` the stack's streams and consumers.
    pub async fn new(prefix: &str, db_prefix: &str) -> Self {
        let main = OwnDatabase::create(db_prefix).await;
        let main_pool = connect(&main.url).await;
        migrate(&main_pool, SYSTEM_SCHEMA)
            .await
            .expect("migrate wa_system on the main database");
        let (second, second_url) = PrivatePostgres::with_database("tenants").await;
        let second_pool = connect(&second_url).await;
        let mut s = Stack::new(prefix).await;
        s.database_url = main.url.clone();
        s.pool = main_pool;
        TwoClusters {
            s,
            second,
            second_url,
            second_pool,
            _main: main,
        }
    }

    /// `TENANT_DATABASES` of the functions.
    pub fn tenant_databases(&self) -> String {
        format!("{SECOND}={}", self.second_url)
    }

    /// Starts function `bin` with `TENANT_DATABASES` and `extra`.
    pub async fn start(&self, bin: &str, extra: &[(&'static str, &str)]) -> Function {
        let databases = self.tenant_databases();
        let mut env = vec![("TENANT_DATABASES", databases.as_str())];
        env.extend_from_slice(extra);
        self.s.start(bin, &env).await
    }
}

/// Events of `tenant` function `f` let wait so far (`*_event_processing_actions_total` with
/// `action="wait"`).
pub async fn waited(f: &Function, tenant: &str) -> f64 {
    let Some((_, body)) = f.get("/metrics").await else {
        return 0.0;
    };
    let company = format!("company_id=\"{tenant}\"");
    body.lines()
        .filter(|l| l.starts_with("message_event_service_event_processing_actions_total{"))
        .filter(|l| l.contains(&company) && l.contains("action=\"wait\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A small pool on `url`, connected now.
pub async fn connect(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}
