//! Loading ONNX Runtime: errors for bad paths, then idempotent success.
//!
//! One test function on purpose: the runtime is process-wide, so the order of the steps matters
//! and this file runs as its own process.

use std::path::Path;

use jmdc_core::runtime::{environment, init_onnxruntime, loaded_library, RuntimeError, FETCH_HINT};

#[test]
fn bogus_paths_fail_cleanly_then_init_is_idempotent() {
    // Not initialised yet.
    assert!(matches!(environment(), Err(RuntimeError::NotInitialised)));

    // A path that does not exist.
    let bogus = Path::new("/nonexistent/jmdc/libonnxruntime.so.1.31.1");
    let e = init_onnxruntime(Some(bogus)).expect_err("bogus path must fail");
    let msg = e.to_string();
    println!("bogus path: {msg}");
    assert!(msg.contains("scripts/fetch-onnxruntime.sh"), "{msg}");
    assert!(msg.contains("/nonexistent/jmdc"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(loaded_library().is_none());

    // A file that exists but is not a library.
    let not_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let e = init_onnxruntime(Some(&not_lib)).expect_err("not a library");
    let msg = e.to_string();
    println!("not a library: {msg}");
    assert!(matches!(e, RuntimeError::Load { .. }), "{e:?}");
    assert!(
        msg.contains("Cargo.toml") && msg.contains(FETCH_HINT),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");

    // The real library (from the cache that scripts/fetch-onnxruntime.sh fills).
    let path = match init_onnxruntime(None) {
        Ok(p) => p,
        Err(e) => panic!("ONNX Runtime is needed here: {e}"),
    };
    assert!(path.is_file());
    assert_eq!(loaded_library(), Some(path.as_path()));
    assert!(environment().is_ok());

    // Idempotent: a later call returns the first result, whatever it is given.
    let again = init_onnxruntime(Some(bogus)).expect("second call returns the first result");
    assert_eq!(again, path);
}

/// `ORT_DYLIB_PATH` pointing nowhere is an error naming the variable (no silent fallback).
/// Runs in a child process so this process's runtime state does not matter.
#[test]
fn bogus_ort_dylib_path_env_is_an_error() {
    if std::env::var_os("JMDC_RUNTIME_CHILD").is_some() {
        return; // the child runs only `child_env_probe`
    }
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe)
        .args(["--exact", "child_env_probe", "--ignored", "--nocapture"])
        .env("JMDC_RUNTIME_CHILD", "1")
        .env("ORT_DYLIB_PATH", "/nonexistent/from-env/libonnxruntime.so")
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(stdout.contains("probe ok"), "{stdout}");
}

#[test]
#[ignore = "run by bogus_ort_dylib_path_env_is_an_error in a child process"]
fn child_env_probe() {
    if std::env::var_os("JMDC_RUNTIME_CHILD").is_none() {
        return;
    }
    let e = init_onnxruntime(None).expect_err("bogus ORT_DYLIB_PATH must fail");
    let msg = e.to_string();
    assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
    assert!(msg.contains("/nonexistent/from-env"), "{msg}");
    assert!(msg.contains("scripts/fetch-onnxruntime.sh"), "{msg}");
    // An explicit path still wins over the environment variable.
    let explicit = jmdc_core::runtime::well_known_candidates()
        .into_iter()
        .find(|p| p.is_file())
        .expect("the fetched library in a well-known place");
    let loaded = init_onnxruntime(Some(&explicit)).expect("explicit path wins");
    assert_eq!(loaded, explicit);
    println!("probe ok");
}
