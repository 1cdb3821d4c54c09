//! Reader for the CIFAR-10 binary format (`data_batch_*.bin`, `test_batch.bin`).
//!
//! Each record is 1 label byte followed by 3,072 pixel bytes: the 1,024 red values, then green,
//! then blue, each channel row-major 32×32 (i.e. CHW, RGB).

use std::path::{Path, PathBuf};

/// Bytes of pixels per image (3 × 32 × 32).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per record (label + pixels).
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Image shape, CHW.
pub const IMAGE_SHAPE: [usize; 3] = [3, 32, 32];
/// CIFAR-10 class names, index = label.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Errors reading a CIFAR file.
#[derive(Debug, thiserror::Error)]
pub enum CifarError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The size is not a multiple of the record size.
    #[error("{}: truncated CIFAR file ({len} bytes is not a multiple of {RECORD_BYTES})", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: usize,
    },
    /// The file is empty.
    #[error("{}: empty CIFAR file", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A whole CIFAR binary file in memory.
#[derive(Debug, Clone)]
pub struct CifarFile {
    path: PathBuf,
    data: Vec<u8>,
}

impl CifarFile {
    /// Reads and checks a CIFAR binary file.
    pub fn open(path: &Path) -> Result<CifarFile, CifarError> {
        let data = std::fs::read(path).map_err(|source| CifarError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, data)
    }

    /// Wraps bytes already in memory (`path` only names them in errors).
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<CifarFile, CifarError> {
        if data.is_empty() {
            return Err(CifarError::Empty {
                path: path.to_path_buf(),
            });
        }
        if !data.len().is_multiple_of(RECORD_BYTES) {
            return Err(CifarError::Truncated {
                path: path.to_path_buf(),
                len: data.len(),
            });
        }
        Ok(CifarFile {
            path: path.to_path_buf(),
            data,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.data.len() / RECORD_BYTES
    }

    /// Whether the file holds no image (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Image `i`: (label, CHW pixels), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<(u8, &[u8; IMAGE_BYTES])> {
        let rec = self.data.get(i * RECORD_BYTES..(i + 1) * RECORD_BYTES)?;
        let px: &[u8; IMAGE_BYTES] = rec[1..].try_into().ok()?;
        Some((rec[0], px))
    }

    /// Iterator over (label, pixels) by reference.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8; IMAGE_BYTES])> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

impl IntoIterator for CifarFile {
    type Item = (u8, [u8; IMAGE_BYTES]);
    type IntoIter = CifarIter;

    fn into_iter(self) -> CifarIter {
        CifarIter {
            file: self,
            next: 0,
        }
    }
}

/// Owning iterator over (label, pixels).
#[derive(Debug)]
pub struct CifarIter {
    file: CifarFile,
    next: usize,
}

impl Iterator for CifarIter {
    type Item = (u8, [u8; IMAGE_BYTES]);

    fn next(&mut self) -> Option<Self::Item> {
        let (label, px) = self.file.get(self.next)?;
        self.next += 1;
        Some((label, *px))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.file.len() - self.next.min(self.file.len());
        (n, Some(n))
    }
}

impl ExactSizeIterator for CifarIter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_rejects_truncation() {
        let mut data = vec![0u8; 2 * RECORD_BYTES];
        data[0] = 3;
        data[RECORD_BYTES] = 7;
        data[RECORD_BYTES + 1] = 200;
        let f = CifarFile::from_bytes(Path::new("mem"), data.clone()).expect("valid");
        assert_eq!(f.len(), 2);
        let v: Vec<_> = f.iter().map(|(l, p)| (l, p[0])).collect();
        assert_eq!(v, vec![(3, 0), (7, 200)]);
        let owned: Vec<_> = f.into_iter().map(|(l, _)| l).collect();
        assert_eq!(owned, vec![3, 7]);
        data.pop();
        let e = CifarFile::from_bytes(Path::new("mem"), data).expect_err("truncated");
        assert!(e.to_string().contains("truncated"));
        assert!(CifarFile::from_bytes(Path::new("mem"), Vec::new()).is_err());
    }
}
