//! The streaming loader: image folders read from disk batch by batch give the same batches as
//! the in-memory loader, the training transform of images of any size is deterministic and
//! stays in range, and a file that breaks after loading is an error naming it.

use ccq::data::folder::{decode_random_resized, decode_resized};
use ccq::data::{
    Augment, Batcher, DataFormat, DataSource, Loader, Normalization, SplitSpec, Subset,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::path::Path;
use tch::Device;

/// A `w`×`h` RGB PNG whose pixels depend on `seed`, position and channel.
fn png(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = |c: u32| ((x * 31 + y * 17 + c * 59 + seed * 71) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    });
    img.save(path).unwrap();
}

/// `train/` and `test/` with two classes of `per_class` images each, of `size(i)`.
fn folder(root: &Path, per_class: u32, size: impl Fn(u32) -> (u32, u32)) {
    for split in ["train", "test"] {
        for (k, class) in ["ant", "bee"].iter().enumerate() {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..per_class {
                let seed = i + 100 * k as u32 + if split == "test" { 1000 } else { 0 };
                let (w, h) = size(seed);
                png(&d.join(format!("{i:03}.png")), w, h, seed);
            }
        }
    }
}

fn source(root: &Path, size: [usize; 2], resize: Option<usize>, loader: Loader) -> DataSource {
    DataSource {
        dir: root.to_path_buf(),
        format: DataFormat::Folder,
        channels: 3,
        size,
        resize,
        loader,
    }
}

/// Every batch of a pass, in order, as host values: images and labels.
fn pass(b: &Batcher, batch: usize) -> Vec<(Vec<f32>, Vec<i64>)> {
    (0..b.len())
        .step_by(batch)
        .map(|s| {
            let x = b.batch(s, batch.min(b.len() - s)).unwrap();
            (
                Vec::<f32>::try_from(x.images.flatten(0, -1)).unwrap(),
                Vec::<i64>::try_from(&x.labels).unwrap(),
            )
        })
        .collect()
}

#[test]
fn streamed_batches_equal_in_memory_batches() {
    let t = tempfile::tempdir().unwrap();
    folder(t.path(), 13, |_| (8, 6));
    let split = SplitSpec {
        val: 3,
        bandit: 3,
        seed: 4,
    };
    let mem = split
        .carve(
            &source(t.path(), [6, 8], None, Loader::Memory)
                .load()
                .unwrap(),
        )
        .unwrap();
    let st = split
        .carve(
            &source(t.path(), [6, 8], None, Loader::Stream)
                .load()
                .unwrap(),
        )
        .unwrap();
    assert!(st.train.data.is_streamed() && !mem.train.data.is_streamed());
    let norm = Normalization::from_subset(&mem.train).unwrap();
    assert_eq!(Normalization::from_subset(&st.train).unwrap(), norm);
    let order: Vec<usize> = (0..mem.train.len()).rev().collect();
    let aug = Augment { pad: 2, flip: true };
    for augmented in [false, true] {
        let batcher = |s: &Subset| {
            let mut rng = StdRng::seed_from_u64(7);
            let a = augmented.then_some((aug, &mut rng));
            Batcher::new(s, &order, &norm, a, Device::Cpu)
        };
        let (m, s) = (batcher(&mem.train), batcher(&st.train));
        // Batches of 4 (the last smaller): the prefetched batch is the one asked for next.
        assert_eq!(pass(&m, 4), pass(&s, 4), "augmented: {augmented}");
        // Out of order, the prefetched batch is not used, and the answer is the same.
        let a = s.batch(8, 3).unwrap();
        let b = s.batch(1, 5).unwrap();
        let want = m.batch(1, 5).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(want.images.flatten(0, -1)).unwrap()
        );
        assert_eq!(a.images.size(), [3, 3, 6, 8]);
    }
}

#[test]
fn images_of_any_size_get_the_evaluation_and_training_transforms() {
    let t = tempfile::tempdir().unwrap();
    // Landscape and portrait images of several sizes, all larger than the crop.
    folder(t.path(), 6, |s| (12 + s % 7, 10 + (s * 3) % 9));
    let data = source(t.path(), [8, 8], Some(10), Loader::Stream)
        .load()
        .unwrap();
    let test = Subset::all(data.test.clone());
    let norm = Normalization {
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
    };
    let order: Vec<usize> = (0..test.len()).collect();
    // Evaluation: each image scaled (shorter side 10) and centre-cropped.
    let eval = Batcher::new(&test, &order, &norm, None, Device::Cpu);
    let got = pass(&eval, 5);
    let files = match &data.test.storage {
        ccq::data::Storage::Files(f) => f.clone(),
        _ => panic!("streamed"),
    };
    let want: Vec<f32> = files
        .paths
        .iter()
        .flat_map(|p| decode_resized(&std::fs::read(p).unwrap(), 3, 8, 8, 10).unwrap())
        .map(|v| v as f32 / 255.0)
        .collect();
    let flat: Vec<f32> = got.iter().flat_map(|(x, _)| x.clone()).collect();
    assert_eq!(flat, want);
    // Training: a random resized crop and flip per image, drawn from the pass's generator.
    let aug = Augment { pad: 4, flip: true };
    let train = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        pass(
            &Batcher::new(&test, &order, &norm, Some((aug, &mut rng)), Device::Cpu),
            5,
        )
    };
    let (a, b, c) = (train(1), train(1), train(2));
    assert_eq!(a, b, "the same seed gives the same crops");
    assert_ne!(a, c, "another seed gives other crops");
    assert_ne!(a, got, "training crops differ from the centre crop");
    for (x, labels) in &a {
        assert_eq!(x.len(), labels.len() * 3 * 64);
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    assert_eq!(
        a.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(),
        got.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn random_resized_crop_is_a_function_of_its_seed() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("a.png");
    png(&p, 40, 24, 3);
    let bytes = std::fs::read(&p).unwrap();
    let one = |seed| decode_random_resized(&bytes, 3, [16, 12], seed).unwrap();
    assert_eq!(one(5), one(5));
    assert_eq!(one(5).len(), 3 * 16 * 12);
    let distinct: std::collections::HashSet<Vec<u8>> = (0..20).map(one).collect();
    assert!(
        distinct.len() > 15,
        "{} distinct crops of 20",
        distinct.len()
    );
    // Grayscale, and an image smaller than the output (scaled up).
    png(&p, 5, 7, 1);
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(
        decode_random_resized(&bytes, 1, [16, 12], 9).unwrap().len(),
        16 * 12
    );
}

#[test]
fn a_file_that_breaks_after_loading_is_an_error_naming_it() {
    let t = tempfile::tempdir().unwrap();
    folder(t.path(), 4, |_| (8, 6));
    let data = source(t.path(), [6, 8], None, Loader::Stream)
        .load()
        .unwrap();
    let train = Subset::all(data.train.clone());
    let bad = t.path().join("train/bee/002.png");
    // The header stays valid; the pixels are cut off.
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let norm = Normalization {
        mean: vec![0.5; 3],
        std: vec![0.25; 3],
    };
    let order: Vec<usize> = (0..train.len()).collect();
    let b = Batcher::new(&train, &order, &norm, None, Device::Cpu);
    assert!(b.batch(0, 4).is_ok());
    let e = format!("{:#}", b.batch(4, 4).err().expect("a broken file"));
    assert!(e.contains("002.png"), "{e}");
    std::fs::remove_file(&bad).unwrap();
    let e = format!("{:#}", b.batch(4, 4).err().expect("a missing file"));
    assert!(e.contains("002.png") && e.contains("cannot read"), "{e}");
}

#[test]
fn the_loader_flag_is_checked() {
    let e = ccq::pipeline::DataConfig {
        loader: Loader::Stream,
        ..ccq::pipeline::DataConfig::at("/tmp", DataFormat::Idx)
    }
    .source(None)
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--loader stream applies to image folders"),
        "{e}"
    );
    assert!(Loader::Auto.streams(Loader::AUTO_LIMIT + 1, false));
    assert!(!Loader::Auto.streams(Loader::AUTO_LIMIT, false));
    assert!(Loader::Auto.streams(1, true));
    assert!(!Loader::Memory.streams(u64::MAX, true));
}
