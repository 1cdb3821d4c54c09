//! `jmdc-edge run`: frames from the configured source through one or more plans, with a summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jmdc_core::cifar::CifarFile;
use jmdc_core::package::ModelPackage;

use crate::client::{client_config, CloudClient};
use crate::config::{EdgeConfig, SourceKind};
use crate::pipeline::{EdgePipeline, Frame};
use crate::plan_spec::PlanSpec;
use crate::stats::{FrameRecord, Summary};

/// Options of one `run` invocation beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plans to run one after another instead of the configured one (`key=value,…` overrides).
    pub plan_overrides: Vec<String>,
    /// Override of `source.limit`.
    pub limit: Option<usize>,
    /// Suppress per-frame lines.
    pub quiet: bool,
}

/// Runs every requested plan over the source and returns one summary per plan.
pub async fn run(cfg: &EdgeConfig, opts: &RunOptions) -> Result<Vec<Summary>> {
    jmdc_core::runtime::init_onnxruntime(cfg.runtime.onnxruntime.as_deref())?;
    let package_dir = cfg.model.packages_dir.join(&cfg.model.name);
    let package = Arc::new(
        ModelPackage::load(&package_dir)
            .with_context(|| format!("loading model package {}", package_dir.display()))?,
    );
    let frames = read_frames(cfg, opts.limit.or(cfg.source.limit))?;
    let plans: Vec<PlanSpec> = if opts.plan_overrides.is_empty() {
        vec![cfg.plan.clone()]
    } else {
        opts.plan_overrides
            .iter()
            .map(|o| PlanSpec::parse_override(o, &cfg.plan))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?
    };

    let mut cloud: Option<CloudClient> = None;
    let mut summaries = Vec::with_capacity(plans.len());
    for plan in plans {
        let timeout = Duration::from_millis(cfg.cloud.as_ref().map_or(2000, |c| c.timeout_ms));
        let threads = cfg.runtime.intra_op_threads;
        let mut pipeline = EdgePipeline::new(
            package.clone(),
            plan.clone(),
            cfg.device_id.clone(),
            timeout,
            threads,
        )?;
        if pipeline.needs_cloud() && cloud.is_none() {
            cloud = connect(cfg).await;
        }
        let started = Instant::now();
        let mut records: Vec<FrameRecord> = Vec::with_capacity(frames.len());
        for frame in &frames {
            let record = pipeline.process(frame, cloud.as_ref()).await?;
            if !opts.quiet {
                println!("{}", frame_line(&package, &record));
            }
            records.push(record);
        }
        let summary = Summary::from_records(plan.to_string(), &records, started.elapsed());
        println!("{summary}\n");
        summaries.push(summary);
    }
    if let Some(client) = cloud {
        client.close().await;
    }
    Ok(summaries)
}

async fn connect(cfg: &EdgeConfig) -> Option<CloudClient> {
    let Some(section) = cfg.cloud.as_ref() else {
        tracing::warn!(
            "plan needs the cloud but no [cloud] section is configured; frames finish on the edge"
        );
        return None;
    };
    let attempt = async {
        let config = client_config(&section.ca_cert)?;
        CloudClient::connect(
            section.endpoint,
            &section.server_name,
            config,
            Duration::from_millis(section.timeout_ms),
        )
        .await
    };
    match attempt.await {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(error = %e, "cloud unreachable; frames finish on the edge");
            None
        }
    }
}

fn read_frames(cfg: &EdgeConfig, limit: Option<usize>) -> Result<Vec<Frame>> {
    match cfg.source.kind {
        SourceKind::Cifar => {
            let file = CifarFile::open(&cfg.source.path)?;
            Ok(file
                .iter()
                .take(limit.unwrap_or(usize::MAX))
                .enumerate()
                .map(|(i, (label, pixels))| Frame {
                    id: i as u64,
                    label: Some(label),
                    pixels: pixels.to_vec(),
                })
                .collect())
        }
    }
}

fn frame_line(package: &ModelPackage, r: &FrameRecord) -> String {
    let class = |i: usize| package.classes().get(i).map_or("?", String::as_str);
    let label = r.label.map_or("-", |l| class(usize::from(l)));
    format!(
        "frame {:>5} label={:<10} pred={:<10} score={:>7.3} edge={:.3}ms enc={:.3}ms net={:.3}ms cloud={:.3}ms total={:.3}ms bytes={}{}",
        r.frame_id,
        label,
        class(r.predicted),
        r.score,
        r.edge_us as f64 / 1e3,
        r.encode_us as f64 / 1e3,
        r.network_us as f64 / 1e3,
        r.cloud_us as f64 / 1e3,
        r.total_us as f64 / 1e3,
        r.bytes,
        if r.fallback { " fallback=edge" } else { "" }
    )
}
