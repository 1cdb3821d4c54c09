//! The edge's `--summary-json` output (a list of `jmdc_edge::stats::Summary` objects), read with
//! the fields the runner needs; unknown fields are ignored so the daemon can add more.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::BenchError;

/// Mean and percentiles of one stage, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Percentiles {
    /// Mean over the frames, µs.
    #[serde(default)]
    pub mean: f64,
    /// Median (nearest rank), µs.
    #[serde(default)]
    pub p50: f64,
    /// 95th percentile (nearest rank), µs.
    #[serde(default)]
    pub p95: f64,
}

/// One plan's (or the adaptive loop's) run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EdgeSummary {
    /// The plan of the run (`keep050 split@6 keep=1.00 int3`, or `adaptive (…)`).
    pub plan: String,
    /// Frames processed.
    pub frames: usize,
    /// Labelled frames predicted right ÷ labelled frames; `None` without labels.
    #[serde(default)]
    pub top1: Option<f64>,
    /// Frames the edge finished itself because the cloud failed.
    #[serde(default)]
    pub fallbacks: usize,
    /// Whole latency per frame.
    pub total: Percentiles,
    /// Network time per frame: round trip minus the worker's own time.
    #[serde(default)]
    pub network: Percentiles,
    /// Mean bytes sent per frame.
    #[serde(default)]
    pub bytes_per_frame: f64,
    /// Wall-clock length of the run, s.
    #[serde(default)]
    pub wall_s: f64,
    /// Mean over frames of |measured − predicted| ÷ measured latency (adaptive runs).
    #[serde(default)]
    pub prediction_error: Option<f64>,
    /// |mean measured − mean predicted| ÷ mean measured: the error of the prediction on average,
    /// without the frame-to-frame noise in `prediction_error` (computed by
    /// [`summarise_frames`]; the daemon's own summary reports it per part).
    #[serde(skip)]
    pub prediction_bias: Option<f64>,
    /// The edge speed of the run: `native`, or `emulated pi4 (×…)` when the edge timings are
    /// emulated.
    #[serde(default)]
    pub edge_speed: String,
    /// Plans used, in order of first use; `label=count` with frame counts when made by
    /// [`summarise_frames`].
    #[serde(default)]
    pub plans_used: Vec<String>,
}

impl EdgeSummary {
    /// Frames per second over the run's wall time.
    pub fn fps(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.frames as f64 / self.wall_s)
    }
}

/// Parses the text of a summary file.
pub fn parse_summaries(text: &str) -> Result<Vec<EdgeSummary>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads a summary file.
pub fn read_summaries(path: &Path) -> Result<Vec<EdgeSummary>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    parse_summaries(&text).map_err(|e| BenchError::Json {
        path: path.to_path_buf(),
        source: e,
    })
}

/// One per-frame JSON line of the edge (`daemon/src/output.rs` `ResultLine`), the fields used here.
#[derive(Debug, Clone, Deserialize)]
pub struct FrameLine {
    /// Frame id (delivery order from the source, from 0).
    pub frame: u64,
    /// When the result was written, ms since the Unix epoch.
    #[serde(default)]
    pub unix_ms: Option<u64>,
    /// Ground truth, when the source knows it.
    #[serde(default)]
    pub label: Option<String>,
    /// Predicted class name.
    #[serde(default)]
    pub class: Option<String>,
    /// The plan the frame ran under.
    pub plan: String,
    /// True when the plan wanted the cloud but the edge finished the frame.
    #[serde(default)]
    pub fallback: bool,
    /// Where the frame's time went.
    pub latency_ms: FrameLatency,
    /// The latency the adaptive loop predicted for the plan, ms (adaptive runs).
    #[serde(default)]
    pub predicted_ms: Option<f64>,
    /// Bytes sent for the frame (0: nothing was sent).
    #[serde(default)]
    pub bytes: u64,
}

/// Latency of one frame, ms.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct FrameLatency {
    /// Whole latency of the frame, ms.
    pub total: f64,
    /// Round trip minus the worker's own time, ms.
    #[serde(default)]
    pub network: f64,
}

/// The figures of frames `range` (by frame number) of a per-frame JSON-lines file, as the edge's
/// summary would give them for those frames alone; `None` when none of them is there. Used for
/// the adaptive loop's runs, whose first frames (start-up, first decisions) are reported apart
/// from the frames after them. `wall_s` runs from the first frame's start to the last one's end.
pub fn summarise_frames(
    text: &str,
    range: std::ops::Range<u64>,
    plan: &str,
    edge_speed: &str,
) -> Option<EdgeSummary> {
    let lines: Vec<FrameLine> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<FrameLine>(l).ok())
        .filter(|f| range.contains(&f.frame))
        .collect();
    let first = lines.first()?;
    let n = lines.len() as f64;
    let mut totals: Vec<f64> = lines.iter().map(|f| f.latency_ms.total * 1000.0).collect();
    totals.sort_by(f64::total_cmp);
    let labelled: Vec<&FrameLine> = lines.iter().filter(|f| f.label.is_some()).collect();
    let correct = labelled.iter().filter(|f| f.label == f.class).count();
    let predicted: Vec<(f64, f64)> = lines
        .iter()
        .filter(|f| !f.fallback && f.latency_ms.total > 0.0)
        .filter_map(|f| f.predicted_ms.map(|p| (f.latency_ms.total, p)))
        .collect();
    let prediction_error = (!predicted.is_empty()).then(|| {
        predicted
            .iter()
            .map(|(m, p)| (m - p).abs() / m)
            .sum::<f64>()
            / predicted.len() as f64
    });
    let prediction_bias = (!predicted.is_empty()).then(|| {
        let measured: f64 = predicted.iter().map(|(m, _)| m).sum();
        let modelled: f64 = predicted.iter().map(|(_, p)| p).sum();
        (measured - modelled).abs() / measured
    });
    let wall_s = match (first.unix_ms, lines.last().and_then(|l| l.unix_ms)) {
        (Some(a), Some(b)) => (b.saturating_sub(a) as f64 + first.latency_ms.total) / 1000.0,
        _ => 0.0,
    };
    let counts = count_plans(lines.iter().map(|f| f.plan.as_str()));
    Some(EdgeSummary {
        plan: plan.to_string(),
        frames: lines.len(),
        top1: (!labelled.is_empty()).then(|| correct as f64 / labelled.len() as f64),
        fallbacks: lines.iter().filter(|f| f.fallback).count(),
        total: Percentiles {
            mean: totals.iter().sum::<f64>() / n,
            p50: nearest_rank(&totals, 0.50),
            p95: nearest_rank(&totals, 0.95),
        },
        network: Percentiles {
            mean: lines
                .iter()
                .map(|f| f.latency_ms.network * 1000.0)
                .sum::<f64>()
                / n,
            ..Percentiles::default()
        },
        bytes_per_frame: lines.iter().map(|f| f.bytes as f64).sum::<f64>() / n,
        wall_s,
        prediction_error,
        prediction_bias,
        edge_speed: edge_speed.to_string(),
        plans_used: counts
            .into_iter()
            .map(|(p, c)| format!("{p}={c}"))
            .collect(),
    })
}

/// The daemon's percentile rule (`jmdc_edge::stats`): nearest rank of sorted values.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Frames per plan of a per-frame JSON-lines file, in order of first use; lines that do not
/// parse are counted in the second value.
pub fn plan_frame_counts(text: &str) -> (Vec<(String, usize)>, usize) {
    let mut plans: Vec<String> = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<FrameLine>(line) {
            Ok(f) => plans.push(f.plan),
            Err(_) => bad += 1,
        }
    }
    (count_plans(plans.iter().map(String::as_str)), bad)
}

/// Frames per plan, in order of first use.
fn count_plans<'a>(plans: impl Iterator<Item = &'a str>) -> Vec<(String, usize)> {
    let mut order: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in plans {
        let n = counts.entry(p).or_insert(0);
        if *n == 0 {
            order.push(p.to_string());
        }
        *n += 1;
    }
    order
        .into_iter()
        .map(|p| {
            let n = counts.get(p.as_str()).copied().unwrap_or(0);
            (p, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_daemon_summary() {
        let text = r#"[{"plan":"adaptive","frames":64,"labelled":64,"correct":52,"top1":0.8125,
            "fallbacks":0,"edge":{"mean":1.0,"p50":1.0,"p95":2.0},"encode":{"mean":0,"p50":0,"p95":0},
            "network":{"mean":3000.5,"p50":3000,"p95":4000},"cloud":{"mean":0,"p50":0,"p95":0},
            "total":{"mean":9200.0,"p50":9000.0,"p95":13270.0},"bytes_per_frame":2734.375,
            "wall_s":0.76,"prediction_error":0.14,"prediction_bias":null,
            "edge_speed":"emulated pi4 (×8)","plans_used":["keep050 edge-only","keep050 cloud-only (u8 image)"],
            "some_future_field":1}]"#;
        let s = parse_summaries(text).expect("parses");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].frames, 64);
        assert_eq!(s[0].total.p95, 13270.0);
        assert_eq!(s[0].network.mean, 3000.5);
        assert_eq!(s[0].prediction_error, Some(0.14));
        assert_eq!(s[0].plans_used.len(), 2);
        assert!((s[0].fps().expect("fps") - 64.0 / 0.76).abs() < 1e-9);
        // a fixed plan: no prediction, no top-1 when unlabelled
        let fixed = r#"[{"plan":"keep100 edge-only","frames":2,"top1":null,"total":{"mean":1,"p50":1,"p95":1}}]"#;
        let s = parse_summaries(fixed).expect("parses");
        assert_eq!(s[0].prediction_error, None);
        assert_eq!(s[0].top1, None);
        assert!(parse_summaries(r#"[{"frames":1}]"#).is_err());
    }

    #[test]
    fn summarises_a_range_of_frames() {
        let line = |frame: u64,
                    plan: &str,
                    total: f64,
                    predicted: f64,
                    label: &str,
                    class: &str| {
            format!(
                r#"{{"frame":{frame},"unix_ms":{},"label":"{label}","class":"{class}","plan":"{plan}","fallback":false,"latency_ms":{{"queue":0,"edge":1,"encode":0,"network":0.5,"cloud":0,"total":{total}}},"predicted_ms":{predicted},"bytes":100}}"#,
                1000 + frame * 10
            )
        };
        let text = [
            line(0, "A", 9.0, 3.0, "cat", "dog"),
            line(1, "A", 8.0, 3.0, "cat", "cat"),
            line(2, "B", 2.0, 2.5, "cat", "cat"),
            line(3, "B", 4.0, 3.0, "dog", "cat"),
            line(4, "A", 3.0, 3.0, "dog", "dog"),
        ]
        .join("\n");
        let s = summarise_frames(&text, 2..5, "adaptive", "native").expect("frames 2-4");
        assert_eq!(s.frames, 3);
        assert!((s.top1.expect("labelled") - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.total.mean - 3000.0).abs() < 1e-9);
        assert_eq!(s.total.p50, 3000.0);
        assert_eq!(s.total.p95, 4000.0);
        assert!((s.network.mean - 500.0).abs() < 1e-9);
        // per frame: 0.25, 0.25, 0 → mean 1/6; on average: |9 − 8.5| ÷ 9
        assert!((s.prediction_error.expect("predicted") - 1.0 / 6.0).abs() < 1e-12);
        assert!((s.prediction_bias.expect("predicted") - 0.5 / 9.0).abs() < 1e-12);
        assert_eq!(s.plans_used, vec!["B=2".to_string(), "A=1".to_string()]);
        // 20 ms between the first and last result, plus the first frame's 2 ms
        assert!((s.wall_s - 0.022).abs() < 1e-12);
        assert!(summarise_frames(&text, 10..20, "adaptive", "native").is_none());
    }

    #[test]
    fn counts_frames_per_plan() {
        let text = concat!(
            r#"{"frame":0,"class":"cat","class_index":3,"score":0.9,"plan":"A","finished_on":"edge","fallback":false,"latency_ms":{"queue":0,"edge":1,"encode":0,"network":0,"cloud":0,"total":1},"bytes":0}"#,
            "\n",
            r#"{"frame":1,"plan":"B","latency_ms":{"total":2},"bytes":10}"#,
            "\n",
            r#"{"frame":2,"plan":"A","latency_ms":{"total":2},"bytes":0}"#,
            "\nnot json\n"
        );
        let (counts, bad) = plan_frame_counts(text);
        assert_eq!(counts, vec![("A".to_string(), 2), ("B".to_string(), 1)]);
        assert_eq!(bad, 1);
    }
}
