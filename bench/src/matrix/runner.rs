//! Running cells: a relay per cell, fixed plans, the JMDC loop and Neurosurgeon, repeated and
//! interleaved.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cells::{Cell, Load, Profile};
use super::edge::{run_edge, EdgeRun, EdgeSetup, LoopStrategy};
use super::error::BenchError;
use super::plans::{FixedPlan, PlanKind};
use super::process::check_interrupt;
use super::results::{ResultRow, Strategy};
use super::services::{start_spinner, Binaries, LinkEmu, LinkSetting, Worker};
use super::summary::summarise_frames;

/// Bound on one frame's share of a process timeout (the edge gives up on the cloud after 2 s and
/// finishes the frame itself).
const PER_FRAME_BOUND: Duration = Duration::from_millis(2500);
/// Fixed part of a process timeout (start-up, profiling, QUIC handshakes).
const PROCESS_BOUND: Duration = Duration::from_secs(60);

/// Images in the bundled sample file the edge reads (`models/samples/cifar10-test-256.bin`).
pub const SAMPLE_IMAGES: usize = 256;

/// Settings shared by every cell.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Repository root (the models and the sample images are found under it).
    pub repo: PathBuf,
    /// Model package name under `models/packages`.
    pub model: String,
    /// Frames per plan and per adaptive run.
    pub frames: usize,
    /// Measured repeats of each plan and adaptive run (numbered from 1).
    pub repeats: usize,
    /// `[pipeline] max_in_flight` of the edge.
    pub in_flight: usize,
    /// Top-1 floor, percent.
    pub floor_pct: f64,
    /// Frames of the screening pass (every fixed plan once, recorded as repeat 0); 0: no pass,
    /// every plan runs every repeat.
    pub screen_frames: usize,
    /// JMDC plans slower in the screening pass than this × the fastest floor-meeting plan are not
    /// measured further (they cannot be the oracle within the run-to-run spread).
    pub screen_factor: f64,
    /// Relay queue per direction.
    pub queue_bytes: usize,
    /// Frames each adaptive run (JMDC and Neurosurgeon) runs before the measured ones: the loop's
    /// start-up (profiling, first decisions, first corrections) is reported apart, as
    /// `adaptive-cold` (its first `frames` frames). A multiple of [`SAMPLE_IMAGES`], so the
    /// measured frames are the fixed plans' images.
    pub warm_up_frames: usize,
    /// Scratch folder (configs, logs, per-frame files).
    pub work: PathBuf,
}

impl RunSettings {
    fn process_timeout_for(&self, plans: usize, frames: usize) -> Duration {
        PROCESS_BOUND + PER_FRAME_BOUND * u32::try_from(frames * plans.max(1)).unwrap_or(u32::MAX)
    }

    fn process_timeout(&self, plans: usize) -> Duration {
        self.process_timeout_for(plans, self.frames)
    }

    /// Upper bound of one cell's time (relay and spinner stop by themselves after it).
    pub fn cell_bound(&self, plans: usize) -> Duration {
        self.process_timeout_for(plans, self.screen_frames)
            + (self.process_timeout(plans) + self.process_timeout(1) * 2)
                * u32::try_from(self.repeats).unwrap_or(u32::MAX)
            + Duration::from_secs(60)
    }
}

/// What a cell produced.
#[derive(Debug)]
pub struct CellOutcome {
    /// The cell's `results.csv` rows (screening pass included).
    pub rows: Vec<ResultRow>,
    /// Wall-clock time the cell took, s.
    pub seconds: f64,
}

/// The plans worth measuring in full after the screening pass: every baseline, and the JMDC plans
/// whose screening mean is at most `factor` × the fastest floor-meeting plan's (`floor` a
/// fraction); plans the pass did not measure are kept.
pub fn screen<'a>(
    plans: &'a [FixedPlan],
    screening: &[ResultRow],
    floor: f64,
    factor: f64,
) -> Vec<&'a FixedPlan> {
    let mean_of = |p: &FixedPlan| {
        screening
            .iter()
            .find(|r| r.plan == p.spec)
            .map(|r| r.mean_us)
    };
    let best = plans
        .iter()
        .filter(|p| p.meets(floor))
        .filter_map(mean_of)
        .fold(f64::INFINITY, f64::min);
    plans
        .iter()
        .filter(|p| {
            p.kind != PlanKind::Jmdc
                || !best.is_finite()
                || mean_of(p).is_none_or(|m| m <= factor * best)
        })
        .collect()
}

/// `plans` rotated left by `repeat − 1`, so no plan always runs first (1-based repeats).
pub fn rotated<'a>(plans: &[&'a FixedPlan], repeat: usize) -> Vec<&'a FixedPlan> {
    let mut v = plans.to_vec();
    if !v.is_empty() {
        let by = repeat.saturating_sub(1) % v.len();
        v.rotate_left(by);
    }
    v
}

/// Runs one cell: relay, optional spinner, then `repeats` × (fixed plans, JMDC loop, Neurosurgeon).
pub fn run_cell(
    bins: &Binaries,
    worker: &mut Worker,
    s: &RunSettings,
    cell: &Cell,
    plans: &[FixedPlan],
) -> Result<CellOutcome, BenchError> {
    let started = Instant::now();
    worker.check_alive()?;
    let dir = s.work.join(cell.id());
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
    let bound = s.cell_bound(plans.len());
    let mut relay = LinkEmu::start(
        bins,
        worker.addr,
        &LinkSetting {
            rate_mbit: cell.bandwidth_mbit,
            delay_ms: cell.rtt_ms / 2.0,
            queue_bytes: s.queue_bytes,
            trace: None,
            max_duration: bound,
        },
        &dir.join("linkemu.log"),
    )?;
    let _spinner = match cell.load {
        Load::Busy => Some(start_spinner(bins, bound.as_secs_f64())?),
        Load::Idle => None,
    };
    let setup = |adaptive: Option<LoopStrategy>, frames: Option<PathBuf>| EdgeSetup {
        repo: s.repo.clone(),
        model: s.model.clone(),
        endpoint: relay.addr,
        cert: worker.cert.clone(),
        profile: cell.profile,
        in_flight: s.in_flight,
        floor_pct: s.floor_pct,
        repeat_source: adaptive.is_some() && s.warm_up_frames > 0,
        adaptive,
        frames_to: frames.map(Some),
    };
    let fixed_cfg = dir.join("edge-fixed.toml");
    setup(None, None).write(&fixed_cfg)?;
    let loops = [
        (LoopStrategy::Jmdc, Strategy::Adaptive),
        (LoopStrategy::Neurosurgeon, Strategy::Neurosurgeon),
    ];
    let mut loop_cfgs = Vec::new();
    for (ls, strategy) in loops {
        let frames = dir.join(format!("frames-{}.jsonl", ls.name()));
        let cfg = dir.join(format!("edge-{}.toml", ls.name()));
        setup(Some(ls), Some(frames.clone())).write(&cfg)?;
        loop_cfgs.push((strategy, cfg, frames));
    }

    let floor = s.floor_pct / 100.0;
    let mut rows: Vec<ResultRow> = Vec::new();
    let run_fixed = |these: &[&FixedPlan], frames: usize, tag: &str| {
        let specs: Vec<String> = these.iter().map(|p| p.spec.clone()).collect();
        run_edge(
            bins,
            &EdgeRun {
                config: &fixed_cfg,
                plans: &specs,
                frames,
                summary: &dir.join(format!("fixed-{tag}.json")),
                stderr: &dir.join(format!("fixed-{tag}.log")),
                timeout: s.process_timeout_for(specs.len(), frames),
                quiet: true,
            },
        )
    };
    // Screening pass (repeat 0): every plan on the first few frames.
    let all: Vec<&FixedPlan> = plans.iter().collect();
    let survivors: Vec<&FixedPlan> =
        if s.screen_frames > 0 && plans.iter().any(|p| p.kind == PlanKind::Jmdc) {
            let frames = s.screen_frames.min(s.frames);
            let summaries = run_fixed(&all, frames, "screen")?;
            let screening: Vec<ResultRow> = all
                .iter()
                .zip(&summaries)
                .map(|(p, sum)| ResultRow::fixed(*cell, 0, p, sum))
                .collect();
            let kept = screen(plans, &screening, floor, s.screen_factor);
            rows.extend(screening);
            kept
        } else {
            all
        };
    for repeat in 1..=s.repeats {
        check_interrupt()?;
        relay.check_alive()?;
        let these = rotated(&survivors, repeat);
        let summaries = run_fixed(&these, s.frames, &repeat.to_string())?;
        let fixed_rows: Vec<ResultRow> = these
            .iter()
            .zip(&summaries)
            .map(|(p, sum)| ResultRow::fixed(*cell, repeat, p, sum))
            .collect();
        rows.extend(fixed_rows);
        for (strategy, cfg, frames) in &loop_cfgs {
            check_interrupt()?;
            let _ = std::fs::remove_file(frames);
            let name = strategy.name();
            let warm = s.warm_up_frames as u64;
            let measured = s.frames as u64;
            let summaries = run_edge(
                bins,
                &EdgeRun {
                    config: cfg,
                    plans: &[],
                    frames: s.warm_up_frames + s.frames,
                    summary: &dir.join(format!("{name}-{repeat}.json")),
                    stderr: &dir.join(format!("{name}-{repeat}.log")),
                    timeout: s.process_timeout_for(1, s.warm_up_frames + s.frames),
                    quiet: false,
                },
            )?;
            let Some(sum) = summaries.first() else {
                continue;
            };
            let text = std::fs::read_to_string(frames).map_err(|e| BenchError::io(frames, e))?;
            let kept = dir.join(format!("frames-{name}-{repeat}.jsonl"));
            let _ = std::fs::rename(frames, &kept);
            // The frames after the warm-up are the run's figures; the first ones (from the
            // process start) are the cold start, reported apart for the JMDC loop.
            let after_warm_up =
                summarise_frames(&text, warm..warm + measured, &sum.plan, &sum.edge_speed)
                    .ok_or_else(|| {
                        BenchError::Invalid(format!(
                            "{}: no frames {warm}..{} in the per-frame results",
                            kept.display(),
                            warm + measured
                        ))
                    })?;
            rows.push(ResultRow::from_summary(
                *cell,
                repeat,
                *strategy,
                name,
                &after_warm_up,
            ));
            if *strategy == Strategy::Adaptive && warm > 0 {
                if let Some(cold) = summarise_frames(&text, 0..measured, &sum.plan, &sum.edge_speed)
                {
                    rows.push(ResultRow::from_summary(
                        *cell,
                        repeat,
                        Strategy::AdaptiveCold,
                        Strategy::AdaptiveCold.name(),
                        &cold,
                    ));
                }
            }
        }
    }
    relay.stop();
    Ok(CellOutcome {
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether the edge and worker accept a plan: one frame straight to the worker (no relay), which
/// must finish in the cloud. `Err` carries the reason it was refused.
pub fn probe_plan(
    bins: &Binaries,
    worker: &Worker,
    repo: &Path,
    model: &str,
    work: &Path,
    spec: &str,
) -> Result<(), String> {
    let tag: String = spec
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let cfg = work.join(format!("probe-{tag}.toml"));
    let setup = EdgeSetup {
        repo: repo.to_path_buf(),
        model: model.to_owned(),
        endpoint: worker.addr,
        cert: worker.cert.clone(),
        profile: Profile::Native,
        in_flight: 1,
        floor_pct: 80.0,
        adaptive: None,
        frames_to: None,
        repeat_source: false,
    };
    setup.write(&cfg).map_err(|e| e.to_string())?;
    let plans = [spec.to_string()];
    let summaries = run_edge(
        bins,
        &EdgeRun {
            config: &cfg,
            plans: &plans,
            frames: 1,
            summary: &work.join(format!("probe-{tag}.json")),
            stderr: &work.join(format!("probe-{tag}.log")),
            timeout: Duration::from_secs(60),
            quiet: true,
        },
    )
    .map_err(|e| e.to_string())?;
    match summaries.first() {
        Some(s) if s.fallbacks == 0 && s.bytes_per_frame > 0.0 => Ok(()),
        Some(s) => Err(format!(
            "the frame was not finished in the cloud ({} fallbacks, {} B sent)",
            s.fallbacks, s.bytes_per_frame
        )),
        None => Err("no summary".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::summary::EdgeSummary;

    fn plan(spec: &str, kind: PlanKind, top1: f64) -> FixedPlan {
        FixedPlan {
            spec: spec.into(),
            kind,
            calibrated_top1: Some(top1),
            calibrated_bytes: None,
            why: String::new(),
        }
    }

    #[test]
    fn screening_drops_slow_jmdc_plans_and_repeats_rotate() {
        let plans = vec![
            plan("e", PlanKind::EdgeOnly, 0.83),
            plan("j-fast", PlanKind::Jmdc, 0.81),
            plan("j-slow", PlanKind::Jmdc, 0.81),
            plan("c", PlanKind::CloudOnly, 0.83),
            plan("j-unmeasured", PlanKind::Jmdc, 0.81),
        ];
        let cell = Cell::new(Profile::Pi4, Load::Idle, 1.0, 0.0);
        let ms = |m: f64| EdgeSummary {
            total: crate::matrix::summary::Percentiles {
                mean: m * 1000.0,
                p50: 0.0,
                p95: 0.0,
            },
            ..EdgeSummary::default()
        };
        let screening: Vec<ResultRow> = plans
            .iter()
            .zip([50.0, 10.0, 25.0, 40.0])
            .map(|(p, m)| ResultRow::fixed(cell, 0, p, &ms(m)))
            .collect();
        let names = |v: Vec<&FixedPlan>| v.iter().map(|p| p.spec.clone()).collect::<Vec<_>>();
        // j-slow (25 ms) > 2 × 10 ms: dropped; baselines stay however slow
        let kept = screen(&plans, &screening, 0.8, 2.0);
        assert_eq!(names(kept.clone()), ["e", "j-fast", "c", "j-unmeasured"]);
        assert_eq!(
            names(rotated(&kept, 1)),
            ["e", "j-fast", "c", "j-unmeasured"]
        );
        assert_eq!(
            names(rotated(&kept, 3)),
            ["c", "j-unmeasured", "e", "j-fast"]
        );
        assert_eq!(screen(&plans, &screening, 0.8, 3.0).len(), 5);
        assert_eq!(screen(&plans, &[], 0.8, 2.0).len(), 5);
    }
}
