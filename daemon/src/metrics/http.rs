//! One HTTP/1.1 exchange on a metrics connection: read the request head (bounded size, bounded
//! time), answer `GET /metrics` with the exposition, anything else with an error status, close.
//! The protocol part (head reading, request line, response bytes) is `jmdc_service::http_lite`.

use std::time::Duration;

use jmdc_service::http_lite::{
    parse_request_line, read_head_within, response, too_large, write_response, PLAIN,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::registry::Metrics;
use jmdc_service::exposition::CONTENT_TYPE;

pub use jmdc_service::http_lite::ConnectionError;

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
    let Some(request) = parse_request_line(head) else {
        return Route::BadRequest;
    };
    if request.path != "/metrics" {
        Route::NotFound
    } else if request.method != "GET" {
        Route::MethodNotAllowed
    } else {
        Route::Metrics
    }
}

/// The full response to a routed request.
pub fn respond(route: &Route, metrics: &Metrics) -> Vec<u8> {
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
/// response written within `timeout`, then close. A head over the limit gets 431 and is reported
/// as [`Route::BadRequest`].
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    metrics: &Metrics,
    max_request_bytes: usize,
    timeout: Duration,
) -> Result<Route, ConnectionError> {
    let (route, bytes) = match read_head_within(&mut stream, max_request_bytes, timeout).await? {
        Some(head) => {
            let route = route(&head);
            let bytes = respond(&route, metrics);
            (route, bytes)
        }
        None => (Route::BadRequest, too_large("")),
    };
    write_response(&mut stream, &bytes, timeout).await?;
    Ok(route)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        // The request-line cases are `jmdc_service::http_lite`'s tests; one shows the mapping.
        assert_eq!(r("hello"), Route::BadRequest);
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
        let cases = [
            (0usize, Route::Metrics, "HTTP/1.1 200 "),
            (1, Route::BadRequest, "HTTP/1.1 431 "),
        ];
        for (pad, want, expect) in cases {
            let base = "GET /metrics HTTP/1.1\r\nX: ";
            let fill = 200 - base.len() + pad;
            let req = format!("{base}{}\r\n\r\n", "a".repeat(fill));
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            client.write_all(req.as_bytes()).await.expect("write");
            let got = serve_connection(server, &m, 200, Duration::from_secs(2))
                .await
                .expect("answered");
            assert_eq!(got, want, "pad {pad}");
            let mut out = String::new();
            client.read_to_string(&mut out).await.expect("read");
            assert!(out.starts_with(expect), "pad {pad}: {out}");
        }
    }
}
