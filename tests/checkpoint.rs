//! Checkpoint round trip and mismatch errors.

mod common;

use ccq::data::{DataSource, Normalization, SplitSpec};
use ccq::host::to_f32;
use ccq::model::{ModelKind, ModelSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer};
use ccq::train::Devices;
use ccq::train::calibrate::calibrate;
use ccq::train::checkpoint::{self, CheckpointMeta};
use tch::{Kind, Tensor};

#[test]
fn round_trip_gives_identical_outputs() {
    let t = tempfile::tempdir().unwrap();
    let devices = Devices::cpu();
    devices.seed(3);
    let spec = ModelSpec {
        kind: ModelKind::Resnet20,
        channels: 1,
        height: 12,
        width: 12,
        classes: 3,
        graph: None,
    };
    let model = build(&spec, devices.device).unwrap();
    let scheme = QuantScheme {
        weight: WeightQuantizer::LsqChannel,
        act: ActQuantizer::Pact,
    };
    let policy = Policy::uniform(&model.layer_names(), LayerBits { w: 4, a: 3 });
    let x = Tensor::randn([4, 1, 12, 12], (Kind::Float, devices.device));
    calibrate(&model.net, &policy, scheme, std::slice::from_ref(&x));
    let norm = Normalization {
        mean: vec![0.5],
        std: vec![0.2],
    };
    let meta = CheckpointMeta::new(
        &model,
        Some(policy.clone()),
        scheme,
        norm,
        DataSource::default(),
        SplitSpec::default(),
    );
    checkpoint::save(t.path(), &model, &meta).unwrap();
    let ctx = QuantCtx::new(scheme, &policy.bits);
    let before = to_f32(&model.net.forward(&x, &ctx));
    let back = checkpoint::load(&t.path().join(checkpoint::WEIGHTS), devices.device).unwrap();
    assert_eq!(back.meta.policy.as_ref().unwrap(), &policy);
    assert_eq!(back.meta.scheme, scheme);
    let after = to_f32(&back.model.net.forward(&x, &ctx));
    assert_eq!(
        before, after,
        "weights, BN statistics and quantizer parameters survive the round trip"
    );
    assert!(
        std::fs::read_dir(t.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp"))
    );

    // A checkpoint whose metadata names another architecture is refused.
    let mut other = meta.clone();
    other.spec.kind = ModelKind::Convnet;
    let other_model = build(&other.spec, devices.device).unwrap();
    other.layers = other_model.layer_names();
    std::fs::write(
        t.path().join(checkpoint::META),
        serde_json::to_string(&other).unwrap(),
    )
    .unwrap();
    let e = format!(
        "{:#}",
        checkpoint::load(t.path(), devices.device).err().unwrap()
    );
    assert!(e.contains("do not match"), "{e}");

    // Metadata a later step would trust is checked when read, naming the file and the field.
    let write = |m: &CheckpointMeta| {
        std::fs::write(
            t.path().join(checkpoint::META),
            serde_json::to_string(m).unwrap(),
        )
        .unwrap()
    };
    let load_err = || {
        format!(
            "{:#}",
            checkpoint::load(t.path(), devices.device).err().unwrap()
        )
    };
    let mut bad = meta.clone();
    bad.normalization.std = vec![0.0];
    write(&bad);
    let e = load_err();
    assert!(e.contains("checkpoint.json") && e.contains("std[0]"), "{e}");
    let mut bad = meta.clone();
    bad.normalization.mean = vec![0.5, 0.5];
    write(&bad);
    assert!(load_err().contains("2 means"), "{}", load_err());
    let mut bad = meta.clone();
    bad.policy.as_mut().unwrap().bits[3].w = 9;
    write(&bad);
    let e = load_err();
    assert!(
        e.contains("weight bits 9") && e.contains(&bad.layers[3]),
        "{e}"
    );

    std::fs::write(t.path().join(checkpoint::META), "{").unwrap();
    let e = format!(
        "{:#}",
        checkpoint::load(t.path(), devices.device).err().unwrap()
    );
    assert!(e.contains("corrupt checkpoint metadata"), "{e}");
    assert!(checkpoint::load(&t.path().join("nope"), devices.device).is_err());
}

/// A save interrupted between its two renames (weights, then metadata) is resolved by the
/// weights' CRC: the staged metadata wins only if the new weights are in place; weights that
/// match neither are refused.
#[test]
fn interrupted_save_is_never_trusted_wrongly() {
    let t = tempfile::tempdir().unwrap();
    let devices = Devices::cpu();
    let spec = ModelSpec {
        kind: ModelKind::Convnet,
        channels: 1,
        height: 8,
        width: 8,
        classes: 3,
        graph: None,
    };
    let save = |dir: &std::path::Path, seed: i64, epochs: usize| {
        devices.seed(seed as u64);
        let model = build(&spec, devices.device).unwrap();
        let mut meta = CheckpointMeta::new(
            &model,
            None,
            QuantScheme::default(),
            Normalization {
                mean: vec![0.5],
                std: vec![0.2],
            },
            DataSource::default(),
            SplitSpec::default(),
        );
        meta.epochs = epochs;
        checkpoint::save(dir, &model, &meta).unwrap();
    };
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    save(&a, 1, 1);
    save(&b, 2, 2);
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let next = a.join("checkpoint.json.next");

    // Killed after staging the metadata, before the weights' rename: the old pair stands.
    std::fs::write(&next, read(&b.join(checkpoint::META))).unwrap();
    let ck = checkpoint::load(&a, devices.device).unwrap();
    assert_eq!(ck.meta.epochs, 1);
    assert!(!next.exists(), "the stale staged metadata is removed");

    // Killed between the weights' rename and the metadata's: the staged metadata is used.
    std::fs::write(&next, read(&b.join(checkpoint::META))).unwrap();
    std::fs::write(
        a.join(checkpoint::WEIGHTS),
        read(&b.join(checkpoint::WEIGHTS)),
    )
    .unwrap();
    let ck = checkpoint::load(&a, devices.device).unwrap();
    assert_eq!(ck.meta.epochs, 2);
    assert!(!next.exists(), "the save is finished");
    assert_eq!(
        read(&a.join(checkpoint::META)),
        read(&b.join(checkpoint::META))
    );

    // Weights that match no metadata are refused, naming the file.
    save(&a, 1, 1);
    std::fs::write(
        a.join(checkpoint::WEIGHTS),
        read(&b.join(checkpoint::WEIGHTS)),
    )
    .unwrap();
    let e = format!("{:#}", checkpoint::load(&a, devices.device).err().unwrap());
    assert!(
        e.contains("model.safetensors") && e.contains("CRC-32"),
        "{e}"
    );
}
