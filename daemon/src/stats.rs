//! Per-frame timings and the run summary (top-1, latency percentiles per stage, bytes per frame).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What happened to one frame.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FrameRecord {
    /// Frame id (delivery order from the source).
    pub frame_id: u64,
    /// Where the frame came from (file name, device), when the source says.
    pub origin: Option<String>,
    /// Ground truth, when the source knows it.
    pub label: Option<u8>,
    /// Predicted class index.
    pub predicted: usize,
    /// Raw score (logit) of the predicted class.
    pub score: f32,
    /// Softmax probability of the predicted class.
    pub probability: f32,
    /// Softmax probability of every class, by class index (for `[output] top_k` and `scores`).
    #[serde(skip)]
    pub probabilities: Vec<f32>,
    /// From capture to the start of processing (waiting for a free pipeline slot).
    pub queue_us: u64,
    /// Head layers on the edge (plus the tail when the frame was finished on the edge).
    pub edge_us: u64,
    /// Feature encoding on the edge.
    pub encode_us: u64,
    /// Round trip minus the time the worker reported for itself.
    pub network_us: u64,
    /// Decode + tail layers + queueing in the worker, as reported by it.
    pub cloud_us: u64,
    /// From the start of processing to the result.
    pub total_us: u64,
    /// Message bytes sent for the frame, header included: its compact frame (protocol version 2;
    /// the context binding, once per plan and connection, is not counted) or its whole request
    /// (0 when nothing was sent).
    pub bytes: usize,
    /// True when the cloud failed and the edge finished the frame.
    pub fallback: bool,
    /// The plan used for this frame.
    pub plan: String,
    /// Latency the optimizer predicted for this plan (adaptive runs), measured corrections included.
    pub predicted_us: Option<u64>,
    /// The model's parts of that prediction (adaptive runs), to compare with the measured parts.
    pub predicted_parts: Option<PredictedParts>,
}

/// The latency model's prediction for one frame, per part, in microseconds; each part is compared
/// with the measured field of the same name in [`FrameRecord`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PredictedParts {
    /// Head layers on the (emulated) edge × load factor.
    pub edge_us: u64,
    /// Feature encoding on the edge.
    pub encode_us: u64,
    /// Transfer (bytes ÷ bandwidth) + propagation round trip.
    pub network_us: u64,
    /// Worker decode + tail layers.
    pub cloud_us: u64,
    /// What the loop learned from measuring this plan (measured − modelled), may be negative.
    pub correction_us: i64,
}

impl FrameRecord {
    /// Stamps the loop's prediction for this frame's plan.
    pub fn set_prediction(&mut self, prediction: Option<&crate::adaptive::Prediction>) {
        let us = |s: f64| (s.max(0.0) * 1e6).round() as u64;
        self.predicted_us = prediction.map(|p| us(p.latency_s));
        self.predicted_parts = prediction.map(|p| {
            let b = &p.breakdown;
            PredictedParts {
                edge_us: us(b.edge_s),
                encode_us: us(b.encode_s),
                network_us: us(b.transfer_s + b.rtt_s),
                cloud_us: us(b.cloud_s + b.decode_s),
                correction_us: (b.measured_correction_s * 1e6).round() as i64,
            }
        });
    }

    /// Whether the prediction matches the label (`None` without a label).
    pub fn correct(&self) -> Option<bool> {
        self.label.map(|l| usize::from(l) == self.predicted)
    }
}

/// Mean and percentiles of one stage, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
}

impl Percentiles {
    /// Mean and percentiles of `values` (sorted in place; all zero when empty).
    pub fn of(values: &mut [u64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        Self {
            mean,
            p50: nearest_rank(values, 0.50),
            p95: nearest_rank(values, 0.95),
        }
    }
}

fn nearest_rank(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// Summary of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The plan (or `adaptive (…)`) of the run.
    pub plan: String,
    /// Frames processed.
    pub frames: usize,
    /// Frames with a label.
    pub labelled: usize,
    /// Labelled frames predicted right.
    pub correct: usize,
    /// `correct / labelled` (no labels: `None`).
    pub top1: Option<f64>,
    /// Frames the edge finished because the cloud failed.
    pub fallbacks: usize,
    /// Head (and fallback tail) time per frame.
    pub edge: Percentiles,
    /// Encoding time per frame.
    pub encode: Percentiles,
    /// Network time per frame.
    pub network: Percentiles,
    /// Worker time per frame.
    pub cloud: Percentiles,
    /// Whole latency per frame.
    pub total: Percentiles,
    /// Mean bytes sent per frame.
    pub bytes_per_frame: f64,
    /// Wall-clock length of the run, seconds.
    pub wall_s: f64,
    /// Mean |measured − predicted| / measured over frames with a prediction (adaptive runs).
    pub prediction_error: Option<f64>,
    /// Per part, (mean measured − mean modelled) ÷ mean measured latency of the frames with a
    /// prediction (cloud frames only for the networked parts): where the model is off.
    pub prediction_bias: Option<PartBias>,
    /// The edge speed the run was made at (`native`, or `emulated pi4 (×…)`: figures are emulated).
    pub edge_speed: String,
    /// Distinct plans used, in order of first use.
    pub plans_used: Vec<String>,
}

impl Summary {
    /// The summary of `records`, a run of `wall` under `plan`.
    pub fn from_records(plan: String, records: &[FrameRecord], wall: Duration) -> Self {
        let column = |f: fn(&FrameRecord) -> u64| {
            let mut v: Vec<u64> = records.iter().map(f).collect();
            Percentiles::of(&mut v)
        };
        let labelled = records.iter().filter(|r| r.label.is_some()).count();
        let correct = records.iter().filter(|r| r.correct() == Some(true)).count();
        let bytes: usize = records.iter().map(|r| r.bytes).sum();
        Self {
            plan,
            frames: records.len(),
            labelled,
            correct,
            top1: (labelled > 0).then(|| correct as f64 / labelled as f64),
            fallbacks: records.iter().filter(|r| r.fallback).count(),
            edge: column(|r| r.edge_us),
            encode: column(|r| r.encode_us),
            network: column(|r| r.network_us),
            cloud: column(|r| r.cloud_us),
            total: column(|r| r.total_us),
            bytes_per_frame: if records.is_empty() {
                0.0
            } else {
                bytes as f64 / records.len() as f64
            },
            wall_s: wall.as_secs_f64(),
            prediction_error: prediction_error(records),
            prediction_bias: PartBias::of(records),
            edge_speed: "native".into(),
            plans_used: records.iter().fold(Vec::new(), |mut seen, r| {
                if !seen.contains(&r.plan) {
                    seen.push(r.plan.clone());
                }
                seen
            }),
        }
    }
}

/// Model bias per latency part, as a fraction of the mean measured total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PartBias {
    /// Head layers.
    pub edge: f64,
    /// Encoding.
    pub encode: f64,
    /// Transfer and round trip.
    pub network: f64,
    /// Decode and tail in the worker.
    pub cloud: f64,
    /// The measured corrections the loop applied.
    pub correction: f64,
    /// Whole latency: (mean measured − mean predicted) ÷ mean measured — the error of the
    /// prediction on average, without the frame-to-frame noise that `prediction_error` includes.
    pub total: f64,
}

impl PartBias {
    fn of(records: &[FrameRecord]) -> Option<Self> {
        let with: Vec<(&FrameRecord, &PredictedParts)> = records
            .iter()
            .filter(|r| !r.fallback)
            .filter_map(|r| r.predicted_parts.as_ref().map(|p| (r, p)))
            .collect();
        if with.is_empty() {
            return None;
        }
        let n = with.len() as f64;
        let total = with.iter().map(|(r, _)| r.total_us as f64).sum::<f64>() / n;
        if total <= 0.0 {
            return None;
        }
        let bias = |m: fn(&FrameRecord) -> u64, p: fn(&PredictedParts) -> u64| {
            with.iter()
                .map(|(r, q)| m(r) as f64 - p(q) as f64)
                .sum::<f64>()
                / n
                / total
        };
        Some(PartBias {
            edge: bias(|r| r.edge_us, |p| p.edge_us),
            encode: bias(|r| r.encode_us, |p| p.encode_us),
            network: bias(|r| r.network_us, |p| p.network_us),
            cloud: bias(|r| r.cloud_us, |p| p.cloud_us),
            correction: with
                .iter()
                .map(|(_, q)| q.correction_us as f64)
                .sum::<f64>()
                / n
                / total,
            total: with
                .iter()
                .map(|(r, _)| r.total_us as f64 - r.predicted_us.unwrap_or(0) as f64)
                .sum::<f64>()
                / n
                / total,
        })
    }
}

fn prediction_error(records: &[FrameRecord]) -> Option<f64> {
    let errors: Vec<f64> = records
        .iter()
        .filter(|r| r.total_us > 0)
        .filter_map(|r| {
            r.predicted_us
                .map(|p| (r.total_us as f64 - p as f64).abs() / r.total_us as f64)
        })
        .collect();
    (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan: {}", self.plan)?;
        if self.edge_speed != "native" {
            writeln!(f, "edge: {} — edge timings are EMULATED", self.edge_speed)?;
        }
        match self.top1 {
            Some(t) => writeln!(
                f,
                "frames: {}  top-1: {:.2} % ({}/{})  fallbacks: {}",
                self.frames,
                t * 100.0,
                self.correct,
                self.labelled,
                self.fallbacks
            )?,
            None => writeln!(f, "frames: {}  fallbacks: {}", self.frames, self.fallbacks)?,
        }
        writeln!(f, "latency ms     mean      p50      p95")?;
        for (name, p) in [
            ("edge", self.edge),
            ("encode", self.encode),
            ("network", self.network),
            ("cloud", self.cloud),
            ("total", self.total),
        ] {
            writeln!(
                f,
                "  {name:<9} {:>8.3} {:>8.3} {:>8.3}",
                ms(p.mean),
                ms(p.p50),
                ms(p.p95)
            )?;
        }
        write!(f, "bytes/frame: {:.1}", self.bytes_per_frame)?;
        if let Some(e) = self.prediction_error {
            write!(
                f,
                "\nplans used: {}\nlatency prediction error (mean |measured − predicted| / measured): {:.1} %",
                self.plans_used.join(" → "),
                e * 100.0
            )?;
        }
        if let Some(b) = self.prediction_bias {
            write!(
                f,
                "\nmean prediction error (mean measured − mean predicted) / mean measured: {:+.1} %\nmodel bias (measured − modelled, % of mean total): edge {:+.1}, encode {:+.1}, network {:+.1}, cloud {:+.1}; learned correction {:+.1}",
                b.total * 100.0,
                b.edge * 100.0,
                b.encode * 100.0,
                b.network * 100.0,
                b.cloud * 100.0,
                b.correction * 100.0
            )?;
        }
        Ok(())
    }
}

/// A side-by-side table of several runs.
pub fn comparison_table(summaries: &[Summary]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<40} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
        "plan", "top-1%", "edge ms", "enc ms", "net ms", "cloud ms", "total ms", "bytes/fr"
    ));
    for s in summaries {
        out.push_str(&format!(
            "{:<40} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.1}\n",
            s.plan,
            s.top1
                .map(|t| format!("{:.2}", t * 100.0))
                .unwrap_or_else(|| "-".into()),
            ms(s.edge.mean),
            ms(s.encode.mean),
            ms(s.network.mean),
            ms(s.cloud.mean),
            ms(s.total.mean),
            s.bytes_per_frame
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(p.p50, 50.0);
        assert_eq!(p.p95, 95.0);
        assert!((p.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn summary_counts_accuracy_and_fallbacks() {
        let records = vec![
            FrameRecord {
                label: Some(1),
                predicted: 1,
                bytes: 100,
                ..Default::default()
            },
            FrameRecord {
                label: Some(2),
                predicted: 1,
                bytes: 300,
                fallback: true,
                ..Default::default()
            },
        ];
        let s = Summary::from_records("p".into(), &records, Duration::from_secs(1));
        assert_eq!(s.top1, Some(0.5));
        assert_eq!(s.fallbacks, 1);
        assert_eq!(s.bytes_per_frame, 200.0);
    }
}
