//! A userspace UDP link emulator for tests and benchmarks (no root, no `netem`).
//!
//! A [`Relay`] listens on a local UDP address and forwards every datagram to one upstream address
//! (for example a QUIC server). Each client source address gets its own upstream socket, so the
//! replies go back to the right client and several QUIC connections can share the relay.
//!
//! Each direction (uplink: client → upstream, downlink: upstream → client) is shaped by
//! [`LinkParams`]: a seeded random loss on entry, a drop-tail queue of `queue_bytes`, serialisation
//! at `rate_bps` on a virtual clock, then a fixed one-way `delay`. Datagrams are never reordered or
//! duplicated, and there is no jitter beyond the tokio timer's granularity (about 1 ms).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};
//!
//! let upstream = "127.0.0.1:4433".parse()?;
//! let link = LinkParams::unlimited()
//!     .with_rate_mbit(10.0)
//!     .with_delay(Duration::from_millis(20));
//! let relay = Relay::bind(RelayConfig::new("127.0.0.1:0".parse()?, upstream).with_both(link)).await?;
//! let client_target = relay.local_addr(); // connect the QUIC client here
//! relay.handle().set_uplink(link.with_rate_mbit(2.0))?; // live change
//! let stats = relay.shutdown().await;
//! println!("{client_target}: {stats}");
//! # Ok(()) }
//! ```

mod params;
mod relay;
mod shaper;
mod stats;
mod trace;

pub use params::{mbit_to_bps, Direction, LinkParams, ParamsError, DEFAULT_QUEUE_BYTES, MAX_DELAY};
pub use relay::{LinkHandle, Relay, RelayConfig, RelayError};
pub use stats::{DirectionStats, LinkStats};
pub use trace::{AppliedStep, Trace, TraceError, TraceReport, TraceStep, MAX_REPORTED_STEPS};
