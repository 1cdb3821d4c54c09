//! Arbitrary bytes, in pieces of arbitrary sizes, to the health listener (`/healthz`, `/readyz`,
//! `/metrics`; plain HTTP, unauthenticated): the request head is read as a reference reading of
//! the same bytes says (bounded, first blank line), routed without panicking, and the answer is
//! a well-formed response whose `Content-Length` is its body's.
#![no_main]

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use jmdc_cloud::health::Heartbeat;
use jmdc_cloud::http::{respond, route, Route};
use jmdc_cloud::HealthView;
use jmdc_service::http_lite::{parse_request_line, read_head, ConnectionError};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// The listener's default head limit is 8 KiB; a small one reaches the limit paths.
const MAX_HEAD: usize = 64;

/// Gives `data` in pieces of the sizes in `cuts` (cycled; 0 counts as 1).
struct Pieces<'a> {
    data: &'a [u8],
    cuts: &'a [u8],
    next: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let cut = match self.cuts {
            [] => usize::MAX,
            cuts => usize::from(cuts[self.next % cuts.len()].max(1)),
        };
        self.next += 1;
        let n = cut.min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn view() -> &'static HealthView {
    static VIEW: OnceLock<HealthView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let hb = Arc::new(Heartbeat::default());
        hb.beat();
        HealthView::new(hb, Arc::default(), Arc::default())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fuzz_target!(|input: &[u8]| {
    // The first two bytes are the sizes of the pieces the rest arrives in (cycled).
    if input.len() < 2 {
        return;
    }
    let (cuts, data) = input.split_at(2);
    let mut stream = Pieces {
        data,
        cuts,
        next: 0,
    };
    let head = runtime().block_on(read_head(&mut stream, MAX_HEAD));
    // The reference: the head ends at the first blank line; over MAX_HEAD bytes it is refused.
    match (find(data, b"\r\n\r\n"), &head) {
        (Some(end), Ok(Some(h))) => {
            assert!(end <= MAX_HEAD);
            assert_eq!(&data[..end], &h[..]);
        }
        (Some(end), Ok(None)) => assert!(end > MAX_HEAD),
        (None, Ok(None)) => assert!(data.len() > MAX_HEAD + 3),
        (None, Err(ConnectionError::Incomplete)) => assert!(data.len() <= MAX_HEAD + 3),
        (end, other) => panic!("terminator at {end:?}, read {other:?}"),
    }
    let Ok(head) = head else { return };
    let r = head.as_deref().map_or(Route::TooLarge, route);
    match (r, head.as_deref().and_then(parse_request_line)) {
        (Route::TooLarge, _) => assert!(head.is_none()),
        (Route::BadRequest, parsed) => assert!(parsed.is_none()),
        (Route::Healthz | Route::Readyz | Route::Metrics, Some(req)) => {
            assert_eq!(req.method, "GET");
            assert!(["/healthz", "/readyz", "/metrics"].contains(&req.path));
        }
        (Route::MethodNotAllowed, Some(req)) => assert_ne!(req.method, "GET"),
        (Route::NotFound, Some(req)) => {
            assert!(!["/healthz", "/readyz", "/metrics"].contains(&req.path));
        }
        (r, parsed) => panic!("{r:?} from {parsed:?}"),
    }
    let answer = respond(r, view());
    let split = find(&answer, b"\r\n\r\n").expect("a response head");
    let (head, body) = (&answer[..split], &answer[split + 4..]);
    let head = std::str::from_utf8(head).expect("ASCII head");
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
});
