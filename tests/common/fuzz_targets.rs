//! The fuzz targets: one function per parser of files ccq reads. Each must return (an error is
//! fine) and never panic, whatever the bytes. Shared by the AFL binaries in `fuzz/` and by
//! `tests/fuzz_regressions.rs`, which replays the seeds and every crash AFL found.

use ccq::data::{cifar, folder, idx};
use ccq::quant::policy::Policy;
use ccq::search::state::parse_state;
use ccq::train::checkpoint::CheckpointMeta;
use ccq_runtime::reference::ReferenceEngine;
use ccq_runtime::{Engine, IntModel};
use std::path::Path;

/// Names of the ConvNet's layers, for the policy target.
pub const CONVNET_LAYERS: [&str; 4] = ["stem.conv", "stage1.conv", "stage2.conv", "fc"];

/// A target: parses the bytes, returns whether they were accepted.
pub type Target = fn(&[u8]) -> bool;

/// Every target, by name.
pub const TARGETS: [(&str, Target); 7] = [
    ("idx", idx_file),
    ("cifar", cifar_batch),
    ("image", image_file),
    ("policy", policy_json),
    ("checkpoint", checkpoint_json),
    ("state", state_json),
    ("ccq_file", ccq_model),
];

/// idx3 images and idx1 labels. Returns whether either parsed.
pub fn idx_file(data: &[u8]) -> bool {
    let p = Path::new("fuzz.idx");
    let images = idx::parse_images(data, p).is_ok();
    let labels = idx::parse_labels(data, p).is_ok();
    images || labels
}

/// A CIFAR-10 binary batch.
pub fn cifar_batch(data: &[u8]) -> bool {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    cifar::parse_batch(data, Path::new("fuzz.bin"), &mut pixels, &mut labels).is_ok()
}

/// A PNG or JPEG of an image folder, read as 32×32 RGB (grayscale differs only in the final
/// conversion, which `decode_image` does the same way).
pub fn image_file(data: &[u8]) -> bool {
    folder::decode_image(data, 3, 32, 32).is_ok()
}

/// A policy file for the ConvNet.
pub fn policy_json(data: &[u8]) -> bool {
    let names: Vec<String> = CONVNET_LAYERS.iter().map(|s| s.to_string()).collect();
    std::str::from_utf8(data).is_ok_and(|t| Policy::from_json(t, &names).is_ok())
}

/// A checkpoint's `checkpoint.json`.
pub fn checkpoint_json(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| CheckpointMeta::from_json(t).is_ok())
}

/// A run's `state.json`.
pub fn state_json(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| parse_state(t).is_ok())
}

/// A `.ccq` model. The header's length and CRC are recomputed first, so that mutations reach
/// the body's parser and the graph validation rather than stopping at the checksum; a model
/// that loads is also run, when it is small enough to be quick, by the fast engine and by the
/// reference engine, which must agree bit for bit.
pub fn ccq_model(data: &[u8]) -> bool {
    let mut bytes = data.to_vec();
    if bytes.len() >= 24 {
        let body_len = (bytes.len() - 24) as u64;
        let crc = crc32fast::hash(&bytes[24..]);
        bytes[12..20].copy_from_slice(&body_len.to_le_bytes());
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(model) = IntModel::from_bytes(&bytes) else {
        return false;
    };
    let i = &model.input;
    let per = i.channels * i.height * i.width;
    let macs: usize = model
        .layers
        .iter()
        .map(|l| l.in_ch * l.out_ch * l.kernel * l.kernel)
        .sum();
    let reference = ReferenceEngine::new(model.clone()).expect("a loaded model is valid");
    let engine = Engine::new(model).expect("a loaded model is valid");
    if per <= 1024 && macs <= 1 << 12 {
        // Differential: the fast engine agrees bit for bit with the reference, traced
        // (every register) and fused (the logits).
        let pixels: Vec<u8> = (0..2 * per).map(|j| (j * 97 % 256) as u8).collect();
        let regs = engine.run_traced(&pixels[..per]).expect("one image");
        assert_eq!(
            regs,
            reference.run_traced(&pixels[..per]).expect("one image")
        );
        let bits = |l: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            l.iter()
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        assert_eq!(
            bits(engine.logits(&pixels).expect("two images")),
            bits(reference.logits(&pixels).expect("two images"))
        );
    }
    true
}
