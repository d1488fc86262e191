//! The small HTTP surface of a running function: `/health`, `/ready`, `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

/// What `/ready` looks at.
pub struct Readiness {
    /// Postgres, for processes that write to it (not the bridge).
    pub pool: Option<PgPool>,
    pub nats: OnceLock<async_nats::Client>,
    pub bound: AtomicBool,
    pub metrics: Option<PrometheusHandle>,
}

impl Readiness {
    pub fn new(pool: Option<PgPool>, metrics: Option<PrometheusHandle>) -> Arc<Self> {
        Arc::new(Readiness {
            pool,
            nats: OnceLock::new(),
            bound: AtomicBool::new(false),
            metrics,
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

pub fn router(state: Arc<Readiness>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<Arc<Readiness>>) -> (StatusCode, String) {
    match state.check().await {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
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
