//! The adaptive JMDC loop's brain on the edge: profiles, the calibrated accuracy table and live
//! measurements go into the pure optimizer (`jmdc_core::optimizer`), which picks variant, split,
//! region keep ratio and bits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jmdc_core::calibration::CalibrationTable;
use jmdc_core::codec::QuantMode;
use jmdc_core::optimizer::{
    Conditions, Decision, InputCodec, Objective, Optimizer, OptimizerConfig, Plan,
};
use jmdc_core::package::ModelPackage;
use jmdc_core::profiling::{
    build_optimizer_profile, measure_codec_costs, measure_edge_profile, measure_input_codec_costs,
    split_shapes, CloudProfileEstimator, CodecCosts, OnlineProfile, OnlineProfileConfig,
};
use jmdc_core::runner::RunnerOptions;
use serde::Deserialize;

use crate::pipeline::FrameObservation;
use crate::plan_spec::{CodecSpec, InputSpec, PlanSpec, SplitSpec};

/// What the optimizer optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectiveKind {
    /// Lowest predicted latency with accuracy ≥ `accuracy_floor`.
    MinLatency,
    /// Highest accuracy with predicted latency ≤ `latency_budget_ms`.
    MaxAccuracy,
    /// Highest pipelined frame rate with accuracy ≥ `accuracy_floor`.
    MaxThroughput,
}

/// `[adaptive]` in the edge configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Off: the fixed `[plan]` is used for every frame.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_objective")]
    pub objective: ObjectiveKind,
    /// Top-1 floor in percent (min-latency, max-throughput).
    #[serde(default = "default_floor")]
    pub accuracy_floor_pct: f64,
    /// Latency budget in milliseconds (max-accuracy).
    #[serde(default = "default_budget")]
    pub latency_budget_ms: f64,
    /// Re-plan at least this often; a detected change of bandwidth, RTT or load re-plans at once.
    #[serde(default = "default_interval")]
    pub replan_interval_ms: u64,
    /// Keep the current plan unless the best is better by this fraction.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// Accuracy table; default `<package>/calibration.json`.
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    /// Timed runs per variant for the start-up edge profile.
    #[serde(default = "default_profile_runs")]
    pub profile_runs: usize,
    /// Emulate a slower edge device: edge compute is stretched to this multiple of its real time.
    #[serde(default = "default_slowdown")]
    pub edge_slowdown: f64,
    /// Bytes of one active bandwidth probe.
    #[serde(default = "default_probe_bytes")]
    pub probe_bytes: u32,
    /// At most one probe per this interval (probes run only when no transfer measured recently).
    #[serde(default = "default_probe_interval")]
    pub probe_interval_ms: u64,
}

fn default_objective() -> ObjectiveKind {
    ObjectiveKind::MinLatency
}
fn default_floor() -> f64 {
    80.0
}
fn default_budget() -> f64 {
    20.0
}
fn default_interval() -> u64 {
    1000
}
fn default_hysteresis() -> f64 {
    0.10
}
fn default_profile_runs() -> usize {
    20
}
fn default_slowdown() -> f64 {
    1.0
}
fn default_probe_bytes() -> u32 {
    16 * 1024
}
fn default_probe_interval() -> u64 {
    1000
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            objective: default_objective(),
            accuracy_floor_pct: default_floor(),
            latency_budget_ms: default_budget(),
            replan_interval_ms: default_interval(),
            hysteresis: default_hysteresis(),
            calibration: None,
            profile_runs: default_profile_runs(),
            edge_slowdown: default_slowdown(),
            probe_bytes: default_probe_bytes(),
            probe_interval_ms: default_probe_interval(),
        }
    }
}

impl AdaptiveConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=100.0).contains(&self.accuracy_floor_pct) {
            return Err("adaptive.accuracy_floor_pct must be within 0..100".into());
        }
        if self.latency_budget_ms.is_nan() || self.latency_budget_ms <= 0.0 {
            return Err("adaptive.latency_budget_ms must be positive".into());
        }
        if self.replan_interval_ms == 0 {
            return Err("adaptive.replan_interval_ms must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.hysteresis) {
            return Err("adaptive.hysteresis must be within 0..1".into());
        }
        if self.profile_runs == 0 {
            return Err("adaptive.profile_runs must be at least 1".into());
        }
        if !self.edge_slowdown.is_finite() || self.edge_slowdown < 1.0 {
            return Err("adaptive.edge_slowdown must be ≥ 1".into());
        }
        Ok(())
    }

    /// The optimizer objective.
    pub fn objective(&self) -> Objective {
        let floor = (self.accuracy_floor_pct / 100.0) as f32;
        match self.objective {
            ObjectiveKind::MinLatency => Objective::MinLatency {
                accuracy_floor: floor,
            },
            ObjectiveKind::MaxThroughput => Objective::MaxThroughput {
                accuracy_floor: floor,
            },
            ObjectiveKind::MaxAccuracy => Objective::MaxAccuracy {
                latency_budget_s: self.latency_budget_ms / 1000.0,
            },
        }
    }
}

/// Start-up or planning failures.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("calibration: {0}")]
    Calibration(#[from] jmdc_core::calibration::CalibrationError),
    #[error("profiling: {0}")]
    Profiling(#[from] jmdc_core::profiling::ProfilingError),
    #[error("optimizer: {0}")]
    Optimizer(String),
}

/// Profiles + accuracy table + optimizer state.
#[derive(Debug)]
pub struct Planner {
    package: Arc<ModelPackage>,
    table: CalibrationTable,
    edge_us: BTreeMap<String, Vec<f64>>,
    codec: CodecCosts,
    online: OnlineProfile,
    cloud: CloudProfileEstimator,
    objective: Objective,
    config: OptimizerConfig,
    slowdown: f64,
    current: Option<Plan>,
}

impl Planner {
    /// Loads the accuracy table (refusing one made for another package) and profiles the edge:
    /// per-layer latency of every variant and the codec's cost.
    pub fn new(
        package: Arc<ModelPackage>,
        settings: &AdaptiveConfig,
        threads: Option<usize>,
    ) -> Result<Self, PlannerError> {
        let table = match &settings.calibration {
            Some(path) => CalibrationTable::load_for(path, &package)?,
            None => CalibrationTable::load_default(&package)?,
        };
        let options = RunnerOptions {
            intra_op_threads: threads,
            ..RunnerOptions::default()
        };
        let slowdown = settings.edge_slowdown;
        let mut edge_us = BTreeMap::new();
        let mut shapes = Vec::new();
        for variant in package.variant_names() {
            let base = measure_edge_profile(&package, variant, 5, settings.profile_runs, &options)?;
            edge_us.insert(
                variant.to_owned(),
                base.iter().map(|t| t * slowdown).collect::<Vec<_>>(),
            );
            shapes.extend(split_shapes(&package, variant)?);
        }
        let modes: Vec<QuantMode> = table.modes();
        let mut codec = measure_codec_costs(&shapes, &table.keep_ratios, &modes, 3)?;
        // Cloud-only input paths: raw image and the table's JPEG qualities (none: zero cost).
        codec.input = Some(measure_input_codec_costs(
            &package,
            &table.jpeg_qualities(),
            settings.profile_runs,
        )?);
        let cloud = CloudProfileEstimator::new(
            edge_us.iter().map(|(k, v)| (k.clone(), v.clone())),
            0.25 / slowdown,
            0.2,
        );
        let mut planner = Self {
            package,
            table,
            online: OnlineProfile::new(Vec::new(), OnlineProfileConfig::default()),
            edge_us,
            codec,
            cloud,
            objective: settings.objective(),
            config: OptimizerConfig {
                hysteresis_margin: settings.hysteresis,
                ..OptimizerConfig::default()
            },
            slowdown,
            current: None,
        };
        let profile = planner.profile()?;
        planner.online = OnlineProfile::from_profile(&profile, OnlineProfileConfig::default());
        Ok(planner)
    }

    fn profile(&self) -> Result<jmdc_core::optimizer::Profile, PlannerError> {
        Ok(build_optimizer_profile(
            &self.package,
            &self.edge_us,
            &self.cloud.all(),
            &self.codec,
        )?)
    }

    /// Number of candidates the table offers.
    pub fn candidate_count(&self) -> Result<usize, PlannerError> {
        Ok(self.table.candidates(&self.profile()?).len())
    }

    /// Applies changed objective and hysteresis settings (live reload).
    pub fn reconfigure(&mut self, settings: &AdaptiveConfig) {
        self.objective = settings.objective();
        self.config.hysteresis_margin = settings.hysteresis;
    }

    /// Feeds the CPU monitor's load factor.
    pub fn set_load_factor(&mut self, factor: f64) {
        self.online.set_load_factor(factor);
    }

    /// The edge load factor the optimizer uses (monitor × learned correction).
    pub fn effective_load_factor(&self) -> f64 {
        self.online.effective_load_factor()
    }

    /// Learns from a processed frame.
    pub fn observe(&mut self, plan: &PlanSpec, obs: &FrameObservation) {
        if !obs.head_timings.is_empty() {
            let stretched: Vec<Duration> = obs
                .head_timings
                .iter()
                .map(|t| t.mul_f64(self.slowdown))
                .collect();
            self.online.observe(&plan.variant, 0, &stretched);
        }
        if let (Some(compute), Ok(split)) = (
            obs.cloud_compute,
            plan.edge_layers(self.package.num_layers()),
        ) {
            // Per-layer times reported by the worker when it sends them; else the total.
            let layers: Vec<f64> = obs.cloud_layer_us.iter().map(|&t| f64::from(t)).collect();
            if layers.is_empty() || !self.cloud.observe_layers(&plan.variant, split, &layers) {
                self.cloud
                    .observe(&plan.variant, split, compute.as_secs_f64() * 1e6);
            }
        }
    }

    /// Decides a plan for `conditions`, with hysteresis against the previous decision.
    pub fn decide(&mut self, conditions: &Conditions) -> Result<Decision, PlannerError> {
        let profile = self.profile()?;
        let candidates = self.table.candidates(&profile);
        let mut optimizer = Optimizer::new(profile, candidates, self.config)
            .map_err(|e| PlannerError::Optimizer(e.to_string()))?;
        optimizer.prune_dominated();
        let decision = optimizer.decide(conditions, &self.objective, self.current.as_ref());
        self.current = Some(decision.plan.clone());
        Ok(decision)
    }
}

/// The optimizer's plan in the form the pipeline runs.
pub fn plan_spec(plan: &Plan) -> PlanSpec {
    let split = if plan.split == 0 {
        SplitSpec::CloudOnly
    } else if plan.split >= plan.layers {
        SplitSpec::EdgeOnly
    } else {
        SplitSpec::After(plan.split)
    };
    let (keep_ratio, codec) = match plan.codec {
        Some(c) => (c.keep_ratio, CodecSpec(c.mode)),
        None => (1.0, CodecSpec(QuantMode::F32)),
    };
    let input = match plan.input {
        InputCodec::Jpeg { quality, .. } if plan.split == 0 => InputSpec::Jpeg(quality),
        _ => InputSpec::Raw,
    };
    PlanSpec {
        variant: plan.variant_name.clone(),
        split,
        keep_ratio,
        codec,
        input,
    }
}
