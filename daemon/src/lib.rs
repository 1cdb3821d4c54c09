//! jmdc-edge: the edge side of split inference — runs the head of the model, compresses the split
//! tensor, sends it to a cloud worker over QUIC and collects the result.
#![warn(missing_docs, unreachable_pub)]

pub mod adaptive;
mod backoff;
pub mod calibrate;
pub mod client;
pub mod config;
pub mod emulation;
pub mod frame;
pub mod link;
pub mod metrics;
pub mod monitor;
mod output;
pub mod pipeline;
pub mod plan_spec;
pub mod planning;
pub mod preflight;
pub mod run;
pub mod service;
pub mod source;
pub mod stats;
