//! `results.csv`: one row per cell × strategy/plan × repeat — everything the report is made from.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::cells::{Cell, Load, Profile};
use super::csvio;
use super::error::BenchError;
use super::plans::{FixedPlan, PlanKind};
use super::summary::EdgeSummary;

/// Who chose the plan of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// A fixed plan of this kind.
    Fixed(PlanKind),
    /// The adaptive loop, `strategy = "jmdc"`.
    Adaptive,
    /// The adaptive loop, `strategy = "neurosurgeon"`.
    Neurosurgeon,
    /// The JMDC loop's first frames after it started (start-up profiling, the first decisions),
    /// from the same run as [`Strategy::Adaptive`], which counts the frames after its warm-up.
    AdaptiveCold,
}

impl Strategy {
    /// The name in the `strategy` column (the plan kind's name for fixed plans).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fixed(k) => k.name(),
            Strategy::Adaptive => "adaptive",
            Strategy::Neurosurgeon => "neurosurgeon",
            Strategy::AdaptiveCold => "adaptive-cold",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "edge-only" => Strategy::Fixed(PlanKind::EdgeOnly),
            "cloud-only" => Strategy::Fixed(PlanKind::CloudOnly),
            "jpeg" => Strategy::Fixed(PlanKind::Jpeg),
            "jmdc" => Strategy::Fixed(PlanKind::Jmdc),
            "adaptive" => Strategy::Adaptive,
            "neurosurgeon" => Strategy::Neurosurgeon,
            "adaptive-cold" => Strategy::AdaptiveCold,
            _ => return Err(format!("unknown strategy `{s}`")),
        })
    }
}

/// One run of one plan (or adaptive loop) in one cell, one repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// The matrix cell the run was made in.
    pub cell: Cell,
    /// 1-based.
    pub repeat: usize,
    /// Who chose the plan.
    pub strategy: Strategy,
    /// The `--plan` text, or `adaptive` / `neurosurgeon`.
    pub plan: String,
    /// The edge's name of the plan (`keep050 split@6 keep=1.00 int3`, `adaptive`).
    pub label: String,
    /// Top-1 from the calibration table (fixed plans), fraction.
    pub calibrated_top1: Option<f64>,
    /// Frames counted in the run.
    pub frames: usize,
    /// Measured top-1 over the frames, fraction.
    pub top1: Option<f64>,
    /// Mean latency per frame, µs.
    pub mean_us: f64,
    /// Median latency per frame, µs.
    pub p50_us: f64,
    /// 95th-percentile latency per frame, µs.
    pub p95_us: f64,
    /// Round trip minus the worker's own time, mean over frames, µs.
    pub network_mean_us: f64,
    /// Mean bytes sent per frame.
    pub bytes_per_frame: f64,
    /// Wall-clock length of the run, s.
    pub wall_s: f64,
    /// Frames the edge finished itself because the cloud failed.
    pub fallbacks: usize,
    /// Mean over frames of |measured − predicted| ÷ measured latency (adaptive runs).
    pub prediction_error: Option<f64>,
    /// |mean measured − mean predicted| ÷ mean measured (adaptive runs).
    pub prediction_bias: Option<f64>,
    /// Plans used, with frame counts when known (`label=count`), in order of first use.
    pub plans_used: Vec<String>,
    /// The edge speed of the run (`native`, or `emulated pi4 (×…)`).
    pub edge_speed: String,
}

impl ResultRow {
    /// A row from a fixed plan's summary.
    pub fn fixed(cell: Cell, repeat: usize, plan: &FixedPlan, s: &EdgeSummary) -> Self {
        Self::from_summary(cell, repeat, Strategy::Fixed(plan.kind), &plan.spec, s)
            .with_calibrated(plan.calibrated_top1)
    }

    /// A row from a summary.
    pub fn from_summary(
        cell: Cell,
        repeat: usize,
        strategy: Strategy,
        plan: &str,
        s: &EdgeSummary,
    ) -> Self {
        Self {
            cell,
            repeat,
            strategy,
            plan: plan.to_string(),
            label: s.plan.clone(),
            calibrated_top1: None,
            frames: s.frames,
            top1: s.top1,
            mean_us: s.total.mean,
            p50_us: s.total.p50,
            p95_us: s.total.p95,
            network_mean_us: s.network.mean,
            bytes_per_frame: s.bytes_per_frame,
            wall_s: s.wall_s,
            fallbacks: s.fallbacks,
            prediction_error: s.prediction_error,
            prediction_bias: s.prediction_bias,
            plans_used: s.plans_used.clone(),
            edge_speed: s.edge_speed.clone(),
        }
    }

    fn with_calibrated(mut self, top1: Option<f64>) -> Self {
        self.calibrated_top1 = top1;
        self
    }

    /// Frames per second over the run's wall time.
    pub fn fps(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.frames as f64 / self.wall_s)
    }

    /// The column names of `results.csv`, in order.
    pub const HEADER: [&'static str; 25] = [
        "cell",
        "profile",
        "load",
        "bandwidth_mbit",
        "rtt_ms",
        "repeat",
        "strategy",
        "plan",
        "label",
        "calibrated_top1",
        "frames",
        "top1",
        "mean_ms",
        "p50_ms",
        "p95_ms",
        "network_mean_ms",
        "bytes_per_frame",
        "wall_s",
        "fps",
        "fallbacks",
        "prediction_error",
        "prediction_bias",
        "plans_used",
        "edge_speed",
        "emulated",
    ];

    /// The CSV fields, in [`Self::HEADER`] order (times in ms, µs precision).
    pub fn fields(&self) -> Vec<String> {
        let ms = |us: f64| format!("{:.3}", us / 1000.0);
        let opt =
            |v: Option<f64>, digits: usize| v.map_or(String::new(), |x| format!("{x:.digits$}"));
        vec![
            self.cell.id(),
            self.cell.profile.name().into(),
            self.cell.load.name().into(),
            format!("{}", self.cell.bandwidth_mbit),
            format!("{}", self.cell.rtt_ms),
            self.repeat.to_string(),
            self.strategy.name().into(),
            self.plan.clone(),
            self.label.clone(),
            opt(self.calibrated_top1, 4),
            self.frames.to_string(),
            opt(self.top1, 4),
            ms(self.mean_us),
            ms(self.p50_us),
            ms(self.p95_us),
            ms(self.network_mean_us),
            format!("{:.1}", self.bytes_per_frame),
            format!("{:.3}", self.wall_s),
            opt(self.fps(), 2),
            self.fallbacks.to_string(),
            opt(self.prediction_error, 4),
            opt(self.prediction_bias, 4),
            self.plans_used.join(" | "),
            self.edge_speed.clone(),
            self.cell.profile.emulated().to_string(),
        ]
    }

    fn from_map(m: &HashMap<&str, &str>) -> Result<Self, String> {
        let get = |k: &str| {
            m.get(k)
                .copied()
                .ok_or_else(|| format!("missing column {k}"))
        };
        let num = |k: &str| -> Result<f64, String> {
            let v = get(k)?;
            v.parse::<f64>()
                .map_err(|_| format!("{k}: `{v}` is not a number"))
        };
        let opt = |k: &str| -> Result<Option<f64>, String> {
            let v = get(k)?;
            if v.is_empty() {
                Ok(None)
            } else {
                v.parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("{k}: `{v}` is not a number"))
            }
        };
        let int = |k: &str| -> Result<usize, String> {
            let v = get(k)?;
            v.parse::<usize>()
                .map_err(|_| format!("{k}: `{v}` is not a count"))
        };
        let profile: Profile = get("profile")?
            .parse()
            .map_err(|e: BenchError| e.to_string())?;
        let load: Load = get("load")?
            .parse()
            .map_err(|e: BenchError| e.to_string())?;
        let cell = Cell::new(profile, load, num("bandwidth_mbit")?, num("rtt_ms")?);
        let plans_used = get("plans_used")?;
        Ok(Self {
            cell,
            repeat: int("repeat")?,
            strategy: get("strategy")?.parse()?,
            plan: get("plan")?.to_string(),
            label: get("label")?.to_string(),
            calibrated_top1: opt("calibrated_top1")?,
            frames: int("frames")?,
            top1: opt("top1")?,
            mean_us: num("mean_ms")? * 1000.0,
            p50_us: num("p50_ms")? * 1000.0,
            p95_us: num("p95_ms")? * 1000.0,
            network_mean_us: num("network_mean_ms")? * 1000.0,
            bytes_per_frame: num("bytes_per_frame")?,
            wall_s: num("wall_s")?,
            fallbacks: int("fallbacks")?,
            prediction_error: opt("prediction_error")?,
            // Absent in files written before the column existed.
            prediction_bias: if m.contains_key("prediction_bias") {
                opt("prediction_bias")?
            } else {
                None
            },
            plans_used: if plans_used.is_empty() {
                Vec::new()
            } else {
                plans_used.split(" | ").map(str::to_string).collect()
            },
            edge_speed: get("edge_speed")?.to_string(),
        })
    }
}

/// Parses `results.csv` text.
pub fn parse_results(text: &str, path: &Path) -> Result<Vec<ResultRow>, BenchError> {
    let csv_err = |line: usize, message: String| BenchError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let table = csvio::Table::from_text(text).map_err(|(l, m)| csv_err(l, m))?;
    table
        .maps()
        .iter()
        .enumerate()
        .map(|(i, m)| ResultRow::from_map(m).map_err(|e| csv_err(i + 2, e)))
        .collect()
}

/// Reads `results.csv`.
pub fn read_results(path: &Path) -> Result<Vec<ResultRow>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    parse_results(&text, path)
}

/// Appends rows to `results.csv` as cells finish, so an interrupted run keeps what it measured.
#[derive(Debug)]
pub struct ResultsFile {
    path: PathBuf,
    file: File,
}

impl ResultsFile {
    /// Creates (truncates) the file and writes the header.
    pub fn create(path: &Path) -> Result<Self, BenchError> {
        let mut file = File::create(path).map_err(|e| BenchError::io(path, e))?;
        file.write_all(csvio::line(&ResultRow::HEADER).as_bytes())
            .map_err(|e| BenchError::io(path, e))?;
        // Reopen for appending (the handle above is at the end anyway; keep one mode).
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| BenchError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends `rows` and flushes, so they are on disk when the call returns.
    pub fn append(&mut self, rows: &[ResultRow]) -> Result<(), BenchError> {
        let text: String = rows.iter().map(|r| csvio::line(&r.fields())).collect();
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| BenchError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(strategy: Strategy, plan: &str, repeat: usize, mean_ms: f64) -> ResultRow {
        ResultRow {
            cell: Cell::new(Profile::Pi4, Load::Idle, 0.5, 20.0),
            repeat,
            strategy,
            plan: plan.into(),
            label: format!("label of {plan}"),
            calibrated_top1: matches!(strategy, Strategy::Fixed(_)).then_some(0.8244),
            frames: 64,
            top1: Some(0.8125),
            mean_us: mean_ms * 1000.0,
            p50_us: mean_ms * 1000.0,
            p95_us: mean_ms * 2000.0,
            network_mean_us: 1250.0,
            bytes_per_frame: 389.0,
            wall_s: 0.68,
            fallbacks: 0,
            prediction_error: (strategy == Strategy::Adaptive).then_some(0.1406),
            prediction_bias: (strategy == Strategy::Adaptive).then_some(0.0312),
            plans_used: vec![
                "keep050 edge-only=12".into(),
                "keep050 split@6 keep=1.00 int3=52".into(),
            ],
            edge_speed: "emulated pi4 (×8)".into(),
        }
    }

    #[test]
    fn csv_round_trip() {
        let rows = vec![
            row(
                Strategy::Fixed(PlanKind::Jmdc),
                "variant=keep050,split=6,keep=1,codec=int3",
                1,
                9.125,
            ),
            row(Strategy::Adaptive, "adaptive", 2, 9.25),
            ResultRow {
                plans_used: Vec::new(),
                top1: None,
                ..row(Strategy::Neurosurgeon, "neurosurgeon", 1, 10.0)
            },
        ];
        let mut text = csvio::line(&ResultRow::HEADER);
        for r in &rows {
            text.push_str(&csvio::line(&r.fields()));
        }
        let back = parse_results(&text, Path::new("results.csv")).expect("parses");
        assert_eq!(back, rows);
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let mut text = csvio::line(&ResultRow::HEADER);
        let mut f = row(Strategy::Adaptive, "adaptive", 1, 1.0).fields();
        f[12] = "fast".into();
        text.push_str(&csvio::line(&f));
        let err = parse_results(&text, Path::new("r.csv")).expect_err("bad number");
        let msg = err.to_string();
        assert!(msg.contains("line 2") && msg.contains("mean_ms"), "{msg}");
    }
}
