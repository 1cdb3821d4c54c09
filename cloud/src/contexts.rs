//! The contexts one connection has bound (protocol version 2's compact framing): what a
//! [`Frame`]'s context id stands for, and the self-contained request a frame becomes.

use std::sync::{Arc, Mutex};

use jmdc_core::codec::compact::{self, TensorContext};
use jmdc_core::protocol::{ErrorKind, ErrorReply, Frame, InferRequest, PayloadKind, MAX_CONTEXTS};

/// A bound context: everything a frame on it does not repeat.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BoundContext {
    /// Who bound it (the connection's certificate name, else the name the bind gave).
    pub device: String,
    /// Model package name.
    pub model: String,
    /// Variant.
    pub variant: String,
    /// First layer the worker runs.
    pub split: u16,
    /// What frames carry.
    pub payload_kind: PayloadKind,
    /// Feature contexts: the tensors' shape, keep ratio and mode.
    pub tensor: Option<TensorContext>,
}

impl BoundContext {
    /// The self-contained request `frame` stands for: the codec body expanded to a full encoding
    /// (which the engine decodes and validates as any other), image and JPEG bodies as they are.
    pub(crate) fn request(&self, frame: Frame) -> Result<InferRequest, ErrorReply> {
        let payload = match &self.tensor {
            Some(tensor) => compact::expand(tensor, &frame.body).map_err(|e| {
                ErrorReply::new(Some(frame.frame_id), ErrorKind::BadPayload, e.to_string())
            })?,
            None => frame.body,
        };
        Ok(InferRequest {
            device_id: self.device.clone(),
            frame_id: frame.frame_id,
            model: self.model.clone(),
            variant: self.variant.clone(),
            split: self.split,
            payload_kind: self.payload_kind,
            payload,
        })
    }
}

/// One connection's context slots, `0..MAX_CONTEXTS`; binding a slot again replaces it.
#[derive(Debug)]
pub(crate) struct ContextTable {
    slots: Mutex<Vec<Option<Arc<BoundContext>>>>,
}

impl Default for ContextTable {
    fn default() -> Self {
        Self {
            slots: Mutex::new(vec![None; usize::from(MAX_CONTEXTS)]),
        }
    }
}

impl ContextTable {
    /// Binds `id` (ids are checked against [`MAX_CONTEXTS`] when the message is decoded; an
    /// out-of-range id is ignored here).
    pub(crate) fn bind(&self, id: u8, context: BoundContext) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(usize::from(id)) {
            *slot = Some(Arc::new(context));
        }
    }

    /// Leaves `id` unbound.
    pub(crate) fn unbind(&self, id: u8) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(usize::from(id)) {
            *slot = None;
        }
    }

    /// The context bound to `id`, if any.
    pub(crate) fn get(&self, id: u8) -> Option<Arc<BoundContext>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(usize::from(id)).cloned().flatten()
    }

    /// Contexts bound now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().filter(|s| s.is_some()).count()
    }

    /// True when nothing is bound.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jmdc_core::codec::{self, CodecParams, DecodeLimits, QuantMode};

    fn feature_context() -> BoundContext {
        BoundContext {
            device: "pi".into(),
            model: "m".into(),
            variant: "v".into(),
            split: 3,
            payload_kind: PayloadKind::Feature,
            tensor: Some(TensorContext {
                shape: vec![8, 4, 4],
                keep_ratio: 0.5,
                mode: QuantMode::Coded(3),
            }),
        }
    }

    #[test]
    fn a_frame_becomes_the_request_it_stands_for() {
        let x: Vec<f32> = (0..128).map(|i| ((i * 5) % 9) as f32).collect();
        let p = CodecParams {
            keep_ratio: 0.5,
            mode: QuantMode::Coded(3),
        };
        let full = codec::encode(&x, &[8, 4, 4], &p).unwrap();
        let (_, body) = compact::split_body(&full).unwrap();
        let frame = Frame {
            context_id: 1,
            frame_id: 77,
            body: body.to_vec(),
        };
        let req = feature_context().request(frame).unwrap();
        assert_eq!(req.payload, full);
        assert_eq!(req.frame_id, 77);
        assert_eq!(req.split, 3);
        assert!(codec::decode(&req.payload, &DecodeLimits::default()).is_ok());
        // Too short for min and scale: a BadPayload reply with the frame id.
        let short = Frame {
            context_id: 1,
            frame_id: 78,
            body: vec![0; 3],
        };
        let err = feature_context().request(short).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadPayload);
        assert_eq!(err.frame_id, Some(78));
    }

    #[test]
    fn slots_bind_replace_and_stay_bounded() {
        let table = ContextTable::default();
        assert!(table.get(0).is_none());
        table.bind(0, feature_context());
        table.bind(MAX_CONTEXTS, feature_context());
        assert_eq!(table.len(), 1);
        let other = BoundContext {
            split: 4,
            ..feature_context()
        };
        table.bind(0, other.clone());
        assert_eq!(*table.get(0).unwrap(), other);
        assert!(table.get(MAX_CONTEXTS).is_none());
        table.unbind(0);
        assert!(table.is_empty());
    }
}
