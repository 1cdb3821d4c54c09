//! Wire protocol (placeholder).
