//! Arbitrary bytes into every protocol decoder: must never panic; accepted messages re-encode to
//! the same bytes (the format is canonical).
#![no_main]

use jmdc_core::protocol::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_client_message(data) {
        Ok(m) => assert_eq!(encode_client_message(&m).as_deref(), Ok(data)),
        Err(e) => {
            let reply = ErrorReply::for_decode_error(data, &e);
            assert!(encode_response(&Response::Error(reply)).is_ok());
        }
    }
    if let Ok(m) = decode_server_message(data) {
        // Scores are compared as bytes, so NaN payloads round-trip too.
        assert_eq!(encode_server_message(&m).as_deref(), Ok(data));
    }
    let _ = decode_request(data);
    let _ = decode_response(data);
    let _ = peek_message_type(data);
    let _ = peek_frame_id(data);
});
