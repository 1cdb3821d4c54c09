//! TEMPORARY shim of the frame source API (CIFAR only); replaced by the real module.
#![allow(missing_docs, clippy::unused_async)]
use std::path::{Path, PathBuf};

use jmdc_core::cifar::CifarFile;
use serde::Deserialize;

use crate::frame::Frame;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub kind: SourceKind,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub repeat: bool,
    #[serde(default)]
    pub max_fps: Option<f64>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Cifar,
}
impl SourceSection {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    pub fn resolve_relative(&mut self, base: &Path) {
        if let Some(p) = self.path.as_mut() {
            jmdc_core::settings::resolve_relative(p, base);
        }
    }
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(String);
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceStats {
    pub delivered: u64,
    pub dropped: u64,
    pub decode_errors: u64,
    pub restarts: u64,
}
#[derive(Debug)]
pub struct FrameFeed {
    frames: std::vec::IntoIter<Frame>,
    delivered: u64,
    limit: usize,
    period: Option<std::time::Duration>,
    next_at: Option<tokio::time::Instant>,
    repeat: Vec<Frame>,
}
pub fn spawn(section: &SourceSection, _input: [usize; 3]) -> Result<FrameFeed, SourceError> {
    let path = section.path.clone().unwrap_or_default();
    let file = CifarFile::open(&path).map_err(|e| SourceError(e.to_string()))?;
    let frames: Vec<Frame> = file
        .iter()
        .enumerate()
        .map(|(i, (label, pixels))| Frame::new(i as u64, Some(label), pixels.to_vec()))
        .collect();
    Ok(FrameFeed {
        frames: frames.clone().into_iter(),
        delivered: 0,
        limit: section.limit.unwrap_or(usize::MAX),
        period: section
            .max_fps
            .map(|f| std::time::Duration::from_secs_f64(1.0 / f)),
        next_at: None,
        repeat: if section.repeat { frames } else { Vec::new() },
    })
}
impl FrameFeed {
    pub async fn recv(&mut self) -> Option<Frame> {
        if self.delivered as usize >= self.limit {
            return None;
        }
        if let Some(at) = self.next_at {
            tokio::time::sleep_until(at).await;
        }
        let mut frame = match self.frames.next() {
            Some(f) => f,
            None if !self.repeat.is_empty() => {
                self.frames = self.repeat.clone().into_iter();
                self.frames.next()?
            }
            None => return None,
        };
        if let Some(p) = self.period {
            self.next_at = Some(tokio::time::Instant::now() + p);
        }
        frame.id = self.delivered;
        frame.captured = std::time::Instant::now();
        self.delivered += 1;
        Some(frame)
    }
    pub fn stats(&self) -> SourceStats {
        SourceStats {
            delivered: self.delivered,
            ..Default::default()
        }
    }
    pub fn is_live(&self) -> bool {
        false
    }
    pub fn describe(&self) -> String {
        "cifar".into()
    }
}
