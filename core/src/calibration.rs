//! Calibration tables on disk: reading, checking against a package and writing the
//! [`CalibrationTable`]s that `jmdc-edge calibrate` measures.
//!
//! The table itself (data, JSON text, lookups, merging, pruning) is pure and lives in
//! [`jmdc_proto::calibration`], re-exported here. A table is tied to the exact package it was
//! measured on by its **package stamp**: the SHA-256 of the package's `manifest.json` bytes (which
//! list every ONNX file's SHA-256). [`load_for`] refuses a table whose stamp differs from the
//! package's. The format is described in `docs/calibration.md`.

use std::path::{Path, PathBuf};

pub use jmdc_proto::calibration::*;

use crate::package::{sha256_hex, ModelPackage};

/// The package stamp: SHA-256 of the bytes of `manifest.json` as it is on disk now.
pub fn package_stamp(pkg: &ModelPackage) -> Result<String, CalibrationError> {
    let path = pkg.manifest_path();
    let bytes = std::fs::read(path).map_err(|source| CalibrationError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

/// Where a package's table lives by default: `<package dir>/calibration.json`.
pub fn default_path(pkg: &ModelPackage) -> PathBuf {
    pkg.dir().join(CALIBRATION_FILE)
}

/// Reads and parses a table without checking it against a package.
pub fn load(path: &Path) -> Result<CalibrationTable, CalibrationError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    CalibrationTable::from_json(&text, path)
}

/// Reads a table and checks that it belongs to `pkg`: same stamp (SHA-256 of the package's
/// `manifest.json` bytes), and every entry names a variant of the package and a split within
/// it. A table from another package or another build of it is refused with
/// [`CalibrationError::StampMismatch`], which names the file and both stamps.
pub fn load_for(path: &Path, pkg: &ModelPackage) -> Result<CalibrationTable, CalibrationError> {
    let table = load(path)?;
    check_package(&table, pkg, path)?;
    Ok(table)
}

/// [`load_for`] from the default location beside the package.
pub fn load_default(pkg: &ModelPackage) -> Result<CalibrationTable, CalibrationError> {
    load_for(&default_path(pkg), pkg)
}

/// Checks the stamp and the entries against `pkg` (`path` names the table in errors).
pub fn check_package(
    table: &CalibrationTable,
    pkg: &ModelPackage,
    path: &Path,
) -> Result<(), CalibrationError> {
    let stamp = package_stamp(pkg)?;
    if stamp != table.package_stamp {
        return Err(CalibrationError::StampMismatch {
            path: path.to_path_buf(),
            package: pkg.name().to_string(),
            manifest: pkg.manifest_path().to_path_buf(),
            table_stamp: table.package_stamp.clone(),
            package_stamp: stamp,
        });
    }
    let invalid = |message: String| CalibrationError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if table.package != pkg.name() {
        return Err(invalid(format!(
            "table is for package {:?}, not {:?}",
            table.package,
            pkg.name()
        )));
    }
    for e in &table.entries {
        let v = pkg
            .variant(&e.variant)
            .map_err(|_| invalid(format!("entry names unknown variant {:?}", e.variant)))?;
        if e.split > v.num_layers() {
            return Err(invalid(format!(
                "entry {}/split {} is beyond the variant's {} layers",
                e.variant,
                e.split,
                v.num_layers()
            )));
        }
    }
    Ok(())
}

/// Writes the table as pretty JSON (to a temporary file in the same folder, then renamed).
pub fn save(table: &CalibrationTable, path: &Path) -> Result<(), CalibrationError> {
    let io = |source| CalibrationError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, table.to_json()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Today's date and time in UTC, RFC 3339 (`YYYY-MM-DDTHH:MM:SSZ`), from the system clock.
pub fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_from_unix(secs)
}
