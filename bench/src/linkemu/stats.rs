//! Counters of the emulated link.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one direction (shared between tasks).
#[derive(Debug, Default)]
pub(crate) struct DirectionCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub packets_dropped_loss: AtomicU64,
    pub bytes_dropped_loss: AtomicU64,
    pub packets_dropped_queue: AtomicU64,
    pub bytes_dropped_queue: AtomicU64,
    pub send_errors: AtomicU64,
    pub max_queue_bytes: AtomicU64,
}

impl DirectionCounters {
    pub(crate) fn add(counter: &AtomicU64, value: usize) {
        counter.fetch_add(value as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queue_bytes_now: usize) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            packets_forwarded: get(&self.packets_forwarded),
            bytes_forwarded: get(&self.bytes_forwarded),
            packets_dropped_loss: get(&self.packets_dropped_loss),
            bytes_dropped_loss: get(&self.bytes_dropped_loss),
            packets_dropped_queue: get(&self.packets_dropped_queue),
            bytes_dropped_queue: get(&self.bytes_dropped_queue),
            send_errors: get(&self.send_errors),
            queue_bytes: queue_bytes_now as u64,
            max_queue_bytes: get(&self.max_queue_bytes),
        }
    }
}

/// A snapshot of one direction's counters.
///
/// `packets_in = packets_forwarded + packets_dropped_loss + packets_dropped_queue + send_errors
///  + (datagrams still queued or in flight)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that entered the direction.
    pub packets_in: u64,
    /// Bytes (UDP payload) that entered the direction.
    pub bytes_in: u64,
    /// Datagrams handed to the destination socket.
    pub packets_forwarded: u64,
    /// Bytes handed to the destination socket.
    pub bytes_forwarded: u64,
    /// Datagrams dropped by the random loss.
    pub packets_dropped_loss: u64,
    /// Bytes dropped by the random loss.
    pub bytes_dropped_loss: u64,
    /// Datagrams dropped because the queue was full (drop-tail).
    pub packets_dropped_queue: u64,
    /// Bytes dropped because the queue was full.
    pub bytes_dropped_queue: u64,
    /// Datagrams whose final `send` failed (e.g. nobody listening upstream).
    pub send_errors: u64,
    /// Bytes waiting in the queue when the snapshot was taken.
    pub queue_bytes: u64,
    /// Largest queue occupancy seen, in bytes.
    pub max_queue_bytes: u64,
}

impl DirectionStats {
    /// All drops (loss + queue).
    pub fn packets_dropped(&self) -> u64 {
        self.packets_dropped_loss + self.packets_dropped_queue
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in {} pkt / {} B, forwarded {} pkt / {} B, lost {} pkt / {} B, queue-dropped {} pkt / {} B, \
             send errors {}, queue {} B (max {} B)",
            self.packets_in,
            self.bytes_in,
            self.packets_forwarded,
            self.bytes_forwarded,
            self.packets_dropped_loss,
            self.bytes_dropped_loss,
            self.packets_dropped_queue,
            self.bytes_dropped_queue,
            self.send_errors,
            self.queue_bytes,
            self.max_queue_bytes
        )
    }
}

/// A snapshot of the whole relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Client → upstream.
    pub uplink: DirectionStats,
    /// Upstream → client.
    pub downlink: DirectionStats,
    /// Client addresses currently mapped to an upstream socket.
    pub sessions_active: u64,
    /// Client addresses mapped since the start.
    pub sessions_total: u64,
    /// Datagrams from new clients refused because the session limit was reached.
    pub sessions_refused: u64,
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "uplink:   {}", self.uplink)?;
        writeln!(f, "downlink: {}", self.downlink)?;
        write!(
            f,
            "sessions: {} active, {} total, {} refused",
            self.sessions_active, self.sessions_total, self.sessions_refused
        )
    }
}
