//! Model packages: `models/packages/<name>/manifest.json` plus per-variant ONNX files.
//!
//! The format is specified in `docs/model-package.md`. [`ModelPackage::load`] parses and
//! validates the manifest (format string, indices, the shape chain, relative paths) and, by
//! default, verifies the SHA-256 of every file of every variant. On a slow edge device the
//! verification can be deferred with [`VerifyMode::Lazy`]: files are then verified when first
//! read through [`ModelPackage::read_layer`] / [`ModelPackage::read_full_model`] (which always
//! hash the bytes they return, so a session is never built from unverified bytes).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The only manifest `format` this crate reads.
pub const PACKAGE_FORMAT: &str = "jmdc-model-package/1";

/// File name of the manifest inside a package folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Errors from loading or querying a package. Messages name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be read (missing, permissions, ...).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid JSON or does not match the schema.
    #[error("{}: invalid manifest: {source}", path.display())]
    ManifestParse {
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
    /// A file listed in the manifest does not exist.
    #[error("missing model file {} (listed in {})", path.display(), manifest.display())]
    MissingFile {
        /// The missing file.
        path: PathBuf,
        /// The manifest that lists it.
        manifest: PathBuf,
    },
    /// A file's SHA-256 differs from the manifest (corrupt or replaced file).
    #[error("SHA-256 mismatch for {}: manifest says {expected}, file has {actual}", path.display())]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Hash in the manifest.
        expected: String,
        /// Hash of the bytes on disk.
        actual: String,
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
    /// No package of that name in a registry.
    #[error("no model package named {name:?} in {} (available: {available})", dir.display())]
    UnknownPackage {
        /// Requested package.
        name: String,
        /// Registry folder.
        dir: PathBuf,
        /// Comma-separated package names.
        available: String,
    },
    /// Two packages in a registry share a name.
    #[error("two packages are named {name:?}: {} and {}", first.display(), second.display())]
    DuplicatePackage {
        /// The shared name.
        name: String,
        /// First package folder.
        first: PathBuf,
        /// Second package folder.
        second: PathBuf,
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
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, PackageError> {
        let m: Manifest =
            serde_json::from_str(text).map_err(|source| PackageError::ManifestParse {
                path: path.to_path_buf(),
                source,
            })?;
        m.validate(path)?;
        Ok(m)
    }

    /// Checks every rule of the format that does not need the files.
    pub fn validate(&self, path: &Path) -> Result<(), PackageError> {
        let bad = |message: String| PackageError::Invalid {
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

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// When file hashes are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum VerifyMode {
    /// Hash every file of every variant during `load` (default).
    #[default]
    All,
    /// Hash only the files of these variants during `load`; the others lazily.
    Variants(Vec<String>),
    /// Check only that files exist during `load`; hash each file when it is read
    /// (`read_layer`, `read_full_model`, `verify_variant`).
    Lazy,
}

/// Options for [`ModelPackage::load_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// When to verify hashes.
    pub verify: VerifyMode,
}

/// A loaded, validated model package.
#[derive(Debug)]
pub struct ModelPackage {
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
    /// Variants whose every file has been hashed successfully.
    verified: Mutex<HashSet<String>>,
}

impl ModelPackage {
    /// Loads `dir/manifest.json`, validates it and verifies every file's SHA-256.
    pub fn load(dir: &Path) -> Result<ModelPackage, PackageError> {
        Self::load_with(dir, &LoadOptions::default())
    }

    /// Loads with explicit options (e.g. [`VerifyMode::Lazy`] on a slow device).
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<ModelPackage, PackageError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| PackageError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&text, &manifest_path)?;
        let pkg = ModelPackage {
            dir: dir.to_path_buf(),
            manifest_path,
            manifest,
            verified: Mutex::new(HashSet::new()),
        };
        // Every file must at least exist.
        for v in &pkg.manifest.variants {
            for (path, _) in pkg.variant_files(v) {
                if !path.is_file() {
                    return Err(pkg.missing(path));
                }
            }
        }
        let to_verify: Vec<String> = match &options.verify {
            VerifyMode::All => pkg.variant_names().map(String::from).collect(),
            VerifyMode::Variants(names) => names.clone(),
            VerifyMode::Lazy => Vec::new(),
        };
        for name in &to_verify {
            pkg.verify_variant(name)?;
        }
        Ok(pkg)
    }

    fn missing(&self, path: PathBuf) -> PackageError {
        PackageError::MissingFile {
            path,
            manifest: self.manifest_path.clone(),
        }
    }

    fn variant_files<'a>(&self, v: &'a Variant) -> Vec<(PathBuf, &'a str)> {
        let base = self.dir.join(&v.dir);
        let mut out: Vec<(PathBuf, &str)> = v
            .layers
            .iter()
            .map(|l| (base.join(&l.file), l.sha256.as_str()))
            .collect();
        if let Some(f) = &v.full_model {
            out.push((base.join(&f.file), f.sha256.as_str()));
        }
        out
    }

    /// Reads a file and checks its hash; returns the verified bytes.
    fn read_checked(&self, path: &Path, expected: &str) -> Result<Vec<u8>, PackageError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                self.missing(path.to_path_buf())
            } else {
                PackageError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(PackageError::HashMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Hashes every file of `variant` (once; later calls return immediately).
    pub fn verify_variant(&self, variant: &str) -> Result<(), PackageError> {
        let v = self.variant(variant)?;
        if self.is_verified(variant) {
            return Ok(());
        }
        for (path, sha) in self.variant_files(v) {
            self.read_checked(&path, sha)?;
        }
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(variant.to_string());
        Ok(())
    }

    /// Whether every file of `variant` has been verified.
    pub fn is_verified(&self, variant: &str) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(variant)
    }

    /// The bytes of layer `index` of `variant`, hash-verified (always, in every mode).
    pub fn read_layer(&self, variant: &str, index: usize) -> Result<Vec<u8>, PackageError> {
        let path = self.layer_path(variant, index)?;
        let l = &self.variant(variant)?.layers[index];
        self.read_checked(&path, &l.sha256)
    }

    /// The bytes of `full.onnx` of `variant`, hash-verified.
    pub fn read_full_model(&self, variant: &str) -> Result<Vec<u8>, PackageError> {
        let v = self.variant(variant)?;
        let f = v.full_model.as_ref().ok_or_else(|| PackageError::Invalid {
            path: self.manifest_path.clone(),
            message: format!("variant {variant} has no full_model"),
        })?;
        let path = self.dir.join(&v.dir).join(&f.file);
        self.read_checked(&path, &f.sha256)
    }

    /// Path of layer `index`'s file of `variant`.
    pub fn layer_path(&self, variant: &str, index: usize) -> Result<PathBuf, PackageError> {
        let v = self.variant(variant)?;
        let l = v
            .layers
            .get(index)
            .ok_or_else(|| self.out_of_range("layer", index))?;
        Ok(self.dir.join(&v.dir).join(&l.file))
    }

    /// Path of `full.onnx` of `variant`, if the variant has one.
    pub fn full_model_path(&self, variant: &str) -> Result<Option<PathBuf>, PackageError> {
        let v = self.variant(variant)?;
        Ok(v.full_model
            .as_ref()
            .map(|f| self.dir.join(&v.dir).join(&f.file)))
    }

    fn out_of_range(&self, what: &'static str, value: usize) -> PackageError {
        PackageError::OutOfRange {
            package: self.manifest.name.clone(),
            what,
            value,
            layers: self.num_layers(),
        }
    }

    /// The package folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `manifest.json`.
    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Package name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Variant by name.
    pub fn variant(&self, name: &str) -> Result<&Variant, PackageError> {
        self.manifest
            .variants
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| PackageError::UnknownVariant {
                package: self.manifest.name.clone(),
                name: name.to_string(),
                available: self.variant_names().collect::<Vec<_>>().join(", "),
            })
    }

    /// All variants, in manifest order.
    pub fn variants(&self) -> &[Variant] {
        &self.manifest.variants
    }

    /// Variant names, in manifest order.
    pub fn variant_names(&self) -> impl Iterator<Item = &str> {
        self.manifest.variants.iter().map(|v| v.name.as_str())
    }

    /// Number of layers L (the same for every variant).
    pub fn num_layers(&self) -> usize {
        self.manifest.layers.len()
    }

    /// Unpruned architecture description.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.manifest.layers
    }

    /// Model input shape without batch dimension.
    pub fn input_shape(&self) -> &[usize] {
        &self.manifest.input.shape
    }

    /// Input tensor name.
    pub fn input_name(&self) -> &str {
        &self.manifest.input.name
    }

    /// Output tensor name.
    pub fn output_name(&self) -> &str {
        &self.manifest.output_name
    }

    /// Output shape of layer `i` of `variant` (no batch dimension).
    pub fn layer_output_shape(&self, variant: &str, i: usize) -> Result<&[usize], PackageError> {
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
    ) -> Result<&[usize], PackageError> {
        let v = self.variant(variant)?;
        if split > v.layers.len() {
            return Err(self.out_of_range("split", split));
        }
        Ok(if split == 0 {
            self.manifest.input.shape.as_slice()
        } else {
            v.layers[split - 1].output_shape.as_slice()
        })
    }

    /// Class names.
    pub fn classes(&self) -> &[String] {
        &self.manifest.classes
    }

    /// Pixel normalisation for layer 0.
    pub fn normalization(&self) -> &Normalization {
        &self.manifest.normalization
    }
}

/// Several packages loaded from a folder (`<dir>/*/manifest.json`), looked up by name.
#[derive(Debug)]
pub struct ModelRegistry {
    dir: PathBuf,
    packages: BTreeMap<String, ModelPackage>,
}

impl ModelRegistry {
    /// Loads every sub-folder of `dir` holding a `manifest.json` (others are ignored).
    /// Any package that fails to load fails the whole registry (the error names it).
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<ModelRegistry, PackageError> {
        let rd = std::fs::read_dir(dir).map_err(|source| PackageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut sub: Vec<PathBuf> = Vec::new();
        for e in rd {
            let e = e.map_err(|source| PackageError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let p = e.path();
            if p.join(MANIFEST_FILE).is_file() {
                sub.push(p);
            }
        }
        sub.sort();
        let mut packages: BTreeMap<String, ModelPackage> = BTreeMap::new();
        for p in sub {
            let pkg = ModelPackage::load_with(&p, options)?;
            if let Some(prev) = packages.get(pkg.name()) {
                return Err(PackageError::DuplicatePackage {
                    name: pkg.name().to_string(),
                    first: prev.dir().to_path_buf(),
                    second: p,
                });
            }
            packages.insert(pkg.name().to_string(), pkg);
        }
        Ok(ModelRegistry {
            dir: dir.to_path_buf(),
            packages,
        })
    }

    /// Package by name.
    pub fn get(&self, name: &str) -> Result<&ModelPackage, PackageError> {
        self.packages
            .get(name)
            .ok_or_else(|| PackageError::UnknownPackage {
                name: name.to_string(),
                dir: self.dir.clone(),
                available: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    /// Package names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.packages.keys().map(String::as_str)
    }

    /// All packages, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &ModelPackage> {
        self.packages.values()
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether no package was found.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The registry folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
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
        assert!(check_sha(&sha256_hex(b"")).is_ok());
        assert!(check_sha(&sha256_hex(b"").to_uppercase()).is_err());
        assert!(check_sha("abc").is_err());
    }
}
