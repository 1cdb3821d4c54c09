//! `/metrics`: the worker's counters in the Prometheus text exposition format 0.0.4.
//! Every family is always present (zero before the first event), so dashboards and alerts
//! never see a metric appear late. Label values are fixed names: no escaping is needed.

use std::sync::atomic::Ordering;

use jmdc_core::protocol::ErrorKind;
use jmdc_service::exposition::{MetricType, TextWriter};

use crate::health::{HealthView, Readiness};

pub(crate) use jmdc_service::exposition::CONTENT_TYPE;

fn single(out: &mut TextWriter, name: &str, kind: MetricType, help: &str, value: u64) {
    out.family(name, kind, help);
    out.sample_u64(name, &[], value);
}

/// Renders every `jmdc_cloud_*` family from `view`.
pub(crate) fn render(view: &HealthView) -> String {
    let st = view.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = TextWriter::new();
    single(
        &mut out,
        "jmdc_cloud_ready",
        MetricType::Gauge,
        "1 while the worker takes new devices (what /readyz answers 200 for).",
        u64::from(view.readiness() == Readiness::Ready),
    );
    single(
        &mut out,
        "jmdc_cloud_draining",
        MetricType::Gauge,
        "1 after SIGTERM while frames in flight finish.",
        u64::from(view.is_draining()),
    );
    single(
        &mut out,
        "jmdc_cloud_connections_total",
        MetricType::Counter,
        "QUIC connections accepted since start.",
        load(&st.connections),
    );
    single(
        &mut out,
        "jmdc_cloud_connections_open",
        MetricType::Gauge,
        "QUIC connections open now.",
        load(&st.open_connections),
    );
    single(
        &mut out,
        "jmdc_cloud_requests_in_flight",
        MetricType::Gauge,
        "Requests (streams) being read, computed or answered now.",
        load(&st.in_flight),
    );
    single(
        &mut out,
        "jmdc_cloud_frames_served_total",
        MetricType::Counter,
        "Frames answered with a result.",
        load(&st.frames_ok),
    );
    single(
        &mut out,
        "jmdc_cloud_frames_refused_total",
        MetricType::Counter,
        "Frames refused with Overloaded (admission limit or draining).",
        load(&st.overloaded),
    );
    single(
        &mut out,
        "jmdc_cloud_frames_failed_total",
        MetricType::Counter,
        "Requests answered with an error other than Overloaded.",
        load(&st.frames_failed),
    );
    for (name, kind, help, value) in [
        (
            "jmdc_cloud_connections_refused_total",
            MetricType::Counter,
            "Connections refused at max_connections, max_connections_per_address or max_connections_per_device.",
            load(&st.connections_refused),
        ),
        (
            "jmdc_cloud_connections_refused_per_device_total",
            MetricType::Counter,
            "Of those, connections closed after the handshake at max_connections_per_device.",
            load(&st.connections_refused_per_device),
        ),
        (
            "jmdc_cloud_handshakes_failed_total",
            MetricType::Counter,
            "TLS handshakes that failed (no or a refused device certificate, …).",
            load(&st.handshakes_failed),
        ),
        (
            "jmdc_cloud_connections_idle_closed_total",
            MetricType::Counter,
            "Connections closed after idle_timeout_s without a request.",
            load(&st.idle_closed),
        ),
        (
            "jmdc_cloud_request_read_timeouts_total",
            MetricType::Counter,
            "Request streams reset for not arriving whole within request_read_timeout_ms.",
            load(&st.read_timeouts),
        ),
        (
            "jmdc_cloud_requests_over_budget_total",
            MetricType::Counter,
            "Requests answered Overloaded because the request-byte budget was spent.",
            load(&st.over_budget),
        ),
        (
            "jmdc_cloud_log_lines_suppressed_total",
            MetricType::Counter,
            "Warnings about bad requests or refused connections left out by the rate limit.",
            load(&st.log_lines_suppressed),
        ),
        (
            "jmdc_cloud_request_bytes_buffered",
            MetricType::Gauge,
            "Request bytes buffered now (held until the request is answered).",
            st.budget.get().map_or(0, |b| b.in_use() as u64),
        ),
        (
            "jmdc_cloud_request_bytes_buffered_peak",
            MetricType::Gauge,
            "The most request bytes buffered at once since start.",
            st.budget.get().map_or(0, |b| b.peak()),
        ),
        (
            "jmdc_cloud_request_bytes_budget",
            MetricType::Gauge,
            "limits.max_buffered_mib in bytes.",
            st.budget.get().map_or(0, |b| b.capacity() as u64),
        ),
    ] {
        single(&mut out, name, kind, help, value);
    }
    single(
        &mut out,
        "jmdc_cloud_probes_total",
        MetricType::Counter,
        "Link probes answered.",
        load(&st.probes),
    );
    single(
        &mut out,
        "jmdc_cloud_contexts_bound_total",
        MetricType::Counter,
        "Context bindings accepted (compact framing, protocol version 2).",
        load(&st.contexts_bound),
    );
    out.family(
        "jmdc_cloud_errors_total",
        MetricType::Counter,
        "Error replies sent, by kind.",
    );
    for kind in ErrorKind::ALL {
        out.sample_u64(
            "jmdc_cloud_errors_total",
            &[("kind", kind.as_str())],
            st.errors(kind),
        );
    }
    let (batches, merged) = view.engine_stats();
    for (name, kind, help, value) in [
        (
            "jmdc_cloud_batches_total",
            MetricType::Counter,
            "Batches run (frames of one model, variant and split run together).",
            batches.batches,
        ),
        (
            "jmdc_cloud_batched_frames_total",
            MetricType::Counter,
            "Frames in those batches (÷ batches_total = mean batch size).",
            batches.frames,
        ),
        (
            "jmdc_cloud_merged_ranges_ready",
            MetricType::Gauge,
            "Merged layer ranges (tails as one session) ready now.",
            merged.ready as u64,
        ),
        (
            "jmdc_cloud_merged_range_bytes",
            MetricType::Gauge,
            "Accounted bytes of the ready merged ranges (runtime.merged_cache_mib bounds it).",
            merged.bytes as u64,
        ),
        (
            "jmdc_cloud_merged_range_builds_total",
            MetricType::Counter,
            "Merged ranges built.",
            merged.built,
        ),
        (
            "jmdc_cloud_merged_range_evictions_total",
            MetricType::Counter,
            "Merged ranges dropped to make room for others.",
            merged.evicted,
        ),
        (
            "jmdc_cloud_merged_range_failures_total",
            MetricType::Counter,
            "Merged ranges that failed to build or never fit (they run as chains).",
            merged.failed,
        ),
    ] {
        single(&mut out, name, kind, help, value);
    }
    let name = "jmdc_cloud_request_duration_seconds";
    out.family(
        name,
        MetricType::Histogram,
        "Time from a request stream's arrival to its inference answer being ready.",
    );
    st.latency.render(&mut out, name, &[]);
    out.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::health::Heartbeat;
    use crate::stats::ServerStats;

    #[test]
    fn every_family_is_typed_and_counts_show() {
        let stats = Arc::new(ServerStats::default());
        stats.frames_ok.fetch_add(3, Ordering::Relaxed);
        stats.record_error(ErrorKind::UnknownModel);
        stats.latency.observe(Duration::from_millis(2));
        let view = HealthView::new(
            Arc::new(Heartbeat::default()),
            Arc::new(AtomicBool::new(false)),
            stats,
        );
        let text = render(&view);
        assert!(
            text.contains("jmdc_cloud_frames_served_total 3\n"),
            "{text}"
        );
        assert!(text.contains("jmdc_cloud_errors_total{kind=\"unknown_model\"} 1\n"));
        assert!(text.contains("jmdc_cloud_errors_total{kind=\"overloaded\"} 0\n"));
        assert!(text.contains("jmdc_cloud_ready 0\n"), "no beat yet");
        assert!(text.contains("jmdc_cloud_request_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("jmdc_cloud_request_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("jmdc_cloud_request_duration_seconds_count 1\n"));
        // Every sample line belongs to a family declared with # TYPE before it.
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().expect("name").to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("name");
                assert!(
                    typed.iter().any(|t| name.starts_with(t.as_str())),
                    "untyped sample {line}"
                );
            }
        }
    }
}
