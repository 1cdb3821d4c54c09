//! The protocol-buffers wire format, as far as rewriting ONNX models needs it: a message is read
//! as its fields in order (number, wire type, raw value) and written back from them, so every
//! field this code does not touch is carried over byte for byte (nothing is re-encoded).

use super::OnnxError;

/// A field's wire type and raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1: eight little-endian bytes.
    Fixed64(&'a [u8]),
    /// Wire type 2: a length-delimited payload (bytes, string or embedded message).
    Bytes(&'a [u8]),
    /// Wire type 5: four little-endian bytes.
    Fixed32(&'a [u8]),
}

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) value: Value<'a>,
}

impl<'a> Field<'a> {
    /// The payload of a length-delimited field.
    pub(crate) fn bytes(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The payload of a length-delimited field as UTF-8.
    pub(crate) fn string(&self, what: &str) -> Result<&'a str, OnnxError> {
        let bytes = self
            .bytes()
            .ok_or_else(|| OnnxError::Malformed(format!("{what} is not length-delimited")))?;
        std::str::from_utf8(bytes).map_err(|_| OnnxError::Malformed(format!("{what} is not UTF-8")))
    }
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, OnnxError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or_else(|| OnnxError::Malformed("truncated varint".into()))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(OnnxError::Malformed("varint longer than 10 bytes".into()))
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], OnnxError> {
    let end = pos
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| OnnxError::Malformed("field runs past the end of its message".into()))?;
    let out = &bytes[*pos..end];
    *pos = end;
    Ok(out)
}

/// The fields of one message, in order.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Field<'_>>, OnnxError> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let key = read_varint(bytes, &mut pos)?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| OnnxError::Malformed(format!("bad field number in key {key}")))?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(bytes, &mut pos)?),
            1 => Value::Fixed64(take(bytes, &mut pos, 8)?),
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut pos)?)
                    .map_err(|_| OnnxError::Malformed("length does not fit".into()))?;
                Value::Bytes(take(bytes, &mut pos, len)?)
            }
            5 => Value::Fixed32(take(bytes, &mut pos, 4)?),
            t => {
                return Err(OnnxError::Malformed(format!(
                    "wire type {t} (field {number}) is not used by ONNX"
                )))
            }
        };
        fields.push(Field { number, value });
    }
    Ok(fields)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends one field.
pub(crate) fn write(out: &mut Vec<u8>, number: u32, value: Value<'_>) {
    let (wire_type, payload): (u64, &[u8]) = match value {
        Value::Varint(v) => {
            write_varint(out, u64::from(number) << 3);
            write_varint(out, v);
            return;
        }
        Value::Fixed64(b) => (1, b),
        Value::Bytes(b) => (2, b),
        Value::Fixed32(b) => (5, b),
    };
    write_varint(out, (u64::from(number) << 3) | wire_type);
    if wire_type == 2 {
        write_varint(out, payload.len() as u64);
    }
    out.extend_from_slice(payload);
}

/// Appends a length-delimited field.
pub(crate) fn write_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    write(out, number, Value::Bytes(payload));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_byte_for_byte() {
        let mut msg = Vec::new();
        write(&mut msg, 1, Value::Varint(300));
        write_bytes(&mut msg, 2, b"conv1");
        write(&mut msg, 3, Value::Fixed32(&[1, 2, 3, 4]));
        write(&mut msg, 4, Value::Fixed64(&[1, 2, 3, 4, 5, 6, 7, 8]));
        write(&mut msg, 5, Value::Varint(u64::MAX));
        let fields = parse(&msg).expect("parses");
        assert_eq!(fields.len(), 5);
        assert_eq!(fields[0].value, Value::Varint(300));
        assert_eq!(fields[1].string("name").expect("utf-8"), "conv1");
        assert_eq!(fields[4].value, Value::Varint(u64::MAX));
        let mut again = Vec::new();
        for f in &fields {
            write(&mut again, f.number, f.value);
        }
        assert_eq!(again, msg);
    }

    #[test]
    fn truncated_and_foreign_input_is_refused() {
        let mut msg = Vec::new();
        write_bytes(&mut msg, 2, b"conv1");
        assert!(parse(&msg[..msg.len() - 1]).is_err());
        assert!(parse(&[0x80]).is_err(), "truncated varint");
        assert!(parse(&[0x0b]).is_err(), "wire type 3 (group)");
        assert!(parse(&[0x00, 0x00]).is_err(), "field number 0");
        assert!(parse(&[0xff; 11]).is_err(), "overlong varint");
    }
}
