//! The optimizer proper: precomputation, evaluation of one candidate, and the decision scan.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{compact, encoded_len, CodecParams};

use super::{
    Candidate, Conditions, InputCodec, Objective, OptimizerConfig, OptimizerError, Profile,
};

/// The plan a decision selects: the candidate and everything the edge needs to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Index into [`Optimizer::candidates`].
    pub candidate: usize,
    /// Index into [`Profile::variants`].
    pub variant: usize,
    /// Name of the variant.
    pub variant_name: String,
    /// Edge runs layers `0..split`; `0` = cloud-only, `layers` = edge-only.
    pub split: usize,
    /// Layer count `L` of the variant.
    pub layers: usize,
    /// Feature codec (`None` for cloud-only and edge-only).
    pub codec: Option<CodecParams>,
    /// How a cloud-only plan sends the image (raw or JPEG); `Raw` for every other plan.
    #[serde(default)]
    pub input: InputCodec,
    /// Bytes sent per frame, protocol overhead included (0 for edge-only).
    pub bytes: usize,
    /// Calibrated accuracy of the candidate.
    pub accuracy: f32,
}

impl Plan {
    /// The cloud runs every layer; the edge sends the 8-bit image.
    pub fn is_cloud_only(&self) -> bool {
        self.split == 0
    }

    /// The edge runs every layer; nothing is sent.
    pub fn is_edge_only(&self) -> bool {
        self.split == self.layers
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} '{}' ", self.candidate, self.variant_name)?;
        match (self.split, self.codec) {
            (0, _) => match self.input {
                InputCodec::Raw => write!(f, "cloud-only (image, {} B)", self.bytes),
                InputCodec::Jpeg { quality, .. } => {
                    write!(f, "cloud-only (jpeg q{quality}, {} B)", self.bytes)
                }
            },
            (s, _) if s == self.layers => f.write_str("edge-only"),
            (s, Some(c)) => write!(
                f,
                "split {s}/{} ρ={:.2} {} ({} B)",
                self.layers, c.keep_ratio, c.mode, self.bytes
            ),
            (s, None) => write!(f, "split {s}/{} ({} B)", self.layers, self.bytes),
        }
    }
}

/// Where the predicted latency of a plan goes, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyBreakdown {
    /// Edge layers `0..split`, multiplied by the load factor.
    pub edge_s: f64,
    /// Encoding on the edge (feature codec, or shipping the raw image).
    pub encode_s: f64,
    /// `bytes·8 / bandwidth`.
    pub transfer_s: f64,
    /// One round trip.
    pub rtt_s: f64,
    /// Cloud layers `split..L`.
    pub cloud_s: f64,
    /// Decoding on the cloud.
    pub decode_s: f64,
    /// What the caller learned from measuring this plan (measured − modelled latency, set with
    /// [`Optimizer::correct_latency`]); 0 when none.
    #[serde(default)]
    pub measured_correction_s: f64,
}

/// Predictions for one candidate under some conditions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// End-to-end latency of one frame in seconds.
    pub latency_s: f64,
    /// Pipelined throughput in frames per second: 1 / slowest stage.
    pub throughput_fps: f64,
    /// Calibrated accuracy.
    pub accuracy: f32,
    /// The latency's parts.
    pub breakdown: LatencyBreakdown,
}

/// The answer of [`Optimizer::decide`]; there always is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The plan to run.
    pub plan: Plan,
    /// Predicted end-to-end latency in seconds.
    pub predicted_latency_s: f64,
    /// Calibrated accuracy of the plan.
    pub predicted_accuracy: f32,
    /// Predicted pipelined throughput in frames per second.
    pub predicted_throughput_fps: f64,
    /// The predicted latency's parts.
    pub breakdown: LatencyBreakdown,
    /// Whether the plan meets the objective's constraint (and, with the cloud unavailable, is
    /// edge-only).
    pub feasible: bool,
    /// Whether the plan differs from the current one (`true` when there was none).
    pub switched: bool,
    /// Why this plan, in words.
    pub reason: String,
}

/// Per-candidate constants, computed once.
#[derive(Debug, Clone, Copy)]
struct Pre {
    /// Σ edge layer times `0..split` at load 1, seconds.
    edge_s: f64,
    /// Encode time, seconds.
    encode_s: f64,
    /// Bits on the wire (payload + overhead); 0 for edge-only.
    bits: f64,
    /// Σ cloud layer times `split..L`, seconds.
    cloud_s: f64,
    /// Decode time, seconds.
    decode_s: f64,
    /// Calibrated accuracy.
    accuracy: f32,
    /// Needs the cloud (every plan but edge-only).
    networked: bool,
    /// Additive latency correction from measurements (seconds, default 0).
    correction_s: f64,
}

/// What a scan compares.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    latency: f64,
    throughput: f64,
    accuracy: f32,
}

impl Pre {
    #[inline(always)]
    fn metrics(&self, c: &Conditions) -> Metrics {
        let edge = self.edge_s * c.edge_load_factor;
        if !self.networked {
            return Metrics {
                latency: edge + self.correction_s,
                throughput: 1.0 / edge,
                accuracy: self.accuracy,
            };
        }
        let edge_stage = edge + self.encode_s;
        let transfer = self.bits / c.bandwidth_bps;
        let cloud_stage = self.cloud_s + self.decode_s;
        Metrics {
            latency: edge_stage + transfer + c.rtt_s + cloud_stage + self.correction_s,
            throughput: 1.0 / edge_stage.max(transfer).max(cloud_stage),
            accuracy: self.accuracy,
        }
    }
}

/// Relative decrease `(cur − new) / cur`; `+∞` when an infinite value becomes finite.
fn rel_decrease(cur: f64, new: f64) -> f64 {
    if new >= cur {
        0.0
    } else if cur.is_infinite() {
        f64::INFINITY
    } else {
        (cur - new) / cur
    }
}

/// Relative increase `(new − cur) / cur`; `+∞` from zero or to infinity.
fn rel_increase(cur: f64, new: f64) -> f64 {
    if new <= cur {
        0.0
    } else if cur <= 0.0 || new.is_infinite() {
        f64::INFINITY
    } else {
        (new - cur) / cur
    }
}

impl Objective {
    #[inline(always)]
    fn feasible(&self, m: &Metrics) -> bool {
        match *self {
            Objective::MinLatency { accuracy_floor }
            | Objective::MaxThroughput { accuracy_floor } => m.accuracy >= accuracy_floor,
            Objective::MaxAccuracy { latency_budget_s } => m.latency <= latency_budget_s,
        }
    }

    /// Strictly better for the objective (ties broken as documented; equal → `false`, so the
    /// lower index wins in a scan).
    #[inline(always)]
    fn better(&self, a: &Metrics, b: &Metrics) -> bool {
        match self {
            Objective::MinLatency { .. } => {
                a.latency < b.latency || (a.latency == b.latency && a.accuracy > b.accuracy)
            }
            Objective::MaxAccuracy { .. } => {
                a.accuracy > b.accuracy || (a.accuracy == b.accuracy && a.latency < b.latency)
            }
            Objective::MaxThroughput { .. } => {
                a.throughput > b.throughput
                    || (a.throughput == b.throughput
                        && (a.latency < b.latency
                            || (a.latency == b.latency && a.accuracy > b.accuracy)))
            }
        }
    }

    /// Strictly better as the infeasible fallback.
    #[inline(always)]
    fn fallback_better(&self, a: &Metrics, b: &Metrics) -> bool {
        match self {
            Objective::MinLatency { .. } => {
                a.accuracy > b.accuracy || (a.accuracy == b.accuracy && a.latency < b.latency)
            }
            Objective::MaxThroughput { .. } => {
                a.accuracy > b.accuracy || (a.accuracy == b.accuracy && a.throughput > b.throughput)
            }
            Objective::MaxAccuracy { .. } => {
                a.latency < b.latency || (a.latency == b.latency && a.accuracy > b.accuracy)
            }
        }
    }

    /// How much `new` improves on `cur` in the objective's metric, and whether that exceeds the
    /// configured margin. Returns (gain, exceeds, description).
    fn gain(&self, cfg: &OptimizerConfig, cur: &Metrics, new: &Metrics, fallback: bool) -> Gain {
        let metric = match (self, fallback) {
            (Objective::MinLatency { .. }, false) | (Objective::MaxAccuracy { .. }, true) => {
                GainMetric::Latency
            }
            (Objective::MaxThroughput { .. }, false) => GainMetric::Throughput,
            _ => GainMetric::Accuracy,
        };
        let (value, margin) = match metric {
            GainMetric::Latency => (
                rel_decrease(cur.latency, new.latency),
                cfg.hysteresis_margin,
            ),
            GainMetric::Throughput => (
                rel_increase(cur.throughput, new.throughput),
                cfg.hysteresis_margin,
            ),
            GainMetric::Accuracy => (
                f64::from(new.accuracy - cur.accuracy).max(0.0),
                f64::from(cfg.accuracy_margin),
            ),
        };
        Gain {
            metric,
            value,
            margin,
        }
    }

    fn constraint(&self) -> String {
        match *self {
            Objective::MinLatency { accuracy_floor }
            | Objective::MaxThroughput { accuracy_floor } => {
                format!("accuracy ≥ {:.1} %", accuracy_floor * 100.0)
            }
            Objective::MaxAccuracy { latency_budget_s } => {
                format!("latency ≤ {:.3} ms", latency_budget_s * 1e3)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum GainMetric {
    Latency,
    Throughput,
    Accuracy,
}

#[derive(Debug, Clone, Copy)]
struct Gain {
    metric: GainMetric,
    value: f64,
    margin: f64,
}

impl Gain {
    fn exceeds(&self) -> bool {
        self.value > self.margin
    }
}

impl Gain {
    /// The margin in the gain's unit, e.g. `10.0 %` or `0.50 points`.
    fn margin_str(&self) -> String {
        match self.metric {
            GainMetric::Latency | GainMetric::Throughput => format!("{:.1} %", self.margin * 100.0),
            GainMetric::Accuracy => format!("{:.2} points", self.margin * 100.0),
        }
    }
}

impl fmt::Display for Gain {
    /// `latency by 12.3 %`, `throughput by 4.0 %`, `accuracy by 0.50 points`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.metric {
            GainMetric::Latency => write!(f, "latency by {:.1} %", self.value * 100.0),
            GainMetric::Throughput => write!(f, "throughput by {:.1} %", self.value * 100.0),
            GainMetric::Accuracy => write!(f, "accuracy by {:.2} points", self.value * 100.0),
        }
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} ms, {:.1} %, {:.1} fps",
            self.latency * 1e3,
            self.accuracy * 100.0,
            self.throughput
        )
    }
}

/// The adaptive optimizer over a fixed candidate set.
#[derive(Debug, Clone)]
pub struct Optimizer {
    profile: Profile,
    config: OptimizerConfig,
    candidates: Vec<Candidate>,
    bytes: Vec<usize>,
    pre: Vec<Pre>,
    has_edge_only: bool,
}

impl Optimizer {
    /// Validates the profile, the candidates and the configuration and precomputes every
    /// per-candidate constant (layer-time sums, bytes on the wire — the compact body of the exact
    /// encoded size of [`crate::codec::encoded_len`], or of the measured mean for entropy-coded
    /// plans, see [`crate::codec::compact::body_len`] — plus
    /// [`Profile::header_overhead_bytes`], codec costs).
    pub fn new(
        profile: Profile,
        candidates: Vec<Candidate>,
        config: OptimizerConfig,
    ) -> Result<Self, OptimizerError> {
        profile.validate()?;
        config.validate()?;
        if candidates.is_empty() {
            return Err(OptimizerError::NoCandidates);
        }
        // Prefix sums of layer times per variant, in seconds.
        let sums: Vec<(Vec<f64>, Vec<f64>)> = profile
            .variants
            .iter()
            .map(|v| {
                let prefix = |t: &[f64]| {
                    let mut acc = 0.0;
                    let mut out = Vec::with_capacity(t.len() + 1);
                    out.push(0.0);
                    for &x in t {
                        acc += x * 1e-6;
                        out.push(acc);
                    }
                    out
                };
                (prefix(&v.edge_layer_us), prefix(&v.cloud_layer_us))
            })
            .collect();

        let overhead = profile.header_overhead_bytes;
        let mut bytes = Vec::with_capacity(candidates.len());
        let mut pre = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            let v = profile
                .variants
                .get(c.variant)
                .ok_or(OptimizerError::UnknownVariant {
                    candidate: i,
                    variant: c.variant,
                })?;
            let l = v.layers();
            if c.split > l {
                return Err(OptimizerError::SplitOutOfRange {
                    candidate: i,
                    split: c.split,
                    layers: l,
                });
            }
            if !(0.0..=1.0).contains(&c.accuracy) {
                return Err(OptimizerError::InvalidAccuracy {
                    candidate: i,
                    accuracy: c.accuracy,
                });
            }
            let (edge_pre, cloud_pre) = &sums[c.variant];
            let edge_s = edge_pre[c.split];
            let cloud_s = cloud_pre[l] - cloud_pre[c.split];
            let elements: usize = v.boundary_shapes[c.split].iter().product();
            let (b, encode_us, decode_us, networked) = match (c.split, c.codec, c.input) {
                (s, None, InputCodec::Raw) if s == l => (0, 0.0, 0.0, false),
                (
                    0,
                    None,
                    InputCodec::Jpeg {
                        quality,
                        mean_bytes,
                    },
                ) => {
                    if !(1..=100).contains(&quality) || mean_bytes == 0 {
                        return Err(OptimizerError::CodecPlacement {
                            candidate: i,
                            reason: "a JPEG input needs a quality in 1..=100 and mean bytes > 0",
                        });
                    }
                    let payload = mean_bytes as usize;
                    (
                        payload.saturating_add(overhead),
                        profile.jpeg_encode.cost_us(elements, payload),
                        profile.jpeg_decode.cost_us(elements, payload),
                        true,
                    )
                }
                (_, _, InputCodec::Jpeg { .. }) => {
                    return Err(OptimizerError::CodecPlacement {
                        candidate: i,
                        reason: "only a cloud-only plan can send a JPEG input",
                    })
                }
                (0, None, InputCodec::Raw) => (
                    elements.saturating_add(overhead),
                    profile.input_encode.cost_us(elements, elements),
                    profile.input_decode.cost_us(elements, elements),
                    true,
                ),
                (s, Some(codec), _) if s != 0 && s != l => {
                    let fixed = encoded_len(&v.boundary_shapes[s], &codec).map_err(|source| {
                        OptimizerError::Codec {
                            candidate: i,
                            source,
                        }
                    })?;
                    // On the wire a frame carries the codec's compact body: the header fields
                    // its bound context fixes are not sent (protocol version 2).
                    let rank = v.boundary_shapes[s].len();
                    let on_wire = |encoded: usize| compact::body_len(encoded, rank, codec.mode);
                    if codec.mode.is_coded() {
                        // Value-dependent size: the calibration table's measured mean.
                        let payload =
                            c.mean_payload_bytes.ok_or(OptimizerError::CodecPlacement {
                                candidate: i,
                                reason:
                                    "an entropy-coded plan needs its measured mean payload bytes",
                            })? as usize;
                        (
                            on_wire(payload).saturating_add(overhead),
                            profile.coded_encode.cost_us(elements, on_wire(fixed)),
                            profile.coded_decode.cost_us(elements, on_wire(fixed)),
                            true,
                        )
                    } else {
                        (
                            on_wire(fixed).saturating_add(overhead),
                            profile.encode.cost_us(elements, on_wire(fixed)),
                            profile.decode.cost_us(elements, on_wire(fixed)),
                            true,
                        )
                    }
                }
                (_, Some(_), _) => {
                    return Err(OptimizerError::CodecPlacement {
                        candidate: i,
                        reason: "cloud-only and edge-only plans take no codec",
                    })
                }
                (_, None, _) => {
                    return Err(OptimizerError::CodecPlacement {
                        candidate: i,
                        reason: "an inner split needs a codec",
                    })
                }
            };
            bytes.push(b);
            pre.push(Pre {
                edge_s,
                encode_s: encode_us * 1e-6,
                bits: b as f64 * 8.0,
                cloud_s: if networked { cloud_s } else { 0.0 },
                decode_s: decode_us * 1e-6,
                accuracy: c.accuracy,
                networked,
                correction_s: 0.0,
            });
        }
        let has_edge_only = pre.iter().any(|p| !p.networked);
        Ok(Optimizer {
            profile,
            config,
            candidates,
            bytes,
            pre,
            has_edge_only,
        })
    }

    /// Drops every candidate dominated within its own (variant, split, input kind): another one
    /// with no more bytes and no less accuracy, better in at least one (of exact duplicates the
    /// first is kept). Such a candidate can never be chosen: within a group the layer times are
    /// equal and codec costs do not decrease with bytes. Raw and JPEG cloud-only inputs are
    /// separate groups (a JPEG has fewer bytes but costs more to encode and decode), and so are
    /// entropy-coded and fixed-width split codecs, for the same reason. Candidate
    /// indices are renumbered (order is kept). Returns how many were dropped.
    pub fn prune_dominated(&mut self) -> usize {
        let n = self.candidates.len();
        let mut order: Vec<usize> = (0..n).collect();
        // Entropy-coded plans are a group of their own too: fewer bytes, but more codec work.
        let group_of = |c: &Candidate| {
            let coded = c.codec.is_some_and(|p| p.mode.is_coded());
            (c.variant, c.split, c.input.is_jpeg(), coded)
        };
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&self.candidates[a], &self.candidates[b]);
            (group_of(ca), self.bytes[a])
                .cmp(&(group_of(cb), self.bytes[b]))
                .then(cb.accuracy.total_cmp(&ca.accuracy))
                .then(a.cmp(&b))
        });
        let mut keep = vec![false; n];
        let mut group = None;
        let mut best_acc = f32::NEG_INFINITY;
        for &i in &order {
            let c = &self.candidates[i];
            if group != Some(group_of(c)) {
                group = Some(group_of(c));
                best_acc = f32::NEG_INFINITY;
            }
            // Sorted by bytes ascending: a candidate survives only if it is strictly more
            // accurate than every cheaper-or-equal one before it.
            if c.accuracy > best_acc {
                keep[i] = true;
                best_acc = c.accuracy;
            }
        }
        let mut idx = 0;
        self.candidates.retain(|_| {
            idx += 1;
            keep[idx - 1]
        });
        let mut idx = 0;
        self.bytes.retain(|_| {
            idx += 1;
            keep[idx - 1]
        });
        let mut idx = 0;
        self.pre.retain(|_| {
            idx += 1;
            keep[idx - 1]
        });
        n - self.candidates.len()
    }

    /// The candidates, in index order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Bytes on the wire per frame for candidate `index` (payload + protocol overhead; 0 for
    /// edge-only).
    pub fn bytes(&self, index: usize) -> Option<usize> {
        self.bytes.get(index).copied()
    }

    /// The plan for candidate `index`.
    pub fn plan(&self, index: usize) -> Option<Plan> {
        let c = self.candidates.get(index)?;
        let v = &self.profile.variants[c.variant];
        Some(Plan {
            candidate: index,
            variant: c.variant,
            variant_name: v.name.clone(),
            split: c.split,
            layers: v.layers(),
            codec: c.codec,
            input: c.input,
            bytes: self.bytes[index],
            accuracy: c.accuracy,
        })
    }

    /// Predictions for candidate `index` under `conditions` (sanitized like in [`Self::decide`]).
    pub fn evaluate(&self, index: usize, conditions: &Conditions) -> Option<Evaluation> {
        let p = self.pre.get(index)?;
        let c = conditions.sanitized();
        let m = p.metrics(&c);
        let breakdown = if p.networked {
            LatencyBreakdown {
                edge_s: p.edge_s * c.edge_load_factor,
                encode_s: p.encode_s,
                transfer_s: p.bits / c.bandwidth_bps,
                rtt_s: c.rtt_s,
                cloud_s: p.cloud_s,
                decode_s: p.decode_s,
                measured_correction_s: p.correction_s,
            }
        } else {
            LatencyBreakdown {
                edge_s: m.latency - p.correction_s,
                measured_correction_s: p.correction_s,
                ..LatencyBreakdown::default()
            }
        };
        Some(Evaluation {
            latency_s: m.latency,
            throughput_fps: m.throughput,
            accuracy: m.accuracy,
            breakdown,
        })
    }

    /// Adds `seconds` (measured − modelled latency, may be negative) to every latency prediction
    /// of candidate `index`: the caller's memory of how this plan really performed. The predicted
    /// latency never drops below zero; throughput is unchanged. Returns false for an unknown index
    /// or a non-finite value (nothing changes).
    pub fn correct_latency(&mut self, index: usize, seconds: f64) -> bool {
        match self.pre.get_mut(index) {
            Some(p) if seconds.is_finite() => {
                let c = Conditions {
                    bandwidth_bps: f64::INFINITY,
                    rtt_s: 0.0,
                    edge_load_factor: 1.0,
                    cloud_available: true,
                };
                // Never below zero even under the most favourable conditions.
                p.correction_s = 0.0;
                let floor = -p.metrics(&c).latency;
                p.correction_s = seconds.max(floor);
                true
            }
            _ => false,
        }
    }

    /// The index of the (first) candidate with this variant, split and codec. Cloud-only raw and
    /// JPEG-input candidates share these fields: use [`index_of`](Self::index_of) for a plan.
    pub fn find(&self, variant: usize, split: usize, codec: Option<CodecParams>) -> Option<usize> {
        self.candidates
            .iter()
            .position(|c| c.variant == variant && c.split == split && c.codec == codec)
    }

    /// The index of the candidate `plan` refers to (by index when its fields match, else by
    /// variant, split, codec and input codec), as `decide` matches a current plan.
    pub fn index_of(&self, plan: &Plan) -> Option<usize> {
        self.resolve(plan)
    }

    /// Finds the candidate a plan refers to: by index when its fields match, else by fields.
    fn resolve(&self, plan: &Plan) -> Option<usize> {
        let matches = |i: usize| {
            let c = &self.candidates[i];
            c.variant == plan.variant
                && c.split == plan.split
                && c.codec == plan.codec
                && c.input.same_codec(&plan.input)
        };
        if plan.candidate < self.candidates.len() && matches(plan.candidate) {
            Some(plan.candidate)
        } else {
            (0..self.candidates.len()).find(|&i| matches(i))
        }
    }

    /// Chooses a plan for `objective` under `conditions`, keeping `current` unless the best plan
    /// beats it by more than the configured margin (see `docs/optimizer.md`). Always answers:
    /// when no candidate meets the constraint, the fallback of the objective is returned with
    /// `feasible = false`.
    pub fn decide(
        &self,
        conditions: &Conditions,
        objective: &Objective,
        current: Option<&Plan>,
    ) -> Decision {
        let c = conditions.sanitized();
        // With the cloud down only edge-only plans may run; when there is none, consider all
        // (and say the answer is infeasible).
        let restrict = !c.cloud_available;
        let restrict_effective = restrict && self.has_edge_only;
        let allowed = |p: &Pre| !(restrict_effective && p.networked);

        let mut best: Option<(usize, Metrics)> = None;
        let mut fallback: Option<(usize, Metrics)> = None;
        let mut eligible = 0usize;
        for (i, p) in self.pre.iter().enumerate() {
            if !allowed(p) {
                continue;
            }
            eligible += 1;
            let m = p.metrics(&c);
            if objective.feasible(&m) {
                if best.as_ref().is_none_or(|(_, b)| objective.better(&m, b)) {
                    best = Some((i, m));
                }
            } else if best.is_none()
                && fallback
                    .as_ref()
                    .is_none_or(|(_, b)| objective.fallback_better(&m, b))
            {
                fallback = Some((i, m));
            }
        }
        let is_fallback = best.is_none();
        // `fallback` only saw infeasible candidates, which is all of them when `best` is None.
        let (top, top_m) = match best.or(fallback) {
            Some(x) => x,
            // Unreachable: the candidate set is non-empty and everything is allowed when no
            // edge-only plan exists. Answer with candidate 0 anyway.
            None => (0, self.pre[0].metrics(&c)),
        };

        let mut reason = String::new();
        if restrict {
            if restrict_effective {
                reason.push_str("cloud unavailable: only edge-only plans considered; ");
            } else {
                reason.push_str("cloud unavailable and no edge-only plan exists: infeasible; ");
            }
        }

        let cur = current.and_then(|p| self.resolve(p));
        let cur_state = cur.map(|i| {
            let p = &self.pre[i];
            let m = p.metrics(&c);
            (i, m, allowed(p), objective.feasible(&m))
        });
        if current.is_some() && cur.is_none() {
            reason.push_str("current plan is not in the candidate set; ");
        }

        let cfg = &self.config;
        let plan_str = |i: usize| self.plan(i).map(|p| p.to_string()).unwrap_or_default();
        let chosen = if !is_fallback {
            let switched_to = || format!("switched to {} → {top_m}: ", plan_str(top));
            match cur_state {
                None => {
                    reason.push_str(&format!(
                        "chose {} → {top_m}: best of {eligible} eligible plans for {objective}",
                        plan_str(top)
                    ));
                    top
                }
                Some((i, _, false, _)) => {
                    reason.push_str(&switched_to());
                    reason.push_str(&format!("current plan {} needs the cloud", plan_str(i)));
                    top
                }
                Some((i, m, true, false)) => {
                    reason.push_str(&switched_to());
                    reason.push_str(&format!(
                        "current plan {} ({m}) violates {}",
                        plan_str(i),
                        objective.constraint()
                    ));
                    top
                }
                Some((i, m, true, true)) => {
                    let gain = objective.gain(cfg, &m, &top_m, false);
                    if i == top {
                        reason.push_str(&format!(
                            "kept current plan {} → {m}: still the best for {objective}",
                            plan_str(i)
                        ));
                        i
                    } else if gain.exceeds() {
                        reason.push_str(&switched_to());
                        reason.push_str(&format!(
                            "improves {gain} (> {} margin) over current plan {} ({m})",
                            gain.margin_str(),
                            plan_str(i)
                        ));
                        top
                    } else {
                        reason.push_str(&format!(
                            "kept current plan {} → {m}: best alternative {} ({top_m}) improves \
                             {gain} only (≤ {} margin)",
                            plan_str(i),
                            plan_str(top),
                            gain.margin_str()
                        ));
                        i
                    }
                }
            }
        } else {
            let what = match objective {
                Objective::MaxAccuracy { .. } => "fastest",
                _ => "closest",
            };
            reason.push_str(&format!(
                "no plan meets {}; {what}: {} → {top_m}",
                objective.constraint(),
                plan_str(top)
            ));
            match cur_state {
                Some((i, m, true, _)) if i != top => {
                    let gain = objective.gain(cfg, &m, &top_m, true);
                    if gain.exceeds() {
                        reason.push_str(&format!(
                            "; switched from current plan {} ({m}): {what} improves {gain} \
                             (> {} margin)",
                            plan_str(i),
                            gain.margin_str()
                        ));
                        top
                    } else {
                        reason.push_str(&format!(
                            "; kept current plan {} ({m}): {what} improves {gain} only \
                             (≤ {} margin)",
                            plan_str(i),
                            gain.margin_str()
                        ));
                        i
                    }
                }
                _ => top,
            }
        };

        let ev = self.evaluate(chosen, conditions).unwrap_or(Evaluation {
            latency_s: top_m.latency,
            throughput_fps: top_m.throughput,
            accuracy: top_m.accuracy,
            breakdown: LatencyBreakdown::default(),
        });
        let cloud_blocked = restrict && !restrict_effective;
        let feasible = !is_fallback && !cloud_blocked;
        let plan = match self.plan(chosen) {
            Some(p) => p,
            None => Plan {
                candidate: chosen,
                variant: 0,
                variant_name: String::new(),
                split: 0,
                layers: 0,
                codec: None,
                input: InputCodec::Raw,
                bytes: 0,
                accuracy: 0.0,
            },
        };
        Decision {
            switched: cur != Some(chosen),
            plan,
            predicted_latency_s: ev.latency_s,
            predicted_accuracy: ev.accuracy,
            predicted_throughput_fps: ev.throughput_fps,
            breakdown: ev.breakdown,
            feasible,
            reason,
        }
    }
}
