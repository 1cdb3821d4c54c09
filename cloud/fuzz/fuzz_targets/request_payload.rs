//! Arbitrary request payloads (raw image, JPEG or feature tensor; every split of the bundled
//! AlexNet's keep050 variant) decoded as the worker does before inference
//! (`jmdc_cloud::engine::payload_input`): never panics; what is accepted is a finite tensor of
//! exactly `[1, split shape…]`.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use jmdc_cloud::engine::{payload_input, TailInput};
use jmdc_core::package::ModelPackage;
use jmdc_core::protocol::PayloadKind;
use libfuzzer_sys::fuzz_target;

const VARIANT: &str = "keep050";

fn package() -> &'static ModelPackage {
    static PACKAGE: OnceLock<ModelPackage> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/packages/alexnet-cifar10");
        ModelPackage::load(&dir).expect("the bundled model package")
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the payload kind and the split: 0 raw image, 1 JPEG, 2 feature.
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let package = package();
    let kind = match pick % 3 {
        0 => PayloadKind::Image,
        1 => PayloadKind::Jpeg,
        _ => PayloadKind::Feature,
    };
    let split = usize::from(pick / 3) % package.num_layers();
    let split_shape = package
        .split_tensor_shape(VARIANT, split)
        .expect("every split has a shape");
    let tail = TailInput {
        variant: VARIANT,
        split,
        input_shape: package.input_shape(),
        split_shape,
        normalization: package.normalization(),
    };
    match payload_input(&tail, kind, payload) {
        Ok(tensor) => {
            let expected = match kind {
                PayloadKind::Feature => split_shape,
                _ => package.input_shape(),
            };
            assert_eq!(tensor.shape()[0], 1);
            assert_eq!(&tensor.shape()[1..], expected);
            assert!(tensor.iter().all(|x| x.is_finite()));
            if kind != PayloadKind::Feature {
                assert_eq!(split, 0);
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
