//! `jmdc-edge calibrate` arguments and the command itself (bundled package and samples, tiny grid).

use std::path::PathBuf;

use clap::Parser;
use jmdc_core::calibration;
use jmdc_core::codec::QuantMode;
use jmdc_core::package::ModelPackage;
use jmdc_edge::calibrate::{calibrate_command, CalibrateArgs, DEFAULT_BATCH};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: CalibrateArgs,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

fn parse(args: &[&str]) -> Result<CalibrateArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("calibrate").chain(args.iter().copied())).map(|c| c.args)
}

#[test]
fn defaults_and_parsing() {
    let a = parse(&["--package", "p", "--images", "i.bin"]).expect("minimal");
    let o = a.to_options().expect("options");
    assert_eq!(o.keep_ratios, vec![1.0, 0.75, 0.5, 0.25]);
    assert_eq!(
        o.modes,
        vec![
            QuantMode::F32,
            QuantMode::F16,
            QuantMode::Bits(8),
            QuantMode::Bits(6),
            QuantMode::Bits(5),
            QuantMode::Bits(4),
            QuantMode::Bits(3),
            QuantMode::Bits(2),
            QuantMode::Coded(8),
            QuantMode::Coded(6),
            QuantMode::Coded(5),
            QuantMode::Coded(4),
            QuantMode::Coded(3),
            QuantMode::Coded(2)
        ]
    );
    assert_eq!(o.coded_images, 1000);
    assert_eq!(o.limit, None);
    assert_eq!(o.threads, 0);
    assert_eq!(o.batch_size, DEFAULT_BATCH);
    assert!(o.progress && !o.pareto_prune);
    assert_eq!(a.out, None);
    assert_eq!(o.jpeg_qualities, vec![90, 75, 50]);
    assert!(!o.only_jpeg);

    let a = parse(&[
        "--package",
        "p",
        "--images",
        "i.bin",
        "-n",
        "500",
        "--keep",
        "1,0.5",
        "--codecs",
        "f16,int4",
        "--threads",
        "3",
        "--out",
        "t.json",
        "--variants",
        "keep050",
        "--splits",
        "3,6",
        "--pareto-prune",
        "--quiet",
        "--jpeg",
        "jpeg95, 60",
    ])
    .expect("full");
    let o = a.to_options().expect("options");
    assert_eq!(o.limit, Some(500));
    assert_eq!(o.keep_ratios, vec![1.0, 0.5]);
    assert_eq!(o.modes, vec![QuantMode::F16, QuantMode::Bits(4)]);
    assert_eq!(o.threads, 3);
    assert_eq!(o.variants, vec!["keep050"]);
    assert_eq!(o.splits, vec![3, 6]);
    assert!(o.pareto_prune && !o.progress);
    assert_eq!(a.out, Some(PathBuf::from("t.json")));
    assert_eq!(o.jpeg_qualities, vec![95, 60]);
    let o = parse(&["--package", "p", "--images", "i", "--jpeg", "none"])
        .expect("none")
        .to_options()
        .expect("options");
    assert!(o.jpeg_qualities.is_empty());
    let o = parse(&[
        "--package",
        "p",
        "--images",
        "i",
        "--only-jpeg",
        "--jpeg",
        "50",
    ])
    .expect("only-jpeg")
    .to_options()
    .expect("options");
    assert!(o.only_jpeg);
    assert_eq!(o.jpeg_qualities, vec![50]);

    for bad in [
        vec!["--keep", "0"],
        vec!["--keep", "1.5"],
        vec!["--keep", "x"],
        vec!["--codecs", "int7"],
        vec!["--codecs", "u8"],
        vec!["--splits", "a"],
        vec!["--jpeg", "0"],
        vec!["--jpeg", "101"],
        vec!["--jpeg", "high"],
        vec!["--only-jpeg", "--jpeg", "none"],
        vec!["--only-jpeg", "--splits", "3"],
        vec!["--only-jpeg", "--pareto-prune"],
    ] {
        let mut args = vec!["--package", "p", "--images", "i.bin"];
        args.extend(bad.iter().copied());
        let a = parse(&args).expect("clap accepts the text");
        let e = a.to_options().expect_err("options refuse it");
        assert!(e.to_string().starts_with("--"), "{bad:?}: {e}");
    }
    assert!(
        parse(&["--images", "i.bin"]).is_err(),
        "--package is required"
    );
}

#[test]
fn command_writes_a_table_that_loads_for_the_package() {
    jmdc_core::runtime::init_onnxruntime(None)
        .expect("ONNX Runtime (scripts/fetch-onnxruntime.sh)");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cal.json");
    let pkg_dir = repo_root().join("models/packages/alexnet-cifar10");
    let samples = repo_root().join("models/samples/cifar10-test-256.bin");
    let a = parse(&[
        "--package",
        pkg_dir.to_str().expect("utf-8"),
        "--images",
        samples.to_str().expect("utf-8"),
        "-n",
        "40",
        "--keep",
        "1,0.5",
        "--codecs",
        "f32,f16,int4",
        "--variants",
        "keep025",
        "--splits",
        "6,11",
        "--pareto-prune",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8"),
    ])
    .expect("args");
    let written = calibrate_command(&a).expect("calibrate");
    assert_eq!(written, out);
    let pkg = ModelPackage::load(&pkg_dir).expect("package");
    let t = calibration::load_for(&out, &pkg).expect("table matches the package");
    assert_eq!(t.dataset.images, 40);
    assert!(t.pareto_pruned);
    // Rank-1 split 11: ρ does not change bytes or values, so ρ = 0.5 duplicates ρ = 1 and is
    // pruned; f32 is dominated by f16 unless f16 loses an image.
    let at11: Vec<_> = t.entries.iter().filter(|e| e.split == 11).collect();
    assert!(at11.iter().all(|e| e.keep_ratio == 1.0), "{at11:?}");
    assert!(t.lookup_cloud_only("keep025").is_some());
    assert!(t.lookup_edge_only("keep025").is_some());
}

/// `--only-jpeg` adds cloud-only JPEG entries to an existing table without re-running the grid;
/// a table for other images is refused.
#[test]
fn only_jpeg_merges_into_an_existing_table() {
    jmdc_core::runtime::init_onnxruntime(None)
        .expect("ONNX Runtime (scripts/fetch-onnxruntime.sh)");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cal.json");
    let pkg_dir = repo_root().join("models/packages/alexnet-cifar10");
    let samples = repo_root().join("models/samples/cifar10-test-256.bin");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--package",
            pkg_dir.to_str().expect("utf-8"),
            "--images",
            samples.to_str().expect("utf-8"),
            "--keep",
            "1",
            "--codecs",
            "int4",
            "--variants",
            "keep025",
            "--quiet",
            "--out",
            out.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        calibrate_command(&parse(&args).expect("args"))
    };
    // A table without JPEG entries (an old table): offers no JPEG candidate.
    run(&["-n", "40", "--splits", "6", "--jpeg", "none"]).expect("grid");
    let pkg = ModelPackage::load(&pkg_dir).expect("package");
    let before = calibration::load_for(&out, &pkg).expect("loads");
    assert!(before.jpeg_qualities().is_empty());

    // Merge q90 and q50 measured on the same 40 images.
    run(&["-n", "40", "--only-jpeg", "--jpeg", "90,50"]).expect("merge");
    let after = calibration::load_for(&out, &pkg).expect("merged table loads");
    assert_eq!(after.jpeg_qualities(), vec![90, 50]);
    let codecs: Vec<&str> = after.entries.iter().map(|e| e.codec.as_str()).collect();
    assert_eq!(codecs, vec!["u8-image", "jpeg90", "jpeg50", "int4", "none"]);
    // Everything that was there is unchanged.
    for e in &before.entries {
        assert!(after.entries.contains(e), "{e:?} changed");
    }
    assert_eq!(after.created, before.created);
    assert!(after
        .codecs
        .ends_with(&["jpeg90".to_string(), "jpeg50".to_string()]));
    // Again with q90 only: replaced, not duplicated.
    run(&["-n", "40", "--only-jpeg", "--jpeg", "90"]).expect("re-merge");
    let again = calibration::load_for(&out, &pkg).expect("loads");
    assert_eq!(again.entries, after.entries);

    // Other images (N = 41): refused, the table is left as it was.
    let e = run(&["-n", "41", "--only-jpeg"]).expect_err("different images");
    assert!(format!("{e:#}").contains("different images"), "{e:#}");
    let unchanged = calibration::load_for(&out, &pkg).expect("loads");
    assert_eq!(unchanged, again);
    // No table to merge into: refused.
    let missing = dir.path().join("none.json");
    let e = calibrate_command(
        &parse(&[
            "--package",
            pkg_dir.to_str().expect("utf-8"),
            "--images",
            samples.to_str().expect("utf-8"),
            "-n",
            "8",
            "--only-jpeg",
            "--quiet",
            "--out",
            missing.to_str().expect("utf-8"),
        ])
        .expect("args"),
    )
    .expect_err("nothing to merge into");
    assert!(format!("{e:#}").contains("none.json"), "{e:#}");
}
