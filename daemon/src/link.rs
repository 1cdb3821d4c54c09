//! Connection manager for the cloud endpoints (placeholder until it lands).
