//! Dataset readers: valid synthetic files and every error case.

mod common;

use ccq::data::{DataFormat, DataSource, Loader, SplitSpec, cifar, idx};
use common::*;
use std::path::PathBuf;

fn source(
    dir: &std::path::Path,
    format: DataFormat,
    channels: usize,
    size: [usize; 2],
) -> DataSource {
    DataSource {
        dir: dir.to_path_buf(),
        format,
        channels,
        size,
        resize: None,
        loader: Loader::Auto,
    }
}

fn err(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn idx_reads_plain_and_gzip() {
    let t = tempfile::tempdir().unwrap();
    write_idx_dataset(t.path());
    let d = source(t.path(), DataFormat::Idx, 1, [0, 0]).load().unwrap();
    assert_eq!((d.train.len(), d.test.len()), (240, 90));
    assert_eq!(
        (d.train.channels, d.train.height, d.train.width),
        (1, 12, 12)
    );
    assert_eq!(d.train.classes.len(), 3);
    let (p, l) = synthetic(240, 12, 1);
    assert_eq!(d.train.pixels(), Some(&p[..]));
    assert_eq!(
        d.train.labels,
        l.iter().map(|&x| x as u16).collect::<Vec<_>>()
    );
    let s = SplitSpec {
        val: 20,
        bandit: 30,
        seed: 3,
    }
    .carve(&d)
    .unwrap();
    assert_eq!(
        (s.train.len(), s.val.len(), s.bandit.len(), s.test.len()),
        (190, 20, 30, 90)
    );
    let mut all: Vec<usize> = s
        .train
        .idx
        .iter()
        .chain(&s.val.idx)
        .chain(&s.bandit.idx)
        .copied()
        .collect();
    all.sort();
    assert_eq!(
        all,
        (0..240).collect::<Vec<_>>(),
        "splits partition the training files"
    );
    let again = SplitSpec {
        val: 20,
        bandit: 30,
        seed: 3,
    }
    .carve(&d)
    .unwrap();
    assert_eq!(again.bandit.idx, s.bandit.idx, "splits are deterministic");
}

#[test]
fn idx_errors_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    let p = PathBuf::from("x-idx3-ubyte");
    let mut bad = idx_images(2, 2, 2, &[0; 8]);
    bad[3] = 1;
    assert!(err(idx::parse_images(&bad, &p)).contains("wrong magic number"));
    let short = idx_images(3, 2, 2, &[0; 8]);
    let e = err(idx::parse_images(&short, &p));
    assert!(e.contains("truncated") && e.contains("x-idx3-ubyte"), "{e}");
    assert!(err(idx::parse_labels(&[0, 0, 8, 1, 0, 0, 0, 5, 1], &p)).contains("truncated"));
    assert!(err(idx::parse_labels(&idx_images(1, 1, 1, &[0]), &p)).contains("wrong magic"));

    write_idx_dataset(t.path());
    std::fs::write(
        t.path().join("train-labels-idx1-ubyte"),
        idx_labels(&[0; 10]),
    )
    .unwrap();
    let e = err(source(t.path(), DataFormat::Idx, 1, [0, 0]).load());
    assert!(e.contains("240 images") && e.contains("10 labels"), "{e}");

    std::fs::remove_file(t.path().join("t10k-images-idx3-ubyte")).unwrap();
    std::fs::write(
        t.path().join("train-labels-idx1-ubyte"),
        idx_labels(&[0; 240]),
    )
    .unwrap();
    assert!(
        err(source(t.path(), DataFormat::Idx, 1, [0, 0]).load()).contains("t10k-images-idx3-ubyte")
    );

    std::fs::write(
        t.path().join("t10k-images-idx3-ubyte.gz"),
        [0x1f, 0x8b, 1, 2, 3],
    )
    .unwrap();
    assert!(err(source(t.path(), DataFormat::Idx, 1, [0, 0]).load()).contains("gzip"));
}

#[test]
fn missing_data_directories() {
    let e = err(source(
        std::path::Path::new("/nonexistent/ccq-data"),
        DataFormat::Idx,
        1,
        [0, 0],
    )
    .load());
    assert!(e.contains("/nonexistent/ccq-data"), "{e}");
    let e = err(ccq::data::source::missing_default_error::<()>());
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
}

#[test]
fn cifar_batches() {
    let t = tempfile::tempdir().unwrap();
    let mut rec = vec![];
    for i in 0..4u8 {
        rec.push(i % 10);
        rec.extend((0..3072).map(|j| (j % 251) as u8 ^ i));
    }
    std::fs::write(t.path().join("data_batch_1.bin"), &rec).unwrap();
    std::fs::write(t.path().join("test_batch.bin"), &rec[..3073 * 2]).unwrap();
    let d = source(t.path(), DataFormat::Cifar, 3, [32, 32])
        .load()
        .unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.train.channels), (4, 2, 3));
    assert_eq!(d.train.labels, vec![0, 1, 2, 3]);
    assert_eq!(d.train.image(1).unwrap()[5], (5u8) ^ 1);

    std::fs::write(t.path().join("data_batch_2.bin"), &rec[..3073 + 100]).unwrap();
    let e = err(source(t.path(), DataFormat::Cifar, 3, [32, 32]).load());
    assert!(
        e.contains("data_batch_2.bin") && e.contains("truncated"),
        "{e}"
    );
    std::fs::remove_file(t.path().join("data_batch_2.bin")).unwrap();

    let mut bad = rec.clone();
    bad[3073] = 12;
    let mut px = vec![];
    let mut lb = vec![];
    let e = err(cifar::parse_batch(
        &bad,
        std::path::Path::new("b.bin"),
        &mut px,
        &mut lb,
    ));
    assert!(e.contains("label 12"), "{e}");
    std::fs::remove_file(t.path().join("test_batch.bin")).unwrap();
    assert!(
        err(source(t.path(), DataFormat::Cifar, 3, [32, 32]).load()).contains("test_batch.bin")
    );
}

fn png(path: &std::path::Path, w: u32, h: u32, v: u8) {
    image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders() {
    for loader in [Loader::Memory, Loader::Stream] {
        image_folders_with(loader);
    }
}

/// The same images and the same errors whether the folder is decoded up front or streamed.
fn image_folders_with(loader: Loader) {
    let source = |dir: &std::path::Path, format, channels, size| DataSource {
        loader,
        ..source(dir, format, channels, size)
    };
    let t = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for (c, v) in [("cat", 10u8), ("dog", 200)] {
            let d = t.path().join(split).join(c);
            std::fs::create_dir_all(&d).unwrap();
            png(&d.join("a.png"), 6, 5, v);
            png(&d.join("b.png"), 6, 5, v);
        }
    }
    let d = source(t.path(), DataFormat::Folder, 3, [5, 6])
        .load()
        .unwrap();
    assert_eq!(d.train.is_streamed(), loader == Loader::Stream);
    assert_eq!(d.train.classes, vec!["cat", "dog"]);
    assert_eq!(
        (
            d.train.len(),
            d.train.channels,
            d.train.height,
            d.train.width
        ),
        (4, 3, 5, 6)
    );
    assert_eq!(d.train.labels, vec![0, 0, 1, 1]);
    // planar RGB: red plane first, then green, then blue
    let img = d.train.image(2).unwrap();
    assert_eq!((img[0], img[30], img[60]), (200, 100, 55));
    assert_eq!(d.train.images(&[2, 0]).unwrap()[..90], img[..]);
    let g = source(t.path(), DataFormat::Folder, 1, [5, 6])
        .load()
        .unwrap();
    assert_eq!(g.train.channels, 1);

    let e = err(source(t.path(), DataFormat::Folder, 3, [6, 6]).load());
    assert!(
        e.contains("a.png") && e.contains("declared input size"),
        "{e}"
    );

    std::fs::write(t.path().join("train/dog/c.jpg"), b"not a jpeg").unwrap();
    let e = err(source(t.path(), DataFormat::Folder, 3, [5, 6]).load());
    assert!(e.contains("c.jpg") && e.contains("unreadable"), "{e}");
    std::fs::remove_file(t.path().join("train/dog/c.jpg")).unwrap();

    std::fs::create_dir_all(t.path().join("train/emu")).unwrap();
    let e = err(source(t.path(), DataFormat::Folder, 3, [5, 6]).load());
    assert!(e.contains("emu") && e.contains("empty class folder"), "{e}");
}
