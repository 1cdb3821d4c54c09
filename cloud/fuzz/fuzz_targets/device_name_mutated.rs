//! A real device certificate with up to 8 fuzzer edits (bytes flipped, set, inserted, removed,
//! the end cut off): the device name taken from it and the worker's verifier
//! (`jmdc_cloud_fuzz::check_certificate`). Random bytes rarely get past the outer DER structure;
//! these reach the name and extension parsing and the signature check.
#![no_main]

use arbitrary::Arbitrary;
use jmdc_cloud_fuzz::{check_certificate, DEVICE_CERT};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Edit {
    Xor { at: u16, mask: u8 },
    Set { at: u16, value: u8 },
    Insert { at: u16, bytes: Vec<u8> },
    Remove { at: u16, len: u8 },
    Truncate { at: u16 },
}

fuzz_target!(|edits: Vec<Edit>| {
    let mut der = DEVICE_CERT.to_vec();
    for edit in edits.iter().take(8) {
        let len = der.len().max(1);
        match edit {
            Edit::Xor { at, mask } => {
                if let Some(b) = der.get_mut(usize::from(*at) % len) {
                    *b ^= mask;
                }
            }
            Edit::Set { at, value } => {
                if let Some(b) = der.get_mut(usize::from(*at) % len) {
                    *b = *value;
                }
            }
            Edit::Insert { at, bytes } => {
                let at = usize::from(*at) % (der.len() + 1);
                let bytes = &bytes[..bytes.len().min(64)];
                der.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove { at, len: n } => {
                let at = usize::from(*at) % len;
                let end = (at + usize::from(*n)).min(der.len());
                if at < end {
                    der.drain(at..end);
                }
            }
            Edit::Truncate { at } => der.truncate(usize::from(*at) % len),
        }
    }
    check_certificate(&der);
});
