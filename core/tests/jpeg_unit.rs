//! The JPEG input path of cloud-only plans (`jmdc_core::jpeg`): round trips on the bundled
//! CIFAR-10 samples, the header-first dimension check, typed errors on every malformed input and
//! no panic on random or mutated bytes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use jmdc_core::cifar::{CifarFile, IMAGE_SHAPE};
use jmdc_core::jpeg::{self, decode_chw, encode_chw, JpegEncoder, JpegError};
use proptest::prelude::*;

fn samples() -> Vec<Vec<u8>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/samples/cifar10-test-256.bin");
    let file = CifarFile::open(&path).expect("bundled samples");
    file.iter().map(|(_, p)| p.to_vec()).collect()
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10()
}

/// An error from a decoder that did not panic (a caught panic is reported with this text).
fn assert_not_panicked(r: &Result<Vec<u8>, JpegError>) {
    if let Err(JpegError::Decode(m)) = r {
        assert!(!m.contains("panicked"), "the decoder panicked");
    }
}

#[test]
fn round_trip_on_cifar_samples_sizes_and_quality() {
    let images = samples();
    let mut enc = JpegEncoder::new();
    let mut out = Vec::new();
    let mut mean_bytes = Vec::new();
    for q in [90u8, 75, 50] {
        let (mut bytes, mut db) = (0usize, 0.0);
        for px in &images {
            enc.encode_into(px, IMAGE_SHAPE, q, &mut out).unwrap();
            assert_eq!(&out[..2], &[0xFF, 0xD8], "SOI");
            assert_eq!(jpeg::dimensions(&out).unwrap(), (32, 32));
            let back = decode_chw(&out, IMAGE_SHAPE).unwrap();
            assert_eq!(back.len(), px.len());
            bytes += out.len();
            db += psnr(px, &back);
        }
        let n = images.len() as f64;
        let (mean, db) = (bytes as f64 / n, db / n);
        println!("q{q}: {mean:.1} B/image, PSNR {db:.2} dB over {n} images");
        assert!(db > 28.0, "q{q}: PSNR {db:.2} dB");
        assert!(mean < 1500.0 && mean > 400.0, "q{q}: {mean} B");
        mean_bytes.push(mean);
    }
    assert!(mean_bytes[0] > mean_bytes[1] && mean_bytes[1] > mean_bytes[2]);
    // The free function gives the same bytes as the reusable encoder.
    enc.encode_into(&images[0], IMAGE_SHAPE, 90, &mut out)
        .unwrap();
    assert_eq!(encode_chw(&images[0], IMAGE_SHAPE, 90).unwrap(), out);
}

#[test]
fn grey_images_and_grey_jpegs() {
    let grey: Vec<u8> = (0..32 * 32).map(|i| (i % 256) as u8).collect();
    let jpg = encode_chw(&grey, [1, 32, 32], 95).unwrap();
    let back = decode_chw(&jpg, [1, 32, 32]).unwrap();
    assert!(psnr(&grey, &back) > 30.0);
    // A grey JPEG for an RGB model: the grey value in every channel.
    let rgb = decode_chw(&jpg, [3, 32, 32]).unwrap();
    assert_eq!(&rgb[..1024], &back[..]);
    assert_eq!(&rgb[1024..2048], &back[..]);
    assert_eq!(&rgb[2048..], &back[..]);
    // An RGB JPEG for a grey model is refused.
    let colour = encode_chw(&samples()[0], IMAGE_SHAPE, 90).unwrap();
    assert!(matches!(
        decode_chw(&colour, [1, 32, 32]),
        Err(JpegError::Color { channels: 1, .. })
    ));
}

#[test]
fn wrong_dimensions_are_refused_from_the_header() {
    let px16: Vec<u8> = vec![100; 3 * 16 * 16];
    let small = encode_chw(&px16, [3, 16, 16], 90).unwrap();
    assert_eq!(
        decode_chw(&small, IMAGE_SHAPE),
        Err(JpegError::Dimensions {
            width: 16,
            height: 16,
            expected_width: 32,
            expected_height: 32
        })
    );
    let wide = encode_chw(&vec![7u8; 3 * 32 * 64], [3, 32, 64], 90).unwrap();
    assert!(matches!(
        decode_chw(&wide, IMAGE_SHAPE),
        Err(JpegError::Dimensions {
            width: 64,
            height: 32,
            ..
        })
    ));
    // A 32×32 JPEG whose SOF0 header claims 65,000 × 65,000: refused from the header alone (a
    // decoder that trusted it would allocate 12 GB).
    let mut huge = encode_chw(&samples()[0], IMAGE_SHAPE, 90).unwrap();
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline SOF0");
    // FF C0, length (2), precision (1), height (2), width (2).
    huge[sof + 5..sof + 7].copy_from_slice(&65_000u16.to_be_bytes());
    huge[sof + 7..sof + 9].copy_from_slice(&65_000u16.to_be_bytes());
    assert_eq!(jpeg::dimensions(&huge).unwrap(), (65_000, 65_000));
    assert!(matches!(
        decode_chw(&huge, IMAGE_SHAPE),
        Err(JpegError::Dimensions {
            width: 65_000,
            height: 65_000,
            ..
        })
    ));
}

#[test]
fn malformed_bytes_are_typed_errors() {
    let good = encode_chw(&samples()[1], IMAGE_SHAPE, 75).unwrap();
    for bad in [
        &b""[..],
        &[0xFF][..],
        &[0xFF, 0xD8][..],
        &[0xFF, 0xD8, 0xFF, 0xD9][..],
        b"this is not a JPEG at all",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        &[0u8; 64][..],
        &good[..20],
    ] {
        let r = decode_chw(bad, IMAGE_SHAPE);
        assert!(matches!(r, Err(JpegError::Decode(_))), "{bad:?} gave {r:?}");
        assert_not_panicked(&r);
    }
    // Every prefix: an error or (the decoder is lenient about a truncated scan) pixels of the
    // right size — never a panic.
    for n in 0..good.len() {
        let r = decode_chw(&good[..n], IMAGE_SHAPE);
        assert_not_panicked(&r);
        if let Ok(px) = r {
            assert_eq!(px.len(), 3 * 32 * 32);
        }
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let px = samples().remove(0);
    let mut out = Vec::new();
    let mut enc = JpegEncoder::new();
    assert_eq!(
        enc.encode_into(&px, IMAGE_SHAPE, 0, &mut out),
        Err(JpegError::Quality(0))
    );
    assert_eq!(
        enc.encode_into(&px, IMAGE_SHAPE, 101, &mut out),
        Err(JpegError::Quality(101))
    );
    assert!(matches!(
        enc.encode_into(&px[1..], IMAGE_SHAPE, 90, &mut out),
        Err(JpegError::Size {
            got: 3071,
            expected: 3072,
            ..
        })
    ));
    for shape in [
        [4, 32, 32],
        [2, 32, 32],
        [3, 0, 32],
        [3, 32, 0],
        [3, 70_000, 1],
    ] {
        assert_eq!(
            enc.encode_into(&px, shape, 90, &mut out),
            Err(JpegError::Shape(shape))
        );
        assert_eq!(
            decode_chw(&[0xFF, 0xD8], shape),
            Err(JpegError::Shape(shape))
        );
    }
    assert!(jpeg::validate_quality(1).is_ok() && jpeg::validate_quality(100).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes never panic the decoder and never give pixels of the wrong size.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let r = decode_chw(&bytes, IMAGE_SHAPE);
        assert_not_panicked(&r);
        if let Ok(px) = r {
            prop_assert_eq!(px.len(), 3072);
        }
    }

    /// A valid JPEG with a few bytes changed: an error or 3,072 pixels, never a panic.
    #[test]
    fn mutated_jpegs_never_panic(
        image in 0usize..16,
        quality in 1u8..=100,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let px = &samples()[image];
        let mut jpg = encode_chw(px, IMAGE_SHAPE, quality).unwrap();
        for (at, value) in edits {
            let i = at.index(jpg.len());
            jpg[i] = value;
        }
        let r = decode_chw(&jpg, IMAGE_SHAPE);
        assert_not_panicked(&r);
        if let Ok(back) = r {
            prop_assert_eq!(back.len(), 3072);
        }
    }

    /// Any quality 1–100 round-trips to the input size; higher quality is never much worse.
    #[test]
    fn every_quality_round_trips(image in 0usize..16, quality in 1u8..=100) {
        let px = &samples()[image];
        let jpg = encode_chw(px, IMAGE_SHAPE, quality).unwrap();
        let back = decode_chw(&jpg, IMAGE_SHAPE).unwrap();
        prop_assert_eq!(back.len(), px.len());
        prop_assert!(psnr(px, &back) > 15.0);
    }
}
