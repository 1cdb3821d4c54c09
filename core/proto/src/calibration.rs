//! Accuracy calibration tables: the measured top-1 accuracy of every plan (variant, split, ρ,
//! quantization) of one model package.
//!
//! The optimizer ([`crate::optimizer`]) needs the accuracy of each candidate; `jmdc-edge
//! calibrate` measures it once per package (real codec round trip, real ONNX Runtime) and writes a
//! [`CalibrationTable`] as JSON, by default beside the package (`<package dir>/calibration.json`).
//! This module is pure data, JSON text, lookups, merging and pruning; reading and writing the file
//! and checking the table's package stamp against a package on disk is `jmdc_core::calibration`.
//! The format is described in `docs/calibration.md`.
//!
//! A table is tied to the exact package it was measured on by its **package stamp**: the
//! SHA-256 of the package's `manifest.json` bytes (which list every ONNX file's SHA-256).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::{encoded_len, CodecParams, QuantMode};
use crate::jpeg;
use crate::manifest::Manifest;
use crate::optimizer::{candidate_grid, Candidate, Profile};

/// The `format` string of tables this version writes and reads.
pub const CALIBRATION_FORMAT: &str = "jmdc-calibration/1";
/// File name of a package's default table, beside `manifest.json`.
pub const CALIBRATION_FILE: &str = "calibration.json";
/// Codec name of cloud-only entries (split 0): the 8-bit image is sent.
pub const CODEC_IMAGE: &str = "u8-image";
/// Codec name of edge-only entries (split L): nothing is sent.
pub const CODEC_NONE: &str = "none";
/// Default JPEG qualities of cloud-only JPEG entries (codec names `jpeg90`, `jpeg75`, `jpeg50`).
pub const DEFAULT_JPEG_QUALITIES: [u8; 3] = [90, 75, 50];
/// z for a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Errors loading, checking or saving a table.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON for a table.
    #[error("{}: not a calibration table: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message (with line and column).
        message: String,
    },
    /// The `format` field names another version.
    #[error("{}: unsupported calibration format {found:?} (this build reads {CALIBRATION_FORMAT:?})", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
    },
    /// The table was measured on another package (or another build of it).
    #[error(
        "{}: calibration table does not match package {package:?} ({}): table stamp {table_stamp}, \
         package stamp {package_stamp} (sha256 of manifest.json); re-run `jmdc-edge calibrate`",
        path.display(),
        manifest.display()
    )]
    StampMismatch {
        /// The table file.
        path: PathBuf,
        /// The package's name.
        package: String,
        /// The package's manifest file.
        manifest: PathBuf,
        /// Stamp recorded in the table.
        table_stamp: String,
        /// Stamp of the package as loaded.
        package_stamp: String,
    },
    /// The table is well-formed JSON but inconsistent (or inconsistent with the package).
    #[error("{}: invalid calibration table: {message}", path.display())]
    Invalid {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Which images the accuracies were measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Free text, e.g. `"CIFAR-10 (JPEG copy)"`.
    pub description: String,
    /// The image file as given to the tool (e.g. `.../cifar-10-batches-bin/test_batch.bin`).
    pub file: String,
    /// SHA-256 of the bytes of the images used (the first `images` records), lowercase hex.
    pub sha256: String,
    /// Number of images N every entry was measured on.
    pub images: u64,
}

/// One measured plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationEntry {
    /// Variant name as in the package manifest.
    pub variant: String,
    /// Split point: `0` = cloud-only, `L` = edge-only, else the edge runs layers `0..split`.
    pub split: usize,
    /// Region keep ratio ρ (`1.0` for cloud-only and edge-only entries).
    pub keep_ratio: f32,
    /// `"f32"`, `"f16"`, `"int2"` … `"int8"`, or [`CODEC_IMAGE`] / `"jpegQ"` (split 0: raw
    /// 8-bit image / JPEG at quality Q) / [`CODEC_NONE`] (split L).
    pub codec: String,
    /// Payload bytes per frame on the wire: the codec's [`encoded_len`] for inner splits, the
    /// image's pixel count for raw cloud-only, the **mean** JPEG size over the N images (rounded
    /// to the nearest byte) for JPEG cloud-only, 0 for edge-only (protocol header not included).
    pub bytes: usize,
    /// Images classified correctly (top-1).
    pub correct: u64,
    /// `correct / images`.
    pub top1: f64,
    /// Half-width of the 95 % confidence interval of `top1` (normal approximation of the
    /// binomial: `1.96·√(p(1−p)/N)`).
    pub ci95: f64,
}

impl CalibrationEntry {
    /// The JPEG quality of a cloud-only JPEG entry (codec `jpegQ`).
    pub fn jpeg_quality(&self) -> Option<u8> {
        jpeg::parse_codec_name(&self.codec)
    }

    /// The codec parameters of an inner-split entry; `None` for cloud-only / edge-only entries
    /// or an unknown codec name.
    pub fn codec_params(&self) -> Option<CodecParams> {
        parse_codec(&self.codec).ok().map(|mode| CodecParams {
            keep_ratio: self.keep_ratio,
            mode,
        })
    }
}

/// A package's calibration table (see the module doc and `docs/calibration.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationTable {
    /// Always [`CALIBRATION_FORMAT`].
    pub format: String,
    /// Package name (`manifest.json` `name`).
    pub package: String,
    /// SHA-256 (lowercase hex) of the package's `manifest.json` bytes.
    pub package_stamp: String,
    /// The images.
    pub dataset: DatasetInfo,
    /// When the table was made (UTC, RFC 3339, e.g. `2025-01-31T12:00:00Z`).
    pub created: String,
    /// Tool and version that made it, e.g. `jmdc-edge 0.1.0`.
    pub tool: String,
    /// Inference runtime, e.g. `onnxruntime 1.31.1`.
    pub runtime: String,
    /// The ρ grid measured.
    pub keep_ratios: Vec<f32>,
    /// The codec grid measured (codec names, see [`codec_name`]); also lists the cloud-only
    /// JPEG qualities measured (`jpeg90`, …), which [`modes`](Self::modes) skips.
    pub codecs: Vec<String>,
    /// Whether dominated entries were dropped ([`CalibrationTable::pareto_prune`]).
    #[serde(default)]
    pub pareto_pruned: bool,
    /// The entropy-coded (`intNac`) entries' `bytes` are the mean over the first this many of
    /// the images (their accuracy is over all of them); `None` when the table has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coded_bytes_images: Option<u64>,
    /// One entry per measured plan.
    pub entries: Vec<CalibrationEntry>,
}

/// The name a table uses for a quantization mode: `f32`, `f16`, `int2` … `int8`, `int2ac` …
/// `int8ac` (entropy-coded).
pub fn codec_name(mode: QuantMode) -> String {
    match mode {
        QuantMode::Bits(b) => format!("int{b}"),
        QuantMode::Coded(b) => format!("int{b}ac"),
        QuantMode::F16 => "f16".to_string(),
        QuantMode::F32 => "f32".to_string(),
    }
}

/// Parses a codec name: `f32`, `f16`, `intN` or `qN` (N a supported width), with the suffix `ac`
/// for the entropy-coded form (`int4ac`), case-insensitive.
pub fn parse_codec(name: &str) -> Result<QuantMode, String> {
    let lower = name.trim().to_ascii_lowercase();
    let as_q = match lower.strip_prefix("int") {
        Some(bits) => format!("q{bits}"),
        None => lower,
    };
    as_q.parse::<QuantMode>().map_err(|_| {
        format!("unknown codec {name:?} (expected f32, f16, int2…int8 or int2ac…int8ac)")
    })
}

/// Parses a comma-separated codec list (`"f32,f16,int8"`).
pub fn parse_codec_list(list: &str) -> Result<Vec<QuantMode>, String> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(parse_codec)
        .collect()
}

/// Parses a comma-separated list of JPEG qualities (`"90,75,50"`), each in `1..=100`; `""` or
/// `"none"` is the empty list.
pub fn parse_jpeg_list(list: &str) -> Result<Vec<u8>, String> {
    if list.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out: Vec<u8> = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let q = s
            .strip_prefix(jpeg::CODEC_PREFIX)
            .unwrap_or(s)
            .parse::<u8>()
            .ok()
            .filter(|q| jpeg::validate_quality(*q).is_ok())
            .ok_or_else(|| format!("JPEG quality {s:?} is not a number in 1..=100"))?;
        if !out.contains(&q) {
            out.push(q);
        }
    }
    Ok(out)
}

/// What [`CalibrationTable::merge_jpeg`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// JPEG entries added.
    pub inserted: usize,
    /// JPEG entries that replaced an entry of the same variant and quality.
    pub replaced: usize,
    /// Variants whose raw cloud-only count differs between the two tables (same package and
    /// images, so this should not happen; the merge still proceeds).
    pub raw_mismatches: Vec<String>,
}

/// Parses a comma-separated keep-ratio list (`"1,0.75,0.5"`); each must be in `(0, 1]`.
pub fn parse_keep_list(list: &str) -> Result<Vec<f32>, String> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let v: f32 = s
                .trim()
                .parse()
                .map_err(|_| format!("keep ratio {s:?} is not a number"))?;
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(format!("keep ratio {v} is not in (0, 1]"))
            }
        })
        .collect()
}

/// Top-1 accuracy and 95 % half-width of `correct` out of `n`.
pub fn top1_and_ci95(correct: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let p = correct as f64 / n as f64;
    (p, Z95 * (p * (1.0 - p) / n as f64).sqrt())
}

fn ratio_eq(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6
}

impl CalibrationTable {
    /// Parses a table from JSON text (`path` only names it in errors) and checks its format and
    /// internal consistency (not the package; `jmdc_core::calibration::load_for` checks that).
    pub fn from_json(text: &str, path: &Path) -> Result<CalibrationTable, CalibrationError> {
        // Check the format first so a future version gives a clear error, not a field error.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| CalibrationError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != CALIBRATION_FORMAT {
            return Err(CalibrationError::Format {
                path: path.to_path_buf(),
                found: format.to_string(),
            });
        }
        let mut table: CalibrationTable =
            serde_json::from_value(value).map_err(|e| CalibrationError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        table.validate(path)?;
        // `top1` and `ci95` are derived from `correct` and N: recompute them exactly (JSON
        // decimal text need not parse back to the very same f64).
        let n = table.dataset.images;
        for e in &mut table.entries {
            (e.top1, e.ci95) = top1_and_ci95(e.correct, n);
        }
        Ok(table)
    }

    /// Pretty JSON (what `jmdc_core::calibration::save` writes).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Internal consistency: format, ranges, `top1 == correct / images`, one entry per plan.
    pub fn validate(&self, path: &Path) -> Result<(), CalibrationError> {
        let invalid = |message: String| CalibrationError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if self.format != CALIBRATION_FORMAT {
            return Err(CalibrationError::Format {
                path: path.to_path_buf(),
                found: self.format.clone(),
            });
        }
        if self.package_stamp.len() != 64
            || !self
                .package_stamp
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(format!(
                "package_stamp {:?} is not a lowercase hex SHA-256",
                self.package_stamp
            )));
        }
        let n = self.dataset.images;
        if n == 0 {
            return Err(invalid("dataset.images is 0".into()));
        }
        if let Some(m) = self.coded_bytes_images {
            if m == 0 || m > n {
                return Err(invalid(format!(
                    "coded_bytes_images {m} is not in 1..={n} (dataset.images)"
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.entries {
            let what = || {
                format!(
                    "{}/split {} ρ={} {}",
                    e.variant, e.split, e.keep_ratio, e.codec
                )
            };
            if !(e.keep_ratio > 0.0 && e.keep_ratio <= 1.0) {
                return Err(invalid(format!("{}: keep_ratio not in (0, 1]", what())));
            }
            let jpeg = e.jpeg_quality().is_some();
            if e.codec != CODEC_IMAGE
                && e.codec != CODEC_NONE
                && !jpeg
                && parse_codec(&e.codec).is_err()
            {
                return Err(invalid(format!("{}: unknown codec", what())));
            }
            if (e.codec == CODEC_IMAGE || jpeg) && e.split != 0 {
                return Err(invalid(format!("{}: {} needs split 0", what(), e.codec)));
            }
            if e.split == 0 && e.codec != CODEC_IMAGE && !jpeg {
                return Err(invalid(format!(
                    "{}: split 0 needs {CODEC_IMAGE} or jpegQ",
                    what()
                )));
            }
            if jpeg && (e.bytes == 0 || u32::try_from(e.bytes).is_err()) {
                return Err(invalid(format!(
                    "{}: a JPEG entry needs its mean bytes (1 … 2³² − 1)",
                    what()
                )));
            }
            if e.correct > n {
                return Err(invalid(format!(
                    "{}: {} correct out of {n} images",
                    what(),
                    e.correct
                )));
            }
            let (p, _) = top1_and_ci95(e.correct, n);
            if !e.top1.is_finite() || (e.top1 - p).abs() > 1e-9 {
                return Err(invalid(format!(
                    "{}: top1 {} is not correct/images = {p}",
                    what(),
                    e.top1
                )));
            }
            let key = (
                e.variant.as_str(),
                e.split,
                e.keep_ratio.to_bits(),
                e.codec.as_str(),
            );
            if !seen.insert(key) {
                return Err(invalid(format!("{}: duplicate entry", what())));
            }
        }
        Ok(())
    }

    fn find(&self, pred: impl Fn(&CalibrationEntry) -> bool) -> Option<&CalibrationEntry> {
        self.entries.iter().find(|e| pred(e))
    }

    /// The entry of an inner split `variant`/`split` with `codec` (ρ matched within 1e-6).
    pub fn entry(
        &self,
        variant: &str,
        split: usize,
        codec: &CodecParams,
    ) -> Option<&CalibrationEntry> {
        let name = codec_name(codec.mode);
        self.find(|e| {
            e.variant == variant
                && e.split == split
                && e.codec == name
                && ratio_eq(e.keep_ratio, codec.keep_ratio)
        })
    }

    /// Top-1 of an inner split `variant`/`split` with `codec`, if measured.
    pub fn lookup(&self, variant: &str, split: usize, codec: &CodecParams) -> Option<f32> {
        self.entry(variant, split, codec).map(|e| e.top1 as f32)
    }

    /// Top-1 of `variant` cloud-only (split 0, 8-bit image sent), if measured.
    pub fn lookup_cloud_only(&self, variant: &str) -> Option<f32> {
        self.find(|e| e.variant == variant && e.split == 0 && e.codec == CODEC_IMAGE)
            .map(|e| e.top1 as f32)
    }

    /// The cloud-only JPEG entry of `variant` at `quality`, if measured.
    pub fn jpeg_entry(&self, variant: &str, quality: u8) -> Option<&CalibrationEntry> {
        self.find(|e| e.variant == variant && e.split == 0 && e.jpeg_quality() == Some(quality))
    }

    /// Top-1 of `variant` cloud-only with a JPEG input at `quality`, if measured.
    pub fn lookup_cloud_only_jpeg(&self, variant: &str, quality: u8) -> Option<f32> {
        self.jpeg_entry(variant, quality).map(|e| e.top1 as f32)
    }

    /// The JPEG qualities that have at least one entry, highest first.
    pub fn jpeg_qualities(&self) -> Vec<u8> {
        let mut q: Vec<u8> = self
            .entries
            .iter()
            .filter_map(CalibrationEntry::jpeg_quality)
            .collect();
        q.sort_unstable_by(|a, b| b.cmp(a));
        q.dedup();
        q
    }

    /// Top-1 of `variant` edge-only (all layers on the edge), if measured.
    pub fn lookup_edge_only(&self, variant: &str) -> Option<f32> {
        self.find(|e| e.variant == variant && e.codec == CODEC_NONE)
            .map(|e| e.top1 as f32)
    }

    /// The lookup [`candidate_grid`] wants: `codec = None` means cloud-only for `split == 0` and
    /// edge-only otherwise (the edge-only entry must have this `split`, i.e. `L`).
    pub fn accuracy(&self, variant: &str, split: usize, codec: Option<CodecParams>) -> Option<f32> {
        match codec {
            Some(c) => self.lookup(variant, split, &c),
            None if split == 0 => self.lookup_cloud_only(variant),
            None => self
                .find(|e| e.variant == variant && e.split == split && e.codec == CODEC_NONE)
                .map(|e| e.top1 as f32),
        }
    }

    /// The quantization modes of [`codecs`](Self::codecs) (unknown names skipped).
    pub fn modes(&self) -> Vec<QuantMode> {
        self.codecs
            .iter()
            .filter_map(|c| parse_codec(c).ok())
            .collect()
    }

    /// The optimizer's candidates for `profile` (variants matched by name) over this table's
    /// own ρ and codec grids; plans the table has no figure for are left out. Then, per variant,
    /// one cloud-only JPEG candidate per `jpegQ` entry, with the entry's mean bytes (a table
    /// without JPEG entries offers none).
    pub fn candidates(&self, profile: &Profile) -> Vec<Candidate> {
        let modes = self.modes();
        let mut out = candidate_grid(profile, &self.keep_ratios, &modes, |v, s, codec| {
            let name = &profile.variants.get(v)?.name;
            self.accuracy(name, s, codec)
        });
        // Entropy-coded plans carry their measured mean size.
        for c in &mut out {
            let Some(codec) = c.codec.filter(|p| p.mode.is_coded()) else {
                continue;
            };
            let bytes = profile
                .variants
                .get(c.variant)
                .and_then(|v| self.entry(&v.name, c.split, &codec))
                .and_then(|e| u32::try_from(e.bytes).ok());
            if let Some(bytes) = bytes {
                *c = c.with_mean_payload_bytes(bytes);
            }
        }
        for (v, variant) in profile.variants.iter().enumerate() {
            for e in self
                .entries
                .iter()
                .filter(|e| e.variant == variant.name && e.split == 0)
            {
                let (Some(quality), Ok(mean_bytes)) = (e.jpeg_quality(), u32::try_from(e.bytes))
                else {
                    continue;
                };
                out.push(Candidate::cloud_only_jpeg(
                    v,
                    quality,
                    mean_bytes,
                    e.top1 as f32,
                ));
            }
        }
        out
    }

    /// Merges the cloud-only JPEG entries (`jpegQ`) of `other` into this table: an entry of the
    /// same variant and quality is replaced, a new one goes after the variant's other split-0
    /// entries; the JPEG codec names are added to [`codecs`](Self::codecs). Refused unless both
    /// tables are for the same package stamp and the same images (SHA-256 and N), so that every
    /// entry stays comparable. Used by `jmdc-edge calibrate --only-jpeg`.
    pub fn merge_jpeg(&mut self, other: &CalibrationTable) -> Result<MergeReport, String> {
        if other.package != self.package || other.package_stamp != self.package_stamp {
            return Err(format!(
                "the tables are for different packages ({} {} vs {} {})",
                self.package, self.package_stamp, other.package, other.package_stamp
            ));
        }
        if other.dataset.sha256 != self.dataset.sha256
            || other.dataset.images != self.dataset.images
        {
            return Err(format!(
                "the tables were measured on different images ({} images, sha256 {} vs {} \
                 images, sha256 {}); use the same file and -n",
                self.dataset.images,
                self.dataset.sha256,
                other.dataset.images,
                other.dataset.sha256
            ));
        }
        let mut report = MergeReport::default();
        for o in other.entries.iter().filter(|e| e.codec == CODEC_IMAGE) {
            if let Some(mine) = self
                .entries
                .iter()
                .find(|e| e.variant == o.variant && e.codec == CODEC_IMAGE)
            {
                if mine.correct != o.correct {
                    report.raw_mismatches.push(format!(
                        "{} cloud-only (raw image): {} correct in the table, {} now",
                        o.variant, mine.correct, o.correct
                    ));
                }
            }
        }
        for o in other.entries.iter().filter(|e| e.jpeg_quality().is_some()) {
            if let Some(slot) = self
                .entries
                .iter_mut()
                .find(|e| e.variant == o.variant && e.split == 0 && e.codec == o.codec)
            {
                *slot = o.clone();
                report.replaced += 1;
            } else {
                let at = self
                    .entries
                    .iter()
                    .rposition(|e| e.variant == o.variant && e.split == 0)
                    .map_or(self.entries.len(), |i| i + 1);
                self.entries.insert(at, o.clone());
                report.inserted += 1;
            }
            if !self.codecs.contains(&o.codec) {
                self.codecs.push(o.codec.clone());
            }
        }
        self.validate(Path::new("<merged>"))
            .map_err(|e| e.to_string())?;
        Ok(report)
    }

    /// Drops every entry dominated within its own (variant, split, input kind): another entry
    /// with no more bytes and no fewer correct images, strictly better in one of the two (of
    /// exact duplicates in both, the first in table order is kept). Raw and JPEG cloud-only
    /// entries are separate groups (a JPEG costs encode/decode time a raw image does not), and so
    /// are entropy-coded and fixed-width split entries. Same rule as
    /// [`Optimizer::prune_dominated`](crate::optimizer::Optimizer::prune_dominated). Returns the
    /// number of entries dropped and marks the table `pareto_pruned`.
    pub fn pareto_prune(&mut self) -> usize {
        let n = self.entries.len();
        let mut order: Vec<usize> = (0..n).collect();
        let es = &self.entries;
        fn group_of(e: &CalibrationEntry) -> (&str, usize, bool, bool) {
            let coded = parse_codec(&e.codec).is_ok_and(QuantMode::is_coded);
            (
                e.variant.as_str(),
                e.split,
                e.jpeg_quality().is_some(),
                coded,
            )
        }
        order.sort_by(|&a, &b| {
            let (x, y) = (&es[a], &es[b]);
            (group_of(x), x.bytes)
                .cmp(&(group_of(y), y.bytes))
                .then(y.correct.cmp(&x.correct))
                .then(a.cmp(&b))
        });
        let mut keep = vec![false; n];
        let mut group = None;
        let mut best: Option<u64> = None;
        for &i in &order {
            let e = &es[i];
            let key = group_of(e);
            if group != Some(key) {
                group = Some(key);
                best = None;
            }
            // Sorted by bytes ascending, then correct descending: an entry survives only if it
            // is strictly more accurate than every cheaper-or-equal one before it.
            if best.is_none_or(|b| e.correct > b) {
                keep[i] = true;
                best = Some(e.correct);
            }
        }
        let mut it = keep.iter();
        self.entries.retain(|_| *it.next().unwrap_or(&true));
        self.pareto_pruned = true;
        n - self.entries.len()
    }
}

/// Payload bytes of one frame for an entry of `variant` at `split` (see
/// [`CalibrationEntry::bytes`]): `encoded_len(shape, codec)` for inner splits.
pub fn plan_bytes(
    pkg: &Manifest,
    variant: &str,
    split: usize,
    codec: Option<&CodecParams>,
) -> Result<usize, String> {
    let v = pkg.variant(variant).map_err(|e| e.to_string())?;
    let shape = pkg
        .split_tensor_shape(variant, split)
        .map_err(|e| e.to_string())?;
    if split == 0 {
        return Ok(shape.iter().product());
    }
    if split >= v.num_layers() {
        return Ok(0);
    }
    let codec = codec.ok_or_else(|| format!("split {split} needs a codec"))?;
    encoded_len(shape, codec).map_err(|e| e.to_string())
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn codec_names() {
        for m in [
            QuantMode::F32,
            QuantMode::F16,
            QuantMode::Bits(2),
            QuantMode::Bits(8),
        ] {
            assert_eq!(parse_codec(&codec_name(m)), Ok(m));
        }
        assert_eq!(parse_codec("q4"), Ok(QuantMode::Bits(4)));
        assert!(parse_codec("int7").is_err());
        assert!(parse_codec("u8-image").is_err());
        assert_eq!(parse_keep_list("1, 0.5"), Ok(vec![1.0, 0.5]));
        assert!(parse_keep_list("0").is_err());
        assert!(parse_keep_list("1.5").is_err());
    }
}
