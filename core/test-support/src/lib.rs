//! jmdc-test-support: what the test suites of `jmdc-edge` and `jmdc-cloud` share (a
//! dev-dependency only, never linked into a binary).
//!
//! - [`check_config`]: runs a binary's `check-config` against layered configuration fixtures and
//!   checks that mistakes name the file or variable and the key;
//! - [`require`]: tests that need a tool or `../shared` skip with a reason on a developer machine
//!   but fail in CI.
#![warn(missing_docs, unreachable_pub)]

pub mod check_config;
pub mod require;
