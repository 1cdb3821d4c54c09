//! Who picks the plan for each frame: a fixed plan, or the adaptive loop (monitors + planner) that
//! re-plans on a timer and at once when a monitor reports a significant change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use jmdc_core::optimizer::{Conditions, Decision};
use tokio::sync::watch;
use tracing::info;

use crate::adaptive::{plan_spec, AdaptiveSection, Planner, Prediction};
use crate::client::CloudClient;
use crate::monitor::cpu::{CpuChange, CpuMonitor, CpuMonitorConfig};
use crate::monitor::network::{ChangeKind, NetworkChange, NetworkMonitor, NetworkMonitorConfig};
use crate::pipeline::{EdgePipeline, Frame, FrameObservation};
use crate::plan_spec::{CodecSpec, PlanSpec, SplitSpec};
use crate::stats::FrameRecord;

/// The plan source of a run.
#[derive(Debug)]
pub enum Planning {
    /// The same plan for every frame.
    Fixed {
        /// The pipeline of the plan's variant.
        pipeline: Box<EdgePipeline>,
        /// The plan.
        plan: PlanSpec,
    },
    /// The adaptive loop.
    Adaptive(Box<AdaptiveSession>),
}

impl Planning {
    /// The pipeline that runs the frames.
    pub fn pipeline_mut(&mut self) -> &mut EdgePipeline {
        match self {
            Planning::Fixed { pipeline, .. } => pipeline,
            Planning::Adaptive(s) => &mut s.pipeline,
        }
    }

    /// The plan for the next frame and the latency predicted for it.
    pub fn plan_for(&mut self, frame_id: u64) -> Result<(PlanSpec, Option<Prediction>)> {
        match self {
            Planning::Fixed { plan, .. } => Ok((plan.clone(), None)),
            Planning::Adaptive(s) => s.plan_for(frame_id),
        }
    }

    /// Learns from a finished frame (adaptive only).
    pub fn learn(&mut self, plan: &PlanSpec, record: &FrameRecord, observation: &FrameObservation) {
        if let Planning::Adaptive(s) = self {
            s.learn(plan, record, observation);
        }
    }

    /// The cloud client changed (connected, lost, reconnected).
    pub fn set_cloud(&mut self, cloud: Option<Arc<CloudClient>>) {
        if let Planning::Adaptive(s) = self {
            s.set_cloud(cloud);
        }
    }

    /// The plan in force.
    pub fn current_plan(&self) -> &PlanSpec {
        match self {
            Planning::Fixed { plan, .. } => plan,
            Planning::Adaptive(s) => s.plan(),
        }
    }

    /// Bandwidth (bit/s), RTT (s) and edge load factor as last measured (adaptive only).
    pub fn measurements(&mut self) -> Option<Conditions> {
        match self {
            Planning::Fixed { .. } => None,
            Planning::Adaptive(s) => Some(s.conditions()),
        }
    }

    /// Stops background tasks.
    pub fn stop(&mut self) {
        if let Planning::Adaptive(s) = self {
            s.stop();
        }
    }
}

/// Tiny exchanges that measure the connection's propagation round trip before the first decision
/// ([`NetworkMonitor::ping`]; the probe task goes on pinging now and then).
const PINGS: usize = 3;

/// Re-plan triggers that no monitor reported: their decisions are damped against flapping
/// ([`Planner::decide`]).
const TIMER: &str = "timer";
const EXPLORATION_DONE: &str = "exploration done";
const DISAGREEMENT: &str = "measured latency differs from prediction";

/// Whether a re-plan's trigger is a reported change (bandwidth, load, cloud, reload, start) rather
/// than the loop's own timer, an exploration's end or a disagreement with the prediction.
fn reported_by_a_monitor(trigger: &str) -> bool {
    ![TIMER, EXPLORATION_DONE, DISAGREEMENT].contains(&trigger)
}

/// The adaptive loop: monitors + planner + pipeline. Re-plans on a timer and at once when a
/// monitor reports a significant change; logs every plan change with its reason and prediction.
#[derive(Debug)]
pub struct AdaptiveSession {
    pipeline: EdgePipeline,
    planner: Planner,
    cloud: Option<Arc<CloudClient>>,
    net: Arc<NetworkMonitor>,
    net_changes: watch::Receiver<Option<NetworkChange>>,
    cpu: Option<CpuMonitor>,
    cpu_changes: Option<watch::Receiver<Option<CpuChange>>>,
    /// Stops the probe task of the current cloud client.
    probe_stop: Option<watch::Sender<bool>>,
    interval: Duration,
    last_replan: Instant,
    replan_now: Option<&'static str>,
    plan: PlanSpec,
    decision: Option<Decision>,
    /// Exploration settings: every this many frames (0 = never), for this many frames.
    explore_every: u64,
    explore_frames: u64,
    /// ... and at most once per this interval.
    explore_interval: Duration,
    /// Frames planned since the last exploration started, and when it started.
    since_explore: u64,
    last_explore: Instant,
    /// The plan being explored, its prediction and the frames left.
    exploring: Option<(PlanSpec, Prediction, u64)>,
    /// Measured ÷ predicted latency of the plan in force since the last decision.
    agreement: Agreement,
    /// Plan changes so far: (frame id, new plan, reason).
    pub changes: Vec<(u64, PlanSpec, String)>,
    /// Frames run to explore a plan.
    pub explored_frames: u64,
}

/// Whether the plan in force performs as predicted: the mean of measured ÷ predicted latency
/// over the frames since the last decision.
#[derive(Debug, Default, Clone, Copy)]
struct Agreement {
    frames: u64,
    ratio_sum: f64,
}

impl Agreement {
    /// Frames before a disagreement counts (4 re-planned on bursts of host noise).
    const MIN_FRAMES: u64 = 8;
    /// Measured ÷ predicted outside this range re-plans.
    const RANGE: (f64, f64) = (0.85, 1.18);

    fn add(&mut self, measured_s: f64, predicted_s: f64) {
        if predicted_s > 0.0 && measured_s.is_finite() {
            self.frames += 1;
            self.ratio_sum += measured_s / predicted_s;
        }
    }

    /// The mean ratio when it has enough frames and is out of range.
    fn disagrees(&self) -> Option<f64> {
        if self.frames < Self::MIN_FRAMES {
            return None;
        }
        let mean = self.ratio_sum / self.frames as f64;
        (mean < Self::RANGE.0 || mean > Self::RANGE.1).then_some(mean)
    }
}

impl AdaptiveSession {
    /// Profiles, starts the monitors (and the bandwidth probe task when a cloud is connected),
    /// measures the link once and makes the first plan.
    pub async fn start(
        mut pipeline: EdgePipeline,
        settings: &AdaptiveSection,
        cloud: Option<Arc<CloudClient>>,
        threads: Option<usize>,
    ) -> Result<Self> {
        let package = pipeline.package().clone();
        for variant in package.variant_names() {
            pipeline.prepare(variant)?;
        }
        let speed = pipeline.speed();
        let planner = tokio::task::block_in_place(|| {
            Planner::new(package.clone(), settings, threads, speed)
        })?;
        let net = Arc::new(NetworkMonitor::new(NetworkMonitorConfig {
            probe_bytes: settings.probe_bytes,
            min_probe_interval: Duration::from_millis(settings.probe_interval_ms),
            stale_after: Duration::from_millis(settings.probe_interval_ms),
            min_passive_bytes: 1024,
            ..NetworkMonitorConfig::default()
        }));
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
            cloud: None,
            net,
            net_changes,
            cpu,
            cpu_changes,
            probe_stop: None,
            interval: Duration::from_millis(settings.replan_interval_ms),
            last_replan: Instant::now(),
            replan_now: None,
            plan: PlanSpec {
                variant: String::new(),
                split: SplitSpec::EdgeOnly,
                keep_ratio: 1.0,
                codec: CodecSpec(jmdc_core::codec::QuantMode::F32),
                input: Default::default(),
            },
            decision: None,
            explore_every: settings.explore_every_frames,
            explore_frames: settings.explore_frames,
            explore_interval: Duration::from_millis(settings.explore_interval_ms),
            last_explore: Instant::now(),
            since_explore: 0,
            exploring: None,
            agreement: Agreement::default(),
            changes: Vec::new(),
            explored_frames: 0,
        };
        if let Some(client) = &cloud {
            if let Err(e) = session.net.ping(client, PINGS).await {
                tracing::warn!(error = %e, "first round-trip measurement failed");
            }
            if let Err(e) = session.net.probe(client).await {
                tracing::warn!(error = %e, "first bandwidth probe failed");
            }
        }
        session.set_cloud(cloud);
        session.replan(0, "start")?;
        session.replan_now = None;
        Ok(session)
    }

    /// Follows a new cloud client: the probe task moves to it and the next frame re-plans.
    pub fn set_cloud(&mut self, cloud: Option<Arc<CloudClient>>) {
        let same = match (&self.cloud, &cloud) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(stop) = self.probe_stop.take() {
            let _ = stop.send(true);
        }
        if let Some(client) = &cloud {
            let (stop_tx, stop_rx) = watch::channel(false);
            self.net.observe_connection(client.connection());
            tokio::spawn(
                self.net
                    .clone()
                    .run(client.clone(), Duration::from_millis(100), stop_rx),
            );
            self.probe_stop = Some(stop_tx);
        }
        self.cloud = cloud;
        self.replan_now = Some(if self.cloud.is_some() {
            "cloud connected"
        } else {
            "cloud lost"
        });
    }

    /// Applies changed settings (live reload): objective, hysteresis, re-plan interval.
    pub fn reconfigure(&mut self, settings: &AdaptiveSection) {
        self.planner.reconfigure(settings);
        self.interval = Duration::from_millis(settings.replan_interval_ms);
        self.explore_every = settings.explore_every_frames;
        self.explore_frames = settings.explore_frames;
        self.explore_interval = Duration::from_millis(settings.explore_interval_ms);
        self.replan_now = Some("configuration reloaded");
    }

    /// The conditions the optimizer sees now.
    pub fn conditions(&mut self) -> Conditions {
        // Under emulation the host's CPU load is not the emulated device's: the stretch counts
        // waiting for the host's CPU once (`crate::emulation`), and a one-thread inference on a
        // four-core Pi is not slowed by one busy process. What remains shows up in the learned
        // correction.
        if let Some(cpu) = self
            .cpu
            .as_ref()
            .filter(|_| !self.pipeline.speed().is_emulated())
        {
            self.planner.set_load_factor(cpu.load_factor());
        }
        let estimate = self.net.estimate();
        Conditions {
            bandwidth_bps: estimate.bandwidth_bps,
            // Propagation only: serialisation is the transfer term, and quinn's smoothed RTT
            // also holds the queueing our own requests and probes caused.
            rtt_s: estimate.base_rtt_s,
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

    /// The pipeline (for callers that run frames themselves).
    pub fn pipeline_mut(&mut self) -> &mut EdgePipeline {
        &mut self.pipeline
    }

    fn replan(&mut self, frame_id: u64, trigger: &str) -> Result<()> {
        let conditions = self.conditions();
        let started = Instant::now();
        let decision = self
            .planner
            .decide(&conditions, reported_by_a_monitor(trigger))?;
        self.last_replan = Instant::now();
        let decide_us = (self.last_replan - started).as_micros();
        let probing = self.planner.bandwidth_matters(&conditions);
        if probing != self.net.probing() {
            tracing::debug!(
                probing,
                rtt_ms = conditions.rtt_s * 1e3,
                "bandwidth probes {}",
                if probing {
                    "resumed"
                } else {
                    "paused: no bandwidth would make the cloud pay"
                }
            );
            self.net.set_probing(probing);
        }
        self.agreement = Agreement::default();
        let plan = plan_spec(&decision.plan);
        tracing::debug!(
            frame = frame_id,
            trigger,
            plan = %plan,
            bandwidth_mbit = conditions.bandwidth_bps / 1e6,
            rtt_ms = conditions.rtt_s * 1e3,
            load = conditions.edge_load_factor,
            decide_us,
            "re-planned"
        );
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
        if let Some(reason) = self.replan_now.take() {
            return Some(reason);
        }
        if self.net_changes.has_changed().unwrap_or(false) {
            // Steps of quinn's smoothed RTT are mostly our own queueing; the optimizer uses the
            // path's base RTT (`conditions`), which the timer's re-plans pick up.
            let bandwidth_step = self
                .net_changes
                .borrow_and_update()
                .is_some_and(|c| c.kind != ChangeKind::Rtt);
            if bandwidth_step {
                return Some("network change");
            }
        }
        if let Some(rx) = self.cpu_changes.as_mut() {
            if rx.has_changed().unwrap_or(false) {
                rx.mark_unchanged();
                return Some("cpu load change");
            }
        }
        (self.last_replan.elapsed() >= self.interval).then_some(TIMER)
    }

    /// Re-plans if due; the plan for frame `frame_id` and its prediction. Now and then the plan
    /// is one being explored (see [`Planner::exploration`]).
    pub fn plan_for(&mut self, frame_id: u64) -> Result<(PlanSpec, Option<Prediction>)> {
        if let Some((plan, prediction, left)) = self.exploring.take() {
            self.explored_frames += 1;
            if left > 1 {
                self.exploring = Some((plan.clone(), prediction, left - 1));
            } else {
                // What was learned goes into the next decision at once.
                self.replan_now = Some(EXPLORATION_DONE);
            }
            return Ok((plan, Some(prediction)));
        }
        if let Some(trigger) = self.replan_due() {
            self.replan(frame_id, trigger)?;
        }
        self.since_explore += 1;
        if self.explore_every > 0
            && self.since_explore >= self.explore_every
            && self.last_explore.elapsed() >= self.explore_interval
        {
            self.since_explore = 0;
            self.last_explore = Instant::now();
            let conditions = self.conditions();
            if let Some((plan, prediction)) = self.planner.exploration(&conditions) {
                let spec = plan_spec(&plan);
                tracing::debug!(frame = frame_id, plan = %spec, predicted_ms = prediction.latency_s * 1e3, "exploring");
                self.explored_frames += 1;
                if self.explore_frames > 1 {
                    self.exploring = Some((spec.clone(), prediction, self.explore_frames - 1));
                } else {
                    self.replan_now = Some(EXPLORATION_DONE);
                }
                return Ok((spec, Some(prediction)));
            }
        }
        let conditions = self.conditions();
        let prediction = self.planner.predict(&self.plan, &conditions);
        Ok((self.plan.clone(), prediction))
    }

    /// Learns from a finished frame: transfer sample for the bandwidth estimate, profiles, the
    /// plan's measured latency; re-plans soon when the plan in force keeps missing its prediction.
    pub fn learn(&mut self, plan: &PlanSpec, record: &FrameRecord, observation: &FrameObservation) {
        if let (Some(round_trip), Some(server)) = (observation.round_trip, observation.server_time)
        {
            self.net.record_transfer(record.bytes, round_trip, server);
        }
        let measured = (!record.fallback).then(|| Duration::from_micros(record.total_us));
        let conditions = self.conditions();
        let in_force = *plan == self.plan;
        // The first frame after a plan switch is cold: the planner does not learn from it, and
        // it does not count against the prediction either.
        let warm = self
            .planner
            .observe(plan, observation, measured, &conditions, in_force);
        if warm && in_force && !record.fallback {
            if let Some(predicted) = record.predicted_us {
                self.agreement
                    .add(record.total_us as f64 * 1e-6, predicted as f64 * 1e-6);
                if let Some(ratio) = self.agreement.disagrees() {
                    tracing::debug!(plan = %plan, ratio, "measured latency disagrees with the prediction");
                    self.agreement = Agreement::default();
                    self.replan_now.get_or_insert(DISAGREEMENT);
                }
            }
        }
    }

    /// Re-plans if due, processes the frame with the plan in force, learns from it.
    pub async fn process(&mut self, frame: &Frame) -> Result<FrameRecord> {
        let (plan, prediction) = self.plan_for(frame.id)?;
        let (mut record, observation) = self
            .pipeline
            .process(frame, &plan, self.cloud.as_deref())
            .await?;
        record.set_prediction(prediction.as_ref());
        self.learn(&plan, &record, &observation);
        Ok(record)
    }

    /// Stops the background tasks.
    pub fn stop(&mut self) {
        if let Some(stop) = self.probe_stop.take() {
            let _ = stop.send(true);
        }
        if let Some(cpu) = self.cpu.take() {
            cpu.stop();
        }
    }
}
