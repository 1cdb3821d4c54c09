//! `jmdc-edge check-config` (the real binary) against the layered fixtures in
//! `tests/fixtures/config/<case>/edge.toml` (+ `edge.d/*.toml`): valid layers pass; each mistake
//! exits 1 naming the layer that introduced it (file or environment variable) and the key.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(case)
        .join("edge.toml")
}

/// Runs `check-config` (bounded: it must finish within 30 s) and returns (status, stdout, stderr).
fn check(case: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jmdc-edge"));
    cmd.args(["check-config", "--config"]).arg(fixture(case));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run jmdc-edge");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("poll child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("check-config did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn valid_main_file_with_drop_ins_passes() {
    let (code, out, err) = check("valid", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{}: ok", fixture("valid").display())),
        "{out}"
    );
}

#[test]
fn valid_environment_override_passes() {
    let (code, out, err) = check("valid", &[("JMDC_EDGE__PLAN__SPLIT", "4")]);
    assert_eq!(code, 0, "{out}{err}");
}

fn assert_fails_naming(case: &str, file: &str, key: &str) {
    let (code, out, err) = check(case, &[]);
    assert_eq!(code, 1, "{case}: {out}{err}");
    let layer = fixture(case).with_file_name(file);
    assert!(
        err.starts_with(&format!("{}: ", layer.display())),
        "{case}: names {file}: {err}"
    );
    assert!(
        err.contains(&format!("`{key}`")),
        "{case}: names {key}: {err}"
    );
}

#[test]
fn unknown_top_level_key_names_the_main_file() {
    assert_fails_naming("unknown-top", "edge.toml", "log_colour");
}

#[test]
fn unknown_nested_key_in_a_drop_in_names_the_drop_in() {
    assert_fails_naming(
        "unknown-nested-dropin",
        "edge.d/10-cloud.toml",
        "cloud.endpiont",
    );
}

#[test]
fn wrong_type_names_the_drop_in_and_key() {
    assert_fails_naming("wrong-type", "edge.d/10-cloud.toml", "cloud.timeout_ms");
    let (_, _, err) = check("wrong-type", &[]);
    assert!(err.contains("soon"), "{err}");
}

#[test]
fn bad_enum_value_names_the_file_and_key() {
    assert_fails_naming("bad-enum", "edge.toml", "adaptive.objective");
    let (_, _, err) = check("bad-enum", &[]);
    assert!(err.contains("max-fun"), "{err}");
}

#[test]
fn unknown_environment_key_names_the_variable() {
    let (code, out, err) = check("valid", &[("JMDC_EDGE__PLAN__SPLTI", "3")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with("environment variable JMDC_EDGE__PLAN__SPLTI: unknown key `plan.splti`"),
        "{err}"
    );
}

#[test]
fn environment_value_of_wrong_type_names_the_variable() {
    let (code, out, err) = check("valid", &[("JMDC_EDGE__CLOUD__TIMEOUT_MS", "abc")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with(
            "environment variable JMDC_EDGE__CLOUD__TIMEOUT_MS: key `cloud.timeout_ms`"
        ),
        "{err}"
    );
}
