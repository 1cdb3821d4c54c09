//! V4L2 capture (`/dev/videoN`), MJPEG or YUYV, mmap streaming in a std thread; the device is
//! re-opened with backoff when it fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::io::traits::CaptureStream;
use v4l::prelude::*;
use v4l::video::Capture as _;
use v4l::{Format, FourCC};

use super::capture::{Background, Counters, Started};
use super::decoder::{LiveDecoder, RawFrame, RawImage};
use super::imaging::TargetSize;
use super::slot::LatestSlot;
use super::{CaptureFormat, SourceError, SourceSection};
use crate::backoff::{Backoff, BackoffBounds};

const MJPG: [u8; 4] = *b"MJPG";
const YUYV: [u8; 4] = *b"YUYV";
/// No frame for this long counts as a device failure (and lets the thread see the stop flag).
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// What was negotiated with the device.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    fourcc: [u8; 4],
    width: u32,
    height: u32,
    stride: usize,
}

/// Opens the device and configures it (so a missing camera fails here), then starts capture.
pub(crate) fn start(
    section: &SourceSection,
    target: TargetSize,
) -> Result<Started<LiveDecoder>, SourceError> {
    let path = section.device_path();
    let (device, neg) = open(&path, section)?;
    let counters = Arc::new(Counters::default());
    let pending = LatestSlot::new();
    let pending_for_feed = pending.clone();
    let origin = path.display().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let capture = Capturer {
        path: path.clone(),
        section: section.clone(),
        pending,
        counters: counters.clone(),
        stop: stop.clone(),
        backoff: Backoff::default(),
        bounds: BackoffBounds::from_millis(
            section.restart_backoff_ms,
            section.max_restart_backoff_ms,
        ),
    };
    std::thread::Builder::new()
        .name("jmdc-v4l2-source".into())
        .spawn(move || capture.run(device, neg))
        .map_err(|e| SourceError::Device {
            path: path.clone(),
            message: format!("cannot start the capture thread: {e}"),
        })?;
    let description = format!(
        "v4l2: {} {} {}x{}",
        path.display(),
        String::from_utf8_lossy(&neg.fourcc),
        neg.width,
        neg.height
    );
    Ok(Started {
        producer: LiveDecoder::new(origin, pending_for_feed, target),
        counters,
        description,
        background: Background {
            tasks: Vec::new(),
            stop: Some(stop),
        },
    })
}

/// Opens `path` and sets the format the section asks for.
fn open(path: &Path, section: &SourceSection) -> Result<(Device, Negotiated), SourceError> {
    let device = Device::with_path(path).map_err(|source| SourceError::DeviceOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let dev_err = |message: String| SourceError::Device {
        path: path.to_path_buf(),
        message,
    };
    let offered: Vec<[u8; 4]> = device
        .enum_formats()
        .map_err(|e| {
            dev_err(format!(
                "cannot list capture formats ({e}) — is it a video capture device?"
            ))
        })?
        .iter()
        .map(|d| d.fourcc.repr)
        .collect();
    if offered.is_empty() {
        return Err(dev_err(
            "lists no capture formats — is it a video capture device (see `v4l2-ctl --list-devices`)?"
                .into(),
        ));
    }
    let names = || {
        offered
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wanted = match section.format {
        CaptureFormat::Mjpeg => MJPG,
        CaptureFormat::Yuyv => YUYV,
        CaptureFormat::Auto if offered.contains(&MJPG) => MJPG,
        CaptureFormat::Auto => YUYV,
    };
    if !offered.contains(&wanted) {
        return Err(dev_err(format!(
            "does not offer {} (offers: {}); set source.format",
            String::from_utf8_lossy(&wanted),
            names()
        )));
    }
    let asked = Format::new(section.width, section.height, FourCC::new(&wanted));
    let got = device.set_format(&asked).map_err(|e| {
        dev_err(format!(
            "cannot set format {}x{} {}: {e}",
            section.width,
            section.height,
            String::from_utf8_lossy(&wanted)
        ))
    })?;
    if got.fourcc.repr != wanted {
        return Err(dev_err(format!(
            "asked for {} but the driver chose {}",
            String::from_utf8_lossy(&wanted),
            got.fourcc
        )));
    }
    if got.width != section.width || got.height != section.height {
        tracing::info!(
            "{}: driver adjusted {}x{} to {}x{}",
            path.display(),
            section.width,
            section.height,
            got.width,
            got.height
        );
    }
    Ok((
        device,
        Negotiated {
            fourcc: wanted,
            width: got.width,
            height: got.height,
            stride: got.stride as usize,
        },
    ))
}

struct Capturer {
    path: PathBuf,
    section: SourceSection,
    pending: Arc<LatestSlot<RawFrame>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
    bounds: BackoffBounds,
}

impl Capturer {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self, device: Device, neg: Negotiated) {
        let mut current = Some((device, neg));
        while !self.stopped() {
            if let Some((device, neg)) = current.take() {
                let started = Instant::now();
                // v4l's stream panics in Drop when STREAMOFF fails (other than ENODEV):
                // treat that like any other device failure.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.stream(&device, neg)
                }));
                if self.stopped() {
                    return;
                }
                let why = match result {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "capture stream panicked".to_string(),
                };
                self.backoff.after_run(started.elapsed());
                tracing::warn!(
                    "{}: capture failed ({why}); re-opening",
                    self.path.display()
                );
            }
            let delay = self.backoff.next_delay(self.bounds);
            self.sleep(delay);
            if self.stopped() {
                return;
            }
            self.counters.add_restart();
            match open(&self.path, &self.section) {
                Ok(opened) => current = Some(opened),
                Err(e) => tracing::warn!("{e}; will retry"),
            }
        }
    }

    /// Captures until an error or the stop flag; `Ok` only when stopped.
    fn stream(&self, device: &Device, neg: Negotiated) -> std::io::Result<()> {
        let mut stream = MmapStream::with_buffers(device, Type::VideoCapture, 4)?;
        stream.set_timeout(FRAME_TIMEOUT);
        let origin = self.path.display().to_string();
        while !self.stopped() {
            let (buf, meta) = stream.next()?;
            let captured = Instant::now();
            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            let data = buf.get(..used).unwrap_or(buf).to_vec();
            let image = if neg.fourcc == MJPG {
                RawImage::Jpeg(data)
            } else {
                RawImage::Yuyv {
                    data,
                    width: neg.width,
                    height: neg.height,
                    stride: neg.stride,
                }
            };
            let raw = RawFrame {
                image,
                origin: origin.clone(),
                captured,
            };
            if self.pending.put(raw) {
                self.counters.add_dropped(1);
            }
        }
        Ok(())
    }

    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
    }
}
