//! The real `jmdc-cloud serve` and the protocol version: an edge that speaks version 1 (ALPN
//! `jmdc/1`, version byte 1) completes its handshake and gets a typed `UnsupportedVersion` reply
//! naming both versions, on a connection that stays up; an unknown ALPN fails the handshake.
//! Every wait is bounded.

use std::time::Duration;

use jmdc_core::protocol::{self, ErrorKind, Response};
use no_auth::{client, exchange, Worker};

mod common;
mod no_auth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_edge_gets_a_typed_error_and_an_unknown_alpn_no_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = Worker::start(dir.path(), "");
    let cert = dir.path().join("cert.pem");

    let old = client("127.0.0.1:0", &cert, protocol::ALPN_V1, None);
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        old.connect(worker.addr, "localhost").expect("connect"),
    )
    .await
    .expect("handshake in time")
    .expect("a jmdc/1 handshake is accepted");
    for frame_id in 0..2 {
        let mut v1 = protocol::encode_request(&no_auth::image_request("old-edge", frame_id))
            .expect("encode");
        v1[4] = 1;
        let reply = exchange(&conn, &v1).await;
        // A version-1 edge would refuse this version-2 reply with its own typed error; its bytes
        // say so at the same offset as in every version.
        assert_eq!(reply[4], protocol::PROTOCOL_VERSION);
        match protocol::decode_response(&reply).expect("a version-2 error reply") {
            Response::Error(e) => {
                assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
                assert!(
                    e.message.contains("version 1") && e.message.contains("speaks 2"),
                    "{}",
                    e.message
                );
            }
            Response::Result(_) => panic!("a version-1 request was served"),
        }
    }
    // The same connection serves a version-2 request.
    let v2 = protocol::encode_request(&no_auth::image_request("old-edge", 9)).expect("encode");
    assert!(matches!(
        protocol::decode_response(&exchange(&conn, &v2).await),
        Ok(Response::Result(r)) if r.frame_id == 9
    ));
    conn.close(0u32.into(), b"");

    let stranger = client("127.0.0.1:0", &cert, b"jmdc/9", None);
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        stranger.connect(worker.addr, "localhost").expect("connect"),
    )
    .await
    .expect("handshake outcome in time");
    assert!(attempt.is_err(), "an unknown ALPN completed a handshake");
}
