//! The edge's `--summary-json` output (a list of `jmdc_edge::stats::Summary` objects), read with
//! the fields the runner needs; unknown fields are ignored so the daemon can add more.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::BenchError;

/// Mean and percentiles of one stage, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Percentiles {
    #[serde(default)]
    pub mean: f64,
    #[serde(default)]
    pub p50: f64,
    #[serde(default)]
    pub p95: f64,
}

/// One plan's (or the adaptive loop's) run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EdgeSummary {
    pub plan: String,
    pub frames: usize,
    #[serde(default)]
    pub top1: Option<f64>,
    #[serde(default)]
    pub fallbacks: usize,
    pub total: Percentiles,
    #[serde(default)]
    pub network: Percentiles,
    #[serde(default)]
    pub bytes_per_frame: f64,
    #[serde(default)]
    pub wall_s: f64,
    #[serde(default)]
    pub prediction_error: Option<f64>,
    #[serde(default)]
    pub edge_speed: String,
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
    pub frame: u64,
    pub plan: String,
    #[serde(default)]
    pub fallback: bool,
    pub latency_ms: FrameLatency,
    #[serde(default)]
    pub predicted_ms: Option<f64>,
    #[serde(default)]
    pub bytes: u64,
}

/// Latency of one frame, ms.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct FrameLatency {
    pub total: f64,
}

/// Frames per plan of a per-frame JSON-lines file, in order of first use; lines that do not
/// parse are counted in the second value.
pub fn plan_frame_counts(text: &str) -> (Vec<(String, usize)>, usize) {
    let mut order: Vec<String> = Vec::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<FrameLine>(line) {
            Ok(f) => {
                if !counts.contains_key(&f.plan) {
                    order.push(f.plan.clone());
                }
                *counts.entry(f.plan).or_insert(0) += 1;
            }
            Err(_) => bad += 1,
        }
    }
    let list = order
        .into_iter()
        .map(|p| {
            let n = counts.get(&p).copied().unwrap_or(0);
            (p, n)
        })
        .collect();
    (list, bad)
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
