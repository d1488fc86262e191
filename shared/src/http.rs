//! The small HTTP surface of a running function: `/health`, `/ready`, `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::metrics::Exporter;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;

/// What `/ready` looks at.
pub struct Readiness {
    /// Postgres, for processes that write to it (not the bridge).
    pub pool: Option<PgPool>,
    pub nats: OnceLock<async_nats::Client>,
    pub bound: AtomicBool,
    pub metrics: Option<Exporter>,
    /// Conditions an operator must act on that do not make the process unready (a tenant
    /// schema waiting to be adopted, a stream that differs from its configured shape).
    pub notices: Notices,
}

/// Named conditions shown by `/ready` under its status line, one per line, until cleared.
/// Cheap to clone; every clone shares the same set.
#[derive(Clone, Default)]
pub struct Notices(Arc<Mutex<BTreeMap<String, String>>>);

impl Notices {
    /// Sets (or replaces) the notice named `key`.
    pub fn set(&self, key: impl Into<String>, text: impl Into<String>) {
        self.0
            .lock()
            .expect("notices")
            .insert(key.into(), text.into());
    }

    /// Removes the notice named `key`, if any.
    pub fn clear(&self, key: &str) {
        self.0.lock().expect("notices").remove(key);
    }

    /// The current notices' texts, ordered by name.
    pub fn texts(&self) -> Vec<String> {
        self.0.lock().expect("notices").values().cloned().collect()
    }
}

impl Readiness {
    pub fn new(pool: Option<PgPool>, metrics: Option<Exporter>) -> Arc<Self> {
        Arc::new(Readiness {
            pool,
            nats: OnceLock::new(),
            bound: AtomicBool::new(false),
            metrics,
            notices: Notices::default(),
        })
    }

    /// `Ok` when Postgres answers, NATS is connected and the consumers are bound.
    pub async fn check(&self) -> Result<(), String> {
        if !self.bound.load(Ordering::Relaxed) {
            return Err("consumers not bound yet".into());
        }
        match self.nats.get().map(|c| c.connection_state()) {
            Some(async_nats::connection::State::Connected) => {}
            other => return Err(format!("NATS not connected ({other:?})")),
        }
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(2), crate::store::ping(pool)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Postgres: {e}")),
            Err(_) => Err("Postgres: no answer within 2s".into()),
        }
    }
}

impl Readiness {
    /// Runs the readiness check every `every` and keeps the gauge
    /// [`crate::metrics::READY`]`{process}` at 1 (ready) or 0, so it is current whether or
    /// not anyone asks `/ready`. Runs until the process ends.
    pub fn spawn_ready_gauge(self: &Arc<Self>, process: &str, every: Duration) {
        let gauge = metrics::gauge!(crate::metrics::READY, "process" => process.to_owned());
        gauge.set(0.0);
        let state = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ready = state.check().await.is_ok();
                gauge.set(if ready { 1.0 } else { 0.0 });
            }
        });
    }
}

pub fn router(state: Arc<Readiness>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<Arc<Readiness>>) -> (StatusCode, String) {
    let (status, mut body) = match state.check().await {
        Ok(()) => (StatusCode::OK, String::from("ready")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    };
    for notice in state.notices.texts() {
        body.push('\n');
        body.push_str(&notice);
    }
    (status, body)
}

async fn metrics(State(state): State<Arc<Readiness>>) -> (StatusCode, String) {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not exported by Prometheus here".into(),
        ),
    }
}

/// Serves the router on `0.0.0.0:port` until the process ends.
pub async fn serve(port: u16, state: Arc<Readiness>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(())
}
