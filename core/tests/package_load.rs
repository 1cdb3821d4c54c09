//! Loading and validating real model packages (no ONNX Runtime needed).
//!
//! Package under test: `$JMDC_TEST_PACKAGE`, else `models/packages/alexnet-cifar10` (built by
//! `models/`; see docs/model-package.md).

use std::fs;
use std::path::{Path, PathBuf};

use jmdc_core::package::{
    LoadOptions, Manifest, ManifestError, ModelPackage, ModelRegistry, PackageError, VerifyMode,
    MANIFEST_FILE,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn package_dir() -> PathBuf {
    let dir = std::env::var_os("JMDC_TEST_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models/packages/alexnet-cifar10"));
    assert!(
        dir.join(MANIFEST_FILE).is_file(),
        "model package not found at {} (build it under models/, or set JMDC_TEST_PACKAGE to a package folder)",
        dir.display()
    );
    dir
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("mkdir");
    for e in fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// A private copy of the package in a temp dir (the copy lives as long as the TempDir).
fn package_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join("pkg");
    copy_dir(&package_dir(), &dst);
    (tmp, dst)
}

fn manifest_json(dir: &Path) -> serde_json::Value {
    let text = fs::read_to_string(dir.join(MANIFEST_FILE)).expect("manifest");
    serde_json::from_str(&text).expect("json")
}

fn write_manifest(dir: &Path, v: &serde_json::Value) {
    fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_string_pretty(v).expect("ser"),
    )
    .expect("write");
}

#[test]
fn package_loads_and_helpers_agree() {
    let dir = package_dir();
    let pkg = ModelPackage::load(&dir).expect("package loads");
    let l = pkg.num_layers();
    assert!(l >= 2);
    assert!(!pkg.classes().is_empty());
    assert_eq!(pkg.normalization().mean.len(), pkg.input_shape()[0]);
    for v in pkg.variants() {
        assert!(pkg.is_verified(&v.name));
        assert_eq!(pkg.variant(&v.name).expect("variant").name, v.name);
        assert_eq!(
            pkg.split_tensor_shape(&v.name, 0).expect("split 0"),
            pkg.input_shape()
        );
        for s in 1..=l {
            assert_eq!(
                pkg.split_tensor_shape(&v.name, s).expect("split"),
                pkg.layer_output_shape(&v.name, s - 1).expect("layer")
            );
        }
        assert_eq!(
            pkg.split_tensor_shape(&v.name, l).expect("split L"),
            &[pkg.classes().len()]
        );
        assert!(matches!(
            pkg.split_tensor_shape(&v.name, l + 1),
            Err(PackageError::Manifest(ManifestError::OutOfRange { .. }))
        ));
        assert!(pkg.layer_output_shape(&v.name, l).is_err());
        assert!(pkg.read_layer(&v.name, 0).is_ok());
    }
    let e = pkg.variant("no-such-variant").expect_err("unknown");
    assert!(e.to_string().contains("no-such-variant"), "{e}");
}

#[test]
fn lazy_load_defers_hashing() {
    let pkg = ModelPackage::load_with(
        &package_dir(),
        &LoadOptions {
            verify: VerifyMode::Lazy,
        },
    )
    .expect("lazy load");
    let first = pkg.variants()[0].name.clone();
    assert!(!pkg.is_verified(&first));
    pkg.verify_variant(&first).expect("verify");
    assert!(pkg.is_verified(&first));
}

#[test]
fn corrupted_file_names_the_file() {
    let (_tmp, dir) = package_copy();
    let m = manifest_json(&dir);
    let vdir = m["variants"][0]["dir"].as_str().expect("dir").to_string();
    let file = m["variants"][0]["layers"][1]["file"]
        .as_str()
        .expect("file")
        .to_string();
    let path = dir.join(&vdir).join(&file);
    let mut bytes = fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&path, &bytes).expect("write");

    let e = ModelPackage::load(&dir).expect_err("corrupt file must fail");
    assert!(matches!(e, PackageError::HashMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&file) && msg.contains(&vdir), "{msg}");

    // Lazy: load succeeds, the corrupt file fails when read or verified.
    let lazy = ModelPackage::load_with(
        &dir,
        &LoadOptions {
            verify: VerifyMode::Lazy,
        },
    )
    .expect("lazy load does not hash");
    let variant = m["variants"][0]["name"].as_str().expect("name");
    assert!(lazy.read_layer(variant, 0).is_ok());
    let e = lazy.read_layer(variant, 1).expect_err("corrupt layer");
    assert!(e.to_string().contains(&file), "{e}");
    assert!(lazy.verify_variant(variant).is_err());
    assert!(!lazy.is_verified(variant));
}

#[test]
fn missing_file_names_the_file() {
    let (_tmp, dir) = package_copy();
    let m = manifest_json(&dir);
    let vdir = m["variants"][0]["dir"].as_str().expect("dir");
    let file = m["variants"][0]["layers"][0]["file"]
        .as_str()
        .expect("file");
    fs::remove_file(dir.join(vdir).join(file)).expect("rm");
    for verify in [VerifyMode::All, VerifyMode::Lazy] {
        let e = ModelPackage::load_with(&dir, &LoadOptions { verify }).expect_err("missing");
        assert!(matches!(e, PackageError::MissingFile { .. }), "{e:?}");
        assert!(e.to_string().contains(file), "{e}");
    }
}

#[test]
fn bad_manifest_json_names_the_file() {
    let (_tmp, dir) = package_copy();
    let mpath = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&mpath).expect("read");
    fs::write(&mpath, &text[..text.len() / 2]).expect("truncate");
    let e = ModelPackage::load(&dir).expect_err("bad json");
    assert!(
        matches!(e, PackageError::Manifest(ManifestError::Parse { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("manifest.json"), "{e}");

    fs::remove_file(&mpath).expect("rm");
    let e = ModelPackage::load(&dir).expect_err("no manifest");
    assert!(e.to_string().contains("manifest.json"), "{e}");
}

/// Each mutation of a valid manifest must be rejected with a message naming the manifest.
#[test]
fn invalid_manifests_are_rejected() {
    let dir = package_dir();
    let good = manifest_json(&dir);
    let path = dir.join(MANIFEST_FILE);
    let check = |name: &str, f: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v = good.clone();
        f(&mut v);
        let text = serde_json::to_string(&v).expect("ser");
        let e = Manifest::parse(&text, &path).expect_err(name);
        let msg = e.to_string();
        assert!(msg.contains("manifest.json"), "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: expected {needle:?} in {msg}");
    };
    check(
        "format",
        &|v| v["format"] = "jmdc-model-package/2".into(),
        "format",
    );
    check(
        "index",
        &|v| v["variants"][0]["layers"][1]["index"] = 5.into(),
        "index",
    );
    check(
        "chain",
        &|v| v["variants"][0]["layers"][1]["input_shape"] = serde_json::json!([7, 7, 7]),
        "input_shape",
    );
    check(
        "first input",
        &|v| v["variants"][0]["layers"][0]["input_shape"] = serde_json::json!([1, 32, 32]),
        "model input",
    );
    check(
        "dotdot",
        &|v| v["variants"][0]["layers"][0]["file"] = "../evil.onnx".into(),
        "..",
    );
    check(
        "absolute dir",
        &|v| v["variants"][0]["dir"] = "/etc".into(),
        "relative",
    );
    check(
        "sha",
        &|v| v["variants"][0]["layers"][0]["sha256"] = "ABC".into(),
        "sha256",
    );
    check(
        "layer count",
        &|v| {
            v["variants"][0]["layers"]
                .as_array_mut()
                .expect("arr")
                .pop();
        },
        "layers",
    );
    check(
        "normalization",
        &|v| v["normalization"]["std"] = serde_json::json!([1.0]),
        "normalization",
    );
    check(
        "unknown input field",
        &|v| v["input"]["colour"] = "rgb".into(),
        "colour",
    );
    check(
        "duplicate variant",
        &|v| {
            let first = v["variants"][0].clone();
            v["variants"].as_array_mut().expect("arr").push(first);
        },
        "duplicate",
    );
    // Unknown fields in `training` (free-form) are fine.
    let mut v = good.clone();
    v["training"] = serde_json::json!({"seed": 1, "anything": {"nested": [1, 2, 3]}});
    Manifest::parse(&serde_json::to_string(&v).expect("ser"), &path).expect("free-form training");
}

#[test]
fn registry_loads_packages_by_name() {
    let (tmp, dir) = package_copy();
    let name = manifest_json(&dir)["name"]
        .as_str()
        .expect("name")
        .to_string();
    fs::create_dir_all(tmp.path().join("not-a-package")).expect("mkdir");
    let reg = ModelRegistry::load(
        tmp.path(),
        &LoadOptions {
            verify: VerifyMode::Lazy,
        },
    )
    .expect("registry");
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.get(&name).expect("by name").name(), name);
    let e = reg.get("nope").expect_err("unknown");
    assert!(e.to_string().contains(&name), "{e}");

    // A second copy under another name is a second package; the same name twice is an error.
    copy_dir(&dir, &tmp.path().join("pkg2"));
    let mut m2 = manifest_json(&tmp.path().join("pkg2"));
    m2["name"] = "renamed-copy".into();
    write_manifest(&tmp.path().join("pkg2"), &m2);
    let lazy = LoadOptions {
        verify: VerifyMode::Lazy,
    };
    let reg = ModelRegistry::load(tmp.path(), &lazy).expect("two packages");
    let mut want = vec![name.as_str(), "renamed-copy"];
    want.sort();
    assert_eq!(reg.names().collect::<Vec<_>>(), want);
    copy_dir(&dir, &tmp.path().join("pkg3"));
    let e = ModelRegistry::load(tmp.path(), &lazy).expect_err("duplicate name");
    assert!(matches!(e, PackageError::DuplicatePackage { .. }), "{e:?}");

    // The repository's own folder of packages loads too.
    let real = package_dir();
    if let Some(parent) = real.parent() {
        let reg = ModelRegistry::load(
            parent,
            &LoadOptions {
                verify: VerifyMode::Lazy,
            },
        )
        .expect("repo registry");
        assert!(reg.get(&name).is_ok());
    }
}
