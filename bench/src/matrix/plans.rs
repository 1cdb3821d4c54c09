//! Which fixed plans a cell runs: the baselines and a small set of JMDC split plans picked from the
//! package's accuracy table (`calibration.json`).

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::BenchError;

/// JPEG cloud-only baselines, run only when the edge binary accepts them (q90 first: the bundled
/// CIFAR-10 copy was itself JPEG q75, so re-encoding at q75 is nearly lossless and flatters it).
pub const JPEG_BASELINES: [&str; 2] = ["jpeg90", "jpeg75"];

/// One row of the calibration table (fields the runner needs; others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CalibrationEntry {
    /// Variant (pruning level) name as in the package manifest.
    pub variant: String,
    /// Split point: `0` = cloud-only, the layer count = edge-only, else the edge runs layers
    /// `0..split`.
    pub split: usize,
    /// Region keep ratio ρ (`1.0` for cloud-only and edge-only entries).
    pub keep_ratio: f64,
    /// Split codec (`f32`, `f16`, `int2` … `int8`, `int2ac` … `int8ac`), `u8-image` or `jpegQ`
    /// (cloud-only), `none` (edge-only).
    pub codec: String,
    /// Payload bytes per frame on the wire (0 for edge-only; protocol header not included).
    pub bytes: u64,
    /// Top-1 accuracy over the calibration images, fraction.
    pub top1: f64,
}

#[derive(Debug, Deserialize)]
struct CalibrationFile {
    entries: Vec<CalibrationEntry>,
}

/// Reads the entries of a `jmdc-calibration/1` table.
pub fn load_calibration(path: &Path) -> Result<Vec<CalibrationEntry>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    let file: CalibrationFile = serde_json::from_str(&text).map_err(|e| BenchError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    if file.entries.is_empty() {
        return Err(BenchError::Calibration {
            path: path.to_path_buf(),
            message: "no entries".into(),
        });
    }
    Ok(file.entries)
}

/// What kind of plan a fixed run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanKind {
    /// The whole model on the edge; nothing is sent.
    EdgeOnly,
    /// The raw 8-bit image sent to the cloud.
    CloudOnly,
    /// The image sent to the cloud as JPEG.
    Jpeg,
    /// A split plan: head on the edge, the compressed split tensor to the cloud.
    Jmdc,
}

impl PlanKind {
    /// The name in the `strategy` column of `results.csv`.
    pub fn name(self) -> &'static str {
        match self {
            PlanKind::EdgeOnly => "edge-only",
            PlanKind::CloudOnly => "cloud-only",
            PlanKind::Jpeg => "jpeg",
            PlanKind::Jmdc => "jmdc",
        }
    }

    /// The kind of a calibration entry, from its codec name.
    pub fn of(entry: &CalibrationEntry) -> Self {
        match entry.codec.as_str() {
            "none" => PlanKind::EdgeOnly,
            "u8-image" => PlanKind::CloudOnly,
            c if c.starts_with("jpeg") => PlanKind::Jpeg,
            _ => PlanKind::Jmdc,
        }
    }
}

impl fmt::Display for PlanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fixed plan the runner passes to `jmdc-edge run --plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedPlan {
    /// The `--plan` text, always with every key (`variant=…,split=…[,keep=…,codec=…]`).
    pub spec: String,
    /// What kind of plan it is.
    pub kind: PlanKind,
    /// Top-1 from the table (fraction), when it has the plan.
    pub calibrated_top1: Option<f64>,
    /// Request bytes from the table, when it has the plan.
    pub calibrated_bytes: Option<u64>,
    /// Why it was chosen.
    pub why: String,
}

impl FixedPlan {
    fn from_entry(e: &CalibrationEntry, why: impl Into<String>) -> Self {
        Self {
            spec: spec_of(e),
            kind: PlanKind::of(e),
            calibrated_top1: Some(e.top1),
            calibrated_bytes: Some(e.bytes),
            why: why.into(),
        }
    }

    /// True when its calibrated top-1 meets the floor (a fraction); plans without a calibrated
    /// figure never do.
    pub fn meets(&self, floor: f64) -> bool {
        self.calibrated_top1.is_some_and(|t| t >= floor)
    }
}

/// The `--plan` text of a calibration entry.
pub fn spec_of(e: &CalibrationEntry) -> String {
    match PlanKind::of(e) {
        PlanKind::EdgeOnly => format!("variant={},split=edge-only", e.variant),
        PlanKind::CloudOnly => format!("variant={},split=cloud-only", e.variant),
        PlanKind::Jpeg => format!("variant={},split=cloud-only,codec={}", e.variant, e.codec),
        PlanKind::Jmdc => format!(
            "variant={},split={},keep={},codec={}",
            e.variant, e.split, e.keep_ratio, e.codec
        ),
    }
}

/// The JMDC split plans: entries meeting `floor` (a fraction) that are Pareto-optimal in
/// (bytes ↓, top-1 ↑) among the split entries (edge-only sends 0 B at full accuracy and would
/// dominate everything, so the comparison is among splits), plus for every split the cheapest entry
/// meeting the floor; of entries with equal bytes and top-1 the first in table order is kept. At
/// most `cap` plans: all Pareto plans first (thinned evenly by bytes if they alone exceed the cap),
/// then the per-split plans spread evenly over the splits.
pub fn select_jmdc(entries: &[CalibrationEntry], floor: f64, cap: usize) -> Vec<FixedPlan> {
    let eligible: Vec<&CalibrationEntry> = entries
        .iter()
        .filter(|e| PlanKind::of(e) == PlanKind::Jmdc && e.top1 >= floor)
        .collect();
    let dominated = |x: &CalibrationEntry| {
        eligible.iter().any(|y| {
            y.bytes <= x.bytes && y.top1 >= x.top1 && (y.bytes < x.bytes || y.top1 > x.top1)
        })
    };
    let mut pareto: Vec<&CalibrationEntry> = Vec::new();
    for e in eligible.iter().copied() {
        if !dominated(e)
            && !pareto
                .iter()
                .any(|p| p.bytes == e.bytes && p.top1 == e.top1)
        {
            pareto.push(e);
        }
    }
    pareto.sort_by_key(|e| e.bytes);

    let mut splits: Vec<usize> = eligible.iter().map(|e| e.split).collect();
    splits.sort_unstable();
    splits.dedup();
    let mut cheapest: Vec<&CalibrationEntry> = Vec::new();
    for s in splits {
        let best = eligible.iter().copied().filter(|e| e.split == s).fold(
            None::<&CalibrationEntry>,
            |best, e| match best {
                Some(b) if (b.bytes, -b.top1) <= (e.bytes, -e.top1) => Some(b),
                _ => Some(e),
            },
        );
        if let Some(e) = best {
            if !pareto.iter().any(|p| spec_of(p) == spec_of(e)) {
                cheapest.push(e);
            }
        }
    }

    let mut chosen: Vec<FixedPlan> = spread(&pareto, cap)
        .into_iter()
        .map(|e| FixedPlan::from_entry(e, "Pareto (bytes, top-1)"))
        .collect();
    let room = cap.saturating_sub(chosen.len());
    chosen.extend(
        spread(&cheapest, room)
            .into_iter()
            .map(|e| FixedPlan::from_entry(e, format!("cheapest at split {}", e.split))),
    );
    chosen
}

/// Cloud-only plans of the pruned variants that meet `floor` (the raw image or a JPEG of it to a
/// pruned model in the cloud: cheaper there than keep100, and the JMDC loop may choose them). Counted as JMDC plans
/// (pruning is JMDC's), not as the cloud-only baseline (keep100).
pub fn pruned_cloud_only(entries: &[CalibrationEntry], floor: f64) -> Vec<FixedPlan> {
    entries
        .iter()
        .filter(|e| {
            matches!(PlanKind::of(e), PlanKind::CloudOnly | PlanKind::Jpeg)
                && e.variant != "keep100"
                && e.top1 >= floor
        })
        .map(|e| FixedPlan {
            kind: PlanKind::Jmdc,
            ..FixedPlan::from_entry(e, "cloud-only with a pruned variant")
        })
        .collect()
}

/// At most `n` items of `items`, evenly spaced (first and last kept when n ≥ 2).
fn spread<T: Copy>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    match n {
        0 => Vec::new(),
        1 => items.first().copied().into_iter().collect(),
        _ => {
            let last = items.len() - 1;
            let mut idx: Vec<usize> = (0..n)
                .map(|i| ((i * last) as f64 / (n - 1) as f64).round() as usize)
                .collect();
            idx.dedup();
            idx.into_iter()
                .filter_map(|i| items.get(i).copied())
                .collect()
        }
    }
}

/// The baselines: edge-only for every variant in the table, cloud-only with the raw 8-bit image
/// (keep100), and the JPEG cloud-only plans of `jpeg_codecs` (keep100).
pub fn baselines(entries: &[CalibrationEntry], jpeg_codecs: &[&str]) -> Vec<FixedPlan> {
    let mut plans: Vec<FixedPlan> = entries
        .iter()
        .filter(|e| PlanKind::of(e) == PlanKind::EdgeOnly)
        .map(|e| FixedPlan::from_entry(e, "baseline: edge-only"))
        .collect();
    let find = |codec: &str| {
        entries
            .iter()
            .find(|e| e.variant == "keep100" && e.split == 0 && e.codec == codec)
    };
    plans.push(match find("u8-image") {
        Some(e) => FixedPlan::from_entry(e, "baseline: cloud-only raw image"),
        None => FixedPlan {
            spec: "variant=keep100,split=cloud-only".into(),
            kind: PlanKind::CloudOnly,
            calibrated_top1: None,
            calibrated_bytes: None,
            why: "baseline: cloud-only raw image (not in the table)".into(),
        },
    });
    for codec in jpeg_codecs {
        plans.push(match find(codec) {
            Some(e) => FixedPlan::from_entry(e, format!("baseline: cloud-only {codec}")),
            None => FixedPlan {
                spec: format!("variant=keep100,split=cloud-only,codec={codec}"),
                kind: PlanKind::Jpeg,
                calibrated_top1: None,
                calibrated_bytes: None,
                why: format!(
                    "baseline: cloud-only {codec} (not in the table: not oracle-eligible)"
                ),
            },
        });
    }
    plans
}

/// A short label for figures: `keep050 split@6 keep=1.00 int3` → `k050@6 ρ1.00 int3`.
pub fn short_label(label: &str) -> String {
    let parts: Vec<&str> = label.split_whitespace().collect();
    let variant = parts
        .first()
        .map(|v| v.replace("keep", "k"))
        .unwrap_or_default();
    match parts.get(1).copied() {
        Some("edge-only") => format!("{variant} edge"),
        Some("cloud-only") => {
            if let Some(q) = parts.iter().find(|p| p.starts_with('q')) {
                format!("{variant} cloud jpeg{}", q.trim_start_matches('q'))
            } else {
                format!("{variant} cloud raw")
            }
        }
        Some(split) if split.starts_with("split@") => {
            let s = split.trim_start_matches("split@");
            let rho = parts
                .get(2)
                .map(|k| k.trim_start_matches("keep="))
                .unwrap_or("");
            let codec = parts.get(3).copied().unwrap_or("");
            format!("{variant}@{s} ρ{rho} {codec}")
        }
        _ => label.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(
        variant: &str,
        split: usize,
        keep: f64,
        codec: &str,
        bytes: u64,
        top1: f64,
    ) -> CalibrationEntry {
        CalibrationEntry {
            variant: variant.into(),
            split,
            keep_ratio: keep,
            codec: codec.into(),
            bytes,
            top1,
        }
    }

    fn table() -> Vec<CalibrationEntry> {
        vec![
            e("keep100", 0, 1.0, "u8-image", 3072, 0.83),
            e("keep100", 13, 1.0, "none", 0, 0.83),
            e("keep050", 13, 1.0, "none", 0, 0.82),
            e("keep100", 0, 1.0, "jpeg90", 1120, 0.826),
            // split 3: Pareto point (cheap, good) and a dominated one
            e("keep100", 3, 1.0, "int4", 500, 0.83),
            e("keep100", 3, 1.0, "int8", 900, 0.83),
            // split 6: an exact tie with a later duplicate, both Pareto-optimal candidates
            e("keep050", 6, 1.0, "int2", 100, 0.81),
            e("keep050", 6, 0.5, "int2", 100, 0.81),
            // split 6: below the floor, cheaper
            e("keep050", 6, 0.25, "int2", 60, 0.70),
            // split 9: not Pareto (dominated by split 6 int2) but the cheapest at split 9
            e("keep050", 9, 1.0, "int2", 150, 0.805),
            e("keep050", 9, 1.0, "int4", 250, 0.81),
        ]
    }

    #[test]
    fn pareto_and_cheapest_per_split() {
        let chosen = select_jmdc(&table(), 0.80, 12);
        let specs: Vec<&str> = chosen.iter().map(|p| p.spec.as_str()).collect();
        assert_eq!(
            specs,
            vec![
                "variant=keep050,split=6,keep=1,codec=int2",
                "variant=keep100,split=3,keep=1,codec=int4",
                "variant=keep050,split=9,keep=1,codec=int2",
            ]
        );
        assert!(chosen[2].why.contains("split 9"));
        assert!(chosen
            .iter()
            .all(|p| p.kind == PlanKind::Jmdc && p.meets(0.80)));
    }

    #[test]
    fn cap_keeps_pareto_first_and_spreads_the_rest() {
        assert_eq!(select_jmdc(&table(), 0.80, 2).len(), 2);
        assert!(select_jmdc(&table(), 0.80, 2)
            .iter()
            .all(|p| p.why.starts_with("Pareto")));
        assert_eq!(spread(&[1, 2, 3, 4, 5], 3), vec![1, 3, 5]);
        assert_eq!(spread(&[1, 2, 3], 0), Vec::<i32>::new());
        assert_eq!(spread(&[1, 2], 5), vec![1, 2]);
    }

    #[test]
    fn baselines_cover_edge_cloud_and_jpeg() {
        let b = baselines(&table(), &["jpeg90", "jpeg75"]);
        let specs: Vec<&str> = b.iter().map(|p| p.spec.as_str()).collect();
        assert_eq!(
            specs,
            vec![
                "variant=keep100,split=edge-only",
                "variant=keep050,split=edge-only",
                "variant=keep100,split=cloud-only",
                "variant=keep100,split=cloud-only,codec=jpeg90",
                "variant=keep100,split=cloud-only,codec=jpeg75",
            ]
        );
        assert_eq!(b[3].calibrated_top1, Some(0.826));
        assert_eq!(b[4].calibrated_top1, None);
        assert!(!b[4].meets(0.8));
    }

    #[test]
    fn pruned_cloud_only_plans_meet_the_floor() {
        let mut t = table();
        t.push(e("keep050", 0, 1.0, "u8-image", 3072, 0.82));
        t.push(e("keep025", 0, 1.0, "u8-image", 3072, 0.77));
        let p = pruned_cloud_only(&t, 0.80);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].spec, "variant=keep050,split=cloud-only");
        assert_eq!(p[0].kind, PlanKind::Jmdc);
    }

    #[test]
    fn short_labels() {
        assert_eq!(
            short_label("keep050 split@6 keep=1.00 int3"),
            "k050@6 ρ1.00 int3"
        );
        assert_eq!(short_label("keep100 edge-only"), "k100 edge");
        assert_eq!(
            short_label("keep100 cloud-only (u8 image)"),
            "k100 cloud raw"
        );
        assert_eq!(
            short_label("keep100 cloud-only jpeg q90"),
            "k100 cloud jpeg90"
        );
    }
}
