//! The metrics endpoint over real sockets: a Unix socket in a temporary folder and 127.0.0.1/::1
//! TCP ports, scraped with raw HTTP requests (and curl when installed); the body is checked line
//! by line against the Prometheus text exposition format.

use jmdc_test_support::require;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jmdc_edge::metrics::{serve, serve_with, Metrics, MetricsError, MetricsSection, ServerOptions};
use jmdc_edge::stats::FrameRecord;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- exposition-format line checker

/// A sample's labels in order: `(name, value)`.
type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// A scrape parsed and checked: every line is HELP, TYPE or a sample `name{labels} value`, every
/// sample's family has a TYPE declared before it, no family is declared twice.
#[derive(Debug)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the series `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    fn series_of(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if v
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            Err(format!("bad value {v:?}"))
        }
        _ => v.parse().map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// Parses `{k="v",…}` at the start of `s`; returns the labels and the rest after `}`.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let key = &rest[..eq];
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} value not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?} in label {key}")),
                },
                '"' => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                '\n' => return Err("raw newline in label value".into()),
                c => value.push(c),
            }
        }
        let end = end.ok_or(format!("label {key} value not terminated"))?;
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("label {key} repeated"));
        }
        labels.push((key.to_owned(), value));
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return Some(base);
            }
        }
    }
    None
}

fn check_exposition(body: &str) -> Result<Exposition, String> {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    if !body.ends_with('\n') {
        return Err("body does not end with a newline".into());
    }
    for (no, line) in body.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", no + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (parts.next(), parts.next(), parts.next());
            let name = name
                .filter(|n| valid_name(n))
                .ok_or_else(|| err("bad name".into()))?;
            match kind {
                Some("HELP") => {}
                Some("TYPE") => {
                    let t = tail.unwrap_or_default();
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err(format!("unknown type {t:?}")));
                    }
                    let of_family = |s: &Sample| {
                        s.name == name
                            || ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|x| s.name.strip_suffix(x) == Some(name))
                    };
                    if samples.iter().any(of_family) {
                        return Err(err("TYPE after samples of the family".into()));
                    }
                    if types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(err("TYPE declared twice".into()));
                    }
                }
                _ => return Err(err("unknown comment".into())),
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| err(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = family_of(name, &types).ok_or_else(|| err("sample without TYPE".into()))?;
        if types.get(family).is_some_and(|t| t == "counter") && !name.ends_with("_total") {
            return Err(err("counter not named *_total".into()));
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&types, &samples)?;
    Ok(Exposition { types, samples })
}

/// Buckets are cumulative, end in `+Inf`, and `+Inf` equals `_count`.
fn check_histograms(types: &HashMap<String, String>, samples: &[Sample]) -> Result<(), String> {
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let bucket_name = format!("{family}_bucket");
        let mut series: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in samples.iter().filter(|s| s.name == bucket_name) {
            let le = s
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or(format!("{bucket_name} without le"))?;
            let le = parse_value(&le.1)?;
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, buckets) in series {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for &(le, v) in &buckets {
                if le <= last.0 || v < last.1 {
                    return Err(format!("{family}{key:?}: buckets not cumulative"));
                }
                last = (le, v);
            }
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{key:?}: no +Inf bucket"));
            }
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == key)
                .ok_or(format!("{family}{key:?}: no _count"))?;
            if count.value != last.1 {
                return Err(format!("{family}{key:?}: _count != +Inf bucket"));
            }
        }
    }
    Ok(())
}

#[test]
fn checker_rejects_malformed_expositions() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\"} 1\n";
    assert!(check_exposition(ok).is_ok());
    for bad in [
        "a_total 1\n",                                           // no TYPE
        "# TYPE a_total counter\na_total{x=\"1} 1\n",            // unterminated label
        "# TYPE a_total counter\na_total one\n",                 // bad value
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",                 // TYPE twice
        "# TYPE a counter\na 1\n",                               // counter without _total
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_count 2\n", // no +Inf
        "# TYPE g gauge\ng 1",                                   // no final newline
        "# TYPE g gauge\ng{x=\"\\q\"} 1\n",                      // bad escape
    ] {
        assert!(check_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------------------------- HTTP helpers

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` raw and reads the response to EOF (the server closes after one response).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> HttpResponse {
    timeout(LIMIT, async {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("response head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let r = HttpResponse {
            status,
            headers,
            body: body.to_owned(),
        };
        if let Some(len) = r.header("Content-Length") {
            assert_eq!(len.parse::<usize>().expect("length"), r.body.len());
        }
        r
    })
    .await
    .expect("exchange within the time limit")
}

const GET_METRICS: &str = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";

async fn get_unix(path: &Path, request: &str) -> HttpResponse {
    let s = timeout(LIMIT, UnixStream::connect(path))
        .await
        .expect("connect in time")
        .expect("connect to the metrics socket");
    exchange(s, request).await
}

async fn get_tcp(addr: SocketAddr, request: &str) -> HttpResponse {
    let s = timeout(LIMIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect to the metrics port");
    exchange(s, request).await
}

fn scrape_ok(r: &HttpResponse) -> Exposition {
    assert_eq!(r.status, 200, "{}", r.body);
    let ct = r.header("Content-Type").expect("content type");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    check_exposition(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

fn cloud_frame(total_us: u64) -> FrameRecord {
    FrameRecord {
        frame_id: 1,
        label: Some(3),
        predicted: 3,
        edge_us: 1_200,
        encode_us: 150,
        network_us: 2_500,
        cloud_us: 900,
        total_us,
        bytes: 1_500,
        plan: "variant=keep050,split=9,keep=0.5,codec=int4".into(),
        ..Default::default()
    }
}

fn unix_section(path: &Path) -> MetricsSection {
    MetricsSection {
        enabled: true,
        socket: Some(path.to_path_buf()),
        tcp: None,
    }
}

fn tcp_section(addr: &str) -> MetricsSection {
    MetricsSection {
        enabled: true,
        // An empty socket path: no socket even if the test runs under systemd (RUNTIME_DIRECTORY).
        socket: Some(PathBuf::new()),
        tcp: Some(addr.parse().expect("address")),
    }
}

// ------------------------------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_scrape_moves_counters_and_histograms() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The folder does not exist yet: serve creates it.
    let path = dir.path().join("run/jmdc-edge/metrics.sock");
    let metrics = Arc::new(Metrics::new());
    let server = serve(metrics.clone(), &unix_section(&path))
        .await
        .expect("serve on the socket");
    assert_eq!(server.socket_path(), Some(path.as_path()));
    assert_eq!(server.tcp_addr(), None);
    let meta = std::fs::metadata(&path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let before = scrape_ok(&get_unix(&path, GET_METRICS).await);
    let cloud = [("outcome", "cloud")];
    let total = [("stage", "total")];
    assert_eq!(before.value("jmdc_edge_frames_total", &cloud), Some(0.0));
    assert_eq!(
        before.value("jmdc_edge_latency_seconds_count", &total),
        Some(0.0)
    );

    metrics.record_frame(&cloud_frame(4_900));
    metrics.record_frame(&cloud_frame(30_000));
    metrics.record_frame(&FrameRecord {
        fallback: true,
        bytes: 700,
        edge_us: 9_000,
        total_us: 2_000_000,
        ..Default::default()
    });
    metrics.set_source(10, 2, 1, 0);
    let after = scrape_ok(&get_unix(&path, GET_METRICS).await);
    assert_eq!(after.value("jmdc_edge_frames_total", &cloud), Some(2.0));
    assert_eq!(
        after.value("jmdc_edge_frames_total", &[("outcome", "fallback")]),
        Some(1.0)
    );
    assert_eq!(
        after.value("jmdc_edge_frames_total", &[("outcome", "edge")]),
        Some(0.0)
    );
    assert_eq!(
        after.value("jmdc_edge_sent_bytes_total", &[]),
        Some(3_700.0)
    );
    assert_eq!(
        after.value("jmdc_edge_latency_seconds_count", &total),
        Some(3.0)
    );
    assert_eq!(
        after.value("jmdc_edge_latency_seconds_count", &[("stage", "cloud")]),
        Some(2.0)
    );
    let sum = after
        .value("jmdc_edge_latency_seconds_sum", &total)
        .expect("sum");
    assert!((sum - 2.0349).abs() < 1e-9, "{sum}");
    let le_5ms = [("stage", "total"), ("le", "0.005")];
    assert_eq!(
        after.value("jmdc_edge_latency_seconds_bucket", &le_5ms),
        Some(1.0)
    );
    let le_2_5s = [("stage", "total"), ("le", "2.5")];
    assert_eq!(
        after.value("jmdc_edge_latency_seconds_bucket", &le_2_5s),
        Some(3.0)
    );
    assert_eq!(
        after.value("jmdc_edge_source_dropped_frames_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        after
            .types
            .get("jmdc_edge_latency_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    server.shutdown().await;
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_scrape_and_plan_label_replacement() {
    let metrics = Arc::new(Metrics::new());
    let server = serve(metrics.clone(), &tcp_section("127.0.0.1:0"))
        .await
        .expect("serve on 127.0.0.1:0");
    let addr = server.tcp_addr().expect("bound address");
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(server.socket_path(), None);

    metrics.set_plan("variant=keep100,split=0,keep=1,codec=f32", Some(0.004));
    let first = scrape_ok(&get_tcp(addr, GET_METRICS).await);
    let plans = first.series_of("jmdc_edge_plan_info");
    assert_eq!(plans.len(), 1);
    assert_eq!(
        plans[0].labels[0].1,
        "variant=keep100,split=0,keep=1,codec=f32"
    );
    assert_eq!(
        first.value("jmdc_edge_plan_predicted_latency_seconds", &[]),
        Some(0.004)
    );

    metrics.set_plan("variant=keep050,split=9,keep=0.5,codec=int4", Some(0.012));
    metrics.set_network(20e6, 0.003);
    metrics.set_cpu_load(1.25);
    metrics.set_cloud(Some("127.0.0.1:4433"), 1);
    let second = scrape_ok(&get_tcp(addr, GET_METRICS).await);
    let plans = second.series_of("jmdc_edge_plan_info");
    assert_eq!(plans.len(), 1, "the old plan label is gone");
    assert_eq!(
        plans[0].labels[0].1,
        "variant=keep050,split=9,keep=0.5,codec=int4"
    );
    assert_eq!(second.value("jmdc_edge_plan_changes_total", &[]), Some(1.0));
    assert_eq!(
        second.value("jmdc_edge_network_bandwidth_bits_per_second", &[]),
        Some(20e6)
    );
    assert_eq!(second.value("jmdc_edge_cpu_load_factor", &[]), Some(1.25));
    assert_eq!(second.value("jmdc_edge_cloud_connected", &[]), Some(1.0));

    // Query strings are ignored, like Prometheus' own ?name[]= filters.
    scrape_ok(&get_tcp(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").await);

    server.shutdown().await;
    let refused = timeout(LIMIT, TcpStream::connect(addr))
        .await
        .expect("bounded");
    assert!(refused.is_err(), "still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_when_available() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback on this machine");
        return;
    }
    let server = serve(Arc::new(Metrics::new()), &tcp_section("[::1]:0"))
        .await
        .expect("serve on [::1]:0");
    let addr = server.tcp_addr().expect("bound");
    scrape_ok(&get_tcp(addr, GET_METRICS).await);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_path_method_and_garbage_get_error_statuses() {
    let server = serve(Arc::new(Metrics::new()), &tcp_section("127.0.0.1:0"))
        .await
        .expect("serve");
    let addr = server.tcp_addr().expect("bound");

    let r = get_tcp(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 404);
    let r = get_tcp(addr, "GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 404);
    let r = get_tcp(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET"));
    let r = get_tcp(addr, "DELETE /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 405);
    let r = get_tcp(addr, "hello there\r\n\r\n").await;
    assert_eq!(r.status, 400);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(9_000)
    );
    let r = get_tcp(addr, &huge).await;
    assert_eq!(r.status, 431);
    // The server is still fine.
    scrape_ok(&get_tcp(addr, GET_METRICS).await);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_dropped_after_the_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.sock");
    let section = MetricsSection {
        enabled: true,
        socket: Some(path.clone()),
        tcp: Some("127.0.0.1:0".parse().expect("addr")),
    };
    let request_timeout = Duration::from_millis(1_000);
    let options = ServerOptions {
        request_timeout,
        ..ServerOptions::default()
    };
    let server = serve_with(Arc::new(Metrics::new()), &section, options)
        .await
        .expect("serve");
    let addr = server.tcp_addr().expect("bound");

    // Two clients that never finish their request head, one per listener.
    let mut slow_tcp = TcpStream::connect(addr).await.expect("connect");
    slow_tcp
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial");
    let mut slow_unix = UnixStream::connect(&path).await.expect("connect");
    slow_unix.write_all(b"GET /metr").await.expect("partial");
    let started = Instant::now();

    // Meanwhile twenty others are served at once, well before the slow ones time out.
    let mut scrapes = tokio::task::JoinSet::new();
    for i in 0..20 {
        let path = path.clone();
        scrapes.spawn(async move {
            if i % 2 == 0 {
                get_tcp(addr, GET_METRICS).await
            } else {
                get_unix(&path, GET_METRICS).await
            }
        });
    }
    while let Some(r) = scrapes.join_next().await {
        scrape_ok(&r.expect("scrape task"));
    }
    assert!(
        started.elapsed() < request_timeout,
        "other clients waited for the slow one: {:?}",
        started.elapsed()
    );

    // The slow clients get EOF (no response) once the timeout has passed.
    let mut buf = [0u8; 64];
    let n = timeout(LIMIT, slow_tcp.read(&mut buf))
        .await
        .expect("dropped in time");
    assert!(matches!(n, Ok(0) | Err(_)), "slow TCP client got {n:?}");
    let n = timeout(LIMIT, slow_unix.read(&mut buf))
        .await
        .expect("dropped in time");
    assert!(matches!(n, Ok(0) | Err(_)), "slow Unix client got {n:?}");
    let waited = started.elapsed();
    assert!(
        waited >= request_timeout - Duration::from_millis(50),
        "dropped too early: {waited:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced_but_live_socket_and_files_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");

    // A socket file left by a process that died: nobody listens on it.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    let server = serve(Arc::new(Metrics::new()), &unix_section(&stale))
        .await
        .expect("stale socket replaced");
    scrape_ok(&get_unix(&stale, GET_METRICS).await);

    // A second server on the same path finds it live and refuses, leaving the first working.
    let err = serve(Arc::new(Metrics::new()), &unix_section(&stale))
        .await
        .expect_err("live socket must not be taken over");
    assert!(matches!(err, MetricsError::SocketInUse { .. }), "{err}");
    assert!(err.to_string().contains("stale.sock"), "{err}");
    scrape_ok(&get_unix(&stale, GET_METRICS).await);
    server.shutdown().await;

    // A regular file at the path is left alone.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").expect("write");
    let err = serve(Arc::new(Metrics::new()), &unix_section(&file))
        .await
        .expect_err("not a socket");
    assert!(matches!(err, MetricsError::NotASocket { .. }), "{err}");
    assert!(err.to_string().starts_with("metrics.socket: "), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_and_busy_tcp_are_refused_with_the_key_named() {
    for bad in ["0.0.0.0:0", "[::]:0", "10.1.2.3:9464"] {
        let section = tcp_section(bad);
        let msg = section.validate().expect_err(bad);
        assert!(
            msg.starts_with("metrics.tcp: ") && msg.contains("loopback"),
            "{msg}"
        );
        let err = serve(Arc::new(Metrics::new()), &section)
            .await
            .expect_err("serve validates too");
        assert!(matches!(err, MetricsError::Config(_)), "{err}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = serve(
        Arc::new(Metrics::new()),
        &tcp_section(&format!("127.0.0.1:{port}")),
    )
    .await
    .expect_err("port in use");
    assert!(matches!(err, MetricsError::BindTcp { .. }), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_section_listens_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.sock");
    let section = MetricsSection {
        enabled: false,
        socket: Some(path.clone()),
        tcp: Some("127.0.0.1:0".parse().expect("addr")),
    };
    let server = serve(Arc::new(Metrics::new()), &section)
        .await
        .expect("serve");
    assert_eq!(server.tcp_addr(), None);
    assert_eq!(server.socket_path(), None);
    assert!(!path.exists());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_scrapes_the_unix_socket() {
    let probe = tokio::process::Command::new("curl")
        .arg("--version")
        .output()
        .await;
    if !probe.is_ok_and(|o| o.status.success()) {
        require::missing(require::Need::Tool, "curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metrics.sock");
    let metrics = Arc::new(Metrics::new());
    let server = serve(metrics.clone(), &unix_section(&path))
        .await
        .expect("serve");
    metrics.set_plan("variant=keep050,split=9,keep=0.5,codec=int4", Some(0.0118));
    metrics.set_network(18.7e6, 0.0021);
    metrics.set_cpu_load(1.08);
    metrics.set_in_flight(1);
    metrics.set_cloud(Some("127.0.0.1:4433"), 0);
    metrics.set_source(3, 0, 0, 0);
    for total in [4_900, 5_300, 12_800] {
        metrics.record_frame(&cloud_frame(total));
    }
    let out = timeout(
        LIMIT,
        tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--max-time",
                "5",
                "--unix-socket",
            ])
            .arg(&path)
            .arg("http://localhost/metrics")
            .output(),
    )
    .await
    .expect("curl finished in time")
    .expect("curl ran");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8(out.stdout).expect("utf-8");
    let e = check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(
        e.value("jmdc_edge_frames_total", &[("outcome", "cloud")]),
        Some(3.0)
    );
    // The docs' sample output comes from here: cargo test … -- --nocapture curl
    eprintln!("{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_removes_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.sock");
    let server = serve(Arc::new(Metrics::new()), &unix_section(&path))
        .await
        .expect("serve");
    assert!(path.exists());
    drop(server);
    assert!(!path.exists());
}
