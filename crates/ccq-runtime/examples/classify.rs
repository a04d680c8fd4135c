//! Classifies one image with a `.ccq` model and nothing but ccq-runtime.
//! Usage: cargo run -p ccq-runtime --example classify -- model.ccq image.pgm
//! The image is binary PGM (P5, grayscale) or PPM (P6, RGB) of the model's input size.
use ccq_runtime::{Engine, IntModel};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: classify MODEL.ccq IMAGE.pgm|ppm");
    let model = IntModel::load(args[1].as_ref())?;
    let bytes = std::fs::read(&args[2])?;
    // Header: magic, width, height, maxval, then one whitespace byte and the pixels (HWC).
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while bytes.get(pos).is_some_and(|b| b.is_ascii_whitespace()) {
            pos += 1;
        }
        let start = pos;
        while bytes.get(pos).is_some_and(|b| !b.is_ascii_whitespace()) {
            pos += 1;
        }
        anyhow::ensure!(pos > start, "{}: truncated PGM/PPM header", args[2]);
        fields.push(String::from_utf8_lossy(&bytes[start..pos]).to_string());
    }
    let c = match fields[0].as_str() { "P5" => 1, "P6" => 3, m => anyhow::bail!("{}: {m} is not P5/P6", args[2]) };
    let (w, h): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
    let i = &model.input;
    anyhow::ensure!((c, h, w) == (i.channels, i.height, i.width), "{}: {c}×{h}×{w} image, the model takes {}×{}×{}", args[2], i.channels, i.height, i.width);
    let hwc = bytes.get(pos + 1..pos + 1 + c * h * w).ok_or_else(|| anyhow::anyhow!("{}: truncated pixels", args[2]))?;
    let chw: Vec<u8> = (0..c * h * w).map(|k| hwc[(k % (h * w)) * c + k / (h * w)]).collect();
    let logits = Engine::new(model)?.logits(&chw).remove(0);
    let best = (0..logits.len()).fold(0, |b, k| if logits[k] > logits[b] { k } else { b });
    println!("class {best} (logits {logits:?})");
    Ok(())
}
