//! Unit tests of the wire protocol: golden bytes, limits, every decode error.
#![allow(clippy::unwrap_used)]

use jmdc_proto::protocol::*;

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
    assert_eq!(ALPN, b"jmdc/2");
    assert_eq!(ALPN_V1, b"jmdc/1");
    assert_eq!(PROTOCOL_VERSION, 2);
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
    expected.extend_from_slice(&[2, 0x01]);
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
    expected.extend_from_slice(&[2, 0x01]);
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
    expected.extend_from_slice(&[2, 0x81]);
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
    expected.extend_from_slice(&[2, 0x82, 1]);
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
    expected.extend_from_slice(&[2, 0x02]);
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
    assert_eq!(&bytes[..6], b"JMDC\x02\x83");
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
    assert_eq!(ErrorKind::from_code(10), None);
    for t in [
        MessageType::InferRequest,
        MessageType::ProbeRequest,
        MessageType::InferResult,
        MessageType::ErrorReply,
        MessageType::ProbeReply,
        MessageType::BindContext,
        MessageType::Frame,
        MessageType::ContextBound,
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
    bytes[4] = 3;
    let err = decode_request(&bytes).unwrap_err();
    assert_eq!(err, ProtocolError::UnsupportedVersion(3));
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

fn bind() -> BindContext {
    BindContext {
        context_id: 5,
        device_id: "pi-1".into(),
        model: "alexnet".into(),
        variant: "keep050".into(),
        split: 6,
        payload_kind: PayloadKind::Feature,
        coding: Some(FeatureCoding {
            keep_ratio: 0.5,
            mode: jmdc_proto::codec::QuantMode::Coded(3),
        }),
    }
}

#[test]
fn golden_bind_bound_and_frame() {
    let bytes = encode_bind(&bind()).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[2, 0x03, 5, 6, 0, 2]);
    expected.extend_from_slice(&[4, 0]);
    expected.extend_from_slice(b"pi-1");
    expected.extend_from_slice(&[7, 0]);
    expected.extend_from_slice(b"alexnet");
    expected.extend_from_slice(&[7, 0]);
    expected.extend_from_slice(b"keep050");
    expected.push(0x83);
    expected.extend_from_slice(&0.5f32.to_le_bytes());
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), bind_encoded_len(&bind()));
    assert_eq!(
        decode_client_message(&bytes).unwrap(),
        ClientMessage::Bind(bind())
    );

    let jpeg = BindContext {
        split: 0,
        payload_kind: PayloadKind::Jpeg,
        coding: None,
        ..bind()
    };
    let bytes = encode_bind(&jpeg).unwrap();
    assert_eq!(bytes.len(), bind_encoded_len(&jpeg));
    assert_eq!(
        decode_client_message(&bytes).unwrap(),
        ClientMessage::Bind(jpeg.clone())
    );
    // A coding exactly for feature payloads.
    let wrong = BindContext {
        coding: bind().coding,
        ..jpeg
    };
    assert!(encode_bind(&wrong).is_err());
    assert!(encode_bind(&BindContext {
        coding: None,
        ..bind()
    })
    .is_err());

    let bound = ContextBound {
        context_id: 5,
        shape: vec![64, 5, 5],
    };
    let bytes = encode_bound(&bound).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[2, 0x84, 5, 3]);
    for d in [64u32, 5, 5] {
        expected.extend_from_slice(&d.to_le_bytes());
    }
    assert_eq!(bytes, expected);
    assert_eq!(
        decode_server_message(&bytes).unwrap(),
        ServerMessage::ContextBound(bound)
    );

    // The per-frame header: 6 + context id + varint frame id = 9 bytes for frame 300.
    let frame = Frame {
        context_id: 5,
        frame_id: 300,
        body: vec![1, 2, 3],
    };
    let bytes = encode_frame(&frame).unwrap();
    let mut expected = b"JMDC".to_vec();
    expected.extend_from_slice(&[2, 0x04, 5, 0xAC, 0x02, 1, 2, 3]);
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), frame_encoded_len(&frame));
    assert_eq!(peek_frame_id(&bytes), Some(300));
    assert_eq!(
        decode_client_message(&bytes).unwrap(),
        ClientMessage::Frame(frame)
    );
    // An empty body is a valid message (the worker's codec refuses it).
    let empty = encode_frame(&Frame {
        context_id: 0,
        frame_id: 0,
        body: vec![],
    })
    .unwrap();
    assert_eq!(empty.len(), 8);
    assert!(decode_client_message(&empty).is_ok());
}

#[test]
fn context_messages_reject_bad_fields() {
    let good = encode_bind(&bind()).unwrap();
    // Context id 64 is out of range.
    let mut bytes = good.clone();
    bytes[6] = MAX_CONTEXTS;
    assert!(matches!(
        decode_client_message(&bytes),
        Err(ProtocolError::InvalidValue {
            field: "context_id",
            ..
        })
    ));
    // Unknown mode byte, keep ratio 0 and 1.5, missing coding, trailing byte.
    let mode_at = good.len() - 5;
    for (at, value) in [(mode_at, 7u8), (mode_at, 0x90)] {
        let mut bytes = good.clone();
        bytes[at] = value;
        assert!(decode_client_message(&bytes).is_err(), "{at} {value}");
    }
    for rho in [0.0f32, 1.5, f32::NAN] {
        let mut bytes = good.clone();
        bytes[good.len() - 4..].copy_from_slice(&rho.to_le_bytes());
        assert!(decode_client_message(&bytes).is_err(), "{rho}");
    }
    assert!(matches!(
        decode_client_message(&good[..good.len() - 5]),
        Err(ProtocolError::Truncated { .. })
    ));
    let mut bytes = good.clone();
    bytes.push(0);
    assert_eq!(
        decode_client_message(&bytes),
        Err(ProtocolError::TrailingBytes(1))
    );
    // A non-canonical frame id varint and a frame on context 200.
    assert!(decode_client_message(b"JMDC\x02\x04\x00\x80\x00").is_err());
    assert!(decode_client_message(b"JMDC\x02\x04\xc8\x01").is_err());
    // A bound shape with a zero dimension or rank 9.
    assert!(decode_server_message(b"JMDC\x02\x84\x00\x01\x00\x00\x00\x00").is_err());
    let mut rank9 = b"JMDC\x02\x84\x00\x09".to_vec();
    rank9.extend_from_slice(&[1, 0, 0, 0].repeat(9));
    assert!(decode_server_message(&rank9).is_err());
    assert!(encode_bound(&ContextBound {
        context_id: 0,
        shape: vec![1; 9]
    })
    .is_err());
    // A client message is not a response, a bound is not an inference response.
    let bound = encode_bound(&ContextBound {
        context_id: 1,
        shape: vec![10],
    })
    .unwrap();
    assert!(matches!(
        decode_response(&bound),
        Err(ProtocolError::UnexpectedMessageType { .. })
    ));
    assert!(decode_request(&good).is_err());
}

#[test]
fn a_version_1_message_gets_a_typed_error_naming_both_versions() {
    let mut v1 = encode_request(&request()).unwrap();
    v1[4] = 1;
    let err = decode_client_message(&v1).unwrap_err();
    assert_eq!(err, ProtocolError::UnsupportedVersion(1));
    let reply = ErrorReply::for_decode_error(&v1, &err);
    assert_eq!(reply.kind, ErrorKind::UnsupportedVersion);
    assert!(reply.message.contains('1') && reply.message.contains('2'));
    // The reply itself is version 2, which a version-1 peer refuses with its own typed error.
    let bytes = encode_response(&Response::Error(reply)).unwrap();
    assert_eq!(bytes[4], 2);
}

#[test]
fn a_request_has_a_compact_form_of_a_few_header_bytes() {
    use jmdc_proto::codec::{encode, CodecParams, QuantMode};
    let x: Vec<f32> = (0..64 * 25).map(|i| ((i * 7) % 11) as f32 - 4.0).collect();
    let p = CodecParams {
        keep_ratio: 1.0,
        mode: QuantMode::Bits(3),
    };
    let payload = encode(&x, &[64, 5, 5], &p).unwrap();
    let req = InferRequest {
        split: 6,
        payload: payload.clone(),
        frame_id: 1000,
        ..request()
    };
    let CompactRequest { bind, shape, body } = request_context(&req).unwrap();
    assert_eq!(shape, Some(vec![64, 5, 5]));
    assert_eq!(bind.split, 6);
    assert_eq!(
        bind.coding,
        Some(FeatureCoding {
            keep_ratio: 1.0,
            mode: QuantMode::Bits(3)
        })
    );
    // 36 B codec header → 8 B of min and scale; a 45 B request header → a 9 B frame header.
    assert_eq!(body.len(), payload.len() - 28);
    assert_eq!(compact_request_len(&req), 6 + 1 + 2 + body.len());
    assert_eq!(
        request_encoded_len(&req) - compact_request_len(&req),
        28 + 36
    );
    // A payload that is not an encoding has no compact form.
    let odd = InferRequest {
        payload: vec![1, 2, 3],
        ..request()
    };
    assert!(request_context(&odd).is_none());
    assert_eq!(compact_request_len(&odd), request_encoded_len(&odd));
}
