//! Calibration table: JSON round trip, package stamp, lookup, Pareto pruning, candidates.

use std::path::{Path, PathBuf};

use jmdc_core::calibration;
use jmdc_core::calibration::{
    codec_name, default_path, package_stamp, plan_bytes, top1_and_ci95, CalibrationEntry,
    CalibrationError, CalibrationTable, DatasetInfo, CALIBRATION_FILE, CALIBRATION_FORMAT,
    CODEC_IMAGE, CODEC_NONE,
};
use jmdc_core::codec::{encoded_len, CodecParams, QuantMode};
use jmdc_core::optimizer::{InputCodec, Profile, VariantProfile};
use jmdc_core::package::{LoadOptions, ModelPackage, VerifyMode};

fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/packages/alexnet-cifar10")
}

fn package() -> ModelPackage {
    // Hashes are not needed here: the stamp is the manifest's own hash.
    ModelPackage::load_with(
        &package_dir(),
        &LoadOptions {
            verify: VerifyMode::Lazy,
        },
    )
    .expect("bundled package loads")
}

const N: u64 = 1000;

fn entry(
    variant: &str,
    split: usize,
    keep: f32,
    codec: &str,
    bytes: usize,
    correct: u64,
) -> CalibrationEntry {
    let (top1, ci95) = top1_and_ci95(correct, N);
    CalibrationEntry {
        variant: variant.into(),
        split,
        keep_ratio: keep,
        codec: codec.into(),
        bytes,
        correct,
        top1,
        ci95,
    }
}

/// A synthetic table for the bundled package's `keep100` (13 layers): cloud-only, split 6 (sizes
/// computed as for a `[128, 5, 5]` tensor, the figures are made up) with
/// 2 ρ × 3 codecs, edge-only.
fn table(stamp: &str) -> CalibrationTable {
    let shape = [128usize, 5, 5];
    let mut entries = vec![entry("keep100", 0, 1.0, CODEC_IMAGE, 3072, 800)];
    let corrects = [
        // (ρ, mode, correct)
        (1.0, QuantMode::F32, 800),
        (1.0, QuantMode::F16, 800),
        (1.0, QuantMode::Bits(4), 790),
        (0.5, QuantMode::F32, 700),
        (0.5, QuantMode::F16, 705),
        (0.5, QuantMode::Bits(4), 690),
    ];
    for (keep, mode, correct) in corrects {
        let p = CodecParams {
            keep_ratio: keep,
            mode,
        };
        let bytes = encoded_len(&shape, &p).expect("len");
        entries.push(entry("keep100", 6, keep, &codec_name(mode), bytes, correct));
    }
    entries.push(entry("keep100", 13, 1.0, CODEC_NONE, 0, 800));
    CalibrationTable {
        format: CALIBRATION_FORMAT.into(),
        package: "alexnet-cifar10".into(),
        package_stamp: stamp.into(),
        dataset: DatasetInfo {
            description: "CIFAR-10 (JPEG copy)".into(),
            file: "test_batch.bin".into(),
            sha256: "0".repeat(64),
            images: N,
        },
        created: "2025-01-01T00:00:00Z".into(),
        tool: "test".into(),
        runtime: "onnxruntime 1.31.1".into(),
        keep_ratios: vec![1.0, 0.5],
        codecs: vec!["f32".into(), "f16".into(), "int4".into()],
        pareto_pruned: false,
        coded_bytes_images: None,
        entries,
    }
}

#[test]
fn json_round_trip() {
    let t = table(&"a".repeat(64));
    let json = t.to_json();
    let back = CalibrationTable::from_json(&json, Path::new("mem.json")).expect("parses");
    assert_eq!(back, t);
    assert_eq!(back.to_json(), json);
    // Documented field names.
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    for key in [
        "format",
        "package",
        "package_stamp",
        "dataset",
        "created",
        "tool",
        "runtime",
        "keep_ratios",
        "codecs",
        "entries",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let e = &v["entries"][1];
    for key in [
        "variant",
        "split",
        "keep_ratio",
        "codec",
        "bytes",
        "correct",
        "top1",
        "ci95",
    ] {
        assert!(e.get(key).is_some(), "entry lacks {key}");
    }
    assert_eq!(v["dataset"]["images"], 1000);
}

#[test]
fn malformed_tables_are_refused() {
    let good = table(&"a".repeat(64));
    let p = Path::new("t.json");
    let mut t = good.clone();
    t.format = "jmdc-calibration/9".into();
    let e = CalibrationTable::from_json(&t.to_json(), p).expect_err("format");
    assert!(matches!(e, CalibrationError::Format { .. }), "{e}");
    assert!(e.to_string().contains("t.json"));
    let mut t = good.clone();
    t.entries[2].top1 = 0.1;
    assert!(matches!(
        CalibrationTable::from_json(&t.to_json(), p),
        Err(CalibrationError::Invalid { .. })
    ));
    let mut t = good.clone();
    t.entries[2].correct = N + 1;
    assert!(CalibrationTable::from_json(&t.to_json(), p).is_err());
    let mut t = good.clone();
    let dup = t.entries[2].clone();
    t.entries.push(dup);
    let e = CalibrationTable::from_json(&t.to_json(), p).expect_err("duplicate");
    assert!(e.to_string().contains("duplicate"), "{e}");
    let mut t = good.clone();
    t.entries[2].codec = "int7".into();
    assert!(CalibrationTable::from_json(&t.to_json(), p).is_err());
    let mut t = good.clone();
    t.package_stamp = "XYZ".into();
    assert!(CalibrationTable::from_json(&t.to_json(), p).is_err());
    let e = CalibrationTable::from_json("{not json", p).expect_err("json");
    assert!(matches!(e, CalibrationError::Parse { .. }));
}

#[test]
fn stamp_is_the_manifest_hash_and_mismatch_is_refused() {
    let pkg = package();
    let stamp = package_stamp(&pkg).expect("stamp");
    let bytes = std::fs::read(package_dir().join("manifest.json")).expect("manifest");
    assert_eq!(stamp, jmdc_core::package::sha256_hex(&bytes));
    assert_eq!(default_path(&pkg), package_dir().join(CALIBRATION_FILE));

    let dir = tempfile::tempdir().expect("tempdir");
    let good_path = dir.path().join("good.json");
    calibration::save(&table(&stamp), &good_path).expect("save");
    let loaded = calibration::load_for(&good_path, &pkg).expect("matching stamp loads");
    assert_eq!(loaded.package_stamp, stamp);

    let other = "0123456789abcdef".repeat(4);
    let bad_path = dir.path().join("stale.json");
    calibration::save(&table(&other), &bad_path).expect("save");
    let e = calibration::load_for(&bad_path, &pkg).expect_err("stale table refused");
    let msg = e.to_string();
    assert!(matches!(e, CalibrationError::StampMismatch { .. }));
    assert!(msg.contains("stale.json"), "{msg}");
    assert!(msg.contains(&stamp), "{msg}");
    assert!(msg.contains(&other), "{msg}");

    // Entries must name variants and splits of the package.
    let mut t = table(&stamp);
    t.entries[1].variant = "keep999".into();
    let p = dir.path().join("unknown.json");
    calibration::save(&t, &p).expect("save");
    let e = calibration::load_for(&p, &pkg).expect_err("unknown variant");
    assert!(e.to_string().contains("keep999"), "{e}");

    let e = calibration::load_for(&dir.path().join("none.json"), &pkg).expect_err("missing");
    assert!(matches!(e, CalibrationError::Io { .. }));
    assert!(e.to_string().contains("none.json"));
}

#[test]
fn lookup() {
    let t = table(&"a".repeat(64));
    let q4 = |keep| CodecParams {
        keep_ratio: keep,
        mode: QuantMode::Bits(4),
    };
    assert_eq!(t.lookup("keep100", 6, &q4(1.0)), Some(0.79));
    assert_eq!(t.lookup("keep100", 6, &q4(0.5)), Some(0.69));
    assert_eq!(t.lookup("keep100", 6, &CodecParams::LOSSLESS), Some(0.8));
    assert_eq!(t.lookup("keep100", 6, &q4(0.25)), None, "ρ not measured");
    assert_eq!(t.lookup("keep100", 5, &q4(1.0)), None, "split not measured");
    assert_eq!(
        t.lookup("keep050", 6, &q4(1.0)),
        None,
        "variant not measured"
    );
    assert_eq!(
        t.lookup(
            "keep100",
            6,
            &CodecParams {
                keep_ratio: 1.0,
                mode: QuantMode::Bits(2)
            }
        ),
        None
    );
    assert_eq!(t.lookup_cloud_only("keep100"), Some(0.8));
    assert_eq!(t.lookup_edge_only("keep100"), Some(0.8));
    assert_eq!(t.lookup_cloud_only("keep050"), None);
    assert_eq!(t.accuracy("keep100", 0, None), Some(0.8));
    assert_eq!(t.accuracy("keep100", 13, None), Some(0.8));
    assert_eq!(t.accuracy("keep100", 12, None), None);
    assert_eq!(t.accuracy("keep100", 6, Some(q4(0.5))), Some(0.69));
    assert_eq!(
        t.modes(),
        vec![QuantMode::F32, QuantMode::F16, QuantMode::Bits(4)]
    );

    // Candidates for an optimizer profile whose variant 0 is keep100 (13 layers).
    let mut shapes = vec![vec![3, 32, 32]];
    shapes.extend((0..13).map(|_| vec![128, 5, 5]));
    let profile = Profile::new(vec![VariantProfile {
        name: "keep100".into(),
        edge_layer_us: vec![1.0; 13],
        cloud_layer_us: vec![1.0; 13],
        boundary_shapes: shapes,
    }]);
    let c = t.candidates(&profile);
    assert_eq!(c.len(), 8, "cloud-only + 6 at split 6 + edge-only");
    assert_eq!((c[0].split, c[0].codec), (0, None));
    assert_eq!((c[7].split, c[7].codec), (13, None));
    assert!(c[1..7].iter().all(|c| c.split == 6 && c.codec.is_some()));
}

#[test]
fn pareto_pruning() {
    let mut t = table(&"a".repeat(64));
    let dropped = t.pareto_prune();
    // Split 6, by bytes: int4 ρ=.5 (872 B, 690), int4 ρ=1 (1636 B, 790), f16 ρ=.5 (3368 B, 705),
    // f16 ρ=1 (6436 B, 800), f32 ρ=.5 (6696 B, 700), f32 ρ=1 (12836 B, 800). Dominated: f16 ρ=.5
    // (by int4 ρ=1), f32 ρ=.5 and f32 ρ=1 (same accuracy as f16 ρ=1, more bytes).
    assert_eq!(dropped, 3);
    assert!(t.pareto_pruned);
    let left: Vec<(f32, &str)> = t
        .entries
        .iter()
        .filter(|e| e.split == 6)
        .map(|e| (e.keep_ratio, e.codec.as_str()))
        .collect();
    assert_eq!(left, vec![(1.0, "f16"), (1.0, "int4"), (0.5, "int4")]);
    // Cloud-only and edge-only are alone in their (variant, split): never pruned.
    assert!(t.lookup_cloud_only("keep100").is_some());
    assert!(t.lookup_edge_only("keep100").is_some());
    // Every survivor is undominated within its group.
    for a in &t.entries {
        for b in &t.entries {
            if (a.variant.as_str(), a.split) == (b.variant.as_str(), b.split) && a != b {
                let dominates = b.bytes <= a.bytes
                    && b.correct >= a.correct
                    && (b.bytes < a.bytes || b.correct > a.correct);
                assert!(!dominates, "{b:?} dominates {a:?}");
            }
        }
    }
    // Idempotent; survives a round trip with its flag.
    assert_eq!(t.pareto_prune(), 0);
    let back = CalibrationTable::from_json(&t.to_json(), Path::new("m")).expect("parse");
    assert!(back.pareto_pruned);

    // Exact duplicates in bytes and accuracy: the first is kept.
    let mut t = table(&"a".repeat(64));
    let mut twin = t.entries[3].clone();
    twin.keep_ratio = 0.75; // same bytes and correct as int4 ρ=1, later in the table
    t.entries.insert(4, twin);
    t.pareto_prune();
    let kept: Vec<f32> = t
        .entries
        .iter()
        .filter(|e| e.codec == "int4")
        .map(|e| e.keep_ratio)
        .collect();
    assert_eq!(kept, vec![1.0, 0.5]);
}

#[test]
fn plan_bytes_follow_the_codec() {
    let pkg = package();
    assert_eq!(plan_bytes(pkg.manifest(), "keep100", 0, None), Ok(3072));
    assert_eq!(plan_bytes(pkg.manifest(), "keep100", 13, None), Ok(0));
    let p = CodecParams {
        keep_ratio: 0.5,
        mode: QuantMode::Bits(4),
    };
    assert_eq!(
        plan_bytes(pkg.manifest(), "keep100", 6, Some(&p)),
        Ok(encoded_len(&[64, 5, 5], &p).expect("len")) // split 6 = output of pool2
    );
    assert!(plan_bytes(pkg.manifest(), "keep100", 6, None).is_err());
}

/// `table` plus cloud-only JPEG entries for keep100 at q90/q75/q50 (mean bytes, made-up counts).
fn table_with_jpeg(stamp: &str) -> CalibrationTable {
    let mut t = table(stamp);
    t.entries
        .insert(1, entry("keep100", 0, 1.0, "jpeg90", 1126, 798));
    t.entries
        .insert(2, entry("keep100", 0, 1.0, "jpeg75", 965, 801));
    t.entries
        .insert(3, entry("keep100", 0, 1.0, "jpeg50", 880, 770));
    t.codecs
        .extend(["jpeg90".into(), "jpeg75".into(), "jpeg50".into()]);
    t
}

#[test]
fn jpeg_entries_round_trip_lookup_and_become_candidates() {
    let t = table_with_jpeg(&"a".repeat(64));
    let back = CalibrationTable::from_json(&t.to_json(), Path::new("mem.json")).expect("parses");
    assert_eq!(back, t);
    assert_eq!(t.jpeg_qualities(), vec![90, 75, 50]);
    assert_eq!(t.lookup_cloud_only_jpeg("keep100", 90), Some(0.798));
    assert_eq!(t.jpeg_entry("keep100", 75).map(|e| e.bytes), Some(965));
    assert_eq!(t.lookup_cloud_only_jpeg("keep100", 60), None);
    assert_eq!(t.lookup_cloud_only_jpeg("keep050", 90), None);
    // The raw image entry is still what cloud-only means; JPEG names are not quantization modes.
    assert_eq!(t.lookup_cloud_only("keep100"), Some(0.8));
    assert_eq!(
        t.modes(),
        vec![QuantMode::F32, QuantMode::F16, QuantMode::Bits(4)]
    );
    let mut shapes = vec![vec![3, 32, 32]];
    shapes.extend((0..13).map(|_| vec![128, 5, 5]));
    let profile = Profile::new(vec![VariantProfile {
        name: "keep100".into(),
        edge_layer_us: vec![1.0; 13],
        cloud_layer_us: vec![1.0; 13],
        boundary_shapes: shapes,
    }]);
    let c = t.candidates(&profile);
    assert_eq!(
        c.len(),
        8 + 3,
        "the grid, then one JPEG candidate per quality"
    );
    assert_eq!(c[0].input, InputCodec::Raw);
    let jpeg: Vec<(InputCodec, f32)> = c[8..].iter().map(|c| (c.input, c.accuracy)).collect();
    assert_eq!(
        jpeg,
        vec![
            (
                InputCodec::Jpeg {
                    quality: 90,
                    mean_bytes: 1126
                },
                0.798
            ),
            (
                InputCodec::Jpeg {
                    quality: 75,
                    mean_bytes: 965
                },
                0.801
            ),
            (
                InputCodec::Jpeg {
                    quality: 50,
                    mean_bytes: 880
                },
                0.77
            ),
        ]
    );
    assert!(c[8..].iter().all(|c| c.split == 0 && c.codec.is_none()));
    // A table without JPEG entries offers no JPEG candidate.
    assert!(table(&"a".repeat(64))
        .candidates(&profile)
        .iter()
        .all(|c| c.input == InputCodec::Raw));
    assert!(table(&"a".repeat(64)).jpeg_qualities().is_empty());
}

#[test]
fn malformed_jpeg_entries_are_refused() {
    let good = table_with_jpeg(&"a".repeat(64));
    let p = Path::new("t.json");
    for (i, bad) in [
        (1, entry("keep100", 6, 1.0, "jpeg90", 1126, 798)), // not at split 0
        (1, entry("keep100", 0, 1.0, "jpeg0", 1126, 798)),  // quality out of range
        (1, entry("keep100", 0, 1.0, "jpeg101", 1126, 798)),
        (1, entry("keep100", 0, 1.0, "jpeg90", 0, 798)), // no size
        (2, entry("keep100", 0, 1.0, "jpeg90", 1126, 798)), // duplicate
    ] {
        let mut t = good.clone();
        t.entries[i] = bad.clone();
        let e = CalibrationTable::from_json(&t.to_json(), p).expect_err(&bad.codec);
        assert!(matches!(e, CalibrationError::Invalid { .. }), "{e}");
    }
}

#[test]
fn pareto_pruning_keeps_raw_and_jpeg_apart() {
    let mut t = table_with_jpeg(&"a".repeat(64));
    // jpeg75 (965 B, 801) dominates raw (3,072 B, 800) in bytes and accuracy, and jpeg90; but
    // the raw image costs no codec time, so only jpeg90 goes.
    let dropped_before: Vec<String> = t.entries.iter().map(|e| e.codec.clone()).collect();
    t.pareto_prune();
    let left: Vec<&str> = t
        .entries
        .iter()
        .filter(|e| e.split == 0)
        .map(|e| e.codec.as_str())
        .collect();
    assert_eq!(
        left,
        vec![CODEC_IMAGE, "jpeg75", "jpeg50"],
        "{dropped_before:?}"
    );
}

/// The table committed beside the bundled package must belong to it: a rebuilt package needs a
/// new table (`jmdc-edge calibrate`, see docs/calibration.md).
#[test]
fn committed_table_matches_the_bundled_package() {
    let pkg = package();
    let path = default_path(&pkg);
    assert!(
        path.is_file(),
        "{} is missing: the bundled package ships its table",
        path.display()
    );
    let t = calibration::load_default(&pkg).expect("committed table matches its package");
    for v in pkg.variants() {
        let unsplit = t.lookup_cloud_only(&v.name).expect("cloud-only entry");
        assert_eq!(t.lookup_edge_only(&v.name), Some(unsplit), "{}", v.name);
        for s in 1..v.num_layers() {
            if let Some(acc) = t.lookup(&v.name, s, &CodecParams::LOSSLESS) {
                assert_eq!(
                    acc, unsplit,
                    "{} split {s}: lossless split ≠ unsplit",
                    v.name
                );
            }
        }
        // JPEG entries (when the table has them) sit at split 0 with a plausible mean size and
        // stay within a few points of the raw image (q90 and q75 of a JPEG-q75 source).
        for q in t.jpeg_qualities() {
            let e = t
                .jpeg_entry(&v.name, q)
                .expect("every variant has every JPEG quality");
            assert!(
                e.bytes > 300 && e.bytes < 3072,
                "{} jpeg{q}: {} B",
                v.name,
                e.bytes
            );
            if q >= 75 {
                assert!(
                    (e.top1 - f64::from(unsplit)).abs() < 0.02,
                    "{} jpeg{q}: {} vs raw {unsplit}",
                    v.name,
                    e.top1
                );
            }
        }
        // Measured on the same test file as the manifest's figure: they agree.
        if let Some(m) = v.accuracy.as_ref().filter(|m| m.images == t.dataset.images) {
            assert!(
                (f64::from(unsplit) - m.top1).abs() < 1e-4,
                "{}: table {unsplit}, manifest {}",
                v.name,
                m.top1
            );
        }
    }
}

#[test]
fn merge_jpeg_inserts_replaces_and_refuses_other_images() {
    use jmdc_core::calibration::{parse_jpeg_list, MergeReport};
    let mut base = table(&"a".repeat(64));
    let measured = table_with_jpeg(&"a".repeat(64));
    let report = base.merge_jpeg(&measured).expect("merges");
    assert_eq!(
        report,
        MergeReport {
            inserted: 3,
            replaced: 0,
            raw_mismatches: vec![]
        }
    );
    assert_eq!(
        base.entries, measured.entries,
        "JPEG entries right after the raw one"
    );
    assert_eq!(base.codecs, measured.codecs);
    // Merging again replaces; a different raw count is reported, not fatal.
    let mut remeasured = measured.clone();
    remeasured.entries[0] = entry("keep100", 0, 1.0, CODEC_IMAGE, 3072, 799);
    remeasured.entries[1] = entry("keep100", 0, 1.0, "jpeg90", 1120, 790);
    let report = base.merge_jpeg(&remeasured).expect("merges");
    assert_eq!((report.inserted, report.replaced), (0, 3));
    assert_eq!(report.raw_mismatches.len(), 1, "{report:?}");
    assert_eq!(base.jpeg_entry("keep100", 90).map(|e| e.correct), Some(790));
    assert_eq!(
        base.lookup_cloud_only("keep100"),
        Some(0.8),
        "raw entry kept"
    );
    // Other images, other package: refused.
    let mut other = measured.clone();
    other.dataset.images = 2000;
    assert!(base.clone().merge_jpeg(&other).is_err());
    let mut other = measured.clone();
    other.dataset.sha256 = "1".repeat(64);
    assert!(base.clone().merge_jpeg(&other).is_err());
    let mut other = measured;
    other.package_stamp = "b".repeat(64);
    assert!(base.merge_jpeg(&other).is_err());

    assert_eq!(parse_jpeg_list("90,75,50"), Ok(vec![90, 75, 50]));
    assert_eq!(parse_jpeg_list("jpeg90, 90 ,1"), Ok(vec![90, 1]));
    assert_eq!(parse_jpeg_list("none"), Ok(vec![]));
    assert_eq!(parse_jpeg_list(""), Ok(vec![]));
    for bad in ["0", "101", "x", "-5", "90;75"] {
        assert!(parse_jpeg_list(bad).is_err(), "{bad}");
    }
}
