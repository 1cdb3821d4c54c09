//! The model package manifest (`manifest.json`): its schema and every rule of the format that
//! does not need the files (format string, indices, the shape chain, relative paths, hash syntax).
//!
//! The format is specified in `docs/model-package.md`. Loading a package from disk and verifying
//! its files' SHA-256 is `jmdc_core::package`; this module only parses and checks text, so the
//! optimizer side and tests use it without touching the file system (`path` arguments only name
//! the manifest in errors).

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The only manifest `format` this crate reads.
pub const PACKAGE_FORMAT: &str = "jmdc-model-package/1";

/// File name of the manifest inside a package folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Errors parsing, checking or querying a manifest. Messages name the manifest or package.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest is not valid JSON or does not match the schema.
    #[error("{}: invalid manifest: {source}", path.display())]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The manifest parsed but breaks a rule of the format.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No variant of that name.
    #[error("package {package} has no variant {name:?} (available: {available})")]
    UnknownVariant {
        /// Package name.
        package: String,
        /// Requested variant.
        name: String,
        /// Comma-separated variant names.
        available: String,
    },
    /// A layer index or split point outside the model.
    #[error("package {package}: {what} {value} out of range (model has {layers} layers)")]
    OutOfRange {
        /// Package name.
        package: String,
        /// "layer", "split" or "range end".
        what: &'static str,
        /// The offending value.
        value: usize,
        /// Number of layers L.
        layers: usize,
    },
}

/// `input` of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input tensor name of every ONNX file (e.g. `x`).
    pub name: String,
    /// Shape without the batch dimension, e.g. `[3, 32, 32]`.
    pub shape: Vec<usize>,
    /// Element type; only `float32`.
    pub dtype: String,
    /// Layout; only `NCHW`.
    pub layout: String,
}

/// Pixel normalisation: `(pixel / pixel_scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Divisor turning raw pixels into [0, 1] (255.0 for u8 images).
    pub pixel_scale: f32,
    /// Per-channel mean (RGB order).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (RGB order).
    pub std: Vec<f32>,
}

/// Layer kinds of the format. Unknown kinds are kept as [`LayerKind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Convolution (+ its activation).
    Conv,
    /// Local response normalisation.
    Lrn,
    /// Max pooling.
    Maxpool,
    /// Batch normalisation.
    Batchnorm,
    /// Fully connected (+ flatten, + activation).
    Linear,
    /// A kind this version does not know.
    #[serde(other)]
    Other,
}

/// An entry of the top-level `layers` (unpruned architecture).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Position in the model, 0-based.
    pub index: usize,
    /// Human name, e.g. `conv1`.
    pub name: String,
    /// Kind of layer.
    pub kind: LayerKind,
    /// Output shape without batch dimension.
    pub output_shape: Vec<usize>,
    /// Multiply-accumulates per image.
    #[serde(default)]
    pub macs: u64,
    /// Parameter count.
    #[serde(default)]
    pub params: u64,
}

/// A file reference with its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Path relative to the variant folder.
    pub file: String,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// One layer file of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantLayer {
    /// Position in the model, 0-based.
    pub index: usize,
    /// Path relative to the variant folder.
    pub file: String,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Input shape without batch dimension.
    pub input_shape: Vec<usize>,
    /// Output shape without batch dimension.
    pub output_shape: Vec<usize>,
    /// Multiply-accumulates per image.
    #[serde(default)]
    pub macs: u64,
    /// Parameter count.
    #[serde(default)]
    pub params: u64,
}

/// Measured accuracy of a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Number of evaluated images.
    #[serde(default)]
    pub images: u64,
    /// Evaluation data set.
    #[serde(default)]
    pub dataset: String,
    /// Runtime used for evaluation.
    #[serde(default)]
    pub runtime: String,
    /// How it was evaluated.
    #[serde(default)]
    pub method: String,
}

/// A (pruned) variant of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Variant name, e.g. `keep075`.
    pub name: String,
    /// Fraction of channels kept, in (0, 1].
    pub keep_ratio: f64,
    /// Folder relative to the package.
    pub dir: String,
    /// The fused model (reference); optional on devices that ship only layers.
    #[serde(default)]
    pub full_model: Option<FileRef>,
    /// One file per layer.
    pub layers: Vec<VariantLayer>,
    /// Measured accuracy, if evaluated.
    #[serde(default)]
    pub accuracy: Option<Accuracy>,
}

impl Variant {
    /// Number of layers L.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Total MACs per image of layers `range`.
    pub fn macs(&self, range: std::ops::Range<usize>) -> u64 {
        self.layers
            .get(range)
            .map(|ls| ls.iter().map(|l| l.macs).sum())
            .unwrap_or(0)
    }
}

/// The parsed `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must be [`PACKAGE_FORMAT`].
    pub format: String,
    /// Package name (the registry key).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Training data set.
    #[serde(default)]
    pub dataset: String,
    /// Model input.
    pub input: InputSpec,
    /// Output tensor name of every ONNX file (e.g. `y`).
    pub output_name: String,
    /// Pixel normalisation for layer 0.
    pub normalization: Normalization,
    /// Class names, index = logit position.
    pub classes: Vec<String>,
    /// Unpruned architecture.
    pub layers: Vec<LayerInfo>,
    /// Variants.
    pub variants: Vec<Variant>,
    /// Free-form training record (any fields).
    #[serde(default)]
    pub training: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses manifest JSON text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_str(text).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        m.validate(path)?;
        Ok(m)
    }

    /// Checks every rule of the format that does not need the files.
    pub fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        let bad = |message: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if self.format != PACKAGE_FORMAT {
            return Err(bad(format!(
                "unsupported format {:?} (expected {PACKAGE_FORMAT:?})",
                self.format
            )));
        }
        if self.name.trim().is_empty() {
            return Err(bad("empty package name".into()));
        }
        if self.input.name.is_empty() || self.output_name.is_empty() {
            return Err(bad("input.name and output_name must not be empty".into()));
        }
        if self.input.dtype != "float32" {
            return Err(bad(format!(
                "input.dtype {:?} unsupported (only float32)",
                self.input.dtype
            )));
        }
        if self.input.layout != "NCHW" {
            return Err(bad(format!(
                "input.layout {:?} unsupported (only NCHW)",
                self.input.layout
            )));
        }
        check_shape(&self.input.shape, "input.shape").map_err(&bad)?;
        if self.input.shape.len() != 3 {
            return Err(bad(format!(
                "input.shape {:?} must be [channels, height, width]",
                self.input.shape
            )));
        }
        let channels = self.input.shape[0];
        let n = &self.normalization;
        if n.mean.len() != channels || n.std.len() != channels {
            return Err(bad(format!(
                "normalization mean/std need {channels} values (input has {channels} channels), got {}/{}",
                n.mean.len(),
                n.std.len()
            )));
        }
        if !(n.pixel_scale.is_finite() && n.pixel_scale > 0.0) {
            return Err(bad(format!(
                "normalization.pixel_scale must be > 0, got {}",
                n.pixel_scale
            )));
        }
        if n.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || n.mean.iter().any(|m| !m.is_finite())
        {
            return Err(bad("normalization std must be > 0 and mean finite".into()));
        }
        if self.classes.is_empty() {
            return Err(bad("no classes".into()));
        }
        if self.layers.is_empty() {
            return Err(bad("no layers".into()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.index != i {
                return Err(bad(format!(
                    "layers[{i}] ({}) has index {} (expected {i})",
                    l.name, l.index
                )));
            }
            check_shape(&l.output_shape, &format!("layers[{i}].output_shape")).map_err(&bad)?;
        }
        let num_layers = self.layers.len();
        let logits = vec![self.classes.len()];
        if self.layers[num_layers - 1].output_shape != logits {
            return Err(bad(format!(
                "last layer outputs {:?}, expected [{}] (one logit per class)",
                self.layers[num_layers - 1].output_shape,
                self.classes.len()
            )));
        }
        if self.variants.is_empty() {
            return Err(bad("no variants".into()));
        }
        let mut names = HashSet::new();
        let mut dirs = HashSet::new();
        for v in &self.variants {
            let vb = |m: String| bad(format!("variant {}: {m}", v.name));
            if v.name.is_empty() {
                return Err(bad("variant with empty name".into()));
            }
            if !names.insert(v.name.as_str()) {
                return Err(bad(format!("duplicate variant name {:?}", v.name)));
            }
            check_rel_path(&v.dir).map_err(|m| vb(format!("dir: {m}")))?;
            if !dirs.insert(v.dir.as_str()) {
                return Err(vb(format!("dir {:?} used by two variants", v.dir)));
            }
            if !(v.keep_ratio.is_finite() && v.keep_ratio > 0.0 && v.keep_ratio <= 1.0) {
                return Err(vb(format!("keep_ratio {} not in (0, 1]", v.keep_ratio)));
            }
            if v.layers.len() != num_layers {
                return Err(vb(format!(
                    "has {} layers, the model has {num_layers}",
                    v.layers.len()
                )));
            }
            let mut files = HashSet::new();
            if let Some(f) = &v.full_model {
                check_rel_path(&f.file).map_err(|m| vb(format!("full_model.file: {m}")))?;
                check_sha(&f.sha256).map_err(|m| vb(format!("full_model.sha256: {m}")))?;
                files.insert(f.file.as_str());
            }
            let mut prev: &[usize] = &self.input.shape;
            for (i, l) in v.layers.iter().enumerate() {
                if l.index != i {
                    return Err(vb(format!(
                        "layers[{i}] has index {} (expected {i})",
                        l.index
                    )));
                }
                check_rel_path(&l.file).map_err(|m| vb(format!("layer {i} file: {m}")))?;
                check_sha(&l.sha256).map_err(|m| vb(format!("layer {i} sha256: {m}")))?;
                if !files.insert(l.file.as_str()) {
                    return Err(vb(format!("file {:?} listed twice", l.file)));
                }
                check_shape(&l.input_shape, &format!("layer {i} input_shape")).map_err(&vb)?;
                check_shape(&l.output_shape, &format!("layer {i} output_shape")).map_err(&vb)?;
                if l.input_shape != prev {
                    let what = if i == 0 {
                        "the model input".to_string()
                    } else {
                        format!("layer {} output", i - 1)
                    };
                    return Err(vb(format!(
                        "layer {i} input_shape {:?} != {what} {:?}",
                        l.input_shape, prev
                    )));
                }
                prev = &l.output_shape;
            }
            if prev != logits.as_slice() {
                return Err(vb(format!(
                    "last layer outputs {prev:?}, expected [{}] (one logit per class)",
                    self.classes.len()
                )));
            }
            if let Some(a) = &v.accuracy {
                if !(0.0..=1.0).contains(&a.top1) {
                    return Err(vb(format!("accuracy.top1 {} not in [0, 1]", a.top1)));
                }
            }
        }
        Ok(())
    }

    /// Variant by name.
    pub fn variant(&self, name: &str) -> Result<&Variant, ManifestError> {
        self.variants
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ManifestError::UnknownVariant {
                package: self.name.clone(),
                name: name.to_string(),
                available: self.variant_names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Variant names, in manifest order.
    pub fn variant_names(&self) -> impl Iterator<Item = &str> {
        self.variants.iter().map(|v| v.name.as_str())
    }

    /// Number of layers L (the same for every variant).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The error for `value` beyond the model's layers.
    pub fn out_of_range(&self, what: &'static str, value: usize) -> ManifestError {
        ManifestError::OutOfRange {
            package: self.name.clone(),
            what,
            value,
            layers: self.num_layers(),
        }
    }

    /// Output shape of layer `i` of `variant` (no batch dimension).
    pub fn layer_output_shape(&self, variant: &str, i: usize) -> Result<&[usize], ManifestError> {
        let v = self.variant(variant)?;
        v.layers
            .get(i)
            .map(|l| l.output_shape.as_slice())
            .ok_or_else(|| self.out_of_range("layer", i))
    }

    /// Shape of the tensor crossing split `split` (0 ≤ split ≤ L): split 0 is the model input,
    /// split s > 0 is the output of layer s−1 (split L is the logits).
    pub fn split_tensor_shape(
        &self,
        variant: &str,
        split: usize,
    ) -> Result<&[usize], ManifestError> {
        let v = self.variant(variant)?;
        if split > v.layers.len() {
            return Err(self.out_of_range("split", split));
        }
        Ok(if split == 0 {
            self.input.shape.as_slice()
        } else {
            v.layers[split - 1].output_shape.as_slice()
        })
    }
}

fn check_shape(shape: &[usize], what: &str) -> Result<(), String> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(format!(
            "{what} {shape:?} must be non-empty with dimensions > 0"
        ));
    }
    Ok(())
}

fn check_sha(s: &str) -> Result<(), String> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("{s:?} is not 64 lowercase hex digits"));
    }
    Ok(())
}

/// A relative path made only of normal components (no `..`, no root, no `.`-only path).
fn check_rel_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\\') || p.contains('\0') {
        return Err(format!("{p:?} contains a backslash or NUL"));
    }
    let mut normal = 0;
    for c in Path::new(p).components() {
        match c {
            Component::Normal(_) => normal += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{p:?} contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{p:?} is not a relative path"))
            }
        }
    }
    if normal == 0 {
        return Err(format!("{p:?} names no file"));
    }
    Ok(())
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LayerKind::Conv => "conv",
            LayerKind::Lrn => "lrn",
            LayerKind::Maxpool => "maxpool",
            LayerKind::Batchnorm => "batchnorm",
            LayerKind::Linear => "linear",
            LayerKind::Other => "other",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        assert!(check_rel_path("keep100").is_ok());
        assert!(check_rel_path("a/b.onnx").is_ok());
        assert!(check_rel_path("./a.onnx").is_ok());
        assert!(check_rel_path("../a.onnx").is_err());
        assert!(check_rel_path("a/../../b").is_err());
        assert!(check_rel_path("/etc/passwd").is_err());
        assert!(check_rel_path("").is_err());
        assert!(check_rel_path(".").is_err());
    }

    #[test]
    fn sha_format() {
        // SHA-256 of the empty input.
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(check_sha(empty).is_ok());
        assert!(check_sha(&empty.to_uppercase()).is_err());
        assert!(check_sha("abc").is_err());
    }
}
