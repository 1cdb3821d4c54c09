//! Wire protocol between the edge daemon and the cloud worker, carried over QUIC (ALPN `jmdc/2`).
//!
//! One bidirectional QUIC stream per exchange: the client writes exactly one [`ClientMessage`]
//! (a context binding, a frame, a self-contained inference request or a probe) and finishes its
//! send side; the server answers with exactly one [`ServerMessage`] and finishes. Version 2 adds
//! compact framing (`context.rs`): a [`BindContext`] once per plan and connection, then frames of a
//! few header bytes that carry the codec's compact body. This module is only the pure, hand-written little-endian message
//! encoding; the QUIC plumbing lives in the daemon and cloud crates. `docs/protocol.md` documents
//! every byte and what the server does on each error.
//!
//! Decoding is strict (trailing bytes, unknown enum codes, over-long strings, non-zero padding are
//! all errors), never panics and never allocates more than the input's size.

mod context;
mod wire;

use std::fmt;

pub use context::{
    bind_encoded_len, compact_request_len, encode_bind, encode_bound, encode_frame,
    frame_encoded_len, frame_len, request_context, BindContext, CompactRequest, ContextBound,
    FeatureCoding, Frame, MAX_CONTEXTS, MAX_CONTEXT_RANK,
};

use wire::{put_string, string_len, Reader};

/// QUIC ALPN protocol identifier.
pub const ALPN: &[u8] = b"jmdc/2";
/// ALPN of protocol version 1. A worker also accepts it, so that a version-1 edge reaches the
/// message layer and gets a typed [`ErrorKind::UnsupportedVersion`] reply instead of a failed
/// handshake.
pub const ALPN_V1: &[u8] = b"jmdc/1";
/// Version byte written in every message and the only one accepted.
pub const PROTOCOL_VERSION: u8 = 2;
/// Magic bytes that start every message.
pub const MAGIC: [u8; 4] = *b"JMDC";
/// Bytes of the common header: magic, version, message type.
pub const HEADER_LEN: usize = 6;

/// Largest client message (inference request or probe request), header included.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Largest [`Response`] (inference result or error reply), header included.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest probe reply padding a client may ask for ([`ProbeRequest::reply_bytes`]).
pub const MAX_PROBE_REPLY_PADDING: u32 = 1024 * 1024;
/// Largest server message of any type (a probe reply with maximal padding); a client reading a
/// response stream can use this as its read limit.
pub const MAX_SERVER_MESSAGE_BYTES: usize = PROBE_REPLY_FIXED + MAX_PROBE_REPLY_PADDING as usize;
/// Largest device id, model or variant name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest error message, in UTF-8 bytes ([`ErrorReply::new`] truncates to this).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Fixed part of a probe reply (header, probe id, padding length).
const PROBE_REPLY_FIXED: usize = HEADER_LEN + 8 + 4;
/// Fixed part of a probe request (header, probe id, reply bytes, padding length).
const PROBE_REQUEST_FIXED: usize = HEADER_LEN + 8 + 4 + 4;
/// Fixed part of an inference result (header, frame id, three timings, score count).
const INFER_RESULT_FIXED: usize = HEADER_LEN + 8 + 8 + 8 + 8 + 4 + 2;
/// Most per-layer compute times an [`InferResult`] carries.
pub const MAX_LAYER_TIMES: usize = 1024;
/// Largest number of scores an [`InferResult`] can carry within [`MAX_RESPONSE_BYTES`].
pub const MAX_SCORES: usize = (MAX_RESPONSE_BYTES - INFER_RESULT_FIXED) / 4;

/// The message type byte (offset 5 of every message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// [`InferRequest`], client → server.
    InferRequest = 0x01,
    /// [`ProbeRequest`], client → server.
    ProbeRequest = 0x02,
    /// [`BindContext`], client → server.
    BindContext = 0x03,
    /// [`Frame`], client → server.
    Frame = 0x04,
    /// [`InferResult`], server → client.
    InferResult = 0x81,
    /// [`ErrorReply`], server → client.
    ErrorReply = 0x82,
    /// [`ProbeReply`], server → client.
    ProbeReply = 0x83,
    /// [`ContextBound`], server → client.
    ContextBound = 0x84,
}

impl MessageType {
    /// The type byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses a type byte.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => MessageType::InferRequest,
            0x02 => MessageType::ProbeRequest,
            0x03 => MessageType::BindContext,
            0x04 => MessageType::Frame,
            0x81 => MessageType::InferResult,
            0x82 => MessageType::ErrorReply,
            0x83 => MessageType::ProbeReply,
            0x84 => MessageType::ContextBound,
            _ => return None,
        })
    }

    /// True for messages sent by the client (edge).
    pub fn is_client(self) -> bool {
        self.code() & 0x80 == 0
    }
}

/// What an inference request's payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadKind {
    /// Raw `u8` pixels in CHW order (split 0, cloud-only); the cloud normalises them.
    Image = 1,
    /// Bytes of [`crate::codec::encode`]: the output of layer `split - 1`.
    Feature = 2,
    /// A baseline JPEG of the model input (split 0, cloud-only), exactly `H × W` pixels; the
    /// cloud decodes it ([`crate::jpeg::decode_chw`]) and normalises it like [`PayloadKind::Image`].
    Jpeg = 3,
}

impl PayloadKind {
    fn from_code(code: u8) -> Result<Self, ProtocolError> {
        match code {
            1 => Ok(PayloadKind::Image),
            2 => Ok(PayloadKind::Feature),
            3 => Ok(PayloadKind::Jpeg),
            v => Err(ProtocolError::InvalidValue {
                field: "payload_kind",
                value: u64::from(v),
            }),
        }
    }
}

/// One frame to finish on the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferRequest {
    /// Free-form id of the sending device (≤ [`MAX_NAME_BYTES`]).
    pub device_id: String,
    /// Client-chosen frame id, echoed in the reply.
    pub frame_id: u64,
    /// Model package name (≤ [`MAX_NAME_BYTES`]).
    pub model: String,
    /// Variant name within the package (≤ [`MAX_NAME_BYTES`]).
    pub variant: String,
    /// The edge ran layers `0..split`; the cloud runs `split..L`.
    pub split: u16,
    /// What `payload` holds.
    pub payload_kind: PayloadKind,
    /// Image pixels, JPEG bytes or codec bytes.
    pub payload: Vec<u8>,
}

/// The cloud's answer to an [`InferRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct InferResult {
    /// The request's frame id.
    pub frame_id: u64,
    /// Output of the last layer (class logits), at most [`MAX_SCORES`].
    pub scores: Vec<f32>,
    /// Time spent running layers `split..L`, µs.
    pub cloud_compute_us: u64,
    /// Time spent decoding the payload (codec or image normalisation), µs.
    pub decode_us: u64,
    /// Time the request waited for a worker, µs.
    pub queue_us: u64,
    /// Compute time of each layer `split..L`, µs (at most [`MAX_LAYER_TIMES`]; may be empty).
    pub layer_us: Vec<u32>,
}

/// Why the server refused or failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorKind {
    /// The request could not be decoded (bad magic, truncated, trailing bytes, …) or was too large.
    Malformed = 1,
    /// The request's protocol version is not [`PROTOCOL_VERSION`].
    UnsupportedVersion = 2,
    /// The server has no package with this model name.
    UnknownModel = 3,
    /// The model has no such variant.
    UnknownVariant = 4,
    /// `split` is out of range, or inconsistent with the payload kind.
    BadSplit = 5,
    /// The payload does not decode or does not match the expected shape.
    BadPayload = 6,
    /// The server is at capacity; retry later or run locally.
    Overloaded = 7,
    /// Anything else that went wrong on the server.
    Internal = 8,
    /// A [`Frame`] names a context id not bound on this connection (bind it, then resend).
    UnknownContext = 9,
}

impl ErrorKind {
    /// Every kind, in code order.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Malformed,
        ErrorKind::UnsupportedVersion,
        ErrorKind::UnknownModel,
        ErrorKind::UnknownVariant,
        ErrorKind::BadSplit,
        ErrorKind::BadPayload,
        ErrorKind::Overloaded,
        ErrorKind::Internal,
        ErrorKind::UnknownContext,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        ErrorKind::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// A short snake_case name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::UnknownModel => "unknown_model",
            ErrorKind::UnknownVariant => "unknown_variant",
            ErrorKind::BadSplit => "bad_split",
            ErrorKind::BadPayload => "bad_payload",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Internal => "internal",
            ErrorKind::UnknownContext => "unknown_context",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The request's frame id, when it could be read.
    pub frame_id: Option<u64>,
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail (≤ [`MAX_ERROR_MESSAGE_BYTES`]).
    pub message: String,
}

impl ErrorReply {
    /// Builds a reply, truncating `message` (at a character boundary) to
    /// [`MAX_ERROR_MESSAGE_BYTES`] so that it always encodes.
    pub fn new(frame_id: Option<u64>, kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut end = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        ErrorReply {
            frame_id,
            kind,
            message,
        }
    }

    /// The reply a server sends for a request that failed to decode: kind from
    /// [`ProtocolError::error_kind`], frame id from [`peek_frame_id`] when readable.
    pub fn for_decode_error(request: &[u8], error: &ProtocolError) -> Self {
        ErrorReply::new(
            peek_frame_id(request),
            error.error_kind(),
            error.to_string(),
        )
    }
}

/// The server's answer to an [`InferRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Success.
    Result(InferResult),
    /// Failure.
    Error(ErrorReply),
}

/// Bandwidth/RTT probe: the client sends `padding_len` zero bytes and asks for `reply_bytes` zero
/// bytes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeRequest {
    /// Client-chosen id, echoed in the reply.
    pub probe_id: u64,
    /// Padding the server should send back (≤ [`MAX_PROBE_REPLY_PADDING`]).
    pub reply_bytes: u32,
    /// Zero bytes appended to this request (whole message ≤ [`MAX_REQUEST_BYTES`]).
    pub padding_len: u32,
}

impl ProbeRequest {
    /// Encoded size of this request.
    pub fn encoded_len(&self) -> usize {
        PROBE_REQUEST_FIXED + self.padding_len as usize
    }
}

/// The answer to a [`ProbeRequest`]: `padding_len` zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeReply {
    /// The request's probe id.
    pub probe_id: u64,
    /// Zero bytes appended to this reply (≤ [`MAX_PROBE_REPLY_PADDING`]).
    pub padding_len: u32,
}

impl ProbeReply {
    /// The reply a server sends to `request`.
    pub fn answer(request: &ProbeRequest) -> Self {
        ProbeReply {
            probe_id: request.probe_id,
            padding_len: request.reply_bytes,
        }
    }

    /// Encoded size of this reply.
    pub fn encoded_len(&self) -> usize {
        PROBE_REPLY_FIXED + self.padding_len as usize
    }
}

/// Anything a client sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// A self-contained inference request.
    Infer(InferRequest),
    /// A probe.
    Probe(ProbeRequest),
    /// Binds a context id on this connection.
    Bind(BindContext),
    /// A frame on a bound context.
    Frame(Frame),
}

/// Anything a server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// Inference success.
    Result(InferResult),
    /// Failure of an inference request (or of an undecodable message).
    Error(ErrorReply),
    /// Answer to a probe.
    ProbeReply(ProbeReply),
    /// Answer to a [`BindContext`].
    ContextBound(ContextBound),
}

impl From<Response> for ServerMessage {
    fn from(r: Response) -> Self {
        match r {
            Response::Result(r) => ServerMessage::Result(r),
            Response::Error(e) => ServerMessage::Error(e),
        }
    }
}

/// Encoding and decoding failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The message ended inside a field.
    #[error("truncated message: {field} needs {needed} bytes, {available} available")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// The message does not start with [`MAGIC`].
    #[error("bad magic bytes (not a jmdc message)")]
    BadMagic,
    /// The version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The type byte is not a known [`MessageType`].
    #[error("unknown message type 0x{0:02x}")]
    UnknownMessageType(u8),
    /// A known message type arrived where another was expected (e.g. a response on the server).
    #[error("unexpected message type {found:?}, expected {expected}")]
    UnexpectedMessageType {
        /// What the caller accepts.
        expected: &'static str,
        /// What arrived.
        found: MessageType,
    },
    /// The message exceeds its size limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Size of the message (or the size it would have).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string is longer than its limit.
    #[error("{field} is {len} bytes, limit {max}")]
    StringTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A string is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// An enum code, flag byte or bounded number has a value the format does not allow.
    #[error("invalid value {value} for {field}")]
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Probe padding contains non-zero bytes.
    #[error("probe padding contains non-zero bytes")]
    NonZeroPadding,
    /// Bytes follow the end of the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

impl ProtocolError {
    /// The [`ErrorKind`] a server replies with when a request fails to decode with this error:
    /// [`ErrorKind::UnsupportedVersion`] for a version mismatch, [`ErrorKind::Malformed`] otherwise.
    pub fn error_kind(&self) -> ErrorKind {
        match self {
            ProtocolError::UnsupportedVersion(_) => ErrorKind::UnsupportedVersion,
            _ => ErrorKind::Malformed,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Header

fn put_header(out: &mut Vec<u8>, ty: MessageType) {
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(ty.code());
}

fn read_header(r: &mut Reader<'_>) -> Result<MessageType, ProtocolError> {
    // Check the magic byte by byte so that a short non-jmdc input says BadMagic, not Truncated.
    let available = r.remaining();
    let magic = r.take(available.min(4), "magic")?;
    if magic != &MAGIC[..magic.len()] {
        return Err(ProtocolError::BadMagic);
    }
    if magic.len() < 4 {
        return Err(ProtocolError::Truncated {
            field: "magic",
            needed: 4,
            available,
        });
    }
    let version = r.u8("version")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion(version));
    }
    let code = r.u8("message type")?;
    MessageType::from_code(code).ok_or(ProtocolError::UnknownMessageType(code))
}

/// Validates the common header (magic, version, type) and returns the message type, so that a
/// receiver can dispatch without decoding the body.
pub fn peek_message_type(bytes: &[u8]) -> Result<MessageType, ProtocolError> {
    read_header(&mut Reader::new(bytes))
}

/// The frame id of an inference request whose header is valid and which is long enough to hold
/// it (offsets 6..14), even if the rest does not decode. Used to address error replies.
pub fn peek_frame_id(bytes: &[u8]) -> Option<u64> {
    let mut r = Reader::new(bytes);
    match read_header(&mut r) {
        Ok(MessageType::InferRequest) => r.u64("frame_id").ok(),
        Ok(MessageType::Frame) => {
            r.u8("context_id").ok()?;
            context::read_varint(&mut r, "frame_id").ok()
        }
        _ => None,
    }
}

fn check_size(len: usize, max: usize) -> Result<(), ProtocolError> {
    if len > max {
        Err(ProtocolError::MessageTooLarge { len, max })
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Client messages

/// Encoded size of an inference request (whether or not it is within limits).
pub fn request_encoded_len(r: &InferRequest) -> usize {
    HEADER_LEN
        + 8
        + 2
        + 1
        + string_len(&r.device_id)
        + string_len(&r.model)
        + string_len(&r.variant)
        + 4
        + r.payload.len()
}

/// Encodes an inference request. Fails when a name exceeds [`MAX_NAME_BYTES`] or the message
/// would exceed [`MAX_REQUEST_BYTES`].
pub fn encode_request(r: &InferRequest) -> Result<Vec<u8>, ProtocolError> {
    let len = request_encoded_len(r);
    check_size(len, MAX_REQUEST_BYTES)?;
    let mut out = Vec::with_capacity(len);
    put_header(&mut out, MessageType::InferRequest);
    out.extend_from_slice(&r.frame_id.to_le_bytes());
    out.extend_from_slice(&r.split.to_le_bytes());
    out.push(r.payload_kind as u8);
    put_string(&mut out, "device_id", &r.device_id, MAX_NAME_BYTES)?;
    put_string(&mut out, "model", &r.model, MAX_NAME_BYTES)?;
    put_string(&mut out, "variant", &r.variant, MAX_NAME_BYTES)?;
    // len ≤ MAX_REQUEST_BYTES < u32::MAX, so the payload length fits.
    out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.payload);
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

/// Encodes a probe request. Fails when `reply_bytes > MAX_PROBE_REPLY_PADDING` or the message
/// would exceed [`MAX_REQUEST_BYTES`].
pub fn encode_probe_request(p: &ProbeRequest) -> Result<Vec<u8>, ProtocolError> {
    if p.reply_bytes > MAX_PROBE_REPLY_PADDING {
        return Err(ProtocolError::InvalidValue {
            field: "reply_bytes",
            value: u64::from(p.reply_bytes),
        });
    }
    let len = p.encoded_len();
    check_size(len, MAX_REQUEST_BYTES)?;
    let mut out = Vec::with_capacity(len);
    put_header(&mut out, MessageType::ProbeRequest);
    out.extend_from_slice(&p.probe_id.to_le_bytes());
    out.extend_from_slice(&p.reply_bytes.to_le_bytes());
    out.extend_from_slice(&p.padding_len.to_le_bytes());
    out.resize(len, 0);
    Ok(out)
}

/// Encodes any client message.
pub fn encode_client_message(m: &ClientMessage) -> Result<Vec<u8>, ProtocolError> {
    match m {
        ClientMessage::Infer(r) => encode_request(r),
        ClientMessage::Probe(p) => encode_probe_request(p),
        ClientMessage::Bind(b) => encode_bind(b),
        ClientMessage::Frame(f) => encode_frame(f),
    }
}

/// Decodes any client message (what a server reads from a stream).
pub fn decode_client_message(b: &[u8]) -> Result<ClientMessage, ProtocolError> {
    check_size(b.len(), MAX_REQUEST_BYTES)?;
    let mut r = Reader::new(b);
    let msg = match read_header(&mut r)? {
        MessageType::InferRequest => ClientMessage::Infer(infer_request_body(&mut r)?),
        MessageType::ProbeRequest => ClientMessage::Probe(probe_request_body(&mut r)?),
        MessageType::BindContext => ClientMessage::Bind(context::bind_body(&mut r)?),
        MessageType::Frame => ClientMessage::Frame(context::frame_body(&mut r)?),
        found => {
            return Err(ProtocolError::UnexpectedMessageType {
                expected: "a client message",
                found,
            })
        }
    };
    r.finish()?;
    Ok(msg)
}

/// Decodes an inference request; any other message type is an error.
pub fn decode_request(b: &[u8]) -> Result<InferRequest, ProtocolError> {
    let found = match decode_client_message(b)? {
        ClientMessage::Infer(r) => return Ok(r),
        ClientMessage::Probe(_) => MessageType::ProbeRequest,
        ClientMessage::Bind(_) => MessageType::BindContext,
        ClientMessage::Frame(_) => MessageType::Frame,
    };
    Err(ProtocolError::UnexpectedMessageType {
        expected: "an inference request",
        found,
    })
}

fn infer_request_body(r: &mut Reader<'_>) -> Result<InferRequest, ProtocolError> {
    let frame_id = r.u64("frame_id")?;
    let split = r.u16("split")?;
    let payload_kind = PayloadKind::from_code(r.u8("payload_kind")?)?;
    let device_id = r.string("device_id", MAX_NAME_BYTES)?;
    let model = r.string("model", MAX_NAME_BYTES)?;
    let variant = r.string("variant", MAX_NAME_BYTES)?;
    let len = r.u32("payload length")? as usize;
    // `take` checks the length against the input before anything is copied.
    let payload = r.take(len, "payload")?.to_vec();
    Ok(InferRequest {
        device_id,
        frame_id,
        model,
        variant,
        split,
        payload_kind,
        payload,
    })
}

fn probe_request_body(r: &mut Reader<'_>) -> Result<ProbeRequest, ProtocolError> {
    let probe_id = r.u64("probe_id")?;
    let reply_bytes = r.u32("reply_bytes")?;
    if reply_bytes > MAX_PROBE_REPLY_PADDING {
        return Err(ProtocolError::InvalidValue {
            field: "reply_bytes",
            value: u64::from(reply_bytes),
        });
    }
    let padding_len = r.u32("padding_len")?;
    r.zero_padding(padding_len as usize)?;
    Ok(ProbeRequest {
        probe_id,
        reply_bytes,
        padding_len,
    })
}

// ------------------------------------------------------------------------------------------------
// Server messages

/// Encodes a response. Fails when it would exceed [`MAX_RESPONSE_BYTES`] (more than
/// [`MAX_SCORES`] scores) or the error message exceeds [`MAX_ERROR_MESSAGE_BYTES`] (use
/// [`ErrorReply::new`], which truncates).
pub fn encode_response(r: &Response) -> Result<Vec<u8>, ProtocolError> {
    match r {
        Response::Result(res) => encode_result(res),
        Response::Error(e) => encode_error(e),
    }
}

fn encode_result(res: &InferResult) -> Result<Vec<u8>, ProtocolError> {
    let len = INFER_RESULT_FIXED + 4 * res.scores.len() + 4 * res.layer_us.len();
    check_size(len, MAX_RESPONSE_BYTES)?;
    if res.layer_us.len() > MAX_LAYER_TIMES {
        return Err(ProtocolError::InvalidValue {
            field: "layer time count",
            value: res.layer_us.len() as u64,
        });
    }
    let mut out = Vec::with_capacity(len);
    put_header(&mut out, MessageType::InferResult);
    out.extend_from_slice(&res.frame_id.to_le_bytes());
    out.extend_from_slice(&res.cloud_compute_us.to_le_bytes());
    out.extend_from_slice(&res.decode_us.to_le_bytes());
    out.extend_from_slice(&res.queue_us.to_le_bytes());
    // len ≤ MAX_RESPONSE_BYTES, so the count fits.
    out.extend_from_slice(&(res.scores.len() as u32).to_le_bytes());
    for s in &res.scores {
        out.extend_from_slice(&s.to_le_bytes());
    }
    // ≤ MAX_LAYER_TIMES (checked above), so the count fits in u16.
    out.extend_from_slice(&(res.layer_us.len() as u16).to_le_bytes());
    for t in &res.layer_us {
        out.extend_from_slice(&t.to_le_bytes());
    }
    Ok(out)
}

fn encode_error(e: &ErrorReply) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 10 + string_len(&e.message));
    put_header(&mut out, MessageType::ErrorReply);
    out.push(u8::from(e.frame_id.is_some()));
    out.extend_from_slice(&e.frame_id.unwrap_or(0).to_le_bytes());
    out.push(e.kind.code());
    put_string(&mut out, "message", &e.message, MAX_ERROR_MESSAGE_BYTES)?;
    Ok(out)
}

/// Encodes a probe reply. Fails when `padding_len > MAX_PROBE_REPLY_PADDING`.
pub fn encode_probe_reply(p: &ProbeReply) -> Result<Vec<u8>, ProtocolError> {
    if p.padding_len > MAX_PROBE_REPLY_PADDING {
        return Err(ProtocolError::InvalidValue {
            field: "padding_len",
            value: u64::from(p.padding_len),
        });
    }
    let len = p.encoded_len();
    let mut out = Vec::with_capacity(len);
    put_header(&mut out, MessageType::ProbeReply);
    out.extend_from_slice(&p.probe_id.to_le_bytes());
    out.extend_from_slice(&p.padding_len.to_le_bytes());
    out.resize(len, 0);
    Ok(out)
}

/// Encodes any server message.
pub fn encode_server_message(m: &ServerMessage) -> Result<Vec<u8>, ProtocolError> {
    match m {
        ServerMessage::Result(r) => encode_result(r),
        ServerMessage::Error(e) => encode_error(e),
        ServerMessage::ProbeReply(p) => encode_probe_reply(p),
        ServerMessage::ContextBound(b) => encode_bound(b),
    }
}

/// Decodes any server message (what a client reads from a stream). Results and errors are limited
/// to [`MAX_RESPONSE_BYTES`], probe replies to [`MAX_SERVER_MESSAGE_BYTES`].
pub fn decode_server_message(b: &[u8]) -> Result<ServerMessage, ProtocolError> {
    check_size(b.len(), MAX_SERVER_MESSAGE_BYTES)?;
    let mut r = Reader::new(b);
    let ty = read_header(&mut r)?;
    if ty != MessageType::ProbeReply {
        check_size(b.len(), MAX_RESPONSE_BYTES)?;
    }
    let msg = match ty {
        MessageType::InferResult => ServerMessage::Result(infer_result_body(&mut r)?),
        MessageType::ErrorReply => ServerMessage::Error(error_reply_body(&mut r)?),
        MessageType::ProbeReply => {
            let probe_id = r.u64("probe_id")?;
            let padding_len = r.u32("padding_len")?;
            if padding_len > MAX_PROBE_REPLY_PADDING {
                return Err(ProtocolError::InvalidValue {
                    field: "padding_len",
                    value: u64::from(padding_len),
                });
            }
            r.zero_padding(padding_len as usize)?;
            ServerMessage::ProbeReply(ProbeReply {
                probe_id,
                padding_len,
            })
        }
        MessageType::ContextBound => ServerMessage::ContextBound(context::bound_body(&mut r)?),
        found => {
            return Err(ProtocolError::UnexpectedMessageType {
                expected: "a server message",
                found,
            })
        }
    };
    r.finish()?;
    Ok(msg)
}

/// Decodes a response to an inference request; a probe reply or a client message is an error.
pub fn decode_response(b: &[u8]) -> Result<Response, ProtocolError> {
    let found = match decode_server_message(b)? {
        ServerMessage::Result(r) => return Ok(Response::Result(r)),
        ServerMessage::Error(e) => return Ok(Response::Error(e)),
        ServerMessage::ProbeReply(_) => MessageType::ProbeReply,
        ServerMessage::ContextBound(_) => MessageType::ContextBound,
    };
    Err(ProtocolError::UnexpectedMessageType {
        expected: "an inference response",
        found,
    })
}

fn infer_result_body(r: &mut Reader<'_>) -> Result<InferResult, ProtocolError> {
    let frame_id = r.u64("frame_id")?;
    let cloud_compute_us = r.u64("cloud_compute_us")?;
    let decode_us = r.u64("decode_us")?;
    let queue_us = r.u64("queue_us")?;
    let count = r.u32("score count")? as usize;
    // Bounds-checked against the input before allocating.
    let raw = r.take(count.saturating_mul(4), "scores")?;
    let scores = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let layers = usize::from(r.u16("layer time count")?);
    if layers > MAX_LAYER_TIMES {
        return Err(ProtocolError::InvalidValue {
            field: "layer time count",
            value: layers as u64,
        });
    }
    let raw = r.take(layers * 4, "layer times")?;
    let layer_us = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(InferResult {
        frame_id,
        scores,
        cloud_compute_us,
        decode_us,
        queue_us,
        layer_us,
    })
}

fn error_reply_body(r: &mut Reader<'_>) -> Result<ErrorReply, ProtocolError> {
    let has_frame = r.u8("has_frame_id")?;
    let frame_id = r.u64("frame_id")?;
    let frame_id = match has_frame {
        1 => Some(frame_id),
        0 if frame_id == 0 => None,
        0 => {
            return Err(ProtocolError::InvalidValue {
                field: "frame_id (absent)",
                value: frame_id,
            })
        }
        v => {
            return Err(ProtocolError::InvalidValue {
                field: "has_frame_id",
                value: u64::from(v),
            })
        }
    };
    let code = r.u8("error kind")?;
    let kind = ErrorKind::from_code(code).ok_or(ProtocolError::InvalidValue {
        field: "error kind",
        value: u64::from(code),
    })?;
    let message = r.string("message", MAX_ERROR_MESSAGE_BYTES)?;
    Ok(ErrorReply {
        frame_id,
        kind,
        message,
    })
}
