//! Estimators the profiles are built and corrected from: pure arithmetic over measured times, no
//! clock and no I/O (the measuring itself is `jmdc_core::profiling`).
//!
//! * [`Ewma`], [`median`]: smoothing.
//! * [`OnlineProfile`]: per variant, per layer EWMA of the edge times seen on real frames, and a
//!   learned correction of the CPU monitor's load factor (`measured / (base × load_factor)`, EWMA):
//!   [`OnlineProfile::effective_load_factor`] is what goes into
//!   [`crate::optimizer::Conditions::edge_load_factor`].
//! * [`CloudProfileEstimator`]: per variant, per layer cloud latency, learned from the cloud's
//!   reported compute time of layer ranges `split..L` (and from exact per-layer times when a
//!   protocol provides them).
//! * [`fit_codec_cost`]: the non-negative least-squares fit of a [`CodecCost`] to timed codec
//!   calls; [`synthetic_features`] and [`synthetic_image`] are the deterministic inputs they are
//!   timed on. See `docs/monitoring.md`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use crate::optimizer::{CodecCost, Profile};

// ---------------------------------------------------------------------------------------------
// Smoothing
// ---------------------------------------------------------------------------------------------

/// Exponentially weighted moving average: `v ← v + α·(x − v)`; the first sample sets `v`.
///
/// Non-finite samples are ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
    count: u64,
}

impl Ewma {
    /// A smoother with weight `alpha` for new samples, clamped to `[0.001, 1]` (NaN → 1).
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_nan() {
            1.0
        } else {
            alpha.clamp(0.001, 1.0)
        };
        Ewma {
            alpha,
            value: None,
            count: 0,
        }
    }

    /// Adds a sample and returns the new value (the old value, or `x` itself if there is none and
    /// `x` is not finite).
    pub fn update(&mut self, x: f64) -> f64 {
        if !x.is_finite() {
            return self.value.unwrap_or(x);
        }
        let v = match self.value {
            None => x,
            Some(v) => v + self.alpha * (x - v),
        };
        self.value = Some(v);
        self.count += 1;
        v
    }

    /// Forgets the history and starts again from `x` (counts as one sample).
    pub fn reset_to(&mut self, x: f64) {
        if x.is_finite() {
            self.value = Some(x);
            self.count = 1;
        }
    }

    /// The current value, `None` before the first finite sample.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// Samples taken since creation or the last [`reset_to`](Self::reset_to).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The smoothing weight.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// Median of `xs` (mean of the two middle values for an even count); NaN for an empty slice.
/// Reorders `xs`.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A duration in microseconds (what every profile stores).
pub fn duration_us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------------------------------------
// Online edge profile
// ---------------------------------------------------------------------------------------------

/// Tuning of [`OnlineProfile`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineProfileConfig {
    /// EWMA weight of a new frame in the per-layer smoothed times.
    pub layer_alpha: f64,
    /// EWMA weight of a new frame in the load-factor correction.
    pub correction_alpha: f64,
    /// A frame's measured/predicted ratio is clamped to `[min_ratio, max_ratio]` before smoothing
    /// (one page fault or a descheduled thread must not move the correction by 100×).
    pub min_ratio: f64,
    /// See [`min_ratio`](Self::min_ratio).
    pub max_ratio: f64,
}

impl Default for OnlineProfileConfig {
    /// `layer_alpha` 0.2, `correction_alpha` 0.1, ratio clamped to `[0.2, 5]`.
    fn default() -> Self {
        OnlineProfileConfig {
            layer_alpha: 0.2,
            correction_alpha: 0.1,
            min_ratio: 0.2,
            max_ratio: 5.0,
        }
    }
}

/// One variant's edge layer times: the profiled base (at load factor 1) and the EWMA of what real
/// frames measured (at whatever load there was).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProfile {
    /// Variant name.
    pub variant: String,
    base_us: Vec<f64>,
    smoothed: Vec<Ewma>,
}

impl LayerProfile {
    /// A profile with these base times (µs per layer at load factor 1).
    pub fn new(variant: impl Into<String>, base_us: Vec<f64>, alpha: f64) -> Self {
        let smoothed = vec![Ewma::new(alpha); base_us.len()];
        LayerProfile {
            variant: variant.into(),
            base_us,
            smoothed,
        }
    }

    /// Number of layers.
    pub fn layers(&self) -> usize {
        self.base_us.len()
    }

    /// Profiled µs per layer at load factor 1.
    pub fn base_us(&self) -> &[f64] {
        &self.base_us
    }

    /// Sum of the base times of `range` (clipped to the model).
    pub fn base_sum(&self, range: Range<usize>) -> f64 {
        let end = range.end.min(self.base_us.len());
        let start = range.start.min(end);
        self.base_us[start..end].iter().sum()
    }

    /// Smoothed measured µs of layer `i`, `None` if no frame ran it yet.
    pub fn smoothed_us(&self, i: usize) -> Option<f64> {
        self.smoothed.get(i).and_then(Ewma::value)
    }

    /// Frames that measured layer `i`.
    pub fn samples(&self, i: usize) -> u64 {
        self.smoothed.get(i).map_or(0, Ewma::count)
    }

    /// Per layer: the smoothed measurement where there is one, else the base time.
    pub fn current_us(&self) -> Vec<f64> {
        self.base_us
            .iter()
            .zip(&self.smoothed)
            .map(|(b, s)| s.value().unwrap_or(*b))
            .collect()
    }
}

/// Online edge profile: the profiled per-layer times of every variant, corrected from real frames.
///
/// The optimizer keeps using the base times ([`Profile`]'s `edge_layer_us`, load factor 1); what
/// changes is the load factor it is given:
///
/// ```text
/// predicted(frame)      = Σ base_us[layers run] × load_factor        (load_factor: the CPU monitor's model)
/// ratio(frame)          = measured(frame) / predicted(frame)         (clamped to [min_ratio, max_ratio])
/// correction            = EWMA(ratio)                                 (starts at 1)
/// effective_load_factor = load_factor × correction                    → Conditions::edge_load_factor
/// ```
///
/// When the CPU monitor's model is right the correction stays near 1; when it misses something
/// (thermal throttling, memory-bandwidth contention, a profile taken on a cold cache) the
/// correction absorbs it within ~1/`correction_alpha` frames.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineProfile {
    variants: Vec<LayerProfile>,
    config: OnlineProfileConfig,
    load_factor: f64,
    correction: Ewma,
    last_ratio: Option<f64>,
}

impl OnlineProfile {
    /// From `(variant name, base µs per layer)` pairs.
    pub fn new(
        base: impl IntoIterator<Item = (String, Vec<f64>)>,
        config: OnlineProfileConfig,
    ) -> Self {
        let variants = base
            .into_iter()
            .map(|(name, us)| LayerProfile::new(name, us, config.layer_alpha))
            .collect();
        OnlineProfile {
            variants,
            config,
            load_factor: 1.0,
            correction: Ewma::new(config.correction_alpha),
            last_ratio: None,
        }
    }

    /// From the edge times of an optimizer profile.
    pub fn from_profile(profile: &Profile, config: OnlineProfileConfig) -> Self {
        Self::new(
            profile
                .variants
                .iter()
                .map(|v| (v.name.clone(), v.edge_layer_us.clone())),
            config,
        )
    }

    /// Sets the load factor the CPU monitor currently predicts (NaN or ≤ 0 → 1). Frames observed
    /// afterwards are compared with `base × load_factor`.
    pub fn set_load_factor(&mut self, load_factor: f64) {
        self.load_factor = sanitize_factor(load_factor);
    }

    /// The CPU monitor's load factor last set.
    pub fn load_factor(&self) -> f64 {
        self.load_factor
    }

    /// The learned correction (EWMA of measured/predicted; 1 before any frame).
    pub fn correction(&self) -> f64 {
        self.correction.value().unwrap_or(1.0)
    }

    /// `load_factor × correction`: the edge load factor to give the optimizer.
    pub fn effective_load_factor(&self) -> f64 {
        self.load_factor * self.correction()
    }

    /// The measured/predicted ratio of the last observed frame (clamped).
    pub fn last_ratio(&self) -> Option<f64> {
        self.last_ratio
    }

    /// Frames that contributed to the correction.
    pub fn frames(&self) -> u64 {
        self.correction.count()
    }

    /// Records one frame's per-layer times (`times[0]` = layer `start`) of `variant`, at the load
    /// factor last [`set`](Self::set_load_factor). Returns the frame's measured/predicted ratio, or
    /// `None` when the frame was ignored (unknown variant, layers out of range, no time, zero base).
    pub fn observe(&mut self, variant: &str, start: usize, times: &[Duration]) -> Option<f64> {
        let load = self.load_factor;
        self.observe_with_load(variant, start, times, load)
    }

    /// Like [`observe`](Self::observe) with the load factor that held while the frame ran.
    pub fn observe_with_load(
        &mut self,
        variant: &str,
        start: usize,
        times: &[Duration],
        load_factor: f64,
    ) -> Option<f64> {
        let load_factor = sanitize_factor(load_factor);
        let config = self.config;
        let lp = self.variants.iter_mut().find(|v| v.variant == variant)?;
        let end = start.checked_add(times.len())?;
        if times.is_empty() || end > lp.layers() {
            return None;
        }
        let mut measured = 0.0;
        for (i, t) in (start..end).zip(times) {
            let t = duration_us(*t);
            lp.smoothed[i].update(t);
            measured += t;
        }
        let predicted = lp.base_sum(start..end) * load_factor;
        if !(predicted > 0.0 && measured.is_finite()) {
            return None;
        }
        let ratio = (measured / predicted).clamp(config.min_ratio, config.max_ratio);
        self.correction.update(ratio);
        self.last_ratio = Some(ratio);
        Some(ratio)
    }

    /// Predicted µs of layers `range` of `variant` now: `base × effective_load_factor`.
    pub fn predicted_us(&self, variant: &str, range: Range<usize>) -> Option<f64> {
        let lp = self.variant(variant)?;
        Some(lp.base_sum(range) * self.effective_load_factor())
    }

    /// One variant's layer profile.
    pub fn variant(&self, name: &str) -> Option<&LayerProfile> {
        self.variants.iter().find(|v| v.variant == name)
    }

    /// All variants, in construction order.
    pub fn variants(&self) -> &[LayerProfile] {
        &self.variants
    }

    /// Forgets the correction (e.g. after re-profiling).
    pub fn reset_correction(&mut self) {
        self.correction = Ewma::new(self.config.correction_alpha);
        self.last_ratio = None;
    }
}

fn sanitize_factor(f: f64) -> f64 {
    if f.is_finite() && f > 0.0 {
        f
    } else if f == f64::INFINITY {
        f64::MAX
    } else {
        1.0
    }
}

// ---------------------------------------------------------------------------------------------
// Cloud profile
// ---------------------------------------------------------------------------------------------

/// Default guess of cloud time per layer relative to the edge's before any observation.
pub const DEFAULT_CLOUD_GUESS_RATIO: f64 = 0.25;

#[derive(Debug, Clone, PartialEq)]
struct CloudVariant {
    name: String,
    edge_us: Vec<f64>,
    /// EWMA of the measured compute time of layers `split..L`, per split.
    splits: BTreeMap<usize, Ewma>,
    /// EWMA of exact per-layer times, when reported.
    layers: Vec<Ewma>,
    estimate: Vec<f64>,
    /// Layers no observation covers (filled with edge × learned ratio).
    uncovered: Vec<bool>,
}

impl CloudVariant {
    fn observed(&self) -> bool {
        !self.splits.is_empty() || self.layers.iter().any(|l| l.value().is_some())
    }

    /// Recomputes the estimate of the covered layers; returns (Σ estimate, Σ edge) over layers
    /// that observations cover.
    fn solve_observed(&mut self) -> (f64, f64) {
        let l = self.edge_us.len();
        let known: Vec<Option<f64>> = self.layers.iter().map(Ewma::value).collect();
        let splits: Vec<(usize, f64)> = self
            .splits
            .iter()
            .filter_map(|(s, e)| e.value().map(|v| (*s, v)))
            .collect();
        let mut est = self.estimate.clone();
        let mut covered = vec![false; l];
        for (i, k) in known.iter().enumerate() {
            if let Some(k) = k {
                est[i] = *k;
                covered[i] = true;
            }
        }
        // Segments between consecutive observed splits: the difference of their totals is the
        // time of the layers in between.
        for (j, &(s, total)) in splits.iter().enumerate() {
            let (end, seg_total) = match splits.get(j + 1) {
                Some(&(next, next_total)) => (next, total - next_total),
                None => (l, total),
            };
            let seg = s..end;
            let known_sum: f64 = seg.clone().filter_map(|i| known[i]).sum();
            let rest = (seg_total - known_sum).max(0.0);
            let unknown: Vec<usize> = seg.filter(|&i| known[i].is_none()).collect();
            let edge_sum: f64 = unknown.iter().map(|&i| self.edge_us[i]).sum();
            for &i in &unknown {
                est[i] = if edge_sum > 0.0 {
                    rest * self.edge_us[i] / edge_sum
                } else {
                    rest / unknown.len() as f64
                };
                covered[i] = true;
            }
        }
        let (mut sum_est, mut sum_edge) = (0.0, 0.0);
        for i in 0..l {
            if covered[i] {
                sum_est += est[i];
                sum_edge += self.edge_us[i];
            }
        }
        self.estimate = est;
        self.uncovered = covered.iter().map(|c| !c).collect();
        (sum_est, sum_edge)
    }
}

/// Per-variant, per-layer cloud latency learned from what the cloud reports.
///
/// The cloud reports, per frame, the compute time of layers `split..L`
/// ([`crate::protocol::InferResult::cloud_compute_us`]). The estimator keeps an EWMA of that total
/// per (variant, split) and derives per-layer times from all of them:
///
/// * observed splits `s₁ < s₂ < … < s_k` with smoothed totals `T₁ … T_k`: layers `[s_j, s_{j+1})`
///   share `T_j − T_{j+1}` (clamped at 0), layers `[s_k, L)` share `T_k`, each set in proportion
///   to the edge profile of those layers;
/// * exact per-layer times ([`observe_layers`](Self::observe_layers)), when available, take
///   precedence; a segment's total is then shared among its other layers;
/// * layers no observation covers (before `s₁`) are the edge profile × the learned cloud/edge
///   ratio of this variant's covered layers; variants never observed use the ratio learned over
///   all observed variants; before any observation, the guess (default 0.25).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudProfileEstimator {
    variants: Vec<CloudVariant>,
    alpha: f64,
    guess_ratio: f64,
}

impl CloudProfileEstimator {
    /// From `(variant name, edge µs per layer)` pairs; the cloud estimate starts at
    /// `edge × guess_ratio`; observations are smoothed with weight `alpha`.
    pub fn new(
        edge: impl IntoIterator<Item = (String, Vec<f64>)>,
        guess_ratio: f64,
        alpha: f64,
    ) -> Self {
        let guess_ratio = if guess_ratio.is_finite() && guess_ratio > 0.0 {
            guess_ratio
        } else {
            DEFAULT_CLOUD_GUESS_RATIO
        };
        let variants = edge
            .into_iter()
            .map(|(name, edge_us)| {
                let l = edge_us.len();
                CloudVariant {
                    name,
                    estimate: edge_us.iter().map(|e| e * guess_ratio).collect(),
                    edge_us,
                    splits: BTreeMap::new(),
                    layers: vec![Ewma::new(alpha); l],
                    uncovered: vec![true; l],
                }
            })
            .collect();
        CloudProfileEstimator {
            variants,
            alpha,
            guess_ratio,
        }
    }

    /// Records that the cloud took `measured_us` to run layers `split..L` of `variant`. Returns
    /// `false` (and ignores it) for an unknown variant, a split ≥ L or a non-finite/negative time.
    pub fn observe(&mut self, variant: &str, split: usize, measured_us: f64) -> bool {
        let alpha = self.alpha;
        let Some(v) = self.find_mut(variant) else {
            return false;
        };
        if split >= v.edge_us.len() || !(measured_us.is_finite() && measured_us >= 0.0) {
            return false;
        }
        v.splits
            .entry(split)
            .or_insert_with(|| Ewma::new(alpha))
            .update(measured_us);
        self.recompute();
        true
    }

    /// Records exact per-layer cloud times (`layer_us[0]` = layer `start`). Returns `false` for an
    /// unknown variant, layers out of range or a non-finite/negative time (nothing recorded).
    pub fn observe_layers(&mut self, variant: &str, start: usize, layer_us: &[f64]) -> bool {
        let Some(v) = self.find_mut(variant) else {
            return false;
        };
        let Some(end) = start.checked_add(layer_us.len()) else {
            return false;
        };
        if layer_us.is_empty()
            || end > v.edge_us.len()
            || layer_us.iter().any(|t| !(t.is_finite() && *t >= 0.0))
        {
            return false;
        }
        for (e, t) in v.layers[start..end].iter_mut().zip(layer_us) {
            e.update(*t);
        }
        self.recompute();
        true
    }

    /// The current per-layer cloud estimate of `variant` (µs).
    pub fn layer_us(&self, variant: &str) -> Option<&[f64]> {
        self.find(variant).map(|v| v.estimate.as_slice())
    }

    /// Estimated µs of layers `split..L` of `variant`.
    pub fn range_us(&self, variant: &str, split: usize) -> Option<f64> {
        self.find(variant)
            .map(|v| v.estimate.iter().skip(split).sum())
    }

    /// The cloud/edge time ratio learned over every observed variant (the guess before any).
    pub fn learned_ratio(&self) -> f64 {
        let (mut est, mut edge) = (0.0, 0.0);
        for v in &self.variants {
            for i in 0..v.edge_us.len() {
                if !v.uncovered[i] {
                    est += v.estimate[i];
                    edge += v.edge_us[i];
                }
            }
        }
        if edge > 0.0 && est > 0.0 {
            est / edge
        } else {
            self.guess_ratio
        }
    }

    /// `(variant, per-layer µs)` for every variant, in construction order (for
    /// `jmdc_core::profiling::build_optimizer_profile`).
    pub fn all(&self) -> BTreeMap<String, Vec<f64>> {
        self.variants
            .iter()
            .map(|v| (v.name.clone(), v.estimate.clone()))
            .collect()
    }

    fn find(&self, name: &str) -> Option<&CloudVariant> {
        self.variants.iter().find(|v| v.name == name)
    }

    fn find_mut(&mut self, name: &str) -> Option<&mut CloudVariant> {
        self.variants.iter_mut().find(|v| v.name == name)
    }

    fn recompute(&mut self) {
        let mut per_variant_ratio = Vec::with_capacity(self.variants.len());
        for v in &mut self.variants {
            if v.observed() {
                let (est, edge) = v.solve_observed();
                per_variant_ratio.push((est > 0.0 && edge > 0.0).then(|| est / edge));
            } else {
                v.uncovered = vec![true; v.edge_us.len()];
                per_variant_ratio.push(None);
            }
        }
        let global = self.learned_ratio();
        for (v, ratio) in self.variants.iter_mut().zip(per_variant_ratio) {
            let r = ratio.unwrap_or(global);
            for i in 0..v.edge_us.len() {
                if v.uncovered[i] {
                    v.estimate[i] = v.edge_us[i] * r;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codec costs
// ---------------------------------------------------------------------------------------------

/// One timed codec call: tensor elements, encoded bytes, median µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecSample {
    /// Element count of the tensor.
    pub elements: usize,
    /// Encoded size in bytes.
    pub bytes: usize,
    /// Median time in µs.
    pub us: f64,
}

/// A fitted [`CodecCost`] and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecFit {
    /// The non-negative least-squares fit.
    pub cost: CodecCost,
    /// Root-mean-square residual over the samples, µs.
    pub rms_residual_us: f64,
    /// `rms_residual_us` ÷ mean sample time.
    pub relative_residual: f64,
    /// Number of samples fitted.
    pub samples: usize,
}

/// Encode (edge) and decode (cloud) cost fits.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecCosts {
    /// Edge-side encoding.
    pub encode: CodecFit,
    /// Cloud-side decoding.
    pub decode: CodecFit,
    /// The raw samples (encode, decode), for reports.
    pub encode_samples: Vec<CodecSample>,
    /// See [`encode_samples`](Self::encode_samples).
    pub decode_samples: Vec<CodecSample>,
    /// The entropy-coded modes (`QuantMode::Coded`), fitted on their own with `bytes` = the
    /// fixed-width size ([`Profile::coded_encode`]); `None` when no coded mode was timed.
    pub coded: Option<CodedCosts>,
    /// Costs of the cloud-only input paths, when measured (`jmdc_core::profiling::measure_input_codec_costs`);
    /// `jmdc_core::profiling::build_optimizer_profile` copies them into the profile (else they stay zero).
    pub input: Option<InputCosts>,
}

/// Encode and decode fits of the entropy-coded modes; samples' `bytes` are the fixed-width size.
#[derive(Debug, Clone, PartialEq)]
pub struct CodedCosts {
    /// Edge-side encoding (quantization and the range coder).
    pub encode: CodecFit,
    /// Cloud-side decoding.
    pub decode: CodecFit,
    /// The raw samples (encode, decode), for reports.
    pub samples: Vec<(CodecSample, CodecSample)>,
}

/// Costs of sending the model input on cloud-only plans: raw 8-bit image or JPEG.
#[derive(Debug, Clone, PartialEq)]
pub struct InputCosts {
    /// Raw image, edge side ([`Profile::input_encode`]).
    pub raw_encode: CodecCost,
    /// Raw image, cloud side: normalisation ([`Profile::input_decode`]).
    pub raw_decode: CodecCost,
    /// JPEG encode on the edge (CHW → interleaved → JPEG), fitted over qualities and images
    /// ([`Profile::jpeg_encode`]; elements = input pixels, bytes = JPEG bytes).
    pub jpeg_encode: CodecFit,
    /// JPEG decode + normalisation on the cloud ([`Profile::jpeg_decode`]).
    pub jpeg_decode: CodecFit,
    /// The raw JPEG samples (quality, encode, decode), for reports.
    pub jpeg_samples: Vec<(u8, CodecSample, CodecSample)>,
}

/// Fits `us ≈ fixed + per_element·elements + per_byte·bytes` with all coefficients ≥ 0
/// (least squares over every subset of active coefficients; the best feasible one wins).
///
/// An empty sample set gives [`CodecCost::ZERO`] with NaN residuals.
pub fn fit_codec_cost(samples: &[CodecSample]) -> CodecFit {
    let n = samples.len();
    if n == 0 {
        return CodecFit {
            cost: CodecCost::ZERO,
            rms_residual_us: f64::NAN,
            relative_residual: f64::NAN,
            samples: 0,
        };
    }
    // Columns scaled to [0, 1] for conditioning.
    let scale_e = samples
        .iter()
        .map(|s| s.elements as f64)
        .fold(0.0, f64::max)
        .max(1.0);
    let scale_b = samples
        .iter()
        .map(|s| s.bytes as f64)
        .fold(0.0, f64::max)
        .max(1.0);
    let row = |s: &CodecSample| [1.0, s.elements as f64 / scale_e, s.bytes as f64 / scale_b];
    let mut best: Option<([f64; 3], f64)> = None;
    for mask in 1u8..8 {
        let active: Vec<usize> = (0..3).filter(|k| mask & (1 << k) != 0).collect();
        let m = active.len();
        let mut ata = [[0.0f64; 3]; 3];
        let mut atb = [0.0f64; 3];
        for s in samples {
            let r = row(s);
            for (a, &ka) in active.iter().enumerate() {
                atb[a] += r[ka] * s.us;
                for (b, &kb) in active.iter().enumerate() {
                    ata[a][b] += r[ka] * r[kb];
                }
            }
        }
        let Some(sol) = solve(&mut ata, &mut atb, m) else {
            continue;
        };
        if sol[..m].iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
            continue;
        }
        let mut coef = [0.0; 3];
        for (a, &k) in active.iter().enumerate() {
            coef[k] = sol[a];
        }
        let sse: f64 = samples
            .iter()
            .map(|s| {
                let r = row(s);
                let p = coef[0] * r[0] + coef[1] * r[1] + coef[2] * r[2];
                (p - s.us).powi(2)
            })
            .sum();
        if best.is_none_or(|(_, b)| sse < b) {
            best = Some((coef, sse));
        }
    }
    let (coef, sse) = best.unwrap_or(([0.0; 3], f64::NAN));
    let mean = samples.iter().map(|s| s.us).sum::<f64>() / n as f64;
    let rms = (sse / n as f64).sqrt();
    CodecFit {
        cost: CodecCost {
            fixed_us: coef[0],
            per_element_us: coef[1] / scale_e,
            per_byte_us: coef[2] / scale_b,
        },
        rms_residual_us: rms,
        relative_residual: if mean > 0.0 { rms / mean } else { f64::NAN },
        samples: n,
    }
}

/// Gaussian elimination with partial pivoting on the leading `m × m` system.
fn solve(a: &mut [[f64; 3]; 3], b: &mut [f64; 3], m: usize) -> Option<[f64; 3]> {
    for col in 0..m {
        let pivot = (col..m).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for r in col + 1..m {
            let f = a[r][col] / a[col][col];
            let pivot_row = a[col];
            for (dst, src) in a[r][col..m].iter_mut().zip(&pivot_row[col..m]) {
                *dst -= f * src;
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..m).rev() {
        let s: f64 = b[r]
            - a[r][r + 1..m]
                .iter()
                .zip(&x[r + 1..m])
                .map(|(c, v)| c * v)
                .sum::<f64>();
        x[r] = s / a[r][r];
    }
    Some(x)
}

/// A deterministic post-ReLU-like feature tensor (about half zeros, the rest spread over
/// `[0, 4)`), so that region selection and quantisation do realistic work.
pub fn synthetic_features(elements: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..elements)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let u = (r >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            let x = (u - 0.5) * 8.0;
            x.max(0.0)
        })
        .collect()
}

/// A deterministic photo-like 8-bit CHW image (smooth shading, an edge, texture noise of
/// amplitude `noise`), so that JPEG does realistic work: at 32×32 and quality 90 it compresses
/// to about the size of a CIFAR-10 image.
pub fn synthetic_image(shape: [usize; 3], seed: u64, noise: u8) -> Vec<u8> {
    let [c, h, w] = shape;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(c * h * w);
    let phase = (seed % 7) as f64;
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                let u = (r >> 40) as f64 / (1u64 << 24) as f64 - 0.5; // [-0.5, 0.5)
                let (fx, fy) = (x as f64 / w.max(1) as f64, y as f64 / h.max(1) as f64);
                let shade = 60.0 * (6.0 * fx + phase + ch as f64).sin() * (4.0 * fy).cos();
                let edge = if fx + 0.5 * fy > 0.6 { 40.0 } else { -20.0 };
                let v = 120.0 + 15.0 * ch as f64 + shade + edge + u * 2.0 * f64::from(noise);
                out.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}
