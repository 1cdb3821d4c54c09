//! V4L2 source without a camera: a missing device gives an error naming it.

use jmdc_edge::source::{spawn, SourceKind, SourceSection};

#[tokio::test]
async fn missing_device_is_named() {
    let mut s = SourceSection::new(SourceKind::V4l2);
    s.path = Some("/dev/video-jmdc-missing".into());
    let e = spawn(&s, [3, 32, 32]).expect_err("no such device");
    let msg = e.to_string();
    println!("{msg}");
    if cfg!(feature = "v4l2") {
        assert!(msg.contains("/dev/video-jmdc-missing"), "{msg}");
        assert!(msg.contains("cannot open"), "{msg}");
        assert!(msg.contains("video` group"), "{msg}");
    } else {
        assert!(msg.contains("feature `v4l2`"), "{msg}");
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_camera_is_refused() {
    if !cfg!(feature = "v4l2") {
        println!("skipped: built without feature v4l2");
        return;
    }
    // /dev/null opens but is not a video capture device.
    let mut s = SourceSection::new(SourceKind::V4l2);
    s.path = Some("/dev/null".into());
    let e = spawn(&s, [3, 32, 32]).expect_err("not a camera");
    let msg = e.to_string();
    println!("{msg}");
    assert!(msg.contains("/dev/null"), "{msg}");
}
