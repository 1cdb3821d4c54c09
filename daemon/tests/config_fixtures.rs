//! `jmdc-edge check-config` (the real binary) against the layered fixtures in
//! `tests/fixtures/config/<case>/edge.toml` (+ `edge.d/*.toml`): valid layers pass; each mistake
//! exits 1 naming the layer that introduced it (file or environment variable) and the key.

use jmdc_test_support::check_config::Fixtures;

const FIXTURES: Fixtures = Fixtures {
    binary: env!("CARGO_BIN_EXE_jmdc-edge"),
    crate_dir: env!("CARGO_MANIFEST_DIR"),
    main_file: "edge.toml",
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
    let (code, out, err) = check("valid", &[("JMDC_EDGE__PLAN__SPLIT", "4")]);
    assert_eq!(code, 0, "{out}{err}");
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

#[test]
fn top_k_beyond_the_limit_is_refused_naming_the_key() {
    let (code, out, err) = check("valid", &[("JMDC_EDGE__OUTPUT__TOP_K", "5000")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("output.top_k must be at most 1000"), "{err}");
    let (code, out, err) = check("valid", &[("JMDC_EDGE__OUTPUT__TOP_K", "3")]);
    assert_eq!(code, 0, "{out}{err}");
}
