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
