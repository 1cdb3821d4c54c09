//! The real release binaries the runner drives: the cloud worker, the link emulator and the spinner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::error::BenchError;
use super::process::Proc;

/// How long the worker and the relay may take to report their address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The edge daemon, `jmdc-edge`.
    pub edge: PathBuf,
    /// The cloud worker, `jmdc-cloud`.
    pub cloud: PathBuf,
    /// The link emulator, `jmdc-linkemu`.
    pub linkemu: PathBuf,
    /// This program (for `spin`).
    pub bench: PathBuf,
}

impl Binaries {
    /// `jmdc-edge`, `jmdc-cloud` and `jmdc-linkemu` in `dir`; `bench` is this executable.
    pub fn in_dir(dir: &Path, bench: PathBuf) -> Result<Self, BenchError> {
        let b = Self {
            edge: dir.join("jmdc-edge"),
            cloud: dir.join("jmdc-cloud"),
            linkemu: dir.join("jmdc-linkemu"),
            bench,
        };
        for p in [&b.edge, &b.cloud, &b.linkemu, &b.bench] {
            if !p.is_file() {
                return Err(BenchError::Invalid(format!(
                    "{} not found (build with: cargo build --release -p jmdc-edge -p jmdc-cloud -p jmdc-bench)",
                    p.display()
                )));
            }
        }
        Ok(b)
    }
}

/// TOML basic string with `"` and `\` escaped.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| BenchError::io(path, e))
}

/// The address in the first line that has one (`jmdc-cloud listening on 127.0.0.1:4433`,
/// `127.0.0.1:45211`).
pub fn parse_addr(line: &str) -> Option<SocketAddr> {
    line.split_whitespace().rev().find_map(|w| w.parse().ok())
}

/// A running `jmdc-cloud serve` (one worker, one intra-op thread), with its certificate.
#[derive(Debug)]
pub struct Worker {
    proc: Proc,
    /// The loopback address the worker listens on.
    pub addr: SocketAddr,
    /// The worker's self-signed certificate (PEM), for the edge to trust.
    pub cert: PathBuf,
}

/// How a started worker runs (the `[runtime]`, `[batching]` and `[limits]` it is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Execution threads and sessions per variant and range.
    pub workers: usize,
    /// Intra-op threads per session.
    pub threads: usize,
    /// Connections admitted from one address (loopback load tests open one per device).
    pub per_address: usize,
    /// `runtime.merged_cache_mib`; `None` = the worker's default.
    pub merged_cache_mib: Option<usize>,
    /// `batching.max_batch`; `None` = the worker's default.
    pub max_batch: Option<usize>,
    /// `batching.max_wait_us`; `None` = the worker's default.
    pub max_wait_us: Option<u64>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            workers: 1,
            threads: 1,
            per_address: 16,
            merged_cache_mib: None,
            max_batch: None,
            max_wait_us: None,
        }
    }
}

impl WorkerSettings {
    fn toml(&self) -> String {
        let mut out = format!(
            "[runtime]\nworkers = {}\nintra_op_threads = {}\n",
            self.workers, self.threads
        );
        if let Some(mib) = self.merged_cache_mib {
            out += &format!("merged_cache_mib = {mib}\n");
        }
        out += "[batching]\n";
        if let Some(n) = self.max_batch {
            out += &format!("max_batch = {n}\n");
        }
        if let Some(us) = self.max_wait_us {
            out += &format!("max_wait_us = {us}\n");
        }
        out += &format!(
            "[limits]\nmax_connections_per_address = {}\n",
            self.per_address
        );
        out
    }
}

impl Worker {
    /// Generates a certificate in `work`, writes `cloud.toml` and starts the worker on a free
    /// loopback port; returns once it prints its address.
    pub fn start(bins: &Binaries, repo: &Path, work: &Path) -> Result<Self, BenchError> {
        Self::start_with(bins, repo, work, &WorkerSettings::default())
    }

    /// [`Worker::start`] with `settings`.
    pub fn start_with(
        bins: &Binaries,
        repo: &Path,
        work: &Path,
        settings: &WorkerSettings,
    ) -> Result<Self, BenchError> {
        let cert = work.join("cert.pem");
        let key = work.join("key.pem");
        let mut gen = Proc::spawn(
            "jmdc-cloud gen-cert",
            Command::new(&bins.cloud)
                .arg("gen-cert")
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key),
            None,
            Some(&work.join("gen-cert.log")),
        )?;
        gen.wait_success(Duration::from_secs(30))?;
        let config = work.join("cloud.toml");
        write(
            &config,
            &format!(
                "listen = \"127.0.0.1:0\"\nmodels_dir = {}\nlog_level = \"warn\"\n[tls]\nclient_auth = \"off\"\ncert = {}\nkey = {}\n{}",
                toml_str(&repo.join("models/packages").to_string_lossy()),
                toml_str(&cert.to_string_lossy()),
                toml_str(&key.to_string_lossy()),
                settings.toml(),
            ),
        )?;
        let mut proc = Proc::spawn(
            "jmdc-cloud",
            Command::new(&bins.cloud)
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("ORT_DISABLE_TELEMETRY", "1"),
            Some(&work.join("cloud.out")),
            Some(&work.join("cloud.log")),
        )?;
        let addr = proc.wait_for_line(START_TIMEOUT, |l| {
            l.contains("listening").then(|| parse_addr(l)).flatten()
        })?;
        Ok(Self { proc, addr, cert })
    }

    /// Fails when the worker has exited.
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.proc.try_status()? {
            None => Ok(()),
            Some(status) => Err(BenchError::process(
                "jmdc-cloud",
                format!("exited with {status}{}", self.proc.stderr_tail()),
            )),
        }
    }

    /// Stops the worker: SIGTERM, then a kill after 5 s.
    pub fn stop(mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }
}

/// Link parameters of one relay.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSetting {
    /// Rate of both directions, Mbit/s (until a trace changes it).
    pub rate_mbit: f64,
    /// One-way delay, both directions.
    pub delay_ms: f64,
    /// Drop-tail queue capacity of each direction, bytes.
    pub queue_bytes: usize,
    /// A `--trace` CSV.
    pub trace: Option<PathBuf>,
    /// Safety bound: the relay stops by itself after this long.
    pub max_duration: Duration,
}

/// A running `jmdc-linkemu` in front of the worker.
#[derive(Debug)]
pub struct LinkEmu {
    proc: Proc,
    /// The address the relay listens on (the edge connects here).
    pub addr: SocketAddr,
}

impl LinkEmu {
    /// Starts the relay and returns once it prints its bound address.
    pub fn start(
        bins: &Binaries,
        upstream: SocketAddr,
        link: &LinkSetting,
        log: &Path,
    ) -> Result<Self, BenchError> {
        let out = log.with_extension("addr");
        let mut cmd = Command::new(&bins.linkemu);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--upstream")
            .arg(upstream.to_string())
            .arg("--rate-mbit")
            .arg(link.rate_mbit.to_string())
            .arg("--delay-ms")
            .arg(link.delay_ms.to_string())
            .arg("--queue-bytes")
            .arg(link.queue_bytes.to_string())
            .arg("--duration-s")
            .arg(link.max_duration.as_secs().max(1).to_string());
        if let Some(trace) = &link.trace {
            cmd.arg("--trace").arg(trace);
        }
        let mut proc = Proc::spawn("jmdc-linkemu", &mut cmd, Some(&out), Some(log))?;
        let addr = proc.wait_for_line(START_TIMEOUT, parse_addr)?;
        Ok(Self { proc, addr })
    }

    /// Fails when the relay has exited (it stops by itself after its maximum duration).
    pub fn check_alive(&mut self) -> Result<(), BenchError> {
        match self.proc.try_status()? {
            None => Ok(()),
            Some(status) => Err(BenchError::process(
                "jmdc-linkemu",
                format!("exited with {status}{}", self.proc.stderr_tail()),
            )),
        }
    }

    /// Stops the relay (its counters go to its log).
    pub fn stop(mut self) {
        self.proc.terminate(Duration::from_secs(3));
    }
}

/// Starts `jmdc-bench spin --seconds S` (one busy core), killed when dropped.
pub fn start_spinner(bins: &Binaries, seconds: f64) -> Result<Proc, BenchError> {
    Proc::spawn(
        "jmdc-bench spin",
        Command::new(&bins.bench)
            .arg("spin")
            .arg("--seconds")
            .arg(format!("{seconds:.0}")),
        None,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_toml_strings() {
        assert_eq!(
            parse_addr("jmdc-cloud listening on 127.0.0.1:4433"),
            Some("127.0.0.1:4433".parse().expect("addr"))
        );
        assert_eq!(
            parse_addr("127.0.0.1:45211"),
            "127.0.0.1:45211".parse().ok()
        );
        assert_eq!(parse_addr("no address"), None);
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
