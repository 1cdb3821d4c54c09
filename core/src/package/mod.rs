//! Model packages on disk: `models/packages/<name>/manifest.json` plus per-variant ONNX files.
//!
//! The manifest's schema and rules are [`jmdc_proto::manifest`] (pure); this module reads the
//! files. [`ModelPackage::load`] parses and validates the manifest and, by default, verifies the
//! SHA-256 of every file of every variant. On a slow edge device the verification can be deferred
//! with [`VerifyMode::Lazy`]: files are then verified when first read through
//! [`ModelPackage::read_layer`] / [`ModelPackage::read_full_model`] (which always hash the bytes
//! they return, so a session is never built from unverified bytes). Several packages in one folder
//! are a [`ModelRegistry`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

pub use jmdc_proto::manifest::{
    Accuracy, FileRef, InputSpec, LayerInfo, LayerKind, Manifest, ManifestError, Normalization,
    Variant, VariantLayer, MANIFEST_FILE, PACKAGE_FORMAT,
};

mod registry;
pub use registry::ModelRegistry;

/// Errors from loading or querying a package. Messages name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The manifest is malformed, breaks a rule of the format, or a query names a variant, layer
    /// or split the package does not have.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A variant has no `full_model` file.
    #[error("{}: variant {variant} has no full_model", manifest.display())]
    NoFullModel {
        /// The manifest file.
        manifest: PathBuf,
        /// The variant.
        variant: String,
    },
    /// A file could not be read (missing, permissions, ...).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
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
        let f = v
            .full_model
            .as_ref()
            .ok_or_else(|| PackageError::NoFullModel {
                manifest: self.manifest_path.clone(),
                variant: variant.to_string(),
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
        self.manifest.out_of_range(what, value).into()
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
        Ok(self.manifest.variant(name)?)
    }

    /// All variants, in manifest order.
    pub fn variants(&self) -> &[Variant] {
        &self.manifest.variants
    }

    /// Variant names, in manifest order.
    pub fn variant_names(&self) -> impl Iterator<Item = &str> {
        self.manifest.variant_names()
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
        Ok(self.manifest.layer_output_shape(variant, i)?)
    }

    /// Shape of the tensor crossing split `split` (0 ≤ split ≤ L): split 0 is the model input,
    /// split s > 0 is the output of layer s−1 (split L is the logits).
    pub fn split_tensor_shape(
        &self,
        variant: &str,
        split: usize,
    ) -> Result<&[usize], PackageError> {
        Ok(self.manifest.split_tensor_shape(variant, split)?)
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
