//! Arbitrary bytes as a client certificate (DER): the device name taken from it and the worker's
//! verifier (`jmdc_cloud_fuzz::check_certificate`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jmdc_cloud_fuzz::check_certificate(data);
});
