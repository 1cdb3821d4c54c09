//! `jmdc-cloud check-config` (the real binary) against the layered fixtures in
//! `tests/fixtures/config/<case>/cloud.toml` (+ `cloud.d/*.toml`): valid layers pass; each mistake
//! exits 1 naming the layer that introduced it (file or environment variable) and the key.

use jmdc_test_support::check_config::Fixtures;

const FIXTURES: Fixtures = Fixtures {
    binary: env!("CARGO_BIN_EXE_jmdc-cloud"),
    crate_dir: env!("CARGO_MANIFEST_DIR"),
    main_file: "cloud.toml",
};

fn check(case: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    FIXTURES.check(case, env)
}

fn assert_fails_naming(case: &str, file: &str, key: &str) {
    FIXTURES.assert_fails_naming(case, file, key)
}

#[test]
fn valid_main_file_with_drop_ins_passes() {
    FIXTURES.assert_valid("valid", &[]);
}

#[test]
fn valid_environment_override_passes() {
    let (code, out, err) = check("valid", &[("JMDC_CLOUD__LIMITS__MAX_INFLIGHT", "4")]);
    assert_eq!(code, 0, "{out}{err}");
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
