//! Embeds the `.ccq` runtime alone (no libtorch): loads a model, checks it, and classifies a
//! synthetic image of the model's input shape with integer arithmetic only, then reports the
//! engine's images/s.
//! Usage: cargo run -p ccq-runtime --example embed_runtime -- model.ccq
use ccq_runtime::{Engine, IntModel};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: embed_runtime MODEL.ccq"))?;
    // `load` checks the header, the CRC and the graph; `Engine::new` validates the graph again.
    let engine = Engine::new(IntModel::load(path.as_ref())?)?;
    let i = &engine.model.input;
    println!(
        "{path}: {}, {}×{}×{} input, {} classes",
        engine.model.name, i.channels, i.height, i.width, i.classes
    );
    for l in &engine.model.layers {
        println!(
            "  {:<20} W{} A{} {} weights",
            l.name,
            l.w_bits,
            l.a_bits,
            l.codes.len()
        );
    }
    // One image, channels × height × width bytes (here a horizontal ramp), as a camera would give.
    let image: Vec<u8> = (0..i.channels * i.height * i.width)
        .map(|p| (p % i.width * 255 / i.width.max(1)) as u8)
        .collect();
    let logits = engine.logits(&image)?;
    let scores = &logits[0];
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap_or(0);
    println!("class {best}, logits {scores:?}");
    // Throughput: the same image 2000 times, on every core (rayon).
    let batch = image.repeat(2000);
    let start = std::time::Instant::now();
    let n = engine.logits(&batch)?.len();
    println!(
        "{:.0} images/s on {} threads",
        n as f64 / start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    Ok(())
}
