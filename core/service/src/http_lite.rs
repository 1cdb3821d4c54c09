//! The protocol-level part of a minimal HTTP/1.1 server for fixed `GET` routes without a body
//! (the edge's metrics listener, the cloud worker's health listener): read one request head with
//! a size and a time bound, split its request line into method and path, build a
//! `Connection: close` response, write it with a time bound. Routing and rendering stay with
//! each server.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `Content-Type` of plain-text error and status bodies.
pub const PLAIN: &str = "text/plain; charset=utf-8";

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

/// The request line of an HTTP/1.x request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, e.g. `GET` (never empty).
    pub method: &'a str,
    /// The target's path, without its query string (starts with `/`).
    pub path: &'a str,
}

/// Parses the request line of a request head (everything before the blank line): exactly
/// `METHOD SP /target SP HTTP/1.x`. `None`: not UTF-8, not three parts, an empty method, a
/// target not starting with `/`, or a version other than HTTP/1.x. A query string is dropped.
pub fn parse_request_line(head: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    let path = target.split('?').next().unwrap_or_default();
    Some(Request { method, path })
}

/// Reads up to the end of the request head (`\r\n\r\n`, not included). `Ok(None)`: the head is
/// longer than `max_bytes`. No time bound: see [`read_head_within`].
pub async fn read_head<S: AsyncRead + Unpin>(
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

/// [`read_head`] that must finish within `timeout` ([`ConnectionError::ReadTimeout`] if not).
pub async fn read_head_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, ConnectionError> {
    tokio::time::timeout(timeout, read_head(stream, max_bytes))
        .await
        .map_err(|_| ConnectionError::ReadTimeout(timeout))?
}

/// Writes `bytes` and shuts the write side down within `timeout`
/// ([`ConnectionError::WriteTimeout`] if not).
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ConnectionError> {
    tokio::time::timeout(timeout, async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| ConnectionError::WriteTimeout(timeout))??;
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A complete `Connection: close` response. `status` is code and reason (`"200 OK"`);
/// `extra_headers` are whole header lines, each ending in `\r\n` (or empty); they follow
/// `Content-Type` and `Content-Length`.
pub fn response(status: &str, extra_headers: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `431 Request Header Fields Too Large` response for a head over the limit.
pub fn too_large(extra_headers: &str) -> Vec<u8> {
    response(
        "431 Request Header Fields Too Large",
        extra_headers,
        PLAIN,
        "request head too large\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        fn p(s: &str) -> Option<Request<'_>> {
            parse_request_line(s.as_bytes())
        }
        let req = |method, path| Some(Request { method, path });
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x"),
            req("GET", "/metrics")
        );
        assert_eq!(p("GET /readyz?verbose HTTP/1.0"), req("GET", "/readyz"));
        assert_eq!(p("POST /a?b?c HTTP/1.1"), req("POST", "/a"));
        assert_eq!(p("GET / HTTP/1.1"), req("GET", "/"));
        assert_eq!(p("GET /metrics"), None);
        assert_eq!(p("GET /metrics HTTP/2"), None);
        assert_eq!(p("GET /metrics HTTP/2 x"), None);
        assert_eq!(p("GET metrics HTTP/1.1"), None);
        assert_eq!(p(" /metrics HTTP/1.1"), None);
        assert_eq!(p("GET  /metrics HTTP/1.1"), None);
        assert_eq!(p("hello"), None);
        assert_eq!(p(""), None);
        assert_eq!(parse_request_line(&[0xff, 0xfe, b' ', b'/']), None);
    }

    #[test]
    fn response_carries_length_and_headers() {
        let bytes = response("405 Method Not Allowed", "Allow: GET\r\n", PLAIN, "nö\n");
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert_eq!(body, "nö\n");
        assert_eq!(
            head,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 4\r\nAllow: GET\r\nConnection: close"
        );
        assert!(String::from_utf8(too_large(""))
            .expect("utf-8")
            .starts_with("HTTP/1.1 431 "));
    }

    async fn head_of(input: &[u8], max: usize) -> Result<Option<Vec<u8>>, ConnectionError> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.expect("write");
        drop(client);
        read_head_within(&mut server, max, Duration::from_secs(2)).await
    }

    #[tokio::test]
    async fn head_at_the_limit_is_read_one_byte_more_is_not() {
        for (pad, fits) in [(0usize, true), (1, false)] {
            let base = "GET /metrics HTTP/1.1\r\nX: ";
            let fill = 200 - base.len() + pad;
            let head = format!("{base}{}", "a".repeat(fill));
            let got = head_of(format!("{head}\r\n\r\nbody").as_bytes(), 200)
                .await
                .expect("read");
            if fits {
                assert_eq!(got.as_deref(), Some(head.as_bytes()), "pad {pad}");
            } else {
                assert_eq!(got, None, "pad {pad}");
            }
        }
    }

    #[tokio::test]
    async fn unterminated_oversized_head_is_too_large() {
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
        assert_eq!(head_of(big.as_bytes(), 8192).await.expect("read"), None);
    }

    #[tokio::test]
    async fn terminator_split_across_reads_is_found() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(async move {
            read_head_within(&mut server, 100, Duration::from_secs(2)).await
        });
        for part in ["GET / HTTP/1.1\r", "\n\r", "\n"] {
            client.write_all(part.as_bytes()).await.expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = reader.await.expect("join").expect("read");
        assert_eq!(got.as_deref(), Some(&b"GET / HTTP/1.1"[..]));
    }

    #[tokio::test]
    async fn closed_before_head_end_is_incomplete() {
        let err = head_of(b"GET / HTTP/1.1\r\n", 100)
            .await
            .expect_err("incomplete");
        assert!(matches!(err, ConnectionError::Incomplete), "{err}");
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let err = read_head_within(&mut server, 8192, Duration::from_millis(100))
            .await
            .expect_err("no request");
        assert!(matches!(err, ConnectionError::ReadTimeout(_)), "{err}");
    }

    #[tokio::test]
    async fn response_is_written_and_the_stream_closed() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        write_response(
            &mut server,
            b"HTTP/1.1 200 OK\r\n\r\n",
            Duration::from_secs(2),
        )
        .await
        .expect("written");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read to EOF");
        assert_eq!(out, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn unread_response_times_out() {
        let (_client, mut server) = tokio::io::duplex(8);
        let err = write_response(&mut server, &[b'x'; 64], Duration::from_millis(100))
            .await
            .expect_err("client never reads");
        assert!(matches!(err, ConnectionError::WriteTimeout(_)), "{err}");
    }
}
