//! [`Metrics`]: every counter, gauge and histogram of one `jmdc-edge` process, updated from any
//! task with atomics (and short locks for the two string-valued labels), rendered on scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use super::histogram::Histogram;
use crate::stats::FrameRecord;
use jmdc_service::exposition::{MetricType, TextWriter};

/// Where a frame was finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// Entirely on the edge because the plan said so (edge-only plan).
    Edge,
    /// The cloud worker answered.
    Cloud,
    /// The cloud failed (unreachable, timeout, refusal, encode error) and the edge finished it.
    Fallback,
}

impl FrameOutcome {
    /// Every outcome, in rendering order.
    pub const ALL: [FrameOutcome; 3] = [Self::Edge, Self::Cloud, Self::Fallback];

    /// Reads the outcome off a record: `fallback` set → fallback; bytes sent → cloud; else edge.
    pub fn of(r: &FrameRecord) -> Self {
        if r.fallback {
            Self::Fallback
        } else if r.bytes > 0 {
            Self::Cloud
        } else {
            Self::Edge
        }
    }

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Cloud => "cloud",
            Self::Fallback => "fallback",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Edge => 0,
            Self::Cloud => 1,
            Self::Fallback => 2,
        }
    }
}

/// Latency stages with a histogram each (`stage` label).
const STAGES: [&str; 5] = ["edge", "encode", "network", "cloud", "total"];

/// An `f64` gauge that may be unset (rendered without a sample until first set).
#[derive(Debug)]
struct OptionalGauge(AtomicU64);

impl Default for OptionalGauge {
    fn default() -> Self {
        Self(AtomicU64::new(f64::NAN.to_bits()))
    }
}

impl OptionalGauge {
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }
}

#[derive(Debug, Default)]
struct PlanState {
    plan: String,
    predicted_latency_s: Option<f64>,
}

#[derive(Debug, Default)]
struct CloudState {
    endpoint: Option<String>,
}

/// All counters/gauges/histograms of one jmdc-edge process; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    start_time_s: f64,
    frames: [AtomicU64; 3],
    labelled: AtomicU64,
    correct: AtomicU64,
    sent_bytes: AtomicU64,
    latency: [Histogram; 5],
    source_delivered: AtomicU64,
    source_dropped: AtomicU64,
    source_decode_errors: AtomicU64,
    source_restarts: AtomicU64,
    plan: Mutex<Option<PlanState>>,
    plan_changes: AtomicU64,
    bandwidth_bps: OptionalGauge,
    rtt_s: OptionalGauge,
    cpu_load: OptionalGauge,
    in_flight: AtomicU64,
    cloud: Mutex<Option<CloudState>>,
    cloud_reconnects: AtomicU64,
    reloads: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the value half-written (each
    // critical section is one assignment), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// Zeroed metrics; the start time is now.
    pub fn new() -> Self {
        Self {
            start_time_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            frames: Default::default(),
            labelled: AtomicU64::new(0),
            correct: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            latency: Default::default(),
            source_delivered: AtomicU64::new(0),
            source_dropped: AtomicU64::new(0),
            source_decode_errors: AtomicU64::new(0),
            source_restarts: AtomicU64::new(0),
            plan: Mutex::new(None),
            plan_changes: AtomicU64::new(0),
            bandwidth_bps: OptionalGauge::default(),
            rtt_s: OptionalGauge::default(),
            cpu_load: OptionalGauge::default(),
            in_flight: AtomicU64::new(0),
            cloud: Mutex::new(None),
            cloud_reconnects: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
        }
    }

    /// Counts one finished frame: by outcome, accuracy when labelled, bytes sent, and its stage
    /// latencies. `edge` and `total` are observed for every frame, `encode` for frames that were
    /// meant for the cloud (cloud and fallback), `network` and `cloud` for frames the cloud
    /// answered.
    pub fn record_frame(&self, r: &FrameRecord) {
        let outcome = FrameOutcome::of(r);
        self.frames[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(correct) = r.correct() {
            self.labelled.fetch_add(1, Ordering::Relaxed);
            if correct {
                self.correct.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sent_bytes.fetch_add(r.bytes as u64, Ordering::Relaxed);
        let [edge, encode, network, cloud, total] = &self.latency;
        edge.observe_us(r.edge_us);
        total.observe_us(r.total_us);
        if outcome != FrameOutcome::Edge {
            encode.observe_us(r.encode_us);
        }
        if outcome == FrameOutcome::Cloud {
            network.observe_us(r.network_us);
            cloud.observe_us(r.cloud_us);
        }
    }

    /// Sets the frame source's cumulative counts (frames delivered, dropped because the pipeline
    /// was busy, frames that failed to decode, source restarts).
    pub fn set_source(&self, delivered: u64, dropped: u64, decode_errors: u64, restarts: u64) {
        self.source_delivered.store(delivered, Ordering::Relaxed);
        self.source_dropped.store(dropped, Ordering::Relaxed);
        self.source_decode_errors
            .store(decode_errors, Ordering::Relaxed);
        self.source_restarts.store(restarts, Ordering::Relaxed);
    }

    /// Sets the plan in force (replacing the previous `plan` label) and its predicted latency.
    /// A different plan than the previous one counts as a plan change.
    pub fn set_plan(&self, plan: &str, predicted_latency_s: Option<f64>) {
        let mut state = lock(&self.plan);
        if state.as_ref().is_some_and(|s| s.plan != plan) {
            self.plan_changes.fetch_add(1, Ordering::Relaxed);
        }
        *state = Some(PlanState {
            plan: plan.to_owned(),
            predicted_latency_s: predicted_latency_s.filter(|v| v.is_finite()),
        });
    }

    /// Sets the network monitor's current estimate: bandwidth in bit/s and round-trip time in s.
    pub fn set_network(&self, bandwidth_bps: f64, rtt_s: f64) {
        self.bandwidth_bps.set(bandwidth_bps);
        self.rtt_s.set(rtt_s);
    }

    /// Sets the CPU monitor's load factor (1 = the edge has the CPU to itself).
    pub fn set_cpu_load(&self, load_factor: f64) {
        self.cpu_load.set(load_factor);
    }

    /// Sets the number of frames currently in the pipeline.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
    }

    /// Sets the cloud link state: the endpoint connected to (`None`: not connected) and the
    /// cumulative number of reconnections.
    pub fn set_cloud(&self, connected_endpoint: Option<&str>, reconnects: u64) {
        *lock(&self.cloud) = Some(CloudState {
            endpoint: connected_endpoint.map(str::to_owned),
        });
        self.cloud_reconnects.store(reconnects, Ordering::Relaxed);
    }

    /// Counts one configuration reload (SIGHUP).
    pub fn inc_reloads(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut w = TextWriter::new();
        self.render_process(&mut w);
        self.render_frames(&mut w);
        self.render_source(&mut w);
        self.render_plan(&mut w);
        self.render_conditions(&mut w);
        self.render_cloud(&mut w);
        w.finish()
    }

    fn render_process(&self, w: &mut TextWriter) {
        let name = "jmdc_edge_build_info";
        w.family(
            name,
            MetricType::Gauge,
            "Version of this jmdc-edge binary (always 1).",
        );
        w.sample(name, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        let name = "jmdc_edge_start_time_seconds";
        w.family(
            name,
            MetricType::Gauge,
            "Unix time at which the metrics were created (process start).",
        );
        w.sample(name, &[], self.start_time_s);
        counter(
            w,
            "jmdc_edge_config_reloads_total",
            "Configuration reloads (SIGHUP).",
            &self.reloads,
        );
    }

    fn render_frames(&self, w: &mut TextWriter) {
        let name = "jmdc_edge_frames_total";
        w.family(
            name,
            MetricType::Counter,
            "Frames finished, by outcome: edge (edge-only plan), cloud (the worker answered), \
             fallback (the cloud failed and the edge finished the frame).",
        );
        for outcome in FrameOutcome::ALL {
            let n = self.frames[outcome.index()].load(Ordering::Relaxed);
            w.sample_u64(name, &[("outcome", outcome.as_str())], n);
        }
        counter(
            w,
            "jmdc_edge_labelled_frames_total",
            "Frames whose source knew the true class.",
            &self.labelled,
        );
        counter(
            w,
            "jmdc_edge_correct_frames_total",
            "Labelled frames classified correctly (top-1).",
            &self.correct,
        );
        counter(
            w,
            "jmdc_edge_sent_bytes_total",
            "Request bytes sent to the cloud, message header included.",
            &self.sent_bytes,
        );
        let name = "jmdc_edge_latency_seconds";
        w.family(
            name,
            MetricType::Histogram,
            "Per-frame latency by stage: edge (head, plus tail on edge-only/fallback frames), \
             encode, network (round trip minus worker time), cloud (worker decode+queue+tail), total.",
        );
        for (stage, h) in STAGES.iter().zip(&self.latency) {
            h.render(w, name, &[("stage", stage)]);
        }
    }

    fn render_source(&self, w: &mut TextWriter) {
        counter(
            w,
            "jmdc_edge_source_frames_total",
            "Frames the source delivered.",
            &self.source_delivered,
        );
        counter(
            w,
            "jmdc_edge_source_dropped_frames_total",
            "Frames the source dropped because the pipeline was busy.",
            &self.source_dropped,
        );
        counter(
            w,
            "jmdc_edge_source_decode_errors_total",
            "Frames the source could not decode.",
            &self.source_decode_errors,
        );
        counter(
            w,
            "jmdc_edge_source_restarts_total",
            "Times the source was reopened after an error.",
            &self.source_restarts,
        );
    }

    fn render_plan(&self, w: &mut TextWriter) {
        let (plan, predicted) = {
            let state = lock(&self.plan);
            match state.as_ref() {
                Some(s) => (Some(s.plan.clone()), s.predicted_latency_s),
                None => (None, None),
            }
        };
        let name = "jmdc_edge_plan_info";
        w.family(
            name,
            MetricType::Gauge,
            "The plan in force (label plan; always 1).",
        );
        if let Some(plan) = &plan {
            w.sample(name, &[("plan", plan)], 1.0);
        }
        let name = "jmdc_edge_plan_predicted_latency_seconds";
        w.family(
            name,
            MetricType::Gauge,
            "Latency the optimizer predicted for the plan in force.",
        );
        if let Some(v) = predicted {
            w.sample(name, &[], v);
        }
        counter(
            w,
            "jmdc_edge_plan_changes_total",
            "Times the plan in force changed.",
            &self.plan_changes,
        );
    }

    fn render_conditions(&self, w: &mut TextWriter) {
        gauge(
            w,
            "jmdc_edge_network_bandwidth_bits_per_second",
            "Estimated bandwidth to the cloud.",
            self.bandwidth_bps.get(),
        );
        gauge(
            w,
            "jmdc_edge_network_rtt_seconds",
            "Estimated round-trip time to the cloud.",
            self.rtt_s.get(),
        );
        gauge(
            w,
            "jmdc_edge_cpu_load_factor",
            "Edge compute slowdown due to other load (1 = idle machine).",
            self.cpu_load.get(),
        );
        let name = "jmdc_edge_frames_in_flight";
        w.family(name, MetricType::Gauge, "Frames currently in the pipeline.");
        w.sample_u64(name, &[], self.in_flight.load(Ordering::Relaxed));
    }

    fn render_cloud(&self, w: &mut TextWriter) {
        let state = lock(&self.cloud).as_ref().map(|s| s.endpoint.clone());
        let name = "jmdc_edge_cloud_connected";
        w.family(
            name,
            MetricType::Gauge,
            "1 when connected to a cloud worker, 0 when not.",
        );
        if let Some(endpoint) = &state {
            w.sample_u64(name, &[], u64::from(endpoint.is_some()));
        }
        let name = "jmdc_edge_cloud_endpoint_info";
        w.family(
            name,
            MetricType::Gauge,
            "The cloud worker connected to (label endpoint; always 1).",
        );
        if let Some(Some(endpoint)) = &state {
            w.sample(name, &[("endpoint", endpoint)], 1.0);
        }
        counter(
            w,
            "jmdc_edge_cloud_reconnects_total",
            "Reconnections to the cloud worker.",
            &self.cloud_reconnects,
        );
    }
}

fn counter(w: &mut TextWriter, name: &str, help: &str, v: &AtomicU64) {
    w.family(name, MetricType::Counter, help);
    w.sample_u64(name, &[], v.load(Ordering::Relaxed));
}

fn gauge(w: &mut TextWriter, name: &str, help: &str, v: Option<f64>) {
    w.family(name, MetricType::Gauge, help);
    if let Some(v) = v {
        w.sample(name, &[], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn outcome_is_read_off_the_record() {
        let edge = FrameRecord::default();
        let cloud = FrameRecord {
            bytes: 10,
            ..Default::default()
        };
        let fallback = FrameRecord {
            bytes: 10,
            fallback: true,
            ..Default::default()
        };
        assert_eq!(FrameOutcome::of(&edge), FrameOutcome::Edge);
        assert_eq!(FrameOutcome::of(&cloud), FrameOutcome::Cloud);
        assert_eq!(FrameOutcome::of(&fallback), FrameOutcome::Fallback);
    }

    #[test]
    fn frames_move_counters_and_only_their_stages() {
        let m = Metrics::new();
        m.record_frame(&FrameRecord {
            edge_us: 2_000,
            total_us: 2_100,
            label: Some(3),
            predicted: 3,
            ..Default::default()
        });
        m.record_frame(&FrameRecord {
            edge_us: 1_000,
            encode_us: 200,
            network_us: 3_000,
            cloud_us: 800,
            total_us: 5_000,
            bytes: 1_234,
            label: Some(1),
            predicted: 2,
            ..Default::default()
        });
        let t = m.render();
        assert_eq!(
            value(&t, "jmdc_edge_frames_total{outcome=\"edge\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "jmdc_edge_frames_total{outcome=\"cloud\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "jmdc_edge_frames_total{outcome=\"fallback\"}").as_deref(),
            Some("0")
        );
        assert_eq!(
            value(&t, "jmdc_edge_labelled_frames_total").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, "jmdc_edge_correct_frames_total").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "jmdc_edge_sent_bytes_total").as_deref(),
            Some("1234")
        );
        assert_eq!(
            value(&t, "jmdc_edge_latency_seconds_count{stage=\"edge\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, "jmdc_edge_latency_seconds_count{stage=\"total\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, "jmdc_edge_latency_seconds_count{stage=\"encode\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "jmdc_edge_latency_seconds_count{stage=\"network\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "jmdc_edge_latency_seconds_sum{stage=\"total\"}").as_deref(),
            Some("0.0071")
        );
    }

    #[test]
    fn plan_label_is_replaced_and_escaped() {
        let m = Metrics::new();
        assert!(!m.render().contains("jmdc_edge_plan_info{"));
        m.set_plan("variant=keep050,split=9", Some(0.012));
        m.set_plan("variant=keep050,split=9", Some(0.011));
        assert_eq!(
            value(&m.render(), "jmdc_edge_plan_changes_total").as_deref(),
            Some("0")
        );
        m.set_plan("odd \"plan\"\\", None);
        let t = m.render();
        assert_eq!(t.matches("jmdc_edge_plan_info{").count(), 1);
        assert!(
            t.contains("jmdc_edge_plan_info{plan=\"odd \\\"plan\\\"\\\\\"} 1\n"),
            "{t}"
        );
        assert_eq!(
            value(&t, "jmdc_edge_plan_changes_total").as_deref(),
            Some("1")
        );
        assert_eq!(value(&t, "jmdc_edge_plan_predicted_latency_seconds"), None);
    }

    #[test]
    fn gauges_appear_once_set() {
        let m = Metrics::new();
        let t = m.render();
        assert_eq!(
            value(&t, "jmdc_edge_network_bandwidth_bits_per_second"),
            None
        );
        assert_eq!(value(&t, "jmdc_edge_cloud_connected"), None);
        m.set_network(20e6, 0.004);
        m.set_cpu_load(1.5);
        m.set_in_flight(2);
        m.set_cloud(Some("127.0.0.1:4433"), 3);
        m.inc_reloads();
        let t = m.render();
        assert_eq!(
            value(&t, "jmdc_edge_network_bandwidth_bits_per_second").as_deref(),
            Some("20000000")
        );
        assert_eq!(
            value(&t, "jmdc_edge_network_rtt_seconds").as_deref(),
            Some("0.004")
        );
        assert_eq!(
            value(&t, "jmdc_edge_cpu_load_factor").as_deref(),
            Some("1.5")
        );
        assert_eq!(
            value(&t, "jmdc_edge_frames_in_flight").as_deref(),
            Some("2")
        );
        assert_eq!(value(&t, "jmdc_edge_cloud_connected").as_deref(), Some("1"));
        assert_eq!(
            value(
                &t,
                "jmdc_edge_cloud_endpoint_info{endpoint=\"127.0.0.1:4433\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value(&t, "jmdc_edge_cloud_reconnects_total").as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&t, "jmdc_edge_config_reloads_total").as_deref(),
            Some("1")
        );
        m.set_cloud(None, 4);
        let t = m.render();
        assert_eq!(value(&t, "jmdc_edge_cloud_connected").as_deref(), Some("0"));
        assert!(!t.contains("jmdc_edge_cloud_endpoint_info{"));
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let t = Metrics::new().render();
        let types: Vec<&str> = t.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let helps = t.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types.len(), helps);
        let mut names: Vec<&str> = types.iter().filter_map(|l| l.split(' ').nth(2)).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a family is declared twice");
        assert!(names.iter().all(|n| n.starts_with("jmdc_edge_")));
    }
}
