//! The calibration grid: per variant which splits are measured, the shape of each split tensor,
//! and the groups of candidates that decode to the same tensor (one tail run each).

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use jmdc_core::codec::{kept_positions, CodecParams, QuantMode};
use jmdc_core::jpeg::{self};
use jmdc_core::package::ModelPackage;

use super::CalibrateOptions;

/// One distinct decoded tensor at a split: all candidates with this (fixed-width mode, kept
/// count) share it — an entropy-coded mode decodes to exactly what its fixed-width form does.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// Parameters used for the round trip (the first ρ of the grid that maps here; fixed-width).
    pub(super) params: CodecParams,
    /// Whether the entropy-coded form is measured too (its bytes, and that it decodes to the
    /// same tensor).
    pub(super) coded: bool,
}

/// The work for one variant: which splits, their shapes, groups and candidates.
#[derive(Debug, Clone)]
pub(super) struct VariantPlan {
    pub(super) name: String,
    pub(super) layers: usize,
    pub(super) splits: Vec<SplitPlan>,
}

#[derive(Debug, Clone)]
pub(super) struct SplitPlan {
    pub(super) split: usize,
    pub(super) shape: Vec<usize>,
    pub(super) groups: Vec<Group>,
    /// (ρ, mode, group index) in table order (mode-major, then ρ).
    pub(super) candidates: Vec<(f32, QuantMode, usize)>,
}

pub(super) fn plan_variants(
    pkg: &ModelPackage,
    opts: &CalibrateOptions,
) -> Result<Vec<VariantPlan>> {
    if opts.keep_ratios.is_empty() || opts.modes.is_empty() {
        bail!("the ρ and codec grids must not be empty");
    }
    for &r in &opts.keep_ratios {
        CodecParams {
            keep_ratio: r,
            mode: QuantMode::F32,
        }
        .validate()
        .map_err(|e| anyhow!("keep ratio {r}: {e}"))?;
    }
    for &m in &opts.modes {
        m.validate().map_err(|e| anyhow!("codec {m}: {e}"))?;
    }
    for &q in &opts.jpeg_qualities {
        jpeg::validate_quality(q)?;
    }
    let names: Vec<String> = if opts.variants.is_empty() {
        pkg.variant_names().map(String::from).collect()
    } else {
        for v in &opts.variants {
            pkg.variant(v)?;
        }
        opts.variants.clone()
    };
    let mut plans = Vec::new();
    for name in names {
        let layers = pkg.variant(&name)?.num_layers();
        let inner: Vec<usize> = if opts.only_jpeg {
            Vec::new()
        } else if opts.splits.is_empty() {
            (1..layers).collect()
        } else {
            for &s in &opts.splits {
                if s == 0 || s >= layers {
                    bail!(
                        "split {s} is not an inner split of {name} (1..{}); cloud-only and \
                         edge-only are always measured",
                        layers - 1
                    );
                }
            }
            let mut s = opts.splits.clone();
            s.sort_unstable();
            s.dedup();
            s
        };
        let mut splits = Vec::new();
        for split in inner {
            let shape = pkg.split_tensor_shape(&name, split)?.to_vec();
            let mut groups: Vec<Group> = Vec::new();
            let mut keys: HashMap<(QuantMode, usize), usize> = HashMap::new();
            let mut candidates = Vec::new();
            for &mode in &opts.modes {
                for &keep_ratio in &opts.keep_ratios {
                    let kept = match shape.as_slice() {
                        [_, h, w] => kept_positions(*h, *w, keep_ratio),
                        _ => shape.iter().product(),
                    };
                    let fixed = mode.fixed_width();
                    let g = *keys.entry((fixed, kept)).or_insert_with(|| {
                        groups.push(Group {
                            params: CodecParams {
                                keep_ratio,
                                mode: fixed,
                            },
                            coded: false,
                        });
                        groups.len() - 1
                    });
                    if mode.is_coded() {
                        if let Some(group) = groups.get_mut(g) {
                            group.coded = true;
                        }
                    }
                    candidates.push((keep_ratio, mode, g));
                }
            }
            splits.push(SplitPlan {
                split,
                shape,
                groups,
                candidates,
            });
        }
        plans.push(VariantPlan {
            name,
            layers,
            splits,
        });
    }
    Ok(plans)
}
