//! MJPEG from a real child process (ffmpeg's test source): frames at the model size, restarts
//! with backoff, newest-frame-wins drops with contiguous ids, the child killed on drop, and a
//! missing program named. Skipped (with a message) when ffmpeg is not on PATH.

use jmdc_test_support::require;

use std::path::Path;
use std::time::{Duration, Instant};

use jmdc_edge::frame::Frame;
use jmdc_edge::source::{spawn, FrameFeed, SourceError, SourceKind, SourceSection};

const T: Duration = Duration::from_secs(30);

fn have_ffmpeg() -> bool {
    let ok = std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        require::missing(require::Need::Tool, "ffmpeg is not on PATH");
    }
    ok
}

/// ffmpeg writing a 320x240 test pattern as MJPEG to stdout; `extra` are output options, a
/// leading "-re" (real-time, 30 fps) goes before the input.
fn ffmpeg(extra: &[&str]) -> Vec<String> {
    let realtime = extra.first() == Some(&"-re");
    let extra = if realtime { &extra[1..] } else { extra };
    let mut v: Vec<String> = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if realtime {
        v.push("-re".into());
    }
    v.extend(
        ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"]
            .iter()
            .map(|s| s.to_string()),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["-f", "mjpeg", "-"].iter().map(|s| s.to_string()));
    v
}

fn section(command: Vec<String>) -> SourceSection {
    let mut s = SourceSection::new(SourceKind::Mjpeg);
    s.command = command;
    s.restart_backoff_ms = 50;
    s.max_restart_backoff_ms = 200;
    s
}

async fn next(feed: &mut FrameFeed) -> Frame {
    tokio::time::timeout(T, feed.recv())
        .await
        .expect("frame in time")
        .expect("live sources do not end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_at_the_model_size() {
    if !have_ffmpeg() {
        return;
    }
    let mut feed = spawn(&section(ffmpeg(&["-re"])), [3, 32, 48]).expect("spawn");
    assert!(feed.is_live());
    assert!(
        feed.describe().starts_with("mjpeg: ffmpeg "),
        "{}",
        feed.describe()
    );
    for i in 0..5 {
        let f = next(&mut feed).await;
        assert_eq!(f.id, i);
        assert_eq!(f.pixels.len(), 3 * 32 * 48);
        assert_eq!(f.origin.as_deref(), Some("mjpeg"));
        assert_eq!(f.label, None);
        assert!(f.captured.elapsed() < T);
        // testsrc is colourful: not a flat image.
        let min = f.pixels.iter().min().copied().unwrap_or(0);
        let max = f.pixels.iter().max().copied().unwrap_or(0);
        assert!(max - min > 100, "flat frame {min}..{max}");
    }
    let st = feed.stats();
    assert_eq!(st.delivered, 5);
    assert_eq!(st.decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exiting_child_is_restarted() {
    if !have_ffmpeg() {
        return;
    }
    let mut feed = spawn(&section(ffmpeg(&["-frames:v", "3"])), [3, 32, 32]).expect("spawn");
    let t0 = Instant::now();
    let mut ids = Vec::new();
    while feed.stats().restarts < 2 || ids.len() < 6 {
        assert!(t0.elapsed() < T, "stats {:?}", feed.stats());
        ids.push(next(&mut feed).await.id);
    }
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    println!("{:?}", feed.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_drops_old_frames_ids_stay_contiguous() {
    if !have_ffmpeg() {
        return;
    }
    let mut feed = spawn(&section(ffmpeg(&[])), [3, 32, 32]).expect("spawn");
    let mut ids = Vec::new();
    let mut ages = Vec::new();
    for _ in 0..5 {
        let f = next(&mut feed).await;
        ids.push(f.id);
        ages.push(f.captured.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let st = feed.stats();
    println!("{st:?} frame ages at delivery {ages:?}");
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    assert!(st.dropped > 0, "{st:?}");
    assert_eq!(st.delivered, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_fps_caps_a_live_source_and_recv_is_cancel_safe() {
    if !have_ffmpeg() {
        return;
    }
    let mut s = section(ffmpeg(&[]));
    s.max_fps = Some(10.0);
    s.limit = Some(6);
    let mut feed = spawn(&s, [3, 32, 32]).expect("spawn");
    let t0 = Instant::now();
    let mut ids = Vec::new();
    let mut ticks = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(7));
    loop {
        assert!(t0.elapsed() < T);
        tokio::select! {
            f = feed.recv() => match f {
                Some(f) => ids.push(f.id),
                None => break,
            },
            _ = tick.tick() => ticks += 1,
        }
    }
    let took = t0.elapsed();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
    assert!(ticks > 10, "recv was cancelled often ({ticks} ticks)");
    assert!(took >= Duration::from_millis(480), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

fn process_gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    match stat {
        Err(_) => true,
        // A zombie waiting to be reaped is dead too.
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_feed_kills_the_child() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!(
        "echo $$ > {}; exec {}",
        pidfile.display(),
        ffmpeg(&["-re"]).join(" ")
    );
    let mut feed = spawn(
        &section(vec!["sh".into(), "-c".into(), script]),
        [3, 32, 32],
    )
    .expect("spawn");
    next(&mut feed).await;
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(!process_gone(pid), "child {pid} should be running");
    drop(feed);
    let t0 = Instant::now();
    while !process_gone(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "child {pid} still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn missing_program_is_named() {
    let e = spawn(
        &section(vec![
            "jmdc-no-such-camera-program".into(),
            "-o".into(),
            "-".into(),
        ]),
        [3, 32, 32],
    )
    .expect_err("missing program");
    assert!(matches!(e, SourceError::Spawn { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("jmdc-no-such-camera-program"), "{msg}");
    assert!(msg.contains("PATH"), "{msg}");
    let e = spawn(&section(Vec::new()), [3, 32, 32]).expect_err("no command");
    assert!(e.to_string().contains("source.command"), "{e}");
    assert!(Path::new("/bin/sh").exists());
}

#[test]
fn outside_a_runtime_is_a_clear_error() {
    let e = spawn(&section(vec!["ffmpeg".into()]), [3, 32, 32]).expect_err("no runtime");
    assert!(matches!(e, SourceError::NoRuntime), "{e}");
    assert!(e.to_string().contains("Tokio runtime"), "{e}");
}
