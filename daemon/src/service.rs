//! The edge daemon's main loop: frames from the source, up to N in flight, results in order, the
//! cloud link, systemd notifications, SIGTERM drain and SIGHUP reload, status and metrics.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jmdc_core::package::ModelPackage;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::client::CloudClient;
use crate::config::{CloudSection, EdgeConfig};
use crate::link::{CloudLink, LinkSettings};
use crate::metrics::{self, Metrics, MetricsServer};
use crate::output::ResultSink;
use crate::pipeline::{image_shape, EdgePipeline, FrameObservation, PipelineError};
use crate::plan_spec::PlanSpec;
use crate::planning::{AdaptiveSession, Planning};
use crate::source::{self, FrameFeed};
use crate::stats::{FrameRecord, Summary};
use jmdc_service::notify::Notifier;

/// The summary's latency percentiles cover at most this many recent frames (memory stays bounded);
/// counts, top-1 and bytes cover the whole run.
const SUMMARY_FRAMES: usize = 20_000;

/// Whole-run counts for the summary.
#[derive(Debug, Default)]
struct Totals {
    frames: usize,
    fallbacks: usize,
    labelled: usize,
    correct: usize,
    bytes: usize,
}

impl Totals {
    fn add(&mut self, r: &FrameRecord) {
        self.frames += 1;
        self.fallbacks += usize::from(r.fallback);
        self.labelled += usize::from(r.label.is_some());
        self.correct += usize::from(r.correct() == Some(true));
        self.bytes += r.bytes;
    }

    fn apply(&self, s: &mut Summary) {
        s.frames = self.frames;
        s.fallbacks = self.fallbacks;
        s.labelled = self.labelled;
        s.correct = self.correct;
        s.top1 = (self.labelled > 0).then(|| self.correct as f64 / self.labelled as f64);
        s.bytes_per_frame = if self.frames == 0 {
            0.0
        } else {
            self.bytes as f64 / self.frames as f64
        };
    }
}

/// Changes the log filter (installed by the binary; `None` in tests).
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How the service was started.
pub struct ServiceOptions {
    /// The configuration file (re-read on SIGHUP, with its drop-ins and the environment).
    pub config_path: PathBuf,
    /// Override of `source.limit`.
    pub limit: Option<usize>,
    /// Suppress per-frame results.
    pub quiet: bool,
    /// Applies `log_level` on reload.
    pub set_log_level: Option<LogLevelSetter>,
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("config_path", &self.config_path)
            .field("limit", &self.limit)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A finite source ran out.
    SourceDone,
    /// SIGTERM or SIGINT: in-flight frames were drained.
    Signal,
}

/// The result of a run: its summary and why it ended.
#[derive(Debug)]
pub struct RunReport {
    /// Frames, top-1, latency percentiles and bytes of the run.
    pub summary: Summary,
    /// Why the run ended.
    pub ending: Ending,
}

/// What a frame task hands back: the finished frame, the client it used, the plan it ran under.
type FrameOutcome = (
    Result<(FrameRecord, FrameObservation), PipelineError>,
    Option<Arc<CloudClient>>,
    PlanSpec,
);
type FrameTask = JoinHandle<FrameOutcome>;

/// Builds the link settings from `[cloud]`.
pub fn link_settings(cloud: &CloudSection) -> LinkSettings {
    LinkSettings {
        endpoints: cloud.all_endpoints(),
        server_name: cloud.server_name.clone(),
        ca_cert: cloud.ca_cert.clone(),
        identity: cloud.client_cert.clone().zip(cloud.client_key.clone()),
        connect_timeout: Duration::from_millis(cloud.connect_timeout_ms),
        backoff_initial: Duration::from_millis(cloud.reconnect_initial_ms),
        backoff_max: Duration::from_millis(cloud.reconnect_max_ms),
        fast_retry_for: Duration::from_millis(cloud.reconnect_fast_ms),
        failures_before_reconnect: cloud.failures_before_reconnect,
    }
}

/// Everything the loop owns.
struct Service {
    cfg: EdgeConfig,
    opts: ServiceOptions,
    package: Arc<ModelPackage>,
    planning: Planning,
    link: Option<Arc<CloudLink>>,
    link_rx: Option<watch::Receiver<Option<Arc<CloudClient>>>>,
    feed: FrameFeed,
    sink: ResultSink,
    metrics: Arc<Metrics>,
    metrics_server: Option<MetricsServer>,
    notifier: Notifier,
    in_flight: VecDeque<FrameTask>,
    records: Vec<FrameRecord>,
    totals: Totals,
    started: Instant,
    last_status: (Instant, usize),
    fps: f64,
}

/// Runs the daemon until the source ends or SIGTERM/SIGINT; SIGHUP reloads the configuration.
pub async fn run_service(cfg: EdgeConfig, opts: ServiceOptions) -> Result<RunReport> {
    // Signals first, so that a SIGTERM during start-up is not fatal.
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let notifier = Notifier::from_env();

    jmdc_core::runtime::init_onnxruntime(cfg.runtime.onnxruntime.as_deref())?;
    let package_dir = cfg.model.packages_dir.join(&cfg.model.name);
    let package = Arc::new(
        ModelPackage::load(&package_dir)
            .with_context(|| format!("loading model package {}", package_dir.display()))?,
    );
    let input = image_shape(&package)?;
    let mut source_cfg = cfg.source.clone();
    if opts.limit.is_some() {
        source_cfg.limit = opts.limit;
    }
    let feed = source::spawn(&source_cfg, input).context("starting the frame source")?;
    let sink = if opts.quiet {
        ResultSink::disabled()
    } else {
        ResultSink::open(&cfg.output).context("opening the result output")?
    };
    let metrics = Arc::new(Metrics::new());
    let metrics_server = if cfg.metrics.enabled {
        Some(
            metrics::serve(metrics.clone(), &cfg.metrics)
                .await
                .context("starting the metrics endpoint")?,
        )
    } else {
        None
    };

    let link = match &cfg.cloud {
        Some(section) => Some(Arc::new(
            CloudLink::start(link_settings(section)).context("starting the cloud link")?,
        )),
        None => None,
    };
    let first_client = match &link {
        Some(l) => {
            let wait =
                Duration::from_millis(cfg.cloud.as_ref().map_or(0, |c| c.connect_timeout_ms));
            let client = l.wait_connected(wait).await;
            if client.is_none() {
                warn!("cloud not reachable yet; frames finish on the edge until it is");
            }
            client
        }
        None => None,
    };

    let timeout = Duration::from_millis(cfg.cloud.as_ref().map_or(2000, |c| c.timeout_ms));
    let mut pipeline = EdgePipeline::new(
        package.clone(),
        cfg.device_id.clone(),
        timeout,
        cfg.runtime.intra_op_threads,
    )
    .with_speed(cfg.emulation.speed())
    .with_merged_ranges(cfg.runtime.merged_cache_bytes());
    if cfg.emulation.speed().is_emulated() {
        warn!(
            edge = %cfg.emulation.speed(),
            "EMULATED edge: all edge compute is stretched to emulate a slower device ([emulation]); timings are emulated"
        );
    }
    let planning = if cfg.adaptive.enabled {
        Planning::Adaptive(Box::new(
            AdaptiveSession::start(
                pipeline,
                &cfg.adaptive,
                first_client,
                cfg.runtime.intra_op_threads,
            )
            .await?,
        ))
    } else {
        pipeline.prepare_plan(&cfg.plan)?;
        Planning::Fixed {
            pipeline: Box::new(pipeline),
            plan: cfg.plan.clone(),
        }
    };
    let link_rx = link.as_ref().map(|l| l.subscribe());
    let mut service = Service {
        opts,
        package,
        planning,
        link,
        link_rx,
        feed,
        sink,
        metrics,
        metrics_server,
        notifier,
        in_flight: VecDeque::new(),
        records: Vec::new(),
        totals: Totals::default(),
        started: Instant::now(),
        last_status: (Instant::now(), 0),
        fps: 0.0,
        cfg,
    };
    service.follow_link();
    info!(
        source = %service.feed.describe(),
        plan = %service.planning.current_plan(),
        in_flight = service.cfg.pipeline.max_in_flight,
        "jmdc-edge ready"
    );
    let status = service.status_line();
    service.notifier.ready(&status);
    let ending = service.main_loop(&mut term, &mut int, &mut hup).await?;
    service.shutdown().await;
    let mut summary = Summary::from_records(
        service.summary_name(),
        &service.records,
        service.started.elapsed(),
    );
    service.totals.apply(&mut summary);
    summary.edge_speed = service.planning.pipeline_mut().speed().to_string();
    Ok(RunReport { summary, ending })
}

impl Service {
    async fn main_loop(
        &mut self,
        term: &mut Signal,
        int: &mut Signal,
        hup: &mut Signal,
    ) -> Result<Ending> {
        let tick_every = Duration::from_millis(self.cfg.service.status_interval_ms)
            .min(self.notifier.ping_interval().unwrap_or(Duration::MAX))
            .max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut source_done = false;
        loop {
            let can_start = !source_done && self.in_flight.len() < self.cfg.pipeline.max_in_flight;
            tokio::select! {
                biased;
                _ = term.recv() => return self.drain("SIGTERM").await.map(|_| Ending::Signal),
                _ = int.recv() => return self.drain("SIGINT").await.map(|_| Ending::Signal),
                _ = hup.recv() => self.reload().await,
                _ = tick.tick() => self.on_tick(),
                changed = wait_link_change(&mut self.link_rx) => {
                    if changed {
                        self.follow_link();
                    }
                }
                done = next_done(&mut self.in_flight), if !self.in_flight.is_empty() => {
                    self.in_flight.pop_front();
                    self.complete(done)?;
                }
                frame = self.feed.recv(), if can_start => match frame {
                    Some(frame) => self.start_frame(frame).await?,
                    None => source_done = true,
                },
            }
            if source_done && self.in_flight.is_empty() {
                return Ok(Ending::SourceDone);
            }
        }
    }

    /// Head + encode now; the rest of the frame runs as its own task.
    async fn start_frame(&mut self, frame: crate::frame::Frame) -> Result<()> {
        let (plan, predicted) = self.planning.plan_for(frame.id)?;
        let client = self.link.as_ref().and_then(|l| l.current());
        let mut pending = self
            .planning
            .pipeline_mut()
            .start(&frame, &plan, client.is_some())
            .await?;
        pending.set_predicted(predicted.as_ref());
        let client = if pending.wants_cloud() { client } else { None };
        self.in_flight.push_back(tokio::spawn(async move {
            let result = pending.finish(client.as_deref()).await;
            (result, client, plan)
        }));
        self.metrics.set_in_flight(self.in_flight.len());
        Ok(())
    }

    /// A frame finished (in order): report, learn, write.
    fn complete(
        &mut self,
        done: std::result::Result<FrameOutcome, tokio::task::JoinError>,
    ) -> Result<()> {
        let (result, client, plan) = done.context("frame task failed")?;
        let (record, observation) = result?;
        if let (Some(link), Some(client)) = (&self.link, &client) {
            link.report(client, !observation.cloud_failed);
        }
        self.planning.learn(&plan, &record, &observation);
        self.metrics.record_frame(&record);
        self.metrics.set_in_flight(self.in_flight.len());
        let source = self.feed.stats();
        self.metrics.set_source(
            source.delivered,
            source.dropped,
            source.decode_errors,
            source.restarts,
        );
        if let Err(e) = self.sink.write(&self.package, &record) {
            error!(error = %e, "cannot write result");
        }
        self.totals.add(&record);
        if self.records.len() >= SUMMARY_FRAMES {
            // A service runs for months: latency percentiles cover the most recent frames only.
            self.records.drain(..SUMMARY_FRAMES / 2);
        }
        self.records.push(record);
        Ok(())
    }

    /// The link connected, lost or replaced its client.
    fn follow_link(&mut self) {
        let client = self.link.as_ref().and_then(|l| l.current());
        self.planning.set_cloud(client);
        self.report_link();
    }

    /// Connected endpoint and reconnect count into the metrics.
    fn report_link(&self) {
        if let Some(link) = &self.link {
            let stats = link.stats();
            let endpoint = stats.endpoint.map(|a| a.to_string());
            self.metrics
                .set_cloud(endpoint.as_deref(), stats.reconnects);
        }
    }

    fn on_tick(&mut self) {
        self.notifier.watchdog();
        let now = Instant::now();
        let (since, frames) = self.last_status;
        let secs = now.duration_since(since).as_secs_f64();
        if secs >= 0.5 {
            self.fps = (self.totals.frames - frames) as f64 / secs;
            self.last_status = (now, self.totals.frames);
        }
        let stats = self.feed.stats();
        self.metrics.set_source(
            stats.delivered,
            stats.dropped,
            stats.decode_errors,
            stats.restarts,
        );
        let plan = self.planning.current_plan().to_string();
        let predicted = match &self.planning {
            Planning::Adaptive(s) => s.decision().map(|d| d.predicted_latency_s),
            Planning::Fixed { .. } => None,
        };
        self.metrics.set_plan(&plan, predicted);
        if let Some(c) = self.planning.measurements() {
            self.metrics.set_network(c.bandwidth_bps, c.rtt_s);
            self.metrics.set_cpu_load(c.edge_load_factor);
        }
        self.report_link();
        let status = self.status_line();
        self.notifier.status(&status);
    }

    /// One line for `systemctl status`.
    fn status_line(&mut self) -> String {
        let plan = self.planning.current_plan().to_string();
        let cloud = match &self.link {
            None => "no cloud configured".to_string(),
            Some(l) => match l.stats().endpoint {
                Some(a) => format!("cloud {a}"),
                None => "cloud down".to_string(),
            },
        };
        let net = match self.planning.measurements() {
            Some(c) => format!(
                ", {:.1} Mbit/s, rtt {:.1} ms, load {:.2}",
                c.bandwidth_bps / 1e6,
                c.rtt_s * 1e3,
                c.edge_load_factor
            ),
            None => String::new(),
        };
        let dropped = self.feed.stats().dropped;
        format!(
            "plan {plan}; {cloud}{net}; {:.1} fps; {} frames, {} fallbacks, {} dropped",
            self.fps, self.totals.frames, self.totals.fallbacks, dropped
        )
    }

    /// SIGTERM: stop taking frames, finish the ones in flight (bounded), then return.
    async fn drain(&mut self, why: &str) -> Result<()> {
        let pending = self.in_flight.len();
        info!(
            signal = why,
            in_flight = pending,
            "stopping: draining in-flight frames"
        );
        self.notifier
            .stopping(&format!("stopping: draining {pending} in-flight frames"));
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.service.drain_timeout_ms);
        while let Some(front) = self.in_flight.front_mut() {
            match tokio::time::timeout_at(deadline, front).await {
                Ok(done) => {
                    self.in_flight.pop_front();
                    self.complete(done)?;
                }
                Err(_) => {
                    warn!(
                        abandoned = self.in_flight.len(),
                        "drain timeout: abandoning in-flight frames"
                    );
                    for task in self.in_flight.drain(..) {
                        task.abort();
                    }
                    break;
                }
            }
        }
        Ok(())
    }

    /// SIGHUP: re-read the configuration (file, drop-ins, environment) and apply what can change live.
    async fn reload(&mut self) {
        self.notifier.reloading();
        info!(config = %self.opts.config_path.display(), "reloading configuration");
        match EdgeConfig::load(&self.opts.config_path) {
            Ok(new) => {
                if let Err(e) = self.apply(new).await {
                    error!(error = %format!("{e:#}"), "reload partly failed");
                }
                self.metrics.inc_reloads();
            }
            Err(e) => error!(error = %e, "reload failed; keeping the running configuration"),
        }
        let status = self.status_line();
        self.notifier.ready(&status);
    }

    async fn apply(&mut self, new: EdgeConfig) -> Result<()> {
        // Refuse a plan the package cannot run before changing anything.
        if let Planning::Fixed { pipeline, .. } = &mut self.planning {
            new.plan
                .edge_layers(self.package.num_layers())
                .map_err(anyhow::Error::msg)
                .and_then(|_| Ok(pipeline.prepare(&new.plan.variant)?))
                .context("plan")?;
        }
        if new.model.packages_dir != self.cfg.model.packages_dir
            || new.model.name != self.cfg.model.name
            || new.runtime.onnxruntime != self.cfg.runtime.onnxruntime
            || new.runtime.intra_op_threads != self.cfg.runtime.intra_op_threads
            || new.runtime.merged_cache_mib != self.cfg.runtime.merged_cache_mib
        {
            warn!("[model] and [runtime] changes take effect at the next restart");
        }
        if new.emulation != self.cfg.emulation {
            warn!("[emulation] changes take effect at the next restart");
        }
        if new.adaptive.enabled != self.cfg.adaptive.enabled
            || new.adaptive.calibration != self.cfg.adaptive.calibration
            || new.adaptive.profile_runs != self.cfg.adaptive.profile_runs
            || new.adaptive.probe_bytes != self.cfg.adaptive.probe_bytes
            || new.adaptive.probe_interval_ms != self.cfg.adaptive.probe_interval_ms
        {
            warn!("adaptive.enabled/calibration/profile_runs/probe_* changes take effect at the next restart");
        }
        if new.device_id != self.cfg.device_id {
            warn!("device_id changes take effect at the next restart");
        }
        if let Some(set) = &self.opts.set_log_level {
            if let Err(e) = set(&new.log_level) {
                warn!(error = %e, "cannot apply log_level");
            }
        }
        match &mut self.planning {
            Planning::Fixed { pipeline, plan } => {
                if *plan != new.plan {
                    pipeline.prepare_plan(&new.plan)?;
                    info!(from = %plan, to = %new.plan, "plan changed");
                    *plan = new.plan.clone();
                }
            }
            Planning::Adaptive(session) => session.reconfigure(&new.adaptive),
        }
        let timeout = Duration::from_millis(new.cloud.as_ref().map_or(2000, |c| c.timeout_ms));
        self.planning.pipeline_mut().set_timeout(timeout);
        match (&self.link, &new.cloud) {
            (Some(link), Some(section)) => {
                if link.reconfigure(link_settings(section))? {
                    info!("cloud endpoints or certificate changed: reconnecting");
                }
            }
            (None, Some(section)) => {
                info!("cloud configured: connecting");
                let link = Arc::new(CloudLink::start(link_settings(section))?);
                self.link_rx = Some(link.subscribe());
                self.link = Some(link);
            }
            (Some(link), None) => {
                info!("cloud removed from the configuration: frames finish on the edge");
                link.close().await;
                self.link = None;
                self.link_rx = None;
                self.follow_link();
            }
            (None, None) => {}
        }
        if !self.opts.quiet && new.output != self.cfg.output {
            self.sink = ResultSink::open(&new.output).context("reopening the result output")?;
        }
        if new.source != self.cfg.source {
            let input = image_shape(&self.package)?;
            let feed = source::spawn(&new.source, input).context("restarting the frame source")?;
            info!(source = %feed.describe(), "frame source restarted");
            self.feed = feed;
        }
        if new.metrics != self.cfg.metrics {
            if let Some(server) = self.metrics_server.take() {
                server.shutdown().await;
            }
            if new.metrics.enabled {
                self.metrics_server =
                    Some(metrics::serve(self.metrics.clone(), &new.metrics).await?);
            }
        }
        self.cfg = new;
        Ok(())
    }

    async fn shutdown(&mut self) {
        self.planning.stop();
        if let Some(link) = &self.link {
            link.close().await;
        }
        if let Some(server) = self.metrics_server.take() {
            server.shutdown().await;
        }
        info!(
            frames = self.totals.frames,
            fallbacks = self.totals.fallbacks,
            dropped = self.feed.stats().dropped,
            "jmdc-edge stopped"
        );
    }

    fn summary_name(&self) -> String {
        match &self.planning {
            Planning::Adaptive(_) => "adaptive".into(),
            Planning::Fixed { plan, .. } => plan.to_string(),
        }
    }
}

/// The front task's result (results leave in frame order).
async fn next_done(
    queue: &mut VecDeque<FrameTask>,
) -> std::result::Result<FrameOutcome, tokio::task::JoinError> {
    match queue.front_mut() {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the link's client changes; never when there is no link.
async fn wait_link_change(rx: &mut Option<watch::Receiver<Option<Arc<CloudClient>>>>) -> bool {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            true
        }
        None => std::future::pending().await,
    }
}
