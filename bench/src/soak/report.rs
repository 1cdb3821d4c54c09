//! Turns a soak run's outcome into figures (per phase, per device, RSS over time), a markdown
//! report, CSV files, and the list of checks that failed.

use std::fmt::Write as _;
use std::path::Path;

use crate::matrix::BenchError;

use super::analysis::{
    continuity, growth, parse_results, quantile, recovery_ms, window, WindowCounts,
};
use super::runner::{SoakOutcome, SoakSettings};
use super::schedule::{blackout, Phase};

/// Targets the run is checked against.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Every device must use the cloud again within this long after the link returns and after
    /// the restarted worker is listening (issue 13: < 2 s).
    pub max_recovery_ms: u64,
}

/// One device's figures.
#[derive(Debug, Clone)]
pub struct DeviceFigures {
    /// Device name (`soak-dev-000`).
    pub name: String,
    /// Result lines in its results file, duplicates included.
    pub results: usize,
    /// Frame numbers with no result (frames lost).
    pub missing: u64,
    /// Results beyond the first for a frame number.
    pub duplicates: u64,
    /// Frames the cloud finished.
    pub on_cloud: usize,
    /// Frames the plan sent to the cloud but the edge finished.
    pub fallbacks: usize,
    /// Time from the end of the blackout to its next frame finished on the cloud, ms
    /// (`None`: never).
    pub recovery_blackout_ms: Option<u64>,
    /// Time from the restarted worker listening to its next frame finished on the cloud, ms
    /// (`None`: never).
    pub recovery_restart_ms: Option<u64>,
    /// How the process ended (its exit status, `died at … s`, or killed).
    pub exit: String,
    /// Whether it exited successfully after SIGTERM and not before the end of the run.
    pub clean_exit: bool,
    /// Why its results file could not be read or parsed, when it could not.
    pub error: Option<String>,
}

/// The analysed run.
#[derive(Debug)]
pub struct SoakReport {
    /// Each device's figures, in start order.
    pub devices: Vec<DeviceFigures>,
    /// Every phase with the counts of all devices' results in it.
    pub phases: Vec<(Phase, WindowCounts)>,
    /// The checks that failed, one line each; empty when the run passed.
    pub failures: Vec<String>,
    /// Growth of the worker's RSS over the run (0.05 = 5 %; see [`super::analysis::growth`]).
    pub worker_growth: Option<f64>,
    /// Growth of the median edge RSS over the run (0.05 = 5 %).
    pub edge_growth: Option<f64>,
}

fn ms_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "never".into(), |x| x.to_string())
}

/// Reads every device's results and checks the run.
pub fn analyse(outcome: &SoakOutcome, settings: &SoakSettings, targets: &Targets) -> SoakReport {
    let at =
        |d: std::time::Duration| outcome.start_unix_ms + u64::try_from(d.as_millis()).unwrap_or(0);
    let blackout_end = blackout(&settings.phases).map(|p| at(p.end));
    let mut phases: Vec<(Phase, WindowCounts)> = settings
        .phases
        .iter()
        .map(|p| (p.clone(), WindowCounts::default()))
        .collect();
    let mut devices = Vec::new();
    let mut failures = Vec::new();
    for d in &outcome.devices {
        let parsed = std::fs::read_to_string(&d.results)
            .map_err(|e| format!("{}: {e}", d.results.display()))
            .and_then(|t| parse_results(&t).map_err(|e| format!("{}: {e}", d.results.display())));
        let (results, error) = match parsed {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let c = continuity(&results);
        for (p, w) in &mut phases {
            w.add(&window(&results, at(p.start), at(p.end)));
        }
        let clean_exit = d.exit.is_some_and(|s| s.success()) && d.died_early_at_s.is_none();
        let fig = DeviceFigures {
            name: d.name.clone(),
            results: c.results,
            missing: c.missing,
            duplicates: c.duplicates,
            on_cloud: results.iter().filter(|r| r.on_cloud()).count(),
            fallbacks: results.iter().filter(|r| r.fallback).count(),
            recovery_blackout_ms: blackout_end.and_then(|t| recovery_ms(&results, t)),
            recovery_restart_ms: outcome
                .restart_ready_unix_ms
                .and_then(|t| recovery_ms(&results, t)),
            exit: match (d.exit, d.died_early_at_s) {
                (_, Some(t)) => format!("died at {t:.0} s"),
                (Some(s), None) => s.to_string(),
                (None, None) => "killed (no exit within 30 s of SIGTERM)".into(),
            },
            clean_exit,
            error,
        };
        if let Some(e) = &fig.error {
            failures.push(format!("{}: unreadable results: {e}", fig.name));
        }
        if fig.missing > 0 || fig.duplicates > 0 {
            failures.push(format!(
                "{}: {} frames lost, {} duplicated",
                fig.name, fig.missing, fig.duplicates
            ));
        }
        if !fig.clean_exit {
            failures.push(format!("{}: {}", fig.name, fig.exit));
        }
        for (what, v) in [
            ("link return", fig.recovery_blackout_ms),
            ("worker restart", fig.recovery_restart_ms),
        ] {
            match v {
                None => failures.push(format!(
                    "{}: never used the cloud again after the {what}",
                    fig.name
                )),
                Some(ms) if ms > targets.max_recovery_ms => failures.push(format!(
                    "{}: {ms} ms to use the cloud again after the {what} (target ≤ {} ms)",
                    fig.name, targets.max_recovery_ms
                )),
                Some(_) => {}
            }
        }
        devices.push(fig);
    }
    for p in &outcome.panics {
        failures.push(format!("panic in {}", p.display()));
    }
    let worker_series: Vec<f64> = outcome.rss.iter().map(|s| s.worker_mib).collect();
    let edge_series: Vec<f64> = outcome
        .rss
        .iter()
        .map(|s| quantile(&s.edge_mib, 0.5).unwrap_or(0.0))
        .collect();
    SoakReport {
        devices,
        phases,
        failures,
        worker_growth: growth(&worker_series, 2),
        edge_growth: growth(&edge_series, 2),
    }
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * part as f64 / whole as f64)
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.1}"))
}

/// The markdown report.
pub fn markdown(
    outcome: &SoakOutcome,
    settings: &SoakSettings,
    report: &SoakReport,
    command: &str,
) -> String {
    let mut m = String::new();
    let total_s = settings.phases.last().map_or(0.0, |p| p.end.as_secs_f64());
    let _ = writeln!(m, "# Soak run\n");
    let _ = writeln!(
        m,
        "`{command}`: {} simulated devices (one `jmdc-edge` process each, its own certificate from the \
         soak's CA), one `jmdc-cloud` requiring client certificates, every frame sent to the cloud \
         (plan {} split@{} {}), {} frames/s per device, through the link emulator ({} ms each way), \
         {total_s:.0} s measured after a {:.0} s start-up.\n",
        settings.devices,
        settings.plan.variant,
        settings.plan.split,
        settings.plan.codec,
        settings.fps,
        settings.delay.as_millis(),
        outcome.warm_up_s,
    );
    let _ = writeln!(
        m,
        "**{}**\n",
        if report.failures.is_empty() {
            "Passed: zero frames lost, every device exited cleanly, no panic, every device back on the cloud within the target.".to_string()
        } else {
            format!("FAILED ({} checks):", report.failures.len())
        }
    );
    for f in report.failures.iter().take(30) {
        let _ = writeln!(m, "- {f}");
    }
    if report.failures.len() > 30 {
        let _ = writeln!(m, "- … {} more", report.failures.len() - 30);
    }
    let _ = writeln!(m, "\n## Phases\n");
    let _ = writeln!(m, "| phase | s | link loss each way | results | on the cloud | finished on the edge (fallback) | latency p50 ms | p99 ms |");
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|");
    for (p, w) in &report.phases {
        let _ = writeln!(
            m,
            "| {}{} | {:.0}–{:.0} | {:.0} % | {} | {} | {} | {} | {} |",
            p.name,
            if p.restart_worker_at_start {
                " (worker restarted at start)"
            } else {
                ""
            },
            p.start.as_secs_f64(),
            p.end.as_secs_f64(),
            p.link.loss() * 100.0,
            w.frames,
            pct(w.on_cloud, w.frames),
            pct(w.fallbacks, w.frames),
            fmt_ms(quantile(&w.latencies_ms, 0.5)),
            fmt_ms(quantile(&w.latencies_ms, 0.99)),
        );
    }
    let rec = |f: fn(&DeviceFigures) -> Option<u64>| -> Vec<f64> {
        report
            .devices
            .iter()
            .filter_map(f)
            .map(|v| v as f64)
            .collect()
    };
    let blackout_rec = rec(|d| d.recovery_blackout_ms);
    let restart_rec = rec(|d| d.recovery_restart_ms);
    let _ = writeln!(m, "\n## Recovery\n");
    let _ = writeln!(m, "Time from the event to each device's first frame finished on the cloud (frames are {:.0} ms apart per device, so this includes up to one frame interval).\n", 1000.0 / settings.fps);
    let _ = writeln!(m, "| event | devices back | median ms | p90 ms | max ms |");
    let _ = writeln!(m, "|---|---|---|---|---|");
    for (name, v) in [
        ("link returns after the 10 s blackout", &blackout_rec),
        ("restarted worker listening", &restart_rec),
    ] {
        let _ = writeln!(
            m,
            "| {name} | {}/{} | {} | {} | {} |",
            v.len(),
            report.devices.len(),
            fmt_ms(quantile(v, 0.5)),
            fmt_ms(quantile(v, 0.9)),
            fmt_ms(quantile(v, 1.0)),
        );
    }
    if let (Some(stop), Some(ready)) = (outcome.restart_stop_unix_ms, outcome.restart_ready_unix_ms)
    {
        let _ = writeln!(m, "\nThe worker was down {} ms (SIGTERM to the new process's `listening` line). Worker exits: {}.", ready.saturating_sub(stop), outcome.worker_exits.join("; "));
    }
    let totals = report.devices.iter().fold((0usize, 0u64, 0usize), |a, d| {
        (a.0 + d.results, a.1 + d.missing, a.2 + d.fallbacks)
    });
    let _ = writeln!(m, "\n## Frames\n\n{} results from {} devices, {} frames lost, {} finished on the edge as a fallback. Per device: `devices.csv`.", totals.0, report.devices.len(), totals.1, totals.2);
    let _ = writeln!(m, "\n## Memory (RSS)\n");
    let first = outcome.rss.get(2).or(outcome.rss.first());
    let last = outcome.rss.last();
    if let (Some(a), Some(b)) = (first, last) {
        let med = |s: &super::runner::RssSample| quantile(&s.edge_mib, 0.5).unwrap_or(0.0);
        let max = |s: &super::runner::RssSample| quantile(&s.edge_mib, 1.0).unwrap_or(0.0);
        let _ = writeln!(
            m,
            "| process | at {:.0} s | at {:.0} s | growth, last fifth ÷ first fifth |",
            a.t_s, b.t_s
        );
        let _ = writeln!(m, "|---|---|---|---|");
        let g = |v: Option<f64>| v.map_or_else(|| "–".into(), |x| format!("{:+.1} %", x * 100.0));
        let _ = writeln!(
            m,
            "| worker | {:.1} MiB | {:.1} MiB | {} |",
            a.worker_mib,
            b.worker_mib,
            g(report.worker_growth)
        );
        let _ = writeln!(
            m,
            "| edge, median of devices | {:.1} MiB | {:.1} MiB | {} |",
            med(a),
            med(b),
            g(report.edge_growth)
        );
        let _ = writeln!(
            m,
            "| edge, largest | {:.1} MiB | {:.1} MiB | |",
            max(a),
            max(b)
        );
        let _ = writeln!(
            m,
            "\nEvery sample: `rss.csv` (the worker's RSS restarts with the worker)."
        );
    }
    if let Some(l) = &outcome.link {
        let _ = writeln!(m, "\n## Link emulator counters\n\n```\n{l}\n```");
    }
    m
}

/// `devices.csv` and `rss.csv` in `dir`.
pub fn write_csvs(
    dir: &Path,
    outcome: &SoakOutcome,
    report: &SoakReport,
) -> Result<(), BenchError> {
    let mut d = String::from("device,results,lost,duplicated,on_cloud,fallbacks,recovery_after_blackout_ms,recovery_after_restart_ms,exit\n");
    for x in &report.devices {
        let _ = writeln!(
            d,
            "{},{},{},{},{},{},{},{},{}",
            x.name,
            x.results,
            x.missing,
            x.duplicates,
            x.on_cloud,
            x.fallbacks,
            ms_opt(x.recovery_blackout_ms),
            ms_opt(x.recovery_restart_ms),
            x.exit.replace(',', ";")
        );
    }
    let path = dir.join("devices.csv");
    std::fs::write(&path, d).map_err(|e| BenchError::io(&path, e))?;
    let mut r = String::from("t_s,worker_mib,edge_median_mib,edge_max_mib,edge_sum_mib,edges\n");
    for s in &outcome.rss {
        let _ = writeln!(
            r,
            "{:.1},{:.1},{:.1},{:.1},{:.1},{}",
            s.t_s,
            s.worker_mib,
            quantile(&s.edge_mib, 0.5).unwrap_or(0.0),
            quantile(&s.edge_mib, 1.0).unwrap_or(0.0),
            s.edge_mib.iter().sum::<f64>(),
            s.edge_mib.len()
        );
    }
    let path = dir.join("rss.csv");
    std::fs::write(&path, r).map_err(|e| BenchError::io(&path, e))
}
