//! `jmdc-bench`: the benchmark matrix of jmdc (`make bench`, `make bench-ci`).
//!
//! `run` drives the real release binaries over loopback through `jmdc-linkemu` and writes
//! `results.csv`, `summary.csv`, `meta.json`, SVG figures and a markdown report; `report`
//! re-renders the report from an output folder; `soak` runs many devices through faults; `load`
//! measures the worker's throughput under many devices; `spin` is the competing CPU load.

use std::path::PathBuf;
use std::time::Instant;

mod load_cmd;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use jmdc_bench::matrix::cells::{self, Axes, Cell, Load, Preset, Profile};
use jmdc_bench::matrix::dynamic::{
    analyse_dynamic, frames_csv, frames_path, run_dynamic, DynamicSpec,
};
use jmdc_bench::matrix::meta::{self, CellTiming, JpegStatus, RunMeta};
use jmdc_bench::matrix::plans::{self, FixedPlan, PlanKind};
use jmdc_bench::matrix::process::{self, interrupted};
use jmdc_bench::matrix::report::{self, ci_table};
use jmdc_bench::matrix::results::ResultsFile;
use jmdc_bench::matrix::runner::{probe_plan, run_cell, RunSettings, SAMPLE_IMAGES};
use jmdc_bench::matrix::services::{Binaries, Worker};
use jmdc_bench::matrix::BenchError;

/// Benchmarks of jmdc: the adaptive loop against fixed plans and baselines over emulated links.
#[derive(Debug, Parser)]
#[command(name = "jmdc-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a matrix of cells (and the dynamic run), then write the results and the report.
    Run(Box<RunArgs>),
    /// Re-render summary.csv, the figures and the report from an output folder.
    Report {
        /// Output folder of an earlier run (results.csv, meta.json, dynamic.csv).
        #[arg(long)]
        from: PathBuf,
        /// Markdown report to write (default: the one recorded in meta.json).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Many simulated devices with certificates against one worker through the link emulator:
    /// 5 % and 30 % loss, a 10 s blackout and a worker restart (`make soak`, `make soak-short`).
    Soak(SoakArgs),
    /// N simulated devices over real QUIC against one worker (closed or open loop): frames/s,
    /// p50/p99 and errors per device count, and the same tail layers in bare ONNX Runtime on as
    /// many threads as the worker has sessions.
    Load(load_cmd::LoadArgs),
    /// Busy-loop on one core for a while (the competing CPU load of `busy` cells).
    Spin {
        #[arg(long)]
        seconds: f64,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Matrix: quick, full, ci, or grid (the product of --bandwidths, --rtts, --profiles, --loads).
    /// For the presets those lists filter the preset's cells.
    #[arg(long, default_value = "full")]
    cells: String,
    /// Bandwidths in Mbit/s, comma-separated (e.g. 0.5,1,20).
    #[arg(long)]
    bandwidths: Option<String>,
    /// Round-trip times in ms, comma-separated.
    #[arg(long)]
    rtts: Option<String>,
    /// Edge profiles: native, pi4, pi3 (comma-separated).
    #[arg(long)]
    profiles: Option<String>,
    /// CPU loads: idle, busy (comma-separated).
    #[arg(long)]
    loads: Option<String>,
    /// Frames per run (each fixed plan and each adaptive run), from the bundled 256 images.
    #[arg(long, default_value_t = 96)]
    frames: usize,
    /// Repeats per cell, interleaved.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Output folder (results.csv, summary.csv, meta.json, dynamic.csv, figures).
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    /// Markdown report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    report: PathBuf,
    /// Folder with jmdc-edge, jmdc-cloud and jmdc-linkemu.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Repository root (models/packages, models/samples).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// The edge's frames in flight (1: latency of one frame at a time, as the optimizer models it).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Top-1 floor, percent.
    #[arg(long, default_value_t = 80.0)]
    floor_pct: f64,
    /// Model package (under models/packages) the edge and the worker run; its calibration table
    /// gives the plans.
    #[arg(long, default_value = "alexnet-cifar10")]
    model: String,
    /// At most this many JMDC split plans per cell (Pareto set first).
    #[arg(long, default_value_t = 12)]
    max_jmdc_plans: usize,
    /// Frames of the screening pass that runs every fixed plan once before the repeats (0: none,
    /// every plan runs every repeat).
    #[arg(long, default_value_t = 16)]
    screen_frames: usize,
    /// JMDC plans slower in the screening pass than this × the fastest floor-meeting plan are not
    /// measured further.
    #[arg(long, default_value_t = 2.0)]
    screen_factor: f64,
    /// Relay queue per direction, bytes.
    #[arg(long, default_value_t = 65536)]
    queue_bytes: usize,
    /// Frames each adaptive run (JMDC loop, Neurosurgeon) runs before its measured frames; the
    /// JMDC loop's first --frames frames are reported apart as its cold start. A multiple of 256
    /// (the sample file), so the measured frames are the fixed plans' images; 0: measure from the
    /// start.
    #[arg(long, default_value_t = 256)]
    warm_up_frames: usize,
    /// Skip the dynamic run.
    #[arg(long)]
    no_dynamic: bool,
    /// Edge profile of the dynamic run.
    #[arg(long, default_value = "pi3")]
    dynamic_profile: String,
    /// RTT of the dynamic run, ms.
    #[arg(long, default_value_t = 0.0)]
    dynamic_rtt: f64,
    /// Exit with status 1 when adaptive ÷ oracle exceeds this in any cell (the CI check).
    #[arg(long)]
    fail_above: Option<f64>,
    /// Keep the scratch folder (configs, logs, per-frame files) and print where it is.
    #[arg(long)]
    keep_work: bool,
}

#[derive(Debug, Args)]
struct SoakArgs {
    /// Simulated devices (one jmdc-edge process each).
    #[arg(long, default_value_t = 64)]
    devices: usize,
    /// Measured length in seconds (at least 100; the blackout is 10 s whatever the length).
    #[arg(long, default_value_t = 600)]
    duration_s: u64,
    /// Frame-rate cap of each device.
    #[arg(long, default_value_t = 4.0)]
    fps: f64,
    /// One-way delay of the emulated link, ms.
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
    /// RSS sampling period, seconds.
    #[arg(long, default_value_t = 5.0)]
    sample_s: f64,
    /// Fail when a device takes longer than this to use the cloud again after the link returns or
    /// the worker restarts.
    #[arg(long, default_value_t = 2000)]
    max_recovery_ms: u64,
    /// Output folder: report.md, devices.csv, rss.csv.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// Scratch folder (emptied first): certificates, configurations, logs, per-frame results.
    #[arg(long, default_value = "target/soak-work")]
    work: PathBuf,
    /// Folder with jmdc-edge and jmdc-cloud.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Repository root (models/packages, models/samples).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

fn soak(args: SoakArgs) -> Result<i32> {
    use jmdc_bench::soak::{report as soak_report, runner, schedule};
    anyhow::ensure!(args.devices >= 1, "--devices must be ≥ 1");
    anyhow::ensure!(args.fps.is_finite() && args.fps > 0.0, "--fps must be > 0");
    anyhow::ensure!(
        args.sample_s.is_finite() && args.sample_s > 0.0,
        "--sample-s must be > 0"
    );
    let phases = schedule::phases(std::time::Duration::from_secs(args.duration_s))
        .map_err(anyhow::Error::msg)?;
    let bench = std::env::current_exe().context("this program's path")?;
    // Absolute: the certificate tools run inside the work folder.
    let bin_dir =
        std::fs::canonicalize(&args.bin_dir).with_context(|| args.bin_dir.display().to_string())?;
    let bins = Binaries::in_dir(&bin_dir, bench)?;
    process::install_interrupt_handler()?;
    let repo =
        std::fs::canonicalize(&args.repo).with_context(|| args.repo.display().to_string())?;
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let out = std::fs::canonicalize(&args.out).with_context(|| args.out.display().to_string())?;
    let _ = std::fs::remove_dir_all(&args.work);
    std::fs::create_dir_all(&args.work).with_context(|| args.work.display().to_string())?;
    let work =
        std::fs::canonicalize(&args.work).with_context(|| args.work.display().to_string())?;
    let settings = runner::SoakSettings {
        repo,
        work,
        devices: args.devices,
        fps: args.fps,
        delay: std::time::Duration::from_millis(args.delay_ms),
        phases,
        sample_every: std::time::Duration::from_secs_f64(args.sample_s),
        plan: runner::PlanSpec {
            variant: "keep050".into(),
            split: 6,
            codec: "int4".into(),
        },
    };
    let outcome = runner::run_soak(&bins, &settings)?;
    let targets = soak_report::Targets {
        max_recovery_ms: args.max_recovery_ms,
    };
    let analysed = soak_report::analyse(&outcome, &settings, &targets);
    let command = format!(
        "jmdc-bench soak --devices {} --duration-s {} --fps {}",
        args.devices, args.duration_s, args.fps
    );
    let md = soak_report::markdown(&outcome, &settings, &analysed, &command);
    let report_path = out.join("report.md");
    std::fs::write(&report_path, &md).with_context(|| report_path.display().to_string())?;
    soak_report::write_csvs(&out, &outcome, &analysed)?;
    println!("{md}");
    eprintln!("soak report: {}", report_path.display());
    Ok(i32::from(!analysed.failures.is_empty()))
}

fn main() -> Result<()> {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Spin { seconds } => {
            anyhow::ensure!(
                seconds.is_finite() && seconds >= 0.0,
                "--seconds must be ≥ 0"
            );
            process::spin(seconds);
            Ok(())
        }
        Command::Report { from, report } => {
            let rendered = report::render_from(&from, report.as_deref())?;
            println!(
                "{} cells; report {}; {} figures in {}",
                rendered.cells.len(),
                rendered.report.display(),
                rendered.figures.len(),
                from.display()
            );
            Ok(())
        }
        Command::Load(args) => load_cmd::load(args),
        Command::Soak(args) => {
            let code = soak(args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Run(args) => {
            let code = run(*args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

fn axes(args: &RunArgs) -> Result<Axes> {
    Ok(Axes {
        bandwidths_mbit: args
            .bandwidths
            .as_deref()
            .map(|s| cells::parse_list(s, "--bandwidths"))
            .transpose()?,
        rtts_ms: args
            .rtts
            .as_deref()
            .map(|s| cells::parse_list(s, "--rtts"))
            .transpose()?,
        profiles: args
            .profiles
            .as_deref()
            .map(|s| cells::parse_list::<Profile>(s, "--profiles"))
            .transpose()?,
        loads: args
            .loads
            .as_deref()
            .map(|s| cells::parse_list::<Load>(s, "--loads"))
            .transpose()?,
    })
}

/// The scratch folder, removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("scratch folder kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn run(args: RunArgs) -> Result<i32> {
    let preset: Preset = args.cells.parse()?;
    let cells: Vec<Cell> = cells::preset_cells(preset, &axes(&args)?);
    cells::validate_cells(&cells)?;
    anyhow::ensure!(
        (1..=256).contains(&args.frames),
        "--frames must be 1..=256 (the bundled sample file)"
    );
    anyhow::ensure!((1..=20).contains(&args.repeats), "--repeats must be 1..=20");
    anyhow::ensure!(
        args.warm_up_frames.is_multiple_of(SAMPLE_IMAGES)
            && args.warm_up_frames <= 16 * SAMPLE_IMAGES,
        "--warm-up-frames must be a multiple of {SAMPLE_IMAGES} (the sample file's images, so the \
         measured frames are the fixed plans' images), at most {}",
        16 * SAMPLE_IMAGES
    );
    anyhow::ensure!(
        args.screen_factor.is_finite() && args.screen_factor >= 1.0,
        "--screen-factor must be ≥ 1"
    );
    anyhow::ensure!(
        (1..=64).contains(&args.in_flight),
        "--in-flight must be 1..=64"
    );
    let repo = args
        .repo
        .canonicalize()
        .with_context(|| format!("repository {}", args.repo.display()))?;
    let bins = Binaries::in_dir(&args.bin_dir, std::env::current_exe()?)?;
    process::install_interrupt_handler()?;

    let floor = args.floor_pct / 100.0;
    let table_path = repo
        .join("models/packages")
        .join(&args.model)
        .join("calibration.json");
    let entries = plans::load_calibration(&table_path)?;
    let mut jmdc = plans::pruned_cloud_only(&entries, floor);
    jmdc.extend(plans::select_jmdc(&entries, floor, args.max_jmdc_plans));
    let baselines = plans::baselines(&entries, &plans::JPEG_BASELINES);

    let scratch = Scratch {
        path: std::env::temp_dir().join(format!("jmdc-bench.{}", std::process::id())),
        keep: args.keep_work,
    };
    std::fs::create_dir_all(&scratch.path).with_context(|| scratch.path.display().to_string())?;
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let started = meta::now_utc();
    let mut worker = Worker::start(&bins, &repo, &scratch.path)?;
    println!("jmdc-cloud worker on {}", worker.addr);

    // JPEG baselines only where the binaries take them.
    let mut jpeg = Vec::new();
    let mut fixed: Vec<FixedPlan> = Vec::new();
    for p in baselines {
        if p.kind == PlanKind::Jpeg {
            let status = probe_plan(&bins, &worker, &repo, &args.model, &scratch.path, &p.spec);
            jpeg.push(JpegStatus {
                spec: p.spec.clone(),
                available: status.is_ok(),
                reason: status
                    .as_ref()
                    .err()
                    .map(|e| first_line(e))
                    .unwrap_or_default(),
            });
            if status.is_err() {
                println!(
                    "JPEG baseline {} absent: {}",
                    p.spec,
                    status.err().map(|e| first_line(&e)).unwrap_or_default()
                );
                continue;
            }
        }
        fixed.push(p);
    }
    fixed.extend(jmdc);
    println!("{} fixed plans per cell:", fixed.len());
    for p in &fixed {
        println!(
            "  {:<46} {:<10} top-1 {:>7} bytes {:>6}  {}",
            p.spec,
            p.kind.name(),
            p.calibrated_top1
                .map_or("–".into(), |t| format!("{:.2} %", t * 100.0)),
            p.calibrated_bytes.map_or("–".into(), |b| b.to_string()),
            p.why
        );
    }

    let settings = RunSettings {
        repo: repo.clone(),
        model: args.model.clone(),
        frames: args.frames,
        repeats: args.repeats,
        in_flight: args.in_flight,
        floor_pct: args.floor_pct,
        screen_frames: args.screen_frames,
        screen_factor: args.screen_factor,
        queue_bytes: args.queue_bytes,
        warm_up_frames: args.warm_up_frames,
        work: scratch.path.clone(),
    };
    let mut results = ResultsFile::create(&args.out.join("results.csv"))?;
    let mut timings = Vec::new();
    let mut all_rows = Vec::new();
    let run_start = Instant::now();
    println!(
        "{} cells, {} frames per run, {} repeats",
        cells.len(),
        args.frames,
        args.repeats
    );
    for (i, cell) in cells.iter().enumerate() {
        if interrupted() {
            break;
        }
        let t = Instant::now();
        match run_cell(&bins, &mut worker, &settings, cell, &fixed) {
            Ok(outcome) => {
                results.append(&outcome.rows)?;
                let analysed = jmdc_bench::matrix::analysis::analyse(&outcome.rows, floor);
                let line = analysed.first().map(cell_line).unwrap_or_default();
                println!(
                    "[{}/{}] {cell}: {line} ({:.0} s)",
                    i + 1,
                    cells.len(),
                    outcome.seconds
                );
                all_rows.extend(outcome.rows);
                timings.push(CellTiming {
                    cell: cell.id(),
                    seconds: outcome.seconds,
                    error: None,
                });
            }
            Err(BenchError::Interrupted) => {
                timings.push(CellTiming {
                    cell: cell.id(),
                    seconds: t.elapsed().as_secs_f64(),
                    error: Some("interrupted".into()),
                });
                break;
            }
            Err(e) => {
                eprintln!("[{}/{}] {cell}: FAILED: {e}", i + 1, cells.len());
                timings.push(CellTiming {
                    cell: cell.id(),
                    seconds: t.elapsed().as_secs_f64(),
                    error: Some(first_line(&e.to_string())),
                });
                if worker.check_alive().is_err() {
                    eprintln!("restarting the worker");
                    worker = Worker::start(&bins, &repo, &scratch.path)?;
                }
            }
        }
    }
    println!("cells done in {:.0} s", run_start.elapsed().as_secs_f64());

    let spec = DynamicSpec {
        profile: args.dynamic_profile.parse()?,
        rtt_ms: args.dynamic_rtt,
        ..DynamicSpec::default()
    };
    let mut dynamic_error = None;
    let mut dynamic_analysis = None;
    let dyn_csv = frames_path(&args.out);
    let _ = std::fs::remove_file(&dyn_csv);
    if !args.no_dynamic && !interrupted() {
        println!("dynamic run ({:.0} s)", spec.total_s());
        match run_dynamic(&bins, &mut worker, &settings, &spec) {
            Ok(frames) => {
                std::fs::write(&dyn_csv, frames_csv(&frames, &spec))
                    .with_context(|| dyn_csv.display().to_string())?;
                let a = analyse_dynamic(&frames, &spec);
                for s in &a.steps {
                    println!(
                        "  {} → {} Mbit/s: {}",
                        cells::num(s.from_mbit),
                        cells::num(s.to_mbit),
                        s.reaction_s
                            .map_or(format!("no reaction ({})", s.note), |r| format!(
                                "reacted after {r:.2} s"
                            )),
                    );
                }
                dynamic_analysis = Some(a);
            }
            Err(e) => {
                eprintln!("dynamic run FAILED: {e}");
                dynamic_error = Some(e.to_string());
            }
        }
    }
    worker.stop();

    let (git_commit, git_dirty) = meta::git_state(&repo);
    let meta = RunMeta {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started,
        finished: meta::now_utc(),
        machine: meta::machine(),
        git_commit,
        git_dirty,
        frames: args.frames,
        repeats: args.repeats,
        in_flight: args.in_flight,
        floor_pct: args.floor_pct,
        model: args.model.clone(),
        queue_bytes: args.queue_bytes,
        screen_factor: args.screen_factor,
        screen_frames: args.screen_frames,
        warm_up_frames: args.warm_up_frames,
        plans: fixed,
        jpeg,
        cells: timings,
        dynamic: (!args.no_dynamic && dynamic_analysis.is_some()).then_some(spec),
        dynamic_analysis,
        dynamic_error,
        report: args.report.clone(),
        complete: !interrupted(),
    };
    meta.write(&args.out.join("meta.json"))?;
    let rendered = report::render_from(&args.out, None)?;
    println!(
        "report: {}; results: {}",
        rendered.report.display(),
        args.out.join("results.csv").display()
    );
    let (table, failed) = ci_table(&rendered.cells, args.fail_above.unwrap_or(f64::INFINITY));
    println!("\n{table}");
    if interrupted() {
        eprintln!("interrupted: partial results written");
        return Ok(130);
    }
    if let Some(limit) = args.fail_above {
        if !failed.is_empty() {
            for f in &failed {
                eprintln!("FAIL {f}");
            }
            return Ok(1);
        }
        if rendered.cells.is_empty() {
            bail!("no cell produced results");
        }
        println!("every cell: adaptive ÷ oracle ≤ {limit}");
    }
    Ok(0)
}

fn cell_line(c: &jmdc_bench::matrix::analysis::CellResult) -> String {
    let o = c.oracle_plan();
    format!(
        "oracle {} {:.2} ms, adaptive {} ms (÷oracle {}), neurosurgeon {} ms",
        o.map_or("–", |o| o.label.as_str()),
        o.map_or(f64::NAN, |o| o.agg.mean_ms),
        c.adaptive
            .as_ref()
            .map_or("–".into(), |a| format!("{:.2}", a.agg.mean_ms)),
        c.ratio_oracle().map_or("–".into(), |r| format!("{r:.3}")),
        c.neurosurgeon
            .as_ref()
            .map_or("–".into(), |n| format!("{:.2}", n.agg.mean_ms)),
    )
}

/// An error message on one line (for tables and `meta.json`).
fn first_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    joined.chars().take(400).collect()
}
