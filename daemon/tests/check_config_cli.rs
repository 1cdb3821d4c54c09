//! `jmdc-edge check-config` against the real binary: a valid file passes, an unknown key fails
//! with exit status 1 and a message naming the file and the key.

use std::process::Command;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_jmdc-edge"))
        .args(["check-config", "--config"])
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
