//! The `jmdc-linkemu` binary: prints its bound address first, relays with the given delay, plays a
//! trace file, stops after `--duration-s` and reports its counters.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{echo_server, loopback, TEST_LIMIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UdpSocket;

async fn ping(client: &UdpSocket) -> Duration {
    let mut buf = [0u8; 16];
    let sent = Instant::now();
    client.send(b"ping").await.expect("send");
    tokio::time::timeout(Duration::from_secs(1), client.recv(&mut buf))
        .await
        .expect("reply within 1 s")
        .expect("recv");
    sent.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_relays_with_delay_and_trace() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (echo, echo_task) = echo_server().await;
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let trace_path = dir.join(format!("linkemu-steps-{}.csv", std::process::id()));
        std::fs::write(
            &trace_path,
            "at_ms,direction,rate_mbit,delay_ms,loss,queue_bytes\n0,both,10,15\n300,both,,5\n",
        )
        .expect("write trace");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jmdc-linkemu"))
            .args(["--listen", "127.0.0.1:0", "--upstream", &echo.to_string()])
            .args(["--rate-mbit", "10", "--delay-ms", "15", "--loss", "0"])
            .arg("--trace")
            .arg(&trace_path)
            .args(["--duration-s", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start jmdc-linkemu");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("address within 5 s")
            .expect("read stdout")
            .expect("a first line");
        let relay: std::net::SocketAddr = first.trim().parse().expect("an address");
        assert!(relay.ip().is_loopback() && relay.port() != 0, "{relay}");
        let started = Instant::now();

        let client = UdpSocket::bind(loopback()).await.expect("client");
        client.connect(relay).await.expect("connect");
        let slow = ping(&client).await;
        assert!(slow >= Duration::from_millis(30), "{slow:?} with 2×15 ms");
        tokio::time::sleep_until((started + Duration::from_millis(500)).into()).await;
        let fast = ping(&client).await;
        assert!(
            fast >= Duration::from_millis(10) && fast < Duration::from_millis(25),
            "{fast:?} with 2×5 ms after the trace step"
        );

        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("exits after --duration-s")
            .expect("wait");
        assert!(status.success(), "{status}");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .await
            .expect("read stderr");
        assert!(
            stderr.contains("uplink:") && stderr.contains("forwarded 2 pkt"),
            "{stderr}"
        );
        let _ = std::fs::remove_file(&trace_path);
        echo_task.abort();
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn binary_rejects_bad_parameters() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_jmdc-linkemu"))
        .args([
            "--upstream",
            "127.0.0.1:9",
            "--loss",
            "2",
            "--duration-s",
            "1",
        ])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(10), output)
        .await
        .expect("exits")
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loss"));
}
