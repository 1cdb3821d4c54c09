//! Folder source: files in name order, PNG/JPEG of any case, other files ignored, new files
//! picked up with `follow`, undecodable files counted, missing folders named.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jmdc_edge::frame::Frame;
use jmdc_edge::source::{spawn, FrameFeed, SourceError, SourceKind, SourceSection};

const T: Duration = Duration::from_secs(10);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn copy_fixtures(to: &Path) {
    for e in std::fs::read_dir(fixtures()).expect("fixtures") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

fn section(dir: &Path, follow: bool) -> SourceSection {
    let mut s = SourceSection::new(SourceKind::Folder);
    s.path = Some(dir.to_path_buf());
    s.follow = follow;
    s.poll_interval_ms = 50;
    s
}

async fn next(feed: &mut FrameFeed) -> Frame {
    tokio::time::timeout(T, feed.recv())
        .await
        .expect("frame in time")
        .expect("a frame")
}

fn plane(f: &Frame, c: usize) -> &[u8] {
    let n = f.pixels.len() / 3;
    &f.pixels[c * n..(c + 1) * n]
}

#[tokio::test]
async fn reads_present_files_in_order_then_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixtures(dir.path());
    let mut feed = spawn(&section(dir.path(), false), [3, 24, 24]).expect("spawn");
    assert!(!feed.is_live());
    let names: Vec<_> = ["a-red.png", "b-testsrc.jpg", "c-blue.JPEG"].into();
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.push(next(&mut feed).await);
    }
    let got: Vec<_> = frames
        .iter()
        .map(|f| f.origin.clone().unwrap_or_default())
        .collect();
    assert_eq!(got, names);
    assert_eq!(
        frames.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for f in &frames {
        assert_eq!(f.pixels.len(), 3 * 24 * 24);
        assert_eq!(f.label, None);
    }
    // Solid red PNG (ffmpeg's "red" after its YUV round trip) stays red and flat.
    let red = plane(&frames[0], 0);
    assert!(
        red.iter().all(|&v| v > 240 && v == red[0]),
        "{:?}",
        &red[..8]
    );
    assert!(plane(&frames[0], 1).iter().all(|&v| v < 10));
    // Solid blue JPEG: close to blue.
    assert!(plane(&frames[2], 2).iter().all(|&v| v > 230));
    assert!(plane(&frames[2], 0).iter().all(|&v| v < 25));
    let end = tokio::time::timeout(T, feed.recv()).await.expect("in time");
    assert!(end.is_none(), "notes.txt is not an image");
    assert_eq!(feed.stats().decode_errors, 0);
}

#[tokio::test]
async fn follow_picks_up_new_files_and_counts_broken_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixtures(dir.path());
    let mut feed = spawn(&section(dir.path(), true), [3, 32, 32]).expect("spawn");
    assert!(feed.is_live());
    for want in ["a-red.png", "b-testsrc.jpg", "c-blue.JPEG"] {
        assert_eq!(next(&mut feed).await.origin.as_deref(), Some(want));
    }
    // Nothing more for now.
    let idle = tokio::time::timeout(Duration::from_millis(300), feed.recv()).await;
    assert!(idle.is_err(), "no new file yet");
    // A broken file and a good one appear later.
    std::fs::write(dir.path().join("d-broken.png"), b"\x89PNG garbage").expect("write");
    std::fs::copy(fixtures().join("a-red.png"), dir.path().join("e-new.PNG")).expect("copy");
    let f = next(&mut feed).await;
    assert_eq!(f.origin.as_deref(), Some("e-new.PNG"));
    assert_eq!(f.id, 3);
    // The broken file is retried once, then counted.
    let t0 = Instant::now();
    while feed.stats().decode_errors == 0 {
        assert!(t0.elapsed() < T, "broken file never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = feed.stats();
    assert_eq!((st.delivered, st.decode_errors, st.dropped), (4, 1, 0));
}

#[tokio::test]
async fn missing_or_wrong_folder_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-folder");
    let e = spawn(&section(&missing, true), [3, 32, 32]).expect_err("missing");
    assert!(e.to_string().contains("no-such-folder"), "{e}");
    let file = dir.path().join("file.png");
    std::fs::write(&file, b"x").expect("write");
    let e = spawn(&section(&file, false), [3, 32, 32]).expect_err("not a folder");
    assert!(matches!(e, SourceError::NotAFolder { .. }), "{e}");
    assert!(e.to_string().contains("file.png"), "{e}");
}

/// A JPEG file already at the model input size is kept on the frame for forwarding (byte for
/// byte, and it decodes to exactly the frame's pixels); other sizes and PNGs are not.
#[tokio::test]
async fn jpegs_at_model_size_are_kept_for_forwarding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jpeg = |w: u32, h: u32| {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 9) as u8, ((x + y) * 3) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 70)
            .encode_image(&img)
            .expect("encode");
        out
    };
    let exact = jpeg(32, 32);
    std::fs::write(dir.path().join("a-exact.jpg"), &exact).expect("write");
    std::fs::write(dir.path().join("b-large.jpg"), jpeg(64, 48)).expect("write");
    let mut png = Vec::new();
    image::RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    std::fs::write(dir.path().join("c-exact.png"), &png).expect("write");
    let mut feed = spawn(&section(dir.path(), false), [3, 32, 32]).expect("spawn");
    let a = next(&mut feed).await;
    assert_eq!(a.origin.as_deref(), Some("a-exact.jpg"));
    assert_eq!(a.jpeg.as_deref(), Some(&exact[..]));
    assert_eq!(
        jmdc_core::jpeg::decode_chw(&exact, [3, 32, 32]).expect("decodes"),
        a.pixels
    );
    let b = next(&mut feed).await;
    assert_eq!(b.origin.as_deref(), Some("b-large.jpg"));
    assert!(b.jpeg.is_none(), "resized: nothing to forward");
    let c = next(&mut feed).await;
    assert!(c.jpeg.is_none(), "a PNG is not a JPEG");
}

/// A 2 GiB sparse file named `.jpg` is skipped (counted) without being read, and the files after
/// it still arrive; the process's peak memory stays far below the file's size.
#[tokio::test]
async fn files_over_the_size_limit_are_skipped_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixtures(dir.path());
    let huge = std::fs::File::create(dir.path().join("b-huge.jpg")).expect("create");
    huge.set_len(2 << 30).expect("sparse 2 GiB");
    drop(huge);
    let mut s = section(dir.path(), false);
    s.max_file_bytes = 1 << 20;
    let mut feed = spawn(&s, [3, 24, 24]).expect("spawn");
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(next(&mut feed).await.origin.unwrap_or_default());
    }
    assert_eq!(names, ["a-red.png", "b-testsrc.jpg", "c-blue.JPEG"]);
    let end = tokio::time::timeout(T, feed.recv()).await.expect("in time");
    assert!(end.is_none());
    assert_eq!(feed.stats().decode_errors, 1, "the huge file is counted");
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(peak_kib < 512 * 1024, "peak RSS {peak_kib} KiB");
}
