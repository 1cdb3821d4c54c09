//! Candidate plans and how to enumerate them.

use serde::{Deserialize, Serialize};

use crate::codec::{CodecParams, QuantMode};

use super::Profile;

/// One configuration the optimizer may choose: which variant, where to split, how to compress,
/// and the accuracy the calibration table measured for exactly this combination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Index into [`Profile::variants`].
    pub variant: usize,
    /// The edge runs layers `0..split`, the cloud `split..L`. `0` = cloud-only (the 8-bit image is
    /// sent), `L` = edge-only (nothing is sent).
    pub split: usize,
    /// Feature codec for `0 < split < L`; must be `None` for cloud-only and edge-only plans.
    pub codec: Option<CodecParams>,
    /// Top-1 accuracy in `[0, 1]` from the calibration table.
    pub accuracy: f32,
}

impl Candidate {
    /// A split plan `0 < split < L` with its codec.
    pub fn split(variant: usize, split: usize, codec: CodecParams, accuracy: f32) -> Self {
        Candidate {
            variant,
            split,
            codec: Some(codec),
            accuracy,
        }
    }

    /// Cloud-only: the edge sends the 8-bit image and the cloud runs every layer.
    pub fn cloud_only(variant: usize, accuracy: f32) -> Self {
        Candidate {
            variant,
            split: 0,
            codec: None,
            accuracy,
        }
    }

    /// Edge-only: the edge runs all `layers` layers of the variant; no network.
    pub fn edge_only(variant: usize, layers: usize, accuracy: f32) -> Self {
        Candidate {
            variant,
            split: layers,
            codec: None,
            accuracy,
        }
    }
}

/// Enumerates the full grid: for every variant, cloud-only, every inner split × `keep_ratios` ×
/// `modes`, and edge-only.
///
/// `accuracy(variant, split, codec)` looks the combination up in the calibration table (`codec` is
/// `None` for cloud-only and edge-only); combinations it answers `None` for are left out.
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
                        accuracy: acc,
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
