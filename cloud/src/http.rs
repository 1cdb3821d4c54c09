//! One HTTP/1.1 exchange on a health connection: read the request head (bounded size, bounded
//! time), answer `GET /healthz`, `GET /readyz` or `GET /metrics`, anything else with an error
//! status, close. Hand-written on purpose (three fixed routes, no body, `Connection: close`);
//! the same shape as the edge's `daemon/src/metrics/http.rs`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::exposition::{self, CONTENT_TYPE};
use crate::health::{HealthView, Readiness};

/// Why a connection ended without a normal response.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The client did not finish its request head within the time limit.
    #[error("request head not complete after {0:?}; connection dropped")]
    ReadTimeout(Duration),
    /// The client closed before finishing its request head.
    #[error("client closed the connection before finishing its request")]
    Incomplete,
    /// The response could not be written within the time limit.
    #[error("response not written after {0:?}; connection dropped")]
    WriteTimeout(Duration),
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: the process is alive.
    Healthz,
    /// `GET /readyz`: the worker takes new devices.
    Readyz,
    /// `GET /metrics`: Prometheus text exposition.
    Metrics,
    /// Another path.
    NotFound,
    /// A known path with a method other than GET.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    BadRequest,
    /// The request head was larger than allowed.
    TooLarge,
}

/// Routes a request head (everything before the blank line). A query string is ignored.
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    let found = match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        _ => return Route::NotFound,
    };
    if method == "GET" {
        found
    } else {
        Route::MethodNotAllowed
    }
}

/// Reads up to the end of the request head (`\r\n\r\n`, not included). `Ok(None)`: the head is
/// longer than `max_bytes`.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, ConnectionError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectionError::Incomplete);
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf[searched_from..], b"\r\n\r\n") {
            let head_len = searched_from + end;
            if head_len > max_bytes {
                return Ok(None);
            }
            buf.truncate(head_len);
            return Ok(Some(buf));
        }
        // The head may be `max_bytes` long plus a terminator that is still arriving.
        if buf.len() > max_bytes + 3 {
            return Ok(None);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn response(status: &str, extra_headers: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The full response to a routed request, from the server's current state.
pub fn respond(route: Route, view: &HealthView) -> Vec<u8> {
    match route {
        Route::Healthz if view.is_live() => response("200 OK", "", PLAIN, "ok\n"),
        Route::Healthz => response(
            "503 Service Unavailable",
            "",
            PLAIN,
            &format!(
                "accept loop stalled (last beat {:?} ago)\n",
                view.heartbeat_age()
            ),
        ),
        Route::Readyz => match view.readiness() {
            Readiness::Ready => response("200 OK", "", PLAIN, "ready\n"),
            other => response(
                "503 Service Unavailable",
                "",
                PLAIN,
                &format!("{}\n", other.as_str()),
            ),
        },
        Route::Metrics => response("200 OK", "", CONTENT_TYPE, &exposition::render(view)),
        Route::NotFound => response(
            "404 Not Found",
            "",
            PLAIN,
            "not found; try /healthz, /readyz or /metrics\n",
        ),
        Route::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            PLAIN,
            "only GET is allowed\n",
        ),
        Route::BadRequest => response("400 Bad Request", "", PLAIN, "bad request\n"),
        Route::TooLarge => response(
            "431 Request Header Fields Too Large",
            "",
            PLAIN,
            "request head too large\n",
        ),
    }
}

/// Serves one connection: at most `max_request_bytes` of request head within `timeout`, then one
/// response written within `timeout`, then close.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    view: &HealthView,
    max_request_bytes: usize,
    timeout: Duration,
) -> Result<Route, ConnectionError> {
    let head = tokio::time::timeout(timeout, read_head(&mut stream, max_request_bytes))
        .await
        .map_err(|_| ConnectionError::ReadTimeout(timeout))??;
    let route = head.as_deref().map_or(Route::TooLarge, route);
    let bytes = respond(route, view);
    tokio::time::timeout(timeout, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| ConnectionError::WriteTimeout(timeout))??;
    Ok(route)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::health::Heartbeat;

    fn view() -> HealthView {
        let hb = Arc::new(Heartbeat::default());
        hb.beat();
        HealthView::new(hb, Arc::new(AtomicBool::new(false)), Arc::default())
    }

    #[test]
    fn routes_requests() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(r("GET /healthz HTTP/1.1\r\nHost: x"), Route::Healthz);
        assert_eq!(r("GET /readyz?verbose HTTP/1.0"), Route::Readyz);
        assert_eq!(r("GET /metrics HTTP/1.1"), Route::Metrics);
        assert_eq!(r("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(r("GET /readyzz HTTP/1.1"), Route::NotFound);
        assert_eq!(r("POST /readyz HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(r("GET /metrics"), Route::BadRequest);
        assert_eq!(r("GET /metrics HTTP/2 x"), Route::BadRequest);
        assert_eq!(route(&[0xff, 0xfe, b' ', b'/']), Route::BadRequest);
    }

    #[test]
    fn responses_carry_length() {
        let text = String::from_utf8(respond(Route::Metrics, &view())).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains("# TYPE jmdc_cloud_frames_served_total counter"));
    }

    #[tokio::test]
    async fn oversized_head_gets_431() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let big = format!("GET /readyz HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
        client.write_all(big.as_bytes()).await.expect("write");
        let route = serve_connection(server, &view(), 8192, Duration::from_secs(2))
            .await
            .expect("answered");
        assert_eq!(route, Route::TooLarge);
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_client, server) = tokio::io::duplex(1024);
        let err = serve_connection(server, &view(), 8192, Duration::from_millis(100))
            .await
            .expect_err("no request");
        assert!(matches!(err, ConnectionError::ReadTimeout(_)), "{err}");
    }
}
