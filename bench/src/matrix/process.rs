//! Child processes: spawned with their output in files, waited for with a deadline, and always
//! killed when their guard is dropped (normal end, error, or Ctrl-C/SIGTERM through
//! [`install_interrupt_handler`], which makes every wait here return [`BenchError::Interrupted`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::BenchError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How often waits look at children, files and the interrupt flag.
const POLL: Duration = Duration::from_millis(10);

/// Sets the interrupt flag on SIGINT or SIGTERM (a background thread with a small tokio runtime).
pub fn install_interrupt_handler() -> Result<(), BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::process("signal handler", e.to_string()))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            });
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("jmdc-bench: interrupted, stopping children");
        })
        .map_err(|e| BenchError::process("signal handler", e.to_string()))?;
    Ok(())
}

/// True once SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once SIGINT or SIGTERM arrived.
pub fn check_interrupt() -> Result<(), BenchError> {
    if interrupted() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps up to `d`, waking early on an interrupt.
pub fn sleep_interruptible(d: Duration) -> Result<(), BenchError> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep(POLL.min(end - now));
    }
}

/// A running child that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr into the given files (or discarded).
    pub fn spawn(
        name: impl Into<String>,
        cmd: &mut Command,
        stdout: Option<&Path>,
        stderr: Option<&Path>,
    ) -> Result<Self, BenchError> {
        let name = name.into();
        let out = |p: Option<&Path>| -> Result<Stdio, BenchError> {
            match p {
                Some(p) => File::create(p)
                    .map(Stdio::from)
                    .map_err(|e| BenchError::io(p, e)),
                None => Ok(Stdio::null()),
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(out(stdout)?)
            .stderr(out(stderr)?);
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::process(&name, format!("cannot start: {e}")))?;
        Ok(Self {
            name,
            child,
            stdout: stdout.map(Path::to_path_buf),
            stderr: stderr.map(Path::to_path_buf),
        })
    }

    /// Spawns `cmd` with stdout piped to the caller ([`Self::take_stdout`]) and stderr into a file.
    pub fn spawn_piped(
        name: impl Into<String>,
        cmd: &mut Command,
        stderr: &Path,
    ) -> Result<Self, BenchError> {
        let name = name.into();
        let err = File::create(stderr).map_err(|e| BenchError::io(stderr, e))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| BenchError::process(&name, format!("cannot start: {e}")))?;
        Ok(Self {
            name,
            child,
            stdout: None,
            stderr: Some(stderr.to_path_buf()),
        })
    }

    /// The name given at spawn, used in errors and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The piped stdout (once).
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The exit status if the child has ended.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, BenchError> {
        self.child
            .try_wait()
            .map_err(|e| BenchError::process(&self.name, format!("wait: {e}")))
    }

    /// Waits for the child to end; kills it and fails after `timeout` or on an interrupt.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if interrupted() {
                self.kill();
                return Err(BenchError::Interrupted);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(BenchError::Timeout {
                    name: self.name.clone(),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the child and fails unless it exits with status 0 (the error carries the tail of
    /// its stderr).
    pub fn wait_success(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let status = self.wait_timeout(timeout)?;
        if status.success() {
            Ok(())
        } else {
            Err(BenchError::process(
                &self.name,
                format!("exited with {status}{}", self.stderr_tail()),
            ))
        }
    }

    /// Polls the child's stdout file (or stderr when stdout is not a file) for the first line that
    /// `pick` accepts; fails when the child exits first, after `timeout`, or on an interrupt.
    pub fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> Result<T, BenchError> {
        let path = self
            .stdout
            .clone()
            .or_else(|| self.stderr.clone())
            .ok_or_else(|| BenchError::process(&self.name, "no output file to watch"))?;
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupt()?;
            if let Ok(text) = std::fs::read_to_string(&path) {
                // Only complete lines: a line still being written has no newline yet.
                let complete = text.rfind('\n').map_or("", |i| &text[..i]);
                if let Some(found) = complete.lines().find_map(&pick) {
                    return Ok(found);
                }
            }
            if let Some(status) = self.try_status()? {
                return Err(BenchError::process(
                    &self.name,
                    format!(
                        "exited with {status} before it was ready{}",
                        self.stderr_tail()
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Timeout {
                    name: format!("{} start-up", self.name),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM (through `kill`, the standard tool) without waiting; false when the child had
    /// already ended or the signal could not be sent.
    pub fn send_term(&mut self) -> bool {
        if matches!(self.try_status(), Ok(Some(_))) {
            return false;
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Asks the child to stop with SIGTERM (through `kill`, the standard tool) and waits up to
    /// `grace` before killing it.
    pub fn terminate(&mut self, grace: Duration) {
        if self.send_term() {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if matches!(self.try_status(), Ok(Some(_)) | Err(_)) {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
        self.kill();
    }

    /// Kills the child (SIGKILL) and reaps it; harmless when it already ended.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The last lines of the child's stderr file, for error messages (empty when none).
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| {
                // anyhow prints a backtrace under RUST_BACKTRACE=1: the message is before it
                let t = t.split("\nStack backtrace:").next().unwrap_or_default();
                let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = lines[lines.len().saturating_sub(12)..].join("\n");
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr:\n{tail}")
                }
            })
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Busy-loops on one core for `seconds` (the `spin` subcommand: competing CPU load). Bounded by
/// time, and ends early on an interrupt.
pub fn spin(seconds: f64) {
    let end = Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0));
    let mut x: u64 = 1;
    while Instant::now() < end && !interrupted() {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_kills_the_child() {
        let mut p =
            Proc::spawn("sleep", Command::new("sleep").arg("30"), None, None).expect("spawn");
        let started = Instant::now();
        let err = p
            .wait_timeout(Duration::from_millis(200))
            .expect_err("times out");
        assert!(matches!(err, BenchError::Timeout { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(p.try_status(), Ok(Some(_))), "killed and reaped");
    }

    #[test]
    fn waits_for_a_line_and_reports_early_exit() {
        let dir = std::env::temp_dir().join(format!("jmdc-bench-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let out = dir.join("out");
        let mut p = Proc::spawn(
            "sh",
            Command::new("sh").args(["-c", "sleep 0.1; echo 'listening on 127.0.0.1:5'; sleep 30"]),
            Some(&out),
            None,
        )
        .expect("spawn");
        let addr = p
            .wait_for_line(Duration::from_secs(10), |l| {
                l.strip_prefix("listening on ").map(str::to_string)
            })
            .expect("line");
        assert_eq!(addr, "127.0.0.1:5");
        drop(p);
        let err_file = dir.join("err");
        let mut q = Proc::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            Some(&out),
            Some(&err_file),
        )
        .expect("spawn");
        let err = q
            .wait_for_line(Duration::from_secs(10), |l| {
                l.strip_prefix("nothing").map(str::to_string)
            })
            .expect_err("exits");
        assert!(err.to_string().contains("boom"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
