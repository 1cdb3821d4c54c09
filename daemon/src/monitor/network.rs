//! The network path to the cloud worker: upload goodput and round-trip time.
//!
//! Three sources, best first:
//!
//! * **Passive** — every cloud request the pipeline makes is a measurement:
//!   [`NetworkMonitor::record_transfer`]`(request bytes, round trip, server time)` gives
//!   `bytes·8 / (round trip − min RTT − server time)`. Requests too small for that difference to be
//!   meaningful are ignored (below `min_passive_bytes`, or a transfer time below `min_transfer`).
//! * **Probe** — when no measurement is fresher than `stale_after` (edge-only plans send nothing;
//!   tiny feature tensors measure nothing), [`NetworkMonitor::maybe_probe`] sends one
//!   [`ProbeRequest`] of `probe_bytes` padding on a fresh bidirectional stream, at most once per
//!   `min_probe_interval`, and measures it like a passive transfer.
//! * **QuinnPath** — before any goodput sample: `cwnd·8 / rtt` from the connection's congestion
//!   controller, a rough placeholder.
//!
//! Bandwidth samples (passive and probe alike) are smoothed and watched by a [`ChangeDetector`]
//! (default: relative change > 30 % sustained over 2 samples); quinn's smoothed RTT likewise
//! (relative > 30 % and > 5 ms, over 3 samples). Detected changes are published on a
//! [`watch`] channel. See `docs/monitoring.md` for measured accuracy and cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jmdc_core::protocol::{self, ProbeRequest, ServerMessage};
use tokio::sync::watch;

use super::{ChangeDetector, ChangeThreshold, DetectorConfig, Step};
use crate::client::{ClientError, CloudClient};

/// Where the current bandwidth figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EstimateSource {
    /// Nothing measured yet (`bandwidth_bps` is 0).
    #[default]
    None,
    /// `cwnd / rtt` of the QUIC connection (no goodput sample yet).
    QuinnPath,
    /// Real requests of the pipeline.
    Passive,
    /// An active probe.
    Probe,
}

/// What the monitor currently believes about the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkEstimate {
    /// Smoothed upload goodput, bit/s (0 when unknown).
    pub bandwidth_bps: f64,
    /// The last goodput sample, bit/s (0 when none).
    pub last_sample_bps: f64,
    /// Smoothed RTT (quinn's estimate, smoothed again), seconds (0 when unknown).
    pub rtt_s: f64,
    /// quinn's minimum RTT of the path, seconds (0 when unknown).
    pub min_rtt_s: f64,
    /// Propagation round trip without our own serialisation and queueing, seconds: quinn's path
    /// minimum, unless the smoothed RTT stayed well above it for the whole last
    /// `base_rtt_window` (the path itself got longer). This is what the optimizer adds to a
    /// request's transfer time; the smoothed `rtt_s` would count our own queueing twice.
    pub base_rtt_s: f64,
    /// When the last goodput sample was taken.
    pub last_update: Option<Instant>,
    /// Source of the last sample that set `bandwidth_bps`.
    pub source: EstimateSource,
    /// Goodput samples accepted (passive + probe).
    pub samples: u64,
    /// Probes sent.
    pub probes: u64,
    /// Bytes sent by probes (requests, protocol framing included) — the probes' cost.
    pub probe_bytes: u64,
    /// Congestion window, bytes (from the last path observation).
    pub cwnd_bytes: u64,
    /// Lost packets on the path so far.
    pub lost_packets: u64,
    /// Changes detected so far (bandwidth and RTT).
    pub changes: u64,
}

impl Default for NetworkEstimate {
    fn default() -> Self {
        NetworkEstimate {
            bandwidth_bps: 0.0,
            last_sample_bps: 0.0,
            rtt_s: 0.0,
            min_rtt_s: 0.0,
            base_rtt_s: 0.0,
            last_update: None,
            source: EstimateSource::None,
            samples: 0,
            probes: 0,
            probe_bytes: 0,
            cwnd_bytes: 0,
            lost_packets: 0,
            changes: 0,
        }
    }
}

/// Which quantity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Upload goodput (bit/s).
    Bandwidth,
    /// Round-trip time (s).
    Rtt,
}

/// A detected step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkChange {
    /// When it was confirmed.
    pub at: Instant,
    /// What changed.
    pub kind: ChangeKind,
    /// Smoothed value before → after.
    pub step: Step,
    /// The source of the confirming sample.
    pub source: EstimateSource,
}

/// Tuning of a [`NetworkMonitor`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkMonitorConfig {
    /// Bandwidth smoothing and step detection (default EWMA 0.3, relative 30 %, 2 samples).
    pub bandwidth: DetectorConfig,
    /// RTT smoothing and step detection (default EWMA 0.2, relative 30 % and ≥ 5 ms, 3 samples).
    pub rtt: DetectorConfig,
    /// Passive samples from smaller requests are ignored.
    pub min_passive_bytes: usize,
    /// Samples whose transfer time (round trip − min RTT − server time) is shorter are ignored.
    pub min_transfer: Duration,
    /// Samples above this (bit/s) are clamped to it.
    pub max_bandwidth_bps: f64,
    /// Probe padding sent upstream, bytes.
    pub probe_bytes: u32,
    /// Padding the worker sends back, bytes (keep small: the probe measures the uplink).
    pub probe_reply_bytes: u32,
    /// At most one probe per this interval.
    pub min_probe_interval: Duration,
    /// Probe only when the last goodput sample is older than this (or there is none).
    pub stale_after: Duration,
    /// A probe that takes longer fails.
    pub probe_timeout: Duration,
    /// Window of the smoothed-RTT minimum that can raise `base_rtt_s` above the path minimum.
    pub base_rtt_window: Duration,
}

impl Default for NetworkMonitorConfig {
    fn default() -> Self {
        NetworkMonitorConfig {
            bandwidth: DetectorConfig {
                alpha: 0.3,
                threshold: ChangeThreshold::relative(0.3),
                sustain: 2,
            },
            rtt: DetectorConfig {
                alpha: 0.2,
                threshold: ChangeThreshold {
                    relative: 0.3,
                    absolute: 0.005,
                },
                sustain: 3,
            },
            min_passive_bytes: 4096,
            min_transfer: Duration::from_millis(2),
            max_bandwidth_bps: 10e9,
            probe_bytes: 64 * 1024,
            probe_reply_bytes: 0,
            min_probe_interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            base_rtt_window: Duration::from_secs(10),
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The exchange failed (connection, timeout).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The request could not be encoded or the reply decoded.
    #[error("probe message: {0}")]
    Protocol(#[from] protocol::ProtocolError),
    /// The worker answered something other than this probe's reply.
    #[error("unexpected probe reply: {0}")]
    UnexpectedReply(String),
}

/// One probe's measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOutcome {
    /// Request bytes sent (protocol message).
    pub bytes_up: usize,
    /// Reply bytes received.
    pub bytes_down: usize,
    /// Time from opening the stream to the full reply.
    pub elapsed: Duration,
    /// The path's minimum RTT used to compute the transfer time.
    pub min_rtt: Duration,
    /// The goodput sample, when the transfer time was long enough to give one.
    pub sample_bps: Option<f64>,
    /// A change this sample confirmed.
    pub change: Option<NetworkChange>,
}

#[derive(Debug)]
struct State {
    config: NetworkMonitorConfig,
    bandwidth: ChangeDetector,
    rtt: ChangeDetector,
    estimate: NetworkEstimate,
    last_probe: Option<Instant>,
    /// Smoothed RTT observations of the last `base_rtt_window`, oldest first.
    rtt_window: std::collections::VecDeque<(Instant, f64)>,
}

/// Network conditions to the cloud worker, from passive samples, probes and QUIC path stats.
///
/// Cheap to share (`Arc<NetworkMonitor>`); every method takes `&self`.
#[derive(Debug)]
pub struct NetworkMonitor {
    state: Mutex<State>,
    estimates: watch::Sender<NetworkEstimate>,
    changes: watch::Sender<Option<NetworkChange>>,
    probe_ids: AtomicU64,
}

impl NetworkMonitor {
    /// A monitor with no measurements.
    pub fn new(config: NetworkMonitorConfig) -> Self {
        NetworkMonitor {
            state: Mutex::new(State {
                config,
                bandwidth: ChangeDetector::new(config.bandwidth),
                rtt: ChangeDetector::new(config.rtt),
                estimate: NetworkEstimate::default(),
                last_probe: None,
                rtt_window: std::collections::VecDeque::new(),
            }),
            estimates: watch::channel(NetworkEstimate::default()).0,
            changes: watch::channel(None).0,
            probe_ids: AtomicU64::new(1),
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> (T, Option<NetworkChange>)) -> T {
        let (out, change, estimate) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (out, change) = f(&mut st);
            (out, change, st.estimate)
        };
        self.estimates.send_replace(estimate);
        if let Some(change) = change {
            tracing::info!(kind = ?change.kind, from = change.step.from, to = change.step.to, source = ?change.source, "network conditions changed");
            self.changes.send_replace(Some(change));
        }
        out
    }

    /// Updates RTT, min RTT, cwnd and losses from the connection's path statistics.
    pub fn observe_connection(&self, connection: &quinn::Connection) -> Option<NetworkChange> {
        let path = connection.stats().path;
        self.observe_path(path.rtt, path.min_rtt, path.cwnd, path.lost_packets)
    }

    /// Updates RTT, min RTT, cwnd and losses from explicit figures (the pure part of
    /// [`observe_connection`](Self::observe_connection)).
    pub fn observe_path(
        &self,
        rtt: Duration,
        min_rtt: Duration,
        cwnd_bytes: u64,
        lost_packets: u64,
    ) -> Option<NetworkChange> {
        self.with_state(|st| {
            let now = Instant::now();
            let e = &mut st.estimate;
            e.min_rtt_s = min_rtt.as_secs_f64();
            e.cwnd_bytes = cwnd_bytes;
            e.lost_packets = lost_packets;
            let step = st.rtt.update(rtt.as_secs_f64());
            e.rtt_s = st.rtt.value().unwrap_or(0.0);
            e.base_rtt_s = base_rtt(
                &mut st.rtt_window,
                now,
                st.config.base_rtt_window,
                rtt.as_secs_f64(),
                min_rtt.as_secs_f64(),
            );
            if matches!(e.source, EstimateSource::None | EstimateSource::QuinnPath)
                && rtt > Duration::ZERO
                && cwnd_bytes > 0
            {
                e.bandwidth_bps =
                    (cwnd_bytes as f64 * 8.0 / rtt.as_secs_f64()).min(st.config.max_bandwidth_bps);
                e.source = EstimateSource::QuinnPath;
            }
            let change = step.map(|step| NetworkChange {
                at: now,
                kind: ChangeKind::Rtt,
                step,
                source: EstimateSource::QuinnPath,
            });
            if change.is_some() {
                e.changes += 1;
            }
            (change, change)
        })
    }

    /// Records one real request: `bytes` sent (the whole request message), the `round_trip` from
    /// the start of sending to the full answer, and the time the worker reported spending on it
    /// (`decode + queue + compute`). Returns the goodput sample (bit/s) when it was usable.
    pub fn record_transfer(
        &self,
        bytes: usize,
        round_trip: Duration,
        server_time: Duration,
    ) -> Option<f64> {
        self.record_sample(
            bytes,
            round_trip,
            server_time,
            EstimateSource::Passive,
            Instant::now(),
        )
        .0
    }

    fn record_sample(
        &self,
        bytes: usize,
        round_trip: Duration,
        server_time: Duration,
        source: EstimateSource,
        now: Instant,
    ) -> (Option<f64>, Option<NetworkChange>) {
        self.with_state(|st| {
            let cfg = st.config;
            if source == EstimateSource::Passive && bytes < cfg.min_passive_bytes {
                return ((None, None), None);
            }
            let min_rtt = Duration::from_secs_f64(st.estimate.min_rtt_s.max(0.0));
            let transfer = round_trip
                .saturating_sub(min_rtt)
                .saturating_sub(server_time);
            if transfer < cfg.min_transfer || transfer.is_zero() {
                return ((None, None), None);
            }
            let sample = (bytes as f64 * 8.0 / transfer.as_secs_f64()).min(cfg.max_bandwidth_bps);
            let step = st.bandwidth.update(sample);
            let e = &mut st.estimate;
            e.last_sample_bps = sample;
            e.bandwidth_bps = st.bandwidth.value().unwrap_or(sample);
            e.last_update = Some(now);
            e.source = source;
            e.samples += 1;
            let change = step.map(|step| NetworkChange {
                at: now,
                kind: ChangeKind::Bandwidth,
                step,
                source,
            });
            if change.is_some() {
                e.changes += 1;
            }
            ((Some(sample), change), change)
        })
    }

    /// True when a probe is due: no goodput sample fresher than `stale_after` and no probe within
    /// `min_probe_interval`.
    pub fn needs_probe(&self, now: Instant) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = st
            .estimate
            .last_update
            .is_some_and(|t| now.saturating_duration_since(t) < st.config.stale_after);
        let recent_probe = st
            .last_probe
            .is_some_and(|t| now.saturating_duration_since(t) < st.config.min_probe_interval);
        !fresh && !recent_probe
    }

    /// Probes if [`needs_probe`](Self::needs_probe); `None` when no probe was due.
    pub async fn maybe_probe(
        &self,
        client: &CloudClient,
    ) -> Option<Result<ProbeOutcome, ProbeError>> {
        if !self.needs_probe(Instant::now()) {
            return None;
        }
        Some(self.probe(client).await)
    }

    /// Sends one probe now (regardless of the schedule) and records its goodput sample.
    pub async fn probe(&self, client: &CloudClient) -> Result<ProbeOutcome, ProbeError> {
        let (padding_len, reply_bytes, timeout) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.last_probe = Some(Instant::now());
            (
                st.config.probe_bytes,
                st.config.probe_reply_bytes,
                st.config.probe_timeout,
            )
        };
        // Fresh min RTT before timing.
        self.observe_connection(client.connection());
        let probe_id = self.probe_ids.fetch_add(1, Ordering::Relaxed);
        let request = ProbeRequest {
            probe_id,
            reply_bytes,
            padding_len,
        };
        let bytes = protocol::encode_probe_request(&request)?;
        self.with_state(|st| {
            st.estimate.probes += 1;
            st.estimate.probe_bytes += bytes.len() as u64;
            ((), None)
        });
        let start = Instant::now();
        let reply = client.exchange(&bytes, timeout).await?;
        let elapsed = start.elapsed();
        match protocol::decode_server_message(&reply)? {
            ServerMessage::ProbeReply(r) if r.probe_id == probe_id => {}
            ServerMessage::ProbeReply(r) => {
                return Err(ProbeError::UnexpectedReply(format!(
                    "probe id {} instead of {probe_id}",
                    r.probe_id
                )))
            }
            ServerMessage::Error(e) => {
                return Err(ProbeError::UnexpectedReply(format!(
                    "{}: {}",
                    e.kind, e.message
                )))
            }
            ServerMessage::Result(_) => {
                return Err(ProbeError::UnexpectedReply("an inference result".into()))
            }
        }
        let min_rtt = client.connection().stats().path.min_rtt;
        // The reply's own serialisation is part of the elapsed time; with a small reply it is
        // negligible, otherwise it is charged as server time at the current estimate.
        let reply_time = {
            let bw = self.estimate().bandwidth_bps;
            if reply_bytes > 0 && bw > 0.0 {
                Duration::from_secs_f64(f64::from(reply_bytes) * 8.0 / bw)
            } else {
                Duration::ZERO
            }
        };
        self.observe_connection(client.connection());
        let (sample_bps, change) = self.record_sample(
            bytes.len(),
            elapsed,
            reply_time,
            EstimateSource::Probe,
            Instant::now(),
        );
        Ok(ProbeOutcome {
            bytes_up: bytes.len(),
            bytes_down: reply.len(),
            elapsed,
            min_rtt,
            sample_bps,
            change,
        })
    }

    /// Runs until `shutdown` turns true (or its sender is dropped): every `tick`, refreshes the
    /// path statistics and probes when one is due. Probe failures are logged, not fatal.
    pub async fn run(
        self: Arc<Self>,
        client: Arc<CloudClient>,
        tick: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let tick = tick.max(Duration::from_millis(50));
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.observe_connection(client.connection());
            if let Some(Err(e)) = self.maybe_probe(&client).await {
                tracing::debug!(error = %e, "network probe failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                r = shutdown.changed() => if r.is_err() { return },
            }
        }
    }

    /// The current estimate.
    pub fn estimate(&self) -> NetworkEstimate {
        *self.estimates.borrow()
    }

    /// A receiver of every estimate update.
    pub fn subscribe(&self) -> watch::Receiver<NetworkEstimate> {
        self.estimates.subscribe()
    }

    /// A receiver of detected changes only (`None` until the first one).
    pub fn changes(&self) -> watch::Receiver<Option<NetworkChange>> {
        self.changes.subscribe()
    }

    /// The configuration.
    pub fn config(&self) -> NetworkMonitorConfig {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).config
    }
}

/// The propagation round trip: the path minimum `min_rtt`, or — when every smoothed RTT of the last
/// `window` (which must be mostly covered by observations) was above `2 × min_rtt + 5 ms` — the
/// smallest of them (the route got longer; quinn's minimum never rises). Queueing caused by our
/// own requests and probes is short-lived, so it does not hold the minimum up for a whole window.
fn base_rtt(
    history: &mut std::collections::VecDeque<(Instant, f64)>,
    now: Instant,
    window: Duration,
    rtt_s: f64,
    min_rtt_s: f64,
) -> f64 {
    if rtt_s > 0.0 {
        history.push_back((now, rtt_s));
    }
    while history
        .front()
        .is_some_and(|&(t, _)| now.saturating_duration_since(t) > window)
    {
        history.pop_front();
    }
    let covered = history
        .front()
        .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= window.mul_f64(0.8));
    let window_min = history
        .iter()
        .map(|&(_, r)| r)
        .fold(f64::INFINITY, f64::min);
    if covered && window_min.is_finite() && window_min > 2.0 * min_rtt_s + 0.005 {
        window_min
    } else {
        min_rtt_s
    }
}

#[cfg(test)]
mod base_rtt_tests {
    use super::*;

    #[test]
    fn base_rtt_is_the_path_minimum_despite_own_queueing() {
        let mut h = std::collections::VecDeque::new();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        // Probes inflate the smoothed RTT to 50–120 ms now and then; the path minimum is 0.2 ms.
        for i in 0..200u64 {
            let rtt = if i % 10 < 3 { 0.12 } else { 0.0004 };
            let b = base_rtt(&mut h, t0 + Duration::from_millis(100 * i), w, rtt, 0.0002);
            assert_eq!(b, 0.0002, "at {i}");
        }
    }

    #[test]
    fn base_rtt_follows_a_longer_route_after_a_window() {
        let mut h = std::collections::VecDeque::new();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        for i in 0..50u64 {
            base_rtt(
                &mut h,
                t0 + Duration::from_millis(100 * i),
                w,
                0.001,
                0.0008,
            );
        }
        // The route now takes 40 ms; quinn's minimum stays 0.8 ms.
        let mut last = 0.0;
        for i in 50..200u64 {
            last = base_rtt(
                &mut h,
                t0 + Duration::from_millis(100 * i),
                w,
                0.040,
                0.0008,
            );
            if i < 130 {
                assert_eq!(last, 0.0008, "too early at {i}");
            }
        }
        assert_eq!(last, 0.040);
    }
}
