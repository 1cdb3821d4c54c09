//! Running the images: the workers' sessions, one batch through every planned head, codec round
//! trip and tail, the correct counts and where the time went.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jmdc_core::calibration::package_stamp;
use jmdc_core::cifar::{CifarFile, IMAGE_SHAPE, RECORD_BYTES};
use jmdc_core::codec::{decode, CodecParams, DecodeLimits, Encoder, QuantMode};
use jmdc_core::jpeg::{self, JpegEncoder};
use jmdc_core::package::{sha256_hex, ModelPackage};
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::runner::{LayerRunner, RunnerOptions};
use ndarray::{ArrayD, Axis, IxDyn};

use crate::pipeline::argmax;

use super::grid::{plan_variants, VariantPlan};
use super::{CalibrateOptions, DEFAULT_BATCH};

/// Correct counts: `[variant] → (unsplit, [split] → [group], [JPEG quality])`, and the JPEG
/// bytes per quality summed over images (the same for every variant).
#[derive(Debug, Clone)]
pub(super) struct Counts {
    pub(super) unsplit: Vec<u64>,
    pub(super) groups: Vec<Vec<Vec<u64>>>,
    /// Entropy-coded bytes summed over images, shaped like `groups` (0 where not measured).
    pub(super) coded_bytes: Vec<Vec<Vec<u64>>>,
    pub(super) jpeg: Vec<Vec<u64>>,
    pub(super) jpeg_bytes: Vec<u64>,
}

impl Counts {
    pub(super) fn zero(plans: &[VariantPlan], jpeg_qualities: usize) -> Counts {
        Counts {
            jpeg: vec![vec![0; jpeg_qualities]; plans.len()],
            jpeg_bytes: vec![0; jpeg_qualities],
            unsplit: vec![0; plans.len()],
            groups: plans
                .iter()
                .map(|v| v.splits.iter().map(|s| vec![0; s.groups.len()]).collect())
                .collect(),
            coded_bytes: plans
                .iter()
                .map(|v| v.splits.iter().map(|s| vec![0; s.groups.len()]).collect())
                .collect(),
        }
    }

    pub(super) fn add(&mut self, other: &Counts) {
        for (a, b) in self.unsplit.iter_mut().zip(&other.unsplit) {
            *a += b;
        }
        for (va, vb) in self.jpeg.iter_mut().zip(&other.jpeg) {
            for (a, b) in va.iter_mut().zip(vb) {
                *a += b;
            }
        }
        for (a, b) in self.jpeg_bytes.iter_mut().zip(&other.jpeg_bytes) {
            *a += b;
        }
        for (mine, theirs) in [
            (&mut self.groups, &other.groups),
            (&mut self.coded_bytes, &other.coded_bytes),
        ] {
            for (va, vb) in mine.iter_mut().zip(theirs) {
                for (sa, sb) in va.iter_mut().zip(vb) {
                    for (a, b) in sa.iter_mut().zip(sb) {
                        *a += b;
                    }
                }
            }
        }
    }
}

/// One batch of images.
pub(super) struct Batch<'a> {
    pub(super) pixels: &'a [&'a [u8]],
    pub(super) labels: &'a [u8],
    /// How many of the first images also get their entropy-coded bytes measured.
    pub(super) coded_images: usize,
}

/// One worker's sessions: a full-range runner per variant.
pub(super) struct Worker {
    pub(super) runners: Vec<LayerRunner>,
    pub(super) encoder: Encoder,
    pub(super) jpeg: JpegEncoder,
    pub(super) bytes: Vec<u8>,
    pub(super) coded_bytes: Vec<u8>,
    pub(super) times: StageTimes,
}

/// Where a calibration spent its time, summed over worker threads (thread-seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Preprocessing and head layers (once per batch and variant).
    pub head: Duration,
    /// Codec encode + decode round trips (feature codec and JPEG).
    pub codec: Duration,
    /// Tail layers on decoded tensors (and whole-model runs on decoded JPEGs).
    pub tail: Duration,
}

impl StageTimes {
    pub(super) fn add(&mut self, o: &StageTimes) {
        self.head += o.head;
        self.codec += o.codec;
        self.tail += o.tail;
    }
}

impl Worker {
    pub(super) fn new(pkg: &ModelPackage, plans: &[VariantPlan]) -> Result<Worker> {
        let options = RunnerOptions {
            intra_op_threads: Some(1),
            ..RunnerOptions::default()
        };
        let runners = plans
            .iter()
            .map(|v| LayerRunner::new(pkg, &v.name, 0..v.layers, &options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Worker {
            runners,
            encoder: Encoder::new(),
            jpeg: JpegEncoder::new(),
            bytes: Vec::new(),
            coded_bytes: Vec::new(),
            times: StageTimes::default(),
        })
    }

    /// Adds the correct counts of one batch to `counts`.
    pub(super) fn batch(
        &mut self,
        pkg: &ModelPackage,
        plans: &[VariantPlan],
        jpeg_qualities: &[u8],
        images: &Batch<'_>,
        counts: &mut Counts,
    ) -> Result<()> {
        let Batch {
            pixels,
            labels,
            coded_images,
        } = *images;
        let t_head = Instant::now();
        let input = normalize_batch_chw_u8(pixels, IMAGE_SHAPE, pkg.normalization())?.into_dyn();
        let n = labels.len();
        let limits = DecodeLimits::default();
        self.times.head += t_head.elapsed();
        // Cloud-only JPEG: the edge's encoder, the worker's decoder, then normalisation — once
        // per quality, shared by every variant.
        let t_jpeg = Instant::now();
        let mut jpeg_inputs = Vec::with_capacity(jpeg_qualities.len());
        for (qi, &q) in jpeg_qualities.iter().enumerate() {
            let mut decoded = Vec::with_capacity(pixels.len());
            for px in pixels {
                self.jpeg
                    .encode_into(px, IMAGE_SHAPE, q, &mut self.bytes)
                    .with_context(|| format!("JPEG-encoding at quality {q}"))?;
                counts.jpeg_bytes[qi] += self.bytes.len() as u64;
                decoded.push(
                    jpeg::decode_chw(&self.bytes, IMAGE_SHAPE)
                        .with_context(|| format!("decoding a quality-{q} JPEG"))?,
                );
            }
            let refs: Vec<&[u8]> = decoded.iter().map(Vec::as_slice).collect();
            jpeg_inputs
                .push(normalize_batch_chw_u8(&refs, IMAGE_SHAPE, pkg.normalization())?.into_dyn());
        }
        self.times.codec += t_jpeg.elapsed();
        for (vi, plan) in plans.iter().enumerate() {
            let t_head = Instant::now();
            let runner = &mut self.runners[vi];
            // Head once, layer by layer: boundary[s] is the tensor crossing split s.
            let mut boundary: Vec<ArrayD<f32>> = Vec::with_capacity(plan.layers + 1);
            boundary.push(input.clone());
            for i in 0..plan.layers {
                let next = runner.run_range(i..i + 1, boundary[i].view())?;
                boundary.push(next);
            }
            counts.unsplit[vi] += count_correct(&boundary[plan.layers], labels)?;
            self.times.head += t_head.elapsed();
            let t_tail = Instant::now();
            for (qi, x) in jpeg_inputs.iter().enumerate() {
                let logits = runner.run_range(0..plan.layers, x.view())?;
                counts.jpeg[vi][qi] += count_correct(&logits, labels)?;
            }
            self.times.tail += t_tail.elapsed();
            for (si, sp) in plan.splits.iter().enumerate() {
                let x = boundary[sp.split].as_standard_layout();
                let per_image: usize = sp.shape.iter().product();
                let mut batch_shape = vec![n];
                batch_shape.extend_from_slice(&sp.shape);
                for (gi, g) in sp.groups.iter().enumerate() {
                    let t_codec = Instant::now();
                    let mut decoded = Vec::with_capacity(n * per_image);
                    for (index, img) in x.axis_iter(Axis(0)).enumerate() {
                        let data = img
                            .as_slice()
                            .ok_or_else(|| anyhow!("split tensor is not contiguous"))?;
                        self.encoder
                            .encode_into(data, &sp.shape, &g.params, &mut self.bytes)
                            .with_context(|| {
                                format!("encoding {} split {}", plan.name, sp.split)
                            })?;
                        let d = decode(&self.bytes, &limits).with_context(|| {
                            format!("decoding {} split {}", plan.name, sp.split)
                        })?;
                        if d.shape != sp.shape {
                            bail!("decoded shape {:?} != {:?}", d.shape, sp.shape);
                        }
                        if g.coded && index < coded_images {
                            let coded = CodecParams {
                                mode: QuantMode::Coded(g.params.mode.bits_per_value() as u8),
                                ..g.params
                            };
                            self.encoder
                                .encode_into(data, &sp.shape, &coded, &mut self.coded_bytes)
                                .with_context(|| {
                                    format!("entropy-coding {} split {}", plan.name, sp.split)
                                })?;
                            counts.coded_bytes[vi][si][gi] += self.coded_bytes.len() as u64;
                            let c = decode(&self.coded_bytes, &limits).with_context(|| {
                                format!("decoding {} split {} (entropy-coded)", plan.name, sp.split)
                            })?;
                            let same = c.data.len() == d.data.len()
                                && c.data
                                    .iter()
                                    .zip(&d.data)
                                    .all(|(a, b)| a.to_bits() == b.to_bits());
                            if !same {
                                bail!(
                                    "{} split {}: the entropy-coded form decoded to another tensor",
                                    plan.name,
                                    sp.split
                                );
                            }
                        }
                        decoded.extend_from_slice(&d.data);
                    }
                    let t = ArrayD::from_shape_vec(IxDyn(&batch_shape), decoded)?;
                    let t_tail = Instant::now();
                    self.times.codec += t_tail - t_codec;
                    let logits = runner.run_range(sp.split..plan.layers, t.view())?;
                    counts.groups[vi][si][gi] += count_correct(&logits, labels)?;
                    self.times.tail += t_tail.elapsed();
                }
            }
        }
        Ok(())
    }
}

pub(super) fn count_correct(logits: &ArrayD<f32>, labels: &[u8]) -> Result<u64> {
    if logits.ndim() != 2 || logits.shape()[0] != labels.len() {
        bail!(
            "logits of shape {:?} for {} labels",
            logits.shape(),
            labels.len()
        );
    }
    let mut correct = 0;
    for (row, &label) in logits.axis_iter(Axis(0)).zip(labels) {
        let scores: Vec<f32> = row.iter().copied().collect();
        if argmax(&scores).0 == usize::from(label) {
            correct += 1;
        }
    }
    Ok(correct)
}

/// What a calibration run works on, checked before any image is run.
pub(super) struct Setup {
    pub(super) pkg: ModelPackage,
    pub(super) cifar: CifarFile,
    /// Images used (the first `n` of the file).
    pub(super) n: usize,
    pub(super) plans: Vec<VariantPlan>,
    pub(super) batch: usize,
    pub(super) threads: usize,
    pub(super) stamp: String,
    pub(super) images_sha: String,
    pub(super) onnxruntime: PathBuf,
}

/// Loads ONNX Runtime, the package and the images, and plans the grid.
pub(super) fn prepare(opts: &CalibrateOptions) -> Result<Setup> {
    let onnxruntime = jmdc_core::runtime::init_onnxruntime(opts.onnxruntime.as_deref())?;
    let pkg = ModelPackage::load(&opts.package)
        .with_context(|| format!("loading package {}", opts.package.display()))?;
    if pkg.input_shape() != IMAGE_SHAPE {
        bail!(
            "package {} takes input {:?}, CIFAR images are {:?}",
            pkg.name(),
            pkg.input_shape(),
            IMAGE_SHAPE
        );
    }
    let stamp = package_stamp(&pkg)?;
    let cifar = CifarFile::open(&opts.images)?;
    let n = opts.limit.unwrap_or(usize::MAX).min(cifar.len());
    if n == 0 {
        bail!("no images to calibrate on (-n 0)");
    }
    let images_sha = images_sha256(&opts.images, n)?;
    let plans = plan_variants(&pkg, opts)?;
    let batch = if opts.batch_size == 0 {
        DEFAULT_BATCH
    } else {
        opts.batch_size
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |p| p.get())
    } else {
        opts.threads
    }
    .clamp(1, n.div_ceil(batch));
    Ok(Setup {
        pkg,
        cifar,
        n,
        plans,
        batch,
        threads,
        stamp,
        images_sha,
        onnxruntime: onnxruntime.to_path_buf(),
    })
}

/// Runs every image through every planned head, codec and tail on `threads` threads (batches
/// handed out in order) and returns the summed counts and stage times; the first error stops all
/// threads.
pub(super) fn measure(setup: &Setup, opts: &CalibrateOptions) -> Result<(Counts, StageTimes)> {
    let Setup {
        pkg,
        cifar,
        n,
        plans,
        batch,
        threads,
        ..
    } = setup;
    let (n, batch, threads) = (*n, *batch, *threads);
    let batches = n.div_ceil(batch);
    let tail_runs: usize = plans
        .iter()
        .map(|v| v.splits.iter().map(|s| s.groups.len()).sum::<usize>())
        .sum();
    let entries_split: usize = plans
        .iter()
        .map(|v| v.splits.iter().map(|s| s.candidates.len()).sum::<usize>())
        .sum();
    tracing::info!(
        package = pkg.name(),
        images = n,
        threads,
        batch,
        candidates = entries_split + (2 + opts.jpeg_qualities.len()) * plans.len(),
        distinct_tails = tail_runs,
        onnxruntime = %setup.onnxruntime.display(),
        "calibrating"
    );

    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "calibrating {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(pkg.name().to_string());
    bar.enable_steady_tick(Duration::from_millis(500));

    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let nq = opts.jpeg_qualities.len();
    let total = Mutex::new((Counts::zero(plans, nq), StageTimes::default()));
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let result = (|| -> Result<()> {
                    let mut worker = Worker::new(pkg, plans)?;
                    let mut counts = Counts::zero(plans, nq);
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= batches {
                            break;
                        }
                        let range = b * batch..((b + 1) * batch).min(n);
                        let mut pixels = Vec::with_capacity(range.len());
                        let mut labels = Vec::with_capacity(range.len());
                        for i in range.clone() {
                            let (label, px) = cifar
                                .get(i)
                                .ok_or_else(|| anyhow!("image {i} out of range"))?;
                            pixels.push(&px[..]);
                            labels.push(label);
                        }
                        // Images of this batch among the first `coded_images`.
                        let coded = opts
                            .coded_images
                            .saturating_sub(range.start)
                            .min(range.len());
                        worker.batch(
                            pkg,
                            plans,
                            &opts.jpeg_qualities,
                            &Batch {
                                pixels: &pixels,
                                labels: &labels,
                                coded_images: coded,
                            },
                            &mut counts,
                        )?;
                        bar.inc(range.len() as u64);
                    }
                    let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                    t.0.add(&counts);
                    t.1.add(&worker.times);
                    Ok(())
                })();
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(e);
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let (counts, times) = total.into_inner().unwrap_or_else(|p| p.into_inner());
    tracing::info!(
        head_s = times.head.as_secs_f64(),
        codec_s = times.codec.as_secs_f64(),
        tail_s = times.tail.as_secs_f64(),
        "calibration time by stage (summed over threads)"
    );
    Ok((counts, times))
}

fn images_sha256(path: &Path, n: usize) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let used = bytes
        .get(..n * RECORD_BYTES)
        .ok_or_else(|| anyhow!("{} is shorter than {n} images", path.display()))?;
    Ok(sha256_hex(used))
}
