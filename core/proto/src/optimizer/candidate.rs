//! Candidate plans and how to enumerate them.

use serde::{Deserialize, Serialize};

use crate::codec::{CodecParams, QuantMode};

use super::Profile;

/// How a cloud-only plan (split 0) sends the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum InputCodec {
    /// The raw 8-bit CHW image (as many bytes as the input has elements). Every plan that is not
    /// cloud-only has this value (it sends no image).
    #[default]
    Raw,
    /// A JPEG of the 8-bit image at `quality` (1–100); its size depends on the image, so the
    /// candidate carries the **mean payload bytes** the calibration table measured.
    Jpeg {
        /// JPEG quality 1–100.
        quality: u8,
        /// Mean JPEG payload bytes per frame (calibration table), protocol header not included.
        mean_bytes: u32,
    },
}

impl InputCodec {
    /// The JPEG quality, for a JPEG input.
    pub fn jpeg_quality(&self) -> Option<u8> {
        match *self {
            InputCodec::Raw => None,
            InputCodec::Jpeg { quality, .. } => Some(quality),
        }
    }

    /// True for [`InputCodec::Jpeg`].
    pub fn is_jpeg(&self) -> bool {
        matches!(self, InputCodec::Jpeg { .. })
    }

    /// Same codec (kind and quality; the measured size is not compared).
    pub fn same_codec(&self, other: &InputCodec) -> bool {
        self.jpeg_quality() == other.jpeg_quality()
    }
}

/// One configuration the optimizer may choose: which variant, where to split, how to compress,
/// and the accuracy the calibration table measured for exactly this combination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Index into [`Profile::variants`].
    pub variant: usize,
    /// The edge runs layers `0..split`, the cloud `split..L`. `0` = cloud-only (the image is
    /// sent, raw or as JPEG per [`input`](Self::input)), `L` = edge-only (nothing is sent).
    pub split: usize,
    /// Feature codec for `0 < split < L`; must be `None` for cloud-only and edge-only plans.
    pub codec: Option<CodecParams>,
    /// How a cloud-only plan sends the image; must be [`InputCodec::Raw`] for every other split.
    #[serde(default)]
    pub input: InputCodec,
    /// Top-1 accuracy in `[0, 1]` from the calibration table.
    pub accuracy: f32,
    /// For an entropy-coded codec ([`QuantMode::Coded`]), whose size depends on the values: the
    /// **mean payload bytes** per frame the calibration table measured (protocol header not
    /// included). `None` for every other plan (their size is exact, from the codec's formula).
    #[serde(default)]
    pub mean_payload_bytes: Option<u32>,
}

impl Candidate {
    /// A split plan `0 < split < L` with its codec.
    pub fn split(variant: usize, split: usize, codec: CodecParams, accuracy: f32) -> Self {
        Candidate {
            variant,
            split,
            codec: Some(codec),
            input: InputCodec::Raw,
            accuracy,
            mean_payload_bytes: None,
        }
    }

    /// This plan with the measured mean payload bytes of its (entropy-coded) codec.
    pub fn with_mean_payload_bytes(self, bytes: u32) -> Self {
        Candidate {
            mean_payload_bytes: Some(bytes),
            ..self
        }
    }

    /// Cloud-only: the edge sends the 8-bit image and the cloud runs every layer.
    pub fn cloud_only(variant: usize, accuracy: f32) -> Self {
        Candidate {
            variant,
            split: 0,
            codec: None,
            input: InputCodec::Raw,
            accuracy,
            mean_payload_bytes: None,
        }
    }

    /// Cloud-only with the image sent as a JPEG at `quality`, `mean_bytes` per frame on average
    /// (both from the calibration table).
    pub fn cloud_only_jpeg(variant: usize, quality: u8, mean_bytes: u32, accuracy: f32) -> Self {
        Candidate {
            variant,
            split: 0,
            codec: None,
            input: InputCodec::Jpeg {
                quality,
                mean_bytes,
            },
            accuracy,
            mean_payload_bytes: None,
        }
    }

    /// Edge-only: the edge runs all `layers` layers of the variant; no network.
    pub fn edge_only(variant: usize, layers: usize, accuracy: f32) -> Self {
        Candidate {
            variant,
            split: layers,
            codec: None,
            input: InputCodec::Raw,
            accuracy,
            mean_payload_bytes: None,
        }
    }
}

/// Enumerates the full grid: for every variant, cloud-only, every inner split × `keep_ratios` ×
/// `modes`, and edge-only.
///
/// `accuracy(variant, split, codec)` looks the combination up in the calibration table (`codec` is
/// `None` for cloud-only and edge-only); combinations it answers `None` for are left out. The
/// cloud-only candidates here send the raw image; JPEG-input candidates (whose size must be
/// measured) are added from a calibration table by
/// [`CalibrationTable::candidates`](crate::calibration::CalibrationTable::candidates).
pub fn candidate_grid<F>(
    profile: &Profile,
    keep_ratios: &[f32],
    modes: &[QuantMode],
    mut accuracy: F,
) -> Vec<Candidate>
where
    F: FnMut(usize, usize, Option<CodecParams>) -> Option<f32>,
{
    let mut out = Vec::new();
    for (v, variant) in profile.variants.iter().enumerate() {
        let l = variant.layers();
        for split in 0..=l {
            if split == 0 || split == l {
                if let Some(acc) = accuracy(v, split, None) {
                    out.push(Candidate {
                        variant: v,
                        split,
                        codec: None,
                        input: InputCodec::Raw,
                        accuracy: acc,
                        mean_payload_bytes: None,
                    });
                }
                continue;
            }
            for &keep_ratio in keep_ratios {
                for &mode in modes {
                    let codec = CodecParams { keep_ratio, mode };
                    if let Some(acc) = accuracy(v, split, Some(codec)) {
                        out.push(Candidate::split(v, split, codec, acc));
                    }
                }
            }
        }
    }
    out
}
