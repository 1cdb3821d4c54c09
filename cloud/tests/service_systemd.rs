//! `jmdc-cloud serve` (the real binary) as a systemd `Type=notify` service: a notify socket bound
//! here receives `READY=1`, `WATCHDOG=1` pings, `RELOADING=1` → `READY=1` on SIGHUP (the process
//! stays up) and `STOPPING=1` on SIGTERM, after which it exits with status 0. Signals are sent with
//! `kill`; every wait is bounded.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jmdc-cloud");

fn packages_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cloud/ has a parent")
        .join("models/packages")
}

fn write_config(dir: &Path, log_level: &str) -> PathBuf {
    let path = dir.join("cloud.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmodels_dir = \"{}\"\nlog_level = \"{log_level}\"\n\
         [tls]\nclient_auth = \"off\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[runtime]\nworkers = 1\n",
        packages_dir().display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Notifications received so far.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Self {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits (at most `limit`) for a datagram with a line equal to `line`; returns it.
    fn expect(&mut self, line: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == line) {
                        return msg;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!("no `{line}` within {limit:?}; received: {:?}", self.seen);
    }
}

/// Collects a child's pipe on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jmdc-cloud did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_speaks_sd_notify_reloads_on_sighup_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(BIN)
        .args(["gen-cert", "--cert"])
        .arg(dir.path().join("cert.pem"))
        .arg("--key")
        .arg(dir.path().join("key.pem"))
        .status()
        .expect("gen-cert");
    assert!(status.success());
    let config = write_config(dir.path(), "info");
    let notify_path = dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&notify_path);

    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env_remove("RUST_LOG")
        // journald is not reachable here: the worker must fall back to readable stderr.
        .env("JOURNAL_STREAM", "0:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jmdc-cloud serve");
    let stdout = child.stdout.take().expect("stdout");
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("jmdc-cloud listening on ") {
                let _ = addr_tx.send(addr.to_owned());
            }
        }
    });
    let stderr = collect(child.stderr.take().expect("stderr"));

    let ready = notes.expect("READY=1", Duration::from_secs(120));
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("address line on stdout");
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    assert!(
        ready.contains(&format!("STATUS=listening on {addr}")),
        "{ready}"
    );

    // WATCHDOG_USEC=400000: a ping every 200 ms while the accept loop beats.
    let start = Instant::now();
    notes.expect("WATCHDOG=1", Duration::from_secs(2));
    notes.expect("WATCHDOG=1", Duration::from_secs(2));
    notes.expect("WATCHDOG=1", Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(2), "pings too slow");

    // SIGHUP: re-read (log level and a restart-only change), stay alive.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("read config")
            .replace("log_level = \"info\"", "log_level = \"debug\"")
            .replace("workers = 1", "workers = 2"),
    )
    .expect("rewrite config");
    kill(&child, "HUP");
    let reloading = notes.expect("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notes.expect("READY=1", Duration::from_secs(10));
    // Alive and serving after the reload: the next watchdog ping comes from the running loop.
    notes.expect("WATCHDOG=1", Duration::from_secs(2));
    assert!(
        child.try_wait().expect("poll").is_none(),
        "jmdc-cloud died after SIGHUP"
    );

    kill(&child, "TERM");
    notes.expect("STOPPING=1", Duration::from_secs(10));
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let log = stderr
        .recv_timeout(Duration::from_secs(5))
        .expect("stderr collected");
    assert_eq!(status.code(), Some(0), "exit status; log:\n{log}");

    assert!(log.contains("log level applied"), "{log}");
    assert!(
        log.contains("take effect only after a restart") && log.contains("runtime"),
        "{log}"
    );
    assert!(log.contains("jmdc-cloud stopped"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI colours on a pipe: {log}");
    if !Path::new("/run/systemd/journal/socket").exists() {
        assert!(log.contains("journald cannot be reached"), "{log}");
    }
}

#[test]
fn serve_reports_a_bad_config_naming_the_file_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cloud.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmodel_dir = \"x\"\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}: unknown key `model_dir`", config.display())),
        "{err}"
    );
}
