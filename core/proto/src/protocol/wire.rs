//! Little-endian reader/writer helpers with bounds and UTF-8 checks.

use super::ProtocolError;

/// A cursor over an input message; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(
        &mut self,
        n: usize,
        field: &'static str,
    ) -> Result<&'a [u8], ProtocolError> {
        let available = self.remaining();
        if n > available {
            return Err(ProtocolError::Truncated {
                field,
                needed: n,
                available,
            });
        }
        let s = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or(ProtocolError::Truncated {
                field,
                needed: n,
                available,
            })?;
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn string(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<String, ProtocolError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(ProtocolError::StringTooLong { field, len, max });
        }
        let raw = self.take(len, field)?;
        let s = std::str::from_utf8(raw).map_err(|_| ProtocolError::InvalidUtf8 { field })?;
        Ok(s.to_owned())
    }

    /// `len` bytes that must all be zero.
    pub(crate) fn zero_padding(&mut self, len: usize) -> Result<(), ProtocolError> {
        let pad = self.take(len, "padding")?;
        if pad.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(ProtocolError::NonZeroPadding)
        }
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }
}

/// Appends a `u16`-length-prefixed string after checking it is at most `max` bytes.
pub(crate) fn put_string(
    out: &mut Vec<u8>,
    field: &'static str,
    s: &str,
    max: usize,
) -> Result<(), ProtocolError> {
    let len = s.len();
    let prefix = u16::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or(ProtocolError::StringTooLong { field, len, max })?;
    out.extend_from_slice(&prefix.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Encoded size of a string field.
pub(crate) fn string_len(s: &str) -> usize {
    2 + s.len()
}
