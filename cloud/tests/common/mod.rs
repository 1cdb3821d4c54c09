//! Shared by the tests that run the real `jmdc-cloud serve`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_jmdc-cloud");

/// The repository's model packages.
pub fn packages_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cloud/ has a parent")
        .join("models/packages")
}

/// Starts `jmdc-cloud serve --config config` (no systemd, no RUST_LOG, readable stderr — piped
/// when `capture_stderr`, else discarded) and waits (at most 120 s) for the address it prints.
pub fn serve(config: &Path, capture_stderr: bool) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", "0:0")
        .stdout(Stdio::piped())
        .stderr(if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("start jmdc-cloud serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("jmdc-cloud listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the worker prints its address")
        .parse()
        .expect("socket address");
    (child, addr)
}
