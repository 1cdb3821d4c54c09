//! jmdc-cloud: a QUIC worker that finishes split inference for many edge devices.
#![warn(missing_docs, unreachable_pub)]

pub mod batch;
pub mod config;
mod contexts;
pub mod engine;
mod exposition;
mod guard;
pub mod health;
mod health_server;
pub mod http;
pub mod identity;
pub mod pki;
pub mod preflight;
pub mod server;
pub mod service;
pub mod stats;
mod systemd;
pub mod tls;

use std::sync::Arc;

pub use config::CloudConfig;
pub use engine::TailEngine;
pub use health::HealthView;
pub use health_server::{HealthOptions, HealthServer};
pub use server::CloudServer;

/// Loads ONNX Runtime and the models, then binds the server described by `cfg`.
pub fn build_server(cfg: &CloudConfig) -> anyhow::Result<CloudServer> {
    jmdc_core::runtime::init_onnxruntime(cfg.runtime.onnxruntime.as_deref())?;
    let engine = TailEngine::load(&cfg.models_dir, &cfg.engine_options())?;
    Ok(CloudServer::bind(cfg, Arc::new(engine))?)
}
