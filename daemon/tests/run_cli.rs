//! `jmdc-edge run` as a user runs it: the real binary, an edge-only plan (no cloud needed).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

fn run_edge_only(per_frame: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    let root = repo();
    std::fs::write(
        &path,
        format!(
            r#"log_level = "warn"
[model]
packages_dir = "{packages}"
name = "alexnet-cifar10"
[plan]
variant = "keep050"
split = "edge-only"
[source]
kind = "cifar"
path = "{samples}"
limit = 3
[output]
per_frame = {per_frame}
"#,
            packages = root.join("models/packages").display(),
            samples = root.join("models/samples/cifar10-test-256.bin").display(),
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_jmdc-edge"))
        .args(["run", "--config"])
        .arg(&path)
        .current_dir(&root)
        .output()
        .expect("run jmdc-edge");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "jmdc-edge failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn per_frame_lines_follow_the_output_setting() {
    let with = run_edge_only(true);
    assert_eq!(
        with.lines().filter(|l| l.starts_with("frame ")).count(),
        3,
        "{with}"
    );
    assert!(with.contains("frames: 3"), "{with}");
    let without = run_edge_only(false);
    assert_eq!(
        without.lines().filter(|l| l.starts_with("frame ")).count(),
        0,
        "{without}"
    );
    assert!(without.contains("frames: 3"), "{without}");
}
