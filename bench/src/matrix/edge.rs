//! Configuring and running `jmdc-edge`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cells::Profile;
use super::error::BenchError;
use super::process::Proc;
use super::services::{toml_str, Binaries};
use super::summary::{read_summaries, EdgeSummary};

/// The adaptive loop's strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopStrategy {
    /// JMDC: every variant (pruning level), split, region keep ratio and bit width the accuracy
    /// table covers.
    Jmdc,
    /// Neurosurgeon as a baseline: the unpruned model, any single split, the split tensor sent as
    /// uncompressed `f32`.
    Neurosurgeon,
}

impl LoopStrategy {
    /// The `[adaptive] strategy` value.
    pub fn name(self) -> &'static str {
        match self {
            LoopStrategy::Jmdc => "jmdc",
            LoopStrategy::Neurosurgeon => "neurosurgeon",
        }
    }
}

/// Everything an edge configuration file of the runner depends on.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    /// Repository root (the model packages and the sample images are found under it).
    pub repo: PathBuf,
    /// Model package name under `models/packages`.
    pub model: String,
    /// The address the edge sends to (the relay in front of the worker).
    pub endpoint: SocketAddr,
    /// The worker's certificate, the edge's `[cloud] ca_cert`.
    pub cert: PathBuf,
    /// Edge speed (`[emulation] edge_profile`).
    pub profile: Profile,
    /// `[pipeline] max_in_flight`.
    pub in_flight: usize,
    /// Top-1 floor, percent.
    pub floor_pct: f64,
    /// `Some`: adaptive loop with this strategy; `None`: fixed plans (`--plan`).
    pub adaptive: Option<LoopStrategy>,
    /// Per-frame JSON lines: to this file, or to stdout with `Some(None)`; `None`: no per-frame output.
    pub frames_to: Option<Option<PathBuf>>,
    /// Loop the sample file (`[source] repeat`).
    pub repeat_source: bool,
}

impl EdgeSetup {
    /// The configuration text.
    pub fn config(&self) -> String {
        let path = |p: &Path| toml_str(&p.to_string_lossy());
        let mut t = String::new();
        t.push_str("device_id = \"jmdc-bench\"\nlog_level = \"warn\"\n");
        t.push_str(&format!(
            "[model]\npackages_dir = {}\nname = {}\n",
            path(&self.repo.join("models/packages")),
            toml_str(&self.model)
        ));
        // The base plan; every --plan names all its keys, so this only matters without --plan.
        t.push_str("[plan]\nvariant = \"keep100\"\nsplit = \"edge-only\"\n");
        t.push_str(&format!(
            "[cloud]\nendpoint = \"{}\"\nca_cert = {}\nserver_name = \"localhost\"\ntimeout_ms = 2000\n",
            self.endpoint,
            path(&self.cert)
        ));
        t.push_str(&format!(
            "[source]\nkind = \"cifar\"\npath = {}\nrepeat = {}\n",
            path(&self.repo.join("models/samples/cifar10-test-256.bin")),
            self.repeat_source
        ));
        t.push_str(&format!(
            "[pipeline]\nmax_in_flight = {}\n[metrics]\nenabled = false\n[runtime]\nintra_op_threads = 1\n",
            self.in_flight
        ));
        t.push_str(&format!(
            "[emulation]\nedge_profile = \"{}\"\n",
            self.profile.name()
        ));
        match &self.frames_to {
            Some(Some(file)) => t.push_str(&format!(
                "[output]\nper_frame = true\nformat = \"json\"\nfile = {}\n",
                path(file)
            )),
            Some(None) => t.push_str("[output]\nper_frame = true\nformat = \"json\"\n"),
            None => t.push_str("[output]\nper_frame = false\n"),
        }
        match self.adaptive {
            Some(s) => t.push_str(&format!(
                "[adaptive]\nenabled = true\nobjective = \"min-latency\"\naccuracy_floor_pct = {:.1}\nstrategy = \"{}\"\n",
                self.floor_pct,
                s.name()
            )),
            None => t.push_str("[adaptive]\nenabled = false\n"),
        }
        t
    }

    /// Writes the configuration to `path`.
    pub fn write(&self, path: &Path) -> Result<(), BenchError> {
        std::fs::write(path, self.config()).map_err(|e| BenchError::io(path, e))
    }
}

/// One `jmdc-edge run` to completion.
#[derive(Debug, Clone)]
pub struct EdgeRun<'a> {
    /// The edge configuration file (`--config`), as written by [`EdgeSetup::write`].
    pub config: &'a Path,
    /// Fixed plans (`--plan`, in order); empty: the configured plan or adaptive loop.
    pub plans: &'a [String],
    /// Frames per plan (`--limit`).
    pub frames: usize,
    /// Where the edge writes its summaries (`--summary-json`).
    pub summary: &'a Path,
    /// Where the edge's stderr goes.
    pub stderr: &'a Path,
    /// The edge is killed and the run fails after this long.
    pub timeout: Duration,
    /// `--quiet` (no per-frame output, whatever the configuration says).
    pub quiet: bool,
}

/// Runs the edge and returns its summaries (one per plan, or one for the configured run).
pub fn run_edge(bins: &Binaries, run: &EdgeRun<'_>) -> Result<Vec<EdgeSummary>, BenchError> {
    let _ = std::fs::remove_file(run.summary);
    let mut cmd = Command::new(&bins.edge);
    cmd.arg("run")
        .arg("--config")
        .arg(run.config)
        .arg("--limit")
        .arg(run.frames.to_string())
        .arg("--summary-json")
        .arg(run.summary)
        .env("ORT_DISABLE_TELEMETRY", "1");
    if run.quiet {
        cmd.arg("--quiet");
    }
    for p in run.plans {
        cmd.arg("--plan").arg(p);
    }
    let mut proc = Proc::spawn("jmdc-edge", &mut cmd, None, Some(run.stderr))?;
    proc.wait_success(run.timeout)?;
    let summaries = read_summaries(run.summary)?;
    let expected = run.plans.len().max(1);
    if summaries.len() != expected {
        return Err(BenchError::process(
            "jmdc-edge",
            format!(
                "{} wrote {} summaries, expected {expected}",
                run.summary.display(),
                summaries.len()
            ),
        ));
    }
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_bench_settings() {
        let setup = EdgeSetup {
            repo: PathBuf::from("/repo"),
            model: "alexnet-cifar10".into(),
            endpoint: "127.0.0.1:4000".parse().expect("addr"),
            cert: PathBuf::from("/w/cert.pem"),
            profile: Profile::Pi3,
            in_flight: 1,
            floor_pct: 80.0,
            adaptive: Some(LoopStrategy::Neurosurgeon),
            frames_to: Some(Some(PathBuf::from("/w/f.jsonl"))),
            repeat_source: false,
        };
        let c = setup.config();
        for needle in [
            "endpoint = \"127.0.0.1:4000\"",
            "edge_profile = \"pi3\"",
            "strategy = \"neurosurgeon\"",
            "accuracy_floor_pct = 80.0",
            "max_in_flight = 1",
            "file = \"/w/f.jsonl\"",
            "path = \"/repo/models/samples/cifar10-test-256.bin\"",
        ] {
            assert!(c.contains(needle), "{needle} missing in\n{c}");
        }
        let fixed = EdgeSetup {
            adaptive: None,
            frames_to: None,
            ..setup
        };
        assert!(fixed.config().contains("[adaptive]\nenabled = false"));
    }
}
