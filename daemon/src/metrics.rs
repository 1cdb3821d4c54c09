//! TEMPORARY shim of the metrics API; replaced by the real module.
#![allow(missing_docs, clippy::unused_async)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::stats::FrameRecord;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub tcp: Option<SocketAddr>,
}
impl MetricsSection {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    pub fn resolve_relative(&mut self, _base: &Path) {}
}
#[derive(Debug, Default)]
pub struct Metrics;
impl Metrics {
    pub fn new() -> Self {
        Self
    }
    pub fn record_frame(&self, _r: &FrameRecord) {}
    pub fn set_source(&self, _d: u64, _dr: u64, _e: u64, _r: u64) {}
    pub fn set_plan(&self, _plan: &str, _p: Option<f64>) {}
    pub fn set_network(&self, _b: f64, _r: f64) {}
    pub fn set_cpu_load(&self, _l: f64) {}
    pub fn set_in_flight(&self, _n: usize) {}
    pub fn set_cloud(&self, _e: Option<&str>, _r: u64) {}
    pub fn inc_reloads(&self) {}
    pub fn render(&self) -> String {
        String::new()
    }
}
#[derive(Debug, thiserror::Error)]
#[error("metrics")]
pub struct MetricsError;
#[derive(Debug)]
pub struct MetricsServer;
impl MetricsServer {
    pub async fn shutdown(self) {}
}
pub async fn serve(_m: Arc<Metrics>, _s: &MetricsSection) -> Result<MetricsServer, MetricsError> {
    Ok(MetricsServer)
}
