//! `ccq train` stopped after each epoch and resumed ends with exactly the weights and test
//! accuracy of an uninterrupted run: the checkpoint of an unfinished job carries SGD's momentum.

mod common;

use ccq::train::checkpoint;
use std::path::Path;

/// `ccq train` of the ConvNet on `data` into `out`, 3 epochs.
fn args<'a>(data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "convnet",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "idx",
        "--epochs",
        "3",
        "--val-size",
        "30",
        "--bandit-size",
        "30",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "-q",
        "--out",
        out.to_str().unwrap(),
    ]
}

#[test]
fn stopped_and_resumed_training_equals_uninterrupted() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write_idx_dataset(&data);
    let train = |out: &Path, extra: &[&str]| {
        let mut a = args(&data, out);
        a.extend(extra);
        common::ccq(&a)
    };
    let plain = t.path().join("plain");
    train(&plain, &[]);
    let parts = t.path().join("parts");
    let text = train(&parts, &["--stop-after", "1"]);
    assert!(text.contains("stopped after epoch 1 of 3"), "{text}");
    let ck = checkpoint::load(&parts, tch::Device::Cpu).unwrap();
    assert_eq!(ck.meta.epochs, 1);
    assert!(ck.meta.test.is_none(), "no test accuracy before the end");
    let m = ck.momentum.expect("an unfinished job saves its momentum");
    assert_eq!(m.size(), ck.model.net.flat.size());
    // A resume with other settings would not continue the same run: refused by name, and the
    // checkpoint is left as it was.
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let before = read(&parts, checkpoint::META);
    let mut other = args(&data, &parts);
    other.extend(["--resume", "--lr", "0.2", "--seed", "7"]);
    let e = common::ccq_fails(&other);
    assert!(
        e.contains("--lr (0.05 then, 0.2 now)") && e.contains("--seed (1 then, 7 now)"),
        "{e}"
    );
    assert_eq!(read(&parts, checkpoint::META), before);
    train(&parts, &["--resume", "--stop-after", "1"]);
    train(&parts, &["--resume"]);
    assert!(
        read(&plain, checkpoint::WEIGHTS) == read(&parts, checkpoint::WEIGHTS),
        "the final weights are identical"
    );
    let meta = |d: &Path| checkpoint::load_meta(d).unwrap().1;
    let (a, b) = (meta(&plain), meta(&parts));
    assert_eq!(
        serde_json::to_string(&a.test).unwrap(),
        serde_json::to_string(&b.test).unwrap()
    );
    assert_eq!(a.epochs, 3);
    // Resuming the finished run does nothing: the same files, byte for byte and untouched.
    let modified = |d: &Path, f: &str| std::fs::metadata(d.join(f)).unwrap().modified().unwrap();
    let stamps = [checkpoint::META, checkpoint::WEIGHTS].map(|f| modified(&parts, f));
    let (meta_bytes, weights) = (
        read(&parts, checkpoint::META),
        read(&parts, checkpoint::WEIGHTS),
    );
    let text = train(&parts, &["--resume"]);
    assert!(text.contains("already finished its 3 epochs"), "{text}");
    assert_eq!(
        [checkpoint::META, checkpoint::WEIGHTS].map(|f| modified(&parts, f)),
        stamps
    );
    assert_eq!(read(&parts, checkpoint::META), meta_bytes);
    assert_eq!(read(&parts, checkpoint::WEIGHTS), weights);
    assert!(
        checkpoint::load(&plain, tch::Device::Cpu)
            .unwrap()
            .momentum
            .is_none(),
        "a finished checkpoint carries no optimiser state"
    );
}
