//! The dynamic run: the JMDC loop while the link steps 50 → 1 → 20 Mbit/s (a `jmdc-linkemu`
//! trace) with a CPU-load burst in the last phase; per-frame results with timestamps, reaction
//! times and plan changes in steady phases.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cells::{num, Profile};
use super::csvio;
use super::edge::{EdgeSetup, LoopStrategy};
use super::error::BenchError;
use super::process::{check_interrupt, interrupted, Proc};
use super::runner::RunSettings;
use super::services::{start_spinner, Binaries, LinkEmu, LinkSetting, Worker};
use super::summary::FrameLine;

/// The schedule of the dynamic run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicSpec {
    /// Edge speed of the run.
    pub profile: Profile,
    /// Round-trip time of the link (half each way), ms.
    pub rtt_ms: f64,
    /// (Mbit/s, seconds), in order.
    pub phases: Vec<(f64, f64)>,
    /// CPU burst (start, end) in seconds from the start of the trace.
    pub burst: Option<(f64, f64)>,
    /// Seconds after a change before a phase counts as steady.
    pub settle_s: f64,
}

impl Default for DynamicSpec {
    /// pi3, RTT 0 (where offloading pays at 50 and 20 Mbit/s and not at 1); 50 Mbit/s for 12 s
    /// (the edge starts in it), 1 Mbit/s for 12 s, 20 Mbit/s for 18 s with one busy process from
    /// 6 s to 12 s into that phase; steady 3 s after a change.
    fn default() -> Self {
        Self {
            profile: Profile::Pi3,
            rtt_ms: 0.0,
            phases: vec![(50.0, 12.0), (1.0, 12.0), (20.0, 18.0)],
            burst: Some((30.0, 36.0)),
            settle_s: 3.0,
        }
    }
}

impl DynamicSpec {
    /// Start time of each phase, s.
    pub fn starts(&self) -> Vec<f64> {
        let mut t = 0.0;
        self.phases
            .iter()
            .map(|&(_, len)| {
                let start = t;
                t += len;
                start
            })
            .collect()
    }

    /// Length of the whole schedule (every phase), s.
    pub fn total_s(&self) -> f64 {
        self.phases.iter().map(|p| p.1).sum()
    }

    /// Bandwidth in force at `t`.
    pub fn bandwidth_at(&self, t: f64) -> f64 {
        let starts = self.starts();
        self.phases
            .iter()
            .zip(starts)
            .filter(|(_, s)| *s <= t)
            .map(|((mbit, _), _)| *mbit)
            .next_back()
            .or_else(|| self.phases.first().map(|p| p.0))
            .unwrap_or(0.0)
    }

    /// Whether the CPU burst is on at `t` (seconds from the start of the trace).
    pub fn busy_at(&self, t: f64) -> bool {
        self.burst.is_some_and(|(a, b)| t >= a && t < b)
    }

    /// The `jmdc-linkemu --trace` CSV.
    pub fn trace_csv(&self, queue_bytes: usize) -> String {
        let mut out = String::from("# at_ms, direction, rate_mbit, delay_ms, loss, queue_bytes\n");
        for ((mbit, _), start) in self.phases.iter().zip(self.starts()) {
            out.push_str(&format!(
                "{:.0},both,{},{},0,{}\n",
                start * 1000.0,
                num(*mbit),
                num(self.rtt_ms / 2.0),
                queue_bytes
            ));
        }
        out
    }
}

/// One frame of the dynamic run.
#[derive(Debug, Clone, PartialEq)]
pub struct DynFrame {
    /// Seconds from the start of the trace when the result line arrived.
    pub t_s: f64,
    /// Frame id from the edge's result line.
    pub frame: u64,
    /// The plan the frame ran under.
    pub plan: String,
    /// Bytes sent for the frame (0: nothing was sent).
    pub bytes: u64,
    /// Whole latency of the frame, ms.
    pub total_ms: f64,
    /// The latency the loop predicted for the plan, ms.
    pub predicted_ms: Option<f64>,
    /// True when the plan wanted the cloud but the edge finished the frame.
    pub fallback: bool,
}

const DYN_HEADER: [&str; 9] = [
    "t_s",
    "frame",
    "plan",
    "bytes",
    "total_ms",
    "predicted_ms",
    "fallback",
    "bandwidth_mbit",
    "busy",
];

/// `dynamic.csv` text.
pub fn frames_csv(frames: &[DynFrame], spec: &DynamicSpec) -> String {
    let mut out = csvio::line(&DYN_HEADER);
    for f in frames {
        out.push_str(&csvio::line(&[
            format!("{:.4}", f.t_s),
            f.frame.to_string(),
            f.plan.clone(),
            f.bytes.to_string(),
            format!("{:.3}", f.total_ms),
            f.predicted_ms.map_or(String::new(), |p| format!("{p:.3}")),
            f.fallback.to_string(),
            num(spec.bandwidth_at(f.t_s)),
            spec.busy_at(f.t_s).to_string(),
        ]));
    }
    out
}

/// Reads `dynamic.csv`.
pub fn read_frames(path: &Path) -> Result<Vec<DynFrame>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    let err = |line: usize, message: String| BenchError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let table = csvio::Table::from_text(&text).map_err(|(l, m)| err(l, m))?;
    table
        .maps()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let get = |k: &str| {
                m.get(k)
                    .copied()
                    .ok_or_else(|| err(i + 2, format!("missing {k}")))
            };
            let f = |k: &str| -> Result<f64, BenchError> {
                get(k)?
                    .parse::<f64>()
                    .map_err(|_| err(i + 2, format!("{k} is not a number")))
            };
            let predicted = get("predicted_ms")?;
            Ok(DynFrame {
                t_s: f("t_s")?,
                frame: f("frame")? as u64,
                plan: get("plan")?.to_string(),
                bytes: f("bytes")? as u64,
                total_ms: f("total_ms")?,
                predicted_ms: if predicted.is_empty() {
                    None
                } else {
                    predicted.parse().ok()
                },
                fallback: get("fallback")? == "true",
            })
        })
        .collect()
}

/// Reaction to one bandwidth step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReaction {
    /// When the step happened, s from the start of the trace.
    pub at_s: f64,
    /// Bandwidth before the step, Mbit/s.
    pub from_mbit: f64,
    /// Bandwidth after the step, Mbit/s.
    pub to_mbit: f64,
    /// The plan in force just before the step, and its bytes.
    pub before_plan: String,
    /// Bytes of the last frame before the step.
    pub before_bytes: u64,
    /// Seconds from the step to the first frame on a plan with fewer (drop) or more (rise) bytes.
    pub reaction_s: Option<f64>,
    /// The plan of that first frame, when there is one.
    pub new_plan: Option<String>,
    /// Why there is no reaction (no frame before the step, already edge-only, …); empty
    /// otherwise.
    pub note: String,
}

/// Figures of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    /// Bandwidth of the phase, Mbit/s.
    pub mbit: f64,
    /// Start of the phase, s from the start of the trace.
    pub start_s: f64,
    /// End of the phase, s from the start of the trace.
    pub end_s: f64,
    /// Frames whose results arrived during the phase.
    pub frames: usize,
    /// Mean latency of those frames, ms (0 without frames).
    pub mean_ms: f64,
    /// Plan changes between consecutive frames in the steady part (after `settle_s`, outside the
    /// CPU burst and its settling time).
    pub steady_changes: usize,
    /// Of those, changes into a plan that lasted ≤ 2 frames and went back (exploration).
    pub steady_excursions: usize,
    /// Plans of the steady part with frame counts, most first.
    pub steady_plans: Vec<(String, usize)>,
}

/// The whole analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynamicAnalysis {
    /// The reaction to each bandwidth step, in order.
    pub steps: Vec<StepReaction>,
    /// The figures of each phase, in order.
    pub phases: Vec<PhaseStats>,
    /// Seconds from the start of the burst to the first frame on another plan, and that plan.
    pub burst_reaction: Option<(f64, String)>,
    /// Same after the end of the burst.
    pub burst_recovery: Option<(f64, String)>,
    /// Plan changes between consecutive frames over the whole run.
    pub total_changes: usize,
}

fn changes(frames: &[&DynFrame]) -> (usize, usize) {
    let mut total = 0;
    let mut excursions = 0;
    for i in 1..frames.len() {
        if frames[i].plan != frames[i - 1].plan {
            total += 1;
            // a short visit: back to the previous plan within 3 frames (an exploration visit)
            let back =
                (i + 1..(i + 4).min(frames.len())).any(|j| frames[j].plan == frames[i - 1].plan);
            if back {
                excursions += 1;
            }
        }
    }
    (total, excursions)
}

/// Reaction times, per-phase figures and flapping counts.
pub fn analyse_dynamic(frames: &[DynFrame], spec: &DynamicSpec) -> DynamicAnalysis {
    let starts = spec.starts();
    let ends: Vec<f64> = starts
        .iter()
        .zip(&spec.phases)
        .map(|(s, p)| s + p.1)
        .collect();
    let mut steps = Vec::new();
    for i in 1..spec.phases.len() {
        let at = starts[i];
        let (from, to) = (spec.phases[i - 1].0, spec.phases[i].0);
        let before = frames.iter().rev().find(|f| f.t_s < at);
        let Some(before) = before else {
            steps.push(StepReaction {
                at_s: at,
                from_mbit: from,
                to_mbit: to,
                before_plan: String::new(),
                before_bytes: 0,
                reaction_s: None,
                new_plan: None,
                note: "no frame before the step".into(),
            });
            continue;
        };
        let want_fewer = to < from;
        let hit = frames
            .iter()
            .filter(|f| f.t_s >= at && f.t_s < ends[i])
            .find(|f| {
                // Another plan, sending less (more): a JPEG plan's frames differ in size, so a
                // smaller frame of the same plan is no reaction.
                f.plan != before.plan
                    && if want_fewer {
                        f.bytes < before.bytes
                    } else {
                        f.bytes > before.bytes
                    }
            });
        let note = match (hit, want_fewer && before.bytes == 0) {
            (_, true) => "already sending 0 B (edge-only) before the drop".to_string(),
            (Some(_), _) => String::new(),
            (None, _) => format!(
                "no plan with {} bytes within the phase",
                if want_fewer { "fewer" } else { "more" }
            ),
        };
        steps.push(StepReaction {
            at_s: at,
            from_mbit: from,
            to_mbit: to,
            before_plan: before.plan.clone(),
            before_bytes: before.bytes,
            reaction_s: hit.map(|f| f.t_s - at),
            new_plan: hit.map(|f| f.plan.clone()),
            note,
        });
    }
    let excluded = |t: f64| {
        spec.burst
            .is_some_and(|(a, b)| t >= a && t < b + spec.settle_s)
    };
    let phases = spec
        .phases
        .iter()
        .zip(starts.iter().zip(&ends))
        .map(|(&(mbit, _), (&start, &end))| {
            let all: Vec<&DynFrame> = frames
                .iter()
                .filter(|f| f.t_s >= start && f.t_s < end)
                .collect();
            let steady: Vec<&DynFrame> = all
                .iter()
                .copied()
                .filter(|f| f.t_s >= start + spec.settle_s && !excluded(f.t_s))
                .collect();
            // count within contiguous steady stretches (the burst splits a phase in two)
            let mut total = 0;
            let mut exc = 0;
            let mut stretch: Vec<&DynFrame> = Vec::new();
            for f in &all {
                if f.t_s >= start + spec.settle_s && !excluded(f.t_s) {
                    stretch.push(f);
                } else if !stretch.is_empty() {
                    let (t, e) = changes(&stretch);
                    total += t;
                    exc += e;
                    stretch.clear();
                }
            }
            let (t, e) = changes(&stretch);
            total += t;
            exc += e;
            let mut plans: Vec<(String, usize)> = Vec::new();
            for f in &steady {
                match plans.iter_mut().find(|(p, _)| *p == f.plan) {
                    Some((_, n)) => *n += 1,
                    None => plans.push((f.plan.clone(), 1)),
                }
            }
            plans.sort_by_key(|p| std::cmp::Reverse(p.1));
            PhaseStats {
                mbit,
                start_s: start,
                end_s: end,
                frames: all.len(),
                mean_ms: if all.is_empty() {
                    0.0
                } else {
                    all.iter().map(|f| f.total_ms).sum::<f64>() / all.len() as f64
                },
                steady_changes: total,
                steady_excursions: exc,
                steady_plans: plans,
            }
        })
        .collect();
    let first_other_after = |t0: f64| {
        let current = frames.iter().rev().find(|f| f.t_s < t0)?;
        frames
            .iter()
            .find(|f| f.t_s >= t0 && f.plan != current.plan)
            .map(|f| (f.t_s - t0, f.plan.clone()))
    };
    let all_refs: Vec<&DynFrame> = frames.iter().collect();
    DynamicAnalysis {
        steps,
        phases,
        burst_reaction: spec.burst.and_then(|(a, _)| first_other_after(a)),
        burst_recovery: spec.burst.and_then(|(_, b)| first_other_after(b)),
        total_changes: changes(&all_refs).0,
    }
}

/// Runs the dynamic schedule against `worker` and returns the frames (stamped on arrival).
pub fn run_dynamic(
    bins: &Binaries,
    worker: &mut Worker,
    settings: &RunSettings,
    spec: &DynamicSpec,
) -> Result<Vec<DynFrame>, BenchError> {
    worker.check_alive()?;
    let queue_bytes = settings.queue_bytes;
    let dir = settings.work.join("dynamic");
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
    let trace = dir.join("trace.csv");
    std::fs::write(&trace, spec.trace_csv(queue_bytes)).map_err(|e| BenchError::io(&trace, e))?;
    let total = Duration::from_secs_f64(spec.total_s());
    let first_rate = spec.phases.first().map_or(50.0, |p| p.0);
    let relay = LinkEmu::start(
        bins,
        worker.addr,
        &LinkSetting {
            rate_mbit: first_rate,
            delay_ms: spec.rtt_ms / 2.0,
            queue_bytes,
            trace: Some(trace),
            max_duration: total + Duration::from_secs(120),
        },
        &dir.join("linkemu.log"),
    )?;
    // The trace runs from the relay's bind; its address line comes right after.
    let t0 = Instant::now();
    let cfg = dir.join("edge.toml");
    EdgeSetup {
        repo: settings.repo.clone(),
        model: settings.model.clone(),
        endpoint: relay.addr,
        cert: worker.cert.clone(),
        profile: spec.profile,
        in_flight: settings.in_flight,
        floor_pct: settings.floor_pct,
        adaptive: Some(LoopStrategy::Jmdc),
        frames_to: Some(None),
        repeat_source: true,
    }
    .write(&cfg)?;
    let mut edge = Proc::spawn_piped(
        "jmdc-edge (dynamic)",
        Command::new(&bins.edge)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .env("ORT_DISABLE_TELEMETRY", "1"),
        &dir.join("edge.log"),
    )?;
    let stdout = edge
        .take_stdout()
        .ok_or_else(|| BenchError::process("jmdc-edge (dynamic)", "no stdout pipe"))?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let reader = std::thread::Builder::new()
        .name("dynamic-frames".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| BenchError::process("reader thread", e.to_string()))?;
    let mut lines: Vec<(Instant, String)> = Vec::new();
    let mut spinner: Option<Proc> = None;
    let deadline = t0 + total;
    while Instant::now() < deadline {
        check_interrupt()?;
        if let Some((a, b)) = spec.burst {
            let t = t0.elapsed().as_secs_f64();
            if spinner.is_none() && t >= a && t < b {
                spinner = Some(start_spinner(bins, b - t)?);
            }
            if t >= b {
                if let Some(mut s) = spinner.take() {
                    s.kill();
                }
            }
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(BenchError::process(
                    "jmdc-edge (dynamic)",
                    format!("stopped early{}", edge.stderr_tail()),
                ))
            }
        }
    }
    drop(spinner);
    edge.terminate(Duration::from_secs(10));
    // The pipe is closed now; collect what is left (bounded).
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until && !interrupted() {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = reader.join();
    relay.stop();
    let frames: Vec<DynFrame> = lines
        .iter()
        .filter_map(|(at, line)| {
            let f: FrameLine = serde_json::from_str(line).ok()?;
            Some(DynFrame {
                t_s: at.saturating_duration_since(t0).as_secs_f64(),
                frame: f.frame,
                plan: f.plan,
                bytes: f.bytes,
                total_ms: f.latency_ms.total,
                predicted_ms: f.predicted_ms,
                fallback: f.fallback,
            })
        })
        .filter(|f| f.t_s <= spec.total_s())
        .collect();
    if frames.is_empty() {
        return Err(BenchError::process(
            "jmdc-edge (dynamic)",
            format!("no per-frame results{}", edge.stderr_tail()),
        ));
    }
    Ok(frames)
}

/// Where the dynamic run's files go in the output folder.
pub fn frames_path(out: &Path) -> PathBuf {
    out.join("dynamic.csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(t: f64, plan: &str, bytes: u64) -> DynFrame {
        DynFrame {
            t_s: t,
            frame: (t * 10.0) as u64,
            plan: plan.into(),
            bytes,
            total_ms: 10.0,
            predicted_ms: Some(9.0),
            fallback: false,
        }
    }

    fn spec() -> DynamicSpec {
        DynamicSpec {
            profile: Profile::Pi4,
            rtt_ms: 20.0,
            phases: vec![(50.0, 10.0), (1.0, 10.0), (20.0, 10.0)],
            burst: Some((24.0, 26.0)),
            settle_s: 2.0,
        }
    }

    #[test]
    fn schedule_and_trace() {
        let s = spec();
        assert_eq!(s.starts(), vec![0.0, 10.0, 20.0]);
        assert_eq!(s.bandwidth_at(0.0), 50.0);
        assert_eq!(s.bandwidth_at(15.0), 1.0);
        assert_eq!(s.bandwidth_at(99.0), 20.0);
        assert!(s.busy_at(25.0) && !s.busy_at(26.0));
        assert_eq!(
            s.trace_csv(65536).lines().skip(1).collect::<Vec<_>>(),
            [
                "0,both,50,10,0,65536",
                "10000,both,1,10,0,65536",
                "20000,both,20,10,0,65536"
            ]
        );
    }

    #[test]
    fn reactions_and_flapping() {
        let mut frames = Vec::new();
        // phase 1: cloud-only 3000 B, one exploration visit at 5 s
        for i in 0..100 {
            let t = i as f64 * 0.1;
            frames.push(if i == 50 {
                f(t, "explore", 400)
            } else {
                f(t, "cloud", 3000)
            });
        }
        // phase 2: reacts after 0.5 s to a 300 B split; flaps once at 15 s and 15.1 s
        for i in 0..100 {
            let t = 10.0 + i as f64 * 0.1;
            let (p, b) = if t < 10.45 {
                // JPEG-like: the same plan's frames differ in size; no reaction yet.
                ("cloud", 2900)
            } else if (50..52).contains(&i) {
                ("edge", 0)
            } else {
                ("split", 300)
            };
            frames.push(f(t, p, b));
        }
        // phase 3: back to cloud after 1.0 s; burst at 24 s → edge at 24.3 s, back at 26.2 s
        for i in 0..100 {
            let t = 20.0 + i as f64 * 0.1;
            let (p, b) = if t < 20.95 {
                ("split", 300)
            } else if (24.25..26.15).contains(&t) {
                ("edge", 0)
            } else {
                ("cloud", 3000)
            };
            frames.push(f(t, p, b));
        }
        let a = analyse_dynamic(&frames, &spec());
        assert_eq!(a.steps.len(), 2);
        assert!((a.steps[0].reaction_s.expect("drop") - 0.5).abs() < 1e-6);
        assert_eq!(a.steps[0].new_plan.as_deref(), Some("split"));
        assert!((a.steps[1].reaction_s.expect("rise") - 1.0).abs() < 1e-6);
        assert_eq!(a.phases[0].steady_changes, 2);
        assert_eq!(a.phases[0].steady_excursions, 1);
        assert_eq!(a.phases[1].steady_changes, 2);
        assert_eq!(
            a.phases[2].steady_changes, 0,
            "burst and its settling excluded"
        );
        assert_eq!(a.phases[0].steady_plans[0], ("cloud".to_string(), 79));
        let (t, p) = a.burst_reaction.expect("burst");
        assert!((t - 0.3).abs() < 1e-6 && p == "edge");
        assert!((a.burst_recovery.expect("recovery").0 - 0.2).abs() < 1e-6);
        let csv = frames_csv(&frames, &spec());
        let dir = std::env::temp_dir().join(format!("jmdc-bench-dyn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("dynamic.csv");
        std::fs::write(&path, csv).expect("write");
        let back = read_frames(&path).expect("read");
        assert_eq!(back.len(), frames.len());
        assert_eq!(back[50].plan, "explore");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
