//! CIFAR source: ids, labels and pixels match the file; limit, repeat and max_fps work;
//! bad input names the file.

use jmdc_test_support::require;

use std::path::Path;
use std::time::{Duration, Instant};

use jmdc_core::cifar::RECORD_BYTES;
use jmdc_edge::source::{spawn, SourceError, SourceKind, SourceSection};

const T: Duration = Duration::from_secs(10);

/// Writes `n` records: label i % 10, pixel j of record i = (i * 7 + j) % 256.
fn write_cifar(path: &Path, n: usize) {
    let mut data = Vec::with_capacity(n * RECORD_BYTES);
    for i in 0..n {
        data.push((i % 10) as u8);
        data.extend((0..RECORD_BYTES - 1).map(|j| ((i * 7 + j) % 256) as u8));
    }
    std::fs::write(path, data).expect("write cifar");
}

fn pixels(i: usize) -> Vec<u8> {
    (0..RECORD_BYTES - 1)
        .map(|j| ((i * 7 + j) % 256) as u8)
        .collect()
}

fn section(path: &Path) -> SourceSection {
    let mut s = SourceSection::new(SourceKind::Cifar);
    s.path = Some(path.to_path_buf());
    s
}

#[tokio::test]
async fn ids_labels_and_pixels_match_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("batch.bin");
    write_cifar(&file, 5);
    let mut feed = spawn(&section(&file), [3, 32, 32]).expect("spawn");
    assert!(!feed.is_live());
    assert!(feed.describe().contains("batch.bin"), "{}", feed.describe());
    for i in 0..5 {
        let f = tokio::time::timeout(T, feed.recv())
            .await
            .expect("in time")
            .expect("frame");
        assert_eq!(f.id, i as u64);
        assert_eq!(f.label, Some(i as u8));
        assert_eq!(f.pixels, pixels(i), "32x32 passes unchanged");
        assert_eq!(f.origin.as_deref(), Some(format!("batch.bin#{i}").as_str()));
    }
    assert!(feed.recv().await.is_none());
    assert!(feed.recv().await.is_none(), "stays finished");
    let st = feed.stats();
    assert_eq!((st.delivered, st.dropped, st.decode_errors), (5, 0, 0));
}

#[tokio::test]
async fn limit_repeat_and_resize() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("batch.bin");
    write_cifar(&file, 4);
    let mut s = section(&file);
    s.limit = Some(3);
    let mut feed = spawn(&s, [3, 32, 32]).expect("spawn");
    let mut n = 0;
    while let Some(f) = feed.recv().await {
        assert_eq!(f.id, n);
        n += 1;
        assert!(n <= 3);
    }
    assert_eq!(n, 3);

    s.limit = Some(10);
    s.repeat = true;
    let mut feed = spawn(&s, [3, 16, 24]).expect("spawn");
    let mut labels = Vec::new();
    while let Some(f) = feed.recv().await {
        assert_eq!(f.pixels.len(), 3 * 16 * 24);
        labels.push(f.label.expect("label"));
        assert!(labels.len() <= 10);
    }
    assert_eq!(labels, vec![0, 1, 2, 3, 0, 1, 2, 3, 0, 1]);
}

#[tokio::test]
async fn max_fps_paces_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("batch.bin");
    write_cifar(&file, 3);
    let mut s = section(&file);
    s.repeat = true;
    s.limit = Some(6);
    s.max_fps = Some(20.0);
    let mut feed = spawn(&s, [3, 32, 32]).expect("spawn");
    let t0 = Instant::now();
    let mut n = 0;
    while tokio::time::timeout(T, feed.recv())
        .await
        .expect("in time")
        .is_some()
    {
        n += 1;
    }
    let took = t0.elapsed();
    assert_eq!(n, 6);
    // 5 gaps of 50 ms; generous upper bound for a loaded machine.
    assert!(took >= Duration::from_millis(240), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn bad_input_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.bin");
    let e = spawn(&section(&missing), [3, 32, 32]).expect_err("missing");
    assert!(e.to_string().contains("nope.bin"), "{e}");
    let short = dir.path().join("short.bin");
    std::fs::write(&short, [1u8; 100]).expect("write");
    let e = spawn(&section(&short), [3, 32, 32]).expect_err("truncated");
    assert!(
        e.to_string().contains("short.bin") && e.to_string().contains("truncated"),
        "{e}"
    );
    let e = spawn(&SourceSection::new(SourceKind::Cifar), [3, 32, 32]).expect_err("no path");
    assert!(matches!(e, SourceError::Config(_)));
    assert!(e.to_string().contains("source.path"), "{e}");
    let ok = dir.path().join("ok.bin");
    write_cifar(&ok, 1);
    let e = spawn(&section(&ok), [1, 32, 32]).expect_err("grey model");
    assert!(matches!(e, SourceError::Input(_)), "{e}");
}

/// The real CIFAR-10 test batch, when the shared datasets are present: every record delivered
/// unchanged with its label.
#[tokio::test]
async fn real_test_batch_when_present() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/cifar-10/cifar-10-batches-bin/test_batch.bin");
    if !path.exists() {
        require::missing(
            require::Need::Shared,
            &format!("{} not present", path.display()),
        );
        return;
    }
    let file = jmdc_core::cifar::CifarFile::open(&path).expect("open");
    let mut feed = spawn(&section(&path), [3, 32, 32]).expect("spawn");
    let mut n = 0usize;
    while let Some(f) = feed.recv().await {
        let (label, px) = file.get(n).expect("record");
        assert_eq!(f.label, Some(label));
        assert_eq!(&f.pixels[..], &px[..]);
        n += 1;
        assert!(n <= file.len());
    }
    assert_eq!(n, file.len());
}
