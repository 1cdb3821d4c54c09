//! `jmdc-edge run` as a user runs it: the real binary, an edge-only plan (no cloud needed).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

/// Runs 3 CIFAR frames edge-only with the given `[output]` section; returns (stdout, stderr).
fn run_edge_only(output: &str) -> (String, String) {
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
{output}
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
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "jmdc-edge failed: {stdout}{stderr}");
    (stdout, stderr)
}

#[test]
fn per_frame_lines_follow_the_output_setting() {
    let (with, _) = run_edge_only("per_frame = true");
    assert_eq!(
        with.lines().filter(|l| l.starts_with("frame ")).count(),
        3,
        "{with}"
    );
    assert!(with.contains("frames: 3"), "{with}");
    let (without, _) = run_edge_only("per_frame = false");
    assert_eq!(
        without.lines().filter(|l| l.starts_with("frame ")).count(),
        0,
        "{without}"
    );
    assert!(without.contains("frames: 3"), "{without}");
}

#[test]
fn json_on_stdout_is_only_json_lines_with_top_k_and_scores() {
    let (stdout, stderr) = run_edge_only("format = \"json\"\ntop_k = 3\nscores = true");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for v in &lines {
        let class_index = v["class_index"].as_u64().expect("class_index");
        let score = v["score"].as_f64().expect("score");
        let scores: Vec<f64> = v["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|s| s.as_f64().expect("a number"))
            .collect();
        assert_eq!(scores.len(), 10, "{v}");
        assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{v}");
        let index = usize::try_from(class_index).expect("small");
        assert!((scores[index] - score).abs() < 1e-6, "{v}");
        let top = v["top"].as_array().expect("top");
        assert_eq!(top.len(), 3, "{v}");
        assert_eq!(top[0]["class_index"].as_u64(), Some(class_index), "{v}");
        assert_eq!(top[0]["class"], v["class"], "{v}");
        let ranked: Vec<f64> = top
            .iter()
            .map(|t| t["score"].as_f64().expect("score"))
            .collect();
        assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "{v}");
        for t in top {
            let i = usize::try_from(t["class_index"].as_u64().expect("index")).expect("small");
            assert!((scores[i] - t["score"].as_f64().expect("score")).abs() < 1e-6);
        }
    }
    // The summary still reaches the user, on stderr.
    assert!(stderr.contains("frames: 3"), "{stderr}");
}

#[test]
fn text_lines_name_the_top_k_classes() {
    let (stdout, _) = run_edge_only("top_k = 2");
    let frames: Vec<&str> = stdout.lines().filter(|l| l.starts_with("frame ")).collect();
    assert_eq!(frames.len(), 3, "{stdout}");
    for line in frames {
        let top = line.split(" top=").nth(1).expect("a top= field");
        let entries: Vec<&str> = top.split(',').collect();
        assert_eq!(entries.len(), 2, "{line}");
        let pred = line
            .split(" pred=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("pred=");
        assert!(entries[0].starts_with(&format!("{pred}:")), "{line}");
    }
}
