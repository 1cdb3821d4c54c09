//! Where per-frame results go: readable lines or JSON lines, on stdout or appended to a file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use jmdc_core::package::ModelPackage;
use serde::Serialize;

use crate::config::{OutputFormat, OutputSection};
use crate::stats::FrameRecord;

/// Writes one result per frame.
#[derive(Debug)]
pub(crate) struct ResultSink {
    format: OutputFormat,
    enabled: bool,
    target: Target,
    extras: Extras,
}

/// What a result carries besides the predicted class (`[output] top_k`, `scores`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    /// The `top_k` most probable classes (0: none).
    pub top_k: usize,
    /// The probability of every class (JSON only).
    pub scores: bool,
}

/// One of the most probable classes of a frame.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Ranked<'a> {
    /// Class name from the package.
    pub class: &'a str,
    /// Logit position.
    pub class_index: usize,
    /// Softmax probability.
    pub score: f32,
}

#[derive(Debug)]
enum Target {
    Stdout,
    File(BufWriter<File>),
}

/// One JSON result line.
#[derive(Debug, Serialize)]
pub(crate) struct ResultLine<'a> {
    /// Frame id (delivery order from the source, from 0).
    pub frame: u64,
    /// When the result was written, milliseconds since the Unix epoch (wall clock).
    pub unix_ms: u64,
    /// Where the frame came from (file name, device), when the source says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'a str>,
    /// Ground truth, when the source knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
    /// Predicted class name.
    pub class: &'a str,
    /// Predicted class index.
    pub class_index: usize,
    /// Softmax probability of `class`.
    pub score: f32,
    /// The plan the frame ran under.
    pub plan: &'a str,
    /// `cloud` or `edge`.
    pub finished_on: &'static str,
    /// True when the plan wanted the cloud but the edge finished the frame.
    pub fallback: bool,
    /// Where the time went.
    pub latency_ms: Latency,
    /// The latency the adaptive loop predicted for the plan (adaptive runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_ms: Option<f64>,
    /// Bytes sent for the frame (0: nothing was sent).
    pub bytes: usize,
    /// The most probable classes, most probable first (`[output] top_k` > 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<Ranked<'a>>>,
    /// Softmax probability of every class, by class index (`[output] scores = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<&'a [f32]>,
}

/// Latency breakdown of one frame, milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    /// From capture to the start of processing.
    pub queue: f64,
    /// Head layers on the edge (and the tail when the edge finished the frame).
    pub edge: f64,
    /// Feature encoding.
    pub encode: f64,
    /// Round trip minus the worker's own time.
    pub network: f64,
    /// Decode, tail and queueing in the worker.
    pub cloud: f64,
    /// From the start of processing to the result.
    pub total: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

impl ResultSink {
    /// Opens the configured target (a file is created if missing and appended to).
    pub(crate) fn open(section: &OutputSection) -> io::Result<Self> {
        let target = match &section.file {
            Some(path) => Target::File(BufWriter::new(open_append(path)?)),
            None => Target::Stdout,
        };
        Ok(Self {
            format: section.format,
            enabled: section.per_frame,
            target,
            extras: Extras {
                top_k: section.top_k,
                scores: section.scores,
            },
        })
    }

    /// A sink that writes nothing.
    pub(crate) fn disabled() -> Self {
        Self {
            format: OutputFormat::Text,
            enabled: false,
            target: Target::Stdout,
            extras: Extras::default(),
        }
    }

    /// Writes the result of one frame.
    pub(crate) fn write(&mut self, package: &ModelPackage, record: &FrameRecord) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let line = match self.format {
            OutputFormat::Text => text_line(package, record, self.extras),
            OutputFormat::Json => json_line(package, record, self.extras)?,
        };
        match &mut self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }
            Target::File(file) => {
                writeln!(file, "{line}")?;
                file.flush()
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn class_name(package: &ModelPackage, i: usize) -> &str {
    package.classes().get(i).map_or("?", String::as_str)
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `k` most probable classes of a frame, most probable first (ties: lower index first).
pub(crate) fn top_k<'a>(
    package: &'a ModelPackage,
    probabilities: &[f32],
    k: usize,
) -> Vec<Ranked<'a>> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(k)
        .map(|i| Ranked {
            class: class_name(package, i),
            class_index: i,
            score: probabilities[i],
        })
        .collect()
}

/// The JSON line of one frame.
pub(crate) fn json_line(
    package: &ModelPackage,
    r: &FrameRecord,
    extras: Extras,
) -> io::Result<String> {
    let line = ResultLine {
        frame: r.frame_id,
        unix_ms: unix_ms_now(),
        origin: r.origin.as_deref(),
        label: r.label.map(|l| class_name(package, usize::from(l))),
        class: class_name(package, r.predicted),
        class_index: r.predicted,
        score: r.probability,
        plan: &r.plan,
        finished_on: if r.bytes > 0 && !r.fallback {
            "cloud"
        } else {
            "edge"
        },
        fallback: r.fallback,
        latency_ms: Latency {
            queue: ms(r.queue_us),
            edge: ms(r.edge_us),
            encode: ms(r.encode_us),
            network: ms(r.network_us),
            cloud: ms(r.cloud_us),
            total: ms(r.total_us),
        },
        predicted_ms: r.predicted_us.map(ms),
        bytes: r.bytes,
        top: (extras.top_k > 0).then(|| top_k(package, &r.probabilities, extras.top_k)),
        scores: extras.scores.then_some(r.probabilities.as_slice()),
    };
    serde_json::to_string(&line).map_err(io::Error::other)
}

/// The readable line of one frame (`top=cat:0.912,dog:0.051` with `top_k`; `scores` is JSON only).
pub(crate) fn text_line(package: &ModelPackage, r: &FrameRecord, extras: Extras) -> String {
    let label = r.label.map_or("-", |l| class_name(package, usize::from(l)));
    let top = if extras.top_k > 0 {
        let ranked: Vec<String> = top_k(package, &r.probabilities, extras.top_k)
            .iter()
            .map(|t| format!("{}:{:.3}", t.class, t.score))
            .collect();
        format!(" top={}", ranked.join(","))
    } else {
        String::new()
    };
    format!(
        "frame {:>5} label={:<10} pred={:<10} p={:.3} edge={:.3}ms enc={:.3}ms net={:.3}ms cloud={:.3}ms total={:.3}ms{} bytes={} plan=[{}]{}{}",
        r.frame_id,
        label,
        class_name(package, r.predicted),
        r.probability,
        ms(r.edge_us),
        ms(r.encode_us),
        ms(r.network_us),
        ms(r.cloud_us),
        ms(r.total_us),
        r.predicted_us
            .map(|p| format!(" predicted={:.3}ms", ms(p)))
            .unwrap_or_default(),
        r.bytes,
        r.plan,
        if r.fallback { " fallback=edge" } else { "" },
        top
    )
}
