//! `jmdc-edge run`: frames from the configured source through a fixed plan (or several, side by
//! side), or through the adaptive loop that re-plans from live measurements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jmdc_core::cifar::CifarFile;
use jmdc_core::optimizer::{Conditions, Decision};
use jmdc_core::package::ModelPackage;
use tokio::sync::watch;
use tracing::info;

use crate::adaptive::{plan_spec, AdaptiveConfig, Planner};
use crate::client::{client_config, CloudClient};
use crate::config::{EdgeConfig, SourceKind};
use crate::monitor::cpu::{CpuMonitor, CpuMonitorConfig};
use crate::monitor::network::{NetworkMonitor, NetworkMonitorConfig};
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

/// Runs the configured plan(s) — or the adaptive loop — over the source; one summary per plan.
pub async fn run(cfg: &EdgeConfig, opts: &RunOptions) -> Result<Vec<Summary>> {
    jmdc_core::runtime::init_onnxruntime(cfg.runtime.onnxruntime.as_deref())?;
    let package_dir = cfg.model.packages_dir.join(&cfg.model.name);
    let package = Arc::new(
        ModelPackage::load(&package_dir)
            .with_context(|| format!("loading model package {}", package_dir.display()))?,
    );
    let frames = read_frames(cfg, opts.limit.or(cfg.source.limit))?;
    let quiet = opts.quiet || !cfg.output.per_frame;
    let timeout = Duration::from_millis(cfg.cloud.as_ref().map_or(2000, |c| c.timeout_ms));
    let mut pipeline = EdgePipeline::new(
        package.clone(),
        cfg.device_id.clone(),
        timeout,
        cfg.runtime.intra_op_threads,
    )
    .with_slowdown(cfg.adaptive.edge_slowdown);

    if cfg.adaptive.enabled && opts.plan_overrides.is_empty() {
        let cloud = connect(cfg).await.map(Arc::new);
        let mut session = AdaptiveSession::start(
            pipeline,
            &cfg.adaptive,
            cloud.clone(),
            cfg.runtime.intra_op_threads,
        )
        .await?;
        let started = Instant::now();
        let mut records = Vec::with_capacity(frames.len());
        for frame in &frames {
            let record = session.process(frame).await?;
            if !quiet {
                println!("{}", frame_line(&package, &record));
            }
            records.push(record);
        }
        session.stop();
        let summary = Summary::from_records("adaptive".into(), &records, started.elapsed());
        println!("{summary}\n");
        if let Some(client) = cloud {
            client.close().await;
        }
        return Ok(vec![summary]);
    }

    let plans: Vec<PlanSpec> = if opts.plan_overrides.is_empty() {
        vec![cfg.plan.clone()]
    } else {
        opts.plan_overrides
            .iter()
            .map(|o| PlanSpec::parse_override(o, &cfg.plan))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?
    };
    let layers = package.num_layers();
    let mut cloud: Option<CloudClient> = None;
    let mut summaries = Vec::with_capacity(plans.len());
    for plan in plans {
        let edge_layers = plan.edge_layers(layers).map_err(anyhow::Error::msg)?;
        pipeline.prepare(&plan.variant)?;
        if edge_layers < layers && cloud.is_none() {
            cloud = connect(cfg).await;
        }
        let started = Instant::now();
        let mut records: Vec<FrameRecord> = Vec::with_capacity(frames.len());
        for frame in &frames {
            let (record, _) = pipeline.process(frame, &plan, cloud.as_ref()).await?;
            if !quiet {
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

/// The adaptive loop: monitors + planner + pipeline. Re-plans on a timer and at once when a
/// monitor reports a significant change; logs every plan change with its reason and prediction.
#[derive(Debug)]
pub struct AdaptiveSession {
    pipeline: EdgePipeline,
    planner: Planner,
    cloud: Option<Arc<CloudClient>>,
    net: Arc<NetworkMonitor>,
    net_changes: watch::Receiver<Option<crate::monitor::network::NetworkChange>>,
    cpu: Option<CpuMonitor>,
    cpu_changes: Option<watch::Receiver<Option<crate::monitor::cpu::CpuChange>>>,
    stop_tx: watch::Sender<bool>,
    interval: Duration,
    last_replan: Instant,
    plan: PlanSpec,
    decision: Option<Decision>,
    /// Plan changes so far: (frame id, new plan, reason).
    pub changes: Vec<(u64, PlanSpec, String)>,
}

impl AdaptiveSession {
    /// Profiles, starts the monitors (and the bandwidth probe task when a cloud is connected),
    /// measures the link once and makes the first plan.
    pub async fn start(
        mut pipeline: EdgePipeline,
        settings: &AdaptiveConfig,
        cloud: Option<Arc<CloudClient>>,
        threads: Option<usize>,
    ) -> Result<Self> {
        let package = pipeline.package().clone();
        for variant in package.variant_names() {
            pipeline.prepare(variant)?;
        }
        let planner =
            tokio::task::block_in_place(|| Planner::new(package.clone(), settings, threads))?;
        let net = Arc::new(NetworkMonitor::new(NetworkMonitorConfig {
            probe_bytes: settings.probe_bytes,
            min_probe_interval: Duration::from_millis(settings.probe_interval_ms),
            stale_after: Duration::from_millis(settings.probe_interval_ms),
            min_passive_bytes: 1024,
            ..NetworkMonitorConfig::default()
        }));
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(client) = &cloud {
            net.observe_connection(client.connection());
            if let Err(e) = net.probe(client).await {
                tracing::warn!(error = %e, "first bandwidth probe failed");
            }
            tokio::spawn(
                net.clone()
                    .run(client.clone(), Duration::from_millis(100), stop_rx),
            );
        }
        let cpu = match CpuMonitor::start(CpuMonitorConfig::default()) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "CPU monitor unavailable; assuming an idle device");
                None
            }
        };
        let cpu_changes = cpu.as_ref().map(CpuMonitor::changes);
        let net_changes = net.changes();
        let mut session = Self {
            pipeline,
            planner,
            cloud,
            net,
            net_changes,
            cpu,
            cpu_changes,
            stop_tx,
            interval: Duration::from_millis(settings.replan_interval_ms),
            last_replan: Instant::now(),
            plan: PlanSpec {
                variant: String::new(),
                split: crate::plan_spec::SplitSpec::EdgeOnly,
                keep_ratio: 1.0,
                codec: crate::plan_spec::CodecSpec(jmdc_core::codec::QuantMode::F32),
            },
            decision: None,
            changes: Vec::new(),
        };
        session.replan(0, "start")?;
        Ok(session)
    }

    /// The conditions the optimizer sees now.
    pub fn conditions(&mut self) -> Conditions {
        if let Some(cpu) = &self.cpu {
            self.planner.set_load_factor(cpu.load_factor());
        }
        let estimate = self.net.estimate();
        Conditions {
            bandwidth_bps: estimate.bandwidth_bps,
            rtt_s: estimate.rtt_s,
            edge_load_factor: self.planner.effective_load_factor(),
            cloud_available: self.cloud.is_some(),
        }
    }

    /// The plan in force.
    pub fn plan(&self) -> &PlanSpec {
        &self.plan
    }

    /// The last decision.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    fn replan(&mut self, frame_id: u64, trigger: &str) -> Result<()> {
        let conditions = self.conditions();
        let decision = self.planner.decide(&conditions)?;
        self.last_replan = Instant::now();
        let plan = plan_spec(&decision.plan);
        if plan != self.plan {
            info!(
                frame = frame_id,
                trigger,
                plan = %plan,
                predicted_ms = decision.predicted_latency_s * 1e3,
                predicted_top1 = f64::from(decision.predicted_accuracy) * 100.0,
                bandwidth_mbit = conditions.bandwidth_bps / 1e6,
                rtt_ms = conditions.rtt_s * 1e3,
                load = conditions.edge_load_factor,
                feasible = decision.feasible,
                reason = %decision.reason,
                "plan change"
            );
            self.changes
                .push((frame_id, plan.clone(), decision.reason.clone()));
            self.plan = plan;
        }
        self.decision = Some(decision);
        Ok(())
    }

    fn replan_due(&mut self) -> Option<&'static str> {
        if self.net_changes.has_changed().unwrap_or(false) {
            self.net_changes.mark_unchanged();
            return Some("network change");
        }
        if let Some(rx) = self.cpu_changes.as_mut() {
            if rx.has_changed().unwrap_or(false) {
                rx.mark_unchanged();
                return Some("cpu load change");
            }
        }
        (self.last_replan.elapsed() >= self.interval).then_some("timer")
    }

    /// Re-plans if due, processes the frame with the plan in force, learns from it.
    pub async fn process(&mut self, frame: &Frame) -> Result<FrameRecord> {
        if let Some(trigger) = self.replan_due() {
            self.replan(frame.id, trigger)?;
        }
        let (mut record, observation) = self
            .pipeline
            .process(frame, &self.plan, self.cloud.as_deref())
            .await?;
        if let (Some(round_trip), Some(server)) = (observation.round_trip, observation.server_time)
        {
            self.net.record_transfer(record.bytes, round_trip, server);
        }
        self.planner.observe(&self.plan, &observation);
        record.predicted_us = self
            .decision
            .as_ref()
            .map(|d| (d.predicted_latency_s * 1e6) as u64);
        Ok(record)
    }

    /// Stops the background tasks.
    pub fn stop(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(cpu) = self.cpu.take() {
            cpu.stop();
        }
    }
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
                .map(|(i, (label, pixels))| Frame::new(i as u64, Some(label), pixels.to_vec()))
                .collect())
        }
    }
}

fn frame_line(package: &ModelPackage, r: &FrameRecord) -> String {
    let class = |i: usize| package.classes().get(i).map_or("?", String::as_str);
    let label = r.label.map_or("-", |l| class(usize::from(l)));
    format!(
        "frame {:>5} label={:<10} pred={:<10} score={:>7.3} edge={:.3}ms enc={:.3}ms net={:.3}ms cloud={:.3}ms total={:.3}ms{} bytes={} plan=[{}]{}",
        r.frame_id,
        label,
        class(r.predicted),
        r.score,
        r.edge_us as f64 / 1e3,
        r.encode_us as f64 / 1e3,
        r.network_us as f64 / 1e3,
        r.cloud_us as f64 / 1e3,
        r.total_us as f64 / 1e3,
        r.predicted_us
            .map(|p| format!(" predicted={:.3}ms", p as f64 / 1e3))
            .unwrap_or_default(),
        r.bytes,
        r.plan,
        if r.fallback { " fallback=edge" } else { "" }
    )
}
