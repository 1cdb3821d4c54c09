//! `jmdc-edge run`: the daemon (one configured plan or the adaptive loop, until the source ends or
//! SIGTERM), or several fixed plans one after another over the same finite source, compared side by
//! side.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::config::EdgeConfig;
use crate::plan_spec::PlanSpec;
use crate::service::{run_service, Ending, LogLevelSetter, ServiceOptions};
use crate::stats::Summary;

pub use crate::planning::AdaptiveSession;

/// Options of one `run` invocation beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plans to run one after another instead of the configured one (`key=value,…` overrides).
    pub plan_overrides: Vec<String>,
    /// Override of `source.limit`.
    pub limit: Option<usize>,
    /// Suppress per-frame results.
    pub quiet: bool,
}

/// Runs the configured plan (or adaptive loop), or each `--plan` in turn; one summary per run.
/// Stops early (with the summaries so far) when a run ends by SIGTERM/SIGINT.
pub async fn run(
    config_path: &Path,
    cfg: &EdgeConfig,
    opts: &RunOptions,
    set_log_level: Option<LogLevelSetter>,
) -> Result<Vec<Summary>> {
    let runs: Vec<EdgeConfig> = if opts.plan_overrides.is_empty() {
        vec![cfg.clone()]
    } else {
        opts.plan_overrides
            .iter()
            .map(|o| {
                let plan = PlanSpec::parse_override(o, &cfg.plan).map_err(anyhow::Error::msg)?;
                let mut run_cfg = cfg.clone();
                run_cfg.plan = plan;
                run_cfg.adaptive.enabled = false;
                Ok(run_cfg)
            })
            .collect::<Result<_>>()?
    };
    let summaries_to_stderr = cfg.output.json_on_stdout(opts.quiet);
    let mut summaries = Vec::with_capacity(runs.len());
    let mut set_log_level = set_log_level;
    for run_cfg in runs {
        let report = run_service(
            run_cfg,
            ServiceOptions {
                config_path: config_path.to_path_buf(),
                limit: opts.limit,
                quiet: opts.quiet,
                set_log_level: set_log_level.take(),
            },
        )
        .await?;
        if summaries_to_stderr {
            let _ = writeln!(std::io::stderr(), "{}\n", report.summary);
        } else {
            println!("{}\n", report.summary);
        }
        summaries.push(report.summary);
        if report.ending == Ending::Signal {
            break;
        }
    }
    Ok(summaries)
}
