//! Unit tests of the wire protocol: golden bytes, limits, every decode error.
#![allow(clippy::unwrap_used)]

use jmdc_core::protocol::*;

fn request() -> InferRequest {
    InferRequest {
        device_id: "pi-1".into(),
        frame_id: 0x0102_0304_0506_0708,
        model: "alexnet".into(),
        variant: "keep050".into(),
        split: 3,
        payload_kind: PayloadKind::Feature,
        payload: vec![9, 8, 7],
    }
}

fn result() -> InferResult {
    InferResult {
        frame_id: 42,
        scores: vec![1.0, -2.5, 0.0],
        cloud_compute_us: 1500,
        decode_us: 30,
        queue_us: 7,
        layer_us: vec![900, 400, 200],
    }
}

#[test]
fn constants() {
    assert_eq!(ALPN, b"jmdc/1");
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(MAX_REQUEST_BYTES, 16 << 20);
    assert_eq!(MAX_RESPONSE_BYTES, 64 << 10);
    assert_eq!(MAX_SERVER_MESSAGE_BYTES, (1 << 20) + 18);
    assert_eq!(MAX_SCORES, (65536 - 44) / 4);
}

#[test]
fn golden_jpeg_request() {
    let jpeg = InferRequest {
        split: 0,
        payload_kind: PayloadKind::Jpeg,
        payload: vec![0xFF, 0xD8, 0xFF, 0xD9],
        ..request()
    };
    let bytes = encode_request(&jpeg).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[1, 0x01]);
    expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    expected.extend_from_slice(&[0, 0]);
    expected.push(3); // PayloadKind::Jpeg
    expected.extend_from_slice(&[4, 0]);
    expected.extend_from_slice(b"pi-1");
    expected.extend_from_slice(&[7, 0]);
    expected.extend_from_slice(b"alexnet");
    expected.extend_from_slice(&[7, 0]);
    expected.extend_from_slice(b"keep050");
    expected.extend_from_slice(&[4, 0, 0, 0, 0xFF, 0xD8, 0xFF, 0xD9]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), request_encoded_len(&jpeg));
    assert_eq!(decode_request(&bytes).unwrap(), jpeg);
    assert_eq!(
        decode_client_message(&bytes).unwrap(),
        ClientMessage::Infer(jpeg)
    );
    assert_eq!(PayloadKind::Jpeg as u8, 3);
}

#[test]
fn golden_infer_request() {
    let bytes = encode_request(&request()).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[1, 0x01]);
    expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
    expected.extend_from_slice(&[3, 0]);
    expected.push(2);
    expected.extend_from_slice(&[4, 0]);
    expected.extend_from_slice(b"pi-1");
    expected.extend_from_slice(&[7, 0]);
    expected.extend_from_slice(b"alexnet");
    expected.extend_from_slice(&[7, 0]);
    expected.extend_from_slice(b"keep050");
    expected.extend_from_slice(&[3, 0, 0, 0, 9, 8, 7]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), request_encoded_len(&request()));
    assert_eq!(decode_request(&bytes).unwrap(), request());
    assert_eq!(
        peek_message_type(&bytes).unwrap(),
        MessageType::InferRequest
    );
    assert_eq!(peek_frame_id(&bytes), Some(0x0102_0304_0506_0708));
}

#[test]
fn golden_responses() {
    let bytes = encode_response(&Response::Result(result())).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[1, 0x81]);
    for v in [42u64, 1500, 30, 7] {
        expected.extend_from_slice(&v.to_le_bytes());
    }
    expected.extend_from_slice(&3u32.to_le_bytes());
    for s in [1.0f32, -2.5, 0.0] {
        expected.extend_from_slice(&s.to_le_bytes());
    }
    expected.extend_from_slice(&3u16.to_le_bytes());
    for t in [900u32, 400, 200] {
        expected.extend_from_slice(&t.to_le_bytes());
    }
    assert_eq!(bytes, expected);
    assert_eq!(decode_response(&bytes).unwrap(), Response::Result(result()));

    let e = ErrorReply::new(Some(5), ErrorKind::UnknownModel, "no such model");
    let bytes = encode_response(&Response::Error(e.clone())).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[1, 0x82, 1]);
    expected.extend_from_slice(&5u64.to_le_bytes());
    expected.push(3);
    expected.extend_from_slice(&[13, 0]);
    expected.extend_from_slice(b"no such model");
    assert_eq!(bytes, expected);
    assert_eq!(decode_response(&bytes).unwrap(), Response::Error(e));

    let e = ErrorReply::new(None, ErrorKind::Malformed, "");
    let bytes = encode_response(&Response::Error(e.clone())).unwrap();
    assert_eq!(bytes[6], 0);
    assert_eq!(&bytes[7..15], &[0; 8]);
    assert_eq!(decode_response(&bytes).unwrap(), Response::Error(e));
}

#[test]
fn golden_probe() {
    let p = ProbeRequest {
        probe_id: 9,
        reply_bytes: 1000,
        padding_len: 5,
    };
    let bytes = encode_probe_request(&p).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[1, 0x02]);
    expected.extend_from_slice(&9u64.to_le_bytes());
    expected.extend_from_slice(&1000u32.to_le_bytes());
    expected.extend_from_slice(&5u32.to_le_bytes());
    expected.extend_from_slice(&[0; 5]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), p.encoded_len());
    assert_eq!(
        decode_client_message(&bytes).unwrap(),
        ClientMessage::Probe(p)
    );

    let reply = ProbeReply::answer(&p);
    assert_eq!(
        reply,
        ProbeReply {
            probe_id: 9,
            padding_len: 1000
        }
    );
    let bytes = encode_probe_reply(&reply).unwrap();
    assert_eq!(bytes.len(), 18 + 1000);
    assert_eq!(bytes.len(), reply.encoded_len());
    assert_eq!(&bytes[..6], b"JMDC\x01\x83");
    assert_eq!(
        decode_server_message(&bytes).unwrap(),
        ServerMessage::ProbeReply(reply)
    );
}

#[test]
fn client_and_server_dispatch() {
    let infer = ClientMessage::Infer(request());
    let bytes = encode_client_message(&infer).unwrap();
    assert_eq!(decode_client_message(&bytes).unwrap(), infer);

    for m in [
        ServerMessage::Result(result()),
        ServerMessage::Error(ErrorReply::new(Some(1), ErrorKind::Overloaded, "busy")),
        ServerMessage::ProbeReply(ProbeReply {
            probe_id: 3,
            padding_len: 0,
        }),
    ] {
        let bytes = encode_server_message(&m).unwrap();
        assert_eq!(decode_server_message(&bytes).unwrap(), m);
        assert!(!peek_message_type(&bytes).unwrap().is_client());
        // A server message is never a client message and vice versa.
        assert!(matches!(
            decode_client_message(&bytes),
            Err(ProtocolError::UnexpectedMessageType { .. })
        ));
    }
    assert!(matches!(
        decode_server_message(&bytes),
        Err(ProtocolError::UnexpectedMessageType {
            found: MessageType::InferRequest,
            ..
        })
    ));
    assert!(matches!(
        decode_response(&bytes),
        Err(ProtocolError::UnexpectedMessageType { .. })
    ));
    let probe = encode_probe_request(&ProbeRequest {
        probe_id: 1,
        reply_bytes: 0,
        padding_len: 0,
    })
    .unwrap();
    assert!(matches!(
        decode_request(&probe),
        Err(ProtocolError::UnexpectedMessageType {
            found: MessageType::ProbeRequest,
            ..
        })
    ));
    let reply = encode_probe_reply(&ProbeReply {
        probe_id: 1,
        padding_len: 0,
    })
    .unwrap();
    assert!(matches!(
        decode_response(&reply),
        Err(ProtocolError::UnexpectedMessageType {
            found: MessageType::ProbeReply,
            ..
        })
    ));
}

#[test]
fn enum_codes_round_trip() {
    for k in ErrorKind::ALL {
        assert_eq!(ErrorKind::from_code(k.code()), Some(k));
        assert!(!k.as_str().is_empty());
    }
    assert_eq!(ErrorKind::from_code(0), None);
    assert_eq!(ErrorKind::from_code(9), None);
    for t in [
        MessageType::InferRequest,
        MessageType::ProbeRequest,
        MessageType::InferResult,
        MessageType::ErrorReply,
        MessageType::ProbeReply,
    ] {
        assert_eq!(MessageType::from_code(t.code()), Some(t));
    }
    assert!(MessageType::InferRequest.is_client());
    assert!(MessageType::ProbeRequest.is_client());
    assert!(!MessageType::ErrorReply.is_client());
}

// ---------------------------------------------------------------- limits

#[test]
fn name_limits() {
    let mut r = request();
    r.model = "m".repeat(MAX_NAME_BYTES);
    let bytes = encode_request(&r).unwrap();
    assert_eq!(decode_request(&bytes).unwrap(), r);
    r.model.push('x');
    assert_eq!(
        encode_request(&r),
        Err(ProtocolError::StringTooLong {
            field: "model",
            len: 257,
            max: 256
        })
    );
    let mut r = request();
    r.device_id = "é".repeat(129); // 258 bytes
    assert!(matches!(
        encode_request(&r),
        Err(ProtocolError::StringTooLong {
            field: "device_id",
            ..
        })
    ));
    let mut r = request();
    r.variant = "ünïcødé ✓".into();
    assert_eq!(decode_request(&encode_request(&r).unwrap()).unwrap(), r);
}

#[test]
fn request_size_limit() {
    let mut r = request();
    let overhead = request_encoded_len(&r) - r.payload.len();
    r.payload = vec![0xAB; MAX_REQUEST_BYTES - overhead];
    let bytes = encode_request(&r).unwrap();
    assert_eq!(bytes.len(), MAX_REQUEST_BYTES);
    assert_eq!(decode_request(&bytes).unwrap(), r);
    r.payload.push(0);
    assert_eq!(
        encode_request(&r),
        Err(ProtocolError::MessageTooLarge {
            len: MAX_REQUEST_BYTES + 1,
            max: MAX_REQUEST_BYTES
        })
    );
    let mut too_big = bytes;
    too_big.push(0);
    assert!(matches!(
        decode_request(&too_big),
        Err(ProtocolError::MessageTooLarge { .. })
    ));
    assert_eq!(
        decode_request(&too_big).unwrap_err().error_kind(),
        ErrorKind::Malformed
    );
}

#[test]
fn layer_times_round_trip_and_are_bounded() {
    let res = result();
    let bytes = encode_response(&Response::Result(res.clone())).unwrap();
    assert_eq!(
        decode_response(&bytes).unwrap(),
        Response::Result(res.clone())
    );
    let mut too_many = res;
    too_many.scores.clear();
    too_many.layer_us = vec![1; MAX_LAYER_TIMES + 1];
    assert!(encode_response(&Response::Result(too_many)).is_err());
    // A hostile count beyond the limit is refused before reading the times.
    let mut forged = encode_response(&Response::Result(result())).unwrap();
    let count_at = forged.len() - 2 - 3 * 4;
    forged[count_at..count_at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(decode_response(&forged).is_err());
}

#[test]
fn response_size_limit() {
    let mut res = result();
    res.layer_us.clear();
    res.scores = vec![0.5; MAX_SCORES];
    let bytes = encode_response(&Response::Result(res.clone())).unwrap();
    assert!(bytes.len() <= MAX_RESPONSE_BYTES);
    assert_eq!(
        decode_response(&bytes).unwrap(),
        Response::Result(res.clone())
    );
    res.scores.push(0.5);
    assert!(matches!(
        encode_response(&Response::Result(res)),
        Err(ProtocolError::MessageTooLarge { .. })
    ));
}

#[test]
fn error_message_truncation() {
    let e = ErrorReply::new(None, ErrorKind::Internal, "x".repeat(5000));
    assert_eq!(e.message.len(), MAX_ERROR_MESSAGE_BYTES);
    // A 3-byte character straddling the limit is dropped whole.
    let s = format!("{}€€", "a".repeat(MAX_ERROR_MESSAGE_BYTES - 4));
    let e = ErrorReply::new(None, ErrorKind::Internal, s);
    assert_eq!(e.message.len(), MAX_ERROR_MESSAGE_BYTES - 1);
    assert!(e.message.ends_with('€'));
    assert!(encode_response(&Response::Error(e)).is_ok());
    // Built by hand past the limit: encode refuses.
    let e = ErrorReply {
        frame_id: None,
        kind: ErrorKind::Internal,
        message: "y".repeat(1025),
    };
    assert!(matches!(
        encode_response(&Response::Error(e)),
        Err(ProtocolError::StringTooLong {
            field: "message",
            ..
        })
    ));
}

#[test]
fn probe_limits() {
    let p = ProbeRequest {
        probe_id: 1,
        reply_bytes: MAX_PROBE_REPLY_PADDING + 1,
        padding_len: 0,
    };
    assert!(matches!(
        encode_probe_request(&p),
        Err(ProtocolError::InvalidValue {
            field: "reply_bytes",
            ..
        })
    ));
    let p = ProbeRequest {
        probe_id: 1,
        reply_bytes: 0,
        padding_len: MAX_REQUEST_BYTES as u32,
    };
    assert!(matches!(
        encode_probe_request(&p),
        Err(ProtocolError::MessageTooLarge { .. })
    ));
    let p = ProbeRequest {
        probe_id: 1,
        reply_bytes: MAX_PROBE_REPLY_PADDING,
        padding_len: (MAX_REQUEST_BYTES - 22) as u32,
    };
    let bytes = encode_probe_request(&p).unwrap();
    assert_eq!(bytes.len(), MAX_REQUEST_BYTES);
    assert_eq!(
        decode_client_message(&bytes).unwrap(),
        ClientMessage::Probe(p)
    );

    let reply = ProbeReply {
        probe_id: 2,
        padding_len: MAX_PROBE_REPLY_PADDING,
    };
    let bytes = encode_probe_reply(&reply).unwrap();
    assert_eq!(bytes.len(), MAX_SERVER_MESSAGE_BYTES);
    assert_eq!(
        decode_server_message(&bytes).unwrap(),
        ServerMessage::ProbeReply(reply)
    );
    let reply = ProbeReply {
        probe_id: 2,
        padding_len: MAX_PROBE_REPLY_PADDING + 1,
    };
    assert!(encode_probe_reply(&reply).is_err());

    // Hand-made request asking for too much.
    let mut bytes = encode_probe_request(&ProbeRequest {
        probe_id: 1,
        reply_bytes: 0,
        padding_len: 0,
    })
    .unwrap();
    bytes[14..18].copy_from_slice(&(MAX_PROBE_REPLY_PADDING + 1).to_le_bytes());
    assert!(matches!(
        decode_client_message(&bytes),
        Err(ProtocolError::InvalidValue {
            field: "reply_bytes",
            ..
        })
    ));
}

// ---------------------------------------------------------------- decode errors

#[test]
fn header_errors() {
    assert!(matches!(
        decode_request(&[]),
        Err(ProtocolError::Truncated { .. })
    ));
    assert!(matches!(
        decode_request(b"JM"),
        Err(ProtocolError::Truncated { .. })
    ));
    assert_eq!(decode_request(b"XY"), Err(ProtocolError::BadMagic));
    assert_eq!(
        decode_request(b"GET / HTTP/1.1\r\n"),
        Err(ProtocolError::BadMagic)
    );
    assert!(matches!(
        decode_request(b"JMDC"),
        Err(ProtocolError::Truncated {
            field: "version",
            ..
        })
    ));

    let mut bytes = encode_request(&request()).unwrap();
    bytes[4] = 2;
    let err = decode_request(&bytes).unwrap_err();
    assert_eq!(err, ProtocolError::UnsupportedVersion(2));
    assert_eq!(err.error_kind(), ErrorKind::UnsupportedVersion);
    // No frame id for a message whose version we do not speak.
    assert_eq!(peek_frame_id(&bytes), None);
    let reply = ErrorReply::for_decode_error(&bytes, &err);
    assert_eq!(reply.kind, ErrorKind::UnsupportedVersion);
    assert_eq!(reply.frame_id, None);

    let mut bytes = encode_request(&request()).unwrap();
    bytes[5] = 0x7f;
    assert_eq!(
        decode_request(&bytes),
        Err(ProtocolError::UnknownMessageType(0x7f))
    );
    assert_eq!(
        peek_message_type(&bytes),
        Err(ProtocolError::UnknownMessageType(0x7f))
    );
}

#[test]
fn body_errors() {
    let good = encode_request(&request()).unwrap();

    let mut b = good.clone();
    b.push(0);
    assert_eq!(decode_request(&b), Err(ProtocolError::TrailingBytes(1)));

    // Every strict prefix is truncated, never a panic, and the frame id is readable from 14 bytes.
    for n in 0..good.len() {
        let err = decode_request(&good[..n]).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Truncated { .. }),
            "prefix {n}: {err:?}"
        );
        assert_eq!(err.error_kind(), ErrorKind::Malformed);
        assert_eq!(peek_frame_id(&good[..n]).is_some(), n >= 14);
    }
    let reply =
        ErrorReply::for_decode_error(&good[..20], &decode_request(&good[..20]).unwrap_err());
    assert_eq!(reply.frame_id, Some(request().frame_id));
    assert_eq!(reply.kind, ErrorKind::Malformed);

    // Unknown payload kinds (an old worker sees Jpeg = 3 the same way) are Malformed, with
    // the frame id still addressable.
    for kind in [0u8, 4, 0x80, 0xff] {
        let mut b = good.clone();
        b[16] = kind; // payload kind
        let err = decode_request(&b).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::InvalidValue {
                field: "payload_kind",
                value: u64::from(kind)
            }
        );
        assert_eq!(err.error_kind(), ErrorKind::Malformed);
        assert_eq!(
            ErrorReply::for_decode_error(&b, &err).frame_id,
            Some(request().frame_id)
        );
    }

    let mut b = good.clone();
    b[17..19].copy_from_slice(&300u16.to_le_bytes()); // device_id length
    assert_eq!(
        decode_request(&b),
        Err(ProtocolError::StringTooLong {
            field: "device_id",
            len: 300,
            max: 256
        })
    );

    let mut b = good.clone();
    b[19] = 0xff; // first byte of "pi-1"
    assert_eq!(
        decode_request(&b),
        Err(ProtocolError::InvalidUtf8 { field: "device_id" })
    );

    let mut b = good.clone();
    let n = b.len();
    b[n - 7..n - 3].copy_from_slice(&u32::MAX.to_le_bytes()); // payload length
    assert!(matches!(
        decode_request(&b),
        Err(ProtocolError::Truncated {
            field: "payload",
            ..
        })
    ));

    let mut probe = encode_probe_request(&ProbeRequest {
        probe_id: 1,
        reply_bytes: 0,
        padding_len: 4,
    })
    .unwrap();
    probe[23] = 1;
    assert_eq!(
        decode_client_message(&probe),
        Err(ProtocolError::NonZeroPadding)
    );
}

#[test]
fn response_errors() {
    let e = encode_response(&Response::Error(ErrorReply::new(
        Some(1),
        ErrorKind::BadSplit,
        "s",
    )))
    .unwrap();
    let mut b = e.clone();
    b[6] = 2;
    assert!(matches!(
        decode_response(&b),
        Err(ProtocolError::InvalidValue {
            field: "has_frame_id",
            ..
        })
    ));
    let mut b = e.clone();
    b[6] = 0; // absent but non-zero frame id
    assert!(matches!(
        decode_response(&b),
        Err(ProtocolError::InvalidValue { .. })
    ));
    let mut b = e.clone();
    b[15] = 0;
    assert!(matches!(
        decode_response(&b),
        Err(ProtocolError::InvalidValue {
            field: "error kind",
            value: 0
        })
    ));
    for n in 0..e.len() {
        assert!(decode_response(&e[..n]).is_err());
    }

    let r = encode_response(&Response::Result(result())).unwrap();
    let mut b = r.clone();
    b[38..42].copy_from_slice(&1_000_000u32.to_le_bytes()); // score count
    assert!(matches!(
        decode_response(&b),
        Err(ProtocolError::Truncated {
            field: "scores",
            ..
        })
    ));
    let mut b = r.clone();
    b.extend_from_slice(&[0; 4]);
    assert_eq!(decode_response(&b), Err(ProtocolError::TrailingBytes(4)));
    let mut big = r;
    big.resize(MAX_RESPONSE_BYTES + 1, 0);
    assert!(matches!(
        decode_response(&big),
        Err(ProtocolError::MessageTooLarge { .. })
    ));
}
