//! `jmdc-edge calibrate`: measures the top-1 accuracy of every plan of a model package and writes
//! a [`CalibrationTable`] (format in `docs/calibration.md`).
//!
//! Every split candidate goes through exactly what the cloud would see: the edge's head output is
//! encoded with the real codec ([`jmdc_core::codec::Encoder`]), decoded ([`decode`]) and the tail
//! is run on the decoded tensor with ONNX Runtime ([`LayerRunner::run_range`]).
//!
//! Work is organised for speed:
//! * images are processed in batches; per batch and variant the head is run once, layer by layer,
//!   which yields the tensor at every split point (and the unsplit logits at the end);
//! * per split, the codec round trip is done per image and the tail runs once per batch and
//!   distinct decoded tensor;
//! * candidates whose decoded tensors are identical share one tail run: the decoded tensor
//!   depends only on the quantization mode and the number of kept positions
//!   (`kept_positions(H, W, ρ)` for `[C, H, W]` tensors, everything for other ranks), so e.g. all
//!   ρ of a rank-1 split share one run per mode;
//! * batches are spread over `threads` workers, each with its own single-threaded sessions.
//!
//! Cloud-only JPEG entries (`jpegQ`, default q ∈ {90, 75, 50}) go through the real JPEG path: each
//! image is encoded with the edge's encoder ([`jmdc_core::jpeg::JpegEncoder`], as
//! `pipeline::build_request` does), decoded with the worker's decoder ([`jmdc_core::jpeg::decode_chw`],
//! as the cloud's `decode_payload` does), normalised and run through the whole model; the entry's
//! `bytes` is the mean JPEG size. The encoding does not depend on the variant, so it is done once
//! per batch and quality. `--only-jpeg` measures just these entries and merges them into an existing
//! table ([`CalibrationTable::merge_jpeg`]) instead of re-running the whole grid.
//!
//! Correct counts are sums over images, so the table does not depend on the number of threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jmdc_core::calibration;
use jmdc_core::calibration::{
    codec_name, default_path, package_stamp, parse_codec_list, parse_jpeg_list, parse_keep_list,
    plan_bytes, top1_and_ci95, utc_now_rfc3339, CalibrationEntry, CalibrationTable, DatasetInfo,
    CALIBRATION_FORMAT, CODEC_IMAGE, CODEC_NONE, DEFAULT_JPEG_QUALITIES,
};
use jmdc_core::cifar::{CifarFile, IMAGE_SHAPE, RECORD_BYTES};
use jmdc_core::codec::{decode, kept_positions, CodecParams, DecodeLimits, Encoder, QuantMode};
use jmdc_core::jpeg::{self, JpegEncoder};
use jmdc_core::package::{sha256_hex, ModelPackage};
use jmdc_core::preprocess::normalize_batch_chw_u8;
use jmdc_core::runner::{LayerRunner, RunnerOptions};
use ndarray::{ArrayD, Axis, IxDyn};

use crate::pipeline::argmax;

/// Default ρ grid.
pub const DEFAULT_KEEP_RATIOS: [f32; 4] = [1.0, 0.75, 0.5, 0.25];
/// Default codec grid.
pub const DEFAULT_CODECS: &str =
    "f32,f16,int8,int6,int5,int4,int3,int2,int8ac,int6ac,int5ac,int4ac,int3ac,int2ac";
/// Default number of images the entropy-coded codecs' mean bytes are measured on.
pub const DEFAULT_CODED_IMAGES: usize = 1000;
/// Default images per batch.
pub const DEFAULT_BATCH: usize = 100;

/// What to calibrate and how.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Package folder (holding `manifest.json`).
    pub package: PathBuf,
    /// CIFAR-10 binary file (e.g. `test_batch.bin`).
    pub images: PathBuf,
    /// Use only the first N images (`None`: all of the file).
    pub limit: Option<usize>,
    /// ρ grid.
    pub keep_ratios: Vec<f32>,
    /// Quantization grid.
    pub modes: Vec<QuantMode>,
    /// Variants to measure (empty: all of the package).
    pub variants: Vec<String>,
    /// Inner splits to measure (empty: all, `1..L`). Cloud-only and edge-only are always measured.
    pub splits: Vec<usize>,
    /// Qualities of the cloud-only JPEG entries (empty: none).
    pub jpeg_qualities: Vec<u8>,
    /// The entropy-coded codecs' mean bytes are measured on the first this many images (their
    /// accuracy is their fixed-width twin's, over all of them): the range coder is the slow part
    /// of a calibration, and a mean over 1,000 frames is within a fraction of a percent.
    pub coded_images: usize,
    /// Measure only cloud-only (raw and JPEG) and edge-only, no inner split (for
    /// [`CalibrationTable::merge_jpeg`] into an existing table).
    pub only_jpeg: bool,
    /// Worker threads (0: one per available core).
    pub threads: usize,
    /// Images per batch (0: [`DEFAULT_BATCH`]).
    pub batch_size: usize,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Drop dominated entries ([`CalibrationTable::pareto_prune`]) before returning.
    pub pareto_prune: bool,
    /// Explicit `libonnxruntime` path (else the usual search, see `jmdc_core::runtime`).
    pub onnxruntime: Option<PathBuf>,
    /// Dataset description written to the table.
    pub dataset_description: String,
}

impl CalibrateOptions {
    /// The full default grid for `package` on `images`.
    pub fn new(package: impl Into<PathBuf>, images: impl Into<PathBuf>) -> Self {
        CalibrateOptions {
            package: package.into(),
            images: images.into(),
            limit: None,
            keep_ratios: DEFAULT_KEEP_RATIOS.to_vec(),
            modes: parse_codec_list(DEFAULT_CODECS).unwrap_or_default(),
            variants: Vec::new(),
            splits: Vec::new(),
            jpeg_qualities: DEFAULT_JPEG_QUALITIES.to_vec(),
            coded_images: DEFAULT_CODED_IMAGES,
            only_jpeg: false,
            threads: 0,
            batch_size: DEFAULT_BATCH,
            progress: true,
            pareto_prune: false,
            onnxruntime: None,
            dataset_description: "CIFAR-10 (JPEG copy)".to_string(),
        }
    }
}

/// Command-line arguments of `jmdc-edge calibrate` (embed with `Calibrate(CalibrateArgs)` in the
/// subcommand enum and call [`calibrate_command`]).
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Model package folder (holding manifest.json).
    #[arg(long)]
    pub package: PathBuf,
    /// CIFAR-10 binary file, e.g. ../shared/datasets/cifar-10/cifar-10-batches-bin/test_batch.bin
    /// (models/samples/cifar10-test-256.bin for a quick run).
    #[arg(long)]
    pub images: PathBuf,
    /// Use only the first N images (default: the whole file).
    #[arg(short = 'n', long = "limit", value_name = "N")]
    pub limit: Option<usize>,
    /// Keep ratios ρ, comma-separated.
    #[arg(long, default_value = "1,0.75,0.5,0.25")]
    pub keep: String,
    /// Codecs, comma-separated: f32, f16, int2…int8 (int7 is not supported by the codec), and
    /// int2ac…int8ac: the same codes entropy-coded (same accuracy, mean bytes measured).
    #[arg(long, default_value = DEFAULT_CODECS)]
    pub codecs: String,
    /// Only these variants, comma-separated (default: all).
    #[arg(long)]
    pub variants: Option<String>,
    /// Only these inner splits, comma-separated (default: all).
    #[arg(long)]
    pub splits: Option<String>,
    /// Measure the entropy-coded codecs' mean bytes on the first N images only (their accuracy is
    /// their fixed-width twin's, on all images).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CODED_IMAGES)]
    pub coded_images: usize,
    /// Cloud-only JPEG qualities (1–100), comma-separated; "none" for no JPEG entries.
    #[arg(long, default_value = "90,75,50")]
    pub jpeg: String,
    /// Measure only the cloud-only JPEG entries and merge them into the existing table (--out or
    /// <package>/calibration.json), which must be for the same package and the same images.
    #[arg(long)]
    pub only_jpeg: bool,
    /// Output file (default: <package>/calibration.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Images per batch.
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch: usize,
    /// Drop entries dominated in bytes and accuracy within their (variant, split).
    #[arg(long)]
    pub pareto_prune: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Path of libonnxruntime (default: ORT_DYLIB_PATH, next to the binary, /usr/lib/jmdc, .cache).
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
}

impl CalibrateArgs {
    /// The options these arguments describe.
    pub fn to_options(&self) -> Result<CalibrateOptions> {
        let mut o = CalibrateOptions::new(&self.package, &self.images);
        o.limit = self.limit;
        o.keep_ratios = parse_keep_list(&self.keep).map_err(|e| anyhow!("--keep: {e}"))?;
        o.modes = parse_codec_list(&self.codecs).map_err(|e| anyhow!("--codecs: {e}"))?;
        if let Some(v) = &self.variants {
            o.variants = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(s) = &self.splits {
            o.splits = s
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| anyhow!("--splits: {s:?} is not a number"))
                })
                .collect::<Result<_>>()?;
        }
        o.jpeg_qualities = parse_jpeg_list(&self.jpeg).map_err(|e| anyhow!("--jpeg: {e}"))?;
        o.only_jpeg = self.only_jpeg;
        if self.coded_images == 0 {
            bail!("--coded-images must be at least 1");
        }
        o.coded_images = self.coded_images;
        if o.only_jpeg && o.jpeg_qualities.is_empty() {
            bail!("--only-jpeg needs at least one --jpeg quality");
        }
        if o.only_jpeg && (self.splits.is_some() || self.pareto_prune) {
            bail!("--only-jpeg measures no inner split: --splits and --pareto-prune do not apply");
        }
        o.threads = self.threads;
        o.batch_size = self.batch;
        o.pareto_prune = self.pareto_prune;
        o.progress = !self.quiet;
        o.onnxruntime.clone_from(&self.onnxruntime);
        Ok(o)
    }
}

/// Runs `jmdc-edge calibrate`: measures, writes the table (to `--out` or beside the package) and
/// prints a summary to stderr. Returns the path written.
pub fn calibrate_command(args: &CalibrateArgs) -> Result<PathBuf> {
    let opts = args.to_options()?;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            let pkg = ModelPackage::load(&opts.package)
                .with_context(|| format!("loading package {}", opts.package.display()))?;
            default_path(&pkg)
        }
    };
    // With --only-jpeg the existing table is read (and checked) before the measurement starts.
    let existing = if opts.only_jpeg {
        let pkg = ModelPackage::load(&opts.package)
            .with_context(|| format!("loading package {}", opts.package.display()))?;
        Some(
            calibration::load_for(&out, &pkg)
                .with_context(|| format!("--only-jpeg merges into {}", out.display()))?,
        )
    } else {
        None
    };
    let t0 = Instant::now();
    let measured = run_calibration(&opts)?;
    let elapsed = t0.elapsed();
    let table = match existing {
        Some(mut table) => {
            let report = table
                .merge_jpeg(&measured)
                .map_err(|e| anyhow!("cannot merge into {}: {e}", out.display()))?;
            for line in &report.raw_mismatches {
                eprintln!("warning: {line}");
            }
            eprintln!(
                "merged {} JPEG entries ({} replaced) into {}",
                report.inserted + report.replaced,
                report.replaced,
                out.display()
            );
            table
        }
        None => measured,
    };
    calibration::save(&table, &out).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("{}", summary(&table));
    eprintln!(
        "{} entries on {} images in {:.1} s → {}",
        table.entries.len(),
        table.dataset.images,
        elapsed.as_secs_f64(),
        out.display()
    );
    Ok(out)
}

/// A short human-readable summary: per variant the unsplit accuracy and the best/worst split
/// entry.
pub fn summary(table: &CalibrationTable) -> String {
    let mut out = format!(
        "{} on {} images of {} (top-1 ± 95 % half-width)",
        table.package, table.dataset.images, table.dataset.description
    );
    let mut seen: Vec<&str> = Vec::new();
    for e in &table.entries {
        if !seen.contains(&e.variant.as_str()) {
            seen.push(&e.variant);
        }
    }
    for v in seen {
        let of_v: Vec<&CalibrationEntry> =
            table.entries.iter().filter(|e| e.variant == v).collect();
        let unsplit = of_v
            .iter()
            .find(|e| e.codec == CODEC_IMAGE || e.codec == CODEC_NONE);
        let inner = of_v.iter().filter(|e| {
            e.codec != CODEC_IMAGE && e.codec != CODEC_NONE && e.jpeg_quality().is_none()
        });
        let worst = inner.clone().min_by_key(|e| e.correct);
        let best = inner.max_by_key(|e| e.correct);
        out.push_str(&format!("\n  {v}:"));
        if let Some(u) = unsplit {
            out.push_str(&format!(
                " unsplit {:.2} % ± {:.2}",
                u.top1 * 100.0,
                u.ci95 * 100.0
            ));
        }
        for e in of_v.iter().filter(|e| e.jpeg_quality().is_some()) {
            out.push_str(&format!(
                "; {} {:.2} % ({} B)",
                e.codec,
                e.top1 * 100.0,
                e.bytes
            ));
        }
        if let (Some(b), Some(w)) = (best, worst) {
            out.push_str(&format!(
                "; splits {:.2} % (split {} ρ={} {}) … {:.2} % (split {} ρ={} {})",
                w.top1 * 100.0,
                w.split,
                w.keep_ratio,
                w.codec,
                b.top1 * 100.0,
                b.split,
                b.keep_ratio,
                b.codec
            ));
        }
    }
    out
}

/// One distinct decoded tensor at a split: all candidates with this (fixed-width mode, kept
/// count) share it — an entropy-coded mode decodes to exactly what its fixed-width form does.
#[derive(Debug, Clone)]
struct Group {
    /// Parameters used for the round trip (the first ρ of the grid that maps here; fixed-width).
    params: CodecParams,
    /// Whether the entropy-coded form is measured too (its bytes, and that it decodes to the
    /// same tensor).
    coded: bool,
}

/// The work for one variant: which splits, their shapes, groups and candidates.
#[derive(Debug, Clone)]
struct VariantPlan {
    name: String,
    layers: usize,
    splits: Vec<SplitPlan>,
}

#[derive(Debug, Clone)]
struct SplitPlan {
    split: usize,
    shape: Vec<usize>,
    groups: Vec<Group>,
    /// (ρ, mode, group index) in table order (mode-major, then ρ).
    candidates: Vec<(f32, QuantMode, usize)>,
}

/// Correct counts: `[variant] → (unsplit, [split] → [group], [JPEG quality])`, and the JPEG
/// bytes per quality summed over images (the same for every variant).
#[derive(Debug, Clone)]
struct Counts {
    unsplit: Vec<u64>,
    groups: Vec<Vec<Vec<u64>>>,
    /// Entropy-coded bytes summed over images, shaped like `groups` (0 where not measured).
    coded_bytes: Vec<Vec<Vec<u64>>>,
    jpeg: Vec<Vec<u64>>,
    jpeg_bytes: Vec<u64>,
}

impl Counts {
    fn zero(plans: &[VariantPlan], jpeg_qualities: usize) -> Counts {
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

    fn add(&mut self, other: &Counts) {
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

fn plan_variants(pkg: &ModelPackage, opts: &CalibrateOptions) -> Result<Vec<VariantPlan>> {
    if opts.keep_ratios.is_empty() || opts.modes.is_empty() {
        bail!("the ρ and codec grids must not be empty");
    }
    for &r in &opts.keep_ratios {
        CodecParams {
            keep_ratio: r,
            mode: QuantMode::F32,
        }
        .validate()
        .map_err(|e| anyhow!("keep ratio {r}: {e}"))?;
    }
    for &m in &opts.modes {
        m.validate().map_err(|e| anyhow!("codec {m}: {e}"))?;
    }
    for &q in &opts.jpeg_qualities {
        jpeg::validate_quality(q)?;
    }
    let names: Vec<String> = if opts.variants.is_empty() {
        pkg.variant_names().map(String::from).collect()
    } else {
        for v in &opts.variants {
            pkg.variant(v)?;
        }
        opts.variants.clone()
    };
    let mut plans = Vec::new();
    for name in names {
        let layers = pkg.variant(&name)?.num_layers();
        let inner: Vec<usize> = if opts.only_jpeg {
            Vec::new()
        } else if opts.splits.is_empty() {
            (1..layers).collect()
        } else {
            for &s in &opts.splits {
                if s == 0 || s >= layers {
                    bail!(
                        "split {s} is not an inner split of {name} (1..{}); cloud-only and \
                         edge-only are always measured",
                        layers - 1
                    );
                }
            }
            let mut s = opts.splits.clone();
            s.sort_unstable();
            s.dedup();
            s
        };
        let mut splits = Vec::new();
        for split in inner {
            let shape = pkg.split_tensor_shape(&name, split)?.to_vec();
            let mut groups: Vec<Group> = Vec::new();
            let mut keys: HashMap<(QuantMode, usize), usize> = HashMap::new();
            let mut candidates = Vec::new();
            for &mode in &opts.modes {
                for &keep_ratio in &opts.keep_ratios {
                    let kept = match shape.as_slice() {
                        [_, h, w] => kept_positions(*h, *w, keep_ratio),
                        _ => shape.iter().product(),
                    };
                    let fixed = mode.fixed_width();
                    let g = *keys.entry((fixed, kept)).or_insert_with(|| {
                        groups.push(Group {
                            params: CodecParams {
                                keep_ratio,
                                mode: fixed,
                            },
                            coded: false,
                        });
                        groups.len() - 1
                    });
                    if mode.is_coded() {
                        if let Some(group) = groups.get_mut(g) {
                            group.coded = true;
                        }
                    }
                    candidates.push((keep_ratio, mode, g));
                }
            }
            splits.push(SplitPlan {
                split,
                shape,
                groups,
                candidates,
            });
        }
        plans.push(VariantPlan {
            name,
            layers,
            splits,
        });
    }
    Ok(plans)
}

/// One batch of images.
struct Batch<'a> {
    pixels: &'a [&'a [u8]],
    labels: &'a [u8],
    /// How many of the first images also get their entropy-coded bytes measured.
    coded_images: usize,
}

/// One worker's sessions: a full-range runner per variant.
struct Worker {
    runners: Vec<LayerRunner>,
    encoder: Encoder,
    jpeg: JpegEncoder,
    bytes: Vec<u8>,
    coded_bytes: Vec<u8>,
    times: StageTimes,
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
    fn add(&mut self, o: &StageTimes) {
        self.head += o.head;
        self.codec += o.codec;
        self.tail += o.tail;
    }
}

impl Worker {
    fn new(pkg: &ModelPackage, plans: &[VariantPlan]) -> Result<Worker> {
        let options = RunnerOptions {
            intra_op_threads: Some(1),
            load_from_file: false,
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
    fn batch(
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

fn count_correct(logits: &ArrayD<f32>, labels: &[u8]) -> Result<u64> {
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

/// Measures the top-1 accuracy of every candidate (variant, split, ρ, codec) of the package on
/// the first `limit` images of `images`, with the real codec round trip and ONNX Runtime, and
/// returns the table (it does not write it; see [`calibrate_command`]).
pub fn run_calibration(opts: &CalibrateOptions) -> Result<CalibrationTable> {
    Ok(run_calibration_timed(opts)?.0)
}

/// [`run_calibration`], also returning where the time went (head, codec, tail; summed over the
/// threads).
pub fn run_calibration_timed(opts: &CalibrateOptions) -> Result<(CalibrationTable, StageTimes)> {
    let setup = prepare(opts)?;
    let (counts, times) = measure(&setup, opts)?;
    Ok((build_table(&setup, opts, &counts)?, times))
}

/// What a calibration run works on, checked before any image is run.
struct Setup {
    pkg: ModelPackage,
    cifar: CifarFile,
    /// Images used (the first `n` of the file).
    n: usize,
    plans: Vec<VariantPlan>,
    batch: usize,
    threads: usize,
    stamp: String,
    images_sha: String,
    onnxruntime: PathBuf,
}

/// Loads ONNX Runtime, the package and the images, and plans the grid.
fn prepare(opts: &CalibrateOptions) -> Result<Setup> {
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
fn measure(setup: &Setup, opts: &CalibrateOptions) -> Result<(Counts, StageTimes)> {
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

/// The calibration table from the counts: per variant the cloud-only image, JPEG, every split
/// candidate and edge-only entries.
fn build_table(
    setup: &Setup,
    opts: &CalibrateOptions,
    counts: &Counts,
) -> Result<CalibrationTable> {
    let Setup {
        pkg,
        n,
        plans,
        stamp,
        images_sha,
        ..
    } = setup;
    let (pkg, n, plans) = (pkg, *n, plans.as_slice());
    let has_coded = !opts.only_jpeg && opts.modes.iter().any(|m| m.is_coded());
    let coded_n = opts.coded_images.clamp(1, n) as u64;
    let mut table = CalibrationTable {
        format: CALIBRATION_FORMAT.to_string(),
        package: pkg.name().to_string(),
        package_stamp: stamp.clone(),
        dataset: DatasetInfo {
            description: opts.dataset_description.clone(),
            file: opts.images.display().to_string(),
            sha256: images_sha.clone(),
            images: n as u64,
        },
        created: utc_now_rfc3339(),
        tool: format!("jmdc-edge {}", env!("CARGO_PKG_VERSION")),
        runtime: format!("onnxruntime {}", jmdc_core::runtime::ORT_VERSION),
        keep_ratios: opts.keep_ratios.clone(),
        codecs: if opts.only_jpeg {
            Vec::new()
        } else {
            opts.modes.iter().map(|&m| codec_name(m)).collect()
        }
        .into_iter()
        .chain(opts.jpeg_qualities.iter().map(|&q| jpeg::codec_name(q)))
        .collect(),
        pareto_pruned: false,
        coded_bytes_images: has_coded.then_some(coded_n),
        entries: Vec::new(),
    };
    let n64 = n as u64;
    let entry = |variant: &str, split, keep_ratio, codec: String, bytes, correct| {
        let (top1, ci95) = top1_and_ci95(correct, n64);
        CalibrationEntry {
            variant: variant.to_string(),
            split,
            keep_ratio,
            codec,
            bytes,
            correct,
            top1,
            ci95,
        }
    };
    for (vi, plan) in plans.iter().enumerate() {
        let unsplit = counts.unsplit[vi];
        let image_bytes =
            plan_bytes(pkg.manifest(), &plan.name, 0, None).map_err(|e| anyhow!(e))?;
        // Cloud-only: the cloud normalises the 8-bit image exactly as the edge does here.
        table.entries.push(entry(
            &plan.name,
            0,
            1.0,
            CODEC_IMAGE.to_string(),
            image_bytes,
            unsplit,
        ));
        for (qi, &q) in opts.jpeg_qualities.iter().enumerate() {
            // Mean JPEG size over the N images, to the nearest byte.
            let mean = (counts.jpeg_bytes[qi] + n64 / 2) / n64;
            table.entries.push(entry(
                &plan.name,
                0,
                1.0,
                jpeg::codec_name(q),
                usize::try_from(mean).unwrap_or(usize::MAX),
                counts.jpeg[vi][qi],
            ));
        }
        for (si, sp) in plan.splits.iter().enumerate() {
            for &(keep_ratio, mode, g) in &sp.candidates {
                let params = CodecParams { keep_ratio, mode };
                let bytes = if mode.is_coded() {
                    // Mean over the N images, to the nearest byte.
                    let total = counts.coded_bytes[vi][si][g];
                    usize::try_from((total + coded_n / 2) / coded_n).unwrap_or(usize::MAX)
                } else {
                    plan_bytes(pkg.manifest(), &plan.name, sp.split, Some(&params))
                        .map_err(|e| anyhow!(e))?
                };
                table.entries.push(entry(
                    &plan.name,
                    sp.split,
                    keep_ratio,
                    codec_name(mode),
                    bytes,
                    counts.groups[vi][si][g],
                ));
            }
        }
        table.entries.push(entry(
            &plan.name,
            plan.layers,
            1.0,
            CODEC_NONE.to_string(),
            0,
            unsplit,
        ));
    }
    if opts.pareto_prune {
        table.pareto_prune();
    }
    table.validate(Path::new("<calibration>"))?;
    Ok(table)
}

fn images_sha256(path: &Path, n: usize) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let used = bytes
        .get(..n * RECORD_BYTES)
        .ok_or_else(|| anyhow!("{} is shorter than {n} images", path.display()))?;
    Ok(sha256_hex(used))
}
