//! Drives a soak run: a CA, a worker certificate and one certificate per device; one `jmdc-cloud`
//! requiring client certificates; the in-process link emulator in front of it; N `jmdc-edge`
//! processes (one per simulated device) sending every frame to the cloud; the fault schedule
//! played on the link and on the worker; RSS sampled throughout; every process stopped by SIGTERM
//! at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::linkemu::{LinkParams, LinkStats, Relay, RelayConfig};
use crate::matrix::process::{check_interrupt, sleep_interruptible, Proc};
use crate::matrix::services::{parse_addr, toml_str, Binaries};
use crate::matrix::BenchError;

use super::schedule::Phase;

/// How long the worker may take to print its address.
const WORKER_START: Duration = Duration::from_secs(30);
/// How long every device may take to write its first result.
const WARM_UP: Duration = Duration::from_secs(300);
/// How long an edge may take to drain and exit after SIGTERM (its drain timeout is 10 s).
const EDGE_EXIT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// Repository root (models/packages, models/samples).
    pub repo: PathBuf,
    /// Folder for certificates, configurations, logs and result files.
    pub work: PathBuf,
    /// Simulated devices: one `jmdc-edge` process and one client certificate each.
    pub devices: usize,
    /// Frame-rate cap of each device.
    pub fps: f64,
    /// One-way delay of the emulated link.
    pub delay: Duration,
    /// The fault schedule, in order (see [`super::schedule::phases`]).
    pub phases: Vec<Phase>,
    /// RSS sampling period.
    pub sample_every: Duration,
    /// The fixed plan every device runs (sends every frame to the cloud).
    pub plan: PlanSpec,
}

/// A fixed split plan in the edge's `[plan]` terms.
#[derive(Debug, Clone)]
pub struct PlanSpec {
    /// Model variant, the edge's `[plan] variant`.
    pub variant: String,
    /// Split point, the edge's `[plan] split`.
    pub split: u32,
    /// Split codec, the edge's `[plan] codec`.
    pub codec: String,
}

/// One RSS sample, MiB.
#[derive(Debug, Clone, PartialEq)]
pub struct RssSample {
    /// Seconds since the start of the measured run.
    pub t_s: f64,
    /// RSS of the worker, MiB (0 when it could not be read).
    pub worker_mib: f64,
    /// RSS of each edge process still running, MiB.
    pub edge_mib: Vec<f64>,
}

/// Everything measured; analysed by `super::report`.
#[derive(Debug)]
pub struct SoakOutcome {
    /// Unix ms at the start of the measured run (phase offsets are added to it).
    pub start_unix_ms: u64,
    /// Unix ms when the worker was sent SIGTERM for the restart.
    pub restart_stop_unix_ms: Option<u64>,
    /// Unix ms when the restarted worker printed its address.
    pub restart_ready_unix_ms: Option<u64>,
    /// Each device's outcome, in start order.
    pub devices: Vec<DeviceOutcome>,
    /// RSS samples, one every [`SoakSettings::sample_every`].
    pub rss: Vec<RssSample>,
    /// How each worker generation ended, in order (`#1: …`; generations numbered from 1).
    pub worker_exits: Vec<String>,
    /// Log files that contain a panic message.
    pub panics: Vec<PathBuf>,
    /// The link emulator's counters at shutdown.
    pub link: Option<LinkStats>,
    /// Time until every device had written its first result, s.
    pub warm_up_s: f64,
}

/// One simulated device.
#[derive(Debug)]
pub struct DeviceOutcome {
    /// Device name (`soak-dev-000`), also the stem of its certificate and files.
    pub name: String,
    /// Its per-frame JSON-lines file.
    pub results: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
    /// `None` when it had to be killed.
    pub exit: Option<ExitStatus>,
    /// When it exited before the end of the run.
    pub died_early_at_s: Option<f64>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(path, e))
}

fn run_tool(bins: &Binaries, work: &Path, log_name: &str, args: &[&str]) -> Result<(), BenchError> {
    let mut cmd = Command::new(&bins.cloud);
    cmd.args(args).current_dir(work);
    let mut p = Proc::spawn(
        format!("jmdc-cloud {}", args.first().copied().unwrap_or("")),
        &mut cmd,
        None,
        Some(&work.join(log_name)),
    )?;
    p.wait_success(Duration::from_secs(30))
}

/// The CA, the worker's certificate and one certificate per device, in `work`.
fn make_certificates(bins: &Binaries, work: &Path, devices: usize) -> Result<(), BenchError> {
    run_tool(
        bins,
        work,
        "pki.log",
        &["gen-ca", "--cert", "ca.pem", "--key", "ca-key.pem"],
    )?;
    run_tool(
        bins,
        work,
        "pki.log",
        &[
            "gen-cert",
            "--cert",
            "cert.pem",
            "--key",
            "key.pem",
            "--ca-cert",
            "ca.pem",
            "--ca-key",
            "ca-key.pem",
        ],
    )?;
    for i in 0..devices {
        let name = device_name(i);
        let cert = format!("{name}.pem");
        let key = format!("{name}-key.pem");
        run_tool(
            bins,
            work,
            "pki.log",
            &[
                "gen-device-cert",
                "--ca-cert",
                "ca.pem",
                "--ca-key",
                "ca-key.pem",
                "--device",
                &name,
                "--cert",
                &cert,
                "--key",
                &key,
            ],
        )?;
    }
    Ok(())
}

/// `soak-dev-007`.
pub fn device_name(i: usize) -> String {
    format!("soak-dev-{i:03}")
}

/// The soak's model: its worker loads only this package, so that a worker restart is not slowed
/// down by loading every other package of the repository.
const SOAK_MODEL: &str = "alexnet-cifar10";

/// `work/models/`: a folder holding only [`SOAK_MODEL`] (a symbolic link to the repository's).
fn soak_models_dir(settings: &SoakSettings) -> PathBuf {
    settings.work.join("models")
}

fn link_soak_model(settings: &SoakSettings) -> Result<(), BenchError> {
    let dir = soak_models_dir(settings);
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
    let link = dir.join(SOAK_MODEL);
    // A link left by an earlier run may point at another checkout: make it anew.
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).map_err(|e| BenchError::io(&link, e))?;
    }
    let target = settings.repo.join("models/packages").join(SOAK_MODEL);
    std::os::unix::fs::symlink(&target, &link).map_err(|e| BenchError::io(&link, e))
}

fn worker_config(settings: &SoakSettings, listen: &str) -> String {
    let w = |f: &str| toml_str(&settings.work.join(f).to_string_lossy());
    format!(
        "listen = \"{listen}\"\nmodels_dir = {}\nlog_level = \"info\"\n\
         [tls]\ncert = {}\nkey = {}\nclient_auth = \"required\"\nclient_ca = {}\n\
         [runtime]\nworkers = 2\nintra_op_threads = 1\n\
         # Every simulated device reaches the worker from 127.0.0.1 (through the relay), as devices\n\
         # behind one NAT would: the per-address cap must admit all of them.\n\
         [limits]\nmax_connections_per_address = {}\n",
        toml_str(&soak_models_dir(settings).to_string_lossy()),
        w("cert.pem"),
        w("key.pem"),
        w("ca.pem"),
        settings.devices * 2,
    )
}

fn start_worker(
    bins: &Binaries,
    settings: &SoakSettings,
    listen: &str,
    generation: usize,
) -> Result<(Proc, SocketAddr), BenchError> {
    let config = settings.work.join(format!("cloud-{generation}.toml"));
    write(&config, &worker_config(settings, listen))?;
    let mut cmd = Command::new(&bins.cloud);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .env("ORT_DISABLE_TELEMETRY", "1");
    let mut proc = Proc::spawn(
        format!("jmdc-cloud #{generation}"),
        &mut cmd,
        Some(&settings.work.join(format!("cloud-{generation}.out"))),
        Some(&settings.work.join(format!("cloud-{generation}.log"))),
    )?;
    let addr = proc.wait_for_line(WORKER_START, |l| {
        l.contains("listening").then(|| parse_addr(l)).flatten()
    })?;
    Ok((proc, addr))
}

fn edge_config(
    settings: &SoakSettings,
    name: &str,
    endpoint: SocketAddr,
    results: &Path,
) -> String {
    let p = |path: &Path| toml_str(&path.to_string_lossy());
    let w = |f: &str| p(&settings.work.join(f));
    format!(
        "device_id = \"{name}\"\nlog_level = \"info\"\n\
         [model]\npackages_dir = {}\nname = \"{SOAK_MODEL}\"\n\
         [plan]\nvariant = \"{}\"\nsplit = {}\ncodec = \"{}\"\n\
         [cloud]\nendpoint = \"{endpoint}\"\nserver_name = \"localhost\"\nca_cert = {}\n\
         client_cert = {}\nclient_key = {}\n\
         [source]\nkind = \"cifar\"\npath = {}\nrepeat = true\nmax_fps = {}\n\
         [pipeline]\nmax_in_flight = 4\n\
         [runtime]\nintra_op_threads = 1\n\
         [metrics]\nenabled = false\n\
         [output]\nper_frame = true\nformat = \"json\"\nfile = {}\n\
         [adaptive]\nenabled = false\n",
        p(&soak_models_dir(settings)),
        settings.plan.variant,
        settings.plan.split,
        settings.plan.codec,
        w("ca.pem"),
        w(&format!("{name}.pem")),
        w(&format!("{name}-key.pem")),
        p(&settings.repo.join("models/samples/cifar10-test-256.bin")),
        settings.fps,
        p(results),
    )
}

/// Resident set size of a process, MiB (`VmRSS` in /proc); `None` once it is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn has_results(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains('\n'))
}

/// Log files that mention a panic.
fn find_panics(logs: &[PathBuf]) -> Vec<PathBuf> {
    logs.iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("panicked")))
        .cloned()
        .collect()
}

struct Edge {
    name: String,
    proc: Proc,
    results: PathBuf,
    log: PathBuf,
    died_early_at_s: Option<f64>,
}

/// Runs the whole soak; errors only for set-up failures (certificates, a worker that does not
/// start, devices that never produce a result). Faults during the run are measured, not errors.
pub fn run_soak(bins: &Binaries, settings: &SoakSettings) -> Result<SoakOutcome, BenchError> {
    std::fs::create_dir_all(&settings.work).map_err(|e| BenchError::io(&settings.work, e))?;
    eprintln!(
        "soak: certificates for {} devices in {}",
        settings.devices,
        settings.work.display()
    );
    make_certificates(bins, &settings.work, settings.devices)?;
    link_soak_model(settings)?;

    let (mut worker, worker_addr) = start_worker(bins, settings, "127.0.0.1:0", 1)?;
    let mut logs = vec![settings.work.join("cloud-1.log")];
    let mut worker_exits = Vec::new();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("linkemu")
        .enable_all()
        .build()
        .map_err(|e| BenchError::process("link emulator", e.to_string()))?;
    let clean = LinkParams::unlimited().with_delay(settings.delay);
    let relay = runtime
        .block_on(Relay::bind(
            RelayConfig::new(([127, 0, 0, 1], 0).into(), worker_addr)
                .with_both(clean)
                .with_seed(13),
        ))
        .map_err(|e| BenchError::process("link emulator", e.to_string()))?;
    let link = relay.handle();
    let endpoint = relay.local_addr();
    eprintln!("soak: worker on {worker_addr}, link emulator on {endpoint}");

    let mut edges = Vec::with_capacity(settings.devices);
    let warm_start = Instant::now();
    for i in 0..settings.devices {
        check_interrupt()?;
        let name = device_name(i);
        let results = settings.work.join(format!("{name}.jsonl"));
        let _ = std::fs::remove_file(&results);
        let config = settings.work.join(format!("{name}.toml"));
        write(&config, &edge_config(settings, &name, endpoint, &results))?;
        let log = settings.work.join(format!("{name}.log"));
        let mut cmd = Command::new(&bins.edge);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("ORT_DISABLE_TELEMETRY", "1");
        let proc = Proc::spawn(format!("jmdc-edge {name}"), &mut cmd, None, Some(&log))?;
        logs.push(log.clone());
        edges.push(Edge {
            name,
            proc,
            results,
            log,
            died_early_at_s: None,
        });
        // Staggered starts: 64 ONNX Runtime start-ups at once would only queue on the CPU.
        sleep_interruptible(Duration::from_millis(25))?;
    }
    loop {
        check_interrupt()?;
        if edges.iter().all(|e| has_results(&e.results)) {
            break;
        }
        for e in &mut edges {
            if let Some(status) = e.proc.try_status()? {
                return Err(BenchError::process(
                    e.proc.name().to_string(),
                    format!(
                        "exited with {status} before its first result{}",
                        e.proc.stderr_tail()
                    ),
                ));
            }
        }
        if warm_start.elapsed() > WARM_UP {
            return Err(BenchError::Timeout {
                name: "soak warm-up (every device's first result)".into(),
                after: WARM_UP,
            });
        }
        sleep_interruptible(Duration::from_millis(200))?;
    }
    let warm_up_s = warm_start.elapsed().as_secs_f64();
    eprintln!(
        "soak: all {} devices running after {warm_up_s:.1} s",
        edges.len()
    );

    let start = Instant::now();
    let start_unix_ms = unix_ms();
    let mut rss = Vec::new();
    let mut restart_stop_unix_ms = None;
    let mut restart_ready_unix_ms = None;
    let mut generation = 1;
    let mut next_sample = Duration::ZERO;
    for phase in &settings.phases {
        if phase.restart_worker_at_start {
            eprintln!(
                "soak: {:.0} s: restarting the worker",
                start.elapsed().as_secs_f64()
            );
            restart_stop_unix_ms = Some(unix_ms());
            worker.send_term();
            let status = worker.wait_timeout(Duration::from_secs(15));
            worker_exits.push(format!("#{generation}: {status:?}"));
            worker.kill();
            generation += 1;
            let (w, _) = start_worker(bins, settings, &worker_addr.to_string(), generation)?;
            worker = w;
            logs.push(settings.work.join(format!("cloud-{generation}.log")));
            restart_ready_unix_ms = Some(unix_ms());
        }
        link.set_both(clean.with_loss(phase.link.loss()))
            .map_err(|e| BenchError::process("link emulator", e.to_string()))?;
        eprintln!(
            "soak: {:.0} s: phase {} (loss {:.0} %)",
            start.elapsed().as_secs_f64(),
            phase.name,
            phase.link.loss() * 100.0
        );
        while start.elapsed() < phase.end {
            check_interrupt()?;
            let now = start.elapsed();
            if now >= next_sample {
                rss.push(RssSample {
                    t_s: now.as_secs_f64(),
                    worker_mib: rss_mib(worker.id()).unwrap_or(0.0),
                    edge_mib: edges.iter().filter_map(|e| rss_mib(e.proc.id())).collect(),
                });
                next_sample = now + settings.sample_every;
            }
            for e in &mut edges {
                if e.died_early_at_s.is_none() && e.proc.try_status()?.is_some() {
                    e.died_early_at_s = Some(now.as_secs_f64());
                    eprintln!(
                        "soak: {} exited early at {:.0} s",
                        e.name,
                        now.as_secs_f64()
                    );
                }
            }
            if let Some(status) = worker.try_status()? {
                worker_exits.push(format!("#{generation} died: {status}"));
                return Err(BenchError::process(
                    "jmdc-cloud",
                    format!(
                        "exited during the run with {status}{}",
                        worker.stderr_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100).min(phase.end.saturating_sub(now)));
        }
    }

    eprintln!("soak: stopping {} devices (SIGTERM)", edges.len());
    for e in &mut edges {
        e.proc.send_term();
    }
    let mut devices = Vec::with_capacity(edges.len());
    for mut e in edges {
        let exit = e.proc.wait_timeout(EDGE_EXIT).ok();
        devices.push(DeviceOutcome {
            name: e.name,
            results: e.results,
            log: e.log,
            exit,
            died_early_at_s: e.died_early_at_s,
        });
    }
    worker.send_term();
    worker_exits.push(format!(
        "#{generation}: {:?}",
        worker.wait_timeout(Duration::from_secs(15))
    ));
    worker.kill();
    let link_stats = runtime.block_on(relay.shutdown());
    Ok(SoakOutcome {
        start_unix_ms,
        restart_stop_unix_ms,
        restart_ready_unix_ms,
        devices,
        rss,
        worker_exits,
        panics: find_panics(&logs),
        link: Some(link_stats),
        warm_up_s,
    })
}
