//! `meta.json`: how a run was made (machine, commit, settings, plans, timings), so the report can
//! be re-rendered from the output folder alone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dynamic::{DynamicAnalysis, DynamicSpec};
use super::error::BenchError;
use super::plans::FixedPlan;

/// The machine the run was made on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name from `lscpu` (`unknown` when it cannot be read).
    pub cpu_model: String,
    /// Logical CPUs from `lscpu` (`CPU(s)`).
    pub cores: String,
    /// Kernel release from `uname -r`.
    pub kernel: String,
}

/// A JPEG baseline and whether the binaries accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JpegStatus {
    /// The baseline's `--plan` text.
    pub spec: String,
    /// Whether the edge and the worker accepted it: a one-frame probe finished in the cloud.
    pub available: bool,
    /// First line of the probe's error when it failed; empty otherwise.
    pub reason: String,
}

/// Time one cell took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellTiming {
    /// The cell id (`pi4-idle-rtt20-5mbit`).
    pub cell: String,
    /// Wall-clock time the cell took, s.
    pub seconds: f64,
    /// Set when the cell failed (its rows may be missing).
    #[serde(default)]
    pub error: Option<String>,
}

/// Everything about a run except its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The `jmdc-bench` command line of the run.
    pub command: String,
    /// UTC start time (`2026-12-03T20:52:05Z`).
    pub started: String,
    /// UTC end time of the measurements.
    pub finished: String,
    /// The machine the run was made on.
    pub machine: Machine,
    /// `HEAD` of the repository (`unknown` outside git).
    pub git_commit: String,
    /// Whether tracked files had uncommitted changes.
    pub git_dirty: bool,
    /// Frames per plan and per adaptive run (`--frames`).
    pub frames: usize,
    /// Measured repeats of each plan and adaptive run (`--repeats`).
    pub repeats: usize,
    /// The edge's `[pipeline] max_in_flight` (`--in-flight`).
    pub in_flight: usize,
    /// Top-1 floor, percent (`--floor-pct`).
    pub floor_pct: f64,
    /// Model package benchmarked (runs made before the option existed: AlexNet).
    #[serde(default = "default_model")]
    pub model: String,
    /// Relay queue per direction, bytes (`--queue-bytes`).
    pub queue_bytes: usize,
    /// Screening cut-off: JMDC plans slower than this × the fastest floor-meeting plan
    /// were dropped.
    pub screen_factor: f64,
    /// Frames of the screening pass (0: no pass; 0 in runs made before it existed).
    #[serde(default)]
    pub screen_frames: usize,
    /// Frames each adaptive run ran before its measured frames (0 in runs made before it existed).
    #[serde(default)]
    pub warm_up_frames: usize,
    /// The fixed plans of every cell: the baselines the binaries accept, then the JMDC plans.
    pub plans: Vec<FixedPlan>,
    /// The JPEG baselines and whether the binaries accepted them.
    pub jpeg: Vec<JpegStatus>,
    /// Time taken by each cell, in run order.
    pub cells: Vec<CellTiming>,
    /// The schedule of the dynamic run, when it ran and was analysed.
    pub dynamic: Option<DynamicSpec>,
    /// The dynamic run's analysis, when it ran.
    #[serde(default)]
    pub dynamic_analysis: Option<DynamicAnalysis>,
    /// Why the dynamic run failed, when it did.
    #[serde(default)]
    pub dynamic_error: Option<String>,
    /// Where the markdown report goes (as given on the command line).
    pub report: PathBuf,
    /// False when the run was interrupted.
    pub complete: bool,
}

fn default_model() -> String {
    "alexnet-cifar10".into()
}

impl RunMeta {
    /// Writes `meta.json` (pretty JSON) to `path`.
    pub fn write(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Json {
            path: path.to_path_buf(),
            source: e,
        })?;
        std::fs::write(path, text).map_err(|e| BenchError::io(path, e))
    }

    /// Reads a `meta.json` written by [`RunMeta::write`].
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| BenchError::Json {
            path: path.to_path_buf(),
            source: e,
        })
    }
}

/// Stdout of a short command, or `None` when it fails or takes more than `timeout`.
pub fn command_output(
    program: &str,
    args: &[&str],
    dir: Option<&Path>,
    timeout: Duration,
) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().ok()?;
    status.filter(|s| s.success()).map(|_| text)
}

const SHORT: Duration = Duration::from_secs(10);

/// CPU model and core count from `lscpu`, kernel from `uname -r`.
pub fn machine() -> Machine {
    let lscpu = command_output("lscpu", &[], None, SHORT).unwrap_or_default();
    let field = |name: &str| {
        lscpu
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    };
    Machine {
        cpu_model: field("Model name"),
        cores: field("CPU(s)"),
        kernel: command_output("uname", &["-r"], None, SHORT)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into()),
    }
}

/// Commit of `repo` and whether the work tree has changes.
pub fn git_state(repo: &Path) -> (String, bool) {
    let commit = command_output("git", &["rev-parse", "HEAD"], Some(repo), SHORT)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = command_output(
        "git",
        &["status", "--porcelain", "--untracked-files=no"],
        Some(repo),
        SHORT,
    )
    .is_some_and(|s| !s.trim().is_empty());
    (commit, dirty)
}

/// Current UTC time as `2026-12-03T20:52:05Z` (from `date`), or seconds since the epoch.
pub fn now_utc() -> String {
    command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"], None, SHORT)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| format!("{} s since 1970", d.as_secs()))
                .unwrap_or_default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_commands_are_bounded() {
        assert_eq!(
            command_output("sh", &["-c", "echo hi"], None, SHORT).as_deref(),
            Some("hi\n")
        );
        let t = Instant::now();
        assert_eq!(
            command_output("sleep", &["30"], None, Duration::from_millis(100)),
            None
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(command_output("sh", &["-c", "exit 1"], None, SHORT), None);
        assert!(!now_utc().is_empty());
    }
}
