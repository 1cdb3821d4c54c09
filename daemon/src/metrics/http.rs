//! One HTTP/1.1 exchange on a metrics connection: read the request head (bounded size, bounded
//! time), answer `GET /metrics` with the exposition, anything else with an error status, close.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::exposition::CONTENT_TYPE;
use super::registry::Metrics;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (a query string is ignored).
    Metrics,
    /// Another path.
    NotFound,
    /// `/metrics` with a method other than GET.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Routes a request head (everything before the blank line).
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
    if path != "/metrics" {
        Route::NotFound
    } else if method != "GET" {
        Route::MethodNotAllowed
    } else {
        Route::Metrics
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

fn response(status: &str, extra_headers: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The full response to a routed request.
pub fn respond(route: &Route, metrics: &Metrics) -> Vec<u8> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match route {
        Route::Metrics => response("200 OK", "", CONTENT_TYPE, &metrics.render()),
        Route::NotFound => response(
            "404 Not Found",
            "",
            PLAIN,
            "not found; metrics are at /metrics\n",
        ),
        Route::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            PLAIN,
            "only GET is allowed\n",
        ),
        Route::BadRequest => response("400 Bad Request", "", PLAIN, "bad request\n"),
    }
}

/// Serves one connection: at most `max_request_bytes` of request head within `timeout`, then one
/// response written within `timeout`, then close.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    metrics: &Metrics,
    max_request_bytes: usize,
    timeout: Duration,
) -> Result<Route, ConnectionError> {
    let head = tokio::time::timeout(timeout, read_head(&mut stream, max_request_bytes))
        .await
        .map_err(|_| ConnectionError::ReadTimeout(timeout))??;
    let (route, bytes) = match head {
        Some(head) => {
            let route = route(&head);
            let bytes = respond(&route, metrics);
            (route, bytes)
        }
        None => (
            Route::BadRequest,
            response(
                "431 Request Header Fields Too Large",
                "",
                "text/plain; charset=utf-8",
                "request head too large\n",
            ),
        ),
    };
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
    use super::*;

    #[test]
    fn routes_requests() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(r("GET /metrics?name[]=x HTTP/1.0"), Route::Metrics);
        assert_eq!(r("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(r("GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(r("HEAD /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(r("GET /metrics"), Route::BadRequest);
        assert_eq!(r("GET /metrics HTTP/2 x"), Route::BadRequest);
        assert_eq!(r("hello"), Route::BadRequest);
        assert_eq!(route(&[0xff, 0xfe, b' ', b'/']), Route::BadRequest);
    }

    #[test]
    fn metrics_response_has_length_and_content_type() {
        let m = Metrics::new();
        let bytes = respond(&Route::Metrics, &m);
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains("# TYPE jmdc_edge_frames_total counter"));
    }

    #[tokio::test]
    async fn head_at_the_limit_is_served_one_byte_more_gets_431() {
        let m = Metrics::new();
        for (pad, expect) in [(0usize, "HTTP/1.1 200 "), (1, "HTTP/1.1 431 ")] {
            let base = "GET /metrics HTTP/1.1\r\nX: ";
            let fill = 200 - base.len() + pad;
            let req = format!("{base}{}\r\n\r\n", "a".repeat(fill));
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            client.write_all(req.as_bytes()).await.expect("write");
            serve_connection(server, &m, 200, Duration::from_secs(2))
                .await
                .expect("answered");
            let mut out = String::new();
            client.read_to_string(&mut out).await.expect("read");
            assert!(out.starts_with(expect), "pad {pad}: {out}");
        }
    }

    #[tokio::test]
    async fn oversized_head_gets_431() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let m = Metrics::new();
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
        client.write_all(big.as_bytes()).await.expect("write");
        let route = serve_connection(server, &m, 8192, Duration::from_secs(2))
            .await
            .expect("answered");
        assert_eq!(route, Route::BadRequest);
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }
}
