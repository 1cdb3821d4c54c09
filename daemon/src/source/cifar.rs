//! CIFAR-10 binary file source: records read on demand from the file held in memory.

use std::sync::Arc;
use std::time::Instant;

use jmdc_core::cifar::{CifarFile, IMAGE_SHAPE};

use super::capture::{Background, Captured, Counters, Started};
use super::imaging::{chw_to_image, to_model_input, TargetSize};
use super::{SourceError, SourceSection};

/// Cursor over a CIFAR file; frames are produced when the consumer asks (no drops).
#[derive(Debug)]
pub(crate) struct CifarCursor {
    file: CifarFile,
    next: usize,
    repeat: bool,
    target: TargetSize,
    origin: String,
}

impl CifarCursor {
    /// The next record, converted to the model size; `None` at the end (without `repeat`).
    pub(crate) fn next(&mut self, counters: &Counters) -> Option<Captured> {
        // Bounded: at most one pass over the file looking for a convertible record.
        for _ in 0..self.file.len() {
            if self.next >= self.file.len() {
                if !self.repeat {
                    return None;
                }
                self.next = 0;
            }
            let index = self.next;
            self.next += 1;
            let (label, px) = self.file.get(index)?;
            let captured = Instant::now();
            let [_, h, w] = IMAGE_SHAPE;
            let pixels = if (self.target.width as usize, self.target.height as usize) == (w, h) {
                px.to_vec()
            } else {
                let img = chw_to_image(px, w as u32, h as u32)?;
                match to_model_input(&img, self.target) {
                    Ok(p) => p,
                    Err(e) => {
                        counters.decode_error(&self.origin, &e);
                        continue;
                    }
                }
            };
            return Some(Captured {
                label: Some(label),
                pixels,
                origin: format!("{}#{index}", self.origin),
                captured,
                jpeg: None,
            });
        }
        None
    }
}

/// Opens the CIFAR file named by `section.path`.
pub(crate) fn start(
    section: &SourceSection,
    target: TargetSize,
) -> Result<Started<CifarCursor>, SourceError> {
    let path = section
        .path
        .as_ref()
        .ok_or_else(|| SourceError::Config("source.path: required for kind = \"cifar\"".into()))?;
    let file = CifarFile::open(path)?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let description = format!(
        "cifar: {} ({} images{})",
        path.display(),
        file.len(),
        if section.repeat { ", repeat" } else { "" }
    );
    let cursor = CifarCursor {
        file,
        next: 0,
        repeat: section.repeat,
        target,
        origin: name,
    };
    Ok(Started {
        producer: cursor,
        counters: Arc::new(Counters::default()),
        description,
        background: Background::default(),
    })
}
