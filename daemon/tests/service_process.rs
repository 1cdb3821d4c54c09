//! The edge daemon as a process, the way systemd runs it: the real `jmdc-edge` and `jmdc-cloud`
//! binaries on loopback, a datagram socket standing in for systemd's notify socket, real signals.
//!
//! - READY once models are loaded and the first plan is made, WATCHDOG pings, SIGHUP →
//!   RELOADING=1 … READY=1 with the new plan in force, SIGTERM → STOPPING=1, in-flight frames
//!   finish through the cloud, exit status 0.
//! - The cloud worker killed (SIGKILL) in the middle of a 1000-frame run: every frame gets exactly
//!   one result in order, fallbacks are counted, and the edge reconnects when the worker returns.

use jmdc_test_support::require;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use jmdc_bench::linkemu::{LinkParams, Relay, RelayConfig};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ has a parent")
        .to_path_buf()
}

/// The jmdc-cloud binary built next to jmdc-edge (`cargo test --workspace` builds both).
fn cloud_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_jmdc-edge")).with_file_name("jmdc-cloud");
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p jmdc-cloud; make test does)",
        path.display()
    );
    path
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} failed");
}

/// Waits for the child to exit, killing it after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A real jmdc-cloud worker process.
struct CloudProcess {
    child: Child,
}

impl CloudProcess {
    fn start(dir: &Path, port: u16) -> CloudProcess {
        let config = dir.join("cloud.toml");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nmodels_dir = \"{}\"\nlog_level = \"info\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nclient_ca = \"device-ca.pem\"\n[runtime]\nworkers = 2\nintra_op_threads = 1\n",
                repo_root().join("models/packages").display()
            ),
        )
        .expect("write cloud config");
        if !dir.join("cert.pem").exists() {
            let ok = Command::new(cloud_binary())
                .args(["gen-cert", "--cert"])
                .arg(dir.join("cert.pem"))
                .arg("--key")
                .arg(dir.join("key.pem"))
                .stdout(Stdio::null())
                .status()
                .expect("gen-cert")
                .success();
            assert!(ok, "gen-cert failed");
            // The edge proves its identity with a device certificate (mutual TLS).
            let ca = |name: &str| dir.join(name).display().to_string();
            for args in [
                vec![
                    "gen-ca".to_owned(),
                    "--cert".into(),
                    ca("device-ca.pem"),
                    "--key".into(),
                    ca("device-ca-key.pem"),
                ],
                vec![
                    "gen-device-cert".to_owned(),
                    "--ca-cert".into(),
                    ca("device-ca.pem"),
                    "--ca-key".into(),
                    ca("device-ca-key.pem"),
                    "--device".into(),
                    "service-test-edge".into(),
                    "--cert".into(),
                    ca("device.pem"),
                    "--key".into(),
                    ca("device-key.pem"),
                ],
            ] {
                let ok = Command::new(cloud_binary())
                    .args(&args)
                    .stdout(Stdio::null())
                    .status()
                    .expect("jmdc-cloud")
                    .success();
                assert!(ok, "jmdc-cloud {args:?} failed");
            }
        }
        let mut child = Command::new(cloud_binary())
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(repo_root())
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jmdc-cloud");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("jmdc-cloud did not start listening within 60 s");
        CloudProcess { child }
    }

    fn kill_hard(mut self) {
        signal(&self.child, "-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for CloudProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// systemd's side of the notify protocol: a datagram socket collecting messages.
struct NotifyListener {
    path: PathBuf,
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl NotifyListener {
    fn bind(dir: &Path) -> NotifyListener {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        NotifyListener {
            path,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a message containing the line `wanted` (e.g. `READY=1`); returns that message.
    fn expect(&mut self, wanted: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(msg) => {
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == wanted) {
                        return msg;
                    }
                }
                Err(_) => panic!(
                    "no {wanted} within {limit:?}; messages so far: {:#?}",
                    self.seen
                ),
            }
        }
    }
}

fn edge_config(
    dir: &Path,
    endpoint: &str,
    codec: &str,
    source_extra: &str,
    extra: &str,
) -> PathBuf {
    let root = repo_root();
    let path = dir.join("edge.toml");
    fs::write(
        &path,
        format!(
            r#"device_id = "test-edge"
log_level = "info"
[model]
packages_dir = "{packages}"
name = "alexnet-cifar10"
[plan]
variant = "keep050"
split = 6
codec = "{codec}"
[cloud]
endpoint = "{endpoint}"
ca_cert = "cert.pem"
client_cert = "device.pem"
client_key = "device-key.pem"
timeout_ms = 1000
connect_timeout_ms = 1000
reconnect_initial_ms = 100
reconnect_max_ms = 400
failures_before_reconnect = 2
[source]
kind = "cifar"
path = "{samples}"
repeat = true
{source_extra}
[pipeline]
max_in_flight = 4
[output]
format = "json"
file = "results.jsonl"
[service]
status_interval_ms = 200
drain_timeout_ms = 10000
{extra}
"#,
            packages = root.join("models/packages").display(),
            samples = root.join("models/samples/cifar10-test-256.bin").display(),
        ),
    )
    .expect("write edge config");
    path
}

fn start_edge(dir: &Path, config: &Path, notify: Option<&Path>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jmdc-edge"));
    cmd.args(["run", "--config"])
        .arg(config)
        .current_dir(repo_root())
        .stdout(fs::File::create(dir.join("edge.stdout")).expect("stdout file"))
        .stderr(fs::File::create(dir.join("edge.stderr")).expect("stderr file"));
    match notify {
        Some(path) => {
            cmd.env("NOTIFY_SOCKET", path)
                .env("WATCHDOG_USEC", "400000");
        }
        None => {
            cmd.env_remove("NOTIFY_SOCKET").env_remove("WATCHDOG_USEC");
        }
    }
    cmd.spawn().expect("start jmdc-edge")
}

#[derive(Debug)]
struct ResultLine {
    frame: u64,
    plan: String,
    finished_on: String,
    fallback: bool,
}

fn read_results(path: &Path) -> Vec<ResultLine> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"));
            ResultLine {
                frame: v["frame"].as_u64().expect("frame"),
                plan: v["plan"].as_str().expect("plan").to_string(),
                finished_on: v["finished_on"].as_str().expect("finished_on").to_string(),
                fallback: v["fallback"].as_bool().expect("fallback"),
            }
        })
        .collect()
}

fn wait_results(path: &Path, at_least: usize, limit: Duration) -> Vec<ResultLine> {
    let deadline = Instant::now() + limit;
    loop {
        let results = read_results(path);
        if results.len() >= at_least {
            return results;
        }
        assert!(
            Instant::now() < deadline,
            "only {} results after {limit:?}",
            results.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_contiguous(results: &[ResultLine]) {
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r.frame, i as u64,
            "results out of order or missing at line {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_watchdog_reload_and_sigterm_drains_in_flight_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let _cloud = CloudProcess::start(dir.path(), port);
    // 40 ms each way: every frame spends > 80 ms in flight, so there is always something to drain.
    let delay = LinkParams {
        delay: Duration::from_millis(40),
        ..LinkParams::unlimited()
    };
    let relay = Relay::bind(
        RelayConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            format!("127.0.0.1:{port}").parse().expect("addr"),
        )
        .with_both(delay),
    )
    .await
    .expect("relay");
    let endpoint = relay.local_addr().to_string();
    let config = edge_config(dir.path(), &endpoint, "int8", "max_fps = 100", "");
    let mut notify = NotifyListener::bind(dir.path());
    let mut edge = start_edge(dir.path(), &config, Some(&notify.path));

    let ready = tokio::task::block_in_place(|| notify.expect("READY=1", Duration::from_secs(60)));
    assert!(
        ready.contains("STATUS=plan"),
        "READY carries a status: {ready}"
    );
    tokio::task::block_in_place(|| {
        notify.expect("WATCHDOG=1", Duration::from_secs(2));
        notify.expect("WATCHDOG=1", Duration::from_secs(2));
    });
    let results = path_results(dir.path());
    tokio::task::block_in_place(|| wait_results(&results, 20, Duration::from_secs(30)));

    // Reload with another codec: RELOADING=1, then READY=1, then frames use the new plan.
    edge_config(dir.path(), &endpoint, "int4", "max_fps = 100", "");
    signal(&edge, "-HUP");
    tokio::task::block_in_place(|| {
        notify.expect("RELOADING=1", Duration::from_secs(5));
        notify.expect("READY=1", Duration::from_secs(5));
    });
    let seen = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = read_results(&results);
            if r.iter().any(|l| l.plan.contains("int4")) {
                return r;
            }
            assert!(Instant::now() < deadline, "reloaded plan never used");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(seen.iter().any(|l| l.plan.contains("int8")));

    signal(&edge, "-TERM");
    tokio::task::block_in_place(|| notify.expect("STOPPING=1", Duration::from_secs(5)));
    let code = tokio::task::block_in_place(|| wait_exit(&mut edge, Duration::from_secs(15)));
    let stderr =
        strip_ansi(&fs::read_to_string(dir.path().join("edge.stderr")).unwrap_or_default());
    assert_eq!(code, Some(0), "exit status; stderr:\n{stderr}");
    let all = read_results(&results);
    assert_contiguous(&all);
    let drained: usize = stderr
        .lines()
        .find(|l| l.contains("draining in-flight frames"))
        .and_then(|l| l.split("in_flight=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no drain log line; stderr:\n{stderr}"));
    assert!(drained >= 1, "expected frames in flight at SIGTERM");
    // The drained frames finished through the cloud, not by an emergency edge fallback.
    for line in &all[all.len() - drained..] {
        assert_eq!(line.finished_on, "cloud", "drained frame {line:?}");
    }
    println!(
        "{} results, {drained} frames drained after SIGTERM, exit 0",
        all.len()
    );
}

/// Log lines without colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn path_results(dir: &Path) -> PathBuf {
    dir.join("results.jsonl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_killed_mid_run_every_frame_gets_a_result_and_edge_reconnects() {
    const FRAMES: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let cloud = CloudProcess::start(dir.path(), port);
    let config = edge_config(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        "int8",
        &format!("limit = {FRAMES}\nmax_fps = 150"),
        "",
    );
    let results = path_results(dir.path());
    let mut edge = start_edge(dir.path(), &config, None);

    tokio::task::block_in_place(|| wait_results(&results, 300, Duration::from_secs(60)));
    let killed_at = Instant::now();
    cloud.kill_hard();
    let at_kill = read_results(&results).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _cloud = tokio::task::block_in_place(|| CloudProcess::start(dir.path(), port));
    let restarted_after = killed_at.elapsed();
    let at_restart = read_results(&results).len();

    let code = tokio::task::block_in_place(|| wait_exit(&mut edge, Duration::from_secs(120)));
    let stderr = fs::read_to_string(dir.path().join("edge.stderr")).unwrap_or_default();
    assert_eq!(code, Some(0), "exit status; stderr:\n{stderr}");
    let all = read_results(&results);
    assert_eq!(all.len(), FRAMES, "one result per frame");
    assert_contiguous(&all);
    let fallbacks = all.iter().filter(|r| r.fallback).count();
    assert!(fallbacks > 0, "the outage must show as fallbacks");
    let first_fallback = all.iter().position(|r| r.fallback).expect("a fallback");
    let last_fallback = all.iter().rposition(|r| r.fallback).expect("a fallback");
    let cloud_after = all[last_fallback..]
        .iter()
        .filter(|r| r.finished_on == "cloud")
        .count();
    assert!(
        cloud_after > 50,
        "the edge must be back on the cloud after the worker returned (only {cloud_after} cloud frames after the last fallback at {last_fallback})"
    );
    println!(
        "{FRAMES} frames: killed at result {at_kill}, worker back after {restarted_after:?} (result {at_restart}); \
         {fallbacks} fallbacks between frames {first_fallback} and {last_fallback}; {cloud_after} cloud frames after"
    );
}

/// GET /metrics over a Unix socket; the response body.
fn scrape_unix(path: &Path) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .expect("body")
}

/// The value of the sample `name` (with its labels) in an exposition body.
fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no sample {name}"))
}

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn mjpeg_camera_pipe_runs_until_sigterm() {
    if !ffmpeg_available() {
        require::missing(
            require::Need::Tool,
            "ffmpeg is not installed (apt install ffmpeg)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = repo_root();
    let config = dir.path().join("edge.toml");
    fs::write(
        &config,
        format!(
            r#"log_level = "info"
[model]
packages_dir = "{packages}"
name = "alexnet-cifar10"
[plan]
variant = "keep050"
split = "edge-only"
[source]
kind = "mjpeg"
command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-f", "mjpeg", "-"]
[pipeline]
max_in_flight = 2
[output]
format = "json"
file = "results.jsonl"
[metrics]
socket = "metrics.sock"
"#,
            packages = root.join("models/packages").display(),
        ),
    )
    .expect("write config");
    let mut edge = start_edge(dir.path(), &config, None);
    let results = path_results(dir.path());
    wait_results(&results, 30, Duration::from_secs(60));
    // Prometheus scrape of the running daemon over its Unix socket, until the frames written are
    // counted (at most 10 s).
    let socket = dir.path().join("metrics.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = scrape_unix(&socket);
    while metric_value(&body, "jmdc_edge_frames_total{outcome=\"edge\"}") < 30.0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        body = scrape_unix(&socket);
    }
    let edge_frames = metric_value(&body, "jmdc_edge_frames_total{outcome=\"edge\"}");
    assert!(edge_frames >= 30.0, "frames counted: {edge_frames}\n{body}");
    assert!(metric_value(&body, "jmdc_edge_source_frames_total") >= edge_frames);
    assert!(
        body.contains("jmdc_edge_plan_info{plan=\"keep050 edge-only"),
        "{body}"
    );
    signal(&edge, "-TERM");
    let code = wait_exit(&mut edge, Duration::from_secs(15));
    let stderr =
        strip_ansi(&fs::read_to_string(dir.path().join("edge.stderr")).unwrap_or_default());
    assert_eq!(code, Some(0), "exit status; stderr:\n{stderr}");
    let all = read_results(&results);
    assert_contiguous(&all);
    let text = fs::read_to_string(&results).expect("results");
    assert!(
        text.contains("\"origin\":\"mjpeg\""),
        "origin of camera frames"
    );
    assert!(
        all.iter().all(|r| r.finished_on == "edge" && !r.fallback),
        "edge-only plan"
    );
    println!(
        "{} frames from the ffmpeg MJPEG pipe, exit 0 after SIGTERM",
        all.len()
    );
}
