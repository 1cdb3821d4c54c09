//! MJPEG from a child process's stdout (`rpicam-vid … -o -`, `ffmpeg … -f mjpeg -`), restarted
//! with exponential backoff when it exits.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

use super::capture::{Background, Counters, Started};
use super::decoder::{LiveDecoder, RawFrame, RawImage};
use super::imaging::TargetSize;
use super::jpeg_split::JpegSplitter;
use super::slot::LatestSlot;
use super::{SourceError, SourceSection};
use crate::backoff::{Backoff, BackoffBounds};

/// Last stderr lines of the child kept for the exit warning.
const STDERR_TAIL: usize = 5;

/// Starts the child named by `section.command` and the reader and decoder tasks.
pub(crate) fn start(
    section: &SourceSection,
    target: TargetSize,
) -> Result<Started<LiveDecoder>, SourceError> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| SourceError::NoRuntime)?;
    let _guard = handle.enter();
    let argv = section.command.clone();
    let child = spawn_child(&argv)?;
    let counters = Arc::new(Counters::default());
    let pending = LatestSlot::new();
    let pending_for_feed = pending.clone();
    let reader = tokio::spawn(run(
        argv.clone(),
        child,
        pending,
        counters.clone(),
        BackoffBounds::from_millis(section.restart_backoff_ms, section.max_restart_backoff_ms),
    ));
    let background = Background {
        tasks: vec![reader.abort_handle()],
        stop: None,
    };
    Ok(Started {
        producer: LiveDecoder::new("mjpeg".into(), pending_for_feed, target),
        counters,
        description: format!("mjpeg: {}", argv.join(" ")),
        background,
    })
}

/// Spawns the child: stdin null, stdout piped, stderr piped (logged), killed on drop.
fn spawn_child(argv: &[String]) -> Result<Child, SourceError> {
    let program = argv.first().cloned().unwrap_or_default();
    Command::new(&program)
        .args(argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SourceError::Spawn {
            hint: match source.kind() {
                std::io::ErrorKind::NotFound => " — is it installed and on PATH?",
                std::io::ErrorKind::PermissionDenied => " — is it executable?",
                _ => "",
            },
            program,
            source,
        })
}

/// Reads the child until it exits, then restarts it forever (until the task is aborted).
async fn run(
    argv: Vec<String>,
    first: Child,
    pending: Arc<LatestSlot<RawFrame>>,
    counters: Arc<Counters>,
    bounds: BackoffBounds,
) {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = Some(first);
    let mut splitter = JpegSplitter::default();
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        if let Some(mut c) = child.take() {
            let stderr = c
                .stderr
                .take()
                .map(|e| tokio::spawn(stderr_tail(e, program.clone())));
            let outcome = pump(&mut c, &mut splitter, &pending, &counters).await;
            let tail = match stderr {
                Some(t) => tokio::time::timeout(Duration::from_secs(1), t)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
                None => String::new(),
            };
            let ran = started.elapsed();
            backoff.after_run(ran);
            let delay = backoff.next_delay(bounds);
            tracing::warn!(
                program = %program,
                ran_s = ran.as_secs_f64(),
                stderr = %tail,
                "mjpeg source: `{program}` {outcome}; restarting in {} ms",
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
        } else {
            tokio::time::sleep(backoff.next_delay(bounds)).await;
        }
        splitter.reset();
        counters.add_restart();
        match spawn_child(&argv) {
            Ok(c) => child = Some(c),
            Err(e) => tracing::warn!("{e}; will retry"),
        }
    }
}

/// Splits the child's stdout into JPEGs until EOF; returns how the child ended, in words.
async fn pump(
    child: &mut Child,
    splitter: &mut JpegSplitter,
    pending: &LatestSlot<RawFrame>,
    counters: &Counters,
) -> String {
    let Some(mut stdout) = child.stdout.take() else {
        return "has no stdout".into();
    };
    let mut buf = vec![0u8; 64 * 1024];
    let read_error = loop {
        match stdout.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => {
                let before = splitter.resyncs();
                let data = buf.get(..n).unwrap_or_default();
                splitter.push(data, |jpeg| {
                    let raw = RawFrame {
                        image: RawImage::Jpeg(jpeg),
                        origin: "mjpeg".into(),
                        captured: Instant::now(),
                    };
                    if pending.put(raw) {
                        counters.add_dropped(1);
                    }
                });
                for _ in before..splitter.resyncs() {
                    counters.decode_error("mjpeg", &"broken or oversized JPEG in the stream");
                }
            }
            Err(e) => break Some(e),
        }
    };
    drop(stdout);
    let status: std::io::Result<ExitStatus> = match read_error {
        None => match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                let _ = child.kill().await;
                return "closed stdout but kept running; child killed".into();
            }
        },
        Some(e) => {
            let _ = child.kill().await;
            return format!("stdout read failed ({e}); child killed");
        }
    };
    match status {
        Ok(s) => format!("exited ({s})"),
        Err(e) => format!("ended; its status is unknown ({e})"),
    }
}

/// Logs the child's stderr at debug and returns its last lines.
async fn stderr_tail(stderr: ChildStderr, program: String) -> String {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL);
    // Ends at EOF (the child exited or was killed).
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(program = %program, "stderr: {line}");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Vec::from(tail).join(" | ")
}
