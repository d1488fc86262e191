//! Connecting to NATS with the configured credentials.

use std::time::Duration;

use async_nats::{Client, ConnectOptions};

use crate::config::{ConfigError, Env};

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub creds_file: Option<String>,
    /// The content of a .creds file (e.g. injected from a secret store).
    pub creds: Option<String>,
    pub name: String,
}

impl NatsSettings {
    pub fn from_env(env: &Env, name: &str) -> Result<Self, ConfigError> {
        let url = env
            .get("NATS_URL")
            .unwrap_or("nats://127.0.0.1:4222")
            .to_owned();
        if !url
            .split(',')
            .all(|u| u.contains("://") || !u.contains('/'))
        {
            return Err(ConfigError {
                var: "NATS_URL",
                value: url,
                reason: "expected nats://host:port (comma-separated for several servers)".into(),
            });
        }
        let user = env.get("NATS_USER").map(str::to_owned);
        let password = env.get("NATS_PASSWORD").map(str::to_owned);
        if user.is_some() != password.is_some() {
            return Err(ConfigError {
                var: if user.is_some() {
                    "NATS_PASSWORD"
                } else {
                    "NATS_USER"
                },
                value: String::new(),
                reason: "NATS_USER and NATS_PASSWORD go together".into(),
            });
        }
        let creds_file = env.get("NATS_CREDS").map(str::to_owned);
        if let Some(path) = &creds_file {
            if !std::path::Path::new(path).is_file() {
                return Err(ConfigError {
                    var: "NATS_CREDS",
                    value: path.clone(),
                    reason: "no such file".into(),
                });
            }
        }
        Ok(NatsSettings {
            url,
            user,
            password,
            token: env.get("NATS_TOKEN").map(str::to_owned),
            creds_file,
            creds: env.get("NATS_CREDS_CONTENT").map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// Connects once; the client then reconnects by itself for as long as it lives.
    pub async fn connect(&self) -> Result<Client, async_nats::Error> {
        let mut opts = ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        if let Some(content) = &self.creds {
            opts = opts.credentials(content)?;
        } else if let Some(path) = &self.creds_file {
            opts = opts.credentials_file(path).await?;
        } else if let Some(token) = &self.token {
            opts = opts.token(token.clone());
        } else if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        Ok(opts.connect(servers).await?)
    }
}
