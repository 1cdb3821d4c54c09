//! Splits a byte stream (MJPEG on a pipe) into whole JPEG images.
//!
//! It follows the JPEG marker structure rather than looking for the first `FF D9` after an
//! `FF D8`: marker segments are skipped by their length (so an EXIF thumbnail's `FF D8 … FF D9`
//! inside APP1 does not end the frame), and inside entropy-coded data `FF 00` (stuffing) and
//! `FF D0`–`FF D7` (restart markers) are data. Bytes outside `SOI … EOI` are discarded; a frame
//! with a broken marker or one larger than the size bound is dropped and the splitter resyncs on
//! the next `SOI`.

/// Default bound on one JPEG frame (8 MiB).
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for `FF D8`.
    Seek,
    /// At a marker (`pos` points at the `FF`).
    Marker,
    /// In entropy-coded data after SOS.
    Entropy,
}

/// Incremental JPEG splitter; feed it chunks with [`JpegSplitter::push`].
#[derive(Debug)]
pub struct JpegSplitter {
    buf: Vec<u8>,
    pos: usize,
    state: State,
    max_frame: usize,
    frames: u64,
    resyncs: u64,
    discarded: u64,
}

impl Default for JpegSplitter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl JpegSplitter {
    /// A splitter that drops frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            state: State::Seek,
            max_frame: max_frame.max(4),
            frames: 0,
            resyncs: 0,
            discarded: 0,
        }
    }

    /// Whole frames emitted so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames abandoned because of a broken structure or the size bound.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Bytes thrown away outside frames or in abandoned frames.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Forgets any partial frame (e.g. when the producer restarts).
    pub fn reset(&mut self) {
        if self.state != State::Seek && !self.buf.is_empty() {
            self.discarded += self.buf.len() as u64;
        }
        self.buf.clear();
        self.pos = 0;
        self.state = State::Seek;
    }

    /// Feeds `data`; calls `emit` with every JPEG completed by it, in order.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(Vec<u8>)) {
        self.buf.extend_from_slice(data);
        loop {
            if self.state != State::Seek && self.buf.len() > self.max_frame {
                // Too long for a frame: drop its SOI and look for the next one.
                self.resyncs += 1;
                self.discarded += 2;
                self.buf.drain(..2);
                self.pos = 0;
                self.state = State::Seek;
            }
            match self.step() {
                None => break,
                Some(Step::Frame(end)) => {
                    let rest = self.buf.split_off(end);
                    let frame = std::mem::replace(&mut self.buf, rest);
                    self.pos = 0;
                    self.state = State::Seek;
                    self.frames += 1;
                    emit(frame);
                }
                Some(Step::Resync) => {
                    // Drop the frame up to where it broke and look for the next SOI from
                    // there (not from inside the broken frame, which may hold a thumbnail).
                    let cut = self.pos.clamp(1, self.buf.len());
                    self.resyncs += 1;
                    self.discarded += cut as u64;
                    self.buf.drain(..cut);
                    self.pos = 0;
                    self.state = State::Seek;
                }
                Some(Step::Continue) => {}
            }
        }
    }

    /// One parsing step; `None` when more input is needed.
    fn step(&mut self) -> Option<Step> {
        let b = &self.buf;
        match self.state {
            State::Seek => {
                let found = b.windows(2).position(|w| w == [0xFF, 0xD8]);
                match found {
                    Some(k) => {
                        self.discarded += k as u64;
                        self.buf.drain(..k);
                        self.pos = 2;
                        self.state = State::Marker;
                        Some(Step::Continue)
                    }
                    None => {
                        // Keep a trailing FF: it may start the next SOI.
                        let keep = usize::from(b.last() == Some(&0xFF));
                        let drop = b.len() - keep;
                        self.discarded += drop as u64;
                        self.buf.drain(..drop);
                        None
                    }
                }
            }
            State::Marker => {
                let mut i = self.pos;
                // Fill bytes: FF FF … before the marker code.
                while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
                    i += 1;
                }
                self.pos = i;
                let (&ff, &code) = (b.get(i)?, b.get(i + 1)?);
                if ff != 0xFF {
                    return Some(Step::Resync);
                }
                match code {
                    0xD9 => Some(Step::Frame(i + 2)),
                    0xD8 | 0x00 => Some(Step::Resync),
                    0x01 | 0xD0..=0xD7 => {
                        self.pos = i + 2;
                        Some(Step::Continue)
                    }
                    _ => {
                        let len = usize::from(u16::from_be_bytes([*b.get(i + 2)?, *b.get(i + 3)?]));
                        if len < 2 {
                            return Some(Step::Resync);
                        }
                        let next = i + 2 + len;
                        if next > b.len() {
                            return None;
                        }
                        self.pos = next;
                        if code == 0xDA {
                            self.state = State::Entropy;
                        }
                        Some(Step::Continue)
                    }
                }
            }
            State::Entropy => {
                let mut i = self.pos;
                loop {
                    let k = b.get(i..)?.iter().position(|&x| x == 0xFF)?;
                    i += k;
                    self.pos = i;
                    match *b.get(i + 1)? {
                        0x00 | 0xD0..=0xD7 => i += 2,
                        0xFF => i += 1,
                        _ => {
                            self.state = State::Marker;
                            return Some(Step::Continue);
                        }
                    }
                    self.pos = i;
                }
            }
        }
    }
}

enum Step {
    Frame(usize),
    Resync,
    Continue,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A structurally valid (not decodable) JPEG: SOI, APP0, SOS header, entropy data with
    /// stuffing and a restart marker, EOI.
    fn fake_jpeg(tag: u8, payload: usize) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x06, b'J', b'F', b'I', tag]);
        // APP1 containing a thumbnail-like SOI/EOI pair that must not end the frame.
        v.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0x11, 0xFF, 0xD9, 0x22]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02]);
        for i in 0..payload {
            v.push((i % 200) as u8);
            if i % 50 == 0 {
                v.extend_from_slice(&[0xFF, 0x00]);
            }
            if i % 77 == 0 {
                v.extend_from_slice(&[0xFF, 0xD3]);
            }
        }
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    fn split_all(chunks: &[&[u8]], sp: &mut JpegSplitter) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for c in chunks {
            sp.push(c, |f| out.push(f));
        }
        out
    }

    #[test]
    fn whole_frames_back_to_back() {
        let (a, b) = (fake_jpeg(1, 300), fake_jpeg(2, 10));
        let stream: Vec<u8> = a.iter().chain(&b).copied().collect();
        let mut sp = JpegSplitter::default();
        assert_eq!(split_all(&[&stream], &mut sp), vec![a, b]);
        assert_eq!((sp.frames(), sp.resyncs(), sp.discarded()), (2, 0, 0));
    }

    #[test]
    fn frames_split_across_every_boundary() {
        let (a, b) = (fake_jpeg(1, 120), fake_jpeg(2, 64));
        let stream: Vec<u8> = a.iter().chain(&b).copied().collect();
        for size in [1, 2, 3, 5, 7, 64] {
            let mut sp = JpegSplitter::default();
            let chunks: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(
                split_all(&chunks, &mut sp),
                vec![a.clone(), b.clone()],
                "chunk {size}"
            );
        }
    }

    #[test]
    fn garbage_between_frames_is_skipped() {
        let (a, b) = (fake_jpeg(1, 40), fake_jpeg(2, 40));
        let mut stream = b"leading noise \xFF\xFF\x00".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(b"\x00\xFFjunk\xD9\xFF");
        stream.extend_from_slice(&b);
        stream.extend_from_slice(b"trailing");
        let mut sp = JpegSplitter::default();
        let chunks: Vec<&[u8]> = stream.chunks(9).collect();
        assert_eq!(split_all(&chunks, &mut sp), vec![a, b]);
        assert_eq!(sp.resyncs(), 0);
        assert!(sp.discarded() > 20);
    }

    #[test]
    fn broken_frame_resyncs_on_next_soi() {
        let good = fake_jpeg(2, 40);
        // A frame whose APP0 segment is followed by a non-marker byte…
        let mut stream = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 1, 2, 0x12, 0x34];
        stream.extend_from_slice(&[0; 7]);
        // …and a frame cut off inside its entropy-coded data (a killed producer).
        let cut = fake_jpeg(1, 300);
        stream.extend_from_slice(&cut[..cut.len() / 2]);
        stream.extend_from_slice(&good);
        let mut sp = JpegSplitter::default();
        assert_eq!(split_all(&[&stream], &mut sp), vec![good]);
        assert_eq!(sp.resyncs(), 2);
    }

    #[test]
    fn oversize_frame_is_dropped_and_stream_recovers() {
        let big = fake_jpeg(1, 5000);
        let small = fake_jpeg(2, 100);
        assert!(small.len() < 1000 && big.len() > 1000);
        let stream: Vec<u8> = big.iter().chain(&small).chain(&small).copied().collect();
        let mut sp = JpegSplitter::new(1000);
        let chunks: Vec<&[u8]> = stream.chunks(256).collect();
        let out = split_all(&chunks, &mut sp);
        assert_eq!(out, vec![small.clone(), small]);
        assert!(sp.resyncs() >= 1);
        // A stream that never ends a frame stays bounded.
        let mut sp = JpegSplitter::new(1000);
        let mut runaway = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        runaway.extend(std::iter::repeat_n(0x55, 10_000));
        assert!(split_all(&[&runaway], &mut sp).is_empty());
        assert!(sp.buf.len() <= 1000);
    }

    #[test]
    fn real_jpeg_from_the_image_crate() {
        let img =
            image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 99]));
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
            .encode_image(&img)
            .expect("encode");
        let stream: Vec<u8> = [&jpg[..], b"xx", &jpg[..]].concat();
        let mut sp = JpegSplitter::default();
        let chunks: Vec<&[u8]> = stream.chunks(33).collect();
        let out = split_all(&chunks, &mut sp);
        assert_eq!(out, vec![jpg.clone(), jpg]);
        assert!(crate::source::imaging::decode_jpeg(&out[0]).is_ok());
    }
}
