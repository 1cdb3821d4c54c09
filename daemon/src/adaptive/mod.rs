//! The adaptive JMDC loop's brain on the edge: profiles, the calibrated accuracy table and live
//! measurements go into the pure optimizer (`jmdc_core::optimizer`), which picks variant, split,
//! region keep ratio and bits.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_core::calibration;
use jmdc_core::calibration::CalibrationTable;
use jmdc_core::codec::QuantMode;
use jmdc_core::optimizer::{
    Candidate, Conditions, Decision, Evaluation, InputCodec, Objective, Optimizer, OptimizerConfig,
    Plan,
};
use jmdc_core::package::ModelPackage;
use jmdc_core::profiling::{
    build_optimizer_profile, measure_codec_costs, measure_input_codec_costs, split_shapes,
    CloudProfileEstimator, CodecCosts, OnlineProfile, OnlineProfileConfig,
};
use jmdc_core::runner::RunnerOptions;
use serde::Deserialize;

use crate::emulation::EdgeSpeed;
use crate::pipeline::FrameObservation;

mod correction;
mod damping;
mod head_profile;
use crate::plan_spec::{CodecSpec, InputSpec, PlanSpec, SplitSpec};
use correction::{Correction, CorrectionPolicy};
use damping::FlapDamping;

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

/// Which plans the loop may choose from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// JMDC: every variant (pruning level), split, region keep ratio and bit width the accuracy
    /// table covers.
    #[default]
    Jmdc,
    /// Neurosurgeon (Kang et al., ASPLOS 2017) as a baseline: the unpruned model (the package's
    /// first variant), any single split, the split tensor sent as uncompressed `f32`; cloud-only
    /// (raw image, no JPEG) and edge-only included. Same monitors and latency model as JMDC.
    Neurosurgeon,
}

impl Strategy {
    /// Whether a candidate belongs to this strategy's plan space.
    pub fn admits(self, candidate: &Candidate) -> bool {
        match self {
            Strategy::Jmdc => true,
            Strategy::Neurosurgeon => {
                candidate.variant == 0
                    && candidate.input == jmdc_core::optimizer::InputCodec::Raw
                    && candidate
                        .codec
                        .is_none_or(|c| c.mode == QuantMode::F32 && c.keep_ratio >= 1.0)
            }
        }
    }
}

/// `[adaptive]` in the edge configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSection {
    /// Off: the fixed `[plan]` is used for every frame.
    #[serde(default)]
    pub enabled: bool,
    /// What to optimise: `min-latency`, `max-throughput` (under `accuracy_floor`) or
    /// `max-accuracy` (under `latency_budget_ms`).
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
    /// `jmdc` (default) or `neurosurgeon` (a baseline: unpruned model, f32 split tensor).
    #[serde(default)]
    pub strategy: Strategy,
    /// Every this many frames, one plan whose latency has not been measured lately but whose
    /// prediction comes close to the plan in force is run for `explore_frames` frames, so that
    /// the loop learns what the model gets wrong about it (0 = never explore).
    #[serde(default = "default_explore_every")]
    pub explore_every_frames: u64,
    /// Frames per exploration.
    #[serde(default = "default_explore_frames")]
    pub explore_frames: u64,
    /// At most one exploration per this interval (at 400 frames/s, every 100 frames was four
    /// visits a second: most of the plan changes of a steady link).
    #[serde(default = "default_explore_interval")]
    pub explore_interval_ms: u64,
    /// Bytes of the first active bandwidth probe; later ones are sized to take about 10 ms at
    /// the measured goodput (4–256 KiB).
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
fn default_explore_every() -> u64 {
    100
}
fn default_explore_frames() -> u64 {
    3
}
fn default_explore_interval() -> u64 {
    5000
}
fn default_probe_bytes() -> u32 {
    16 * 1024
}
fn default_probe_interval() -> u64 {
    2000
}

impl Default for AdaptiveSection {
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
            strategy: Strategy::default(),
            explore_every_frames: default_explore_every(),
            explore_frames: default_explore_frames(),
            explore_interval_ms: default_explore_interval(),
            probe_bytes: default_probe_bytes(),
            probe_interval_ms: default_probe_interval(),
        }
    }
}

impl AdaptiveSection {
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
        if self.explore_every_frames > 0 && self.explore_frames == 0 {
            return Err("adaptive.explore_frames must be at least 1 when exploring".into());
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
    /// The calibration table is missing, invalid or for another package.
    #[error("calibration: {0}")]
    Calibration(#[from] jmdc_core::calibration::CalibrationError),
    /// Profiling the package on this edge failed.
    #[error("profiling: {0}")]
    Profiling(#[from] jmdc_core::profiling::ProfilingError),
    /// The optimizer could not be built from the candidates.
    #[error("optimizer: {0}")]
    Optimizer(String),
}

/// How corrections are learned: a new frame weighs 0.1, five frames in a row more than 15 % of
/// the model away replace the correction (three let a burst of host noise condemn a good plan); a
/// plan's own correction is trusted after 2 frames and forgotten after 10 s without frames (or
/// when the network changes under it).
const CORRECTIONS: CorrectionPolicy = CorrectionPolicy {
    alpha: 0.1,
    step_fraction: 0.15,
    step_frames: 5,
    ttl: Duration::from_secs(10),
    min_frames: 2,
};
/// An edge correction older than this (no edge frames: cloud-only plans) is forgotten.
const EDGE_CORRECTION_TTL: Duration = Duration::from_secs(5);
/// Plan changes within this window raise the hysteresis margin ([`FlapDamping`])...
const FLAP_WINDOW: Duration = Duration::from_secs(10);
/// ... up to this margin.
const FLAP_MAX_MARGIN: f64 = 0.4;
/// Explore only plans predicted within this factor of the plan in force.
const EXPLORE_WITHIN: f64 = 1.5;

/// The model's prediction for a plan with the measured correction it was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Modelled latency plus measured correction, seconds.
    pub latency_s: f64,
    /// The modelled parts.
    pub breakdown: jmdc_core::optimizer::LatencyBreakdown,
}

/// Profiles + accuracy table + optimizer state + what was measured of each plan.
///
/// The model (`jmdc_core::optimizer`) predicts every plan from the start-up profile and the live
/// conditions; what it gets wrong about a plan (per-request overheads, the runtime's behaviour
/// under a given split, the emulated device) is learned from that plan's frames as an additive
/// correction (EWMA of measured − modelled, forgotten after 20 s without frames, and for plans
/// that use the network, when bandwidth or RTT moved away from what it was learned under; see
/// [`correction`]). Plans not measured lately get the mean correction of their kind (cloud-only, split or edge-only: plans of a kind
/// share where their time goes). Every
/// `explore_every_frames` frames one unmeasured plan whose prediction comes within
/// [`EXPLORE_WITHIN`]× of the plan in force runs for `explore_frames` frames.
#[derive(Debug)]
pub struct Planner {
    package: Arc<ModelPackage>,
    table: CalibrationTable,
    /// Every candidate the table has figures for (before the strategy's filter).
    table_candidates: Vec<Candidate>,
    edge_us: BTreeMap<String, Vec<f64>>,
    codec: CodecCosts,
    online: OnlineProfile,
    cloud: CloudProfileEstimator,
    objective: Objective,
    config: OptimizerConfig,
    strategy: Strategy,
    speed_factor: f64,
    current: Option<Plan>,
    /// Recent plan changes, which raise the margin of decisions no monitor asked for.
    damping: FlapDamping,
    /// Each plan's measured latency (smoothed like a correction, see [`Planner::correction_for`]).
    memory: HashMap<String, Correction>,
    /// Shared corrections per [`PlanKind`].
    kind_residual: [Correction; 3],
    last_edge_frame: Option<Instant>,
    /// The plan of the previous frame: the first frame after a switch runs on cold caches and
    /// sessions and is not learned from.
    previous_plan: Option<PlanSpec>,
    /// The optimizer of the last decision (with corrections), for predictions between decisions,
    /// and its candidate index by plan (`PlanSpec` display string).
    last: Option<(Optimizer, HashMap<String, usize>)>,
}

impl Planner {
    /// Loads the accuracy table (refusing one made for another package) and profiles the edge:
    /// per-layer latency of every variant (measured as frames run it, [`head_profile`]) and the
    /// codec's cost, on the emulated edge when `speed` says so (`crate::emulation`; native on a
    /// real device).
    pub fn new(
        package: Arc<ModelPackage>,
        settings: &AdaptiveSection,
        threads: Option<usize>,
        speed: EdgeSpeed,
    ) -> Result<Self, PlannerError> {
        let table = match &settings.calibration {
            Some(path) => calibration::load_for(path, &package)?,
            None => calibration::load_default(&package)?,
        };
        let options = RunnerOptions {
            intra_op_threads: threads,
            ..RunnerOptions::default()
        };
        let factor = speed.factor();
        let mut edge_us = BTreeMap::new();
        let mut shapes = Vec::new();
        for variant in package.variant_names() {
            let head_us = head_profile::measure_head_profile(
                &package,
                variant,
                settings.profile_runs,
                &options,
                speed,
            )?;
            edge_us.insert(variant.to_owned(), head_us);
            shapes.extend(split_shapes(&package, variant)?);
        }
        let modes: Vec<QuantMode> = table.modes();
        let mut codec = measure_codec_costs(&shapes, &table.keep_ratios, &modes, 3)?;
        // Cloud-only input paths: raw image and the table's JPEG qualities (none: zero cost).
        let mut input =
            measure_input_codec_costs(&package, &table.jpeg_qualities(), settings.profile_runs)?;
        // Encoding runs on the (emulated) edge; decoding on the worker.
        let mut coded_encode = codec.coded.as_mut().map(|c| &mut c.encode.cost);
        for cost in [
            Some(&mut codec.encode.cost),
            coded_encode.take(),
            Some(&mut input.raw_encode),
            Some(&mut input.jpeg_encode.cost),
        ]
        .into_iter()
        .flatten()
        {
            cost.fixed_us *= factor;
            cost.per_element_us *= factor;
            cost.per_byte_us *= factor;
        }
        codec.input = Some(input);
        let cloud = CloudProfileEstimator::new(
            edge_us.iter().map(|(k, v)| (k.clone(), v.clone())),
            0.25 / factor,
            0.2,
        );
        let mut planner = Self {
            package,
            table,
            table_candidates: Vec::new(),
            online: OnlineProfile::new(Vec::new(), OnlineProfileConfig::default()),
            edge_us,
            codec,
            cloud,
            objective: settings.objective(),
            config: OptimizerConfig {
                hysteresis_margin: settings.hysteresis,
                ..OptimizerConfig::default()
            },
            strategy: settings.strategy,
            speed_factor: factor,
            current: None,
            damping: FlapDamping::new(FLAP_WINDOW, FLAP_MAX_MARGIN),
            memory: HashMap::new(),
            kind_residual: [PlanKind::CloudOnly, PlanKind::Split, PlanKind::EdgeOnly]
                .map(|kind| Correction::new(kind.uses_network(), Instant::now())),
            last_edge_frame: None,
            previous_plan: None,
            last: None,
        };
        let profile = planner.profile()?;
        planner.online = OnlineProfile::from_profile(&profile, OnlineProfileConfig::default());
        // The candidates depend on the package's structure and the table, not on timings: listed
        // once (3.4 ms of each 5 ms decision when the table was searched at every re-plan).
        planner.table_candidates = planner.table.candidates(&profile);
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

    /// The table's candidates the strategy admits.
    fn candidates(&self) -> Vec<Candidate> {
        let strategy = self.strategy;
        self.table_candidates
            .iter()
            .filter(|c| strategy.admits(c))
            .cloned()
            .collect()
    }

    /// Number of candidates the table offers (after the strategy's filter).
    pub fn candidate_count(&self) -> usize {
        self.candidates().len()
    }

    /// Applies changed objective and hysteresis settings (live reload).
    pub fn reconfigure(&mut self, settings: &AdaptiveSection) {
        self.objective = settings.objective();
        self.config.hysteresis_margin = settings.hysteresis;
        self.strategy = settings.strategy;
    }

    /// Feeds the CPU monitor's load factor.
    pub fn set_load_factor(&mut self, factor: f64) {
        self.online.set_load_factor(factor);
    }

    /// The edge load factor the optimizer uses (monitor × learned correction). The learned part
    /// is forgotten when no edge frame ran for a while (it may have come from a transient).
    pub fn effective_load_factor(&mut self) -> f64 {
        if self
            .last_edge_frame
            .is_some_and(|t| t.elapsed() > EDGE_CORRECTION_TTL)
        {
            self.online.reset_correction();
            self.last_edge_frame = None;
        }
        self.online.effective_load_factor()
    }

    /// The emulated edge speed factor the profile was multiplied by.
    pub fn speed_factor(&self) -> f64 {
        self.speed_factor
    }

    /// Learns from a processed frame: edge and cloud profiles, and — given the conditions it ran
    /// under — how far the model's latency for its plan was from the measured one.
    ///
    /// The first frame after a plan switch teaches nothing: its layers run on caches and sessions
    /// that other plans used meanwhile (on an emulated Pi 3 a split's head measured 2–2.5× its
    /// steady time on an exploration's first frame), and learning from it had pushed the shared
    /// edge load correction to 3× and made edge-only look three times slower than it was.
    ///
    /// A frame of a plan visited to explore it (`in_force` false) teaches only that plan's own
    /// correction: its few frames run on caches still half cold, and the profiles, the load
    /// correction and its kind's correction serve the plans that run for longer.
    ///
    /// Returns whether the frame was learned from (false for a cold first frame).
    pub fn observe(
        &mut self,
        plan: &PlanSpec,
        obs: &FrameObservation,
        measured: Option<Duration>,
        conditions: &Conditions,
        in_force: bool,
    ) -> bool {
        if self.previous_plan.as_ref() != Some(plan) {
            self.previous_plan = Some(plan.clone());
            return false;
        }
        if in_force {
            self.learn_profiles(plan, obs);
        }
        let Some(measured) = measured else {
            return true;
        };
        let Some(model) = self.modelled(plan, conditions) else {
            return true;
        };
        let residual = measured.as_secs_f64() - model.latency_s;
        let now = Instant::now();
        if in_force {
            self.kind_residual[model.kind as usize].update(
                &CORRECTIONS,
                residual,
                model.latency_s,
                conditions,
                now,
            );
        }
        self.memory
            .entry(plan.to_string())
            .or_insert_with(|| Correction::new(model.kind.uses_network(), now))
            .update(
                &CORRECTIONS,
                measured.as_secs_f64(),
                model.latency_s,
                conditions,
                now,
            );
        true
    }

    /// Edge and cloud profiles from a frame's per-layer timings.
    fn learn_profiles(&mut self, plan: &PlanSpec, obs: &FrameObservation) {
        if !obs.head_timings.is_empty() {
            // Per-layer wall times scaled so that they add up to what the (emulated) device spent.
            let wall: Duration = obs.head_timings.iter().sum();
            let scale = if wall > Duration::ZERO && obs.head_emulated > Duration::ZERO {
                obs.head_emulated.as_secs_f64() / wall.as_secs_f64()
            } else {
                self.speed_factor
            };
            let stretched: Vec<Duration> =
                obs.head_timings.iter().map(|t| t.mul_f64(scale)).collect();
            self.online.observe(&plan.variant, 0, &stretched);
            self.last_edge_frame = Some(Instant::now());
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

    /// The model's latency for `plan` under `conditions`, without measured corrections.
    fn modelled(&self, plan: &PlanSpec, conditions: &Conditions) -> Option<Modelled> {
        let (opt, index) = self.last.as_ref()?;
        let e = opt.evaluate(*index.get(&plan.to_string())?, conditions)?;
        Some(Modelled {
            latency_s: e.latency_s - e.breakdown.measured_correction_s,
            kind: PlanKind::of_spec(plan),
        })
    }

    /// The measured correction plan `index` of `optimizer` (modelled latency `modelled_s` under
    /// `conditions`) gets now: what its own frames measured lately under these conditions minus
    /// that model, else its kind's mean residual, else none.
    ///
    /// A plan's own frames are kept as measured latency, not as residuals: the profiles learn
    /// from the same frames, so a residual against the model of the last decision would be
    /// counted twice once the next model has absorbed part of it (cloud-only JPEG on an emulated
    /// Pi 3 measured 2.5 ms, was predicted 1.7 ms, and after eight frames 3.8 ms).
    fn correction_for(
        &self,
        key: &str,
        kind: PlanKind,
        modelled_s: Option<f64>,
        conditions: &Conditions,
        now: Instant,
    ) -> f64 {
        let own = self
            .memory
            .get(key)
            .and_then(|m| m.value(&CORRECTIONS, conditions, now))
            .zip(modelled_s)
            .map(|(measured, modelled)| measured - modelled);
        own.or_else(|| self.kind_residual[kind as usize].value(&CORRECTIONS, conditions, now))
            .unwrap_or(0.0)
    }

    fn measured_lately(&self, key: &str, conditions: &Conditions, now: Instant) -> bool {
        self.memory
            .get(key)
            .is_some_and(|m| m.value(&CORRECTIONS, conditions, now).is_some())
    }

    fn build(
        &self,
        conditions: &Conditions,
        config: OptimizerConfig,
    ) -> Result<(Optimizer, HashMap<String, usize>), PlannerError> {
        let profile = self.profile()?;
        let candidates = self.candidates();
        let mut optimizer = Optimizer::new(profile, candidates, config)
            .map_err(|e| PlannerError::Optimizer(e.to_string()))?;
        optimizer.prune_dominated();
        let now = Instant::now();
        let mut index = HashMap::with_capacity(optimizer.candidates().len());
        for i in 0..optimizer.candidates().len() {
            if let Some(plan) = optimizer.plan(i) {
                let key = plan_spec(&plan).to_string();
                let kind = PlanKind::of_plan(&plan);
                let modelled = optimizer.evaluate(i, conditions).map(|e| e.latency_s);
                let correction = self.correction_for(&key, kind, modelled, conditions, now);
                optimizer.correct_latency(i, correction);
                index.insert(key, i);
            }
        }
        Ok((optimizer, index))
    }

    /// Decides a plan for `conditions`, with hysteresis against the previous decision: the
    /// configured margin when a monitor reported the change behind this decision (`reported`:
    /// bandwidth, CPU load, a new cloud, a reload), else that margin raised by the plan changes
    /// of the last [`FLAP_WINDOW`] ([`FlapDamping`]).
    pub fn decide(
        &mut self,
        conditions: &Conditions,
        reported: bool,
    ) -> Result<Decision, PlannerError> {
        let now = Instant::now();
        let config = OptimizerConfig {
            hysteresis_margin: self
                .damping
                .margin(self.config.hysteresis_margin, now, reported),
            ..self.config
        };
        let (optimizer, index) = self.build(conditions, config)?;
        let decision = optimizer.decide(conditions, &self.objective, self.current.as_ref());
        let changed = self
            .current
            .as_ref()
            .is_some_and(|c| plan_spec(c) != plan_spec(&decision.plan));
        if changed {
            self.damping.record_change(now);
        }
        self.current = Some(decision.plan.clone());
        self.last = Some((optimizer, index));
        Ok(decision)
    }

    /// Whether any bandwidth could make the loop send something: with an unlimited uplink, a
    /// plan that uses the cloud and meets the accuracy floor is predicted faster than the best
    /// edge-only plan. When none is (the path's RTT alone costs more than running on the edge),
    /// measuring the bandwidth cannot change a decision.
    ///
    /// Plans that use the network are taken without their measured corrections: those were
    /// learned under the present bandwidth (at 0.5 Mbit/s a JPEG request measured 212 ms), and
    /// keeping them made the loop pause its probes on edge-only and never see the link come
    /// back. Edge-only plans keep theirs (a busy edge is slow whatever the link does).
    /// Objectives that maximise accuracy always probe.
    pub fn bandwidth_matters(&self, conditions: &Conditions) -> bool {
        let Some((opt, _)) = self.last.as_ref() else {
            return true;
        };
        if !conditions.cloud_available {
            return false;
        }
        let floor = match self.objective {
            Objective::MinLatency { accuracy_floor }
            | Objective::MaxThroughput { accuracy_floor } => accuracy_floor,
            Objective::MaxAccuracy { .. } => return true,
        };
        let unlimited = Conditions {
            bandwidth_bps: 1e12,
            ..*conditions
        };
        let mut best_edge = f64::INFINITY;
        let mut best_cloud = f64::INFINITY;
        for i in 0..opt.candidates().len() {
            let Some(plan) = opt.plan(i) else { continue };
            if plan.accuracy < floor {
                continue;
            }
            let Some(e) = opt.evaluate(i, &unlimited) else {
                continue;
            };
            if plan.is_edge_only() {
                best_edge = best_edge.min(e.latency_s);
            } else {
                best_cloud = best_cloud.min(e.latency_s - e.breakdown.measured_correction_s);
            }
        }
        // With no edge-only plan above the floor the loop may fall back to the cloud's.
        best_cloud < best_edge || best_edge.is_infinite()
    }

    /// The prediction for a plan under `conditions` (with its measured correction), from the
    /// last decision's optimizer.
    pub fn predict(&self, plan: &PlanSpec, conditions: &Conditions) -> Option<Prediction> {
        let (opt, index) = self.last.as_ref()?;
        let e: Evaluation = opt.evaluate(*index.get(&plan.to_string())?, conditions)?;
        Some(Prediction {
            latency_s: e.latency_s,
            breakdown: e.breakdown,
        })
    }

    /// A plan worth measuring now: not measured lately, feasible for the objective, and predicted
    /// within [`EXPLORE_WITHIN`]× of the plan in force (the best such one). `None` when there is
    /// none or no decision was made yet.
    pub fn exploration(&self, conditions: &Conditions) -> Option<(Plan, Prediction)> {
        let (opt, _) = self.last.as_ref()?;
        let current = self.current.as_ref()?;
        let cur_index = opt.index_of(current)?;
        let cur = opt.evaluate(cur_index, conditions)?;
        let now = Instant::now();
        let floor = match self.objective {
            Objective::MinLatency { accuracy_floor }
            | Objective::MaxThroughput { accuracy_floor } => Some(accuracy_floor),
            Objective::MaxAccuracy { .. } => None,
        };
        let mut best: Option<(usize, Evaluation)> = None;
        for i in 0..opt.candidates().len() {
            if i == cur_index {
                continue;
            }
            let Some(plan) = opt.plan(i) else { continue };
            if !conditions.cloud_available && !plan.is_edge_only() {
                continue;
            }
            if floor.is_some_and(|f| plan.accuracy < f) {
                continue;
            }
            if self.measured_lately(&plan_spec(&plan).to_string(), conditions, now) {
                continue;
            }
            let Some(e) = opt.evaluate(i, conditions) else {
                continue;
            };
            if let Objective::MaxAccuracy { latency_budget_s } = self.objective {
                if e.latency_s > latency_budget_s || e.accuracy < cur.accuracy {
                    continue;
                }
            }
            if e.latency_s > cur.latency_s * EXPLORE_WITHIN {
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| e.latency_s < b.latency_s) {
                best = Some((i, e));
            }
        }
        let (i, e) = best?;
        Some((
            opt.plan(i)?,
            Prediction {
                latency_s: e.latency_s,
                breakdown: e.breakdown,
            },
        ))
    }
}

/// What [`Planner::modelled`] gives.
#[derive(Debug, Clone, Copy)]
struct Modelled {
    latency_s: f64,
    kind: PlanKind,
}

/// Plans whose latency has the same parts, for sharing what was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanKind {
    CloudOnly = 0,
    Split = 1,
    EdgeOnly = 2,
}

impl PlanKind {
    /// Whether plans of this kind send anything to the cloud.
    fn uses_network(self) -> bool {
        self != PlanKind::EdgeOnly
    }

    fn of_spec(plan: &PlanSpec) -> Self {
        match plan.split {
            crate::plan_spec::SplitSpec::CloudOnly => PlanKind::CloudOnly,
            crate::plan_spec::SplitSpec::EdgeOnly => PlanKind::EdgeOnly,
            crate::plan_spec::SplitSpec::After(_) => PlanKind::Split,
        }
    }

    fn of_plan(plan: &Plan) -> Self {
        if plan.is_cloud_only() {
            PlanKind::CloudOnly
        } else if plan.is_edge_only() {
            PlanKind::EdgeOnly
        } else {
            PlanKind::Split
        }
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
