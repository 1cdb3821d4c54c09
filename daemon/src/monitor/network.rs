//! The network path to the cloud worker: upload goodput and round-trip time.
//!
//! Three sources, best first:
//!
//! * **Passive** — every cloud request the pipeline makes is a measurement:
//!   [`NetworkMonitor::record_transfer`]`(request bytes, round trip, server time)` gives
//!   `bytes·8 / (round trip − min RTT − server time)`. Requests too small for that difference to be
//!   meaningful are ignored (below `min_passive_bytes`, or a transfer expected at the current
//!   estimate shorter than `min_transfer` unless it measured 3× that; see [`long_enough`]).
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jmdc_core::protocol::{self, ProbeRequest, ServerMessage};
use tokio::sync::watch;

use super::{ChangeDetector, ChangeThreshold, DetectorConfig, Step};
use crate::client::{ClientError, CloudClient};

/// A probe that departed from the estimate is followed by the next one after
/// `min_probe_interval / CONFIRM_SPEEDUP`.
const CONFIRM_SPEEDUP: u32 = 5;

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
    /// minimum. This is what the optimizer adds to a request's transfer time; the smoothed `rtt_s`
    /// would count our own queueing twice. (A route that gets longer during a connection does not
    /// raise it; the loop's learned corrections absorb that. Raising it when the smoothed RTT
    /// stayed high for 10 s was tried: on a 1 Mbit/s link our own probes and requests kept the
    /// smoothed RTT up for good and a 0.3 ms path read 22 ms.)
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

impl NetworkEstimate {
    /// The bandwidth when it comes from measured goodput (requests or probes), else 0: quinn's
    /// `cwnd / rtt` placeholder grows with the window and read 100–600 Mbit/s on a 50 Mbit/s link.
    pub fn goodput_bps(&self) -> f64 {
        match self.source {
            EstimateSource::Passive | EstimateSource::Probe => self.bandwidth_bps,
            EstimateSource::None | EstimateSource::QuinnPath => 0.0,
        }
    }
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
    /// The shortest round trip of our own tiny exchanges ([`NetworkMonitor::ping`]) on the
    /// connection `pings.connection`, seconds.
    ping_rtt_s: Option<f64>,
    pings: PingSchedule,
}

/// Which connection the pings measured, how many, and when the last one was sent.
#[derive(Debug, Default, Clone, Copy)]
struct PingSchedule {
    connection: Option<usize>,
    count: u32,
    last: Option<Instant>,
}

impl PingSchedule {
    /// Pings at first come every [`EARLY_PING_INTERVAL`]: the first ones on a connection queue
    /// behind what the handshake left on the link (at 1 Mbit/s with 10 ms of propagation the
    /// first four read 33, 22, 22, 22 ms and the next ones 11.4 ms). Then every
    /// [`PING_INTERVAL`].
    fn due(&self, now: Instant) -> bool {
        let interval = if self.count < EARLY_PINGS {
            EARLY_PING_INTERVAL
        } else {
            PING_INTERVAL
        };
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
    }
}

impl State {
    /// The propagation round trip: quinn's path minimum, or the shortest of our own pings when
    /// that is lower. quinn's minimum comes from whatever packets were acknowledged so far; at
    /// the start of a connection those are 1,200-byte handshake packets, whose serialisation is
    /// in every sample (1.9 ms at 5 Mbit/s, 19 ms at 0.5 Mbit/s) and which the transfer term
    /// counts again. A ping's packets are about 60 bytes.
    fn base_rtt_s(&self) -> f64 {
        let quinn = self.estimate.min_rtt_s;
        match self.ping_rtt_s {
            Some(ping) if quinn <= 0.0 || ping < quinn => ping,
            _ => quinn,
        }
    }
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
    /// Whether active probes may run (see [`set_probing`](Self::set_probing)).
    probing: AtomicBool,
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
                ping_rtt_s: None,
                pings: PingSchedule::default(),
            }),
            estimates: watch::channel(NetworkEstimate::default()).0,
            changes: watch::channel(None).0,
            probe_ids: AtomicU64::new(1),
            probing: AtomicBool::new(true),
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
            let base = st.base_rtt_s();
            let e = &mut st.estimate;
            e.base_rtt_s = base;
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
            let min_rtt = Duration::from_secs_f64(st.base_rtt_s().max(0.0));
            let transfer = round_trip
                .saturating_sub(min_rtt)
                .saturating_sub(server_time);
            let measured_bps = st.estimate.goodput_bps();
            if transfer.is_zero() || !long_enough(transfer, bytes, measured_bps, cfg) {
                // Too short to measure, but not slow either: a request that went through at
                // about the estimated rate cancels a step down waiting for confirmation (two
                // delayed 1 KB frames among hundreds of fast ones had confirmed 50 → 0.9 Mbit/s).
                if transfer < cfg.min_transfer * LONG_TRANSFER_FACTOR {
                    st.bandwidth.contradict_pending(false);
                }
                return ((None, None), None);
            }
            let sample = (bytes as f64 * 8.0 / transfer.as_secs_f64()).min(cfg.max_bandwidth_bps);
            let step = st.bandwidth.update(sample);
            tracing::trace!(
                ?source,
                bytes,
                transfer_us = transfer.as_micros(),
                sample_mbit = sample / 1e6,
                estimate_mbit = st.bandwidth.value().unwrap_or(0.0) / 1e6,
                "goodput sample"
            );
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

    /// True when probing is allowed and a probe is due: no goodput sample fresher than
    /// `stale_after` and no probe within
    /// `min_probe_interval`; or the last probe departed from the estimate (a step waiting for
    /// confirmation) and none was sent within a fifth of that interval.
    pub fn needs_probe(&self, now: Instant) -> bool {
        if !self.probing.load(Ordering::Relaxed) {
            return false;
        }
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.bandwidth.pending() > 0 && st.estimate.source == EstimateSource::Probe {
            // The last probe departed from the estimate: confirm (or dismiss) it soon rather
            // than a whole interval later, so that a real step is followed within a second.
            let confirm_after = st.config.min_probe_interval / CONFIRM_SPEEDUP;
            return st
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= confirm_after);
        }
        let fresh = st
            .estimate
            .last_update
            .is_some_and(|t| now.saturating_duration_since(t) < st.config.stale_after);
        let recent_probe = st
            .last_probe
            .is_some_and(|t| now.saturating_duration_since(t) < st.config.min_probe_interval);
        !fresh && !recent_probe
    }

    /// Allows or stops active probes (passive samples and path statistics go on). The adaptive
    /// loop stops them while no bandwidth could change its decision: each probe costs the link
    /// and the edge's CPU, and on an edge with a 60 ms path to the cloud, where edge-only wins at
    /// any bandwidth, 125 KB probes once a second slowed its frames by a quarter.
    pub fn set_probing(&self, allowed: bool) {
        self.probing.store(allowed, Ordering::Relaxed);
    }

    /// Whether active probes may run.
    pub fn probing(&self) -> bool {
        self.probing.load(Ordering::Relaxed)
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

    /// Measures the path's propagation round trip with `count` tiny exchanges (a probe with no
    /// padding either way) on `client`'s connection and returns the shortest. The estimate's
    /// `base_rtt_s` uses the shortest ping on the current connection when it is below quinn's
    /// path minimum; a new connection starts afresh.
    pub async fn ping(&self, client: &CloudClient, count: usize) -> Result<Duration, ProbeError> {
        let connection = client.connection().stable_id();
        let timeout = self.with_state(|st| {
            if st.pings.connection != Some(connection) {
                st.pings = PingSchedule {
                    connection: Some(connection),
                    ..PingSchedule::default()
                };
                st.ping_rtt_s = None;
            }
            (st.config.probe_timeout, None)
        });
        let mut shortest = Duration::MAX;
        for _ in 0..count.max(1) {
            let probe_id = self.probe_ids.fetch_add(1, Ordering::Relaxed);
            let request = ProbeRequest {
                probe_id,
                reply_bytes: 0,
                padding_len: 0,
            };
            let bytes = protocol::encode_probe_request(&request)?;
            let start = Instant::now();
            self.with_state(|st| {
                st.pings.count += 1;
                st.pings.last = Some(start);
                ((), None)
            });
            let reply = client.exchange(&bytes, timeout).await?;
            let elapsed = start.elapsed();
            check_probe_reply(&reply, probe_id)?;
            shortest = shortest.min(elapsed);
            self.with_state(|st| {
                if st.pings.connection == Some(connection) {
                    let s = elapsed.as_secs_f64();
                    st.ping_rtt_s = Some(st.ping_rtt_s.map_or(s, |p| p.min(s)));
                    st.estimate.base_rtt_s = st.base_rtt_s();
                }
                ((), None)
            });
        }
        Ok(shortest)
    }

    /// Pings once if [`PingSchedule::due`] (or the connection is new); `None` when none was due.
    async fn maybe_ping(&self, client: &CloudClient) -> Option<Result<Duration, ProbeError>> {
        let connection = client.connection().stable_id();
        let due = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.pings.connection != Some(connection) || st.pings.due(Instant::now())
        };
        if !due {
            return None;
        }
        Some(self.ping(client, 1).await)
    }

    /// Sends one probe now (regardless of the schedule) and records its goodput sample.
    pub async fn probe(&self, client: &CloudClient) -> Result<ProbeOutcome, ProbeError> {
        let (padding_len, reply_bytes, timeout) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.last_probe = Some(Instant::now());
            (
                probe_size(st.config.probe_bytes, st.estimate.goodput_bps()),
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
        check_probe_reply(&reply, probe_id)?;
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
            if let Some(Err(e)) = self.maybe_ping(&client).await {
                tracing::debug!(error = %e, "round-trip ping failed");
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

/// Whether `reply` answers probe `probe_id`.
fn check_probe_reply(reply: &[u8], probe_id: u64) -> Result<(), ProbeError> {
    match protocol::decode_server_message(reply)? {
        ServerMessage::ProbeReply(r) if r.probe_id == probe_id => Ok(()),
        ServerMessage::ProbeReply(r) => Err(ProbeError::UnexpectedReply(format!(
            "probe id {} instead of {probe_id}",
            r.probe_id
        ))),
        ServerMessage::Error(e) => Err(ProbeError::UnexpectedReply(format!(
            "{}: {}",
            e.kind, e.message
        ))),
        ServerMessage::Result(_) => Err(ProbeError::UnexpectedReply("an inference result".into())),
        ServerMessage::ContextBound(_) => {
            Err(ProbeError::UnexpectedReply("a context binding".into()))
        }
    }
}

/// The first pings on a connection come this often...
const EARLY_PING_INTERVAL: Duration = Duration::from_millis(100);
/// ...this many of them...
const EARLY_PINGS: u32 = 10;
/// ...then this often (about 100 bytes each way: 0.4 kbit/s).
const PING_INTERVAL: Duration = Duration::from_secs(2);

/// Probes after the first take about this long at the measured goodput...
const PROBE_TARGET: Duration = Duration::from_millis(10);
/// ...within these sizes, bytes.
const MIN_PROBE_BYTES: u32 = 4 * 1024;
const MAX_PROBE_BYTES: u32 = 256 * 1024;

/// Probe padding: `configured` bytes while no goodput was measured, then what takes
/// [`PROBE_TARGET`] at the measured goodput, within [`MIN_PROBE_BYTES`]–[`MAX_PROBE_BYTES`]. A
/// fixed 16 KB probe held a 1 Mbit/s link for 131 ms every second (frames of a split plan queued
/// behind it and measured 2× their prediction) and took 1.3 ms at 100 Mbit/s, too short to count.
fn probe_size(configured: u32, goodput_bps: f64) -> u32 {
    if !(goodput_bps.is_finite() && goodput_bps > 0.0) {
        return configured;
    }
    let wanted = goodput_bps * PROBE_TARGET.as_secs_f64() / 8.0;
    wanted.clamp(f64::from(MIN_PROBE_BYTES), f64::from(MAX_PROBE_BYTES)) as u32
}

/// A sample whose transfer was *measured* this long or longer is used whatever the estimate says
/// (a step down to a slow link shows first as requests that take long).
const LONG_TRANSFER_FACTOR: u32 = 3;

/// Whether a transfer of `bytes` that took `transfer` makes a usable goodput sample.
///
/// The choice must not rest on the measured time alone: on a fast link a 1 KB request moves in
/// 0.2 ms, so the only ones whose measured transfer passed a 2 ms floor were those delayed by
/// something else (scheduling, a queue), and every sample that got through read 2–10 Mbit/s on a
/// 50 Mbit/s link. So a sample counts when the transfer *expected* at the current estimate is at
/// least `min_transfer`, or when it measured at least `LONG_TRANSFER_FACTOR × min_transfer`; with
/// no estimate yet, when it measured at least `min_transfer`.
fn long_enough(
    transfer: Duration,
    bytes: usize,
    estimate_bps: f64,
    cfg: NetworkMonitorConfig,
) -> bool {
    if estimate_bps.is_nan() || estimate_bps <= 0.0 {
        return transfer >= cfg.min_transfer;
    }
    let expected = Duration::from_secs_f64((bytes as f64 * 8.0 / estimate_bps).min(1e6));
    expected >= cfg.min_transfer || transfer >= cfg.min_transfer * LONG_TRANSFER_FACTOR
}

#[cfg(test)]
mod probe_schedule_tests {
    use super::*;

    fn probed(m: &NetworkMonitor, at: Instant, bytes: usize, transfer: Duration) {
        m.with_state(|st| {
            st.last_probe = Some(at);
            ((), None)
        });
        m.record_sample(bytes, transfer, Duration::ZERO, EstimateSource::Probe, at);
    }

    #[test]
    fn a_departing_probe_is_confirmed_within_a_fifth_of_the_interval() {
        let m = NetworkMonitor::new(NetworkMonitorConfig {
            min_probe_interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(1),
            ..NetworkMonitorConfig::default()
        });
        let t0 = Instant::now();
        // 16 KB in 131 ms: 1 Mbit/s, twice (the estimate settles there).
        probed(&m, t0, 16_384, Duration::from_micros(131_072));
        let t1 = t0 + Duration::from_secs(1);
        probed(&m, t1, 16_384, Duration::from_micros(131_072));
        assert!(
            !m.needs_probe(t1 + Duration::from_millis(300)),
            "steady: next probe after 1 s"
        );
        assert!(m.needs_probe(t1 + Duration::from_secs(1)));
        // The link went to 20 Mbit/s: the next probe departs, so the one after comes 200 ms later.
        let t2 = t1 + Duration::from_secs(1);
        probed(&m, t2, 16_384, Duration::from_micros(6_554));
        assert_eq!(m.estimate().changes, 0, "one sample is not a step");
        assert!(!m.needs_probe(t2 + Duration::from_millis(150)));
        assert!(m.needs_probe(t2 + Duration::from_millis(200)));
        let t3 = t2 + Duration::from_millis(200);
        probed(&m, t3, 16_384, Duration::from_micros(6_554));
        assert_eq!(m.estimate().changes, 1, "confirmed");
        assert!((m.estimate().bandwidth_bps / 20e6 - 1.0).abs() < 0.01);
        assert!(
            !m.needs_probe(t3 + Duration::from_millis(300)),
            "steady again"
        );
    }
}

#[cfg(test)]
mod sample_selection_tests {
    use super::*;

    fn sample(m: &NetworkMonitor, bytes: usize, transfer_us: u64) -> Option<f64> {
        m.record_sample(
            bytes,
            Duration::from_micros(transfer_us),
            Duration::ZERO,
            EstimateSource::Passive,
            Instant::now(),
        )
        .0
    }

    #[test]
    fn small_requests_delayed_on_a_fast_link_do_not_drag_the_estimate_down() {
        // As the edge's adaptive loop sets it up (JPEG cloud-only requests are about 1 KB).
        let m = NetworkMonitor::new(NetworkMonitorConfig {
            min_passive_bytes: 1024,
            ..NetworkMonitorConfig::default()
        });
        // 64 KB in 10.5 ms: 50 Mbit/s.
        assert!(sample(&m, 65_536, 10_486).is_some());
        assert!((m.estimate().bandwidth_bps / 50e6 - 1.0).abs() < 0.01);
        // 1 KB requests (0.16 ms at 50 Mbit/s) that happened to take 2.5–4 ms: not samples.
        for t in [2_500, 3_000, 4_000, 2_600] {
            assert_eq!(sample(&m, 1_024, t), None);
        }
        assert!((m.estimate().bandwidth_bps / 50e6 - 1.0).abs() < 0.01);
        // The link dropped to 1 Mbit/s: the same requests now take 8 ms+ and count.
        assert!(sample(&m, 1_024, 12_000).is_some());
        assert!(sample(&m, 1_024, 12_000).is_some());
        assert_eq!(m.estimate().changes, 1);
        assert!(m.estimate().bandwidth_bps < 1e6);
        // Once the estimate is low, 1 KB requests are long enough to measure as they are.
        assert!(sample(&m, 1_024, 8_500).is_some());
    }

    #[test]
    fn delayed_requests_between_fast_ones_confirm_no_step() {
        let m = NetworkMonitor::new(NetworkMonitorConfig {
            min_passive_bytes: 1024,
            ..NetworkMonitorConfig::default()
        });
        assert!(sample(&m, 65_536, 10_486).is_some()); // 50 Mbit/s
        for _ in 0..5 {
            // One 1 KB request held 9 ms by the host, then fast ones: no step.
            assert!(sample(&m, 1_024, 9_000).is_some());
            for _ in 0..50 {
                assert_eq!(sample(&m, 1_024, 300), None);
            }
        }
        assert_eq!(m.estimate().changes, 0);
        assert!((m.estimate().bandwidth_bps / 50e6 - 1.0).abs() < 0.01);
        // Two slow ones in a row still make the step.
        assert!(sample(&m, 1_024, 9_000).is_some());
        assert!(sample(&m, 1_024, 9_000).is_some());
        assert_eq!(m.estimate().changes, 1);
    }

    #[test]
    fn probes_take_about_10_ms_at_the_measured_goodput() {
        assert_eq!(
            probe_size(16_384, 0.0),
            16_384,
            "first probe: as configured"
        );
        assert_eq!(probe_size(16_384, f64::NAN), 16_384);
        assert_eq!(probe_size(16_384, 1e6), MIN_PROBE_BYTES);
        assert_eq!(probe_size(16_384, 10e6), 12_500);
        assert_eq!(probe_size(16_384, 100e6), 125_000);
        assert_eq!(probe_size(16_384, 10e9), MAX_PROBE_BYTES);
    }

    #[test]
    fn a_placeholder_estimate_does_not_veto_samples() {
        let m = NetworkMonitor::new(NetworkMonitorConfig::default());
        // quinn's cwnd/rtt placeholder: 600 Mbit/s.
        m.observe_path(
            Duration::from_micros(400),
            Duration::from_micros(300),
            30_000,
            0,
        );
        assert_eq!(m.estimate().source, EstimateSource::QuinnPath);
        // 16 KB in 2.6 ms after the 0.3 ms path minimum (50 Mbit/s): expected 0.2 ms at
        // 600 Mbit/s, but that figure is no measurement.
        assert!(sample(&m, 16_384, 2_921).is_some());
        assert!((m.estimate().bandwidth_bps / 50e6 - 1.0).abs() < 0.01);
    }

    #[test]
    fn without_an_estimate_the_measured_transfer_decides() {
        let m = NetworkMonitor::new(NetworkMonitorConfig::default());
        assert_eq!(sample(&m, 4_096, 1_000), None);
        assert!(sample(&m, 4_096, 3_000).is_some());
    }
}

#[cfg(test)]
mod base_rtt_tests {
    use super::*;

    #[test]
    fn pings_come_often_at_first_then_every_two_seconds() {
        let t0 = Instant::now();
        let mut s = PingSchedule::default();
        assert!(s.due(t0), "a connection with no ping yet");
        s.last = Some(t0);
        s.count = 1;
        assert!(!s.due(t0 + EARLY_PING_INTERVAL / 2));
        assert!(s.due(t0 + EARLY_PING_INTERVAL));
        s.count = EARLY_PINGS;
        assert!(!s.due(t0 + EARLY_PING_INTERVAL));
        assert!(!s.due(t0 + PING_INTERVAL / 2));
        assert!(s.due(t0 + PING_INTERVAL));
    }

    fn pinged(m: &NetworkMonitor, rtt: Duration) {
        m.with_state(|st| {
            st.ping_rtt_s = Some(rtt.as_secs_f64());
            ((), None)
        });
    }

    #[test]
    fn a_ping_below_the_handshake_sized_minimum_is_the_propagation_round_trip() {
        let m = NetworkMonitor::new(NetworkMonitorConfig::default());
        // 5 Mbit/s: quinn's only samples so far carried 1,200-byte packets (1.9 ms each).
        m.observe_path(
            Duration::from_micros(2600),
            Duration::from_micros(2250),
            12_000,
            0,
        );
        assert!((m.estimate().base_rtt_s - 0.00225).abs() < 1e-9);
        pinged(&m, Duration::from_micros(350));
        m.observe_path(
            Duration::from_micros(2600),
            Duration::from_micros(2250),
            12_000,
            0,
        );
        assert!((m.estimate().base_rtt_s - 0.00035).abs() < 1e-9);
        // The goodput sample subtracts the propagation round trip, not the inflated minimum:
        // 10 kB in 16.35 ms of round trip = 16 ms of transfer = 5 Mbit/s.
        let (sample, _) = m.record_sample(
            10_000,
            Duration::from_micros(16_350),
            Duration::ZERO,
            EstimateSource::Probe,
            Instant::now(),
        );
        let sample = sample.expect("a 16 ms transfer is long enough");
        assert!((sample - 5e6).abs() < 1e3, "{sample}");
    }

    #[test]
    fn quinn_s_minimum_wins_when_it_is_lower() {
        let m = NetworkMonitor::new(NetworkMonitorConfig::default());
        pinged(&m, Duration::from_micros(900));
        m.observe_path(
            Duration::from_micros(700),
            Duration::from_micros(400),
            12_000,
            0,
        );
        assert!((m.estimate().base_rtt_s - 0.0004).abs() < 1e-9);
    }
}
