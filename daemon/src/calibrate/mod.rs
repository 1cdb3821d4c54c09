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

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use jmdc_core::calibration;
use jmdc_core::calibration::{
    default_path, parse_codec_list, parse_jpeg_list, parse_keep_list, CalibrationEntry,
    CalibrationTable, CODEC_IMAGE, CODEC_NONE, DEFAULT_JPEG_QUALITIES,
};
use jmdc_core::codec::QuantMode;
use jmdc_core::package::ModelPackage;

mod grid;
mod measure;
mod table;

pub use measure::StageTimes;

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

/// Measures the top-1 accuracy of every candidate (variant, split, ρ, codec) of the package on
/// the first `limit` images of `images`, with the real codec round trip and ONNX Runtime, and
/// returns the table (it does not write it; see [`calibrate_command`]).
pub fn run_calibration(opts: &CalibrateOptions) -> Result<CalibrationTable> {
    Ok(run_calibration_timed(opts)?.0)
}

/// [`run_calibration`], also returning where the time went (head, codec, tail; summed over the
/// threads).
pub fn run_calibration_timed(opts: &CalibrateOptions) -> Result<(CalibrationTable, StageTimes)> {
    let setup = measure::prepare(opts)?;
    let (counts, times) = measure::measure(&setup, opts)?;
    Ok((table::build_table(&setup, opts, &counts)?, times))
}
