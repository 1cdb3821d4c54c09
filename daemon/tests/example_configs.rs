//! The commented example configurations in the repository parse and validate.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

#[test]
fn edge_example_parses() {
    let path = repo().join("daemon/edge.example.toml");
    let cfg = jmdc_edge::config::EdgeConfig::load(&path).expect("edge example is valid");
    assert_eq!(cfg.model.name, "alexnet-cifar10");
    assert!(cfg
        .model
        .packages_dir
        .join("alexnet-cifar10/manifest.json")
        .is_file());
    assert!(
        cfg.source.path.as_ref().is_some_and(|p| p.is_file()),
        "example source {}",
        cfg.source
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
}

#[test]
fn cloud_example_parses() {
    let path = repo().join("cloud/cloud.example.toml");
    let cfg = jmdc_cloud::CloudConfig::load(&path).expect("cloud example is valid");
    assert!(cfg
        .models_dir
        .join("alexnet-cifar10/manifest.json")
        .is_file());
    assert_eq!(cfg.runtime.workers, 2);
}
