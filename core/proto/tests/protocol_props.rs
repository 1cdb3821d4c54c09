//! Property tests of the wire protocol: round trips and robustness against hostile bytes.
#![allow(clippy::unwrap_used)]

use jmdc_proto::protocol::*;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.-]{0,24}",
        "\\PC{0,40}",
        // Long names, up to the 256-byte limit.
        (0usize..=256).prop_map(|n| "n".repeat(n)),
    ]
}

fn request_strategy() -> impl Strategy<Value = InferRequest> {
    (
        name(),
        any::<u64>(),
        name(),
        name(),
        any::<u16>(),
        prop_oneof![
            Just(PayloadKind::Image),
            Just(PayloadKind::Feature),
            Just(PayloadKind::Jpeg)
        ],
        prop::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(
            |(device_id, frame_id, model, variant, split, payload_kind, payload)| InferRequest {
                device_id,
                frame_id,
                model,
                variant,
                split,
                payload_kind,
                payload,
            },
        )
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop::sample::select(ErrorKind::ALL.to_vec())
}

fn server_message_strategy() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            any::<u64>(),
            prop::collection::vec(any::<f32>(), 0..200),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u32>(), 0..40)
        )
            .prop_map(
                |(frame_id, scores, c, d, q, layer_us)| ServerMessage::Result(InferResult {
                    frame_id,
                    scores,
                    cloud_compute_us: c,
                    decode_us: d,
                    queue_us: q,
                    layer_us,
                })
            ),
        (any::<Option<u64>>(), error_kind(), "\\PC{0,600}")
            .prop_map(|(f, k, m)| ServerMessage::Error(ErrorReply::new(f, k, m))),
        (any::<u64>(), 0u32..4096).prop_map(|(probe_id, padding_len)| {
            ServerMessage::ProbeReply(ProbeReply {
                probe_id,
                padding_len,
            })
        }),
    ]
}

/// Equality that treats scores bit-for-bit (NaN payloads included).
fn same(a: &ServerMessage, b: &ServerMessage) -> bool {
    match (a, b) {
        (ServerMessage::Result(x), ServerMessage::Result(y)) => {
            x.frame_id == y.frame_id
                && x.cloud_compute_us == y.cloud_compute_us
                && x.decode_us == y.decode_us
                && x.queue_us == y.queue_us
                && x.scores.len() == y.scores.len()
                && x.scores
                    .iter()
                    .zip(&y.scores)
                    .all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => a == b,
    }
}

fn decode_all(bytes: &[u8]) {
    // None of these may panic; results are irrelevant.
    let _ = decode_request(bytes);
    let _ = decode_client_message(bytes);
    let _ = decode_response(bytes);
    let _ = decode_server_message(bytes);
    let _ = peek_message_type(bytes);
    let _ = peek_frame_id(bytes);
    if let Err(e) = decode_client_message(bytes) {
        let reply = ErrorReply::for_decode_error(bytes, &e);
        assert!(encode_response(&Response::Error(reply)).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trip(r in request_strategy()) {
        let bytes = encode_request(&r).unwrap();
        prop_assert_eq!(bytes.len(), request_encoded_len(&r));
        prop_assert_eq!(peek_frame_id(&bytes), Some(r.frame_id));
        prop_assert_eq!(decode_request(&bytes).unwrap(), r.clone());
        prop_assert_eq!(decode_client_message(&bytes).unwrap(), ClientMessage::Infer(r));
    }

    #[test]
    fn probe_round_trip(probe_id in any::<u64>(), reply_bytes in 0u32..=MAX_PROBE_REPLY_PADDING, padding_len in 0u32..8192) {
        let p = ProbeRequest { probe_id, reply_bytes, padding_len };
        let bytes = encode_probe_request(&p).unwrap();
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(decode_client_message(&bytes).unwrap(), ClientMessage::Probe(p));
        let reply = ProbeReply::answer(&p);
        let bytes = encode_probe_reply(&reply).unwrap();
        prop_assert_eq!(bytes.len(), reply.encoded_len());
        prop_assert_eq!(decode_server_message(&bytes).unwrap(), ServerMessage::ProbeReply(reply));
    }

    #[test]
    fn server_message_round_trip(m in server_message_strategy()) {
        let bytes = encode_server_message(&m).unwrap();
        let back = decode_server_message(&bytes).unwrap();
        prop_assert!(same(&m, &back), "{:?} != {:?}", m, back);
        if !matches!(m, ServerMessage::ProbeReply(_)) {
            prop_assert!(bytes.len() <= MAX_RESPONSE_BYTES);
            let r = decode_response(&bytes).unwrap();
            prop_assert!(same(&m, &ServerMessage::from(r)));
        }
    }

    #[test]
    fn frames_and_binds_round_trip(
        context_id in 0..MAX_CONTEXTS,
        frame_id in any::<u64>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        split in any::<u16>(),
        keep in 1u32..=1000,
        mode in prop::sample::select(jmdc_proto::codec::QuantMode::ALL.iter().chain(jmdc_proto::codec::QuantMode::CODED.iter()).copied().collect::<Vec<_>>()),
    ) {
        let f = Frame { context_id, frame_id, body };
        let bytes = encode_frame(&f).unwrap();
        prop_assert_eq!(bytes.len(), frame_encoded_len(&f));
        prop_assert_eq!(peek_frame_id(&bytes), Some(frame_id));
        prop_assert_eq!(decode_client_message(&bytes).unwrap(), ClientMessage::Frame(f));
        let b = BindContext {
            context_id,
            device_id: "d".into(),
            model: "m".into(),
            variant: "v".into(),
            split,
            payload_kind: PayloadKind::Feature,
            coding: Some(FeatureCoding { keep_ratio: keep as f32 / 1000.0, mode }),
        };
        let bytes = encode_bind(&b).unwrap();
        prop_assert_eq!(bytes.len(), bind_encoded_len(&b));
        prop_assert_eq!(decode_client_message(&bytes).unwrap(), ClientMessage::Bind(b));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&bytes);
    }

    #[test]
    fn random_bodies_never_panic(
        ty in prop::sample::select(vec![0x01u8, 0x02, 0x03, 0x04, 0x81, 0x82, 0x83, 0x84, 0x00, 0xff]),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = b"JMDC\x02".to_vec();
        bytes.push(ty);
        bytes.extend_from_slice(&body);
        decode_all(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        r in request_strategy(),
        m in server_message_strategy(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        for mut bytes in [encode_request(&r).unwrap(), encode_server_message(&m).unwrap()] {
            let original = bytes.clone();
            // A strict prefix never decodes.
            let n = cut.index(original.len());
            prop_assert!(decode_client_message(&original[..n]).is_err());
            prop_assert!(decode_server_message(&original[..n]).is_err());
            decode_all(&original[..n]);
            for (i, v) in &edits {
                let i = i.index(bytes.len());
                bytes[i] = *v;
            }
            decode_all(&bytes);
        }
    }
}
