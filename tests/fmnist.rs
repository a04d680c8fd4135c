//! Accuracy checks on the real default dataset (Fashion-MNIST, installed by `.ci/run`):
//! a short full-precision run learns (and repeats exactly with the same seed), and uniform W4A4
//! QAT of every layer keeps its accuracy.

mod common;

use common::ccq;

fn test_top1(dir: &std::path::Path) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint.json")).unwrap())
            .unwrap();
    v["test"]["top1"].as_f64().unwrap()
}

#[test]
fn fashion_mnist_fp_and_w4a4() {
    assert!(
        std::path::Path::new(ccq::data::source::DEFAULT_DATA_DIR).is_dir(),
        "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist"
    );
    let t = tempfile::tempdir().unwrap();
    let fp = t.path().join("fp");
    ccq(&[
        "train",
        "--model",
        "convnet",
        "--epochs",
        "1",
        "--out",
        fp.to_str().unwrap(),
        "-q",
    ]);
    let fp_acc = test_top1(&fp);
    assert!(
        fp_acc >= 0.85,
        "one epoch of the ConvNet reaches 85% (got {fp_acc})"
    );
    let again = t.path().join("fp-again");
    ccq(&[
        "train",
        "--model",
        "convnet",
        "--epochs",
        "1",
        "--out",
        again.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(
        test_top1(&again),
        fp_acc,
        "the same seed gives the same accuracy"
    );
    let q = t.path().join("w4a4");
    ccq(&[
        "qat",
        fp.to_str().unwrap(),
        "--bits",
        "4/4",
        "--epochs",
        "1",
        "--out",
        q.to_str().unwrap(),
        "-q",
    ]);
    let q_acc = test_top1(&q);
    assert!(
        q_acc >= fp_acc - 0.02,
        "W4A4 QAT of every layer stays within 2 points: FP {fp_acc}, W4A4 {q_acc}"
    );
}
