//! Prometheus metrics (placeholder until it lands).
