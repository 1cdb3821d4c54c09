//! `jmdc-cloud check-config` (the real binary) against the layered fixtures in
//! `tests/fixtures/config/<case>/cloud.toml` (+ `cloud.d/*.toml`): valid layers pass; each mistake
//! exits 1 naming the layer that introduced it (file or environment variable) and the key.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(case)
        .join("cloud.toml")
}

/// Runs `check-config` (bounded: it must finish within 30 s) and returns (status, stdout, stderr).
fn check(case: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jmdc-cloud"));
    cmd.args(["check-config", "--config"]).arg(fixture(case));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run jmdc-cloud");
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
    let (code, out, err) = check("valid", &[("JMDC_CLOUD__LIMITS__MAX_INFLIGHT", "4")]);
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
    assert_fails_naming("unknown-top", "cloud.toml", "listen_backlog");
}

#[test]
fn unknown_nested_key_in_a_drop_in_names_the_drop_in() {
    assert_fails_naming(
        "unknown-nested-dropin",
        "cloud.d/10-limits.toml",
        "limits.max_inflihgt",
    );
}

#[test]
fn wrong_type_names_the_drop_in_and_key() {
    assert_fails_naming(
        "wrong-type",
        "cloud.d/10-limits.toml",
        "limits.max_inflight",
    );
}

#[test]
fn bad_value_names_the_file_and_key() {
    assert_fails_naming("bad-value", "cloud.toml", "listen");
}

#[test]
fn unknown_environment_key_names_the_variable() {
    let (code, out, err) = check("valid", &[("JMDC_CLOUD__LIMITS__MAX_INFLIHGT", "3")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with(
            "environment variable JMDC_CLOUD__LIMITS__MAX_INFLIHGT: unknown key `limits.max_inflihgt`"
        ),
        "{err}"
    );
}

#[test]
fn invalid_log_level_is_refused() {
    let (code, out, err) = check("valid", &[("JMDC_CLOUD__LOG_LEVEL", "infoo")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("log_level") && err.contains("infoo"), "{err}");
}

#[test]
fn health_listener_is_optional_and_its_address_is_checked() {
    let (code, out, err) = check("valid", &[("JMDC_CLOUD__HEALTH__LISTEN", "127.0.0.1:9465")]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = check("valid", &[("JMDC_CLOUD__HEALTH__LISTEN", "0.0.0.0:99999")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.starts_with("environment variable JMDC_CLOUD__HEALTH__LISTEN: key `health.listen`"),
        "{err}"
    );
}
