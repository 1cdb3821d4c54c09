//! `jmdc-bench load`: the worker under N simulated devices, against bare ONNX Runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use jmdc_bench::load::{
    bare_throughput, codec, prepare_payloads, run_load, LoadPlan, LoadSettings, Pace, TailSessions,
};
use jmdc_bench::matrix::services::{Binaries, Worker, WorkerSettings};

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// Device counts to measure, comma-separated; one run each, against the same worker.
    #[arg(long, default_value = "1,8,64")]
    devices: String,
    /// Measured seconds per device count.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds before each measurement (connections made, sessions warm).
    #[arg(long, default_value_t = 2.0)]
    warm_up: f64,
    /// Open loop: frames per second per device. Absent: closed loop (next frame on the answer).
    #[arg(long)]
    rate: Option<f64>,
    /// Model package under models/packages.
    #[arg(long, default_value = "alexnet-cifar10")]
    model: String,
    /// Variant the devices run.
    #[arg(long, default_value = "keep050")]
    variant: String,
    /// Split point: the devices send layer split-1's output (0: the 8-bit image).
    #[arg(long, default_value_t = 6)]
    split: usize,
    /// Codec of the split tensor (calibration-table names: int4, f16, int3ac, …).
    #[arg(long, default_value = "int4")]
    codec: String,
    /// Region keep ratio ρ.
    #[arg(long, default_value_t = 1.0)]
    keep: f32,
    /// Sessions per variant in the worker, and threads of the bare ONNX Runtime run.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// A frame not answered within this many ms counts as a `timeout` error.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Use a running worker at this address instead of starting one (needs --ca).
    #[arg(long, requires = "ca")]
    connect: Option<SocketAddr>,
    /// The running worker's certificate (PEM) to trust.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Folder with jmdc-edge, jmdc-cloud and jmdc-linkemu.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Repository root (models/packages, models/samples).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Work folder (the started worker's certificate, configuration and logs).
    #[arg(long, default_value = "target/load-work")]
    work: PathBuf,
    /// The started worker's `batching.max_batch` (1 = no batching); absent = its default.
    #[arg(long)]
    max_batch: Option<usize>,
    /// The started worker's `batching.max_wait_us`; absent = its default.
    #[arg(long)]
    max_wait_us: Option<u64>,
    /// The started worker's `runtime.merged_cache_mib` (0 = chains only); absent = its default.
    #[arg(long)]
    merged_cache_mib: Option<usize>,
    /// Skip the bare ONNX Runtime comparison.
    #[arg(long)]
    no_bare: bool,
}

pub(crate) fn load(args: LoadArgs) -> Result<()> {
    let counts: Vec<usize> = args
        .devices
        .split(',')
        .map(|d| d.trim().parse::<usize>().ok().filter(|&n| n >= 1))
        .collect::<Option<_>>()
        .with_context(|| format!("--devices {:?}: counts ≥ 1, comma-separated", args.devices))?;
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be > 0"
    );
    anyhow::ensure!(
        args.warm_up.is_finite() && args.warm_up >= 0.0,
        "--warm-up must be ≥ 0"
    );
    if let Some(rate) = args.rate {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be > 0");
    }
    let repo =
        std::fs::canonicalize(&args.repo).with_context(|| args.repo.display().to_string())?;
    let plan = LoadPlan {
        model: args.model.clone(),
        variant: args.variant.clone(),
        split: args.split,
        codec: codec(&args.codec, args.keep)?,
    };
    let (kind, payloads) = prepare_payloads(&repo, &plan, 16)?;
    let mean_bytes = payloads.iter().map(Vec::len).sum::<usize>() as f64 / payloads.len() as f64;
    let payloads = Arc::new(payloads);

    let most = counts.iter().copied().max().unwrap_or(1);
    let (worker, addr, ca) = match (args.connect, &args.ca) {
        (Some(addr), Some(ca)) => (None, addr, ca.clone()),
        _ => {
            let bench = std::env::current_exe().context("this program's path")?;
            let bin_dir = std::fs::canonicalize(&args.bin_dir)
                .with_context(|| args.bin_dir.display().to_string())?;
            let bins = Binaries::in_dir(&bin_dir, bench)?;
            let _ = std::fs::remove_dir_all(&args.work);
            std::fs::create_dir_all(&args.work).with_context(|| args.work.display().to_string())?;
            let work = std::fs::canonicalize(&args.work)?;
            let settings = WorkerSettings {
                workers: args.workers,
                threads: 1,
                per_address: most + 8,
                merged_cache_mib: args.merged_cache_mib,
                max_batch: args.max_batch,
                max_wait_us: args.max_wait_us,
            };
            let w = Worker::start_with(&bins, &repo, &work, &settings)?;
            let (addr, cert) = (w.addr, w.cert.clone());
            (Some(w), addr, cert)
        }
    };
    let pace = args.rate.map_or(Pace::Closed, Pace::Open);
    println!(
        "{} {} split {} {} ρ {} ({mean_bytes:.0} B/frame), worker {addr} with {} session(s), {}, {} s per run",
        args.model,
        args.variant,
        args.split,
        args.codec,
        args.keep,
        args.workers,
        match pace {
            Pace::Closed => "closed loop".to_string(),
            Pace::Open(r) => format!("open loop at {r} frames/s per device"),
        },
        args.seconds
    );
    println!("\n| devices | frames/s | p50 ms | p99 ms | max ms | errors |");
    println!("| ---: | ---: | ---: | ---: | ---: | --- |");
    let runtime = tokio::runtime::Runtime::new()?;
    let mut last = None;
    for &devices in &counts {
        let settings = LoadSettings {
            devices,
            pace,
            measure: Duration::from_secs_f64(args.seconds),
            warm_up: Duration::from_secs_f64(args.warm_up),
            timeout: Duration::from_millis(args.timeout_ms),
        };
        let report = runtime.block_on(run_load(
            addr,
            &ca,
            &plan,
            (kind, payloads.clone()),
            &settings,
        ))?;
        let errors = if report.errors.is_empty() {
            "none".to_string()
        } else {
            report
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {devices} | {:.0} | {:.2} | {:.2} | {:.2} | {errors} |",
            report.frames_per_s, report.p50_ms, report.p99_ms, report.max_ms
        );
        last = Some(report.frames_per_s);
    }
    drop(runtime);
    if let Some(w) = worker {
        w.stop();
    }
    if !args.no_bare {
        let measure = Duration::from_secs_f64(args.seconds);
        let chain = bare_throughput(&repo, &plan, args.workers, TailSessions::Chain, 1, measure)?;
        let merged = bare_throughput(&repo, &plan, args.workers, TailSessions::Merged, 1, measure)?;
        println!(
            "\nbare ONNX Runtime, layers {}.. on {} thread(s), batch 1: chain {chain:.0} frames/s, merged {merged:.0} frames/s",
            args.split, args.workers
        );
        for batch in [8, 32] {
            let fps = bare_throughput(
                &repo,
                &plan,
                args.workers,
                TailSessions::Merged,
                batch,
                measure,
            )?;
            println!("bare ONNX Runtime, merged, batch {batch}: {fps:.0} frames/s");
        }
        if let Some(fps) = last {
            println!(
                "worker at {most} devices ÷ bare chain: {:.2}; ÷ bare merged: {:.2}",
                fps / chain,
                fps / merged
            );
        }
    }
    Ok(())
}
