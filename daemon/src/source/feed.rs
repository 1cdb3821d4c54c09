//! [`FrameFeed`]: what the pipeline receives frames from, whatever the source.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::capture::{Background, Captured, Counters, Started};
use super::cifar::CifarCursor;
use super::decoder::LiveDecoder;
use crate::frame::Frame;

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
    pub(crate) fn new(started: Started<Inner>, section: &super::SourceSection) -> Self {
        Self {
            inner: started.producer,
            counters: started.counters,
            delivered: 0,
            limit: section.limit.map(|l| l as u64),
            interval: section
                .max_fps
                .map(|fps| Duration::from_secs_f64(1.0 / fps)),
            next_due: None,
            live: section.is_live(),
            description: started.description,
            background: Some(started.background),
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
