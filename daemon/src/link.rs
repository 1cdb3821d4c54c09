//! TEMPORARY shim of the cloud link API (connect once, no reconnect); replaced by the real module.
#![allow(missing_docs, clippy::unused_async)]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{client_config, ClientError, CloudClient};

#[derive(Debug, Clone, PartialEq)]
pub struct LinkSettings {
    pub endpoints: Vec<SocketAddr>,
    pub server_name: String,
    pub ca_cert: PathBuf,
    pub connect_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub failures_before_reconnect: u32,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LinkError(#[from] ClientError);

#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    pub connected: Option<SocketAddr>,
    pub connects: u64,
    pub reconnects: u64,
    pub failovers: u64,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub struct CloudLink {
    tx: watch::Sender<Option<Arc<CloudClient>>>,
    settings: LinkSettings,
}

impl CloudLink {
    pub fn start(settings: LinkSettings) -> Result<CloudLink, LinkError> {
        let config = client_config(&settings.ca_cert)?;
        let (tx, _) = watch::channel(None);
        let link = CloudLink {
            tx: tx.clone(),
            settings: settings.clone(),
        };
        tokio::spawn(async move {
            for addr in &settings.endpoints {
                if let Ok(c) = CloudClient::connect(
                    *addr,
                    &settings.server_name,
                    config.clone(),
                    settings.connect_timeout,
                )
                .await
                {
                    let _ = tx.send(Some(Arc::new(c)));
                    return;
                }
            }
        });
        Ok(link)
    }
    pub fn current(&self) -> Option<Arc<CloudClient>> {
        self.tx.borrow().clone()
    }
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CloudClient>>> {
        self.tx.subscribe()
    }
    pub async fn wait_connected(&self, timeout: Duration) -> Option<Arc<CloudClient>> {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        self.current()
    }
    pub fn report(&self, _client: &Arc<CloudClient>, _ok: bool) {}
    pub fn reconfigure(&self, settings: LinkSettings) -> Result<bool, LinkError> {
        Ok(settings != self.settings)
    }
    pub fn stats(&self) -> LinkStats {
        LinkStats::default()
    }
    pub async fn close(&self) {
        if let Some(c) = self.current() {
            c.close().await;
        }
    }
}
