//! `jmdc-edge check-config` against the real binary: a valid file passes, an unknown key fails
//! with exit status 1 and a message naming the file and the key; without `--syntax-only` every
//! file the configuration names is checked, and each missing one is named with its key.

use std::process::Command;

fn check(text: &str) -> (i32, String) {
    check_with(text, &["--syntax-only"])
}

fn check_with(text: &str, flags: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_jmdc-edge"))
        .arg("check-config")
        .args(flags)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run jmdc-edge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text.replace(&path.display().to_string(), "FILE"),
    )
}

const VALID: &str = r#"
[model]
packages_dir = "models/packages"
name = "alexnet-cifar10"
[plan]
variant = "keep050"
split = 6
keep_ratio = 0.5
codec = "int4"
[source]
kind = "cifar"
path = "samples.bin"
[adaptive]
enabled = true
objective = "max-accuracy"
latency_budget_ms = 15.0
"#;

#[test]
fn valid_config_passes() {
    let (code, text) = check(VALID);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("FILE: ok"), "{text}");
}

#[test]
fn unknown_key_is_named_with_the_file() {
    let (code, text) = check(&VALID.replace(
        "name = \"alexnet-cifar10\"",
        "name = \"alexnet-cifar10\"\ncolour = \"red\"",
    ));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("FILE:") && text.contains("colour") && text.contains("model"),
        "{text}"
    );
}

#[test]
fn bad_values_are_rejected_with_reason() {
    let (code, text) = check(&VALID.replace("codec = \"int4\"", "codec = \"int7\""));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("int7"), "{text}");
    let (code, text) =
        check(&VALID.replace("latency_budget_ms = 15.0", "latency_budget_ms = -1.0"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("latency_budget_ms"), "{text}");
}

/// The repository's bundled package and samples, by absolute path.
fn with_real_files(extra: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf();
    format!(
        "[model]\npackages_dir = \"{}\"\nname = \"alexnet-cifar10\"\n[plan]\nvariant = \"keep050\"\n\
         split = \"edge-only\"\n[source]\nkind = \"cifar\"\npath = \"{}\"\n{extra}",
        root.join("models/packages").display(),
        root.join("models/samples/cifar10-test-256.bin").display()
    )
}

#[test]
fn referenced_files_are_checked_and_each_missing_one_is_named_with_its_key() {
    let (code, text) = check_with(&with_real_files(""), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("FILE: ok"), "{text}");

    let broken = with_real_files(
        "[cloud]\nendpoint = \"127.0.0.1:4433\"\nca_cert = \"/nonexistent/ca.pem\"\n\
         client_cert = \"/nonexistent/device.pem\"\nclient_key = \"/nonexistent/device-key.pem\"\n\
         [adaptive]\ncalibration = \"/nonexistent/table.json\"\n",
    )
    .replace("name = \"alexnet-cifar10\"", "name = \"no-such-model\"")
    .replace("cifar10-test-256.bin", "missing.bin");
    let (code, text) = check_with(&broken, &[]);
    assert_eq!(code, 1, "{text}");
    for key in [
        "model.name",
        "cloud.ca_cert",
        "cloud.client_cert",
        "cloud.client_key",
        "source.path",
        "adaptive.calibration",
    ] {
        assert!(
            text.contains(&format!("FILE: {key} = ")),
            "{key} not named:\n{text}"
        );
    }
    // The same file passes the syntax-only check used for packaging.
    let (code, text) = check_with(&broken, &["--syntax-only"]);
    assert_eq!(code, 0, "{text}");
}
