//! [`FrameFeed`]: what the pipeline receives frames from, whatever the source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::cifar::CifarCursor;
use super::decoder::LiveDecoder;
use crate::frame::Frame;

/// A frame as produced, before it gets its delivery id.
#[derive(Debug)]
pub(crate) struct Captured {
    pub label: Option<u8>,
    pub pixels: Vec<u8>,
    pub origin: String,
    pub captured: Instant,
    /// The source's JPEG when it was exactly at the model input size ([`Frame::jpeg`]).
    pub jpeg: Option<Arc<[u8]>>,
}

/// Counters shared between the feed and its background work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub dropped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub restarts: AtomicU64,
}

impl Counters {
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one undecodable frame and logs it: the first (and the 10th, 100th, …) at warn,
    /// the others at debug.
    pub fn decode_error(&self, what: &str, error: &dyn std::fmt::Display) {
        let n = self.decode_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if is_power_of_ten(n) {
            tracing::warn!(errors = n, "{what}: skipped undecodable frame: {error}");
        } else {
            tracing::debug!(errors = n, "{what}: skipped undecodable frame: {error}");
        }
    }
}

/// 1, 10, 100, …
pub(crate) fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Source counters, as reported in STATUS and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceStats {
    /// Frames handed to the pipeline.
    pub delivered: u64,
    /// Live frames replaced by a newer one before the pipeline took them.
    pub dropped: u64,
    /// Frames or files that could not be decoded (skipped).
    pub decode_errors: u64,
    /// Restarts of the MJPEG child or re-opens of the V4L2 device.
    pub restarts: u64,
}

/// Where the frames come from, internally.
#[derive(Debug)]
pub(crate) enum Inner {
    /// Read on demand (CIFAR in memory): backpressure for free.
    Cifar(CifarCursor),
    /// Produced ahead by a bounded queue: backpressure, nothing dropped.
    Queue(mpsc::Receiver<Captured>),
    /// Newest frame wins (decoded when asked for).
    Live(LiveDecoder),
    /// Finished.
    Done,
}

/// Background work owned by a feed; stopped when the feed is dropped.
#[derive(Debug, Default)]
pub(crate) struct Background {
    pub tasks: Vec<AbortHandle>,
    pub stop: Option<Arc<AtomicBool>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(stop) = &self.stop {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A running frame source. Dropping it stops the source's background work (children are
/// killed, threads are told to stop).
#[derive(Debug)]
pub struct FrameFeed {
    inner: Inner,
    counters: Arc<Counters>,
    delivered: u64,
    limit: Option<u64>,
    interval: Option<Duration>,
    next_due: Option<tokio::time::Instant>,
    live: bool,
    description: String,
    background: Option<Background>,
}

impl FrameFeed {
    pub(crate) fn new(
        inner: Inner,
        counters: Arc<Counters>,
        section: &super::SourceSection,
        description: String,
        background: Background,
    ) -> Self {
        Self {
            inner,
            counters,
            delivered: 0,
            limit: section.limit.map(|l| l as u64),
            interval: section
                .max_fps
                .map(|fps| Duration::from_secs_f64(1.0 / fps)),
            next_due: None,
            live: section.is_live(),
            description,
            background: Some(background),
        }
    }

    /// Next frame; `None` once a finite source is exhausted (CIFAR without `repeat`, `limit`
    /// reached, a folder without `follow` after its files). Waits as needed to respect
    /// `max_fps`. Cancel-safe: if the future is dropped before it completes, no frame is lost
    /// (a live source may of course replace the waiting frame with a newer one).
    pub async fn recv(&mut self) -> Option<Frame> {
        if self.limit.is_some_and(|l| self.delivered >= l) {
            self.finish();
            return None;
        }
        if let Some(due) = self.next_due {
            tokio::time::sleep_until(due).await;
        }
        let got = match &mut self.inner {
            Inner::Cifar(c) => c.next(&self.counters),
            Inner::Queue(rx) => rx.recv().await,
            Inner::Live(dec) => dec.next(&self.counters).await,
            Inner::Done => None,
        };
        // Nothing below awaits: the frame is delivered or not at all.
        let Some(c) = got else {
            self.finish();
            return None;
        };
        let id = self.delivered;
        self.delivered += 1;
        if let Some(iv) = self.interval {
            self.next_due = Some(tokio::time::Instant::now() + iv);
        }
        Some(Frame {
            id,
            label: c.label,
            pixels: c.pixels,
            origin: Some(c.origin),
            captured: c.captured,
            jpeg: c.jpeg,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> SourceStats {
        SourceStats {
            delivered: self.delivered,
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            decode_errors: self.counters.decode_errors.load(Ordering::Relaxed),
            restarts: self.counters.restarts.load(Ordering::Relaxed),
        }
    }

    /// Whether this is a live source (MJPEG, V4L2, folder with `follow`): it does not end by
    /// itself.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// One line for logs and STATUS, e.g. `mjpeg: ffmpeg -f lavfi …`.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    /// Stops the source now (background work ends; later `recv` calls return `None`).
    pub fn finish(&mut self) {
        self.inner = Inner::Done;
        self.background = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten() {
        let v: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(v, vec![1, 10, 100, 1000]);
        assert!(!is_power_of_ten(0));
    }
}
