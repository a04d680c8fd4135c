//! Classifies one image with a `.ccq` model and nothing but ccq-runtime, and reports the
//! engine's images/s on that image.
//! Usage: cargo run -p ccq-runtime --example classify -- model.ccq image.pgm
//! The image: binary PGM (P5, grayscale) or PPM (P6, RGB) of the model's input size, with the
//! usual three header lines (`P5`, `W H`, `255`), as `convert image.png image.pgm` writes.
use anyhow::{Context, bail, ensure};
use ccq_runtime::{Engine, IntModel};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(args.len() == 3, "usage: classify MODEL.ccq IMAGE.pgm|ppm");
    let (model, img) = (IntModel::load(args[1].as_ref())?, &args[2]);
    let bytes = std::fs::read(img).with_context(|| format!("cannot read {img}"))?;
    let mut parts = bytes.splitn(4, |&b| b == b'\n');
    let mut line = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let c = match line().trim() {
        "P5" => 1,
        "P6" => 3,
        m => bail!("{img}: `{m}` is not a P5/P6 header"),
    };
    let size: Vec<usize> = line().split(' ').filter_map(|v| v.parse().ok()).collect();
    ensure!(
        size.len() == 2 && line().trim() == "255",
        "{img}: bad header"
    );
    let (w, h, i) = (size[0], size[1], &model.input);
    ensure!(
        (c, h, w) == (i.channels, i.height, i.width),
        "{img}: wrong shape"
    );
    let hwc = parts.next().filter(|p| p.len() >= c * h * w);
    let hwc = hwc.with_context(|| format!("{img}: truncated"))?;
    // PGM/PPM pixels are interleaved (HWC); the engine takes planes (CHW).
    let at = |k: usize| hwc[(k % (h * w)) * c + k / (h * w)];
    let chw: Vec<u8> = (0..c * h * w).map(at).collect();
    let engine = Engine::new(model)?;
    let logits = engine.logits(&chw)?.remove(0);
    let best = (0..logits.len()).fold(0, |b, k| if logits[k] > logits[b] { k } else { b });
    println!("class {best}; logits {logits:?}");
    // Throughput on this image repeated (one image per worker thread at a time).
    let start = std::time::Instant::now();
    let n = engine.logits(&chw.repeat(1000))?.len();
    println!("{:.0} images/s", n as f64 / start.elapsed().as_secs_f64());
    Ok(())
}
