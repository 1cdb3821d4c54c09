//! One HTTP/1.1 exchange on a health connection: read the request head (bounded size, bounded
//! time), answer `GET /healthz`, `GET /readyz` or `GET /metrics`, anything else with an error
//! status, close. Hand-written on purpose (three fixed routes, no body, `Connection: close`); the
//! protocol part (head reading, request line, response bytes) is `jmdc_service::http_lite`, shared
//! with the edge's `daemon/src/metrics/http.rs`.

use std::time::Duration;

use jmdc_service::http_lite::{self, parse_request_line, read_head_within, write_response, PLAIN};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::exposition::{self, CONTENT_TYPE};
use crate::health::{HealthView, Readiness};

pub use jmdc_service::http_lite::ConnectionError;

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
    let Some(request) = parse_request_line(head) else {
        return Route::BadRequest;
    };
    let found = match request.path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        _ => return Route::NotFound,
    };
    if request.method == "GET" {
        found
    } else {
        Route::MethodNotAllowed
    }
}

/// Probe answers must never come from a cache.
const NO_STORE: &str = "Cache-Control: no-store\r\n";

/// [`http_lite::response`] with `Cache-Control: no-store` before `extra_headers`.
fn response(status: &str, extra_headers: &str, content_type: &str, body: &str) -> Vec<u8> {
    http_lite::response(
        status,
        &format!("{NO_STORE}{extra_headers}"),
        content_type,
        body,
    )
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
        Route::TooLarge => http_lite::too_large(NO_STORE),
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
    let head = read_head_within(&mut stream, max_request_bytes, timeout).await?;
    let route = head.as_deref().map_or(Route::TooLarge, route);
    write_response(&mut stream, &respond(route, view), timeout).await?;
    Ok(route)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        // The request-line cases are `jmdc_service::http_lite`'s tests; one shows the mapping.
        assert_eq!(r("GET /metrics HTTP/2"), Route::BadRequest);
    }

    #[test]
    fn responses_carry_length() {
        let text = String::from_utf8(respond(Route::Metrics, &view())).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(head.contains("\r\nCache-Control: no-store\r\n"), "{head}");
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
        assert!(out.contains("\r\nCache-Control: no-store\r\n"), "{out}");
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
