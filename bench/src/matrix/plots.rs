//! SVG figures (plotters, SVG backend only): latency vs bandwidth per (profile, load, RTT), the
//! plan chosen per cell, and the dynamic run over time.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::analysis::{CellResult, PlanResult};
use super::cells::{num, Group, Load, Profile};
use super::dynamic::{DynFrame, DynamicSpec};
use super::error::BenchError;
use super::plans::{short_label, PlanKind};
use super::results::Strategy;

fn plot_err(path: PathBuf) -> impl Fn(String) -> BenchError {
    move |message| BenchError::Plot {
        path: path.clone(),
        message,
    }
}

macro_rules! tryp {
    ($e:expr, $err:expr) => {
        $e.map_err(|e| $err(e.to_string()))?
    };
}

const ORACLE: RGBColor = RGBColor(0, 0, 0);
const ADAPTIVE: RGBColor = RGBColor(31, 119, 180);
const NEURO: RGBColor = RGBColor(255, 127, 14);
const EDGE: RGBColor = RGBColor(44, 160, 44);
const CLOUD: RGBColor = RGBColor(214, 39, 40);
const JPEG: RGBColor = RGBColor(148, 103, 189);
const SPLIT: RGBColor = RGBColor(23, 190, 207);

/// Colour of a plan kind.
fn kind_colour(kind: Option<PlanKind>) -> RGBColor {
    match kind {
        Some(PlanKind::EdgeOnly) => EDGE,
        Some(PlanKind::CloudOnly) => CLOUD,
        Some(PlanKind::Jpeg) => JPEG,
        Some(PlanKind::Jmdc) => SPLIT,
        None => RGBColor(200, 200, 200),
    }
}

/// The kind of a plan from the edge's label (`keep050 edge-only`, `… cloud-only jpeg q90`, …).
pub fn kind_of_label(label: &str) -> PlanKind {
    if label.contains("edge-only") {
        PlanKind::EdgeOnly
    } else if label.contains("cloud-only") && label.contains("jpeg") {
        PlanKind::Jpeg
    } else if label.contains("cloud-only") {
        PlanKind::CloudOnly
    } else {
        PlanKind::Jmdc
    }
}

/// One line of the latency figure: (bandwidth, mean, min, max).
type Line = Vec<(f64, f64, f64, f64)>;

fn point(c: &CellResult, p: Option<&PlanResult>) -> Option<(f64, f64, f64, f64)> {
    p.map(|p| {
        (
            c.cell.bandwidth_mbit,
            p.agg.mean_ms,
            p.agg.min_ms,
            p.agg.max_ms,
        )
    })
}

/// The fastest floor-meeting edge-only plan of a cell.
fn best_of(c: &CellResult, kind: PlanKind, floor: f64) -> Option<&PlanResult> {
    c.plans
        .iter()
        .filter(|p| {
            p.strategy == Strategy::Fixed(kind) && p.calibrated_top1.is_none_or(|t| t >= floor)
        })
        .min_by(|a, b| a.agg.mean_ms.total_cmp(&b.agg.mean_ms))
}

fn plan_with(c: &CellResult, f: impl Fn(&PlanResult) -> bool) -> Option<&PlanResult> {
    c.plans.iter().find(|p| f(p))
}

/// Latency vs bandwidth (log–log) for the cells of one group; `None` when fewer than two
/// bandwidths were measured.
pub fn latency_figure(
    out: &Path,
    group: &Group,
    cells: &[&CellResult],
    floor: f64,
) -> Result<Option<PathBuf>, BenchError> {
    let mut cells: Vec<&CellResult> = cells.to_vec();
    cells.sort_by(|a, b| a.cell.bandwidth_mbit.total_cmp(&b.cell.bandwidth_mbit));
    if cells.len() < 2 {
        return Ok(None);
    }
    let path = out.join(format!("latency-{}.svg", group.id()));
    let err = plot_err(path.clone());
    let lines: Vec<(&str, RGBColor, Line)> = vec![
        (
            "oracle (best fixed plan)",
            ORACLE,
            cells
                .iter()
                .filter_map(|c| point(c, c.oracle_plan()))
                .collect(),
        ),
        (
            "JMDC adaptive",
            ADAPTIVE,
            cells
                .iter()
                .filter_map(|c| point(c, c.adaptive.as_ref()))
                .collect(),
        ),
        (
            "Neurosurgeon",
            NEURO,
            cells
                .iter()
                .filter_map(|c| point(c, c.neurosurgeon.as_ref()))
                .collect(),
        ),
        (
            "edge-only (best variant ≥ floor)",
            EDGE,
            cells
                .iter()
                .filter_map(|c| point(c, best_of(c, PlanKind::EdgeOnly, floor)))
                .collect(),
        ),
        (
            "cloud-only raw",
            CLOUD,
            cells
                .iter()
                .filter_map(|c| {
                    point(
                        c,
                        plan_with(c, |p| p.strategy == Strategy::Fixed(PlanKind::CloudOnly)),
                    )
                })
                .collect(),
        ),
        (
            "cloud-only JPEG q90",
            JPEG,
            cells
                .iter()
                .filter_map(|c| point(c, plan_with(c, |p| p.plan.ends_with("codec=jpeg90"))))
                .collect(),
        ),
    ];
    let all: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.2.iter().flat_map(|p| [p.2, p.3]))
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return Ok(None);
    }
    let bw_lo = cells.first().map_or(0.5, |c| c.cell.bandwidth_mbit);
    let bw_hi = cells.last().map_or(100.0, |c| c.cell.bandwidth_mbit);
    let root = SVGBackend::new(&path, (820, 520)).into_drawing_area();
    tryp!(root.fill(&WHITE), err);
    let emulated = if group.profile.emulated() {
        " — EMULATED edge speed"
    } else {
        ""
    };
    let mut chart = tryp!(
        ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} edge, {} CPU, RTT {} ms{emulated}",
                    group.profile,
                    group.load,
                    num(group.rtt_ms)
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (bw_lo * 0.8..bw_hi * 1.25).log_scale(),
                (lo * 0.8..hi * 1.25).log_scale()
            ),
        err
    );
    tryp!(
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("link bandwidth (Mbit/s, both ways)")
            .y_desc("mean latency per frame (ms)")
            .x_label_formatter(&|x| num(*x))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw(),
        err
    );
    for (name, colour, pts) in lines.iter().filter(|l| !l.2.is_empty()) {
        let c = *colour;
        tryp!(
            chart.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                c.stroke_width(2)
            )),
            err
        )
        .label(*name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        tryp!(
            chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled()))),
            err
        );
        // spread over repeats: a vertical bar min–max
        tryp!(
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.3 > p.2)
                    .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(1)))
            ),
            err
        );
    }
    // The oracle once more on top (other lines often run along it).
    if let Some((_, colour, pts)) = lines.first() {
        let c = *colour;
        tryp!(
            chart.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                c.stroke_width(1)
            )),
            err
        );
    }
    tryp!(
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw(),
        err
    );
    tryp!(root.present(), err);
    Ok(Some(path.clone()))
}

/// A grid bandwidth × RTT for one (profile, load): each cell coloured by the oracle's plan kind,
/// with the oracle's plan and the adaptive loop's most used plan written in it.
pub fn plan_map(
    out: &Path,
    profile: Profile,
    load: Load,
    cells: &[&CellResult],
) -> Result<Option<PathBuf>, BenchError> {
    if cells.is_empty() {
        return Ok(None);
    }
    let mut bws: Vec<f64> = cells.iter().map(|c| c.cell.bandwidth_mbit).collect();
    bws.sort_by(f64::total_cmp);
    bws.dedup();
    let mut rtts: Vec<f64> = cells.iter().map(|c| c.cell.rtt_ms).collect();
    rtts.sort_by(f64::total_cmp);
    rtts.dedup();
    let path = out.join(format!("plan-map-{profile}-{load}.svg"));
    let err = plot_err(path.clone());
    let (cw, ch, left, top) = (118i32, 64i32, 80i32, 56i32);
    let width = (left + cw * bws.len() as i32 + 20) as u32;
    let height = (top + ch * rtts.len() as i32 + 80) as u32;
    let root: DrawingArea<SVGBackend, Shift> =
        SVGBackend::new(&path, (width.max(560), height)).into_drawing_area();
    tryp!(root.fill(&WHITE), err);
    let emulated = if profile.emulated() {
        " (EMULATED edge speed)"
    } else {
        ""
    };
    let title = format!("Plan per cell: {profile} edge, {load} CPU{emulated}");
    tryp!(
        root.draw(&Text::new(title, (10, 10), ("sans-serif", 16).into_font())),
        err
    );
    let small = ("sans-serif", 11).into_font();
    for (i, bw) in bws.iter().enumerate() {
        let x = left + cw * i as i32 + 6;
        tryp!(
            root.draw(&Text::new(
                format!("{} Mbit/s", num(*bw)),
                (x, top - 18),
                small.clone()
            )),
            err
        );
    }
    for (j, rtt) in rtts.iter().enumerate() {
        let y = top + ch * j as i32 + ch / 2 - 6;
        tryp!(
            root.draw(&Text::new(
                format!("RTT {} ms", num(*rtt)),
                (6, y),
                small.clone()
            )),
            err
        );
    }
    for c in cells {
        let (Some(i), Some(j)) = (
            bws.iter().position(|b| *b == c.cell.bandwidth_mbit),
            rtts.iter().position(|r| *r == c.cell.rtt_ms),
        ) else {
            continue;
        };
        let (x0, y0) = (left + cw * i as i32, top + ch * j as i32);
        let oracle = c.oracle_plan();
        let colour = kind_colour(oracle.map(|o| kind_of_label(&o.label)));
        tryp!(
            root.draw(&Rectangle::new(
                [(x0 + 1, y0 + 1), (x0 + cw - 1, y0 + ch - 1)],
                colour.mix(0.35).filled()
            )),
            err
        );
        tryp!(
            root.draw(&Rectangle::new(
                [(x0 + 1, y0 + 1), (x0 + cw - 1, y0 + ch - 1)],
                BLACK.stroke_width(1)
            )),
            err
        );
        let o = oracle.map_or("-".to_string(), |o| short_label(&o.label));
        let a = c
            .adaptive
            .as_ref()
            .and_then(|a| a.main_plan())
            .map_or("-".to_string(), short_label);
        let ratio = c
            .ratio_oracle()
            .map_or(String::new(), |r| format!("÷oracle {r:.2}"));
        tryp!(
            root.draw(&Text::new(
                format!("O: {o}"),
                (x0 + 4, y0 + 6),
                small.clone()
            )),
            err
        );
        tryp!(
            root.draw(&Text::new(
                format!("A: {a}"),
                (x0 + 4, y0 + 24),
                small.clone()
            )),
            err
        );
        tryp!(
            root.draw(&Text::new(ratio, (x0 + 4, y0 + 42), small.clone())),
            err
        );
    }
    let legend_y = top + ch * rtts.len() as i32 + 14;
    let mut x = 10;
    for (name, colour) in [
        ("edge-only", EDGE),
        ("cloud-only raw", CLOUD),
        ("cloud-only JPEG", JPEG),
        ("split (JMDC)", SPLIT),
    ] {
        tryp!(
            root.draw(&Rectangle::new(
                [(x, legend_y), (x + 14, legend_y + 14)],
                colour.mix(0.35).filled()
            )),
            err
        );
        tryp!(
            root.draw(&Text::new(name, (x + 18, legend_y + 1), small.clone())),
            err
        );
        x += 135;
    }
    for (k, line) in [
        "colour and O: the oracle (the fastest fixed plan meeting the floor)",
        "A: the adaptive loop's most used plan; ÷oracle: its mean latency ÷ the oracle's",
    ]
    .into_iter()
    .enumerate()
    {
        tryp!(
            root.draw(&Text::new(
                line,
                (10, legend_y + 24 + 16 * k as i32),
                small.clone()
            )),
            err
        );
    }
    tryp!(root.present(), err);
    Ok(Some(path.clone()))
}

/// The dynamic run: latency per frame (top) and bytes per frame of the plan in force with the
/// link bandwidth (bottom), over time; the CPU burst shaded.
pub fn dynamic_figure(
    out: &Path,
    frames: &[DynFrame],
    spec: &DynamicSpec,
) -> Result<Option<PathBuf>, BenchError> {
    if frames.is_empty() {
        return Ok(None);
    }
    let path = out.join("dynamic.svg");
    let err = plot_err(path.clone());
    let t_end = spec
        .total_s()
        .max(frames.iter().map(|f| f.t_s).fold(0.0, f64::max));
    let root = SVGBackend::new(&path, (900, 640)).into_drawing_area();
    tryp!(root.fill(&WHITE), err);
    let (upper, lower) = root.split_vertically(340);
    let lat_hi = frames
        .iter()
        .map(|f| f.total_ms.max(f.predicted_ms.unwrap_or(0.0)))
        .fold(1.0, f64::max);
    let lat_lo = frames
        .iter()
        .map(|f| f.total_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .min(lat_hi / 2.0);
    let emulated = if spec.profile.emulated() {
        " — EMULATED edge speed"
    } else {
        ""
    };
    let mut top = tryp!(
        ChartBuilder::on(&upper)
            .caption(
                format!(
                    "Dynamic run: JMDC adaptive, {} edge, RTT {} ms{emulated}",
                    spec.profile,
                    num(spec.rtt_ms)
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_end, (lat_lo * 0.8..lat_hi * 1.2).log_scale()),
        err
    );
    tryp!(
        top.configure_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc("latency (ms)")
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw(),
        err
    );
    if let Some((a, b)) = spec.burst {
        tryp!(
            top.draw_series(std::iter::once(Rectangle::new(
                [(a, lat_lo * 0.8), (b, lat_hi * 1.2)],
                RGBColor(255, 200, 200).mix(0.5).filled()
            ))),
            err
        )
        .label("CPU burst (one busy process)")
        .legend(|(x, y)| {
            Rectangle::new(
                [(x, y - 5), (x + 14, y + 5)],
                RGBColor(255, 200, 200).filled(),
            )
        });
    }
    for start in spec.starts().iter().skip(1) {
        let s = *start;
        tryp!(
            top.draw_series(std::iter::once(PathElement::new(
                vec![(s, lat_lo * 0.8), (s, lat_hi * 1.2)],
                BLACK.stroke_width(1)
            ))),
            err
        );
    }
    tryp!(
        top.draw_series(frames.iter().map(|f| Circle::new(
            (f.t_s, f.total_ms.max(lat_lo)),
            2,
            kind_colour(Some(kind_of_label(&f.plan))).filled()
        ))),
        err
    )
    .label("measured (colour = plan kind)")
    .legend(|(x, y)| Circle::new((x + 7, y), 3, SPLIT.filled()));
    tryp!(
        top.draw_series(LineSeries::new(
            frames
                .iter()
                .filter_map(|f| f.predicted_ms.map(|p| (f.t_s, p.max(lat_lo)))),
            BLACK.mix(0.5).stroke_width(1)
        )),
        err
    )
    .label("predicted")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
    tryp!(
        top.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw(),
        err
    );

    let bytes_hi = frames.iter().map(|f| f.bytes).max().unwrap_or(0).max(100) as f64;
    let bw_hi = spec.phases.iter().map(|p| p.0).fold(1.0, f64::max);
    let mut bottom = tryp!(
        ChartBuilder::on(&lower)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0.0..t_end, 0.0..bytes_hi * 1.15),
        err
    )
    .set_secondary_coord(0.0..t_end, 0.0..bw_hi * 1.15);
    tryp!(
        bottom
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .y_desc("bytes sent per frame (plan in force)")
            .x_desc("time (s)")
            .draw(),
        err
    );
    tryp!(
        bottom
            .configure_secondary_axes()
            .y_desc("link (Mbit/s)")
            .draw(),
        err
    );
    tryp!(
        bottom.draw_series(LineSeries::new(
            frames.iter().map(|f| (f.t_s, f.bytes as f64)),
            ADAPTIVE.stroke_width(2)
        )),
        err
    )
    .label("bytes per frame")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ADAPTIVE.stroke_width(2)));
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for ((mbit, len), start) in spec.phases.iter().zip(spec.starts()) {
        steps.push((start, *mbit));
        steps.push((start + len, *mbit));
    }
    tryp!(
        bottom.draw_secondary_series(LineSeries::new(steps, CLOUD.stroke_width(2))),
        err
    )
    .label("link bandwidth")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], CLOUD.stroke_width(2)));
    // Label each plan that stays at least a second where it starts.
    let small = ("sans-serif", 10).into_font();
    let mut i = 0;
    let mut last_label_t = f64::NEG_INFINITY;
    let mut last_label: Option<String> = None;
    while i < frames.len() {
        let plan = &frames[i].plan;
        let mut j = i;
        while j + 1 < frames.len() && frames[j + 1].plan == *plan {
            j += 1;
        }
        if frames[j].t_s - frames[i].t_s >= 1.0
            && frames[i].t_s - last_label_t > 4.0
            && last_label.as_deref() != Some(plan.as_str())
        {
            let (x, y) = (frames[i].t_s, frames[i].bytes as f64);
            tryp!(
                bottom.draw_series(std::iter::once(Text::new(
                    short_label(plan),
                    (x, y + bytes_hi * 0.05),
                    small.clone()
                ))),
                err
            );
            last_label_t = frames[i].t_s;
            last_label = Some(plan.clone());
        }
        i = j + 1;
    }
    tryp!(
        bottom
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw(),
        err
    );
    tryp!(root.present(), err);
    Ok(Some(path.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_labels() {
        assert_eq!(kind_of_label("keep100 edge-only"), PlanKind::EdgeOnly);
        assert_eq!(
            kind_of_label("keep100 cloud-only (u8 image)"),
            PlanKind::CloudOnly
        );
        assert_eq!(kind_of_label("keep100 cloud-only jpeg q90"), PlanKind::Jpeg);
        assert_eq!(
            kind_of_label("keep050 split@6 keep=1.00 int3"),
            PlanKind::Jmdc
        );
    }
}
