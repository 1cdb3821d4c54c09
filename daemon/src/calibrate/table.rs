//! The calibration table built from the counts (cloud-only, split and edge-only entries, with
//! their bytes and the data set's identity).

use std::path::Path;

use anyhow::{anyhow, Result};
use jmdc_core::calibration::{
    codec_name, plan_bytes, top1_and_ci95, utc_now_rfc3339, CalibrationEntry, CalibrationTable,
    DatasetInfo, CALIBRATION_FORMAT, CODEC_IMAGE, CODEC_NONE,
};
use jmdc_core::codec::CodecParams;
use jmdc_core::jpeg::{self};

use super::measure::{Counts, Setup};
use super::CalibrateOptions;

/// The calibration table from the counts: per variant the cloud-only image, JPEG, every split
/// candidate and edge-only entries.
pub(super) fn build_table(
    setup: &Setup,
    opts: &CalibrateOptions,
    counts: &Counts,
) -> Result<CalibrationTable> {
    let Setup {
        pkg,
        n,
        plans,
        stamp,
        images_sha,
        ..
    } = setup;
    let (pkg, n, plans) = (pkg, *n, plans.as_slice());
    let has_coded = !opts.only_jpeg && opts.modes.iter().any(|m| m.is_coded());
    let coded_n = opts.coded_images.clamp(1, n) as u64;
    let mut table = CalibrationTable {
        format: CALIBRATION_FORMAT.to_string(),
        package: pkg.name().to_string(),
        package_stamp: stamp.clone(),
        dataset: DatasetInfo {
            description: opts.dataset_description.clone(),
            file: opts.images.display().to_string(),
            sha256: images_sha.clone(),
            images: n as u64,
        },
        created: utc_now_rfc3339(),
        tool: format!("jmdc-edge {}", env!("CARGO_PKG_VERSION")),
        runtime: format!("onnxruntime {}", jmdc_core::runtime::ORT_VERSION),
        keep_ratios: opts.keep_ratios.clone(),
        codecs: if opts.only_jpeg {
            Vec::new()
        } else {
            opts.modes.iter().map(|&m| codec_name(m)).collect()
        }
        .into_iter()
        .chain(opts.jpeg_qualities.iter().map(|&q| jpeg::codec_name(q)))
        .collect(),
        pareto_pruned: false,
        coded_bytes_images: has_coded.then_some(coded_n),
        entries: Vec::new(),
    };
    let n64 = n as u64;
    let entry = |variant: &str, split, keep_ratio, codec: String, bytes, correct| {
        let (top1, ci95) = top1_and_ci95(correct, n64);
        CalibrationEntry {
            variant: variant.to_string(),
            split,
            keep_ratio,
            codec,
            bytes,
            correct,
            top1,
            ci95,
        }
    };
    for (vi, plan) in plans.iter().enumerate() {
        let unsplit = counts.unsplit[vi];
        let image_bytes =
            plan_bytes(pkg.manifest(), &plan.name, 0, None).map_err(|e| anyhow!(e))?;
        // Cloud-only: the cloud normalises the 8-bit image exactly as the edge does here.
        table.entries.push(entry(
            &plan.name,
            0,
            1.0,
            CODEC_IMAGE.to_string(),
            image_bytes,
            unsplit,
        ));
        for (qi, &q) in opts.jpeg_qualities.iter().enumerate() {
            // Mean JPEG size over the N images, to the nearest byte.
            let mean = (counts.jpeg_bytes[qi] + n64 / 2) / n64;
            table.entries.push(entry(
                &plan.name,
                0,
                1.0,
                jpeg::codec_name(q),
                usize::try_from(mean).unwrap_or(usize::MAX),
                counts.jpeg[vi][qi],
            ));
        }
        for (si, sp) in plan.splits.iter().enumerate() {
            for &(keep_ratio, mode, g) in &sp.candidates {
                let params = CodecParams { keep_ratio, mode };
                let bytes = if mode.is_coded() {
                    // Mean over the N images, to the nearest byte.
                    let total = counts.coded_bytes[vi][si][g];
                    usize::try_from((total + coded_n / 2) / coded_n).unwrap_or(usize::MAX)
                } else {
                    plan_bytes(pkg.manifest(), &plan.name, sp.split, Some(&params))
                        .map_err(|e| anyhow!(e))?
                };
                table.entries.push(entry(
                    &plan.name,
                    sp.split,
                    keep_ratio,
                    codec_name(mode),
                    bytes,
                    counts.groups[vi][si][g],
                ));
            }
        }
        table.entries.push(entry(
            &plan.name,
            plan.layers,
            1.0,
            CODEC_NONE.to_string(),
            0,
            unsplit,
        ));
    }
    if opts.pareto_prune {
        table.pareto_prune();
    }
    table.validate(Path::new("<calibration>"))?;
    Ok(table)
}
