//! The `[source]` section of the edge configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default V4L2 device when `path` is absent.
pub const DEFAULT_DEVICE: &str = "/dev/video0";

/// `[source]` section of the edge config: where frames come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Source type: `cifar`, `folder`, `mjpeg` or `v4l2`.
    pub kind: SourceKind,
    /// CIFAR binary file, image folder, or V4L2 device (default `/dev/video0`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `mjpeg`: argv of the child that writes an MJPEG stream to stdout.
    #[serde(default)]
    pub command: Vec<String>,
    /// Stop after this many frames.
    #[serde(default)]
    pub limit: Option<usize>,
    /// `cifar`: start over at the end of the file.
    #[serde(default)]
    pub repeat: bool,
    /// Frame-rate cap (frames per second); absent: as fast as the pipeline takes them.
    #[serde(default)]
    pub max_fps: Option<f64>,
    /// `folder`: keep watching for new files.
    #[serde(default = "default_true")]
    pub follow: bool,
    /// `folder`: polling period in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// `folder`: files larger than this many bytes are skipped (counted as undecodable) without
    /// being read.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// `mjpeg`/`v4l2`: first restart delay in milliseconds (doubles on each failure).
    #[serde(default = "default_backoff_ms")]
    pub restart_backoff_ms: u64,
    /// `mjpeg`/`v4l2`: longest restart delay in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_restart_backoff_ms: u64,
    /// `v4l2`: capture width in pixels.
    #[serde(default = "default_width")]
    pub width: u32,
    /// `v4l2`: capture height in pixels.
    #[serde(default = "default_height")]
    pub height: u32,
    /// `v4l2`: pixel format to capture.
    #[serde(default)]
    pub format: CaptureFormat,
}

/// Supported frame sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A CIFAR-10 binary file (labels give a running accuracy).
    Cifar,
    /// A folder of PNG/JPEG files.
    Folder,
    /// An MJPEG stream on a child process's stdout.
    Mjpeg,
    /// A V4L2 capture device.
    V4l2,
}

impl SourceKind {
    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Cifar => "cifar",
            SourceKind::Folder => "folder",
            SourceKind::Mjpeg => "mjpeg",
            SourceKind::V4l2 => "v4l2",
        }
    }
}

/// V4L2 pixel format choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureFormat {
    /// MJPEG when the device offers it, else YUYV.
    #[default]
    Auto,
    /// Motion JPEG.
    Mjpeg,
    /// Packed YUV 4:2:2 (`YUYV`).
    Yuyv,
}

fn default_true() -> bool {
    true
}
fn default_poll_ms() -> u64 {
    200
}
fn default_max_file_bytes() -> u64 {
    32 << 20
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}

impl SourceSection {
    /// A section of `kind` with every other key at its default.
    pub fn new(kind: SourceKind) -> Self {
        Self {
            kind,
            path: None,
            command: Vec::new(),
            limit: None,
            repeat: false,
            max_fps: None,
            follow: true,
            poll_interval_ms: default_poll_ms(),
            max_file_bytes: default_max_file_bytes(),
            restart_backoff_ms: default_backoff_ms(),
            max_restart_backoff_ms: default_max_backoff_ms(),
            width: default_width(),
            height: default_height(),
            format: CaptureFormat::Auto,
        }
    }

    /// Checks values that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let kind = self.kind.name();
        match self.kind {
            SourceKind::Cifar | SourceKind::Folder if self.path.is_none() => {
                return Err(format!("source.path: required for kind = \"{kind}\""));
            }
            SourceKind::Mjpeg => {
                if self.command.is_empty() {
                    return Err(
                        "source.command: required for kind = \"mjpeg\" (the program and its arguments, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"-o\", \"-\"])"
                            .into(),
                    );
                }
                if self.command[0].trim().is_empty() {
                    return Err("source.command: the program (first element) is empty".into());
                }
                if self.path.is_some() {
                    return Err(
                        "source.path: not used by kind = \"mjpeg\" (the child writes to stdout)"
                            .into(),
                    );
                }
            }
            _ => {}
        }
        if self.max_file_bytes == 0 {
            return Err("source.max_file_bytes: must be at least 1".into());
        }
        if self.kind != SourceKind::Mjpeg && !self.command.is_empty() {
            return Err(format!(
                "source.command: only used by kind = \"mjpeg\", not \"{kind}\""
            ));
        }
        if self.repeat && self.kind != SourceKind::Cifar {
            return Err(format!(
                "source.repeat: only used by kind = \"cifar\", not \"{kind}\""
            ));
        }
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err("source.path: is empty".into());
        }
        if self.limit == Some(0) {
            return Err("source.limit: must be at least 1 (leave it out for no limit)".into());
        }
        if let Some(fps) = self.max_fps {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(format!(
                    "source.max_fps: must be a positive number of frames per second, got {fps}"
                ));
            }
        }
        if self.poll_interval_ms == 0 {
            return Err("source.poll_interval_ms: must be at least 1".into());
        }
        if self.restart_backoff_ms == 0 {
            return Err("source.restart_backoff_ms: must be at least 1".into());
        }
        if self.max_restart_backoff_ms < self.restart_backoff_ms {
            return Err(format!(
                "source.max_restart_backoff_ms: {} is less than source.restart_backoff_ms = {}",
                self.max_restart_backoff_ms, self.restart_backoff_ms
            ));
        }
        if self.width == 0 || self.height == 0 {
            return Err(format!(
                "source.width/height: capture size {}x{} must be at least 1x1",
                self.width, self.height
            ));
        }
        Ok(())
    }

    /// Makes a relative `path` relative to `base` (the configuration file's folder).
    pub fn resolve_relative(&mut self, base: &Path) {
        if let Some(p) = self.path.as_mut() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// The V4L2 device path (`path`, default `/dev/video0`).
    pub fn device_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DEVICE))
    }

    /// Whether this section describes a live source (frames may be dropped; it never ends by itself
    /// unless `limit` is set).
    pub fn is_live(&self) -> bool {
        match self.kind {
            SourceKind::Cifar => false,
            SourceKind::Folder => self.follow,
            SourceKind::Mjpeg | SourceKind::V4l2 => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SourceSection, String> {
        toml::from_str::<SourceSection>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_kinds() {
        let s = parse("kind = \"v4l2\"").expect("parses");
        assert_eq!(s, SourceSection::new(SourceKind::V4l2));
        assert_eq!(s.device_path(), PathBuf::from("/dev/video0"));
        assert!(s.validate().is_ok());
        let s = parse("kind = \"mjpeg\"\ncommand = [\"ffmpeg\", \"-i\", \"x\"]\nmax_fps = 5.0")
            .expect("parses");
        assert!(s.validate().is_ok());
        assert!(s.is_live());
        let s = parse("kind = \"folder\"\npath = \"img\"\nfollow = false").expect("parses");
        assert!(!s.is_live());
        let s = parse("kind = \"cifar\"\npath = \"x\"\nmax_fps = 30").expect("integer fps");
        assert_eq!(s.max_fps, Some(30.0));
        let s = parse("kind = \"v4l2\"\nformat = \"yuyv\"").expect("parses");
        assert_eq!(s.format, CaptureFormat::Yuyv);
        assert!(parse("kind = \"webcam\"").is_err());
        assert!(parse("kind = \"cifar\"\npath = \"x\"\nbogus = 1").is_err());
    }

    #[test]
    fn validate_names_the_key() {
        let mut s = SourceSection::new(SourceKind::Folder);
        let e = s.validate().expect_err("path missing");
        assert_eq!(e, "source.path: required for kind = \"folder\"");
        s.path = Some("imgs".into());
        assert!(s.validate().is_ok());
        s.max_fps = Some(0.0);
        assert!(s.validate().expect_err("fps").starts_with("source.max_fps"));
        s.max_fps = Some(f64::NAN);
        assert!(s.validate().expect_err("fps").starts_with("source.max_fps"));
        s.max_fps = None;
        s.limit = Some(0);
        assert!(s.validate().expect_err("limit").starts_with("source.limit"));
        s.limit = None;
        s.repeat = true;
        assert!(s
            .validate()
            .expect_err("repeat")
            .starts_with("source.repeat"));
        s.repeat = false;
        s.command = vec!["x".into()];
        assert!(s.validate().expect_err("cmd").starts_with("source.command"));
        let mut m = SourceSection::new(SourceKind::Mjpeg);
        assert!(m.validate().expect_err("cmd").starts_with("source.command"));
        m.command = vec!["ffmpeg".into()];
        m.max_restart_backoff_ms = 10;
        assert!(m
            .validate()
            .expect_err("backoff")
            .starts_with("source.max_restart_backoff_ms"));
    }

    #[test]
    fn resolves_relative_paths_only() {
        let mut s = SourceSection::new(SourceKind::Cifar);
        s.path = Some("data/test_batch.bin".into());
        s.resolve_relative(Path::new("/etc/jmdc"));
        assert_eq!(s.path, Some(PathBuf::from("/etc/jmdc/data/test_batch.bin")));
        s.path = Some("/abs/x.bin".into());
        s.resolve_relative(Path::new("/etc/jmdc"));
        assert_eq!(s.path, Some(PathBuf::from("/abs/x.bin")));
    }
}
