//! The AWS SDK configuration of the product: credentials and region from the usual sources,
//! over the same TLS stack as NATS and Postgres (hyper 1, rustls 0.23, ring) instead of the
//! SDK's default client, so a binary carries one TLS implementation.

use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// Loads the SDK configuration from the environment; `endpoint` overrides every service's URL
/// (a local emulator in tests).
pub async fn load_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::from_env().http_client(http);
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
