//! jmdc-proto: the pure half of jmdc — everything the edge daemon and the cloud worker share that
//! needs no file, socket, clock or async runtime: the feature [`codec`], the wire [`protocol`],
//! the [`optimizer`], in-memory [`jpeg`], the model package [`manifest`] schema, the
//! [`calibration`] table, the profile [`estimate`]s and the composition of per-layer ONNX files
//! into one model per layer range ([`onnx`]). Time enters only as numbers passed in, so
//! all of it tests in isolation and deterministically (like `ntp-proto` for ntpd-rs).
//!
//! Reading packages and tables from disk, running ONNX Runtime and timing layers is `jmdc-core`,
//! which re-exports these modules under the same names.
#![warn(missing_docs, unreachable_pub)]
pub mod calibration;
pub mod codec;
pub mod estimate;
pub mod jpeg;
pub mod manifest;
pub mod onnx;
pub mod optimizer;
pub mod protocol;
