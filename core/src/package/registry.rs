//! Several packages loaded from one folder, looked up by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{LoadOptions, ModelPackage, PackageError, MANIFEST_FILE};

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
