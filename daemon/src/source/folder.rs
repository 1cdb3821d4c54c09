//! A folder of PNG/JPEG files, read in name order; with `follow`, new files are picked up.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::capture::{is_power_of_ten, Background, Captured, Counters, Started};
use super::imaging::{decode, to_model_input, ImageError, TargetSize};
use super::{SourceError, SourceSection};

/// Files modified more recently than this are left for the next poll (may be half-written).
const SETTLE: Duration = Duration::from_millis(100);

/// Whether `name` has a PNG or JPEG extension (any case).
pub fn is_image_name(name: &Path) -> bool {
    name.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg"))
}

/// Opens the folder and starts the reader thread.
pub(crate) fn start(
    section: &SourceSection,
    target: TargetSize,
) -> Result<Started<mpsc::Receiver<Captured>>, SourceError> {
    let dir = section
        .path
        .clone()
        .ok_or_else(|| SourceError::Config("source.path: required for kind = \"folder\"".into()))?;
    let meta = std::fs::metadata(&dir).map_err(|source| SourceError::Folder {
        path: dir.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SourceError::NotAFolder { path: dir });
    }
    // Listing now surfaces permission errors at start rather than in the thread.
    std::fs::read_dir(&dir).map_err(|source| SourceError::Folder {
        path: dir.clone(),
        source,
    })?;
    let counters = Arc::new(Counters::default());
    let (tx, rx) = mpsc::channel(1);
    let reader = Reader {
        dir: dir.clone(),
        follow: section.follow,
        max_file_bytes: section.max_file_bytes,
        poll: Duration::from_millis(section.poll_interval_ms),
        target,
        counters: counters.clone(),
        tx,
    };
    std::thread::Builder::new()
        .name("jmdc-folder-source".into())
        .spawn(move || reader.run())
        .map_err(|source| SourceError::Folder {
            path: dir.clone(),
            source,
        })?;
    let description = format!(
        "folder: {}{}",
        dir.display(),
        if section.follow { " (follow)" } else { "" }
    );
    Ok(Started {
        producer: rx,
        counters,
        description,
        // The thread ends when the receiver is dropped.
        background: Background::default(),
    })
}

struct Reader {
    dir: PathBuf,
    follow: bool,
    max_file_bytes: u64,
    poll: Duration,
    target: TargetSize,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Captured>,
}

enum Outcome {
    Frame(Captured),
    Failed(ImageError),
    Unreadable(std::io::Error),
}

impl Reader {
    fn run(self) {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut failed_once: HashSet<OsString> = HashSet::new();
        let mut list_errors: u64 = 0;
        loop {
            match self.list() {
                Ok(entries) => {
                    if !self.follow {
                        // Everything present, whatever its age.
                        for (name, path, _) in entries {
                            if !self.read_and_send(&name, &path) {
                                return;
                            }
                        }
                        return;
                    }
                    let present: HashSet<&OsString> = entries.iter().map(|(n, _, _)| n).collect();
                    seen.retain(|n| present.contains(n));
                    failed_once.retain(|n| present.contains(n));
                    let now = SystemTime::now();
                    for (name, path, modified) in &entries {
                        if seen.contains(name) {
                            continue;
                        }
                        let fresh = modified
                            .and_then(|m| now.duration_since(m).ok())
                            .is_some_and(|age| age < SETTLE);
                        if fresh {
                            continue;
                        }
                        let retry = failed_once.contains(name);
                        match self.read(name, path) {
                            Outcome::Frame(c) => {
                                seen.insert(name.clone());
                                if self.tx.blocking_send(c).is_err() {
                                    return;
                                }
                            }
                            Outcome::Failed(_) | Outcome::Unreadable(_) if !retry => {
                                failed_once.insert(name.clone());
                            }
                            Outcome::Failed(e) => {
                                seen.insert(name.clone());
                                self.counters.decode_error(&path.display().to_string(), &e);
                            }
                            Outcome::Unreadable(e) => {
                                seen.insert(name.clone());
                                self.counters.decode_error(&path.display().to_string(), &e);
                            }
                        }
                    }
                }
                Err(e) => {
                    list_errors += 1;
                    if is_power_of_ten(list_errors) {
                        tracing::warn!(
                            errors = list_errors,
                            "{}: cannot list folder: {e}",
                            self.dir.display()
                        );
                    }
                    if !self.follow {
                        return;
                    }
                }
            }
            // Sleep in short steps so a dropped feed ends the thread promptly.
            let until = Instant::now() + self.poll;
            while Instant::now() < until {
                if self.tx.is_closed() {
                    return;
                }
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// Image files in name order: (file name, path, modification time).
    fn list(&self) -> std::io::Result<Vec<(OsString, PathBuf, Option<SystemTime>)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if !is_image_name(Path::new(&name)) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push((name, entry.path(), meta.modified().ok()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn read(&self, name: &OsString, path: &Path) -> Outcome {
        let bytes = match read_at_most(path, self.max_file_bytes) {
            Ok(Ok(b)) => b,
            Ok(Err(too_large)) => return Outcome::Failed(too_large),
            Err(e) => return Outcome::Unreadable(e),
        };
        let captured = Instant::now();
        let decoded = decode(&bytes).and_then(|img| {
            // A JPEG file already at the model input size can be forwarded as it is.
            let at_size = img.dimensions() == (self.target.width, self.target.height);
            Ok((to_model_input(&img, self.target)?, at_size))
        });
        match decoded {
            Ok((pixels, at_size)) => Outcome::Frame(Captured {
                label: None,
                pixels,
                origin: name.to_string_lossy().into_owned(),
                captured,
                jpeg: (at_size && is_jpeg(&bytes)).then(|| Arc::from(bytes)),
            }),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Non-follow mode: read one file and send it; `false` when the feed is gone.
    fn read_and_send(&self, name: &OsString, path: &Path) -> bool {
        match self.read(name, path) {
            Outcome::Frame(c) => self.tx.blocking_send(c).is_ok(),
            Outcome::Failed(e) => {
                self.counters.decode_error(&path.display().to_string(), &e);
                true
            }
            Outcome::Unreadable(e) => {
                self.counters.decode_error(&path.display().to_string(), &e);
                true
            }
        }
    }
}

/// The file's bytes, or [`ImageError::FileTooLarge`] without reading it when it is larger than
/// `max` (a 2 GiB sparse file named `.jpg` took the edge to 2.1 GB when read whole). A file that
/// grows past `max` while being read is refused too.
fn read_at_most(path: &Path, max: u64) -> std::io::Result<Result<Vec<u8>, ImageError>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Ok(Err(ImageError::FileTooLarge { bytes: len, max }));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(Err(ImageError::FileTooLarge {
            bytes: bytes.len() as u64,
            max,
        }));
    }
    Ok(Ok(bytes))
}

/// True for bytes that start like a JPEG (SOI marker).
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}
