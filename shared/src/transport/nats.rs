//! Connecting to NATS with the configured credentials.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions};

use crate::settings::vars::NatsVars;
use crate::settings::Secret;

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URL(s), comma-separated; may carry credentials, so it is a secret.
    pub url: Secret,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub creds_file: Option<PathBuf>,
    /// The content of a .creds file (e.g. injected from a secret store).
    pub creds: Option<Secret>,
    /// The client's name, as the server shows it.
    pub name: String,
}

impl NatsSettings {
    pub fn new(vars: NatsVars, name: &str) -> Self {
        NatsSettings {
            url: vars.nats_url,
            user: vars.nats_user,
            password: vars.nats_password,
            token: vars.nats_token,
            creds_file: vars.nats_creds,
            creds: vars.nats_creds_content,
            name: name.to_owned(),
        }
    }

    /// Connects once; the client then reconnects by itself for as long as it lives.
    pub async fn connect(&self) -> Result<Client, async_nats::Error> {
        let mut opts = ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        if let Some(content) = &self.creds {
            opts = opts.credentials(content.expose())?;
        } else if let Some(path) = &self.creds_file {
            opts = opts.credentials_file(path).await?;
        } else if let Some(token) = &self.token {
            opts = opts.token(token.expose().to_owned());
        } else if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.user_and_password(u.clone(), p.expose().to_owned());
        }
        let servers: Vec<&str> = self.url.expose().split(',').map(str::trim).collect();
        Ok(opts.connect(servers).await?)
    }
}
