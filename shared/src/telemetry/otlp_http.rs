//! The exporter's HTTP client: hyper 1 over rustls (ring, the system's roots), the stack NATS,
//! Postgres and the AWS SDK already use, so traces add no second HTTP or TLS implementation.
//!
//! The SDK's batch processor exports from a thread of its own, outside the runtime, so each
//! request is spawned onto the process's tokio runtime and awaited from there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use tokio::runtime::Handle;

/// The largest answer read from a receiver (it says how many spans it rejected, if any).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct HyperClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: Handle,
    timeout: Duration,
}

impl HyperClient {
    /// A client for `endpoint` (http or https) sending on `runtime`.
    pub fn new(runtime: Handle, endpoint: &str, timeout: Duration) -> Self {
        let tls = tls_config(endpoint.starts_with("https://"));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        HyperClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        }
    }
}

/// TLS through ring with the system's root certificates (none found: HTTPS exports fail, and
/// an `https://` endpoint is warned about).
fn tls_config(https: bool) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match builder.clone().with_native_roots() {
        Ok(roots) => roots,
        Err(e) => {
            if https {
                tracing::warn!(error = %e, "no system root certificates: exporting spans will fail");
            }
            builder.with_root_certificates(RootCertStore::empty())
        }
    };
    builder.with_no_client_auth()
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let sent = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await });
        match sent.await? {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}").into()),
        }
    }
}
