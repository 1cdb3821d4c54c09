//! The markdown report, `summary.csv` and the figures, from the output folder alone
//! (`jmdc-bench report --from DIR` re-renders without running anything).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::analysis::{analyse, misses, summary_csv, CellResult, Targets};
use super::cells::{num, Load, Profile};
use super::dynamic::{analyse_dynamic, read_frames, DynFrame, DynamicAnalysis};
use super::error::BenchError;
use super::meta::RunMeta;
use super::plans::{short_label, PlanKind};
use super::plots;
use super::results::{read_results, ResultRow, Strategy};

/// What rendering produced.
#[derive(Debug)]
pub struct Rendered {
    /// The figures of every cell in `results.csv`.
    pub cells: Vec<CellResult>,
    /// Where the markdown report was written.
    pub report: PathBuf,
    /// The SVG figures written.
    pub figures: Vec<PathBuf>,
}

/// Reads `meta.json`, `results.csv` and (when present) `dynamic.csv` from `out`, writes
/// `summary.csv` and the figures into `out` and the markdown report to `report` (default: the path
/// recorded in `meta.json`).
pub fn render_from(out: &Path, report: Option<&Path>) -> Result<Rendered, BenchError> {
    let meta = RunMeta::read(&out.join("meta.json"))?;
    let rows = read_results(&out.join("results.csv"))?;
    let frames_path = out.join("dynamic.csv");
    let frames = if frames_path.is_file() {
        Some(read_frames(&frames_path)?)
    } else {
        None
    };
    let report = report.map_or_else(|| meta.report.clone(), Path::to_path_buf);
    render(out, &report, &meta, &rows, frames.as_deref())
}

/// Writes `summary.csv`, the figures and the report.
pub fn render(
    out: &Path,
    report: &Path,
    meta: &RunMeta,
    rows: &[ResultRow],
    frames: Option<&[DynFrame]>,
) -> Result<Rendered, BenchError> {
    let floor = meta.floor_pct / 100.0;
    let cells = analyse(rows, floor);
    let summary = out.join("summary.csv");
    std::fs::write(&summary, summary_csv(&cells)).map_err(|e| BenchError::io(&summary, e))?;

    let mut figures = Vec::new();
    let mut groups: Vec<super::cells::Group> = Vec::new();
    for c in &cells {
        let g = c.cell.group();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut latency_figs = Vec::new();
    for g in &groups {
        let in_group: Vec<&CellResult> = cells.iter().filter(|c| c.cell.group() == *g).collect();
        if let Some(p) = plots::latency_figure(out, g, &in_group, floor)? {
            latency_figs.push((*g, p.clone()));
            figures.push(p);
        }
    }
    let mut pairs: Vec<(Profile, Load)> = Vec::new();
    for c in &cells {
        if !pairs.contains(&(c.cell.profile, c.cell.load)) {
            pairs.push((c.cell.profile, c.cell.load));
        }
    }
    let mut maps = Vec::new();
    for (p, l) in &pairs {
        let in_pair: Vec<&CellResult> = cells
            .iter()
            .filter(|c| c.cell.profile == *p && c.cell.load == *l)
            .collect();
        if let Some(f) = plots::plan_map(out, *p, *l, &in_pair)? {
            maps.push(f.clone());
            figures.push(f);
        }
    }
    let dynamic = match (frames, &meta.dynamic) {
        (Some(frames), Some(spec)) => {
            let fig = plots::dynamic_figure(out, frames, spec)?;
            if let Some(f) = &fig {
                figures.push(f.clone());
            }
            Some((analyse_dynamic(frames, spec), fig))
        }
        _ => None,
    };

    if let Some(dir) = report.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    }
    let report_dir = report
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let link = |p: &Path| relative_link(report_dir, p);
    let mut edge_speeds: Vec<String> = Vec::new();
    for r in rows {
        let entry = format!("{} → {}", r.cell.profile, r.edge_speed);
        if r.cell.profile.emulated() && !r.edge_speed.is_empty() && !edge_speeds.contains(&entry) {
            edge_speeds.push(entry);
        }
    }
    let text = markdown(
        meta,
        out,
        &Figures {
            cells: &cells,
            latency: &latency_figs,
            maps: &maps,
            dynamic: dynamic.as_ref(),
            edge_speeds: &edge_speeds,
        },
        &link,
    );
    std::fs::write(report, text).map_err(|e| BenchError::io(report, e))?;
    Ok(Rendered {
        cells,
        report: report.to_path_buf(),
        figures,
    })
}

/// A link from `from_dir` to `to` (relative when both resolve, else absolute).
pub fn relative_link(from_dir: &Path, to: &Path) -> String {
    let (Ok(from), Ok(to_abs)) = (from_dir.canonicalize(), to.canonicalize()) else {
        return to.display().to_string();
    };
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to_abs.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = std::iter::repeat_n("..".to_string(), a.len() - common).collect();
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1} %", v * 100.0))
}

fn opt(x: Option<f64>, d: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.d$}"))
}

fn ratio_text(r: Option<f64>, limit: f64) -> String {
    match r {
        Some(r) if r > limit => format!("**{r:.2}**"),
        Some(r) => format!("{r:.2}"),
        None => "–".into(),
    }
}

type Fig = (super::cells::Group, PathBuf);

/// What the report shows besides `meta.json`.
struct Figures<'a> {
    cells: &'a [CellResult],
    latency: &'a [Fig],
    maps: &'a [PathBuf],
    dynamic: Option<&'a (DynamicAnalysis, Option<PathBuf>)>,
    /// `pi4 → emulated pi4 (×8)`, as the edge reported it.
    edge_speeds: &'a [String],
}

fn markdown(meta: &RunMeta, out: &Path, f: &Figures<'_>, link: &dyn Fn(&Path) -> String) -> String {
    let (cells, latency_figs, maps, dynamic, edge_speeds) =
        (f.cells, f.latency, f.maps, f.dynamic, f.edge_speeds);
    let t = Targets::default();
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "# Benchmarks: the adaptive loop against fixed plans and baselines\n"
    );
    let _ = writeln!(
        w,
        "Generated by `jmdc-bench` from `{}/results.csv`; re-render the tables and figures without running \
         anything with `target/release/jmdc-bench report --from {}`. Every number below was measured \
         by that run; nothing was edited by hand.\n",
        out.display(),
        out.display()
    );
    if !meta.complete {
        let _ = writeln!(w, "> **The run was interrupted**: only the cells listed under *Durations* were measured.\n");
    }
    let emulated: Vec<&CellResult> = cells.iter().filter(|c| c.cell.profile.emulated()).collect();
    let _ = writeln!(w, "## How it was measured\n");
    let _ = writeln!(w, "- Command: `{}`", meta.command);
    let _ = writeln!(w, "- Started {}, finished {}", meta.started, meta.finished);
    let _ = writeln!(
        w,
        "- Machine: {} ({} logical CPUs, kernel {}), shared with other work; runs of the same plan differ from one another (the spread in parentheses shows by how much)",
        meta.machine.cpu_model, meta.machine.cores, meta.machine.kernel
    );
    let _ = writeln!(
        w,
        "- Commit {}{}",
        meta.git_commit,
        if meta.git_dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    let _ = writeln!(
        w,
        "- The real release binaries on loopback: `jmdc-cloud` (1 worker, 1 intra-op thread), `jmdc-edge` \
         (1 intra-op thread, `max_in_flight = {}`, `timeout_ms = 2000`), and `jmdc-linkemu` between them \
         (rate both ways = the cell's bandwidth counted in UDP payload bytes, one-way delay = RTT/2, \
         drop-tail queue {} KiB per direction, no loss).",
        meta.in_flight,
        meta.queue_bytes / 1024
    );
    let _ = writeln!(
        w,
        "- {} frames per run: the first {} of the bundled CIFAR-10 (JPEG copy) test images, the same for every \
         plan and strategy; {} repeat(s) per cell, interleaved (all fixed plans in one edge process, then the \
         JMDC loop, then Neurosurgeon, then again). Figures are the mean over repeats with the spread \
         (min–max of the per-repeat means) in parentheses.",
        meta.frames, meta.frames, meta.repeats
    );
    if meta.screen_frames > 0 {
        let _ = writeln!(
            w,
            "- Screening: before the repeats, every fixed plan runs once on the first {} frames (rows with \
             repeat 0 in `results.csv`); JMDC plans slower there than {}× the fastest floor-meeting plan are \
             not measured further (they cannot be the oracle within the run-to-run spread). Baselines always \
             run every repeat.",
            meta.screen_frames,
            num(meta.screen_factor)
        );
    }
    let _ = writeln!(
        w,
        "- **EMULATED**: every `pi4` and `pi3` cell ({} of {} cells here). The edge stretches all its compute \
         by spinning (`[emulation] edge_profile`, `daemon/src/emulation.rs`; the edge reported: {}); the \
         network, the worker and the accuracy are real. `native` cells run at this machine's speed. `busy` \
         cells add one competing process that spins on a core for the whole cell; on this 2-core machine it \
         slows the worker and the relay as well as the edge.",
        emulated.len(),
        cells.len(),
        if edge_speeds.is_empty() { "–".to_string() } else { edge_speeds.join("; ") }
    );
    let _ = writeln!(
        w,
        "- Model `{}`. Accuracy floor {:.0} % (calibrated top-1, `models/packages/{}/calibration.json`). \
         **Oracle** of a cell = the fixed plan with the lowest mean latency among those whose calibrated top-1 meets the \
         floor. **Best baseline** = the fastest of edge-only (variants meeting the floor), cloud-only raw, cloud-only \
         JPEG and Neurosurgeon (the adaptive loop with `strategy = \"neurosurgeon\"`: unpruned model, one split, \
         f32 tensor). **Adaptive** = the loop with `strategy = \"jmdc\"`, objective min-latency. {}",
        meta.model,
        meta.floor_pct,
        meta.model,
        if meta.warm_up_frames > 0 {
            format!(
                "Each adaptive run (JMDC and Neurosurgeon) is a fresh process that first runs {} frames (the \
                 sample file once) and then the {} measured ones, the same images as the fixed plans: a \
                 daemon runs for days, and its start-up is reported apart — **cold start** = the JMDC loop's \
                 first {} frames of the same run (start-up profiling, the first decisions and corrections).",
                meta.warm_up_frames, meta.frames, meta.frames
            )
        } else {
            format!(
                "Started cold in every run (start-up profiling and the first decisions are inside its {} \
                 frames).",
                meta.frames
            )
        }
    );
    let _ = writeln!(w, "\n### Fixed plans run in every cell\n");
    let _ = writeln!(
        w,
        "| plan (`--plan`) | kind | calibrated top-1 | bytes (table) | why |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    for p in &meta.plans {
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | {} |",
            p.spec,
            p.kind,
            pct(p.calibrated_top1),
            p.calibrated_bytes.map_or("–".into(), |b| b.to_string()),
            p.why
        );
    }
    let _ = writeln!(w);
    for j in &meta.jpeg {
        if j.available {
            let _ = writeln!(w, "- JPEG baseline `{}`: run.", j.spec);
        } else {
            let _ = writeln!(
                w,
                "- JPEG baseline `{}`: **absent** — the binaries refused it ({}).",
                j.spec, j.reason
            );
        }
    }
    if meta
        .jpeg
        .iter()
        .any(|j| j.available && j.spec.contains("jpeg75"))
    {
        let _ = writeln!(
            w,
            "- The bundled images were themselves JPEG q75, so re-encoding at q75 is nearly lossless and flatters \
             the q75 baseline; q90 is the fair one."
        );
    }

    // Target checks.
    let _ = writeln!(w, "\n## Target checks\n");
    let all_misses = misses(cells, &t);
    let count = |f: &dyn Fn(&CellResult) -> Option<bool>| {
        let v: Vec<bool> = cells.iter().filter_map(f).collect();
        (v.iter().filter(|b| **b).count(), v.len())
    };
    let (ok_o, n_o) = count(&|c| c.ratio_oracle().map(|r| r <= t.oracle_ratio));
    let (ok_b, n_b) = count(&|c| c.ratio_baseline().map(|r| r <= t.baseline_ratio));
    let (ok_choice, n_choice) = count(&|c| c.ratio_choice_oracle().map(|r| r <= t.oracle_ratio));
    let (ok_e, n_e) = count(&|c| {
        c.adaptive
            .as_ref()
            .and_then(|a| a.agg.prediction_error)
            .map(|e| e <= t.prediction_error)
    });
    let _ = writeln!(w, "| target | cells meeting it |");
    let _ = writeln!(w, "| --- | --- |");
    let _ = writeln!(
        w,
        "| adaptive ÷ oracle ≤ {:.2} | {ok_o} of {n_o} |",
        t.oracle_ratio
    );
    if n_choice > 0 {
        let _ = writeln!(
            w,
            "| the loop's choice ÷ oracle ≤ {:.2} (the plans it ran, as measured run fixed in the cell, frame-weighted: the choice without its own run's spread; not a target of its own) | {ok_choice} of {n_choice} |",
            t.oracle_ratio
        );
    }
    let _ = writeln!(
        w,
        "| adaptive ÷ best baseline ≤ {:.2} | {ok_b} of {n_b} |",
        t.baseline_ratio
    );
    let (ok_bias, n_bias) = count(&|c| {
        c.adaptive
            .as_ref()
            .and_then(|a| a.agg.prediction_bias)
            .map(|e| e <= t.prediction_error)
    });
    let (ok_cold, n_cold) = count(&|c| c.ratio_cold_oracle().map(|r| r <= t.oracle_ratio));
    let _ = writeln!(
        w,
        "| adaptive prediction error ≤ {:.0} % (per frame: mean of \\|measured − predicted\\| ÷ measured) | {ok_e} of {n_e} |",
        t.prediction_error * 100.0
    );
    if n_bias > 0 {
        let _ = writeln!(
            w,
            "| adaptive prediction error of the mean ≤ {:.0} % (\\|mean measured − mean predicted\\| ÷ mean measured; not a target of its own) | {ok_bias} of {n_bias} |",
            t.prediction_error * 100.0
        );
    }
    if n_cold > 0 {
        let _ = writeln!(
            w,
            "| cold start ÷ oracle ≤ {:.2} (the loop's first {} frames; not a target of its own) | {ok_cold} of {n_cold} |",
            t.oracle_ratio, meta.frames
        );
    }
    if all_misses.is_empty() {
        let _ = writeln!(w, "\nNo misses.");
    } else {
        let _ = writeln!(w, "\nMisses:\n");
        for m in &all_misses {
            let value = if m.what == "prediction error" {
                format!("{:.1} % > {:.0} %", m.value * 100.0, m.limit * 100.0)
            } else {
                format!("{:.2} > {:.2}", m.value, m.limit)
            };
            let _ = writeln!(
                w,
                "- {}{}: {} {} — {}",
                m.cell,
                if m.cell.profile.emulated() {
                    " (emulated)"
                } else {
                    ""
                },
                m.what,
                value,
                m.detail
            );
        }
    }

    // Summary table.
    let _ = writeln!(w, "\n## Per cell\n");
    let _ = writeln!(w, "Latencies are mean ms per frame (spread over repeats). Ratios above their target are bold.\n");
    let _ = writeln!(
        w,
        "| cell | oracle plan | oracle | adaptive | ÷ oracle | choice ÷ oracle | best baseline | ÷ best | Neurosurgeon | adaptive's main plan | adaptive pred. error (per frame / of the mean) | cold start ÷ oracle |"
    );
    let _ = writeln!(
        w,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for c in cells {
        let o = c.oracle_plan();
        let a = c.adaptive.as_ref();
        let b = c.best_baseline.as_ref();
        let _ = writeln!(
            w,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            c.cell,
            if c.cell.profile.emulated() {
                " (emulated)"
            } else {
                ""
            },
            o.map_or("–".into(), |o| o.label.clone()),
            o.map_or("–".into(), |o| o.agg.spread_text()),
            a.map_or("–".into(), |a| a.agg.spread_text()),
            ratio_text(c.ratio_oracle(), t.oracle_ratio),
            c.ratio_choice_oracle()
                .map_or("–".into(), |r| format!("{r:.2}")),
            b.map_or("–".into(), |b| format!(
                "{} {}",
                b.name,
                b.agg.spread_text()
            )),
            ratio_text(c.ratio_baseline(), t.baseline_ratio),
            c.neurosurgeon
                .as_ref()
                .map_or("–".into(), |n| n.agg.spread_text()),
            a.and_then(|a| a.main_plan())
                .map_or("–".into(), short_label),
            pct(a.and_then(|a| a.agg.prediction_error)),
            pct(a.and_then(|a| a.agg.prediction_bias)),
            c.ratio_cold_oracle()
                .map_or("–".into(), |r| format!("{r:.2}")),
        );
    }

    if !latency_figs.is_empty() || !maps.is_empty() {
        let _ = writeln!(w, "\n## Figures\n");
        for (g, p) in latency_figs {
            let _ = writeln!(
                w,
                "![latency vs bandwidth, {} {} RTT {} ms]({})\n",
                g.profile,
                g.load,
                num(g.rtt_ms),
                link(p)
            );
        }
        for p in maps {
            let _ = writeln!(w, "![plan per cell]({})\n", link(p));
        }
    }

    // Strategy details.
    let _ = writeln!(w, "\n## Strategies in each cell\n");
    let _ = writeln!(
        w,
        "Mean and p95 latency (ms), measured top-1 on the run's frames, request bytes per frame, the loop's \
         mean prediction error |measured − predicted| ÷ measured, frames/s (frames ÷ wall time of the run, one \
         frame in flight) and the plans used (frames per plan, summed over repeats). All fixed plans of every \
         repeat are in `results.csv`.\n"
    );
    let _ = writeln!(w, "| cell | strategy | plan | mean | p95 | top-1 | bytes/frame | pred. error | frames/s | plans used |");
    let _ = writeln!(
        w,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for c in cells {
        let mut shown: Vec<(&str, &super::analysis::PlanResult)> = Vec::new();
        if let Some(a) = &c.adaptive {
            shown.push(("JMDC adaptive", a));
        }
        if let Some(a) = &c.adaptive_cold {
            shown.push(("JMDC adaptive, cold start", a));
        }
        if let Some(n) = &c.neurosurgeon {
            shown.push(("Neurosurgeon", n));
        }
        if let Some(o) = c.oracle_plan() {
            shown.push(("oracle", o));
        }
        let best_edge = c
            .plans
            .iter()
            .filter(|p| {
                p.strategy == Strategy::Fixed(PlanKind::EdgeOnly)
                    && p.calibrated_top1
                        .is_some_and(|x| x >= meta.floor_pct / 100.0)
            })
            .min_by(|a, b| a.agg.mean_ms.total_cmp(&b.agg.mean_ms));
        if let Some(e) = best_edge {
            shown.push(("edge-only (best)", e));
        }
        for p in c.plans.iter().filter(|p| {
            matches!(
                p.strategy,
                Strategy::Fixed(PlanKind::CloudOnly | PlanKind::Jpeg)
            )
        }) {
            shown.push((
                if p.strategy == Strategy::Fixed(PlanKind::Jpeg) {
                    "cloud-only JPEG"
                } else {
                    "cloud-only raw"
                },
                p,
            ));
        }
        for (name, p) in shown {
            let plans_used = if matches!(p.strategy, Strategy::Adaptive | Strategy::Neurosurgeon) {
                p.plans_text()
            } else {
                String::new()
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.2} | {} | {:.0} | {} | {} | {} |",
                c.cell,
                name,
                if matches!(p.strategy, Strategy::Fixed(_)) {
                    p.label.as_str()
                } else {
                    ""
                },
                p.agg.spread_text(),
                p.agg.p95_ms,
                pct(p.agg.top1),
                p.agg.bytes_per_frame,
                pct(p.agg.prediction_error),
                opt(p.agg.fps, 1),
                plans_used
            );
        }
    }

    // Link check.
    let _ = writeln!(w, "\n## What the emulated link delivered\n");
    let _ = writeln!(
        w,
        "For the cloud-only raw plan (one ≈ 3.1 kB request and a small response per frame): the edge's network \
         time (round trip minus the worker's own time) minus the RTT, and the request rate that implies \
         (request bytes × 8 ÷ that time) as a fraction of the link rate. Below 1.0 the transport (QUIC \
         congestion control, pacing, acknowledgements) or the relay's timer granularity costs more than the \
         bytes themselves.\n"
    );
    let _ = writeln!(
        w,
        "| cell | bytes/frame | network ms | − RTT | effective Mbit/s | ÷ link rate |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
    for c in cells {
        if let Some(p) = c
            .plans
            .iter()
            .find(|p| p.strategy == Strategy::Fixed(PlanKind::CloudOnly))
        {
            let transfer_ms = p.agg.network_mean_ms - c.cell.rtt_ms;
            let eff = (transfer_ms > 0.0)
                .then(|| p.agg.bytes_per_frame * 8.0 / (transfer_ms / 1000.0) / 1e6);
            let _ = writeln!(
                w,
                "| {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                c.cell,
                p.agg.bytes_per_frame,
                p.agg.network_mean_ms,
                transfer_ms,
                opt(eff, 2),
                opt(eff.map(|e| e / c.cell.bandwidth_mbit), 2)
            );
        }
    }

    // Dynamic run.
    if let (Some((a, fig)), Some(spec)) = (dynamic, &meta.dynamic) {
        let _ = writeln!(w, "\n## Dynamic run\n");
        let phases: Vec<String> = spec
            .phases
            .iter()
            .map(|(m, l)| format!("{} Mbit/s for {} s", num(*m), num(*l)))
            .collect();
        let _ = writeln!(
            w,
            "JMDC adaptive, {} edge{}, RTT {} ms, the link stepping {} (a `jmdc-linkemu --trace`, from the relay's \
             start; the edge starts inside the first phase){}. Each frame is time-stamped by the runner when its \
             result line arrives. A phase counts as steady {} s after a change.\n",
            spec.profile,
            if spec.profile.emulated() { " (EMULATED)" } else { "" },
            num(spec.rtt_ms),
            phases.join(", "),
            spec.burst.map_or(String::new(), |(b0, b1)| format!(
                ", with one competing busy process from {} s to {} s",
                num(b0),
                num(b1)
            )),
            num(spec.settle_s)
        );
        if let Some(f) = fig {
            let _ = writeln!(w, "![dynamic run]({})\n", link(f));
        }
        let _ = writeln!(
            w,
            "| step | at | plan before | reaction | new plan | note |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
        for st in &a.steps {
            let _ = writeln!(
                w,
                "| {} → {} Mbit/s | {} s | {} ({} B) | {} | {} | {} |",
                num(st.from_mbit),
                num(st.to_mbit),
                num(st.at_s),
                st.before_plan,
                st.before_bytes,
                st.reaction_s
                    .map_or("none".into(), |r| format!("{:.2} s", r)),
                st.new_plan.clone().unwrap_or_default(),
                st.note
            );
        }
        if let Some((r, p)) = &a.burst_reaction {
            let _ = writeln!(
                w,
                "\nCPU burst: first frame on another plan {r:.2} s after it began ({p})."
            );
        } else if spec.burst.is_some() {
            let _ = writeln!(w, "\nCPU burst: the plan did not change while it lasted.");
        }
        if let Some((r, p)) = &a.burst_recovery {
            let _ = writeln!(
                w,
                "After the burst: first frame on another plan {r:.2} s after it ended ({p})."
            );
        }
        let _ = writeln!(w, "\n| phase | frames | mean ms | plan changes in steady part | of which ≤ 3-frame visits (exploration) | steady plans (frames) |");
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
        for p in &a.phases {
            let plans: Vec<String> = p
                .steady_plans
                .iter()
                .map(|(pl, n)| format!("{pl} ({n})"))
                .collect();
            let _ = writeln!(
                w,
                "| {} Mbit/s, {}–{} s | {} | {:.2} | {} | {} | {} |",
                num(p.mbit),
                num(p.start_s),
                num(p.end_s),
                p.frames,
                p.mean_ms,
                p.steady_changes,
                p.steady_excursions,
                plans.join(", ")
            );
        }
        let _ = writeln!(w, "\nPlan changes over the whole run: {}.", a.total_changes);
    } else if let Some(e) = &meta.dynamic_error {
        let _ = writeln!(w, "\n## Dynamic run\n\nFailed: {e}");
    }

    let _ = writeln!(w, "\n## Durations\n");
    let total: f64 = meta.cells.iter().map(|c| c.seconds).sum();
    let _ = writeln!(
        w,
        "{} cells, {:.0} s in cells ({:.1} min).\n",
        meta.cells.len(),
        total,
        total / 60.0
    );
    let _ = writeln!(
        w,
        "| cell | seconds | fixed plans measured in full | screened out | error |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    for c in &meta.cells {
        let result = cells.iter().find(|r| r.cell.id() == c.cell);
        let _ = writeln!(
            w,
            "| {} | {:.0} | {} | {} | {} |",
            c.cell,
            c.seconds,
            result.map_or("–".into(), |r| r.plans.len().to_string()),
            result.map_or("–".into(), |r| r.screened_out.len().to_string()),
            c.error.clone().unwrap_or_default()
        );
    }
    s
}

/// The CI table: one line per cell with adaptive ÷ oracle, and the cells above `limit`.
pub fn ci_table(cells: &[CellResult], limit: f64) -> (String, Vec<String>) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<34} {:<32} {:>10} {:>10} {:>8} {:>10} {:>8}",
        "cell", "oracle plan", "oracle ms", "adapt. ms", "÷oracle", "neuro ms", "pred.err"
    );
    let mut failed = Vec::new();
    for c in cells {
        let r = c.ratio_oracle();
        let _ = writeln!(
            s,
            "{:<34} {:<32} {:>10} {:>10} {:>8} {:>10} {:>8}",
            c.cell.to_string(),
            c.oracle_plan().map_or("–".into(), |o| o.label.clone()),
            opt(c.oracle_plan().map(|o| o.agg.mean_ms), 2),
            opt(c.adaptive.as_ref().map(|a| a.agg.mean_ms), 2),
            opt(r, 3),
            opt(c.neurosurgeon.as_ref().map(|n| n.agg.mean_ms), 2),
            pct(c.adaptive.as_ref().and_then(|a| a.agg.prediction_error)),
        );
        match r {
            Some(r) if r <= limit => {}
            Some(r) => failed.push(format!("{}: adaptive ÷ oracle {r:.3} > {limit}", c.cell)),
            None => failed.push(format!("{}: no adaptive or no oracle figure", c.cell)),
        }
    }
    (s, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative() {
        let base = std::env::temp_dir().join(format!("jmdc-bench-link-{}", std::process::id()));
        let docs = base.join("docs");
        let fig = docs.join("bench").join("a.svg");
        std::fs::create_dir_all(fig.parent().expect("parent")).expect("dirs");
        std::fs::write(&fig, "x").expect("write");
        assert_eq!(relative_link(&docs, &fig), "bench/a.svg");
        let other = base.join("target").join("b.svg");
        std::fs::create_dir_all(other.parent().expect("parent")).expect("dirs");
        std::fs::write(&other, "x").expect("write");
        assert_eq!(relative_link(&docs, &other), "../target/b.svg");
        let _ = std::fs::remove_dir_all(&base);
    }
}
