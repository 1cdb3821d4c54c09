//! Protocol version 2's compact framing: a connection binds a small context id to what every
//! frame of a plan shares (model, variant, split, payload kind, and for feature tensors the codec's
//! keep ratio and mode); a [`Frame`] then carries only the context id, the frame id and the codec
//! body ([`crate::codec::compact`]). The worker answers a [`BindContext`] with the tensor shape it
//! derived from its package ([`ContextBound`]), so both sides check that they agree before the
//! first frame.

use crate::codec::{compact, QuantMode};

use super::wire::{put_string, string_len, Reader};
use super::{
    check_size, put_header, request_encoded_len, InferRequest, MessageType, PayloadKind,
    ProtocolError, HEADER_LEN, MAX_NAME_BYTES, MAX_REQUEST_BYTES,
};

/// Context ids a connection may bind: `0..MAX_CONTEXTS`. Binding an id again replaces its context.
pub const MAX_CONTEXTS: u8 = 64;
/// Largest rank a [`ContextBound`] shape may have.
pub const MAX_CONTEXT_RANK: usize = 8;
/// Most bytes of a frame id's varint.
const MAX_VARINT_LEN: usize = 10;

/// How every feature tensor sent on a context is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureCoding {
    /// Keep ratio ρ, in `(0, 1]`.
    pub keep_ratio: f32,
    /// Codec mode of the plan (a `Coded` context also carries its fixed-width fallback frames).
    pub mode: QuantMode,
}

/// Client → server: bind `context_id` on this connection.
#[derive(Debug, Clone, PartialEq)]
pub struct BindContext {
    /// `0..MAX_CONTEXTS`.
    pub context_id: u8,
    /// Free-form name of the device, for logs when the connection has no certificate identity
    /// (≤ [`MAX_NAME_BYTES`]).
    pub device_id: String,
    /// Model package name.
    pub model: String,
    /// Variant within the package.
    pub variant: String,
    /// The edge runs layers `0..split`.
    pub split: u16,
    /// What the frames' bodies hold.
    pub payload_kind: PayloadKind,
    /// For [`PayloadKind::Feature`] (and only then): how the tensors are encoded.
    pub coding: Option<FeatureCoding>,
}

/// Server → client: the context is bound; frames on it must carry tensors of this shape
/// (feature contexts) or images of this input shape (image and JPEG contexts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextBound {
    /// The bound id.
    pub context_id: u8,
    /// Shape without the batch dimension (≤ [`MAX_CONTEXT_RANK`] dimensions).
    pub shape: Vec<u32>,
}

/// Client → server: one frame on a bound context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// A context bound on this connection.
    pub context_id: u8,
    /// Client-chosen frame id, echoed in the reply.
    pub frame_id: u64,
    /// Feature contexts: the codec's compact body; image contexts: the pixels; JPEG contexts: the
    /// JPEG. Runs to the end of the message.
    pub body: Vec<u8>,
}

fn check_context_id(context_id: u8) -> Result<u8, ProtocolError> {
    if context_id < MAX_CONTEXTS {
        Ok(context_id)
    } else {
        Err(ProtocolError::InvalidValue {
            field: "context_id",
            value: u64::from(context_id),
        })
    }
}

fn check_keep_ratio(keep_ratio: f32) -> Result<f32, ProtocolError> {
    if keep_ratio > 0.0 && keep_ratio <= 1.0 {
        Ok(keep_ratio)
    } else {
        Err(ProtocolError::InvalidValue {
            field: "keep_ratio",
            value: u64::from(keep_ratio.to_bits()),
        })
    }
}

/// Bytes of `v` as a LEB128 varint.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A canonical LEB128 varint (no redundant trailing zero groups, at most 10 bytes, no overflow).
pub(crate) fn read_varint(r: &mut Reader<'_>, field: &'static str) -> Result<u64, ProtocolError> {
    let mut v: u64 = 0;
    for i in 0..MAX_VARINT_LEN {
        let byte = r.u8(field)?;
        let group = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(ProtocolError::InvalidValue {
                field,
                value: u64::from(byte),
            });
        }
        v |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                // A redundant zero group: not the canonical encoding.
                return Err(ProtocolError::InvalidValue {
                    field,
                    value: u64::from(byte),
                });
            }
            return Ok(v);
        }
    }
    // Ten continuation bytes: the check on the tenth byte above already refused it.
    Err(ProtocolError::InvalidValue { field, value: v })
}

/// Encoded size of a bind request.
pub fn bind_encoded_len(b: &BindContext) -> usize {
    HEADER_LEN
        + 1
        + 2
        + 1
        + string_len(&b.device_id)
        + string_len(&b.model)
        + string_len(&b.variant)
        + if b.coding.is_some() { 5 } else { 0 }
}

/// Encodes a bind request. Fails on an out-of-range id, over-long names, an invalid keep ratio or
/// mode, or a coding given for a non-feature payload (or missing for a feature one).
pub fn encode_bind(b: &BindContext) -> Result<Vec<u8>, ProtocolError> {
    check_context_id(b.context_id)?;
    let mut out = Vec::with_capacity(bind_encoded_len(b));
    put_header(&mut out, MessageType::BindContext);
    out.push(b.context_id);
    out.extend_from_slice(&b.split.to_le_bytes());
    out.push(b.payload_kind as u8);
    put_string(&mut out, "device_id", &b.device_id, MAX_NAME_BYTES)?;
    put_string(&mut out, "model", &b.model, MAX_NAME_BYTES)?;
    put_string(&mut out, "variant", &b.variant, MAX_NAME_BYTES)?;
    match (b.payload_kind, b.coding) {
        (PayloadKind::Feature, Some(c)) => {
            c.mode.validate().map_err(|_| ProtocolError::InvalidValue {
                field: "mode",
                value: u64::from(c.mode.to_byte()),
            })?;
            out.push(c.mode.to_byte());
            out.extend_from_slice(&check_keep_ratio(c.keep_ratio)?.to_le_bytes());
        }
        (PayloadKind::Feature, None) | (_, Some(_)) => {
            return Err(ProtocolError::InvalidValue {
                field: "coding (present exactly for feature payloads)",
                value: u64::from(b.payload_kind as u8),
            })
        }
        (_, None) => {}
    }
    debug_assert_eq!(out.len(), bind_encoded_len(b));
    Ok(out)
}

pub(crate) fn bind_body(r: &mut Reader<'_>) -> Result<BindContext, ProtocolError> {
    let context_id = check_context_id(r.u8("context_id")?)?;
    let split = r.u16("split")?;
    let payload_kind = PayloadKind::from_code(r.u8("payload_kind")?)?;
    let device_id = r.string("device_id", MAX_NAME_BYTES)?;
    let model = r.string("model", MAX_NAME_BYTES)?;
    let variant = r.string("variant", MAX_NAME_BYTES)?;
    let coding = match payload_kind {
        PayloadKind::Feature => {
            let byte = r.u8("mode")?;
            let mode = QuantMode::from_byte(byte).map_err(|_| ProtocolError::InvalidValue {
                field: "mode",
                value: u64::from(byte),
            })?;
            let keep_ratio = check_keep_ratio(f32::from_bits(r.u32("keep_ratio")?))?;
            Some(FeatureCoding { keep_ratio, mode })
        }
        PayloadKind::Image | PayloadKind::Jpeg => None,
    };
    Ok(BindContext {
        context_id,
        device_id,
        model,
        variant,
        split,
        payload_kind,
        coding,
    })
}

/// Encoded size of a frame.
pub fn frame_encoded_len(f: &Frame) -> usize {
    frame_len(f.frame_id, f.body.len())
}

/// Size of a frame with this id and body length.
pub fn frame_len(frame_id: u64, body_len: usize) -> usize {
    HEADER_LEN + 1 + varint_len(frame_id) + body_len
}

/// Encodes a frame. Fails on an out-of-range context id or above [`MAX_REQUEST_BYTES`].
pub fn encode_frame(f: &Frame) -> Result<Vec<u8>, ProtocolError> {
    check_context_id(f.context_id)?;
    let len = frame_encoded_len(f);
    check_size(len, MAX_REQUEST_BYTES)?;
    let mut out = Vec::with_capacity(len);
    put_header(&mut out, MessageType::Frame);
    out.push(f.context_id);
    put_varint(&mut out, f.frame_id);
    out.extend_from_slice(&f.body);
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

pub(crate) fn frame_body(r: &mut Reader<'_>) -> Result<Frame, ProtocolError> {
    let context_id = check_context_id(r.u8("context_id")?)?;
    let frame_id = read_varint(r, "frame_id")?;
    let body = r.take(r.remaining(), "body")?.to_vec();
    Ok(Frame {
        context_id,
        frame_id,
        body,
    })
}

/// Encodes a bind confirmation. Fails on an out-of-range id, a rank above
/// [`MAX_CONTEXT_RANK`] or a zero dimension.
pub fn encode_bound(b: &ContextBound) -> Result<Vec<u8>, ProtocolError> {
    check_context_id(b.context_id)?;
    check_shape(&b.shape)?;
    let mut out = Vec::with_capacity(HEADER_LEN + 2 + 4 * b.shape.len());
    put_header(&mut out, MessageType::ContextBound);
    out.push(b.context_id);
    // ≤ MAX_CONTEXT_RANK (checked).
    out.push(b.shape.len() as u8);
    for d in &b.shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
    Ok(out)
}

fn check_shape(shape: &[u32]) -> Result<(), ProtocolError> {
    if shape.len() > MAX_CONTEXT_RANK {
        return Err(ProtocolError::InvalidValue {
            field: "rank",
            value: shape.len() as u64,
        });
    }
    if shape.contains(&0) {
        return Err(ProtocolError::InvalidValue {
            field: "dimension",
            value: 0,
        });
    }
    Ok(())
}

pub(crate) fn bound_body(r: &mut Reader<'_>) -> Result<ContextBound, ProtocolError> {
    let context_id = check_context_id(r.u8("context_id")?)?;
    let rank = usize::from(r.u8("rank")?);
    if rank > MAX_CONTEXT_RANK {
        return Err(ProtocolError::InvalidValue {
            field: "rank",
            value: rank as u64,
        });
    }
    let raw = r.take(4 * rank, "shape")?;
    let shape: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check_shape(&shape)?;
    Ok(ContextBound { context_id, shape })
}

/// A self-contained request in compact form ([`request_context`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CompactRequest<'a> {
    /// The context it needs bound (its `context_id` left 0 for the caller to choose).
    pub bind: BindContext,
    /// The tensor shape a feature payload was encoded with, to check against the worker's
    /// [`ContextBound`]; `None` for image and JPEG payloads.
    pub shape: Option<Vec<usize>>,
    /// The frame body.
    pub body: &'a [u8],
}

/// A self-contained request in compact form, or `None` when the payload is not an encoding
/// [`compact::split_body`] accepts (such a request can still be sent whole).
pub fn request_context(r: &InferRequest) -> Option<CompactRequest<'_>> {
    let (coding, shape, body) = match r.payload_kind {
        PayloadKind::Feature => {
            let (tensor, body) = compact::split_body(&r.payload).ok()?;
            let coding = FeatureCoding {
                keep_ratio: tensor.keep_ratio,
                mode: tensor.mode,
            };
            (Some(coding), Some(tensor.shape), body)
        }
        PayloadKind::Image | PayloadKind::Jpeg => (None, None, &r.payload[..]),
    };
    let bind = BindContext {
        context_id: 0,
        device_id: r.device_id.clone(),
        model: r.model.clone(),
        variant: r.variant.clone(),
        split: r.split,
        payload_kind: r.payload_kind,
        coding,
    };
    Some(CompactRequest { bind, shape, body })
}

/// Bytes a request takes on the wire in version 2: its [`Frame`] where it has a compact form,
/// else the whole request. (The context's bind exchange, once per plan and connection, is not
/// counted.)
pub fn compact_request_len(r: &InferRequest) -> usize {
    match r.payload_kind {
        PayloadKind::Feature => match compact::split_body(&r.payload) {
            Ok((_, body)) => frame_len(r.frame_id, body.len()),
            Err(_) => request_encoded_len(r),
        },
        PayloadKind::Image | PayloadKind::Jpeg => frame_len(r.frame_id, r.payload.len()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_canonical_and_bounded() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(read_varint(&mut r, "v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        // Redundant zero group, eleven bytes, overflow in the tenth, truncated.
        for bad in [
            &[0x80u8, 0x00][..],
            &[0xff; 11][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..],
            &[0x80][..],
        ] {
            assert!(read_varint(&mut Reader::new(bad), "v").is_err(), "{bad:?}");
        }
    }
}
